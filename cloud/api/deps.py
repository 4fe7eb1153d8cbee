"""Request dependencies as ``Annotated`` aliases (overridable in tests with
``app.dependency_overrides``).

- :data:`SettingsDep`: the app's :class:`~cloud.settings.Settings`.
- :data:`SessionDep`: one SQL session per request, one unit of work: committed when the
  route function returns, before the response is sent (``scope="function"``), rolled back
  when it raises; a commit-time conflict therefore still becomes a 409, not a 200 for a
  change that was lost.
- :data:`StoreDep`: the time-series store opened at start-up.
- :data:`CurrentPrincipal`: the caller, from ``Authorization: Bearer <JWT or API key>`` or
  ``X-API-Key: <API key>``; 401 with ``WWW-Authenticate: Bearer`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth.principal import Principal
from cloud.auth.tokens import is_api_key, principal_from_api_key, principal_from_token
from cloud.db import session_scope
from cloud.errors import AuthError
from cloud.settings import Settings
from cloud.tsdb.base import TimeSeriesStore

TOKEN_URL = "/v1/auth/token"  # noqa: S105 - a path, not a secret

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    auto_error=False,
    description="a bearer token from POST /v1/auth/token, or an API key (ewk_...)",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key (ewk_...) from POST /v1/me/api-keys"
)


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(request: Request) -> Iterator[Session]:
    factory = cast(sessionmaker[Session], request.app.state.sessionmaker)
    with session_scope(factory) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_store(request: Request) -> TimeSeriesStore:
    return cast(TimeSeriesStore, request.app.state.store)


StoreDep = Annotated[TimeSeriesStore, Depends(get_store)]


def get_principal(
    session: SessionDep,
    settings: SettingsDep,
    bearer: Annotated[str | None, Security(oauth2_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> Principal:
    if api_key:
        return principal_from_api_key(session, api_key)
    if bearer:
        if is_api_key(bearer):
            return principal_from_api_key(session, bearer)
        return principal_from_token(session, settings, bearer)
    raise AuthError(
        "not authenticated: send Authorization: Bearer <token or API key>, or X-API-Key"
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
