"""``edgewatch-cloud backup`` and ``restore``: the SQL registry and the time series in one
backend-neutral folder (layout and encoding: :mod:`cloud.backup.archive`).

Backup (:func:`backup`)
    The SQL rows are read in one transaction that sees one state of the database
    (PostgreSQL ``REPEATABLE READ READ ONLY``; SQLite one read transaction), with the
    Alembic revision they belong to. Then the time series is read window by window from
    its oldest to its newest point as they were when the backup started (bounded memory,
    :mod:`cloud.backup.series`). Ingest may go on meanwhile: points that arrive later are
    not in the backup, and the time series is not a snapshot of one instant (no store
    offers one over its HTTP API). The files are written into a hidden folder beside
    ``out`` that is renamed to ``out`` once the manifest is written and everything is
    fsynced: a folder named ``out`` is always a complete backup.

Restore (:func:`restore`)
    1. Every file is checked against the manifest (size, sha256) before anything is
       written; a backup whose schema revision this version does not know is refused.
    2. The targets must be empty: no rows in any table, no points. ``force`` drops every
       table of the SQL database first (its data is lost) and writes the points over
       what the time-series store holds (same measurement, tags and time: replaced;
       others stay).
    3. The SQL database is migrated to the backup's revision (up, or down when empty
       and newer).
    4. In one SQL transaction: the rows are inserted table by table in foreign-key
       order, in batches, and counted against the manifest; PostgreSQL sequences are
       moved past the restored ids; then the points are written in batches through the
       store's write path and counted. Only then is the transaction committed.
    5. A backup of an older revision is migrated to this version's head.

    When it fails in step 4, the SQL database is left migrated and empty (rolled back);
    the time-series store may hold some of the points: running the restore again with
    ``force`` completes it (points written twice are stored once).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from alembic import command
from alembic.script import ScriptDirectory

from cloud.backup import archive, series, sql
from cloud.backup.archive import Manifest
from cloud.db import (
    alembic_config,
    describe,
    head_revision,
    make_engine,
    migrate,
    translate_errors,
)
from cloud.errors import BackupError, CloudError, InvalidInput
from cloud.settings import Settings
from cloud.tsdb import MEASUREMENTS, open_store

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    seconds: float
    bytes: int

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.manifest.tables)

    @property
    def points(self) -> int:
        return sum(s.points for s in self.manifest.series)


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    rows: dict[str, int]
    """Per table, as counted in the database after the inserts."""
    points: dict[str, int]
    """Per measurement, as counted in the store after the writes."""
    seconds: float
    verify_seconds: float
    sql_seconds: float
    series_seconds: float
    sequences: list[str] = field(default_factory=list)
    """PostgreSQL sequences moved past the restored ids (``name=next value``)."""
    dropped: list[str] = field(default_factory=list)
    """Tables dropped first (``force``)."""
    migrated_to: str | None = None
    """The head this version migrated the restored rows to, when the backup was older."""


# ---- backup --------------------------------------------------------------------------------


def backup(settings: Settings, out: Path, *, progress: Progress = _quiet) -> BackupResult:
    """Back up the registry and the time series ``settings`` name into the folder ``out``
    (new, or empty); see the module docstring."""
    out = out.absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput("--out", f"{out} exists and is not an empty folder")
    started, created = time.monotonic(), datetime.now(UTC)
    work = out.with_name(f".{out.name}.incomplete-{os.getpid()}")
    engine = make_engine(settings.database_url)
    store = open_store(settings)
    try:
        work.mkdir(parents=True)
        with translate_errors(), sql.snapshot(engine) as conn:
            revision = sql.revision_of(conn)
            if revision is None:
                raise BackupError(
                    f"the registry {describe(settings.database_url)} was never migrated: "
                    "there is nothing to back up"
                )
            tables, database = sql.dump(conn, work, progress)
        sql_seconds = time.monotonic() - started
        points, export = series.dump(store, work, progress)
        series_seconds = time.monotonic() - started - sql_seconds
        manifest = Manifest(
            created_at=created.isoformat(),
            revision=revision,
            source={"sql": database, "timeseries": _store_source(settings)},
            tables=tuple(tables),
            series=tuple(points),
            details={
                "edgewatch_version": _version(),
                "finished_at": datetime.now(UTC).isoformat(),
                "sql_seconds": round(sql_seconds, 3),
                "timeseries_seconds": round(series_seconds, 3),
                "timeseries_windows": export["windows"],
                "largest_window_points": export["largest_window_points"],
            },
        )
        archive.write_manifest(work, manifest)
        for folder in (work / "sql", work / "ts", work):
            archive.fsync_dir(folder)
        if out.exists():
            out.rmdir()
        work.rename(out)
        archive.fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        store.close()
        engine.dispose()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    result = BackupResult(out, manifest, time.monotonic() - started, size)
    log.info(
        "backup of revision %s in %s: %d rows, %d points, %d bytes in %.1f s",
        revision, out, result.rows, result.points, size, result.seconds,
    )  # fmt: skip
    return result


def _store_source(settings: Settings) -> dict[str, str]:
    """Which store the points came from, without credentials."""
    if settings.tsdb == "sqlite":
        return {"backend": "sqlite", "path": str(settings.tsdb_sqlite_path)}
    parts = urlsplit(settings.influx_url)
    netloc = parts.netloc.rpartition("@")[2]
    url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return {"backend": "influxdb", "url": url, "database": settings.influx_database}


def _version() -> str:
    try:
        return metadata.version("edgewatch")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---- verify and restore --------------------------------------------------------------------


def verify(source: Path) -> Manifest:
    """Check a backup folder without restoring it: the manifest and every file's size and
    sha256; the manifest, or :class:`BackupError` naming what is wrong."""
    return archive.verify(source)


def _revisions() -> list[str]:
    """This version's revisions, newest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in script.walk_revisions()]


def check_revision(manifest: Manifest) -> None:
    """Refuse a backup of a schema this version does not know (a newer one)."""
    if manifest.revision not in _revisions():
        raise BackupError(
            f"the backup's schema is at revision {manifest.revision}, which this version "
            f"of EdgeWatch does not know (its newest is {head_revision()}): restore it with "
            "the version that made the backup, or a newer one"
        )


def restore(
    settings: Settings, source: Path, *, force: bool = False, progress: Progress = _quiet
) -> RestoreResult:
    """Restore the backup in ``source`` into the registry and the time-series store
    ``settings`` name; see the module docstring for the steps and the states a failure
    leaves."""
    started = time.monotonic()
    manifest = archive.verify(source)
    check_revision(manifest)
    verify_seconds = time.monotonic() - started
    progress(f"verified {len(manifest.files())} files of {source} (revision {manifest.revision})")
    url = settings.database_url
    engine = make_engine(url)
    store = open_store(settings)
    try:
        with translate_errors(), engine.connect() as conn:
            current = sql.revision_of(conn)
            tables = sql.tables_of(conn)
            rows = {t: n for t, n in sql.row_counts(conn, tables).items() if n}
        stored = {m: n for m in MEASUREMENTS if (n := store.count(m))}
        if (rows or stored or (tables and current is None)) and not force:
            raise BackupError(_not_empty(describe(url), rows, stored, current, bool(tables)))
        dropped: list[str] = []
        if force and (tables or current is not None):
            with translate_errors(), engine.begin() as conn:
                dropped = sql.drop_everything(conn)
            progress(f"sql: dropped {len(dropped)} tables (--force)")
            current = None
        _migrate_to(url, current, manifest.revision)
        writing_points = False
        try:
            with translate_errors(), engine.begin() as conn:
                sql_started = time.monotonic()
                counts = sql.load(conn, source, manifest, progress)
                sequences = sql.reset_sequences(conn)
                sql_seconds = time.monotonic() - sql_started
                writing_points = True
                points = series.load(store, source, manifest, progress, merged=bool(stored))
                series_seconds = time.monotonic() - sql_started - sql_seconds
        except CloudError as exc:
            touched = (
                "the time-series store may hold some of the backup's points"
                if writing_points
                else "nothing was written to the time-series store"
            )
            raise BackupError(
                f"{exc}. Nothing was committed to the SQL database (left migrated to revision "
                f"{manifest.revision} and empty); {touched}. Run the restore again (with "
                "--force if the store now holds points: points written twice are stored once)"
            ) from exc
        migrated_to = None
        if manifest.revision != head_revision():
            migrate(url)
            migrated_to = head_revision()
            progress(f"sql: migrated from revision {manifest.revision} to {migrated_to}")
    finally:
        store.close()
        engine.dispose()
    log.info(
        "restored %s (revision %s): %d rows, %d points in %.1f s",
        source, manifest.revision, sum(counts.values()), sum(points.values()),
        time.monotonic() - started,
    )  # fmt: skip
    return RestoreResult(
        manifest=manifest,
        rows=counts,
        points=points,
        seconds=time.monotonic() - started,
        verify_seconds=verify_seconds,
        sql_seconds=sql_seconds,
        series_seconds=series_seconds,
        sequences=sequences,
        dropped=dropped,
        migrated_to=migrated_to,
    )


def _not_empty(
    database: str, rows: dict[str, int], stored: dict[str, int], revision: str | None, tables: bool
) -> str:
    parts = []
    if rows:
        listed = ", ".join(f"{t} {n:,}" for t, n in sorted(rows.items()))
        parts.append(f"the registry {database} holds rows ({listed})")
    elif tables and revision is None:
        parts.append(f"the registry {database} holds tables but no Alembic revision")
    if stored:
        listed = ", ".join(f"{m} {n:,}" for m, n in stored.items())
        parts.append(f"the time-series store holds points ({listed})")
    return (
        "; ".join(parts) + ": a restore goes into empty targets. Nothing was changed. "
        "Restore into empty ones, or give --force to drop every table of the registry and "
        "write the points over the store's"
    )


def _migrate_to(url: str, current: str | None, target: str) -> None:
    """Migrate an empty registry to ``target``: up, or down from a newer revision."""
    if current == target:
        return
    order = _revisions()
    if current is not None and current not in order:
        raise BackupError(
            f"the registry is at revision {current}, which this version does not know: "
            "restore into an empty database, or give --force to drop its tables"
        )
    if current is None or order.index(current) > order.index(target):
        migrate(url, target)
        return
    engine = make_engine(url)
    try:
        with translate_errors(), engine.begin() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, target)
    finally:
        engine.dispose()


__all__ = [
    "BackupError",
    "BackupResult",
    "RestoreResult",
    "backup",
    "check_revision",
    "restore",
    "verify",
]
