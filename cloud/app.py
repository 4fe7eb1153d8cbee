"""``create_app(settings)``: the EdgeWatch cloud's REST API as a FastAPI application.

Resources live for the application's lifespan and are kept on ``app.state``: the
settings, the SQL engine and its sessionmaker (``cloud.db``), and the time-series store
(``cloud.tsdb.open_store``). Nothing is opened at import time, so tests build as many
apps as they like, each on its own database.

Routers, by resource (``cloud/api``): auth and ``/me``, clients, sites, gateways,
devices, users, failure risk (``cloud.api.risk``), work orders and their deliveries
(``cloud.api.workorders``), the service desks' signed status posts
(``cloud.api.desk_inbound``), health (``/healthz``, ``/readyz``, ``/metrics``), and the
gateways' HTTPS uplink (``cloud.api.uplink``); the web dashboard's pages at ``/ui`` and their
assets at ``/static`` (``cloud.web``), with the energy baselines of the models the reports
fitted (``cloud.reports.baselines``, on ``app.state.baselines``). Errors of the
``cloud.errors`` tree become status codes in ``cloud.api.errors``; HTTP and SQL metrics are
in ``cloud.api.metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI

from cloud.api import (
    auth,
    broker,
    clients,
    desk_inbound,
    devices,
    errors,
    gateways,
    health,
    reports,
    risk,
    sites,
    uplink,
    users,
    workorders,
)
from cloud.api.metrics import MetricsMiddleware, instrument_engine
from cloud.db import (
    create_engine_from_settings,
    current_revision,
    describe,
    head_revision,
    make_sessionmaker,
)
from cloud.errors import RegistryUnavailable
from cloud.reports.baselines import StoredBaselines
from cloud.settings import Settings
from cloud.tsdb.base import TimeSeriesStore
from cloud.web import install as install_dashboard

log = logging.getLogger(__name__)

API_VERSION: Final = "1.0.0"

DESCRIPTION: Final = """\
EdgeWatch predicts appliance failures from gateway data. This API serves the registry
(clients, sites, gateways, devices, users), each device's life-cycle file, readings and
failure risk, the work orders opened from predicted failures and alarms (with their
deliveries to the clients' service desks, and the desks' status changes posted back), and
accepts gateway uplinks over HTTPS.

**Authentication**: `POST /v1/auth/token` (OAuth2 password flow) returns a bearer token;
API keys (`ewk_...`, from `POST /v1/me/api-keys`) go in `Authorization: Bearer` or
`X-API-Key`. Service desks sign their status posts with their desk's secret (Standard
Webhooks) instead; gateways send their uplink with their own secret.

**Tenants**: a facility manager sees only their own client's objects; anything else
answers 404, and lists never contain it.

**Errors** are `{"error": "<code>", "detail": ...}`.
"""

TAGS: Final = [
    {"name": "auth", "description": "log in, the caller, API keys"},
    {"name": "clients", "description": "tenants"},
    {"name": "sites", "description": "a client's buildings; energy and anomaly rollups"},
    {"name": "gateways", "description": "gateways and their MQTT/HTTPS credentials"},
    {"name": "devices", "description": "appliances, their life-cycle file and readings"},
    {"name": "users", "description": "accounts and roles (admin)"},
    {"name": "risk", "description": "failure risk per device and per site"},
    {
        "name": "work orders",
        "description": "orders from predicted failures and alarms: life cycle, comments, "
        "assignment, deliveries to the service desks",
    },
    {
        "name": "service desk",
        "description": "status changes a desk posts back, signed with the desk's secret",
    },
    {"name": "health", "description": "liveness, readiness, Prometheus metrics"},
    {"name": "broker", "description": "the MQTT cluster's authentication of gateway logins"},
]


def create_app(settings: Settings, *, store: TimeSeriesStore | None = None) -> FastAPI:
    """The API for ``settings``. ``store``: use this time-series store instead of opening
    the configured one (tests); the caller then owns it and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine_from_settings(settings)
        instrument_engine(engine)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        _check_revision(settings)
        owned: TimeSeriesStore | None = None
        if store is None:
            from cloud.tsdb import open_store

            owned = open_store(settings)
        app.state.store = store if store is not None else owned
        baselines = getattr(app.state, "baselines", None)
        if isinstance(baselines, StoredBaselines):
            baselines.warm_up_in_background()
        try:
            yield
        finally:
            if owned is not None:
                owned.close()
            engine.dispose()

    app = FastAPI(
        title="EdgeWatch cloud",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(MetricsMiddleware)
    for module in (
        auth,
        clients,
        sites,
        gateways,
        devices,
        risk,
        reports,
        workorders,
        desk_inbound,  # after workorders: the tenant walk moves an order through both
        users,
        health,
        uplink,
        broker,
    ):
        app.include_router(module.router)
    app.state.baselines = StoredBaselines(
        lambda: app.state.sessionmaker,
        lambda: app.state.store,
        weather_dir=settings.report_weather_dir,
    )
    install_dashboard(app)
    return app


def _check_revision(settings: Settings) -> None:
    """Log loudly when the registry is not at the migrations' head (the API would answer
    500s on missing tables); ``edgewatch-cloud migrate`` fixes it."""
    try:
        current = current_revision(settings)
    except RegistryUnavailable as exc:
        log.error("registry %s: %s", describe(settings.database_url), exc)
        return
    head = head_revision()
    if current != head:
        log.error(
            "registry %s is at revision %s, this version needs %s: run `edgewatch-cloud migrate`",
            describe(settings.database_url),
            current,
            head,
        )
