"""``POST /v1/broker/emqx/authenticate``: EMQX's HTTP authenticator (:mod:`cloud.auth.emqx`).

Only the MQTT cluster calls it: it must send the shared key of the setting
``broker_auth_key`` in the ``X-EdgeWatch-Broker-Key`` header. Without that setting the
endpoint does not exist (404); with a wrong or missing key it answers 401, which EMQX reads
as ``ignore``. A registry outage answers 503 (EMQX: ``ignore``, so with no other
authenticator the login is refused, never allowed).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from cloud.api.schemas import ErrorBody
from cloud.auth.emqx import IngestAccount, authenticate
from cloud.db import translate_errors
from cloud.errors import AuthError, NotFound
from cloud.settings import Settings

router = APIRouter(prefix="/v1/broker", tags=["broker"])

KEY_HEADER: Final = "X-EdgeWatch-Broker-Key"
broker_key = APIKeyHeader(
    name=KEY_HEADER,
    scheme_name="BrokerKey",
    auto_error=False,
    description="the shared key of the setting broker_auth_key (the MQTT cluster only)",
)
LOGINS = Counter(
    "edgewatch_broker_logins_total", "MQTT logins EMQX asked about, by answer", ["result"]
)


class EmqxLogin(BaseModel):
    """What EMQX's authenticator posts (its body template, ``deploy/README.md``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"username": "gw-dxb-1", "password": "ewg_...", "clientid": "gw-dxb-1"}]
        }
    )

    username: str = Field(max_length=200, examples=["gw-dxb-1"])
    password: str = Field(max_length=500, examples=["ewg_..."])
    clientid: str = Field("", max_length=200, examples=["gw-dxb-1"])


def _answer(request: Request, login: EmqxLogin) -> dict[str, Any]:
    settings = cast(Settings, request.app.state.settings)
    ingest = None
    if settings.mqtt_username and settings.mqtt_password is not None:
        ingest = IngestAccount(
            settings.mqtt_username,
            settings.mqtt_password.get_secret_value(),
            settings.ingest_share_group,
        )
    sessions = cast(sessionmaker[Session], request.app.state.sessionmaker)
    with translate_errors(), sessions() as session:
        return authenticate(session, login.username, login.password, ingest=ingest)


@router.post(
    "/emqx/authenticate",
    summary="EMQX's HTTP authentication of an MQTT login, with the client's ACL",
    responses={
        200: {"description": "allow (with the ACL), deny or ignore"},
        401: {"model": ErrorBody, "description": f"no or a wrong {KEY_HEADER}"},
        404: {"model": ErrorBody, "description": "broker_auth_key is not set"},
        422: {"model": ErrorBody, "description": "not a login EMQX's template would send"},
        503: {"model": ErrorBody, "description": "the registry is unavailable"},
    },
)
async def emqx_authenticate(
    request: Request,
    login: EmqxLogin,
    key: Annotated[str | None, Security(broker_key)] = None,
) -> JSONResponse:
    expected = cast(Settings, request.app.state.settings).broker_auth_key
    if expected is None:
        raise NotFound("no broker authentication is configured here")
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise AuthError(f"send the broker's shared key in {KEY_HEADER}")
    answer = await run_in_threadpool(_answer, request, login)
    LOGINS.labels(answer["result"]).inc()
    return JSONResponse(answer)
