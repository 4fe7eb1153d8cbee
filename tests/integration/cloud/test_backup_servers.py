"""``edgewatch-cloud backup`` / ``restore`` with real servers: restores into EMPTY targets (a
fresh PostgreSQL database, a database of its own on the session's private ``influxd``)
find every row and every point again.

- the migration path of a growing installation: a backup of the embedded deployment
  (SQLite registry, SQLite store) restored into PostgreSQL + InfluxDB;
- PostgreSQL + InfluxDB backed up (one ``REPEATABLE READ`` snapshot) and restored into
  fresh ones, and into SQLite (the format names no backend);
- PostgreSQL sequences moved past the restored ids; occupied targets, corrupted files and
  newer schemas refused; a failure mid-restore leaves the PostgreSQL database empty.

Each test prints how long backup and restore took for its data (``pytest -s``).
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from support.postgres import fresh_database
from support.registry_world import World, seed_world
from unit.cloud.test_backup import (
    assert_same_points,
    assert_same_rows,
    many_points,
    peak_mib_of_dump,
    populate,
    rewrite,
    set_manifest,
)

from cloud import backup as backups
from cloud.backup import series
from cloud.backup import sql as backup_sql
from cloud.db import current_revision, head_revision, make_engine, make_sessionmaker
from cloud.errors import BackupError
from cloud.risk.models import RiskRequest
from cloud.settings import Settings, load_settings
from cloud.tsdb import MEASUREMENTS, influx, open_store
from cloud.tsdb.base import Point
from cloud.workorders.models import DeliveryState, OutboxMessage

pytestmark = pytest.mark.timeout(120)


@dataclass
class Servers:
    """Makes empty targets: fresh PostgreSQL databases and InfluxDB databases."""

    influx_url: str
    stack: ExitStack
    influx_names: list[str]

    def postgres(self) -> str:
        return self.stack.enter_context(fresh_database("edgewatch_backup"))

    def settings(self, database_url: str | None = None) -> Settings:
        """Settings of an empty PostgreSQL database and an empty InfluxDB database."""
        name = f"edgewatch_backup_{uuid.uuid4().hex[:10]}"
        self.influx_names.append(name)
        return load_settings(
            database_url=database_url or self.postgres(),
            tsdb="influxdb",
            influx_url=self.influx_url,
            influx_database=name,
            influx_retention="INF",  # the worlds' readings are of 2026: keep them whenever
        )


@pytest.fixture(scope="module")
def servers(postgres_db: str, influxdb: Any) -> Iterator[Servers]:
    with ExitStack() as stack:
        made = Servers(influxdb.url, stack, [])
        try:
            yield made
        finally:
            with httpx.Client(base_url=influxdb.url, timeout=10) as client:
                for name in made.influx_names:
                    client.post("/query", data={"q": f'DROP DATABASE "{name}"'})


@dataclass
class Backed:
    settings: Settings
    world: World
    backup: Path
    result: backups.BackupResult


def _populated_backup(settings: Settings, folder: Path) -> Backed:
    started = time.monotonic()
    world = seed_world(settings.database_url)
    store = open_store(settings)
    try:
        world = populate(world, store, folder)
    finally:
        store.close()
    seeded = time.monotonic() - started
    result = backups.backup(settings, folder / "backup")
    print(  # noqa: T201
        f"\nsource {settings.database_url.split(':')[0]} + {settings.tsdb}: seeded in "
        f"{seeded:.1f} s; backup of {result.rows:,} rows and {result.points:,} points "
        f"({result.bytes:,} bytes) in {result.seconds:.2f} s"
    )
    return Backed(settings, world, result.path, result)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Backed:
    """The embedded deployment (SQLite registry and store), populated and backed up."""
    folder = tmp_path_factory.mktemp("embedded")
    settings = load_settings(
        database_url=f"sqlite:///{folder / 'registry.db'}",
        tsdb="sqlite",
        tsdb_sqlite_path=folder / "ts.db",
    )
    return _populated_backup(settings, folder)


@pytest.fixture(scope="module")
def production(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Backed:
    """PostgreSQL + InfluxDB, populated by the services themselves, and backed up."""
    return _populated_backup(servers.settings(), tmp_path_factory.mktemp("production"))


def _restore(backed: Backed, target: Settings, what: str) -> backups.RestoreResult:
    result = backups.restore(target, backed.backup)
    source_store, target_store = open_store(backed.settings), open_store(target)
    try:
        points = assert_same_points(source_store, target_store)
    finally:
        source_store.close()
        target_store.close()
    rows = assert_same_rows(backed.settings.database_url, target.database_url)
    assert result.rows == rows and sum(result.points.values()) == points
    assert current_revision(target) == head_revision()
    print(  # noqa: T201
        f"{what}: restored {sum(rows.values()):,} rows and {points:,} points "
        f"({backed.result.bytes:,} bytes of backup) in {result.seconds:.2f} s "
        f"(checking {result.verify_seconds:.2f} s, rows {result.sql_seconds:.2f} s, "
        f"points {result.series_seconds:.2f} s)"
    )
    return result


def _next_ids_follow_the_restored_ones(url: str, device_id: str, work_order_id: str) -> None:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as s:
            top = s.scalar(sa.select(sa.func.max(RiskRequest.id)))
            outbox = s.scalar(sa.select(sa.func.max(OutboxMessage.id)))
            request = RiskRequest(device_id=device_id, shard=1, reason="alarm")
            message = OutboxMessage(
                work_order_id=work_order_id,
                desk_id=s.scalar(
                    sa.select(OutboxMessage.desk_id).where(OutboxMessage.id == outbox)
                ),
                event="updated",
                state=DeliveryState.PENDING,
            )
            s.add_all([request, message])
            s.flush()
            assert top is not None and outbox is not None
            assert (request.id, message.id) == (top + 1, outbox + 1)
    finally:
        engine.dispose()


# ---- restores into empty servers -----------------------------------------------------------


def test_the_embedded_deployment_moves_to_postgres_and_influxdb(
    embedded: Backed, servers: Servers
) -> None:
    target = servers.settings()
    result = _restore(embedded, target, "SQLite + SQLite store -> PostgreSQL + InfluxDB")
    assert {s.split("=")[0].split(".")[-1] for s in result.sequences} >= {
        "risk_requests_id_seq",
        "outbox_id_seq",
        "work_order_numbers_number_seq",
    }
    world = embedded.world
    _next_ids_follow_the_restored_ones(
        target.database_url, world.a.device_id, world.a.work_order_id
    )


def test_postgres_and_influxdb_round_trip_into_fresh_servers(
    production: Backed, servers: Servers, tmp_path: Path
) -> None:
    assert production.result.manifest.source["sql"]["dialect"] == "postgresql"
    assert production.result.manifest.source["timeseries"]["backend"] == "influxdb"
    target = servers.settings()
    _restore(production, target, "PostgreSQL + InfluxDB -> PostgreSQL + InfluxDB")
    world = production.world
    _next_ids_follow_the_restored_ones(
        target.database_url, world.a.device_id, world.a.work_order_id
    )
    embedded = load_settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        tsdb="sqlite",
        tsdb_sqlite_path=tmp_path / "ts.db",
    )
    _restore(production, embedded, "PostgreSQL + InfluxDB -> SQLite + SQLite store")


# ---- refusals and failure states -----------------------------------------------------------


def _counts(settings: Settings) -> tuple[dict[str, int], dict[str, int]]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows = backup_sql.row_counts(conn, backup_sql.tables_of(conn))
    finally:
        engine.dispose()
    store = open_store(settings)
    try:
        return rows, {m: store.count(m) for m in MEASUREMENTS}
    finally:
        store.close()


def test_occupied_servers_are_refused_and_left_alone(
    production: Backed, servers: Servers, pg_schema_url: str
) -> None:
    before = _counts(production.settings)
    with pytest.raises(BackupError, match=r"holds rows .* holds points .* Nothing was changed"):
        backups.restore(production.settings, production.backup)
    assert _counts(production.settings) == before

    # An empty PostgreSQL schema beside an InfluxDB database that holds a point.
    target = servers.settings(pg_schema_url)
    store = open_store(target)
    try:
        tags = {"client": "c", "site": "s", "gateway": "g", "device": ""}
        store.write([Point("health", 10**18, tags, {"dropped": 1})])
    finally:
        store.close()
    with pytest.raises(BackupError, match=r"time-series store holds points \(health 1\)"):
        backups.restore(target, production.backup)
    rows, points = _counts(target)
    assert rows == {} and points["health"] == 1


def test_corrupted_and_newer_backups_are_refused_and_a_failed_restore_commits_nothing(
    production: Backed, servers: Servers, tmp_path: Path, pg_schema_url: str
) -> None:
    target = servers.settings(pg_schema_url)
    backup = Path(shutil.copytree(production.backup, tmp_path / "corrupt"))
    reports = backup / "sql" / "reports.jsonl.gz"
    data = bytearray(reports.read_bytes())
    data[-20] ^= 0x01
    reports.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"reports\.jsonl\.gz: sha256 .* corrupted"):
        backups.restore(target, backup)
    assert _counts(target) == ({}, dict.fromkeys(MEASUREMENTS, 0))
    assert current_revision(target) is None

    newer = Path(shutil.copytree(production.backup, tmp_path / "newer"))
    doc = json.loads((newer / "manifest.json").read_text())
    doc["alembic_revision"] = "9999"
    set_manifest(newer, doc)
    with pytest.raises(
        BackupError, match=rf"revision 9999, .* \(its newest is {head_revision()}\)"
    ):
        backups.restore(target, newer)
    assert current_revision(target) is None

    # A row PostgreSQL refuses, in a file whose checksums agree: the transaction rolls
    # back, the database is left migrated and empty; the points were never reached.
    bad = Path(shutil.copytree(production.backup, tmp_path / "bad"))
    lines = gzip.decompress((bad / "sql" / "work_order_events.jsonl.gz").read_bytes())
    first = lines.splitlines()[0]
    rewrite(bad, "sql/work_order_events.jsonl.gz", gzip.compress(lines + first + b"\n"))
    with pytest.raises(BackupError) as caught:
        backups.restore(target, bad)
    message = str(caught.value)
    assert "Nothing was committed to the SQL database" in message
    assert "nothing was written to the time-series store" in message
    rows, points = _counts(target)
    assert rows and not any(rows.values()) and not any(points.values())
    assert current_revision(target) == head_revision()


def test_the_postgres_read_is_one_repeatable_read_snapshot(pg_schema_url: str) -> None:
    url = pg_schema_url
    backup_sql_engine = make_engine(url)
    writer = make_engine(url)
    try:
        with writer.begin() as w:
            w.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        with backup_sql.snapshot(backup_sql_engine) as conn:
            assert conn.get_isolation_level() == "REPEATABLE READ"
            assert conn.scalar(sa.text("SHOW transaction_read_only")) == "on"
            assert conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
            with writer.begin() as w:
                w.execute(sa.text("INSERT INTO t VALUES (1)"))
            assert conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
        with backup_sql_engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM t")) == 1
    finally:
        backup_sql_engine.dispose()
        writer.dispose()


def test_an_influxdb_export_is_read_chunk_by_chunk(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InfluxDB sends the answer in chunks of CHUNK_POINTS rows; the store parses and hands
    on one at a time, so a window of 12,000 points never sits in memory at once."""
    monkeypatch.setattr(influx, "CHUNK_POINTS", 1000)
    monkeypatch.setattr(series, "FIRST_WINDOW_NS", 30 * 86_400 * 1_000_000_000)
    store = open_store(servers.settings("sqlite://"))  # the store alone
    try:
        store.write(many_points(12_000))
        peak = peak_mib_of_dump(store, tmp_path)
    finally:
        store.close()
    print(f"\nbackup of 12,000 features points from InfluxDB: peak {peak:.1f} MiB")  # noqa: T201
    assert peak < 5


def a_day_of_a_site(devices: int = 10) -> Iterator[list[Point]]:
    """A day of ``devices`` appliances, an hour per batch: each minute a score and an energy
    reading, every five minutes a features window of 20 features."""
    day = 1_000_000_000 * 86_400 * 20_500  # 2026-02-16, a UTC midnight
    minute = 60 * 1_000_000_000
    for hour in range(24):
        batch: list[Point] = []
        for device in range(devices):
            tags = {"client": "c1", "site": "s1", "gateway": "gw-1", "device": f"cc-{device}"}
            for m in range(hour * 60, hour * 60 + 60):
                ts = day + m * minute
                score = {"score": (m % 97) / 97, "anomalous": m % 97 == 0, "threshold": 0.9}
                batch.append(Point("score", ts, {**tags, "model_id": "cc-v1"}, score))
                batch.append(Point("energy", ts, tags, {"energy": 1000.0 + m / 60, "starts": m}))
                if m % 5 == 0:
                    features = {f"signal_{j}__mean": m / (j + 1) for j in range(20)}
                    features["n_samples"] = 30
                    batch.append(Point("features", ts, {**tags, "group": "fast"}, features))
        yield batch


def test_a_day_of_a_site_moves_from_sqlite_to_influxdb_and_how_long_it_takes(
    servers: Servers, tmp_path: Path
) -> None:
    source = load_settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        tsdb="sqlite",
        tsdb_sqlite_path=tmp_path / "ts.db",
    )
    seed_world(source.database_url)
    store = open_store(source)
    try:
        for batch in a_day_of_a_site():
            store.write(batch)
    finally:
        store.close()
    made = backups.backup(source, tmp_path / "backup")
    target = servers.settings()
    restored = backups.restore(target, made.path)
    mine, theirs = open_store(source), open_store(target)
    try:
        points = assert_same_points(mine, theirs)
    finally:
        mine.close()
        theirs.close()
    assert points == made.points == 31_680
    print(  # noqa: T201
        f"\na day of 10 appliances ({points:,} points, {made.rows} rows), SQLite -> "
        f"PostgreSQL + InfluxDB: backup {made.bytes:,} bytes in {made.seconds:.2f} s "
        f"({points / made.seconds:,.0f} points/s); restore {restored.seconds:.2f} s "
        f"({points / restored.seconds:,.0f} points/s; points {restored.series_seconds:.2f} s)"
    )
