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
from sqlalchemy import select
from support.registry_world import add_gateway

from cloud.db import make_engine, make_sessionmaker
from cloud.errors import RegistryUnavailable
from cloud.ingest.directory import SqlDirectory, StaticDirectory
from cloud.ingest.service import IngestService
from cloud.ingest.worker import IngestWorker, _Message
from cloud.registry.models import Base, Device
from cloud.registry.refs import DeviceRef, GatewayInfo
from cloud.risk.models import RiskRequest
from cloud.risk.requests import RequestSink
from cloud.settings import Settings
from cloud.tsdb import Point, TimeSeriesStore, open_store
from edge_agent.protocol import Record, RecordKind, encode_batch, up_topic

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


def message(seq: int) -> _Message:
    record = Record(seq, NOW + seq, RecordKind.ENERGY, "cc-1", {"values": {"energy": 1.0}})
    return _Message(up_topic("gw-1"), encode_batch("gw-1", [record]), mid=seq, qos=1)


def test_a_registry_outage_is_waited_out_and_the_batch_prepared(store: TimeSeriesStore) -> None:
    directory = FlakyDirectory(failures=3)
    w = worker(store, directory)
    group = w._prepare([message(1), message(2)])
    assert [(m.mid, p.seqs) for m, p in group] == [(1, [1]), (2, [2])]
    assert w.counts["retries"] == 3
    acks = w.service.commit([p for _, p in group])
    assert [a.ranges for a in acks] == [[(1, 1)], [(2, 2)]]


def test_a_worker_stopped_during_an_outage_leaves_the_batch_unacked(
    store: TimeSeriesStore,
) -> None:
    w = worker(store, FlakyDirectory(failures=None))
    threading.Timer(0.2, w._stopping.set).start()
    assert w._prepare([message(1)]) == []  # returns instead of raising: nothing stored, no ack
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


def test_a_batch_arriving_within_the_linger_joins_the_write(store: TimeSeriesStore) -> None:
    service = IngestService(store, StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 60)
    w = IngestWorker(Settings(), service, client_id="test-worker", linger_s=5.0, max_batches=2)
    threading.Timer(0.05, w._queue.put, args=(message(2),)).start()
    started = time.monotonic()
    group = w._collect(message(1))
    assert [m.mid for m in group] == [1, 2]
    # a full group goes at once instead of waiting out the linger
    assert time.monotonic() - started < 4.0


def test_without_a_linger_only_what_already_waits_joins(store: TimeSeriesStore) -> None:
    service = IngestService(store, StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 60)
    w = IngestWorker(Settings(ingest_linger_ms=0), service, client_id="test-worker")
    assert w.linger_s == 0.0
    w._queue.put(message(2))
    threading.Timer(0.05, w._queue.put, args=(message(3),)).start()
    assert [m.mid for m in w._collect(message(1))] == [1, 2]
    time.sleep(0.2)
    assert [m.mid for m in w._collect(w._queue.get_nowait())] == [3]


def test_the_linger_is_bounded(store: TimeSeriesStore) -> None:
    service = IngestService(store, StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 60)
    w = IngestWorker(Settings(), service, client_id="test-worker", linger_s=0.05)
    started = time.monotonic()
    assert [m.mid for m in w._collect(message(1))] == [1]
    assert time.monotonic() - started >= 0.05
