"""The embedded time-series store: one SQLite file (the single-site default).

One table holds every point, keyed by ``(measurement, series, ts_ns)`` where ``series``
is the point's tag set as canonical JSON (:func:`cloud.tsdb.base.series_key`); the tenant
tags are columns of their own, indexed for the queries below, and the fields are a JSON
object. A point written again is merged into the stored one with ``json_patch`` (its
fields win), InfluxDB's rule, so replays are harmless.

The file runs in WAL mode with ``synchronous=FULL``: a :meth:`SQLiteStore.write` that
returned has reached the disk (ingest acks after it). One connection serves every thread
behind a lock (FastAPI's threadpool and the ingest thread share the store); an embedded
single-site installation does not need more, and it keeps writes strictly serialised.

Queries compute what InfluxQL computes server-side (per-interval last values, counts,
sums) in Python from the rows, through the shared helpers of :mod:`cloud.tsdb.base`.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cloud.errors import StoreError, StoreUnavailable
from cloud.tsdb.base import (
    ENERGY_COUNTER,
    MEASUREMENTS,
    NS_PER_S,
    AlarmEvent,
    DeviceKey,
    EnergyInterval,
    FeatureRow,
    FieldValue,
    Latest,
    Point,
    ScoreTotals,
    SiteRollup,
    StoreStats,
    TimeSeriesStore,
    alarm_event,
    check_device,
    check_limit,
    energy_intervals,
    feature_values,
    interval_grid,
    is_feature,
    normalise_tags,
    numeric,
    series_key,
    site_rollups,
    to_ns,
)

if TYPE_CHECKING:
    from cloud.settings import Settings

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT_MS: Final = 10_000
_ENERGY_PATH: Final = f"$.{ENERGY_COUNTER}"
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_]{1,200}")
"""Field names :meth:`SQLiteStore.energy` reads with ``json_extract`` (no quoting needed)."""
_JSON_NUMBERS: Final = frozenset({"integer", "real"})

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    series      TEXT NOT NULL,
    ts_ns       INTEGER NOT NULL,
    client      TEXT NOT NULL,
    site        TEXT NOT NULL,
    gateway     TEXT NOT NULL,
    device      TEXT NOT NULL,
    fields      TEXT NOT NULL,
    UNIQUE (measurement, series, ts_ns)
);
CREATE INDEX IF NOT EXISTS points_device ON points (device, measurement, ts_ns);
CREATE INDEX IF NOT EXISTS points_site ON points (site, ts_ns);
CREATE INDEX IF NOT EXISTS points_gateway ON points (measurement, gateway);
"""

_UPSERT: Final = """
INSERT INTO points (measurement, series, ts_ns, client, site, gateway, device, fields)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (measurement, series, ts_ns)
DO UPDATE SET fields = json_patch(points.fields, excluded.fields)
"""

# Primary result codes that mean "not now" rather than "never": the disk is full or
# failing, the file is locked by another process or cannot be opened.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def _translate(exc: sqlite3.Error, what: str) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"SQLite store: {what} failed: {exc}")
    return StoreError(f"SQLite store: {what} failed: {exc}")


class SQLiteStore(TimeSeriesStore):
    """:class:`~cloud.tsdb.base.TimeSeriesStore` in one SQLite file at ``path``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stats = {"points_written": 0, "write_batches": 0, "write_errors": 0}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warning("SQLite store %s: journal_mode is %s, not wal", self.path, mode)
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise _translate(exc, f"opening {self.path}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"SQLite store: cannot open {self.path}: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLiteStore:
        """The store at ``settings.tsdb_sqlite_path``."""
        return cls(settings.tsdb_sqlite_path)

    @contextmanager
    def _conn(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, held under the lock; SQLite errors become store errors."""
        with self._lock:
            if self._db is None:
                raise StoreError(f"SQLite store {self.path} is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise _translate(exc, what) from exc

    # ---- writes ---------------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        rows = [
            (
                p.measurement,
                series_key(p.tags),
                p.ts_ns,
                p.tags["client"],
                p.tags["site"],
                p.tags["gateway"],
                p.tags["device"],
                json.dumps(dict(p.fields), ensure_ascii=False, separators=(",", ":")),
            )
            for p in points
        ]
        try:
            with self._conn(f"writing {len(rows)} points") as db:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(_UPSERT, rows)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        except StoreError:
            with self._lock:
                self._stats["write_errors"] += 1
            raise
        with self._lock:
            self._stats["points_written"] += len(rows)
            self._stats["write_batches"] += 1

    def ping(self) -> bool:
        try:
            with self._conn("ping") as db:
                db.execute("SELECT 1").fetchone()
        except StoreError:
            return False
        return True

    # ---- queries --------------------------------------------------------------------------

    def feature_history(
        self,
        device: str,
        start: float,
        end: float,
        *,
        group: str | None = None,
        names: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[FeatureRow]:
        check_device(device)
        check_limit(limit)
        if limit == 0 or (names is not None and not any(is_feature(n) for n in names)):
            return []
        wanted = None if names is None else list(dict.fromkeys(names))
        rows: list[tuple[int, str, FeatureRow]] = []
        with self._conn("reading feature history") as db:
            cursor = db.execute(
                "SELECT ts_ns, series, fields FROM points"
                " WHERE device = ? AND measurement = 'features' AND ts_ns >= ? AND ts_ns < ?"
                " ORDER BY ts_ns DESC, series DESC",
                (device, to_ns(start), to_ns(end)),
            )
            for ts_ns, series, fields_json in cursor:
                row_group = json.loads(series).get("group", "")
                if group is not None and row_group != group:
                    continue
                features = feature_values(json.loads(fields_json), wanted)
                if not features:
                    continue
                rows.append((ts_ns, series, FeatureRow(ts_ns / NS_PER_S, row_group, features)))
                if limit is not None and len(rows) == limit:
                    break
        rows.reverse()
        return [row for _, _, row in rows]

    def latest(self, device: str) -> dict[str, Latest]:
        check_device(device)
        out: dict[str, Latest] = {}
        with self._conn("reading the latest points") as db:
            for measurement in MEASUREMENTS:
                found = db.execute(
                    "SELECT ts_ns, series, fields FROM points"
                    " WHERE device = ? AND measurement = ?"
                    " ORDER BY ts_ns DESC, series DESC LIMIT 1",
                    (device, measurement),
                ).fetchone()
                if found is not None:
                    ts_ns, series, fields_json = found
                    fields: dict[str, FieldValue] = json.loads(fields_json)
                    out[measurement] = Latest(
                        ts_ns / NS_PER_S, normalise_tags(json.loads(series)), fields
                    )
        return out

    def alarms(
        self, device: str, start: float, end: float, *, limit: int | None = 200
    ) -> list[AlarmEvent]:
        check_device(device)
        check_limit(limit)
        with self._conn("reading alarms") as db:
            cursor = db.execute(
                "SELECT ts_ns, series, fields FROM points"
                " WHERE device = ? AND measurement = 'alarm' AND ts_ns >= ? AND ts_ns < ?"
                " ORDER BY ts_ns DESC, series LIMIT ?",  # LIMIT -1: no limit
                (device, to_ns(start), to_ns(end), -1 if limit is None else limit),
            )
            return [
                alarm_event(ts_ns, json.loads(series), json.loads(fields_json))
                for ts_ns, series, fields_json in cursor
            ]

    def energy(
        self,
        device: str,
        start: float,
        end: float,
        interval_s: int,
        *,
        counters: Sequence[str] | None = None,
    ) -> list[EnergyInterval]:
        check_device(device)
        grid = interval_grid(start, end, interval_s)
        if not grid or (counters is not None and not counters):
            return []
        wanted = None if counters is None else list(dict.fromkeys(counters))
        if wanted is not None and all(_PLAIN_KEY.fullmatch(c) for c in wanted):
            return self._named_energy(device, grid, wanted)
        lasts: dict[int, dict[str, float]] = defaultdict(dict)
        with self._conn("reading energy counters") as db:
            cursor = db.execute(
                "SELECT ts_ns, fields FROM points"
                " WHERE device = ? AND measurement = 'energy' AND ts_ns >= ? AND ts_ns < ?"
                " ORDER BY ts_ns, series",
                (device, grid.start - grid.step, grid.stop),
            )
            for ts_ns, fields_json in cursor:
                bucket = lasts[ts_ns - ts_ns % grid.step]
                fields = json.loads(fields_json)
                for counter in fields if wanted is None else wanted:
                    reading = numeric(fields.get(counter))
                    if reading is not None:
                        bucket[counter] = reading
        return energy_intervals(grid, lasts)

    def _named_energy(self, device: str, grid: range, counters: list[str]) -> list[EnergyInterval]:
        """:meth:`energy` of a few counters with plain names: SQLite picks them out of the
        fields (``json_extract``; ``json_type`` leaves out booleans and text), so the rest
        of each point is never decoded."""
        paths = [f'$."{c}"' for c in counters]
        columns = ", ".join("json_type(fields, ?), json_extract(fields, ?)" for _ in paths)
        args = [p for path in paths for p in (path, path)]
        lasts: dict[int, dict[str, float]] = defaultdict(dict)
        with self._conn("reading energy counters") as db:
            cursor = db.execute(
                f"SELECT ts_ns, {columns} FROM points"  # noqa: S608 - placeholders only
                " WHERE device = ? AND measurement = 'energy' AND ts_ns >= ? AND ts_ns < ?"
                " ORDER BY ts_ns, series",
                (*args, device, grid.start - grid.step, grid.stop),
            )
            for ts_ns, *values in cursor:
                bucket = lasts[ts_ns - ts_ns % grid.step]
                for i, counter in enumerate(counters):
                    if values[2 * i] in _JSON_NUMBERS:
                        bucket[counter] = float(values[2 * i + 1])
        return energy_intervals(grid, lasts)

    def site_rollup(self, site: str, start: float, end: float, interval_s: int) -> list[SiteRollup]:
        grid = interval_grid(start, end, interval_s)
        if not grid:
            return []
        step = grid.step
        active: dict[int, set[DeviceKey]] = defaultdict(set)
        energy: dict[DeviceKey, dict[int, float]] = defaultdict(dict)
        scores: dict[int, ScoreTotals] = defaultdict(ScoreTotals)
        alarms: dict[int, int] = defaultdict(int)
        with self._conn("reading site totals") as db:
            for bucket, gateway, device in db.execute(
                "SELECT DISTINCT ts_ns - ts_ns % ?, gateway, device FROM points"
                " WHERE site = ? AND ts_ns >= ? AND ts_ns < ?",
                (step, site, grid.start, grid.stop),
            ):
                active[bucket].add((gateway, device))
            for ts_ns, gateway, device, reading in db.execute(
                "SELECT ts_ns, gateway, device, json_extract(fields, ?) FROM points"
                " WHERE site = ? AND ts_ns >= ? AND ts_ns < ? AND measurement = 'energy'"
                " AND json_type(fields, ?) IN ('integer', 'real')"
                " ORDER BY ts_ns, series",
                (_ENERGY_PATH, site, grid.start - step, grid.stop, _ENERGY_PATH),
            ):
                energy[(gateway, device)][ts_ns - ts_ns % step] = float(reading)
            for ts_ns, score, anomalous in db.execute(
                "SELECT ts_ns, json_extract(fields, '$.score'), json_type(fields, '$.anomalous')"
                " FROM points WHERE site = ? AND ts_ns >= ? AND ts_ns < ?"
                " AND measurement = 'score'"
                " AND json_type(fields, '$.score') IN ('integer', 'real')",
                (site, grid.start, grid.stop),
            ):
                scores[ts_ns - ts_ns % step].add(float(score), anomalous == "true")
            for (bucket,) in db.execute(
                "SELECT ts_ns - ts_ns % ? FROM points WHERE site = ? AND ts_ns >= ? AND ts_ns < ?"
                " AND measurement = 'alarm' AND json_type(fields, '$.state') = 'text'"
                " AND json_extract(fields, '$.state') = 'raised'",
                (step, site, grid.start, grid.stop),
            ):
                alarms[bucket] += 1
        return site_rollups(grid, active=active, energy=energy, scores=scores, alarms=alarms)

    def count(self, measurement: str, *, gateway: str | None = None) -> int:
        if measurement not in MEASUREMENTS:
            raise ValueError(f"measurement {measurement!r} is not one of {MEASUREMENTS}")
        sql = "SELECT count(*) FROM points WHERE measurement = ?"
        args: tuple[Any, ...] = (measurement,)
        if gateway is not None:
            sql += " AND gateway = ?"
            args += (gateway,)
        with self._conn("counting points") as db:
            n: int = db.execute(sql, args).fetchone()[0]
        return n

    # ---- export (backups) -----------------------------------------------------------------

    def time_span(self) -> tuple[int, int] | None:
        first: int | None = None
        last: int | None = None
        with self._conn("reading the time span") as db:
            for site in _sites(db):
                low, high = db.execute(
                    "SELECT min(ts_ns), max(ts_ns) FROM points WHERE site = ?", (site,)
                ).fetchone()
                first = low if first is None else min(first, low)
                last = high if last is None else max(last, high)
        return None if first is None or last is None else (first, last)

    def export(self, start_ns: int, stop_ns: int) -> Iterator[Point]:
        """See :meth:`TimeSeriesStore.export`: a cursor on a connection of its own, in one
        read transaction (WAL: writers go on meanwhile, unseen)."""
        with self._lock:
            if self._db is None:
                raise StoreError(f"SQLite store {self.path} is closed")
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _translate(exc, f"opening {self.path} to export") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("BEGIN")
            # Per site: the (site, ts_ns) index serves a time range; there is no index on
            # the time alone, and a scan per window would make a backup quadratic.
            for site in _sites(db):
                for measurement, series, ts_ns, fields_json in db.execute(
                    "SELECT measurement, series, ts_ns, fields FROM points"
                    " WHERE site = ? AND ts_ns >= ? AND ts_ns < ?",
                    (site, int(start_ns), int(stop_ns)),
                ):
                    fields: dict[str, FieldValue] = json.loads(fields_json)
                    yield Point(measurement, ts_ns, normalise_tags(json.loads(series)), fields)
        except sqlite3.Error as exc:
            raise _translate(exc, "exporting points") from exc
        finally:
            db.close()

    # ---- housekeeping ---------------------------------------------------------------------

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                points_written=self._stats["points_written"],
                write_batches=self._stats["write_batches"],
                write_errors=self._stats["write_errors"],
            )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _sites(db: sqlite3.Connection) -> list[str]:
    """The distinct ``site`` values, one index seek each (``points_site``), not a scan."""
    sites: list[str] = []
    found = db.execute("SELECT min(site) FROM points").fetchone()[0]
    while found is not None:
        sites.append(found)
        found = db.execute("SELECT min(site) FROM points WHERE site > ?", (found,)).fetchone()[0]
    return sites
