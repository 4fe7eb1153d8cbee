"""``POST /v1/desks/{desk_id}/status``: a service desk posts a ticket's status change back,
and it moves the work order (:mod:`cloud.workorders.inbound` does the work).

No bearer token: the post is authenticated by its Standard Webhooks signature
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) made with the desk's
secret over the exact body bytes (:mod:`cloud.desk.signing`). The body is the desk's own
JSON (:mod:`cloud.desk.inbound` has the format of each kind). Answers:

- ``200`` what the post did: the order, its number, the state before and after, and
  ``duplicate`` for a replay of a post already received (by ``webhook-id``: nothing moves);
- ``401`` a missing, malformed or wrong signature, a timestamp more than 5 minutes off,
  and also a desk id that does not exist or whose desk is disabled: the answer is the
  one a wrong signature gets, so unsigned posts cannot tell which desk ids exist;
- ``404`` no order of the desk's client with that order id, or no ticket of the desk
  with that ticket id;
- ``409`` the life cycle does not allow the move (the detail names both states; a
  replay of the post gets the same answer), or the order id and the ticket id in the
  body name different orders;
- ``413`` a body over 256 KiB; ``422`` a body that is not a status update of the desk's
  kind (the detail names the place in the body: ``body.issue.fields.status.name: ...``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session, sessionmaker

from cloud.api.errors import error_response
from cloud.api.schemas import (
    DESK_STATUS_EXAMPLES,
    DESK_STATUS_SCHEMA,
    DeskStatusOut,
    ErrorBody,
)
from cloud.desk.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, TOLERANCE_S
from cloud.workorders import inbound

router = APIRouter(tags=["service desk"])

MAX_BODY_BYTES: Final = 256 * 1024

desk_signature = APIKeyHeader(
    name=SIGNATURE_HEADER,
    scheme_name="DeskSignature",
    auto_error=False,
    description="Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256>` of "
    "`<webhook-id>.<webhook-timestamp>.<body>` with the desk's `whsec_` secret, sent with "
    "the `webhook-id` and `webhook-timestamp` headers",
)

DESCRIPTION: Final = f"""\
No bearer token: the desk signs the post the Standard Webhooks way with its own secret
(`webhook-id`, `webhook-timestamp`, `webhook-signature` over the exact body bytes). The
body is the desk's own JSON, by the desk's kind (examples below). The order is the one
the body names by our order id (it must be one of the desk's client's orders), else the
one whose ticket at this desk has the body's ticket id; a ticket id the desk had no ticket
recorded for is recorded.

An order in the requested state already gets the post's note as a comment; an allowed
move is made, with the desk as the actor and its state name in the order's history, and
goes to the client's other desks (never back to this one); a move the life cycle refuses
answers 409 naming both states. A post is applied once: a replay (same `webhook-id`)
answers what the first copy got, with `duplicate: true`, and moves nothing.

A desk id that does not exist, or whose desk is disabled, answers 401 exactly as a wrong
signature does, so unsigned posts cannot tell which desk ids exist. Bodies over
{MAX_BODY_BYTES // 1024} KiB answer 413.
"""

DeskId = Annotated[
    str,
    Path(
        max_length=36, description="the desk's id (printed by `edgewatch-cloud admin create-desk`)"
    ),
]

_HEADERS: Final[list[dict[str, Any]]] = [
    {
        "name": ID_HEADER,
        "in": "header",
        "required": True,
        "description": "the message's id, the same on every retry of it (replays are "
        "answered once, by it)",
        "schema": {"type": "string", "maxLength": 200},
    },
    {
        "name": TIMESTAMP_HEADER,
        "in": "header",
        "required": True,
        "description": f"unix seconds; refused more than {TOLERANCE_S} s from the server's clock",
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    },
]


@router.post(
    "/v1/desks/{desk_id}/status",
    response_model=DeskStatusOut,
    summary="A service desk's status change of a ticket: moves the work order (signed by the desk)",
    description=DESCRIPTION,
    dependencies=[Security(desk_signature)],
    openapi_extra={
        "parameters": _HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": DESK_STATUS_SCHEMA,
                    "examples": DESK_STATUS_EXAMPLES,
                }
            },
        },
    },
    responses={
        401: {
            "model": ErrorBody,
            "description": "not signed by this desk (also: no such enabled desk)",
        },
        404: {"model": ErrorBody, "description": "no such order or ticket of this desk's"},
        409: {
            "model": ErrorBody,
            "description": "the life cycle does not allow the move, or the body names two "
            "different orders",
        },
        413: {"model": ErrorBody, "description": f"larger than {MAX_BODY_BYTES} bytes"},
        422: {"model": ErrorBody, "description": "not a status update of the desk's kind"},
        503: {"model": ErrorBody, "description": "the registry is unavailable: post again"},
    },
)
async def post_status(request: Request, desk_id: DeskId) -> DeskStatusOut | JSONResponse:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return error_response(413, "too_large", f"at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return error_response(413, "too_large", f"at most {MAX_BODY_BYTES} bytes")
    sessions = cast(sessionmaker[Session], request.app.state.sessionmaker)
    received = await run_in_threadpool(
        inbound.receive, sessions, desk_id, request.headers, bytes(body)
    )
    return DeskStatusOut.of(received)
