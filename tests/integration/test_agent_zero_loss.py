"""Zero loss: every sequence number arrives at the (stand-in) cloud, exactly the set 1..N.

A producer process (store + forwarder + MQTT uplink, appending records at a steady rate)
is ``kill -9``-ed and restarted again and again; separately, the broker is killed and
restarted again and again. Duplicates on the wire are allowed; the set at the end is exact.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import cloud_stub as stub

pytestmark = pytest.mark.integration

GW = "gw-zero-loss"
N = 10_000
RATE = 500.0  # records/s: 10,000 records take about 20 s of producing


PRODUCER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edge_agent.config import BatchSettings, BufferSettings, MqttSettings
    from edge_agent.forwarder import Forwarder
    from edge_agent.store import RecordStore
    from edge_agent.uplink.mqtt import MqttUplink

    db, port, total, rate, gw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
    rate = float(rate)
    store = RecordStore(BufferSettings(path=Path(db)))
    uplink = MqttUplink(gw, MqttSettings(host="127.0.0.1", port=port, tls=None, keepalive_s=5),
                        reconnect_min_s=1, reconnect_max_s=1)
    forwarder = Forwarder(store, uplink, BatchSettings(max_records=200, max_delay_s=0.1),
                          ack_timeout_s=3.0)
    uplink.start()
    forwarder.start()
    chunk = 10
    next_t = time.monotonic()
    while (last := store.last_seq()) < total:
        k = min(chunk, total - last)
        store.append([(time.time(), "features", "cc-1", {"rms": 1.25, "k": j}) for j in range(k)])
        forwarder.notify()
        next_t += chunk / rate
        time.sleep(max(0.0, next_t - time.monotonic()))
    while store.depth() > 0:
        time.sleep(0.05)
    s = store.stats()
    print(f"done depth={s.depth} last_seq={s.last_seq} dropped={s.dropped_total}", flush=True)
    forwarder.stop()
    uplink.stop()
    store.close()
    """
)


class Producer:
    def __init__(self, workdir: Path, port: int) -> None:
        self.argv = [
            sys.executable, "-c", PRODUCER, str(workdir / "buffer.sqlite"), str(port), str(N),
            str(RATE), GW,
        ]  # fmt: skip
        self.log = workdir / "producer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float) -> str:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        text = self.log.read_text(errors="replace")
        assert code == 0, f"producer exited with {code}:\n{text[-3000:]}"
        return text


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Any, Any, Producer]]:
    broker = stub.Broker(tmp_path)
    broker.start()
    cloud = stub.Cloud(tmp_path, "mqtt", "--port", str(broker.port))
    cloud.start()
    producer = Producer(tmp_path, broker.port)
    try:
        yield broker, cloud, producer
    finally:
        if producer.proc is not None and producer.proc.poll() is None:
            producer.kill()
        cloud.stop()
        broker.stop()


def _assert_exact(cloud: Any, log: str) -> None:
    seqs = cloud.seqs()
    got = set(seqs)
    missing = sorted(set(range(1, N + 1)) - got)
    extra = sorted(got - set(range(1, N + 1)))
    assert not missing, f"{len(missing)} seqs never arrived, e.g. {missing[:10]}"
    assert not extra, f"unexpected seqs {extra[:10]}"
    assert len(got) == N
    assert f"done depth=0 last_seq={N} dropped=0" in log
    print(f"{N} records, {len(seqs) - N} duplicates on the wire")  # noqa: T201


@pytest.mark.timeout(90)
def test_kill_9_the_agent_repeatedly_loses_nothing(site: tuple[Any, Any, Producer]) -> None:
    _, cloud, producer = site
    rng = random.Random(7)
    deadline = time.monotonic() + 22
    while time.monotonic() < deadline:
        producer.start()
        time.sleep(rng.uniform(1.0, 3.0))
        producer.kill()
    assert producer.starts >= 8
    producer.start()
    log = producer.wait(60)
    _assert_exact(cloud, log)
    assert 0 < len(set(cloud.seqs())) <= N


@pytest.mark.timeout(90)
def test_restarting_the_broker_repeatedly_loses_nothing(site: tuple[Any, Any, Producer]) -> None:
    broker, cloud, producer = site
    rng = random.Random(11)
    producer.start()
    for _ in range(6):
        time.sleep(rng.uniform(1.5, 3.0))
        broker.kill()
        time.sleep(rng.uniform(0.2, 1.0))
        broker.start()
    assert broker.starts == 7
    log = producer.wait(60)
    _assert_exact(cloud, log)
