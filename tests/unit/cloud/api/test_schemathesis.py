"""Property tests over the OpenAPI schema (schemathesis 4): for generated requests to every
operation, as an admin, the API never answers 5xx and every response matches the schema.

The schema is the app's own (``create_app(...).openapi()``, loaded when the module is
collected; no server or database is needed for it); the cases run against ``create_app``
on a seeded SQLite registry and store, through schemathesis' ASGI transport. The examples
and fuzzing phases run a few cases per operation with a fixed seed, so a failure
reproduces. (``schemathesis.pytest.from_fixture`` would avoid the module-level schema, but
its lazy runner writes ``Function._nodeid``, which pytest 9.2 no longer has.)

The service desks' status posts (``POST /v1/desks/{desk_id}/status``) carry no bearer
token but a signature over the body, which generated requests never have: they all
answer 401. So each generated body is also sent signed by a real desk (the example order
id replaced by a real order's), and that answer is checked too: random JSON reaches the
desk's body parser and the order lookup, and must never make a 5xx.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core import NotSet
from schemathesis.python.asgi import shutdown_lifespans
from sqlalchemy import select
from support.registry_world import (
    PASSWORD,
    World,
    copy_sqlite,
    seed_points,
    seed_work_orders,
    settings_for,
)
from unit.cloud.api.conftest import TestClient

from cloud.api.schemas import EXAMPLE_ORDER_ID
from cloud.app import create_app
from cloud.db import make_engine
from cloud.desk.signing import signed_headers
from cloud.settings import load_settings
from cloud.tsdb.sqlite import SQLiteStore
from cloud.workorders.models import Desk
from edge_agent.protocol import BATCH_CONTENT_TYPE

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20_260_115,
        "phases": {
            "examples": {"enabled": True},
            "fuzzing": {"enabled": True},
            "coverage": {"enabled": False},
        },
        "generation": {"max-examples": 8, "database": "none"},
    }
)

# The HTTPS uplink's body is opaque bytes: send generated binaries as they are (the route
# must answer them with 400, never 5xx).
schemathesis.serializer.alias(BATCH_CONTENT_TYPE, "application/octet-stream")
schema = schemathesis.openapi.from_dict(create_app(load_settings()).openapi(), config=CONFIG)
CHECKS = [not_a_server_error, response_schema_conformance]
DESK_STATUS = "/v1/desks/{desk_id}/status"


@dataclasses.dataclass(frozen=True)
class Fuzz:
    app: FastAPI
    headers: dict[str, str]
    """An admin's bearer token."""
    desk_id: str
    desk_secret: str
    order_id: str
    """An order of the desk's client."""


@pytest.fixture(scope="module")
def fuzz_app(
    world_template: tuple[Path, World], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzz]:
    """One app for the whole module (operations may change its registry: that is fine)."""
    template_path, template = world_template
    folder = tmp_path_factory.mktemp("schemathesis")
    world = dataclasses.replace(template, url=copy_sqlite(template_path, folder / "registry.db"))
    world = seed_work_orders(world)  # lists of work orders and site risks are not empty
    store = SQLiteStore(folder / "ts.db")
    try:
        seed_points(store, world)
    finally:
        store.close()
    app = create_app(settings_for(world.url, folder / "ts.db", secret_key="f" * 40))
    with TestClient(app) as c:
        r = c.post("/v1/auth/token", data={"username": world.admin_email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    engine = make_engine(world.url)
    try:
        with engine.connect() as conn:
            secret = conn.scalar(select(Desk.secret).where(Desk.id == world.a.desk_id))
    finally:
        engine.dispose()
    assert secret is not None
    token = {"Authorization": f"Bearer {r.json()['access_token']}"}
    yield Fuzz(app, token, world.a.desk_id, secret, world.a.work_order_id)
    shutdown_lifespans()  # schemathesis keeps an app's lifespan running until told otherwise


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, fuzz_app: Fuzz) -> None:
    case.call_and_validate(app=fuzz_app.app, headers=fuzz_app.headers, checks=CHECKS)
    if case.path == DESK_STATUS:
        post_signed(case, fuzz_app)


def post_signed(case: schemathesis.Case, fuzz: Fuzz) -> None:
    """``case``'s body as Alpha's desk would sign it (see the module docstring)."""
    if isinstance(case.body, bytes):  # generated as bytes: sent as they are
        raw = case.body
    else:
        body = {} if isinstance(case.body, NotSet) else case.body
        raw = json.dumps(body).replace(EXAMPLE_ORDER_ID, fuzz.order_id).encode()
    headers = signed_headers(fuzz.desk_secret, f"msg_{uuid.uuid4().hex}", int(time.time()), raw)
    headers["Content-Type"] = "application/json"
    client = TestClient(fuzz.app)  # the lifespan schemathesis started is running
    response = client.post(f"/v1/desks/{fuzz.desk_id}/status", content=raw, headers=headers)
    case.validate_response(response, checks=CHECKS)
