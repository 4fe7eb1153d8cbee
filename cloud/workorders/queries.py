"""Read models for the API: a device's and a site's risk, an order with everything about
it, an order's deliveries; and the desk's replay of a delivery.

Tenant scoping as everywhere else: the object named in the request is looked up with the
caller's scope first (:func:`cloud.registry.services.get_device`, ``get_site``,
:func:`cloud.workorders.service.get_order`), so another client's object is
:class:`~cloud.errors.NotFound`; a role check (:class:`~cloud.errors.Forbidden`) only
follows once the caller can see the object. No FastAPI here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from cloud.auth.principal import Principal
from cloud.db import flush
from cloud.errors import Forbidden, InvalidInput, NotFound
from cloud.registry import services
from cloud.registry.models import Device, Gateway, Site
from cloud.risk.models import RiskScore
from cloud.workorders import service
from cloud.workorders.models import (
    DeliveryAttempt,
    DeliveryState,
    Desk,
    OutboxMessage,
    Reservation,
    TicketRef,
    WorkOrder,
    WorkOrderEvent,
)

log = logging.getLogger(__name__)

MAX_HISTORY: Final = 10_000
"""Risk rows one history request returns at most (the newest, when there are more)."""


# -- risk ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceRisk:
    device: Device
    latest: RiskScore | None
    """The newest assessment of the device, whatever the range."""
    history: list[RiskScore]
    """The assessments with ``start <= ts < end``, oldest first."""


def device_risk(
    session: Session,
    p: Principal,
    device_id: str,
    start: datetime,
    end: datetime,
    limit: int | None = None,
) -> DeviceRisk:
    """The device's newest risk and its history in ``[start, end)``: the newest ``limit``
    rows of it (at most :data:`MAX_HISTORY`), oldest first."""
    device = services.get_device(session, p, device_id)
    latest = session.scalars(
        select(RiskScore).where(RiskScore.device_id == device.id).order_by(RiskScore.ts.desc())
    ).first()
    rows = list(
        session.scalars(
            select(RiskScore)
            .where(RiskScore.device_id == device.id, RiskScore.ts >= start, RiskScore.ts < end)
            .order_by(RiskScore.ts.desc())
            .limit(min(limit or MAX_HISTORY, MAX_HISTORY))
        )
    )
    rows.reverse()
    return DeviceRisk(device, latest, rows)


@dataclass(frozen=True, slots=True)
class DeviceRiskRow:
    device: Device
    risk: RiskScore | None
    """None: the device was never scored."""


def site_risk(
    session: Session, p: Principal, site_id: str, *, limit: int = 1000, offset: int = 0
) -> list[DeviceRiskRow]:
    """Every device of the site with its newest risk, in one query; highest P72 first,
    devices never scored last."""
    site = services.get_site(session, p, site_id)
    if not 1 <= limit <= services.MAX_LIMIT or offset < 0:
        raise InvalidInput("limit", f"limit must be 1-{services.MAX_LIMIT} and offset >= 0")
    at_site = (
        select(Device.id)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .where(Gateway.site_id == site.id)
    )
    newest = (
        select(RiskScore.device_id.label("device_id"), func.max(RiskScore.ts).label("ts"))
        .where(RiskScore.device_id.in_(at_site))
        .group_by(RiskScore.device_id)
        .subquery()
    )
    stmt = (
        select(Device, RiskScore)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .outerjoin(newest, newest.c.device_id == Device.id)
        .outerjoin(
            RiskScore,
            and_(RiskScore.device_id == newest.c.device_id, RiskScore.ts == newest.c.ts),
        )
        .where(Gateway.site_id == site.id)
        .order_by(RiskScore.p72.desc().nulls_last(), Device.name, Device.id)
        .limit(limit)
        .offset(offset)
    )
    return [DeviceRiskRow(device, risk) for device, risk in session.execute(stmt)]


# -- work orders ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ticket:
    ref: TicketRef
    desk_kind: str


@dataclass(frozen=True, slots=True)
class OrderDetail:
    order: WorkOrder
    device_name: str
    asset_type: str
    site_name: str
    events: list[WorkOrderEvent]
    """The order's history, oldest first."""
    reservations: list[Reservation]
    tickets: list[Ticket]
    """The order's ticket at each desk that has reported one."""


def order_detail(session: Session, p: Principal, order_id: str) -> OrderDetail:
    return detail_of(session, service.get_order(session, p, order_id))


def detail_of(session: Session, order: WorkOrder) -> OrderDetail:
    """The detail of an order the caller has loaded through the scoped services."""
    device = session.get(Device, order.device_id)
    site = session.get(Site, order.site_id)
    events = list(
        session.scalars(
            select(WorkOrderEvent)
            .where(WorkOrderEvent.work_order_id == order.id)
            .order_by(WorkOrderEvent.seq)
        )
    )
    tickets = [
        Ticket(ref, kind)
        for ref, kind in session.execute(
            select(TicketRef, Desk.kind)
            .join(Desk, Desk.id == TicketRef.desk_id)
            .where(TicketRef.work_order_id == order.id)
            .order_by(TicketRef.created_at, TicketRef.id)
        )
    ]
    return OrderDetail(
        order=order,
        device_name=device.name if device is not None else "",
        asset_type=device.asset_type if device is not None else "",
        site_name=site.name if site is not None else "",
        events=events,
        reservations=service.reservations(session, order.id),
        tickets=tickets,
    )


# -- deliveries -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    message: OutboxMessage
    attempts: list[DeliveryAttempt]
    """Oldest first."""


def _attempts(session: Session, ids: Sequence[int]) -> dict[int, list[DeliveryAttempt]]:
    found: dict[int, list[DeliveryAttempt]] = {i: [] for i in ids}
    if ids:
        for a in session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.outbox_id.in_(list(ids)))
            .order_by(DeliveryAttempt.attempt, DeliveryAttempt.at, DeliveryAttempt.id)
        ):
            found.setdefault(int(a.outbox_id), []).append(a)
    return found


def deliveries(session: Session, p: Principal, order_id: str) -> list[Delivery]:
    """The order's outbox messages (every desk, in id order) with their attempts."""
    order = service.get_order(session, p, order_id)
    messages = list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.work_order_id == order.id)
            .order_by(OutboxMessage.id)
        )
    )
    attempts = _attempts(session, [m.id for m in messages])
    return [Delivery(m, attempts[m.id]) for m in messages]


def replay(session: Session, p: Principal, outbox_id: int, now: datetime | None = None) -> Delivery:
    """Send a message again: back to ``pending``, due ``now``; its attempt count and
    history are kept, and a lease a worker holds on it is left to run out. Replaying a
    delivered message sends it once more (the desk adapters are idempotent).

    :class:`NotFound` when the message is not one of the caller's client's orders;
    :class:`Forbidden` unless the caller is an admin or the service desk."""
    stmt = (
        select(OutboxMessage)
        .join(WorkOrder, WorkOrder.id == OutboxMessage.work_order_id)
        .where(OutboxMessage.id == outbox_id)
        .with_for_update(of=OutboxMessage)
    )
    if p.tenant is not None:
        stmt = stmt.where(WorkOrder.client_id == p.tenant)
    message = session.scalars(stmt).first()
    if message is None:
        raise NotFound(f"delivery {outbox_id} not found")
    if p.role not in service.DESK_ROLES:
        raise Forbidden("only admin or service_desk may replay deliveries")
    before = message.state
    message.state = DeliveryState.PENDING
    message.next_attempt_at = now or datetime.now(UTC)
    flush(session)
    log.info(
        "delivery %d (work order %s, desk %s) replayed from %s by %s",
        message.id,
        message.work_order_id,
        message.desk_id,
        before,
        p.user_id or "the operator",
    )
    return Delivery(message, _attempts(session, [message.id])[message.id])
