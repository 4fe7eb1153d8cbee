"""The forwarder: moves records from the buffer to the uplink and deletes them on ack.

Two lanes share one uplink:

* **live**: records appended after the *cut* (a sequence number), sent promptly in
  batches bounded by ``max_records`` / ``max_bytes`` / ``max_delay_s``: a batch goes
  as soon as it is full, else when its first record has waited ``max_delay_s`` (the
  forwarder wakes up for that moment); until then the buffer is asked only how much
  waits (:meth:`~edge_agent.store.RecordStore.waiting`), and the records are read when
  their batch goes;
* **backlog**: records at or below the cut, sent oldest first in sequence order.

At start, and after every reconnect, the cut moves to the last sequence number handed
out: whatever waited during the outage becomes backlog and the live lane starts fresh.
If live records ever wait longer than ``live_window_s`` (the link is slower than the
producers), the cut moves up the same way, so live records stay live.

The backlog is rate-limited so that live batches never queue behind more than about
``live_window_s / 2`` worth of backlog bytes: the bytes of backlog batches in flight are
bounded by the measured ack throughput × ``live_window_s / 2`` (at least one batch, at most
``max_backlog_inflight`` batches). The live lane has its own in-flight allowance
(``max_live_inflight``), so backlog never takes its place.

In flight: a batch stays in flight until acks name all of its records. A batch whose
acks do not come within ``ack_timeout_s``, and every batch in flight when the uplink
reconnects, is resent: its records return to the backlog lane (whose cursor rewinds to
them). Resends make duplicates on the wire; the cloud stores idempotently by
``(gateway, seq, ts)``, and the buffer deletes a record only when an ack names it.

Threads: the forwarder runs on its own thread (SQLite calls block, and the uplink's
callbacks come from the uplink's thread). The uplink's ``on_ack`` / ``on_connection``
callbacks only put into a thread-safe queue and set an event; all state is touched on the
forwarder's thread. From asyncio code, append with ``await asyncio.to_thread(store.append,
items)`` and then call :meth:`Forwarder.notify` (thread-safe) to wake the forwarder.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_agent.config import BatchSettings
from edge_agent.errors import EdgeWatchError, UplinkError
from edge_agent.protocol import Ack, Record, encode_batch
from edge_agent.store import RecordStore
from edge_agent.uplink import Uplink

logger = logging.getLogger(__name__)

TICK_S = 0.05
"""The forwarder looks at the buffer at least this often."""
RATE_WINDOW_S = 5.0
"""The ack throughput is measured over this sliding window."""


@dataclass(slots=True)
class _Batch:
    lane: str
    first: int
    last: int
    count: int
    nbytes: int
    sent_at: float
    unacked: set[int]


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    connected: bool
    inflight_batches: int
    inflight_records: int
    sent_batches: int
    sent_records: int
    acked_records: int
    """Records the cloud acked as stored (and the buffer deleted)."""
    rejected_records: int
    """Records the cloud rejected for good (deleted, counted by the store as ``rejected``)."""
    resent_batches: int
    resent_records: int
    backlog_depth: int
    """Records at or below the cut still in the buffer."""
    buffered: int
    """All records in the buffer."""
    cut: int
    last_ack_time: float | None
    """Wall-clock time of the last ack that deleted records."""
    ack_rate_bytes_s: float
    lanes: dict[str, int] = field(default_factory=dict)
    """Batches sent per lane (``live``, ``backlog``)."""


class Forwarder:
    """Moves records from ``store`` to ``uplink`` (see the module docstring)."""

    def __init__(
        self,
        store: RecordStore,
        uplink: Uplink,
        settings: BatchSettings,
        *,
        clock: Callable[[], float] = time.time,
        live_window_s: float = 2.0,
        ack_timeout_s: float = 30.0,
        max_backlog_inflight: int = 4,
        max_live_inflight: int = 4,
    ) -> None:
        self._store = store
        self._uplink = uplink
        self._settings = settings
        self._clock = clock
        self._live_window_s = live_window_s
        self._ack_timeout_s = ack_timeout_s
        self._max_backlog = max_backlog_inflight
        self._max_live = max_live_inflight
        self._gateway_id = uplink.gateway_id
        self._events: queue.SimpleQueue[Ack | bool] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # State below is touched on the forwarder thread only.
        self._inflight: dict[int, _Batch] = {}
        self._inflight_seqs: dict[int, int] = {}
        self._next_id = 1
        self._cut = 0
        self._live_cursor = 0
        self._backlog_cursor = 0
        self._live_waiting_since: float | None = None
        self._acked_window: collections.deque[tuple[float, int]] = collections.deque()
        self._rate = 0.0
        self._counts = collections.Counter[str]()
        self._last_ack_time: float | None = None
        self._error_streak = 0
        uplink.on_ack = self._on_ack
        uplink.on_connection = self._on_connection

    # ---- lifecycle (any thread) -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Forwarder.start() was already called")
        self._rescan("start")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="edgewatch-forwarder", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the forwarder thread (the uplink is the caller's to stop)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout_s)
        self._thread = None

    def notify(self) -> None:
        """New records were appended: look at the buffer now (thread-safe)."""
        self._wake.set()

    def stats(self) -> ForwarderStats:
        """A snapshot (approximate while the forwarder runs: read without a lock)."""
        inflight = list(self._inflight.values())
        cut = self._cut
        return ForwarderStats(
            connected=self._uplink.connected,
            inflight_batches=len(inflight),
            inflight_records=sum(len(b.unacked) for b in inflight),
            sent_batches=self._counts["sent_batches"],
            sent_records=self._counts["sent_records"],
            acked_records=self._counts["acked_records"],
            rejected_records=self._counts["rejected_records"],
            resent_batches=self._counts["resent_batches"],
            resent_records=self._counts["resent_records"],
            backlog_depth=self._store.count(up_to_seq=cut),
            buffered=self._store.depth(),
            cut=cut,
            last_ack_time=self._last_ack_time,
            ack_rate_bytes_s=self._rate,
            lanes={"live": self._counts["live"], "backlog": self._counts["backlog"]},
        )

    # ---- uplink callbacks (the uplink's thread) -------------------------------------------

    def _on_ack(self, ack: Ack) -> None:
        self._events.put(ack)
        self._wake.set()

    def _on_connection(self, up: bool) -> None:
        self._events.put(up)
        self._wake.set()

    # ---- the forwarder thread -------------------------------------------------------------

    def _run(self) -> None:
        tick = max(0.01, min(TICK_S, self._settings.max_delay_s or TICK_S))
        while not self._stopping.is_set():
            self._wake.wait(self._timeout(tick))
            self._wake.clear()
            try:
                self._step()
                self._error_streak = 0
            except EdgeWatchError as exc:
                # The buffer or the uplink failed; keep going (records stay in the buffer).
                self._error_streak += 1
                if self._error_streak == 1:
                    logger.error("forwarder step failed: %s", exc)
                else:
                    logger.debug("forwarder step failed (%d in a row): %s", self._error_streak, exc)
                self._stopping.wait(min(5.0, 0.1 * self._error_streak))

    def _timeout(self, tick: float) -> float:
        """How long to wait for a wake-up: ``tick``, or less when live records are waiting
        for ``max_delay_s`` to pass (their batch goes out on time, not at the next tick)."""
        since = self._live_waiting_since
        if since is None:
            return tick
        left = since + self._settings.max_delay_s - time.monotonic()
        return min(tick, left) if left > 0 else tick

    def _step(self) -> None:
        self._handle_events()
        self._check_timeouts()
        if not self._uplink.connected:
            return
        self._send_live()
        self._send_backlog()

    def _handle_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, Ack):
                self._handle_ack(event)
            elif event:
                self._rescan("reconnect")

    def _handle_ack(self, ack: Ack) -> None:
        if ack.gateway_id != self._gateway_id:
            logger.warning("ignoring an ack for gateway %s", ack.gateway_id)
            return
        deleted = self._store.ack(ack.ranges) if ack.ranges else 0
        rejected = 0
        if ack.rejected:
            rejected = self._store.reject(s for s, _ in ack.rejected)
            logger.warning(
                "cloud rejected %d records (first: seq %d, %s)",
                len(ack.rejected),
                *ack.rejected[0],
            )
        self._counts["acked_records"] += deleted
        self._counts["rejected_records"] += rejected
        if deleted or rejected:
            self._last_ack_time = self._clock()
        seqs: list[int] = []
        for first, last in ack.ranges:
            if last - first < 4096:
                seqs.extend(range(first, last + 1))
            else:
                seqs.extend(s for s in self._inflight_seqs if first <= s <= last)
        seqs.extend(s for s, _ in ack.rejected)
        now = time.monotonic()
        for seq in seqs:
            batch_id = self._inflight_seqs.pop(seq, None)
            if batch_id is None:
                continue
            batch = self._inflight[batch_id]
            batch.unacked.discard(seq)
            if not batch.unacked:
                del self._inflight[batch_id]
                self._acked_window.append((now, batch.nbytes))
        self._update_rate(now)

    def _update_rate(self, now: float) -> None:
        window = self._acked_window
        while window and now - window[0][0] > RATE_WINDOW_S:
            window.popleft()
        if len(window) >= 2:
            span = max(now - window[0][0], 0.05)
            self._rate = sum(b for _, b in list(window)[1:]) / span

    def _rescan(self, why: str) -> None:
        """Everything unacked becomes backlog: in-flight batches are resent in seq order."""
        if self._inflight:
            logger.info("resending %d batches in flight (%s)", len(self._inflight), why)
        for batch in self._inflight.values():
            self._counts["resent_batches"] += 1
            self._counts["resent_records"] += len(batch.unacked)
        self._inflight.clear()
        self._inflight_seqs.clear()
        self._cut = self._store.last_seq()
        self._live_cursor = self._cut
        self._backlog_cursor = 0
        self._live_waiting_since = None

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        expired = [i for i, b in self._inflight.items() if now - b.sent_at > self._ack_timeout_s]
        for batch_id in expired:
            batch = self._inflight.pop(batch_id)
            for seq in batch.unacked:
                self._inflight_seqs.pop(seq, None)
            self._counts["resent_batches"] += 1
            self._counts["resent_records"] += len(batch.unacked)
            logger.debug(
                "no ack for seq %d..%d in %.0f s", batch.first, batch.last, self._ack_timeout_s
            )
            self._backlog_cursor = min(self._backlog_cursor, batch.first - 1)
            self._cut = max(self._cut, batch.last)
            self._live_cursor = max(self._live_cursor, self._cut)

    def _lane_inflight(self, lane: str) -> tuple[int, int]:
        count = nbytes = 0
        for b in self._inflight.values():
            if b.lane == lane:
                count += 1
                nbytes += b.nbytes
        return count, nbytes

    def _send_live(self) -> None:
        s = self._settings
        while self._lane_inflight("live")[0] < self._max_live:
            if self._live_cursor >= self._store.last_seq():
                # Nothing appended since the last look: no need to ask the buffer.
                self._live_waiting_since = None
                return
            now = time.monotonic()
            waited = 0.0 if self._live_waiting_since is None else now - self._live_waiting_since
            if waited < s.max_delay_s and waited <= self._live_window_s:
                # Not due yet, so only a full batch goes now: count what waits rather than
                # reading it (the forwarder wakes at every commit).
                count, nbytes = self._store.waiting(self._live_cursor)
                if not count:
                    self._live_waiting_since = None
                    return
                if self._live_waiting_since is None:
                    self._live_waiting_since = now
                if count <= s.max_records and nbytes <= s.max_bytes:
                    return  # all of it fits one batch: not full
            records = self._store.pending(s.max_records, s.max_bytes, after_seq=self._live_cursor)
            if not records:
                self._live_waiting_since = None
                return
            if self._live_waiting_since is None:
                self._live_waiting_since = now
            if waited > self._live_window_s:
                # The link is slower than the producers: what waited becomes backlog.
                self._cut = self._store.last_seq()
                self._live_cursor = self._cut
                self._live_waiting_since = None
                logger.info(
                    "live records waited %.1f s: moved the cut to seq %d", waited, self._cut
                )
                continue
            # pending() stops at max_records or max_bytes: more records after the last one
            # mean this batch is full.
            full = records[-1].seq < self._store.last_seq()
            if not full and waited < s.max_delay_s:
                return
            if not self._send("live", records):
                return
            self._live_cursor = records[-1].seq
            self._live_waiting_since = None

    def _send_backlog(self) -> None:
        s = self._settings
        while True:
            count, nbytes = self._lane_inflight("backlog")
            budget = self._rate * self._live_window_s / 2
            if count >= self._max_backlog or (count > 0 and nbytes >= budget):
                return
            if self._backlog_cursor >= self._cut:
                return
            records = self._store.pending(
                s.max_records, s.max_bytes, after_seq=self._backlog_cursor, up_to_seq=self._cut
            )
            if not records:
                self._backlog_cursor = self._cut
                return
            fresh = [r for r in records if r.seq not in self._inflight_seqs]
            if fresh and not self._send("backlog", fresh):
                return
            self._backlog_cursor = records[-1].seq

    def _send(self, lane: str, records: list[Record]) -> bool:
        payload = encode_batch(self._gateway_id, records, self._settings.compression)
        first, last = records[0].seq, records[-1].seq
        try:
            self._uplink.send(payload, first, last)
        except UplinkError as exc:
            logger.debug("%s batch seq %d..%d not sent: %s", lane, first, last, exc)
            return False
        batch_id = self._next_id
        self._next_id += 1
        seqs = {r.seq for r in records}
        self._inflight[batch_id] = _Batch(
            lane, first, last, len(records), len(payload), time.monotonic(), seqs
        )
        for seq in seqs:
            self._inflight_seqs[seq] = batch_id
        self._counts["sent_batches"] += 1
        self._counts["sent_records"] += len(records)
        self._counts[lane] += 1
        return True
