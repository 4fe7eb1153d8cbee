"""The time-series half of a backup: every point of the store, read window by window
(:meth:`~cloud.tsdb.base.TimeSeriesStore.export`), written back through the store's own
write path (:meth:`~cloud.tsdb.base.TimeSeriesStore.write`: the InfluxDB store makes line
protocol with influxdb-client's serializer).

Memory: the stores stream an export (SQLite: a cursor; InfluxDB: a chunked answer read
chunk by chunk, at most ``CHUNK_POINTS`` = 10,000 rows of one series at a time), and the
points go straight into the gzip'd files, so a backup holds a bounded number of points
whatever the window or the data rate. Windows only decide how long one request runs and
how often progress is reported: they start at an hour and adapt, half as long after one
that returned more than :data:`TARGET_POINTS` points, twice as long (up to
:data:`MAX_WINDOW_NS`) after one that returned fewer than half of it, so that empty
stretches are crossed quickly. A restore holds one batch of :data:`WRITE_BATCH` points.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cloud.backup.archive import JsonlWriter, Manifest, SeriesEntry, read_jsonl
from cloud.errors import BackupError, StoreError
from cloud.tsdb.base import MEASUREMENTS, NS_PER_S, Point, TimeSeriesStore

Progress = Callable[[str], None]

FIRST_WINDOW_NS: Final = 3600 * NS_PER_S
MIN_WINDOW_NS: Final = NS_PER_S
MAX_WINDOW_NS: Final = 7 * 86_400 * NS_PER_S
TARGET_POINTS: Final = 100_000
WRITE_BATCH: Final = 5000
PROGRESS_EVERY_S: Final = 2.0


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, UTC).isoformat(timespec="seconds")


def dump(
    store: TimeSeriesStore, folder: Path, progress: Progress
) -> tuple[list[SeriesEntry], dict[str, Any]]:
    """Write every point into ``folder/ts/<measurement>.jsonl.gz``; the entries and what
    the export did (windows, the largest window's points)."""
    writers = {m: JsonlWriter(folder, f"ts/{m}.jsonl.gz") for m in MEASUREMENTS}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    windows = largest = total = 0
    try:
        span = store.time_span()
        if span is not None:
            start, end = span[0], span[1] + 1
            window = FIRST_WINDOW_NS
            said = time.monotonic()
            progress(f"time series: {_iso(start)} to {_iso(span[1])}")
            while start < end:
                stop = min(start + window, end)
                n = 0
                for p in store.export(start, stop):
                    writers[p.measurement].write([p.ts_ns, dict(p.tags), dict(p.fields)])
                    first[p.measurement] = min(first.get(p.measurement, p.ts_ns), p.ts_ns)
                    last[p.measurement] = max(last.get(p.measurement, p.ts_ns), p.ts_ns)
                    n += 1
                windows += 1
                total += n
                largest = max(largest, n)
                if n > TARGET_POINTS:
                    window = max(MIN_WINDOW_NS, window // 2)
                elif n < TARGET_POINTS // 2:
                    window = min(MAX_WINDOW_NS, window * 2)
                start = stop
                if time.monotonic() - said >= PROGRESS_EVERY_S:
                    said = time.monotonic()
                    done = 100 * (stop - span[0]) / max(1, end - span[0])
                    progress(f"time series: {total:,} points, up to {_iso(stop)} ({done:.0f} %)")
        entries = []
        for m, writer in writers.items():
            file = writer.close()
            entries.append(SeriesEntry(m, writer.lines, first.get(m), last.get(m), file))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    progress(f"time series: {total:,} points in {windows} windows")
    return entries, {"windows": windows, "largest_window_points": largest}


def load(
    store: TimeSeriesStore,
    folder: Path,
    manifest: Manifest,
    progress: Progress,
    *,
    merged: bool = False,
) -> dict[str, int]:
    """Write every point of the backup in batches and check the store's counts against the
    manifest (at least that many when ``merged``: the store held points before); points per
    measurement."""
    counts: dict[str, int] = {}
    total = sum(s.points for s in manifest.series)
    written = 0
    said = time.monotonic()
    for entry in manifest.series:
        m = entry.measurement
        if m not in MEASUREMENTS:
            raise BackupError(f"the backup holds measurement {m!r}, not one of {MEASUREMENTS}")
        path = folder / entry.file.path
        batch: list[Point] = []
        read = 0
        for value in read_jsonl(folder, entry.file):
            read += 1
            try:
                ts_ns, tags, fields = value
                batch.append(Point(m, ts_ns, tags, fields))
            except (TypeError, ValueError) as exc:
                raise BackupError(f"{path}, line {read}: not a point: {exc}") from None
            if len(batch) >= WRITE_BATCH:
                written += _write(store, batch, written, total)
                batch = []
                if time.monotonic() - said >= PROGRESS_EVERY_S:
                    said = time.monotonic()
                    progress(f"time series: {written:,} of {total:,} points written")
        written += _write(store, batch, written, total)
        if read != entry.points:
            raise BackupError(f"{path}: holds {read} points, the manifest lists {entry.points}")
        stored = store.count(m)
        if stored < entry.points or (stored != entry.points and not merged):
            raise BackupError(
                f"time series {m}: the store holds {stored:,} points after the restore, the "
                f"backup {entry.points:,}"
            )
        counts[m] = stored
        progress(f"time series: {m}: {entry.points:,} points")
    return counts


def _write(store: TimeSeriesStore, batch: list[Point], written: int, total: int) -> int:
    if not batch:
        return 0
    try:
        store.write(batch)
    except StoreError as exc:
        raise BackupError(
            f"writing the time series failed after {written:,} of {total:,} points: {exc}"
        ) from exc
    return len(batch)
