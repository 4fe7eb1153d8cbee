"""``/v1/sites``: a client's buildings, and their energy/anomaly rollups."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from cloud.api.deps import CurrentPrincipal, SessionDep, StoreDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import (
    End,
    Interval,
    Limit,
    Offset,
    Search,
    Start,
    check_intervals,
    time_range,
)
from cloud.api.schemas import ErrorBody, SiteIn, SiteOut, SitePatch, SiteRollupOut
from cloud.registry import services
from cloud.registry.models import SiteKind

router = APIRouter(prefix="/v1/sites", tags=["sites"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[SiteOut], summary="Sites the caller can see")
def list_sites(
    session: SessionDep,
    principal: CurrentPrincipal,
    client_id: str | None = None,
    kind: SiteKind | None = None,
    q: Search = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[SiteOut]:
    rows = services.list_sites(
        session, principal, client_id=client_id, kind=kind, q=q, limit=limit, offset=offset
    )
    return [SiteOut.model_validate(s) for s in rows]


@router.post(
    "",
    response_model=SiteOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "the client has a site of that name"}},
    summary="Create a site (admin)",
)
def create_site(body: SiteIn, session: SessionDep, principal: CurrentPrincipal) -> SiteOut:
    site = services.create_site(session, principal, **body.model_dump())
    return SiteOut.model_validate(site)


@router.get("/{site_id}", response_model=SiteOut, summary="One site")
def get_site(site_id: str, session: SessionDep, principal: CurrentPrincipal) -> SiteOut:
    return SiteOut.model_validate(services.get_site(session, principal, site_id))


@router.patch(
    "/{site_id}",
    response_model=SiteOut,
    responses={409: {"model": ErrorBody, "description": "the client has a site of that name"}},
    summary="Change a site (admin; the client's facility manager: address and location)",
)
def update_site(
    site_id: str, body: SitePatch, session: SessionDep, principal: CurrentPrincipal
) -> SiteOut:
    changes = body.model_dump(exclude_unset=True)
    return SiteOut.model_validate(services.update_site(session, principal, site_id, changes))


@router.delete(
    "/{site_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorBody, "description": "the site still has gateways"}},
    summary="Delete a site without gateways (admin)",
)
def delete_site(site_id: str, session: SessionDep, principal: CurrentPrincipal) -> None:
    services.delete_site(session, principal, site_id)


@router.get(
    "/{site_id}/rollup",
    response_model=list[SiteRollupOut],
    summary="Energy, anomalies and alarms of the whole site per interval",
)
def site_rollup(
    site_id: str,
    session: SessionDep,
    store: StoreDep,
    principal: CurrentPrincipal,
    start: Start = None,
    end: End = None,
    interval: Interval = 86_400,
) -> list[SiteRollupOut]:
    site = services.get_site(session, principal, site_id)
    begin, stop = time_range(start, end, timedelta(days=30))
    check_intervals(begin, stop, interval)
    rows = store.site_rollup(site.id, begin, stop, interval)
    return [SiteRollupOut.model_validate(r) for r in rows]
