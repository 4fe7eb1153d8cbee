"""``/healthz`` (the process answers), ``/readyz`` (SQL and the store answer), ``/metrics``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cloud.api.deps import StoreDep
from cloud.api.schemas import HealthOut, ReadyOut
from cloud.db import describe
from cloud.errors import StoreError

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
def healthz() -> HealthOut:
    return HealthOut()


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "a dependency does not answer"}},
    summary="Readiness: the SQL registry and the time-series store answer",
)
def readyz(request: Request, response: Response, store: StoreDep) -> ReadyOut:
    checks: dict[str, str] = {}
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        checks["database"] = f"failed: {reason}"
        log.warning(
            "readyz: database %s failed: %s", describe(request.app.state.engine.url), reason
        )
    try:
        checks["store"] = "ok" if store.ping() else "failed: the store does not answer"
    except StoreError as exc:
        checks["store"] = f"failed: {exc}"
    if checks["store"] != "ok":
        log.warning("readyz: time-series store %s", checks["store"])
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        response.status_code = 503
    return ReadyOut(status="ready" if ready else "not_ready", checks=checks)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics (HTTP, SQL, ingest)",
)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
