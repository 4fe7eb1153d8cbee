"""``/v1/work-orders``: orders opened from predicted failures and alarms, their life cycle,
comments, assignment and deliveries to the client's service desks; ``/v1/deliveries``:
the desk's replay of one delivery. A facility manager sees their client's orders only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from cloud.api.deps import CurrentPrincipal, SessionDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import Limit, Offset
from cloud.api.schemas import (
    AssignmentIn,
    CommentIn,
    DeliveryOut,
    ErrorBody,
    TransitionIn,
    WorkOrderDetailOut,
    WorkOrderOut,
)
from cloud.workorders import queries, service
from cloud.workorders.policy import State

router = APIRouter(tags=["work orders"], responses=ERROR_RESPONSES)

OutboxId = Annotated[int, Path(ge=1, le=2_147_483_647, description="a delivery's id")]


@router.get(
    "/v1/work-orders",
    response_model=list[WorkOrderOut],
    summary="Work orders the caller can see, newest first",
)
def list_orders(
    session: SessionDep,
    principal: CurrentPrincipal,
    state: Annotated[list[State] | None, Query(description="any of these states (repeat)")] = None,
    is_open: Annotated[
        bool | None,
        Query(
            alias="open", description="true: not closed or cancelled; false: closed or cancelled"
        ),
    ] = None,
    site_id: str | None = None,
    device_id: str | None = None,
    fault: Annotated[str | None, Query(max_length=96)] = None,
    priority_max: Annotated[
        int | None, Query(ge=1, le=4, description="priority at least this urgent (1 = urgent)")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[WorkOrderOut]:
    f = service.OrderFilter(
        state=tuple(state or ()),
        open=is_open,
        site_id=site_id,
        device_id=device_id,
        fault=fault,
        priority_max=priority_max,
        limit=limit,
        offset=offset,
    )
    return [WorkOrderOut.of(o) for o in service.list_orders(session, principal, f)]


@router.get(
    "/v1/work-orders/{work_order_id}",
    response_model=WorkOrderDetailOut,
    summary="One work order with its history, parts, device, site and desk tickets",
)
def get_order(
    work_order_id: str, session: SessionDep, principal: CurrentPrincipal
) -> WorkOrderDetailOut:
    return WorkOrderDetailOut.of_detail(queries.order_detail(session, principal, work_order_id))


@router.post(
    "/v1/work-orders/{work_order_id}/transition",
    response_model=WorkOrderDetailOut,
    responses={
        409: {"model": ErrorBody, "description": "the life cycle does not allow it (names what is)"}
    },
    summary="Move the order to another state (the client's facility manager: approve or "
    "cancel an order waiting for approval; admin, service desk: any allowed move)",
)
def transition(
    work_order_id: str, body: TransitionIn, session: SessionDep, principal: CurrentPrincipal
) -> WorkOrderDetailOut:
    order = service.transition(
        session,
        principal,
        work_order_id,
        body.state,
        note=body.note,
        failure_prevented=body.failure_prevented,
    )
    return WorkOrderDetailOut.of_detail(queries.detail_of(session, order))


@router.post(
    "/v1/work-orders/{work_order_id}/comments",
    response_model=WorkOrderDetailOut,
    summary="Comment on the order (sent to the client's desks)",
)
def comment(
    work_order_id: str, body: CommentIn, session: SessionDep, principal: CurrentPrincipal
) -> WorkOrderDetailOut:
    order = service.comment(session, principal, work_order_id, body.text)
    return WorkOrderDetailOut.of_detail(queries.detail_of(session, order))


@router.put(
    "/v1/work-orders/{work_order_id}/assignment",
    response_model=WorkOrderDetailOut,
    responses={409: {"model": ErrorBody, "description": "the order is closed or cancelled"}},
    summary="Assign a technician, overriding the suggestion; null clears it (admin, service desk)",
)
def assign(
    work_order_id: str, body: AssignmentIn, session: SessionDep, principal: CurrentPrincipal
) -> WorkOrderDetailOut:
    order = service.assign(session, principal, work_order_id, body.technician_id)
    return WorkOrderDetailOut.of_detail(queries.detail_of(session, order))


@router.get(
    "/v1/work-orders/{work_order_id}/deliveries",
    response_model=list[DeliveryOut],
    summary="The order's deliveries to the client's desks, oldest first, with their attempts",
)
def deliveries(
    work_order_id: str, session: SessionDep, principal: CurrentPrincipal
) -> list[DeliveryOut]:
    return [DeliveryOut.of(d) for d in queries.deliveries(session, principal, work_order_id)]


@router.post(
    "/v1/deliveries/{outbox_id}/replay",
    response_model=DeliveryOut,
    summary="Send a delivery again now, delivered or failed (admin, service desk)",
)
def replay(outbox_id: OutboxId, session: SessionDep, principal: CurrentPrincipal) -> DeliveryOut:
    return DeliveryOut.of(queries.replay(session, principal, outbox_id))
