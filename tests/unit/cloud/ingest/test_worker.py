"""An ingest worker while the registry (PostgreSQL) is down: it waits and carries on.

Found by the fault soak (``tests/soak``): a registry read failing during a PostgreSQL
restart used to raise out of the worker's prepare thread and end it, leaving a process
that still answered its metrics and held its broker session, but stored and acked nothing
again. Now any unexpected error stops the worker (its process exits for the supervisor).
A raised alarm whose request cannot be recorded is not acknowledged until it can be: the
scorer opens alarm work orders from those requests only. No broker is needed here: the
worker's prepare and store steps are driven directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from support.registry_world import add_gateway

from cloud.db import make_engine, make_sessionmaker
from cloud.errors import CloudError, RegistryUnavailable
from cloud.ingest.directory import SqlDirectory, StaticDirectory
from cloud.ingest.service import IngestService, Prepared
from cloud.ingest.worker import IngestWorker, _Message
from cloud.registry.models import Base, Device
from cloud.registry.refs import DeviceRef, GatewayInfo
from cloud.risk.models import RiskRequest
from cloud.risk.requests import RequestSink
from cloud.settings import Settings
from cloud.tsdb import Point, TimeSeriesStore, open_store
from edge_agent.protocol import Record, RecordKind, decode_ack, encode_batch, up_topic

NOW = 1_750_000_000.0
GW = GatewayInfo("gw-1", "client-a", "site-1", {"cc-1": DeviceRef("dev-1", "compressor")})


class FlakyDirectory:
    """The registry down for the first ``failures`` lookups (or for good with None)."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.lookups = 0

    def lookup(self, gateway_id: str, *, reload: bool = False) -> GatewayInfo | None:
        self.lookups += 1
        if self.failures is None or self.lookups <= self.failures:
            raise RegistryUnavailable("the registry database is unavailable: restarting")
        return GW if gateway_id == GW.gateway_id else None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TimeSeriesStore]:
    s = open_store(Settings(tsdb="sqlite", tsdb_sqlite_path=tmp_path / "ts.db"))
    try:
        yield s
    finally:
        s.close()


def worker(store: TimeSeriesStore, directory: FlakyDirectory) -> IngestWorker:
    service = IngestService(store, directory, clock=lambda: NOW + 60)
    return IngestWorker(
        Settings(), service, client_id="test-worker", retry_min_s=0.01, retry_max_s=0.04
    )


def message(seq: int, energy: float = 1.0) -> _Message:
    record = Record(seq, NOW + seq, RecordKind.ENERGY, "cc-1", {"values": {"energy": energy}})
    return _Message(up_topic("gw-1"), encode_batch("gw-1", [record]), mid=seq, qos=1)


def test_a_registry_outage_is_waited_out_and_the_batch_prepared(store: TimeSeriesStore) -> None:
    directory = FlakyDirectory(failures=3)
    w = worker(store, directory)
    group = [w._prepare(message(1)), w._prepare(message(2))]
    assert [p.seqs for p in group if p is not None] == [[1], [2]]
    assert w.counts["retries"] == 3
    acks = w.service.commit([p for p in group if p is not None])
    assert [a.ranges for a in acks] == [[(1, 1)], [(2, 2)]]


def test_a_worker_stopped_during_an_outage_leaves_the_batch_unacked(
    store: TimeSeriesStore,
) -> None:
    w = worker(store, FlakyDirectory(failures=None))
    threading.Timer(0.2, w._stopping.set).start()
    assert w._prepare(message(1)) is None  # returns instead of raising: nothing stored, no ack
    assert w.counts["retries"] >= 2 and w.counts["refused"] == 0


def test_the_sql_directory_reports_an_unreachable_registry_as_unavailable(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'registry.db'}")
    try:
        directory = SqlDirectory(make_sessionmaker(engine))
        with pytest.raises(RegistryUnavailable):
            directory.lookup("gw-1")
    finally:
        engine.dispose()


# ---- raised alarms and the registry -----------------------------------------------------


def alarm(seq: int) -> Record:
    body = {"name": "discharge_temp_high", "state": "raised", "severity": "major", "value": 118.5}
    return Record(seq, NOW + seq, RecordKind.ALARM, "cc-1", body)


def anomalous(seq: int) -> Record:
    body = {"score": 3.2, "anomalous": True, "group": "fast", "model_id": "compressor-ae"}
    return Record(seq, NOW + seq, RecordKind.SCORE, "cc-1", body)


def energy(seq: int) -> Record:
    return Record(seq, NOW + seq, RecordKind.ENERGY, "cc-1", {"values": {"energy": 1.0 + seq}})


def build_registry(folder: Path, *, with_device: bool = True) -> None:
    """A registry in ``folder`` with gw-1 and (unless told otherwise) its compressor dev-1,
    built beside it and moved into place at once (an outage ending)."""
    staging = folder.with_name(folder.name + "-staging")
    staging.mkdir()
    engine = make_engine(f"sqlite:///{staging / 'registry.db'}")
    Base.metadata.create_all(engine)
    with make_sessionmaker(engine).begin() as s:
        add_gateway(s, "gw-1")
        if with_device:
            s.add(Device(id="dev-1", gateway_id="gw-1", name="cc-1", asset_type="compressor"))
    engine.dispose()
    staging.rename(folder)


def sink_worker(store: TimeSeriesStore, folder: Path) -> tuple[IngestWorker, RequestSink]:
    """A worker whose service records risk requests in the registry at ``folder``."""
    sink = RequestSink(make_sessionmaker(make_engine(f"sqlite:///{folder / 'registry.db'}")))
    service = IngestService(
        store, StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 60, notify=sink
    )
    w = IngestWorker(
        Settings(), service, client_id="test-worker", retry_min_s=0.01, retry_max_s=0.04
    )
    return w, sink


def requests_in(folder: Path) -> list[tuple[str, str, str]]:
    engine = make_engine(f"sqlite:///{folder / 'registry.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            return [
                (r.device_id, r.reason, str((r.detail or {}).get("name", "")))
                for r in s.scalars(select(RiskRequest).order_by(RiskRequest.id))
            ]
    finally:
        engine.dispose()


def test_a_raised_alarm_is_acked_only_once_its_request_is_recorded(
    tmp_path: Path, store: TimeSeriesStore
) -> None:
    folder = tmp_path / "registry"  # does not exist yet: the database is down
    w, _ = sink_worker(store, folder)
    prepared = w.service.prepare(encode_batch("gw-1", [alarm(1), energy(2)]), "gw-1")
    threading.Timer(0.3, build_registry, args=(folder,)).start()
    acks = w._commit([prepared])
    assert acks is not None and acks[0].ranges == [(1, 2)]
    assert w.counts["retries"] >= 2  # held while the registry was down
    assert requests_in(folder) == [("dev-1", "alarm", "discharge_temp_high")]
    assert store.count("alarm") == 1 and store.count("energy") == 1  # written again, once


def test_a_worker_stopped_while_an_alarm_cannot_be_recorded_acks_nothing(
    tmp_path: Path, store: TimeSeriesStore
) -> None:
    w, _ = sink_worker(store, tmp_path / "registry")
    prepared = w.service.prepare(encode_batch("gw-1", [alarm(1)]), "gw-1")
    threading.Timer(0.2, w._stopping.set).start()
    assert w._commit([prepared]) is None  # the gateway keeps the alarm and sends it again


def test_anomaly_requests_do_not_hold_the_ack_in_an_outage(
    tmp_path: Path, store: TimeSeriesStore
) -> None:
    """The scheduled pass scores every device anyway: a lost anomaly request costs
    minutes, not an order, so the batch is acknowledged."""
    w, _ = sink_worker(store, tmp_path / "registry")
    prepared = w.service.prepare(encode_batch("gw-1", [anomalous(1), energy(2)]), "gw-1")
    acks = w._commit([prepared])
    assert acks is not None and acks[0].ranges == [(1, 2)]
    assert w.counts["retries"] == 0


def test_an_alarm_of_a_device_deleted_meanwhile_does_not_block_the_gateway(
    tmp_path: Path, store: TimeSeriesStore
) -> None:
    """The database refuses the request for good (no such device): retrying could never
    succeed, so the batch is acknowledged and the request dropped (and counted)."""
    folder = tmp_path / "registry"
    build_registry(folder, with_device=False)
    w, _ = sink_worker(store, folder)
    prepared = w.service.prepare(encode_batch("gw-1", [alarm(1)]), "gw-1")
    acks = w._commit([prepared])
    assert acks is not None and acks[0].ranges == [(1, 1)]
    assert w.counts["retries"] == 0 and requests_in(folder) == []


def test_an_unexpected_error_stops_the_worker_instead_of_leaving_it_half_alive(
    store: TimeSeriesStore,
) -> None:
    """A bug anywhere in the store path used to end the store thread alone: the process
    lived on, held its broker session and stored nothing again."""

    def broken_hook(_points: Sequence[Point]) -> None:
        raise RuntimeError("a bug in a hook")

    service = IngestService(
        store, StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 60, notify=broken_hook
    )
    w = IngestWorker(Settings(), service, client_id="test-worker")
    for seq in range(1, 4):
        w._queue.put(message(seq))
    threads = [
        threading.Thread(target=w._guarded, args=(w._run,)),
        threading.Thread(target=w._guarded, args=(w._commit_loop,)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "a worker thread outlived the failure"
    assert w.failed.is_set() and w.counts["stored"] == 0


# ---- grouping batches into one write ------------------------------------------------------


def grouping_worker(store: TimeSeriesStore, **kwargs: float) -> IngestWorker:
    service = IngestService(store, StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 60)
    return IngestWorker(Settings(), service, client_id="test-worker", **kwargs)  # type: ignore[arg-type]


def ready(w: IngestWorker, *seqs: int) -> None:
    """Messages ``seqs`` decoded and ready, as the prepare thread leaves them."""
    for seq in seqs:
        prepared = w._prepare(message(seq))
        assert prepared is not None
        with w._ready_cond:
            w._ready.append((time.monotonic(), message(seq), prepared))
            w._ready_cond.notify()


def mids(group: list[tuple[_Message, Prepared]] | None) -> list[int]:
    assert group is not None
    return [m.mid for m, _ in group]


def test_a_batch_ready_within_the_linger_joins_the_write(store: TimeSeriesStore) -> None:
    w = grouping_worker(store, linger_s=5.0, max_batches=2)
    ready(w, 1)
    threading.Timer(0.05, ready, args=(w, 2)).start()
    started = time.monotonic()
    assert mids(w._take()) == [1, 2]
    # a full group goes at once instead of waiting out the linger
    assert time.monotonic() - started < 4.0


def test_without_a_linger_only_what_is_ready_joins(store: TimeSeriesStore) -> None:
    service = IngestService(store, StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 60)
    w = IngestWorker(Settings(ingest_linger_ms=0), service, client_id="test-worker")
    assert w.linger_s == 0.0
    ready(w, 1, 2)
    threading.Timer(0.05, ready, args=(w, 3)).start()
    assert mids(w._take()) == [1, 2]
    assert mids(w._take()) == [3]


def test_the_linger_is_bounded(store: TimeSeriesStore) -> None:
    w = grouping_worker(store, linger_s=0.05)
    ready(w, 1)
    started = time.monotonic()
    assert mids(w._take()) == [1]
    assert time.monotonic() - started >= 0.04


def test_a_write_takes_at_most_max_batches(store: TimeSeriesStore) -> None:
    w = grouping_worker(store, linger_s=0.0, max_batches=3)
    ready(w, 1, 2, 3, 4, 5)
    assert mids(w._take()) == [1, 2, 3]
    assert mids(w._take()) == [4, 5]


class SlowStore:
    """A store whose first write waits until it is released; notes each write's seqs."""

    def __init__(self, inner: TimeSeriesStore) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.writing = threading.Event()
        self.writes: list[list[float]] = []
        """The energy values of each write, in the order the writes ended."""

    def write(self, points: Sequence[Point]) -> None:
        if not self.writing.is_set():
            self.writing.set()
            assert self.release.wait(10)
        self.writes.append(sorted(p.fields["energy"] for p in points))
        self.inner.write(points)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def started_worker(
    store: TimeSeriesStore, writes_in_flight: int
) -> tuple[IngestWorker, SlowStore, list[bytes], list[threading.Thread]]:
    """A worker on a :class:`SlowStore`, its prepare thread and ``writes_in_flight`` store
    threads running; the broker left out (the acks to gateways are collected)."""
    slow = SlowStore(store)
    service = IngestService(
        slow,  # type: ignore[arg-type]
        StaticDirectory({"gw-1": GW}),
        clock=lambda: NOW + 60,
    )
    w = IngestWorker(
        Settings(), service, client_id="test-worker", linger_s=0.01,
        writes_in_flight=writes_in_flight,
    )  # fmt: skip
    acked: list[bytes] = []
    w._client.publish = lambda _topic, payload, **k: acked.append(payload)  # type: ignore[assignment,method-assign]
    w._client.ack = lambda *a, **k: None  # type: ignore[assignment,method-assign]
    threads = [threading.Thread(target=w._guarded, args=(w._run,))] + [
        threading.Thread(target=w._guarded, args=(w._commit_loop,)) for _ in range(writes_in_flight)
    ]
    for t in threads:
        t.start()
    return w, slow, acked, threads


def stop(w: IngestWorker, slow: SlowStore, threads: list[threading.Thread]) -> None:
    slow.release.set()
    w._stopping.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads) and not w.failed.is_set()


def test_what_arrives_during_a_slow_write_goes_in_the_next_write(
    store: TimeSeriesStore,
) -> None:
    """One write in flight. Batch 2 arrives during write 1, batch 3 later than the linger
    after it but still during write 1: both are stored by write 2, right after write 1
    (a batch behind a slow write waits for that write and its own, not for one more)."""
    w, slow, acked, threads = started_worker(store, writes_in_flight=1)
    try:
        w._queue.put(message(1, energy=1.0))
        assert slow.writing.wait(5)
        w._queue.put(message(2, energy=2.0))
        time.sleep(0.1)  # ten lingers
        w._queue.put(message(3, energy=3.0))
        time.sleep(0.1)
    finally:
        stop(w, slow, threads)
    assert slow.writes == [[1.0], [2.0, 3.0]]
    assert [decode_ack(a).ranges for a in acked] == [[(1, 1)], [(2, 2)], [(3, 3)]]
    assert w.counts["stored"] == 3


def test_with_two_writes_in_flight_a_slow_write_does_not_hold_the_next(
    store: TimeSeriesStore,
) -> None:
    """Write 1 hangs (the store busy); batch 2, arriving meanwhile, is stored and acked to
    its gateway by the other store thread, and batch 1 after it once its write ends."""
    w, slow, acked, threads = started_worker(store, writes_in_flight=2)
    try:
        w._queue.put(message(1, energy=1.0))
        assert slow.writing.wait(5)
        w._queue.put(message(2, energy=2.0))
        deadline = time.monotonic() + 5
        while not acked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow.writes == [[2.0]] and not slow.release.is_set()
    finally:
        stop(w, slow, threads)
    assert [decode_ack(a).ranges for a in acked] == [[(2, 2)], [(1, 1)]]
    assert slow.writes == [[2.0], [1.0]] and w.counts["stored"] == 2


def batch_seconds(stage: str, le: str | None = None) -> float:
    """``edgewatch_ingest_batch_seconds`` of ``stage`` so far: its count, or its bucket
    ``le``."""
    name, labels = "edgewatch_ingest_batch_seconds", {"stage": stage}
    if le is None:
        value = REGISTRY.get_sample_value(f"{name}_count", labels)
    else:
        value = REGISTRY.get_sample_value(f"{name}_bucket", labels | {"le": le})
    return value or 0.0


def test_a_batch_held_by_a_slow_write_shows_where_its_time_went(
    store: TimeSeriesStore,
) -> None:
    """One store thread; batch 1's write hangs 600 ms and batch 2 arrives meanwhile. Both
    are decoded at once; batch 1 is taken into a write at once, batch 2 only once that
    write ends; both are acked beyond 500 ms."""
    stages = ("prepared", "taken", "acked")
    before = {(stage, le): batch_seconds(stage, le) for stage in stages for le in (None, "0.5")}
    w, slow, acked, threads = started_worker(store, writes_in_flight=1)
    try:
        w._queue.put(message(1, energy=1.0))
        assert slow.writing.wait(5)
        w._queue.put(message(2, energy=2.0))
        time.sleep(0.6)
    finally:
        stop(w, slow, threads)
    assert [decode_ack(a).ranges for a in acked] == [[(1, 1)], [(2, 2)]]
    delta = {k: batch_seconds(*k) - v for k, v in before.items()}
    assert delta == {
        ("prepared", None): 2.0,
        ("prepared", "0.5"): 2.0,
        ("taken", None): 2.0,
        ("taken", "0.5"): 1.0,
        ("acked", None): 2.0,
        ("acked", "0.5"): 0.0,
    }


def test_writes_in_flight_must_be_at_least_one(store: TimeSeriesStore) -> None:
    with pytest.raises(CloudError, match="writes_in_flight is 0"):
        grouping_worker(store, writes_in_flight=0)
