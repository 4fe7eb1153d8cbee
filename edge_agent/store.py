"""The store-and-forward buffer: every uplink record is written here before it is sent.

One SQLite file in WAL mode with ``synchronous=FULL``: a record is durable (it survives
``kill -9`` of the agent and a power cut) when :meth:`RecordStore.append` returns. It is
deleted only when the cloud's ack names it (:meth:`RecordStore.ack`), when the cloud
rejects it for good (:meth:`RecordStore.reject`), or when a bound drops it (counted).

Sequence numbers: ``append`` gives every record the gateway's next sequence number in the
same transaction that stores it. The last number handed out is persisted, so a number is
never reused: not after every record was acked and deleted, not after a crash.

Bounds
    *Size*: the sum of the records' sizes, where a record's size is the UTF-8 length of its
    JSON body plus its kind and device id plus :data:`ROW_OVERHEAD` bytes (an estimate of
    SQLite's per-row and index cost). This is what ``max_bytes`` bounds; the file itself is
    larger by page slack and the WAL (``journal_size_limit`` keeps the WAL below 64 MiB).
    A measure of the records, not of pages, so that the bound is exact and testable and
    does not depend on when SQLite reuses free pages.

    When an append would exceed the bound, the configured policy applies
    (``BufferSettings.policy``):

    * ``drop_oldest``: delete the oldest records (lowest seq) until the new ones fit;
    * ``thin``: delete every other record of the oldest half of the buffer (the history
      keeps its span at half the resolution), repeatedly, until the new ones fit;
    * ``refuse_new``: store the leading items that fit and refuse the rest (they get no
      sequence number, so the cloud sees no gap).

    *Age*: records older than ``max_age_s`` (by their ``ts``) are deleted at the next
    append (at most once a second) or by :meth:`RecordStore.expire`.

Every record dropped is counted by reason (:data:`DROP_REASONS`); the counters are stored
in the same file, in the same transaction as the drop, and so survive restarts.

Threads: every method may be called from any thread (one connection behind a lock).
Methods block on disk I/O (an fsync per transaction); from asyncio code call them in a
worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from edge_agent.config import BufferSettings
from edge_agent.errors import StoreError
from edge_agent.protocol import SEQ_MAX, Record, RecordKind, check_body

STORE_VERSION: Final = 1
ROW_OVERHEAD: Final = 48
"""Bytes added to each record's size for SQLite's row, key and ts-index cost."""
DROP_REASONS: Final = ("full_drop_oldest", "full_thin", "refused_new", "expired", "rejected")
"""Why records left the buffer without an ack: the three full policies, the age bound, and
records the cloud rejected for good."""
EXPIRE_EVERY_S: Final = 1.0

Item = tuple[float, RecordKind | str, str | None, dict[str, Any]]
"""What :meth:`RecordStore.append` takes: ``(ts, kind, device_id, body)``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    device_id TEXT,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
"""


@dataclass(frozen=True, slots=True)
class StoreStats:
    depth: int
    """Records in the buffer (unacked)."""
    bytes: int
    """Their summed size (the measure ``max_bytes`` bounds)."""
    max_bytes: int
    last_seq: int
    """The last sequence number handed out (0 before the first record)."""
    oldest_ts: float | None
    dropped: dict[str, int]
    """Records dropped without an ack, by reason (every one of :data:`DROP_REASONS`)."""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class RecordStore:
    """The SQLite buffer of uplink records (see the module docstring)."""

    def __init__(self, settings: BufferSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._path = Path(settings.path)
        self._last_seq = self._count = self._bytes = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the buffer {self._path}: {exc}") from exc
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"buffer {self._path}: WAL mode is not available ({mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA journal_size_limit={64 << 20}")
            self._db.executescript(_SCHEMA)
            with self._transaction():
                version = self._meta("store_version", None)
                if version is None:
                    self._set_meta("store_version", STORE_VERSION)
                elif version != STORE_VERSION:
                    raise StoreError(
                        f"buffer {self._path} has store version {version}; this agent reads "
                        f"version {STORE_VERSION}"
                    )
                self._last_seq = self._meta("last_seq", 0) or 0
                self._dropped = {r: self._meta(f"dropped.{r}", 0) or 0 for r in DROP_REASONS}
                count, total, top = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM records"
                ).fetchone()
                self._count, self._bytes = int(count), int(total)
                # A file whose meta row was lost must still never reuse a stored seq.
                self._last_seq = max(self._last_seq, int(top))
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open the buffer {self._path}: {exc}") from exc
        except StoreError:
            self._db.close()
            raise
        self._next_expire = 0.0
        self._closed = False

    # ---- writing ----------------------------------------------------------------------------

    def append(self, items: Sequence[Item]) -> list[int]:
        """Store ``items`` with the next sequence numbers, atomically; return their seqs.

        The records are durable when this returns. Under ``refuse_new`` a full buffer
        stores only the leading items that fit: the result is then shorter than ``items``
        (the seqs belong to ``items[:len(result)]``). Raises
        :class:`~edge_agent.errors.ProtocolError` if an item is not a valid record
        (nothing is stored) and :class:`StoreError` if the disk fails or one call's items
        are larger than the whole buffer.
        """
        rows: list[tuple[float, str, str | None, str, int]] = []
        for ts, kind, device_id, body in items:
            record = Record(1, ts, RecordKind(kind), device_id, body)
            text = check_body(body)
            size = (
                len(text.encode("utf-8"))
                + len(record.kind.value)
                + len(device_id or "")
                + ROW_OVERHEAD
            )
            rows.append((float(ts), record.kind.value, device_id, text, size))
        if not rows:
            return []
        needed = sum(r[4] for r in rows)
        limit = self._settings.max_bytes
        if needed > limit and self._settings.policy != "refuse_new":
            raise StoreError(f"{len(rows)} records of {needed} bytes exceed the buffer ({limit})")
        with self._lock, self._transaction():
            self._expire_due()
            if self._bytes + needed > limit:
                if self._settings.policy == "refuse_new":
                    room, fits = limit - self._bytes, 0
                    for r in rows:
                        if r[4] > room:
                            break
                        room -= r[4]
                        fits += 1
                    self._count_drop("refused_new", len(rows) - fits)
                    rows = rows[:fits]
                    if not rows:
                        return []
                    needed = sum(r[4] for r in rows)
                elif self._settings.policy == "drop_oldest":
                    self._drop_oldest(self._bytes + needed - limit)
                else:
                    self._thin(self._bytes + needed - limit)
            first = self._last_seq + 1
            seqs = list(range(first, first + len(rows)))
            self._db.executemany(
                "INSERT INTO records (seq, ts, kind, device_id, body, size) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(s, *r) for s, r in zip(seqs, rows, strict=True)],
            )
            self._set_meta("last_seq", seqs[-1])
            self._last_seq = seqs[-1]
            self._count += len(rows)
            self._bytes += needed
            return seqs

    def ack(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the records in the inclusive seq ``ranges`` (the cloud stored them);
        return how many were deleted (seqs already gone are ignored)."""
        with self._lock, self._transaction():
            return self._delete_ranges(ranges)

    def reject(self, seqs: Iterable[int]) -> int:
        """Delete records the cloud rejected for good; counted as ``rejected``."""
        with self._lock, self._transaction():
            n = self._delete_ranges((s, s) for s in seqs)
            self._count_drop("rejected", n)
            return n

    def expire(self) -> int:
        """Delete records older than ``max_age_s`` now; counted as ``expired``."""
        with self._lock, self._transaction():
            self._next_expire = 0.0
            return self._expire_due()

    # ---- reading ----------------------------------------------------------------------------

    def pending(
        self,
        limit: int,
        max_bytes: int | None = None,
        after_seq: int | None = None,
        newest_first: bool = False,
        *,
        up_to_seq: int | None = None,
    ) -> list[Record]:
        """Up to ``limit`` unacked records with ``after_seq < seq <= up_to_seq``, in seq
        order (descending with ``newest_first``), their summed size at most ``max_bytes``
        (but always at least one record if any is pending)."""
        lo = 0 if after_seq is None else after_seq
        hi = SEQ_MAX if up_to_seq is None else up_to_seq
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, ts, kind, device_id, body, size FROM records "  # noqa: S608
                    f"WHERE seq > ? AND seq <= ? ORDER BY seq {order} LIMIT ?",
                    (lo, hi, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"buffer {self._path}: cannot read records: {exc}") from exc
        out: list[Record] = []
        total = 0
        for seq, ts, kind, device_id, body, size in rows:
            if max_bytes is not None and out and total + size > max_bytes:
                break
            total += size
            out.append(Record(seq, ts, RecordKind(kind), device_id, json.loads(body)))
        return out

    def depth(self) -> int:
        """Records in the buffer."""
        with self._lock:
            return self._count

    def count(self, after_seq: int = 0, up_to_seq: int | None = None) -> int:
        """Records in the buffer with ``after_seq < seq <= up_to_seq``."""
        hi = SEQ_MAX if up_to_seq is None else up_to_seq
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM records WHERE seq > ? AND seq <= ?", (after_seq, hi)
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"buffer {self._path}: {exc}") from exc
        return int(row[0])

    def waiting(self, after_seq: int = 0) -> tuple[int, int]:
        """How many records have ``seq > after_seq``, and their summed size: what
        :meth:`pending` would choose from, without reading the records."""
        with self._lock:
            try:
                count, total = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE seq > ?",
                    (after_seq,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"buffer {self._path}: {exc}") from exc
        return int(count), int(total)

    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def last_seq(self) -> int:
        """The last sequence number handed out (0 before the first append)."""
        with self._lock:
            return self._last_seq

    def oldest_ts(self) -> float | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT MIN(ts) FROM records").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"buffer {self._path}: {exc}") from exc
        return None if row[0] is None else float(row[0])

    def stats(self) -> StoreStats:
        oldest = self.oldest_ts()
        with self._lock:
            return StoreStats(
                depth=self._count,
                bytes=self._bytes,
                max_bytes=self._settings.max_bytes,
                last_seq=self._last_seq,
                oldest_ts=oldest,
                dropped=dict(self._dropped),
            )

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals (called with the lock held, inside a transaction) ------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One IMMEDIATE transaction; sqlite3 errors become StoreError and the in-memory
        totals are restored on rollback."""
        snapshot = (self._last_seq, self._count, self._bytes, dict(self._dropped))
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"buffer {self._path}: cannot begin a transaction: {exc}") from exc
        try:
            yield
        except BaseException as exc:
            self._rollback(snapshot)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"buffer {self._path}: {exc}") from exc
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(snapshot)
            raise StoreError(f"buffer {self._path}: cannot commit: {exc}") from exc

    def _rollback(self, snapshot: tuple[int, int, int, dict[str, int]]) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction left to roll back
            self._db.execute("ROLLBACK")
        self._last_seq, self._count, self._bytes, self._dropped = snapshot

    def _meta(self, key: str, default: int | None) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _count_drop(self, reason: str, n: int) -> None:
        if n:
            self._dropped[reason] += n
            self._set_meta(f"dropped.{reason}", self._dropped[reason])

    def _delete_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        n = 0
        freed = 0
        for first, last in ranges:
            for (size,) in self._db.execute(
                "DELETE FROM records WHERE seq BETWEEN ? AND ? RETURNING size", (first, last)
            ).fetchall():
                n += 1
                freed += size
        self._count -= n
        self._bytes -= freed
        return n

    def _expire_due(self) -> int:
        now = self._clock()
        if now < self._next_expire:
            return 0
        self._next_expire = now + EXPIRE_EVERY_S
        cutoff = now - self._settings.max_age_s
        sizes = self._db.execute(
            "DELETE FROM records WHERE ts < ? RETURNING size", (cutoff,)
        ).fetchall()
        self._count -= len(sizes)
        self._bytes -= sum(s for (s,) in sizes)
        self._count_drop("expired", len(sizes))
        return len(sizes)

    def _drop_oldest(self, to_free: int) -> None:
        freed, cut, n = 0, 0, 0
        cursor = self._db.execute("SELECT seq, size FROM records ORDER BY seq")
        for seq, size in cursor:
            if freed >= to_free:
                break
            freed += size
            cut = seq
            n += 1
        cursor.close()
        if n:
            self._db.execute("DELETE FROM records WHERE seq <= ?", (cut,))
        self._count -= n
        self._bytes -= freed
        self._count_drop("full_drop_oldest", n)

    def _thin(self, to_free: int) -> None:
        freed = 0
        while freed < to_free and self._count > 0:
            half = max(self._count // 2, 1)
            rows = self._db.execute(
                "SELECT seq, size FROM records ORDER BY seq LIMIT ?", (half,)
            ).fetchall()
            # Keep the 1st, 3rd, 5th... of the oldest half; a single record is dropped.
            victims = rows[1::2] if len(rows) > 1 else rows
            self._db.executemany("DELETE FROM records WHERE seq = ?", [(s,) for s, _ in victims])
            size = sum(sz for _, sz in victims)
            freed += size
            self._count -= len(victims)
            self._bytes -= size
            self._count_drop("full_thin", len(victims))
