"""Property tests over the OpenAPI schema (schemathesis 4): for generated requests to every
operation, as an admin, the API never answers 5xx and every response matches the schema.

The schema is the app's own (``create_app(...).openapi()``, loaded when the module is
collected; no server or database is needed for it); the cases run against ``create_app``
on a seeded SQLite registry and store, through schemathesis' ASGI transport. The examples
and fuzzing phases run a few cases per operation with a fixed seed, so a failure
reproduces. (``schemathesis.pytest.from_fixture`` would avoid the module-level schema, but
its lazy runner writes ``Function._nodeid``, which pytest 9.2 no longer has.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.python.asgi import shutdown_lifespans
from support.registry_world import (
    PASSWORD,
    World,
    copy_sqlite,
    seed_points,
    seed_work_orders,
    settings_for,
)
from unit.cloud.api.conftest import TestClient

from cloud.app import create_app
from cloud.settings import load_settings
from cloud.tsdb.sqlite import SQLiteStore
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


@pytest.fixture(scope="module")
def fuzz_app(
    world_template: tuple[Path, World], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
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
    yield app, {"Authorization": f"Bearer {r.json()['access_token']}"}
    shutdown_lifespans()  # schemathesis keeps an app's lifespan running until told otherwise


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, fuzz_app: tuple[FastAPI, dict[str, str]]
) -> None:
    app, headers = fuzz_app
    case.call_and_validate(
        app=app, headers=headers, checks=[not_a_server_error, response_schema_conformance]
    )
