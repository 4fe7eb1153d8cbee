"""cloud.db: URLs, SQLite connection settings, error translation, sessions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import (
    describe,
    make_engine,
    make_sessionmaker,
    normalize_url,
    session_scope,
    translate_errors,
)
from cloud.errors import ConfigError, Conflict, RegistryUnavailable
from cloud.registry.models import Client, Site, SiteKind


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@db/edgewatch", "postgresql+psycopg"),
        ("postgres://u:p@db/edgewatch", "postgresql+psycopg"),
        ("postgresql+psycopg2://u@db/edgewatch", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/edgewatch", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_urls_are_pinned_to_psycopg_3(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@db/x", "not a url"])
def test_unsupported_urls_name_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match="EDGEWATCH_CLOUD_DATABASE_URL"):
        normalize_url(url)


def test_describe_hides_the_password() -> None:
    assert "s3cret" not in describe("postgresql+psycopg://user:s3cret@db/edgewatch")


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    finally:
        engine.dispose()


def test_in_memory_sqlite_shares_one_database() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        engine.dispose()


def test_a_duplicate_is_a_conflict(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(Conflict, match=r"clients\.name"), session_scope(sessions) as s:
        s.add(Client(name="Client Alpha"))


def test_a_missing_parent_is_a_conflict_because_foreign_keys_are_on(
    sessions: sessionmaker[Session],
) -> None:
    with pytest.raises(Conflict, match="FOREIGN KEY"), session_scope(sessions) as s:
        s.add(Site(client_id="no-such-client", name="x", kind=SiteKind.HOME, timezone="UTC"))


def test_session_scope_rolls_back_on_error(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError), session_scope(sessions) as s:
        s.add(Client(name="rolled back"))
        s.flush()
        raise RuntimeError("boom")
    with sessions() as s:
        assert s.query(Client).filter_by(name="rolled back").count() == 0


def test_an_unreachable_database_is_registry_unavailable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        with (
            pytest.raises(RegistryUnavailable, match="unable to open"),
            translate_errors(),
            engine.connect() as conn,
        ):
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def test_sessions_keep_values_after_commit(sessions: sessionmaker[Session]) -> None:
    factory = make_sessionmaker(sessions.kw["bind"])
    with session_scope(factory) as s:
        client = Client(name="kept")
        s.add(client)
    assert client.name == "kept"
    assert client.created_at.tzinfo is not None
