"""``/v1/devices``: appliances, their life-cycle file, feature history and energy."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status

from cloud.api.deps import CurrentPrincipal, SessionDep, StoreDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import (
    End,
    Interval,
    Limit,
    Offset,
    Start,
    check_intervals,
    time_range,
)
from cloud.api.schemas import (
    ClientOut,
    DeviceEventIn,
    DeviceEventOut,
    DeviceIn,
    DeviceOut,
    DevicePatch,
    EnergyIntervalOut,
    ErrorBody,
    FeatureRowOut,
    GatewayOut,
    LatestOut,
    LifecycleOut,
    SiteOut,
)
from cloud.registry import services
from cloud.registry.models import Criticality, EventKind

router = APIRouter(prefix="/v1/devices", tags=["devices"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[DeviceOut], summary="Devices the caller can see")
def list_devices(
    session: SessionDep,
    principal: CurrentPrincipal,
    client_id: str | None = None,
    site_id: str | None = None,
    gateway_id: str | None = None,
    asset_type: Annotated[str | None, Query(max_length=64)] = None,
    criticality: Criticality | None = None,
    q: Annotated[
        str | None, Query(max_length=200, description="searches name, serial and location")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[DeviceOut]:
    rows = services.list_devices(
        session,
        principal,
        client_id=client_id,
        site_id=site_id,
        gateway_id=gateway_id,
        asset_type=asset_type,
        criticality=criticality,
        q=q,
        limit=limit,
        offset=offset,
    )
    return [DeviceOut.of(d) for d in rows]


@router.post(
    "",
    response_model=DeviceOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "the gateway has a device of that name"}},
    summary="Register a device on a gateway (admin)",
)
def create_device(body: DeviceIn, session: SessionDep, principal: CurrentPrincipal) -> DeviceOut:
    device = services.create_device(session, principal, **body.model_dump())
    return DeviceOut.of(services.get_device(session, principal, device.id))


@router.get("/{device_id}", response_model=DeviceOut, summary="One device")
def get_device(device_id: str, session: SessionDep, principal: CurrentPrincipal) -> DeviceOut:
    return DeviceOut.of(services.get_device(session, principal, device_id))


@router.patch(
    "/{device_id}",
    response_model=DeviceOut,
    responses={409: {"model": ErrorBody, "description": "the gateway has a device of that name"}},
    summary="Change a device (admin; the client's facility manager: location, occupant flags)",
)
def update_device(
    device_id: str, body: DevicePatch, session: SessionDep, principal: CurrentPrincipal
) -> DeviceOut:
    changes = body.model_dump(exclude_unset=True)
    services.update_device(session, principal, device_id, changes)
    session.expire_all()
    return DeviceOut.of(services.get_device(session, principal, device_id))


@router.delete(
    "/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a device and its events (admin); its readings stay in the store",
)
def delete_device(device_id: str, session: SessionDep, principal: CurrentPrincipal) -> None:
    services.delete_device(session, principal, device_id)


@router.get(
    "/{device_id}/lifecycle",
    response_model=LifecycleOut,
    summary="The device's file: what and where it is, its events, its latest readings",
)
def lifecycle(
    device_id: str,
    session: SessionDep,
    store: StoreDep,
    principal: CurrentPrincipal,
    events_limit: Annotated[int, Query(ge=0, le=1000)] = 50,
) -> LifecycleOut:
    ctx = services.device_context(session, principal, device_id)
    events = (
        services.list_device_events(session, principal, device_id, limit=events_limit)
        if events_limit
        else []
    )
    latest = {
        name: LatestOut(ts=row.ts, tags=row.tags, fields=row.fields)
        for name, row in store.latest(ctx.device.id).items()
    }
    return LifecycleOut(
        device=DeviceOut.of(ctx.device),
        gateway=GatewayOut.of(ctx.gateway),
        site=SiteOut.model_validate(ctx.site),
        client=ClientOut.model_validate(ctx.client),
        events=[DeviceEventOut.model_validate(e) for e in events],
        latest=latest,
        last_alarm=latest.get("alarm"),
    )


@router.get(
    "/{device_id}/events",
    response_model=list[DeviceEventOut],
    summary="The device's life-cycle events, newest first",
)
def list_events(
    device_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    kind: EventKind | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[DeviceEventOut]:
    rows = services.list_device_events(
        session, principal, device_id, kind=kind, limit=limit, offset=offset
    )
    return [DeviceEventOut.model_validate(e) for e in rows]


@router.post(
    "/{device_id}/events",
    response_model=DeviceEventOut,
    status_code=status.HTTP_201_CREATED,
    summary="Record a repair, replaced part, inspection or note (admin, service desk)",
)
def add_event(
    device_id: str, body: DeviceEventIn, session: SessionDep, principal: CurrentPrincipal
) -> DeviceEventOut:
    event = services.add_device_event(
        session,
        principal,
        device_id,
        kind=body.kind,
        summary=body.summary,
        at=body.at,
        detail=body.detail,
    )
    return DeviceEventOut.model_validate(event)


@router.get(
    "/{device_id}/features",
    response_model=list[FeatureRowOut],
    summary="Feature vectors of the device's windows, oldest first",
)
def feature_history(
    device_id: str,
    session: SessionDep,
    store: StoreDep,
    principal: CurrentPrincipal,
    start: Start = None,
    end: End = None,
    group: Annotated[str | None, Query(max_length=64, description="one poll group")] = None,
    names: Annotated[
        list[str] | None, Query(max_length=500, description="only these features (repeat)")
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=10_000, description="the newest this many windows")
    ] = None,
) -> list[FeatureRowOut]:
    device = services.get_device(session, principal, device_id)
    begin, stop = time_range(start, end, timedelta(days=1))
    rows = store.feature_history(device.id, begin, stop, group=group, names=names, limit=limit)
    return [FeatureRowOut.model_validate(r) for r in rows]


@router.get(
    "/{device_id}/energy",
    response_model=list[EnergyIntervalOut],
    summary="What the device's energy counters advanced by, per interval",
)
def energy(
    device_id: str,
    session: SessionDep,
    store: StoreDep,
    principal: CurrentPrincipal,
    start: Start = None,
    end: End = None,
    interval: Interval = 3600,
) -> list[EnergyIntervalOut]:
    device = services.get_device(session, principal, device_id)
    begin, stop = time_range(start, end, timedelta(days=7))
    check_intervals(begin, stop, interval)
    rows = store.energy(device.id, begin, stop, interval)
    return [EnergyIntervalOut.model_validate(r) for r in rows]
