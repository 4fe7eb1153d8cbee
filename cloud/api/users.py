"""``/v1/users``: accounts and roles (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, status

from cloud.api.deps import CurrentPrincipal, SessionDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import Limit, Offset, Search
from cloud.api.schemas import ErrorBody, UserIn, UserOut, UserPatch
from cloud.registry import services
from cloud.registry.models import Role

router = APIRouter(prefix="/v1/users", tags=["users"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[UserOut], summary="Users (admin)")
def list_users(
    session: SessionDep,
    principal: CurrentPrincipal,
    role: Role | None = None,
    client_id: str | None = None,
    q: Search = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[UserOut]:
    rows = services.list_users(
        session, principal, role=role, client_id=client_id, q=q, limit=limit, offset=offset
    )
    return [UserOut.model_validate(u) for u in rows]


@router.post(
    "",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "a user with that email exists"}},
    summary="Create a user (admin); a facility manager needs a client_id",
)
def create_user(body: UserIn, session: SessionDep, principal: CurrentPrincipal) -> UserOut:
    return UserOut.model_validate(services.create_user(session, principal, **body.model_dump()))


@router.get("/{user_id}", response_model=UserOut, summary="One user (admin, or oneself)")
def get_user(user_id: str, session: SessionDep, principal: CurrentPrincipal) -> UserOut:
    return UserOut.model_validate(services.get_user(session, principal, user_id))


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    responses={409: {"model": ErrorBody, "description": "email taken, or self-demotion"}},
    summary="Change a user's email, name, role, client, password or active flag (admin)",
)
def update_user(
    user_id: str, body: UserPatch, session: SessionDep, principal: CurrentPrincipal
) -> UserOut:
    changes = body.model_dump(exclude_unset=True)
    return UserOut.model_validate(services.update_user(session, principal, user_id, changes))


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorBody, "description": "an admin cannot delete themselves"}},
    summary="Delete a user (admin)",
)
def delete_user(user_id: str, session: SessionDep, principal: CurrentPrincipal) -> None:
    services.delete_user(session, principal, user_id)
