"""SQLiteStore: the conformance suite, plus what only the embedded store has (a file that
survives reopening, concurrent writers, durability settings, error translation)."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.cloud.tsdb.conformance import HOUR, T0, StoreConformance, feats, score

from cloud.errors import StoreError, StoreUnavailable
from cloud.settings import Settings
from cloud.tsdb import open_store
from cloud.tsdb.sqlite import SQLiteStore


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteStore]:
        store = SQLiteStore(tmp_path / "ts.db")
        try:
            yield store
        finally:
            store.close()


def test_points_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ts.db"
    first = SQLiteStore(path)
    first.write([feats(T0 + 60, {"x__mean": 1.5}), score(T0 + 60, 0.5, True)])
    first.close()
    second = SQLiteStore(path)
    try:
        (row,) = second.feature_history("dev-1", T0, T0 + HOUR)
        assert row.features == {"x__mean": 1.5}
        assert second.latest("dev-1")["score"].fields["anomalous"] is True
        second.write([score(T0 + 60, 0.5, True)])  # the replay after a restart
        assert second.count("score") == 1
    finally:
        second.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ts.db")
    store.close()
    with sqlite3.connect(tmp_path / "ts.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store = SQLiteStore(tmp_path / "ts.db")
    try:
        assert store._db is not None
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ts.db")
    writers, batches, per_batch = 4, 25, 20
    errors: list[BaseException] = []
    start = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        try:
            start.wait()
            for b in range(batches):
                base = T0 + (b * per_batch)
                store.write(
                    [score(base + k, 0.1, False, gateway=f"gw-{w}") for k in range(per_batch)]
                )
        except BaseException as exc:  # handed to the main thread, which fails the test
            errors.append(exc)

    def read() -> None:
        try:
            start.wait()
            for _ in range(50):
                store.count("score")
                store.site_rollup("site-1", T0, T0 + HOUR, 600)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    threads.append(threading.Thread(target=read))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that calls interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    try:
        assert store.count("score") == writers * batches * per_batch
        for w in range(writers):
            assert store.count("score", gateway=f"gw-{w}") == batches * per_batch
        assert store.stats().write_batches == writers * batches
    finally:
        store.close()


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ts.db")
    store.close()
    store.close()  # twice is fine
    assert store.ping() is False
    with pytest.raises(StoreError, match="closed"):
        store.write([score(T0, 0.1, False)])


def test_locked_database_is_unavailable_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    store = SQLiteStore(path)
    assert store._db is not None
    store._db.execute(f"PRAGMA busy_timeout = {50}")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.write([score(T0, 0.1, False)])
        assert store.stats().write_errors == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.write([score(T0, 0.1, False)])
    assert store.count("score") == 1
    store.close()


def test_unwritable_location_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=r"cannot open|unable to open"):
        SQLiteStore(blocker / "ts.db")


def test_open_store_picks_sqlite(tmp_path: Path) -> None:
    settings = Settings(tsdb="sqlite", tsdb_sqlite_path=tmp_path / "x.db")
    store = open_store(settings)
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == tmp_path / "x.db"
    finally:
        store.close()
