"""``POST /v1/gateways/{gateway_id}/batches``: the gateways' HTTPS uplink.

The same batches as over MQTT (:mod:`edge_agent.protocol`), for sites where MQTT is
blocked. The gateway authenticates with its own secret (``Authorization: Bearer``; the
secret its credential was issued with, the same as its MQTT password); the batch goes
through the same :class:`~cloud.ingest.service.IngestService` as the MQTT workers'
batches, and the answer is the :class:`~edge_agent.protocol.Ack`:

- ``200`` with the ack (stored ranges, rejected seqs with reasons);
- ``400`` a batch that cannot be stored at all (``malformed``, ``bad_version``,
  ``bad_gateway``: the error names the reason); ``413`` a body over the protocol's limit;
  ``415`` another content type;
- ``401`` no, a wrong, an expired or a revoked secret, or one of another gateway;
- ``503`` with ``Retry-After`` while the time-series store is unavailable: nothing was
  stored or acknowledged, the gateway sends the batch again.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Path, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from cloud.api.errors import error_response
from cloud.api.schemas import ErrorBody
from cloud.auth.gateways import authenticate_gateway
from cloud.errors import AuthError
from cloud.ingest.directory import SqlDirectory
from cloud.ingest.service import BatchRefused, IngestService
from cloud.risk.requests import RequestSink
from cloud.settings import Settings
from cloud.tsdb.base import TimeSeriesStore
from edge_agent.protocol import (
    ACK_CONTENT_TYPE,
    BATCH_CONTENT_TYPE,
    IDENT_RE,
    MAX_DOCUMENT_BYTES,
    encode_ack,
)

router = APIRouter(prefix="/v1/gateways", tags=["uplink"])

gateway_secret = HTTPBearer(
    auto_error=False,
    scheme_name="GatewaySecret",
    description="the gateway's own secret (issued by POST /v1/gateways/{id}/credentials)",
)

MAX_BODY_BYTES: Final = MAX_DOCUMENT_BYTES + 1
"""A compressed batch is never larger than its JSON, which is at most MAX_DOCUMENT_BYTES."""

ACK_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["schema_version", "gateway_id", "ranges", "rejected"],
    "properties": {
        "schema_version": {"type": "integer", "const": 1},
        "gateway_id": {"type": "string"},
        "ranges": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        },
        "rejected": {
            "type": "array",
            "items": {"type": "array", "minItems": 2, "maxItems": 2},
        },
    },
    "example": {
        "schema_version": 1,
        "gateway_id": "gw-dxb-1",
        "ranges": [[1, 500]],
        "rejected": [[512, "unknown_device"]],
    },
}


def _service(request: Request) -> IngestService:
    """The app's HTTPS ingest service, made on first use from the app's store and registry."""
    state = request.app.state
    service = getattr(state, "ingest", None)
    if service is None:
        settings = cast(Settings, state.settings)
        sessions = cast(sessionmaker[Session], state.sessionmaker)
        service = IngestService(
            cast(TimeSeriesStore, state.store),
            SqlDirectory(sessions, refresh_s=settings.ingest_registry_refresh_s),
            max_future_s=settings.ingest_max_future_s,
            transport="https",
            notify=RequestSink(sessions),
        )
        state.ingest = service
    return service


def _authenticate(request: Request, gateway_id: str, secret: str) -> None:
    sessions = cast(sessionmaker[Session], request.app.state.sessionmaker)
    with sessions() as session:
        authenticate_gateway(session, gateway_id, secret)


@router.post(
    "/{gateway_id}/batches",
    summary="A gateway's batch of uplink records (HTTPS uplink)",
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {BATCH_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={
        200: {
            "description": "stored: the ack",
            "content": {ACK_CONTENT_TYPE: {"schema": ACK_SCHEMA}},
        },
        400: {"model": ErrorBody, "description": "not a batch of this gateway"},
        401: {"model": ErrorBody, "description": "no valid gateway secret"},
        413: {"model": ErrorBody, "description": "larger than a batch may be"},
        415: {"model": ErrorBody, "description": f"not {BATCH_CONTENT_TYPE}"},
        422: {"model": ErrorBody, "description": "the gateway id is not a valid id"},
        503: {
            "model": ErrorBody,
            "description": "the store or the registry is unavailable: send again later",
        },
    },
)
async def post_batch(
    request: Request,
    gateway_id: Annotated[str, Path(pattern=IDENT_RE.pattern, examples=["gw-dxb-1"])],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(gateway_secret)],
) -> Response:
    if credentials is None:
        raise AuthError("send Authorization: Bearer <the gateway's secret>")
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != BATCH_CONTENT_TYPE:
        return error_response(415, "unsupported_media_type", f"expected {BATCH_CONTENT_TYPE}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return error_response(413, "too_large", f"at most {MAX_BODY_BYTES} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            return error_response(413, "too_large", f"at most {MAX_BODY_BYTES} bytes")
    await run_in_threadpool(_authenticate, request, gateway_id, credentials.credentials)
    service = _service(request)
    try:
        ack = await run_in_threadpool(service.handle, bytes(data), gateway_id)
    except BatchRefused as exc:
        return error_response(400, exc.reason, str(exc))
    return Response(encode_ack(ack), media_type=ACK_CONTENT_TYPE)
