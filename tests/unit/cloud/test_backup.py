"""``edgewatch-cloud backup`` / ``restore`` on the embedded backends (SQLite registry,
SQLite store): the round trip through the CLI finds every row and every point again;
broken backups, newer schemas and occupied targets are refused and leave the target as
the message says; older backups are migrated; the SQL read is one snapshot.

The same world is restored into PostgreSQL and InfluxDB by
``tests/integration/cloud/test_backup_servers.py``, with the helpers defined here
(:func:`populate`, :func:`assert_same_rows`, :func:`assert_same_points`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import shutil
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support.registry_world import World, copy_sqlite, seed_points, seed_work_orders, settings_for
from support.report_world import seed_report_world, seed_tenant_reports

from cloud import backup as backups
from cloud.backup import archive, series
from cloud.backup import sql as backup_sql
from cloud.cli import main
from cloud.db import current_revision, head_revision, make_engine, make_sessionmaker, migrate
from cloud.errors import BackupError
from cloud.registry.models import DeviceEvent, EventKind, Gateway, Site
from cloud.risk.models import RiskRequest
from cloud.schema import metadata
from cloud.settings import Settings
from cloud.tsdb import MEASUREMENTS, open_store
from cloud.tsdb.base import Point, TimeSeriesStore, series_key
from cloud.tsdb.sqlite import SQLiteStore
from cloud.workorders.models import (
    DeliveryAttempt,
    Depot,
    DeskInbound,
    InboundOutcome,
    Part,
    Reservation,
    Stock,
    Technician,
    TicketRef,
)

pytestmark = pytest.mark.timeout(120)

NS = 1_000_000_000


# ---- the world (shared with the integration test) ------------------------------------------


def populate(world: World, store: TimeSeriesStore, folder: Path) -> World:
    """Fill the registry of ``world`` (seeded by ``seed_world``) and ``store``: the
    two-tenant registry with work orders, outbox and reports (``registry_world``,
    ``report_world``), a client with an October of energy readings and feature windows,
    and a row in the tables those leave empty, with values that are easy to lose on the
    way (JSON ``null`` beside SQL ``NULL``, the largest BIGINT, unicode, control
    characters, ``0.1 + 0.2``)."""
    world = seed_work_orders(world)
    world = seed_tenant_reports(world, folder)
    engine = make_engine(world.url)
    try:
        sessions = make_sessionmaker(engine)
        seed_report_world(sessions, store)
        a = world.a
        with sessions.begin() as s:
            depot = Depot(name="Dubai depot", latitude=25.2, longitude=55.3)
            s.add_all([depot, Part(number="RFG-R410A-5KG", name="R410A 5 kg", unit_cost=120.0)])
            s.flush()
            s.add(Stock(depot_id=depot.id, part_number="RFG-R410A-5KG", on_hand=4, reserved=1))
            s.add(Technician(name="Omar", skills=["f-gas"], depot_id=depot.id, email=None))
            s.add(
                Reservation(
                    work_order_id=a.work_order_id,
                    part_number="RFG-R410A-5KG",
                    depot_id=depot.id,
                    quantity=2,
                    reserved=1,
                    short=1,
                )
            )
            s.add(TicketRef(work_order_id=a.work_order_id, desk_id=a.desk_id, external_id="INC1"))
            s.add(
                DeskInbound(
                    desk_id=a.desk_id,
                    message_id="msg_1",
                    work_order_id=a.work_order_id,
                    requested_state="approved",
                    vendor_state="Approved",
                    outcome=InboundOutcome.MOVED,
                    from_state="waiting_approval",
                    to_state="approved",
                )
            )
            s.add(
                DeliveryAttempt(
                    outbox_id=int(a.outbox_id),
                    attempt=1,
                    worker="w-1",
                    ok=False,
                    status_code=503,
                    duration_ms=12.5,
                    detail="Service Unavailable",
                )
            )
            s.add(RiskRequest(device_id=a.device_id, shard=7, reason="alarm", detail=None))
            s.add(RiskRequest(device_id=a.device_id, shard=7, reason="anomaly"))  # SQL NULL
            s.add(
                DeviceEvent(
                    device_id=a.device_id,
                    at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
                    kind=EventKind.NOTE,
                    summary="ünï☃ 设备 'quote\" back\\slash\nnew line\ttab",
                    detail={"nested": {"list": [1, 2.5, None, True, "x"]}, "empty": {}},
                )
            )
            gateway = s.get(Gateway, a.gateway_id)
            assert gateway is not None
            gateway.last_seq = 2**63 - 1
            gateway.last_seen_at = datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
            site = s.get(Site, a.site_id)
            assert site is not None
            site.floor_area_m2 = 0.1 + 0.2
    finally:
        engine.dispose()
    seed_points(store, world)
    base = int(datetime(2026, 1, 15, tzinfo=UTC).timestamp()) * NS
    tags = {"client": world.a.client_id, "site": world.a.site_id, "gateway": world.a.gateway_id}
    store.write(
        [
            Point(
                "health",
                base + k * 60 * NS + 123,
                {**tags, "device": ""},
                {"buffer_depth": k, "dropped": 0, "ratio": 2.0, "ok": True, "note": "ünï ☃"},
            )
            for k in range(5)
        ]
    )
    return world


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the models, read through the models' types (aware UTC
    times, parsed JSON), with a flag per JSON column for SQL ``NULL``; by primary key."""
    engine = make_engine(url)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                nulls = [
                    sa.cast(c, sa.Text).is_(None).label(f"{c.name}_is_sql_null")
                    for c in table.columns
                    if isinstance(c.type, sa.JSON)
                ]
                stmt = sa.select(*table.columns, *nulls).order_by(*table.primary_key.columns)
                out[table.name] = [tuple(row) for row in conn.execute(stmt)]
        return out
    finally:
        engine.dispose()


def assert_same_rows(source: str, target: str) -> dict[str, int]:
    """Every table holds the same rows in both; the row counts."""
    mine, theirs = table_rows(source), table_rows(target)
    assert set(mine) == set(theirs)
    for name, rows in mine.items():
        assert theirs[name] == rows, f"table {name} differs"
    return {name: len(rows) for name, rows in mine.items()}


def all_points(store: TimeSeriesStore) -> list[Point]:
    """Every point of ``store``, by time, measurement and tags."""
    span = store.time_span()
    points = [] if span is None else store.export(span[0], span[1] + 1)
    return sorted(points, key=lambda p: (p.ts_ns, p.measurement, series_key(p.tags)))


def assert_same_points(source: TimeSeriesStore, target: TimeSeriesStore) -> int:
    """Both stores hold the same points (tags, fields and field types) and answer the same
    to queries; how many points."""
    mine, theirs = all_points(source), all_points(target)
    assert len(theirs) == len(mine)
    assert theirs == mine
    for p, q in zip(mine, theirs, strict=True):
        assert {k: type(v) for k, v in p.fields.items()} == {
            k: type(v) for k, v in q.fields.items()
        }
    for m in MEASUREMENTS:
        assert target.count(m) == source.count(m)
    devices = {p.tags["device"] for p in mine if p.tags["device"]}
    sites = {p.tags["site"] for p in mine}
    start, end = mine[0].ts_ns / NS, mine[-1].ts_ns / NS + 1
    for device in devices:
        assert target.feature_history(device, start, end) == source.feature_history(
            device, start, end
        )
        assert target.energy(device, start, end, 86_400) == source.energy(
            device, start, end, 86_400
        )
    for site in sites:
        expected = source.site_rollup(site, start, end, 86_400)
        got = target.site_rollup(site, start, end, 86_400)
        assert len(got) == len(expected)
        for r, q in zip(expected, got, strict=True):
            for name, value in dataclasses.asdict(r).items():
                theirs = getattr(q, name)
                if isinstance(value, float) and isinstance(theirs, float):
                    # Sums: InfluxDB adds up in its own order; the last digits may differ.
                    assert math.isclose(theirs, value, rel_tol=1e-12), (site, name)
                else:
                    assert theirs == value, (site, name)
    return len(mine)


# ---- fixtures ------------------------------------------------------------------------------


@dataclass
class Source:
    settings: Settings
    world: World
    backup: Path
    seconds: float
    bytes: int


@pytest.fixture(scope="module")
def source(
    world_template: tuple[Path, World], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    """A populated SQLite registry and store, and a backup of them (made once)."""
    folder = tmp_path_factory.mktemp("backup-source")
    template_path, template = world_template
    world = dataclasses.replace(template, url=copy_sqlite(template_path, folder / "registry.db"))
    settings = settings_for(world.url, folder / "ts.db")
    store = open_store(settings)
    try:
        world = populate(world, store, folder)
    finally:
        store.close()
    result = backups.backup(settings, folder / "backup")
    yield Source(settings, world, result.path, result.seconds, result.bytes)


def target(folder: Path) -> Settings:
    return settings_for(f"sqlite:///{folder / 'restored.db'}", folder / "restored-ts.db")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run ``edgewatch-cloud`` in-process with the settings given as environment."""
    for key in list(os.environ):
        if key.startswith("EDGEWATCH_CLOUD_"):
            monkeypatch.delenv(key)

    def run(settings: Settings, *argv: str) -> tuple[int, str, str]:
        for key, value in (
            ("DATABASE_URL", settings.database_url),
            ("TSDB", settings.tsdb),
            ("TSDB_SQLITE_PATH", str(settings.tsdb_sqlite_path)),
        ):
            monkeypatch.setenv(f"EDGEWATCH_CLOUD_{key}", value)
        return _run(list(argv))

    yield run


def _run(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def counts(settings: Settings) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per table and points per measurement in the targets ``settings`` name."""
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


def rewrite(backup: Path, relative: str, data: bytes) -> None:
    """Replace a file of a backup and make the manifest and SHA256SUMS agree with it, as a
    bug in a writer would (the checksums cannot catch what they describe)."""
    (backup / relative).write_bytes(data)
    doc = json.loads((backup / archive.MANIFEST).read_text())
    for entry in doc["sql"]["tables"] + doc["timeseries"]["measurements"]:
        if entry["file"] == relative:
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    set_manifest(backup, doc)


def set_manifest(backup: Path, doc: dict[str, Any]) -> None:
    data = (json.dumps(doc, indent=2) + "\n").encode()
    (backup / archive.MANIFEST).write_bytes(data)
    sums = (backup / archive.SUMS).read_text().splitlines()
    sums = [line for line in sums if not line.endswith(f"  {archive.MANIFEST}")]
    sums.append(f"{hashlib.sha256(data).hexdigest()}  {archive.MANIFEST}")
    (backup / archive.SUMS).write_text("\n".join(sums) + "\n")


def copy_backup(src: Path, folder: Path) -> Path:
    return Path(shutil.copytree(src, folder / "backup-copy"))


# ---- the round trip ------------------------------------------------------------------------


def test_round_trip_through_the_cli_finds_every_row_and_point(
    source: Source, tmp_path: Path, cli_env: Any
) -> None:
    rows, points = counts(source.settings)
    code, out, err = cli_env(source.settings, "backup", "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert f"sql: clients: {rows['clients']} rows" in err  # progress on stderr
    assert f"time series: {sum(points.values()):,} points in " in err
    assert f"in {tmp_path / 'b'}" in out
    assert not list(tmp_path.glob(".b.incomplete-*"))

    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["format"] == "edgewatch-backup" and manifest["format_version"] == 1
    assert manifest["alembic_revision"] == head_revision()
    assert manifest["source"]["sql"]["dialect"] == "sqlite"
    assert manifest["source"]["timeseries"]["backend"] == "sqlite"
    assert {t["name"]: t["rows"] for t in manifest["sql"]["tables"]} == rows
    assert {m["name"]: m["points"] for m in manifest["timeseries"]["measurements"]} == points
    sums = {}
    for line in (tmp_path / "b" / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        sums[name] = digest
        assert hashlib.sha256((tmp_path / "b" / name).read_bytes()).hexdigest() == digest
    listed = manifest["sql"]["tables"] + manifest["timeseries"]["measurements"]
    assert {e["file"]: e["sha256"] for e in listed}.items() <= sums.items()
    assert {p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*.gz")} == {
        e["file"] for e in listed
    }
    with gzip.open(tmp_path / "b" / "sql" / "clients.jsonl.gz", "rt") as f:
        first = json.loads(f.readline())
    assert len(first) == 3 and first[2].endswith("+00:00")  # id, name, created_at in UTC

    # Every table the migrations create is in the backup, and most hold rows.
    assert {t["name"] for t in manifest["sql"]["tables"]} == set(metadata.tables)
    assert sum(1 for n in rows.values() if n) >= len(rows) - 1

    code, out, err = cli_env(target(tmp_path), "restore", "--from", str(tmp_path / "b"))
    assert code == 0, err
    assert f"{sum(rows.values()):,} rows, {sum(points.values()):,} points" in out
    assert "verified" in err and "sql: work_orders" in err

    tables = assert_same_rows(source.settings.database_url, target(tmp_path).database_url)
    assert tables == rows
    mine, theirs = open_store(source.settings), open_store(target(tmp_path))
    try:
        n = assert_same_points(mine, theirs)
    finally:
        mine.close()
        theirs.close()
    assert current_revision(target(tmp_path)) == head_revision()
    size = sum(p.stat().st_size for p in (tmp_path / "b").rglob("*") if p.is_file())
    print(  # noqa: T201
        f"\nSQLite -> SQLite: {sum(rows.values()):,} rows in {len(rows)} tables, {n:,} points; "
        f"backup {size:,} bytes; {out.strip()}"
    )


def test_check_verifies_a_backup_without_restoring(
    source: Source, tmp_path: Path, cli_env: Any
) -> None:
    code, out, err = cli_env(target(tmp_path), "restore", "--from", str(source.backup), "--check")
    assert code == 0, err
    assert "a complete backup of revision" in out and "files match" in out
    assert not (tmp_path / "restored.db").exists()


def test_the_restored_registry_takes_new_rows(source: Source, tmp_path: Path) -> None:
    settings = target(tmp_path)
    backups.restore(settings, source.backup)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            before = s.scalar(sa.select(sa.func.max(RiskRequest.id)))
            request = RiskRequest(device_id=source.world.a.device_id, shard=1, reason="alarm")
            s.add(request)
            s.flush()
            assert before is not None and request.id == before + 1
    finally:
        engine.dispose()


# ---- refusals and failure states -----------------------------------------------------------


def test_a_non_empty_target_is_refused_unless_forced(
    source: Source, tmp_path: Path, cli_env: Any
) -> None:
    settings = target(tmp_path)
    backups.restore(settings, source.backup)
    store = open_store(settings)
    try:
        extra = Point("health", 5 * NS, {"client": "c", "site": "s", "gateway": "g", "device": ""},
                      {"dropped": 1})  # fmt: skip
        store.write([extra])
    finally:
        store.close()
    before = counts(settings)

    code, _, err = cli_env(settings, "restore", "--from", str(source.backup))
    assert code == 1
    assert "holds rows (api_keys 2, " in err and "the time-series store holds points" in err
    assert "Nothing was changed" in err and "--force" in err
    assert counts(settings) == before

    # --force: the tables are dropped and made again, the points written over the store's.
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE stray (x INTEGER)"))
    engine.dispose()
    code, out, err = cli_env(settings, "restore", "--from", str(source.backup), "--force")
    assert code == 0, err
    assert "dropped first (--force): " in out and "stray" in out
    assert_same_rows(source.settings.database_url, settings.database_url)
    rows, points = counts(settings)
    assert "stray" not in rows
    assert points == before[1]  # the backup's points, and the extra one stayed


def test_a_corrupted_or_truncated_file_is_refused_before_anything_is_written(
    source: Source, tmp_path: Path
) -> None:
    backup = copy_backup(source.backup, tmp_path)
    devices = backup / "sql" / "devices.jsonl.gz"
    data = bytearray(devices.read_bytes())
    data[len(data) // 2] ^= 0xFF
    devices.write_bytes(bytes(data))
    settings = target(tmp_path)
    with pytest.raises(BackupError, match=r"devices\.jsonl\.gz: sha256 .* corrupted"):
        backups.restore(settings, backup)
    assert not (tmp_path / "restored.db").exists() and not (tmp_path / "restored-ts.db").exists()

    backup = Path(shutil.copytree(source.backup, tmp_path / "truncated"))
    energy = backup / "ts" / "energy.jsonl.gz"
    energy.write_bytes(energy.read_bytes()[:-100])
    with pytest.raises(BackupError, match=r"energy\.jsonl\.gz: \d+ bytes, the manifest says"):
        backups.restore(settings, backup)
    (backup / "ts" / "score.jsonl.gz").unlink()
    with pytest.raises(BackupError, match=r"score\.jsonl\.gz: missing"):
        backups.verify(backup)
    (backup / "manifest.json").write_text('{"format": "edgewatch-backup", ')
    with pytest.raises(BackupError, match=r"manifest\.json: its sha256 is not the one in"):
        backups.verify(backup)
    assert not (tmp_path / "restored.db").exists()


def test_a_bad_file_the_checksums_agree_with_leaves_the_registry_empty(
    source: Source, tmp_path: Path
) -> None:
    """The SQL rows are inserted, then the points fail: the SQL transaction is rolled back
    and the registry is left migrated and empty, as the message says."""
    backup = copy_backup(source.backup, tmp_path)
    good = gzip.decompress((backup / "ts" / "energy.jsonl.gz").read_bytes()).splitlines()
    broken = b"\n".join([*good[:100], b'[1, {"client": "c"}, {"energy": 1.0}]', *good[100:]])
    rewrite(backup, "ts/energy.jsonl.gz", gzip.compress(broken + b"\n"))
    settings = target(tmp_path)
    with pytest.raises(BackupError) as caught:
        backups.restore(settings, backup)
    message = str(caught.value)
    assert "energy.jsonl.gz, line 101: not a point" in message
    assert "Nothing was committed to the SQL database" in message
    assert "the time-series store may hold some of the backup's points" in message
    rows, points = counts(settings)
    assert set(rows) == set(metadata.tables) and not any(rows.values())
    assert current_revision(settings) == head_revision()
    assert 0 < sum(points.values()) < sum(s.points for s in backups.verify(backup).series)

    # A gzip stream cut short, with checksums that agree: named, nothing committed.
    backup = Path(shutil.copytree(source.backup, tmp_path / "cut"))
    rewrite(backup, "sql/users.jsonl.gz", (backup / "sql/users.jsonl.gz").read_bytes()[:-30])
    with pytest.raises(BackupError, match=r"users\.jsonl\.gz: cannot decompress it"):
        backups.restore(settings, backup, force=True)
    rows, _ = counts(settings)
    assert not any(rows.values())


def test_a_backup_of_a_newer_schema_is_refused_naming_both_revisions(
    source: Source, tmp_path: Path, cli_env: Any
) -> None:
    backup = copy_backup(source.backup, tmp_path)
    doc = json.loads((backup / "manifest.json").read_text())
    doc["alembic_revision"] = "9999"
    set_manifest(backup, doc)
    code, _, err = cli_env(target(tmp_path), "restore", "--from", str(backup))
    assert code == 1
    assert "revision 9999, which this version of EdgeWatch does not know (its newest is " in err
    assert head_revision() in err
    assert not (tmp_path / "restored.db").exists()
    doc["format_version"] = 2
    set_manifest(backup, doc)
    with pytest.raises(BackupError, match=r"format version is 2; this version .* reads up to 1"):
        backups.verify(backup)


def test_backup_refuses_an_occupied_folder_and_an_unmigrated_registry(
    source: Source, tmp_path: Path, cli_env: Any
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = cli_env(source.settings, "backup", "--out", str(tmp_path / "full"))
    assert code == 2 and "is not an empty folder" in err
    empty = target(tmp_path)
    code, _, err = cli_env(empty, "backup", "--out", str(tmp_path / "b"))
    assert code == 1 and "was never migrated" in err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


# ---- schema revisions ----------------------------------------------------------------------


def test_an_older_backup_is_restored_at_its_revision_then_migrated(tmp_path: Path) -> None:
    old = "0004"
    settings = settings_for(f"sqlite:///{tmp_path / 'old.db'}", tmp_path / "old-ts.db")
    migrate(settings.database_url, old)
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO clients (id, name, created_at)"
                " VALUES ('c1', 'Old', '2025-05-01 00:00:00.000000')"
            )
        )
    engine.dispose()
    result = backups.backup(settings, tmp_path / "b")
    assert result.manifest.revision == old
    assert "site_baselines" not in {t.name for t in result.manifest.tables}

    fresh = target(tmp_path)
    restored = backups.restore(fresh, tmp_path / "b")
    assert restored.migrated_to == head_revision() != old
    assert current_revision(fresh) == head_revision()
    assert table_rows(fresh.database_url)["clients"][0][:2] == ("c1", "Old")

    # An empty registry at a newer revision is taken down to the backup's first.
    newer = settings_for(f"sqlite:///{tmp_path / 'newer.db'}", tmp_path / "newer-ts.db")
    migrate(newer.database_url)
    restored = backups.restore(newer, tmp_path / "b")
    assert restored.rows == {**dict.fromkeys(restored.rows, 0), "clients": 1}
    assert current_revision(newer) == head_revision()


# ---- what the pieces promise ---------------------------------------------------------------


def test_the_sql_read_is_one_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(url)
    engine = make_engine(url)
    writer = make_engine(url)
    try:
        with backup_sql.snapshot(engine) as conn:
            before = backup_sql.row_counts(conn, backup_sql.tables_of(conn))["clients"]

            def insert() -> None:
                with writer.begin() as w:
                    w.execute(sa.text("INSERT INTO clients (id, name) VALUES ('x', 'Late')"))

            thread = threading.Thread(target=insert)
            thread.start()
            thread.join(10)
            assert not thread.is_alive()  # WAL: the writer was not blocked by the reader
            assert backup_sql.row_counts(conn, backup_sql.tables_of(conn))["clients"] == before
        with engine.connect() as conn:
            assert backup_sql.row_counts(conn, backup_sql.tables_of(conn))["clients"] == before + 1
    finally:
        engine.dispose()
        writer.dispose()


def test_time_windows_adapt_to_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(series, "TARGET_POINTS", 500)
    store = SQLiteStore(tmp_path / "ts.db")
    tags = {"client": "c", "site": "s", "gateway": "g", "device": "d"}
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * NS
    dense = [Point("score", start + k * NS, tags, {"score": 0.5}) for k in range(6000)]
    later = start + int(timedelta(days=90).total_seconds()) * NS  # a quiet quarter between
    sparse = [Point("score", later + k * 600 * NS, tags, {"score": 0.5}) for k in range(300)]
    store.write(dense + sparse)
    messages: list[str] = []
    try:
        entries, details = series.dump(store, tmp_path, messages.append)
    finally:
        store.close()
    (score,) = [e for e in entries if e.measurement == "score"]
    assert score.points == 6300
    assert (score.first_ns, score.last_ns) == (dense[0].ts_ns, sparse[-1].ts_ns)
    # The first hour holds 3,600 points; then windows halve towards 500 points, and the
    # empty quarter is crossed in doubling steps (up to a week) rather than hour by hour.
    assert details["largest_window_points"] == 3600
    assert details["windows"] < 60
    assert messages[-1] == f"time series: 6,300 points in {details['windows']} windows"


def peak_mib_of_dump(store: TimeSeriesStore, folder: Path) -> float:
    """The most memory Python held above the start while :func:`series.dump` ran."""
    tracemalloc.start()
    try:
        series.dump(store, folder, lambda _: None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / (1 << 20)


def many_points(n: int) -> list[Point]:
    """``n`` features windows of 20 devices, a minute apart: ~1 KB each held as objects."""
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * NS
    return [
        Point(
            "features",
            start + (k // 20) * 60 * NS,
            {"client": "c", "site": "s", "gateway": "g", "device": f"d{k % 20}", "group": "g1"},
            {f"signal_{j}__mean": k + j / 10 for j in range(10)} | {"n_samples": 60},
        )
        for k in range(n)
    ]


def test_a_backup_holds_a_bounded_number_of_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12,000 points held at once take ~23 MiB; the export streams them into the
    files, whatever the window (here one window holds them all)."""
    monkeypatch.setattr(series, "FIRST_WINDOW_NS", 30 * 86_400 * NS)
    store = SQLiteStore(tmp_path / "ts.db")
    try:
        store.write(many_points(12_000))
        peak = peak_mib_of_dump(store, tmp_path)
    finally:
        store.close()
    print(f"\nbackup of 12,000 features points from SQLite: peak {peak:.1f} MiB")  # noqa: T201
    assert peak < 5


def test_backup_folder_appears_only_when_complete(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(archive, "write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        backups.backup(source.settings, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
