"""The registry on the real PostgreSQL: the same migrations as SQLite, no drift from the
models, and the services' behaviour where PostgreSQL differs (constraint names in
conflicts, values it cannot store, time zones, 64-bit sequence numbers), plus the API.

Each test gets its own schema in the session's database (``search_path``), so these tests
share ``postgres_db`` with the other integration tests without touching their tables.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect
from support.registry_world import PASSWORD, seed_world, settings_for
from unit.cloud.test_migrations import autogenerate_diff

from cloud.app import create_app
from cloud.auth import Principal
from cloud.db import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    make_sessionmaker,
    migrate,
)
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.registry import services
from cloud.registry.models import Gateway, Role

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with `starlette.testclient` is deprecated"
    )
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url(pg_schema_url: str) -> str:
    """A ``postgresql+psycopg://`` URL whose connections use a fresh schema of their own."""
    return pg_schema_url


def test_migrations_match_the_models_on_postgres(pg_url: str) -> None:
    migrate(pg_url)
    migrate(pg_url)
    assert current_revision(pg_url) == head_revision()
    assert autogenerate_diff(pg_url) == []
    command.downgrade(alembic_config(pg_url), "base")
    engine = make_engine(pg_url)
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    migrate(pg_url)
    assert autogenerate_diff(pg_url) == []


def test_services_on_postgres(pg_url: str) -> None:
    world = seed_world(pg_url)
    engine = make_engine(pg_url)
    sessions = make_sessionmaker(engine)
    admin = Principal(world.admin_id, Role.ADMIN)
    fm_a = Principal(world.a.manager_id, Role.FACILITY_MANAGER, world.a.client_id)
    try:
        with sessions() as s:
            assert [d.id for d in services.list_devices(s, fm_a, q="SER-")] == [world.a.device_id]
            assert services.list_devices(s, fm_a, client_id=world.b.client_id) == []
            with pytest.raises(NotFound):
                services.get_device(s, fm_a, world.b.device_id)
            refs = services.gateway_devices(s, world.b.gateway_id)
            assert refs.client_id == world.b.client_id
            assert set(refs.devices) == {"cc-bravo", "fan-bravo"}
            event = services.list_device_events(s, admin, world.a.device_id)[0]
            assert event.at == datetime(2023, 4, 1, 9, tzinfo=UTC)
        with sessions() as s, pytest.raises(Conflict, match="uq_clients_name"):
            services.create_client(s, admin, name="Client Alpha")
        with sessions() as s, pytest.raises(InvalidInput, match="cannot store"):
            services.create_client(s, admin, name="nul \x00 byte")
        with sessions() as s:
            gateway = s.get(Gateway, world.a.gateway_id)
            assert gateway is not None
            gateway.last_seq = 2**63 - 1  # edge_agent.protocol.SEQ_MAX
            s.commit()
        with sessions() as s:
            gateway = s.get(Gateway, world.a.gateway_id)
            assert gateway is not None and gateway.last_seq == 2**63 - 1
            assert gateway.created_at.tzinfo is not None
    finally:
        engine.dispose()


def test_api_on_postgres(pg_url: str, tmp_path: Path) -> None:
    world = seed_world(pg_url)
    app = create_app(settings_for(pg_url, tmp_path / "ts.db", secret_key="p" * 40))
    with TestClient(app) as client:
        token = client.post(
            "/v1/auth/token", data={"username": world.a.manager_email, "password": PASSWORD}
        ).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        devices = client.get("/v1/devices", params={"q": "roof"}, headers=h).json()
        assert [d["id"] for d in devices] == [world.a.device_id]
        assert client.get(f"/v1/devices/{world.b.device_id}", headers=h).status_code == 404
        r = client.patch(
            f"/v1/devices/{world.a.device_id}", json={"location": "plant room"}, headers=h
        )
        assert r.status_code == 200 and r.json()["location"] == "plant room"
        assert client.get("/readyz").json()["checks"] == {"database": "ok", "store": "ok"}
