"""``/v1/gateways``: gateways and their credentials (rotate: the secret is shown once)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, status

from cloud.api.deps import CurrentPrincipal, SessionDep, SettingsDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import Limit, Offset, Search
from cloud.api.schemas import (
    CredentialIssued,
    CredentialOut,
    ErrorBody,
    GatewayIn,
    GatewayOut,
    GatewayPatch,
)
from cloud.registry import services

router = APIRouter(prefix="/v1/gateways", tags=["gateways"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[GatewayOut], summary="Gateways the caller can see")
def list_gateways(
    session: SessionDep,
    principal: CurrentPrincipal,
    client_id: str | None = None,
    site_id: str | None = None,
    q: Search = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[GatewayOut]:
    rows = services.list_gateways(
        session, principal, client_id=client_id, site_id=site_id, q=q, limit=limit, offset=offset
    )
    return [GatewayOut.of(g) for g in rows]


@router.post(
    "",
    response_model=GatewayOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "a gateway with that id exists"}},
    summary="Register a gateway (admin)",
)
def create_gateway(body: GatewayIn, session: SessionDep, principal: CurrentPrincipal) -> GatewayOut:
    gateway = services.create_gateway(
        session, principal, gateway_id=body.id, site_id=body.site_id, name=body.name
    )
    return GatewayOut.of(services.get_gateway(session, principal, gateway.id))


@router.get("/{gateway_id}", response_model=GatewayOut, summary="One gateway")
def get_gateway(gateway_id: str, session: SessionDep, principal: CurrentPrincipal) -> GatewayOut:
    return GatewayOut.of(services.get_gateway(session, principal, gateway_id))


@router.patch(
    "/{gateway_id}", response_model=GatewayOut, summary="Rename or move a gateway (admin)"
)
def update_gateway(
    gateway_id: str, body: GatewayPatch, session: SessionDep, principal: CurrentPrincipal
) -> GatewayOut:
    changes = body.model_dump(exclude_unset=True)
    services.update_gateway(session, principal, gateway_id, changes)
    session.expire_all()
    return GatewayOut.of(services.get_gateway(session, principal, gateway_id))


@router.delete(
    "/{gateway_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorBody, "description": "the gateway still has devices"}},
    summary="Delete a gateway without devices, and its credentials (admin)",
)
def delete_gateway(gateway_id: str, session: SessionDep, principal: CurrentPrincipal) -> None:
    services.delete_gateway(session, principal, gateway_id)


@router.get(
    "/{gateway_id}/credentials",
    response_model=list[CredentialOut],
    summary="The gateway's credentials, without secrets (admin)",
)
def list_credentials(
    gateway_id: str, session: SessionDep, principal: CurrentPrincipal
) -> list[CredentialOut]:
    now = datetime.now(UTC)
    rows = services.gateway_credentials(session, principal, gateway_id)
    return [CredentialOut.of(c, now) for c in rows]


@router.post(
    "/{gateway_id}/credentials",
    response_model=CredentialIssued,
    status_code=status.HTTP_201_CREATED,
    summary="Rotate: issue a new credential; the previous ones expire after the grace "
    "period (admin). The secret is in this response only; regenerate the broker's files.",
)
def rotate_credentials(
    gateway_id: str, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> CredentialIssued:
    issued = services.rotate_gateway_credentials(
        session, principal, gateway_id, grace_s=settings.gateway_credential_grace_s
    )
    out = CredentialOut.of(issued.credential, datetime.now(UTC))
    return CredentialIssued(**out.model_dump(), secret=issued.secret)


@router.delete(
    "/{gateway_id}/credentials/{credential_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a credential at once (admin); regenerate the broker's files",
)
def revoke_credential(
    gateway_id: str, credential_id: str, session: SessionDep, principal: CurrentPrincipal
) -> None:
    services.revoke_gateway_credential(session, principal, gateway_id, credential_id)
