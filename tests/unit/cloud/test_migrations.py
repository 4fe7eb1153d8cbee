"""Migrations on SQLite: to head and back, idempotent, and identical to the models.

The same checks run on PostgreSQL in ``tests/integration/cloud/test_registry_postgres.py``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from cloud.db import alembic_config, current_revision, head_revision, make_engine, migrate
from cloud.registry.models import site_shard
from cloud.schema import metadata


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
    assert current_revision(url) == head_revision() == "0008"


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
