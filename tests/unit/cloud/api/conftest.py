"""Fixtures of the API tests: ``create_app`` on the seeded SQLite registry and a SQLite
time-series store with a few points, driven through FastAPI's TestClient (which runs on
``httpx2``, a dev dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.registry_world import PASSWORD, World, seed_points, settings_for

from cloud.app import create_app
from cloud.settings import Settings
from cloud.tsdb.sqlite import SQLiteStore

Headers = dict[str, str]
BROKER_KEY = "k" * 40
"""What the MQTT cluster sends to ``/v1/broker/...`` (settings ``broker_auth_key``)."""


@pytest.fixture
def api_settings(world: World, tmp_path: Path) -> Settings:
    ts_path = tmp_path / "ts.db"
    store = SQLiteStore(ts_path)
    try:
        seed_points(store, world)
    finally:
        store.close()
    return settings_for(
        world.url,
        ts_path,
        secret_key="t" * 40,
        gateway_credential_grace_s=3600,
        broker_auth_key=BROKER_KEY,
    )


@pytest.fixture
def app(api_settings: Settings) -> FastAPI:
    return create_app(api_settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def login(client: TestClient) -> Callable[[str], Headers]:
    """Bearer headers for a seeded user (logs in through ``POST /v1/auth/token``)."""
    cache: dict[str, Headers] = {}

    def headers(email: str) -> Headers:
        if email not in cache:
            r = client.post("/v1/auth/token", data={"username": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            cache[email] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        return cache[email]

    return headers
