"""An ingest worker while the registry (PostgreSQL) is down: it waits and carries on.

Found by the fault soak (``tests/soak``): a registry read failing during a PostgreSQL
restart used to raise out of the worker's prepare thread and end it, leaving a process
that still answered its metrics and held its broker session, but stored and acked nothing
again. No broker is needed here: the worker's prepare step is driven directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.db import make_engine, make_sessionmaker
from cloud.errors import RegistryUnavailable
from cloud.ingest.directory import SqlDirectory
from cloud.ingest.service import IngestService
from cloud.ingest.worker import IngestWorker, _Message
from cloud.registry.refs import DeviceRef, GatewayInfo
from cloud.settings import Settings
from cloud.tsdb import TimeSeriesStore, open_store
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
