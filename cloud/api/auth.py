"""``/v1/auth/token`` (OAuth2 password flow), ``/v1/me`` and the caller's API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from cloud.api.deps import CurrentPrincipal, SessionDep, SettingsDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.schemas import ApiKeyIn, ApiKeyIssued, ApiKeyOut, ErrorBody, TokenOut, UserOut
from cloud.auth import tokens
from cloud.registry import services

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses={
        401: {"model": ErrorBody, "description": "incorrect email or password"},
        422: {"model": ErrorBody, "description": "the form is incomplete"},
    },
    summary="Log in: a bearer token for an email and password (OAuth2 password flow)",
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenOut:
    user = tokens.authenticate_password(session, form.username, form.password)
    issued = tokens.issue_token(settings, user)
    return TokenOut(access_token=issued.access_token, expires_in=issued.expires_in)


@router.get("/me", response_model=UserOut, responses=ERROR_RESPONSES, summary="The caller")
def me(session: SessionDep, principal: CurrentPrincipal) -> UserOut:
    return UserOut.model_validate(services.get_me(session, principal))


@router.get(
    "/me/api-keys",
    response_model=list[ApiKeyOut],
    responses=ERROR_RESPONSES,
    summary="The caller's API keys",
)
def list_api_keys(session: SessionDep, principal: CurrentPrincipal) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in tokens.list_api_keys(session, principal)]


@router.post(
    "/me/api-keys",
    response_model=ApiKeyIssued,
    status_code=status.HTTP_201_CREATED,
    responses=ERROR_RESPONSES,
    summary="Create an API key (the key is in this response only)",
)
def create_api_key(
    body: ApiKeyIn, session: SessionDep, principal: CurrentPrincipal
) -> ApiKeyIssued:
    issued = tokens.create_api_key(session, principal, body.name)
    out = ApiKeyOut.model_validate(issued.key)
    return ApiKeyIssued(**out.model_dump(), key=issued.secret)


@router.delete(
    "/me/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERROR_RESPONSES,
    summary="Revoke one of the caller's API keys (at once)",
)
def revoke_api_key(key_id: str, session: SessionDep, principal: CurrentPrincipal) -> None:
    tokens.revoke_api_key(session, principal, key_id)
