"""Migrations on SQLite: to head and back, idempotent, and identical to the models.

The same checks run on PostgreSQL in ``tests/integration/cloud/test_registry_postgres.py``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from support.workorder_world import NOW, seed

from cloud.db import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    make_sessionmaker,
    migrate,
)
from cloud.registry.models import Device, Site, site_shard
from cloud.schema import metadata
from cloud.workorders.models import Source, WorkOrder
from cloud.workorders.policy import State


def autogenerate_diff(url: str) -> list[object]:
    """What Alembic's autogenerate would write to make the database match the models."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(url)
    assert autogenerate_diff(url) == []


def test_migrate_is_idempotent_and_reaches_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert current_revision(url) is None
    migrate(url)
    migrate(url)
    assert current_revision(url) == head_revision() == "0009"


def test_downgrade_to_base_removes_every_table_and_upgrade_restores_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(url)
    command.downgrade(alembic_config(url), "base")
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    migrate(url)
    assert autogenerate_diff(url) == []


def test_sites_made_before_shards_get_theirs_from_the_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO clients (id, name) VALUES ('c1', 'Acme')"))
            for sid in ("site-a", "site-b"):
                conn.execute(
                    text(
                        "INSERT INTO sites (id, client_id, name, kind, timezone) "
                        "VALUES (:id, 'c1', :id, 'hotel', 'UTC')"
                    ),
                    {"id": sid},
                )
        migrate(url)
        with engine.connect() as conn:
            shards = dict(conn.execute(text("SELECT id, shard FROM sites")).all())
    finally:
        engine.dispose()
    assert shards == {"site-a": site_shard("site-a"), "site-b": site_shard("site-b")}
    assert shards["site-a"] != shards["site-b"]


def test_open_risk_orders_get_the_device_s_risk_key_the_oldest_first(tmp_path: Path) -> None:
    """0009: a device's oldest open risk order takes ``<device>|risk``; a second one (the
    old rule allowed one per fault) keeps its key; alarm and closed orders are untouched."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    command.upgrade(alembic_config(url), "0008")
    engine = make_engine(url)
    try:
        biz = seed(make_sessionmaker(engine), devices=2)
        dev, other = biz.devices[0], biz.devices[1]
        with make_sessionmaker(engine).begin() as s:
            site_id = s.get(Device, dev).gateway.site_id  # type: ignore[union-attr]
            client_id = s.get(Site, site_id).client_id  # type: ignore[union-attr]

            def order(number: int, device: str, fault: str, source: Source, open_: bool,
                      days: int) -> None:
                at = NOW + timedelta(days=days)
                s.add(WorkOrder(
                    number=number, client_id=client_id, site_id=site_id, device_id=device,
                    fault=fault, source=source, state=State.WAITING_APPROVAL,
                    open_key=f"{device}|{fault}" if open_ else None, priority=3,
                    problem="p", cause="c", remedy="r", sla_due_at=at, opened_at=at,
                    updated_at=at,
                ))  # fmt: skip

            order(1, dev, "bearing_wear", Source.RISK, True, days=2)
            order(2, dev, "refrigerant_leak", Source.RISK, True, days=1)  # the oldest
            order(3, dev, "alarm:device_offline", Source.ALARM, True, days=0)
            order(4, other, "valve_wear", Source.RISK, True, days=0)
            order(5, other, "condenser_fouling", Source.RISK, False, days=0)
        migrate(url)
        with engine.connect() as conn:
            keys = dict(conn.execute(text("SELECT number, open_key FROM work_orders")).all())
        assert keys == {
            1: f"{dev}|bearing_wear",
            2: f"{dev}|risk",
            3: f"{dev}|alarm:device_offline",
            4: f"{other}|risk",
            5: None,
        }
        command.downgrade(alembic_config(url), "0008")
        with engine.connect() as conn:
            keys = dict(conn.execute(text("SELECT number, open_key FROM work_orders")).all())
        assert keys[2] == f"{dev}|refrigerant_leak" and keys[4] == f"{other}|valve_wear"
    finally:
        engine.dispose()
