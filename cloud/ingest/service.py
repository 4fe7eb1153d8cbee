"""One batch in, points stored, one ack out.

:meth:`IngestService.prepare` decodes a batch leniently with :mod:`edge_agent.protocol`
(bad records are left out with their reason, good neighbours kept), checks the gateway
is registered and maps each record to a point (:mod:`cloud.ingest.records`).
:meth:`IngestService.commit` writes the points of one or more prepared batches in one
store write and returns each batch's :class:`~edge_agent.protocol.Ack`: the seqs stored
and the seqs refused with their reasons. If the write fails, it raises and nothing is
acknowledged — the gateway keeps those records and sends them again, and since a point
is identified by its tags and timestamp, storing them twice stores them once.

Batch-level faults (not a batch, a version this cloud does not read, another gateway's
batch, an unregistered gateway) raise :class:`BatchRefused`: there is nothing to ack.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cloud.errors import CloudError, RegistryUnavailable, StoreError, StoreUnavailable
from cloud.ingest import metrics
from cloud.ingest.directory import Directory
from cloud.ingest.records import Rejected, to_point
from cloud.tsdb import Point, TimeSeriesStore
from edge_agent.errors import ProtocolError
from edge_agent.protocol import Ack, coalesce, decode_batch

log = logging.getLogger(__name__)


class BatchRefused(CloudError):
    """A batch that cannot be stored at all; ``reason`` is one of
    :data:`edge_agent.protocol.BATCH_REASONS` or ``unknown_gateway``."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(slots=True)
class Prepared:
    """A decoded batch, ready to store."""

    gateway_id: str
    points: list[Point]
    seqs: list[int]
    """The seqs of ``points``, in the same order."""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    newest_ts: float = 0.0


class IngestService:
    """Stateless but for its counters: any number of them may run side by side."""

    def __init__(
        self,
        store: TimeSeriesStore,
        directory: Directory,
        *,
        max_future_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        transport: str = "mqtt",
        notify: Callable[[Sequence[Point]], None] | None = None,
    ) -> None:
        """``notify`` is given the points of every successful write, before the acks
        (the risk scorer's request sink). It may raise
        :class:`~cloud.errors.RegistryUnavailable` when what it must record cannot be
        recorded now: then nothing is acknowledged, as for a store outage."""
        self.store = store
        self.notify = notify
        self.directory = directory
        self.max_future_s = max_future_s
        self.clock = clock
        self.transport = transport
        self._reported_unknown: set[str] = set()

    def prepare(self, data: bytes, gateway_id: str) -> Prepared:
        """Decode and map one batch that arrived for ``gateway_id`` (from its topic or URL)."""
        try:
            decoded = decode_batch(data, strict=False, expected_gateway=gateway_id)
        except ProtocolError as exc:
            metrics.BATCHES.labels(self.transport, "rejected").inc()
            raise BatchRefused(exc.reason, str(exc)) from None
        info = self.directory.lookup(gateway_id)
        if info is None:
            metrics.BATCHES.labels(self.transport, "unknown_gateway").inc()
            if gateway_id not in self._reported_unknown and len(self._reported_unknown) < 10_000:
                self._reported_unknown.add(gateway_id)
                log.error("batches of unregistered gateway %r are not stored", gateway_id)
            raise BatchRefused("unknown_gateway", f"gateway {gateway_id!r} is not registered")
        records = decoded.batch.records
        if any(r.device_id is not None and r.device_id not in info.devices for r in records):
            info = self.directory.lookup(gateway_id, reload=True) or info
        now = self.clock()
        prepared = Prepared(gateway_id, [], [], list(decoded.rejected_seqs))
        for record in records:
            try:
                point = to_point(record, info, now=now, max_future_s=self.max_future_s)
            except Rejected as exc:
                prepared.rejected.append((record.seq, exc.reason))
                continue
            prepared.points.append(point)
            prepared.seqs.append(record.seq)
            prepared.newest_ts = max(prepared.newest_ts, record.ts)
        # Every record left out is counted, also those whose seq cannot be read or repeats
        # an earlier one in the batch (the ack cannot name them).
        for _, reason in decoded.rejects:
            metrics.REJECTED.labels(reason).inc()
        for _, reason in prepared.rejected[len(decoded.rejected_seqs) :]:
            metrics.REJECTED.labels(reason).inc()
        return prepared

    def commit(self, batches: Sequence[Prepared]) -> list[Ack]:
        """Store the points of ``batches`` in one write; their acks, in order.

        Raises :class:`cloud.errors.StoreUnavailable` or
        :class:`cloud.errors.RegistryUnavailable` from ``notify`` (retry later; nothing
        acked) or :class:`cloud.errors.StoreError` (the store refused the write)."""
        points = [p for b in batches for p in b.points]
        if points:
            started = time.perf_counter()
            try:
                self.store.write(points)
            except StoreUnavailable:
                metrics.STORE_ERRORS.labels("unavailable").inc()
                metrics.BATCHES.labels(self.transport, "store_unavailable").inc(len(batches))
                raise
            except StoreError as exc:
                metrics.STORE_ERRORS.labels("refused").inc()
                log.error("the store refused a write of %d points: %s", len(points), exc)
                batches = [self._one_by_one(b) for b in batches]
                points = [p for b in batches for p in b.points]
            metrics.STORE_SECONDS.observe(time.perf_counter() - started)
            if self.notify is not None and points:
                try:
                    self.notify(points)
                except RegistryUnavailable:
                    metrics.BATCHES.labels(self.transport, "registry_unavailable").inc(
                        len(batches)
                    )
                    raise
        now = self.clock()
        kinds: Counter[str] = Counter(p.measurement for p in points)
        for kind, n in kinds.items():
            metrics.RECORDS.labels(kind).inc(n)
        acks = []
        for b in batches:
            metrics.BATCHES.labels(self.transport, "stored").inc()
            if b.points:
                metrics.LAG.observe(max(0.0, now - b.newest_ts))
            acks.append(Ack(b.gateway_id, coalesce(b.seqs), b.rejected))
        return acks

    def _one_by_one(self, batch: Prepared) -> Prepared:
        """``batch`` with the points the store refuses moved to its rejected list
        (``store_refused``), so that one bad point cannot block a gateway's queue forever.
        Raises :class:`StoreUnavailable` if the store goes away meanwhile."""
        try:
            self.store.write(batch.points)
            return batch
        except StoreUnavailable:
            raise
        except StoreError:
            pass
        kept = Prepared(batch.gateway_id, [], [], list(batch.rejected), batch.newest_ts)
        for point, seq in zip(batch.points, batch.seqs, strict=True):
            try:
                self.store.write([point])
            except StoreUnavailable:
                raise
            except StoreError as exc:
                log.error("the store refused seq %d of %s: %s", seq, batch.gateway_id, exc)
                kept.rejected.append((seq, "store_refused"))
                metrics.REJECTED.labels("store_refused").inc()
                continue
            kept.points.append(point)
            kept.seqs.append(seq)
        return kept

    def handle(self, data: bytes, gateway_id: str) -> Ack:
        """:meth:`prepare` and :meth:`commit` one batch."""
        return self.commit([self.prepare(data, gateway_id)])[0]
