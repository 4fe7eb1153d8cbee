"""One conformance suite for every uplink: MQTT (private Mosquitto) and HTTPS (a local
server that acks like the cloud will). Both peers are real processes: the stand-in
ingest in ``tests/support/cloud_stub.py`` decodes with :mod:`edge_agent.protocol` and acks."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support import cloud_stub as stub
from support.tls import self_signed

from edge_agent.config import BatchSettings, BufferSettings, HttpsSettings, MqttSettings
from edge_agent.errors import UplinkError
from edge_agent.forwarder import Forwarder
from edge_agent.protocol import (
    Ack,
    Record,
    RecordKind,
    decode_status,
    encode_batch,
    status_topic,
)
from edge_agent.store import RecordStore
from edge_agent.uplink import Uplink
from edge_agent.uplink.https import HttpsUplink
from edge_agent.uplink.mqtt import MqttUplink

pytestmark = pytest.mark.integration

GW = "gw-test-1"
WAIT_S = 20.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Env:
    """An uplink kind with its server side: ``down()`` makes the server go away,
    ``up()`` brings it back on the same port."""

    kind: str
    cloud: Any
    make_uplink: Callable[[], Uplink]
    down: Callable[[], None]
    up: Callable[[], None]


def _mqtt_env(tmp_path: Path) -> Iterator[Env]:
    broker = stub.Broker(tmp_path)
    broker.start()
    cloud = stub.Cloud(tmp_path, "mqtt", "--port", str(broker.port))
    cloud.start()
    settings = MqttSettings(host=broker.host, port=broker.port, tls=None, keepalive_s=5)
    try:
        yield Env(
            "mqtt",
            cloud,
            lambda: MqttUplink(GW, settings, reconnect_min_s=1, reconnect_max_s=1),
            broker.kill,
            broker.start,
        )
    finally:
        cloud.stop()
        broker.stop()


def _http_env(tmp_path: Path) -> Iterator[Env]:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    port = stub.free_port()
    cloud = stub.Cloud(tmp_path, "http", "--port", str(port), "--token-file", str(token))
    cloud.start()
    settings = HttpsSettings(url=f"http://127.0.0.1:{port}", token_file=token, timeout_s=5)
    try:
        yield Env(
            "https",
            cloud,
            lambda: HttpsUplink(GW, settings, retry_min_s=0.2, retry_max_s=1.0),
            cloud.kill,
            cloud.start,
        )
    finally:
        cloud.stop()


@pytest.fixture(params=["mqtt", "https"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from (_mqtt_env if request.param == "mqtt" else _http_env)(tmp_path)


@pytest.fixture
def started(env: Env) -> Iterator[tuple[Env, Uplink]]:
    uplink = env.make_uplink()
    uplink.start()
    try:
        wait_for(lambda: uplink.connected, "the uplink to connect")
        yield env, uplink
    finally:
        uplink.stop()


def records(first: int, n: int) -> list[Record]:
    now = time.time()
    return [
        Record(s, now, RecordKind.FEATURES, "cc-1", {"rms": s * 0.5, "n": s})
        for s in range(first, first + n)
    ]


def test_batches_arrive_intact_and_the_ack_comes_back(started: tuple[Env, Uplink]) -> None:
    env, uplink = started
    acks: queue.SimpleQueue[Ack] = queue.SimpleQueue()
    uplink.on_ack = acks.put
    sent = records(1, 300)
    uplink.send(encode_batch(GW, sent[:200], "zlib"), 1, 200)
    uplink.send(encode_batch(GW, sent[200:], "none"), 201, 300)
    got = [acks.get(timeout=WAIT_S), acks.get(timeout=WAIT_S)]
    assert sorted(r for a in got for r in a.ranges) == [(1, 200), (201, 300)]
    assert all(a.gateway_id == GW and a.rejected == [] for a in got)
    arrived = {a.seq: a for a in env.cloud.arrivals()}
    assert sorted(arrived) == list(range(1, 301))
    assert all(arrived[r.seq].ts == r.ts and arrived[r.seq].gateway == GW for r in sent)


def test_forwarder_delivers_everything_and_acks_delete_it(
    started: tuple[Env, Uplink], tmp_path: Path
) -> None:
    env, uplink = started
    store = RecordStore(BufferSettings(path=tmp_path / "buffer.sqlite"))
    forwarder = Forwarder(store, uplink, BatchSettings(max_records=200), ack_timeout_s=5)
    forwarder.start()
    try:
        for i in range(60):
            store.append([(time.time(), "score", "cc-1", {"s": i / 60})] * 50)
            forwarder.notify()
            time.sleep(0.005)
        wait_for(lambda: store.depth() == 0, "the buffer to drain")
        stats = forwarder.stats()
    finally:
        forwarder.stop()
        store.close()
    assert sorted(set(env.cloud.seqs())) == list(range(1, 3001))
    assert stats.acked_records == 3000
    assert stats.inflight_batches == 0
    assert stats.buffered == 0


def test_reconnects_after_the_server_comes_back_and_loses_nothing(
    started: tuple[Env, Uplink], tmp_path: Path
) -> None:
    env, uplink = started
    store = RecordStore(BufferSettings(path=tmp_path / "buffer.sqlite"))
    forwarder = Forwarder(store, uplink, BatchSettings(max_records=100), ack_timeout_s=3)
    forwarder.start()

    def produce(n: int) -> None:
        for i in range(n):
            store.append([(time.time(), "energy", "cc-1", {"kwh": i})] * 10)
            forwarder.notify()
            time.sleep(0.01)

    try:
        produce(50)
        env.down()
        produce(50)  # HTTP learns the server is gone from a failing request
        wait_for(lambda: not uplink.connected, "the uplink to notice")
        with pytest.raises(UplinkError):
            uplink.send(encode_batch(GW, records(1, 1)), 1, 1)
        produce(50)
        assert store.depth() > 0
        env.up()
        wait_for(lambda: uplink.connected, "the uplink to reconnect")
        produce(50)
        wait_for(lambda: store.depth() == 0, "the buffer to drain")
    finally:
        forwarder.stop()
        store.close()
    seqs = env.cloud.seqs()
    assert sorted(set(seqs)) == list(range(1, 2001))


def test_send_before_start_raises(env: Env) -> None:
    uplink = env.make_uplink()
    with pytest.raises(UplinkError):
        uplink.send(b"\x01{}", 1, 1)


# ---- MQTT specifics --------------------------------------------------------------------------


class _Watcher:
    """A test MQTT client that collects the gateway's status messages."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: queue.SimpleQueue[tuple[bool, bool]] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="watcher", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_connect = lambda c, *a: c.subscribe(status_topic(GW), qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.put(
            (decode_status(m.payload).online, bool(m.retain))
        )
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(WAIT_S)

    def next(self) -> tuple[bool, bool]:
        return self.messages.get(timeout=WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


AGENT = textwrap.dedent(
    """
    import sys, time
    from edge_agent.config import MqttSettings
    from edge_agent.uplink.mqtt import MqttUplink
    up = MqttUplink(sys.argv[1], MqttSettings(host="127.0.0.1", port=int(sys.argv[2]), tls=None))
    up.start()
    while not up.connected:
        time.sleep(0.01)
    print("connected", flush=True)
    time.sleep(60)
    """
)


def test_mqtt_status_online_and_last_will_offline(tmp_path: Path) -> None:
    broker = stub.Broker(tmp_path)
    broker.start()
    watcher = _Watcher(broker.host, broker.port)
    try:
        # An agent killed with SIGKILL: the broker publishes its will, retained.
        proc = subprocess.Popen(
            [sys.executable, "-c", AGENT, GW, str(broker.port)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "connected"
        assert watcher.next() == (True, False)
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        assert watcher.next() == (False, False)
        # A graceful stop publishes offline itself.
        settings = MqttSettings(host=broker.host, port=broker.port, tls=None)
        uplink = MqttUplink(GW, settings)
        uplink.start()
        wait_for(lambda: uplink.connected, "connect")
        assert watcher.next() == (True, False)
        uplink.stop()
        assert watcher.next() == (False, False)
        late = _Watcher(broker.host, broker.port)
        assert late.next() == (False, True)  # retained
        late.close()
    finally:
        watcher.close()
        broker.stop()


def test_mqtt_socket_sends_without_nagle_delay(tmp_path: Path) -> None:
    # Nagle's algorithm would hold a batch behind the broker's delayed ACK (40 ms)
    broker = stub.Broker(tmp_path)
    broker.start()
    uplink = MqttUplink(GW, MqttSettings(host=broker.host, port=broker.port, tls=None))
    try:
        uplink.start()
        wait_for(lambda: uplink.connected, "connect")
        sock = uplink._client.socket()  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        uplink.stop()
        broker.stop()


def test_mqtt_unreadable_password_file_fails_at_start(tmp_path: Path) -> None:
    settings = MqttSettings(
        host="127.0.0.1", port=1, tls=None, username=GW, password_file=tmp_path / "missing"
    )
    with pytest.raises(UplinkError, match="password file"):
        MqttUplink(GW, settings).start()


# ---- HTTPS specifics -------------------------------------------------------------------------


def test_https_with_tls_and_token(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret-token")
    port = stub.free_port()
    cloud = stub.Cloud(
        tmp_path, "http", "--port", str(port), "--token-file", str(token),
        "--tls-cert", str(cert), "--tls-key", str(key),
    )  # fmt: skip
    cloud.start()
    try:
        settings = HttpsSettings(url=f"https://127.0.0.1:{port}", token_file=token, ca_file=cert)
        uplink = HttpsUplink(GW, settings)
        acks: queue.SimpleQueue[Ack] = queue.SimpleQueue()
        uplink.on_ack = acks.put
        uplink.start()
        uplink.send(encode_batch(GW, records(1, 10)), 1, 10)
        assert acks.get(timeout=WAIT_S).ranges == [(1, 10)]
        uplink.stop()

        # A wrong token: the server refuses, the uplink counts as down.
        wrong = tmp_path / "wrong"
        wrong.write_text("nope")
        bad = HttpsUplink(GW, settings.model_copy(update={"token_file": wrong}), retry_min_s=5)
        states: queue.SimpleQueue[bool] = queue.SimpleQueue()
        bad.on_connection = states.put
        bad.start()
        bad.send(encode_batch(GW, records(11, 1)), 11, 11)
        assert states.get(timeout=WAIT_S) is False
        assert not bad.connected
        bad.stop()

        # An untrusted certificate is a transport failure, never a silent success.
        untrusted = HttpsUplink(GW, settings.model_copy(update={"ca_file": None}), retry_min_s=5)
        untrusted.on_connection = states.put
        untrusted.start()
        untrusted.send(encode_batch(GW, records(12, 1)), 12, 12)
        assert states.get(timeout=WAIT_S) is False
        untrusted.stop()
    finally:
        cloud.stop()
    assert sorted(cloud.seqs()) == list(range(1, 11))
