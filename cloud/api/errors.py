"""The one place where the cloud's error tree becomes HTTP status codes.

    NotFound 404 · Conflict 409 · InvalidInput 422 · AuthError 401 (with
    ``WWW-Authenticate: Bearer``) · SignatureError 401 (a desk's post whose Standard
    Webhooks signature does not verify; ``WWW-Authenticate: webhook-signature``) ·
    Forbidden 403 · RegistryUnavailable 503 · StoreUnavailable 503 (with ``Retry-After``) ·
    StoreError 502 · any other CloudError 500

Every error body is :class:`cloud.api.schemas.ErrorBody`: ``{"error": ..., "detail": ...}``;
FastAPI's request validation errors and Starlette's 404/405 get the same shape. A 5xx is
logged with its traceback; its body says what failed without internals.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.api.schemas import ErrorBody
from cloud.desk.signing import SignatureError
from cloud.errors import (
    AuthError,
    CloudError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RegistryUnavailable,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

STATUS: Final[tuple[tuple[type[CloudError], int, str], ...]] = (
    # Subclasses before their bases.
    (Forbidden, 403, "forbidden"),
    (AuthError, 401, "unauthorized"),
    (SignatureError, 401, "unauthorized"),  # an InvalidInput: before it
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (RegistryUnavailable, 503, "registry_unavailable"),
    (InvalidInput, 422, "invalid_input"),
    (StoreUnavailable, 503, "store_unavailable"),
    (StoreError, 502, "store_error"),
    (CloudError, 500, "internal_error"),
)
RETRY_AFTER_S: Final = "5"

ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorBody, "description": "no valid credentials"},
    403: {"model": ErrorBody, "description": "the caller's role may not do this"},
    404: {"model": ErrorBody, "description": "no such object, or not visible to the caller"},
    422: {"model": ErrorBody, "description": "a parameter or the body is invalid"},
}
"""Documented on every authenticated router (replaces FastAPI's default 422 schema)."""


def status_of(exc: CloudError) -> tuple[int, str]:
    for cls, status, code in STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"  # pragma: no cover - CloudError is in STATUS


def error_response(
    status: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=code, detail=detail).model_dump(mode="json")
    return JSONResponse(body, status_code=status, headers=headers)


async def _cloud_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudError)  # noqa: S101 - registered for CloudError only
    status, code = status_of(exc)
    headers: dict[str, str] | None = None
    if status == 401:
        scheme = "webhook-signature" if isinstance(exc, SignatureError) else "Bearer"
        headers = {"WWW-Authenticate": scheme}
    elif status == 503:
        headers = {"Retry-After": RETRY_AFTER_S}
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc, exc_info=exc)
        detail = str(exc) if status != 500 else "internal error"
    else:
        detail = str(exc)
    return error_response(status, code, detail, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return error_response(422, "invalid_input", jsonable_encoder(problems))


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
        exc.status_code, "http_error"
    )
    return error_response(exc.status_code, code, exc.detail, dict(exc.headers or {}) or None)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
