"""The forwarder's live lane: when a batch goes out (full at once, else after max_delay_s).

The uplink is an in-process fake that records what it is given (the real uplinks have
their conformance suite in ``tests/integration/test_agent_uplink.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import BatchSettings, BufferSettings
from edge_agent.forwarder import Forwarder
from edge_agent.protocol import decode_batch
from edge_agent.store import RecordStore
from edge_agent.uplink import Uplink

GW = "gw-1"


class FakeUplink(Uplink):
    """Always connected; keeps every batch it is given, with the time it came."""

    def __init__(self) -> None:
        self.gateway_id = GW
        self.sent: list[tuple[float, list[int]]] = []
        self.event = threading.Event()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    @property
    def connected(self) -> bool:
        return True

    def send(self, payload: bytes, first_seq: int, last_seq: int) -> None:
        seqs = [r.seq for r in decode_batch(payload, expected_gateway=GW).records]
        self.sent.append((time.monotonic(), seqs))
        self.event.set()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    with RecordStore(BufferSettings(path=tmp_path / "buffer.sqlite")) as s:
        yield s


def running(store: RecordStore, settings: BatchSettings) -> tuple[Forwarder, FakeUplink]:
    uplink = FakeUplink()
    forwarder = Forwarder(store, uplink, settings)
    forwarder.start()
    return forwarder, uplink


def append(store: RecordStore, forwarder: Forwarder, n: int, pad: int = 0) -> float:
    now = time.time()
    store.append([(now, "energy", "cc-1", {"i": i, "p": "x" * pad}) for i in range(n)])
    forwarder.notify()
    return time.monotonic()


def wait_sent(uplink: FakeUplink, batches: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(uplink.sent) < batches:
        assert time.monotonic() < deadline, f"{len(uplink.sent)} batches sent, not {batches}"
        uplink.event.wait(0.01)
        uplink.event.clear()


def test_a_batch_that_is_not_full_goes_after_max_delay(store: RecordStore) -> None:
    forwarder, uplink = running(store, BatchSettings(max_records=100, max_delay_s=0.3))
    try:
        t0 = append(store, forwarder, 3)
        time.sleep(0.1)
        append(store, forwarder, 2)  # a commit later: still waits for the first ones' delay
        wait_sent(uplink, 1)
        at, seqs = uplink.sent[0]
        assert seqs == [1, 2, 3, 4, 5]
        assert 0.3 <= at - t0 < 0.3 + 0.5  # not before max_delay_s, and then soon
    finally:
        forwarder.stop()


def test_a_batch_full_by_count_goes_at_once(store: RecordStore) -> None:
    forwarder, uplink = running(store, BatchSettings(max_records=10, max_delay_s=30))
    try:
        t0 = append(store, forwarder, 25)
        wait_sent(uplink, 2)
        assert [seqs for _, seqs in uplink.sent[:2]] == [
            list(range(1, 11)),
            list(range(11, 21)),
        ]
        assert uplink.sent[1][0] - t0 < 5  # long before max_delay_s
        time.sleep(0.3)
        assert len(uplink.sent) == 2  # the last 5 fit one batch: they wait
    finally:
        forwarder.stop()


def test_a_batch_full_by_bytes_goes_at_once(store: RecordStore) -> None:
    forwarder, uplink = running(
        store, BatchSettings(max_records=1000, max_bytes=4096, max_delay_s=30)
    )
    try:
        t0 = append(store, forwarder, 6, pad=1000)  # ~1 kB each: 3 fit 4096 bytes
        wait_sent(uplink, 1)
        assert uplink.sent[0][1] == [1, 2, 3]
        assert uplink.sent[0][0] - t0 < 5
    finally:
        forwarder.stop()
