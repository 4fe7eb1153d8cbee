"""Prometheus metrics of the API process: HTTP requests by route template, SQL latency.

Registered in prometheus_client's default registry (ingest registers its own metrics
there too, ``cloud.ingest.metrics``); ``GET /metrics`` serves the lot. Routes are labelled
by their template (``/v1/devices/{device_id}``), never by the concrete path, so ids do not
multiply the series; requests that match no route count as ``<unmatched>``.
"""

from __future__ import annotations

import time
from typing import Any, Final

from prometheus_client import Counter, Histogram
from sqlalchemy import Engine, event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS: Final = Counter(
    "edgewatch_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_SECONDS: Final = Histogram(
    "edgewatch_http_request_seconds",
    "HTTP request latency, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DB_SECONDS: Final = Histogram(
    "edgewatch_db_query_seconds",
    "SQL registry statement latency, by statement kind (select, insert, update, delete, other)",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
DB_ERRORS: Final = Counter(
    "edgewatch_db_errors", "SQL registry statements that raised, by statement kind", ["operation"]
)

UNMATCHED: Final = "<unmatched>"
_OPERATIONS: Final = frozenset({"select", "insert", "update", "delete"})
_START_KEY: Final = "edgewatch_query_started"


def _operation(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else ""
    return word if word in _OPERATIONS else "other"


def instrument_engine(engine: Engine) -> None:
    """Time every statement ``engine`` runs into :data:`DB_SECONDS`."""

    def before(conn: Any, _cursor: Any, _stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        conn.info.setdefault(_START_KEY, []).append(time.perf_counter())

    def after(conn: Any, _cursor: Any, stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        started = conn.info.get(_START_KEY)
        if started:
            DB_SECONDS.labels(_operation(stmt)).observe(time.perf_counter() - started.pop())

    def failed(context: Any) -> None:
        conn = context.connection
        started = conn.info.get(_START_KEY) if conn is not None else None
        if started:
            started.pop()
        DB_ERRORS.labels(_operation(context.statement or "")).inc()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times each HTTP request by its route template
    (read from ``scope["route"]``, which the router sets, after the app answered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = str(scope.get("method", "GET"))
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
