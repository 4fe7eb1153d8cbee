"""``/v1/clients``: tenants (admin manages; others read what they may see)."""

from __future__ import annotations

from fastapi import APIRouter, status

from cloud.api.deps import CurrentPrincipal, SessionDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import Limit, Offset, Search
from cloud.api.schemas import ClientIn, ClientOut, ClientPatch, ErrorBody
from cloud.registry import services

router = APIRouter(prefix="/v1/clients", tags=["clients"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[ClientOut], summary="Clients the caller can see")
def list_clients(
    session: SessionDep,
    principal: CurrentPrincipal,
    q: Search = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[ClientOut]:
    rows = services.list_clients(session, principal, q=q, limit=limit, offset=offset)
    return [ClientOut.model_validate(c) for c in rows]


@router.post(
    "",
    response_model=ClientOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "a client with that name exists"}},
    summary="Create a client (admin)",
)
def create_client(body: ClientIn, session: SessionDep, principal: CurrentPrincipal) -> ClientOut:
    return ClientOut.model_validate(services.create_client(session, principal, name=body.name))


@router.get("/{client_id}", response_model=ClientOut, summary="One client")
def get_client(client_id: str, session: SessionDep, principal: CurrentPrincipal) -> ClientOut:
    return ClientOut.model_validate(services.get_client(session, principal, client_id))


@router.patch(
    "/{client_id}",
    response_model=ClientOut,
    responses={409: {"model": ErrorBody, "description": "a client with that name exists"}},
    summary="Rename a client (admin)",
)
def update_client(
    client_id: str, body: ClientPatch, session: SessionDep, principal: CurrentPrincipal
) -> ClientOut:
    changes = body.model_dump(exclude_unset=True)
    return ClientOut.model_validate(services.update_client(session, principal, client_id, changes))


@router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorBody, "description": "the client still has sites"}},
    summary="Delete a client without sites, and its users (admin)",
)
def delete_client(client_id: str, session: SessionDep, principal: CurrentPrincipal) -> None:
    services.delete_client(session, principal, client_id)
