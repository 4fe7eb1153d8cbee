"""Failure risk: a device's newest assessment and its history, a site's devices by risk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import CurrentPrincipal, SessionDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import End, Limit, Offset, Start, time_range
from cloud.api.schemas import DeviceRiskOut, RiskScoreOut, SiteDeviceRiskOut
from cloud.workorders import queries

router = APIRouter(prefix="/v1", tags=["risk"], responses=ERROR_RESPONSES)


@router.get(
    "/devices/{device_id}/risk",
    response_model=DeviceRiskOut,
    summary="The device's newest failure risk and its risk history (default: the last 7 days)",
)
def device_risk(
    device_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    start: Start = None,
    end: End = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=queries.MAX_HISTORY, description="the newest this many assessments"),
    ] = None,
) -> DeviceRiskOut:
    begin, stop = time_range(start, end, timedelta(days=7))
    risk = queries.device_risk(
        session,
        principal,
        device_id,
        datetime.fromtimestamp(begin, UTC),
        datetime.fromtimestamp(stop, UTC),
        limit,
    )
    return DeviceRiskOut(
        device_id=risk.device.id,
        latest=None if risk.latest is None else RiskScoreOut.model_validate(risk.latest),
        history=[RiskScoreOut.model_validate(r) for r in risk.history],
    )


@router.get(
    "/sites/{site_id}/risk",
    response_model=list[SiteDeviceRiskOut],
    summary="Every device of the site with its newest risk, highest P72 first "
    "(never scored: risk null, last)",
)
def site_risk(
    site_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> list[SiteDeviceRiskOut]:
    rows = queries.site_risk(session, principal, site_id, limit=limit, offset=offset)
    return [
        SiteDeviceRiskOut(
            device_id=r.device.id,
            device_name=r.device.name,
            asset_type=r.device.asset_type,
            criticality=r.device.criticality,
            risk=None if r.risk is None else RiskScoreOut.model_validate(r.risk),
        )
        for r in rows
    ]
