"""Gateway credentials on a real Mosquitto: the generated password and ACL files do what
they promise.

A private broker runs with ``allow_anonymous false`` and the ``password_file`` and
``acl_file`` that ``cloud.auth.mosquitto`` renders from the registry (two tenants, one
gateway each, plus the ingest account). It proves that

- a gateway connects with its secret and publishes to its own ``up`` topic, which the
  ingest account's shared subscription receives; a wrong password is refused;
- gateway A cannot publish into B's subtree (ingest never receives it) nor read B's acks;
- after a rotation both secrets work during the grace period; once the old one expired,
  or the new one is revoked, and the files are regenerated and reloaded (SIGHUP), it is
  refused, and Mosquitto drops a session still connected with it.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy.orm import Session, sessionmaker
from support.cloud_stub import Broker
from support.registry_world import World, seed_world

from cloud.auth import Principal
from cloud.auth.mosquitto import ServiceAccount, mosquitto_files, write_files
from cloud.db import make_engine, make_sessionmaker
from cloud.registry import services
from edge_agent.protocol import INGEST_SHARED_FILTER, ack_topic, status_topic, up_topic

pytestmark = pytest.mark.integration

INGEST_USER, INGEST_PASSWORD = "_ingest", "ingest-password-for-tests"
QUIET_S = 0.5
"""How long a message that must not arrive is waited for (after a sentinel that must)."""


@dataclass
class Conn:
    client: mqtt.Client
    reason: str
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)

    @property
    def ok(self) -> bool:
        return self.reason == "Success"

    thread: threading.Thread | None = None

    def close(self) -> None:
        self.client.disconnect()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def subscribe(self, topic: str) -> None:
        done = queue.Queue[Any]()
        self.client.on_subscribe = lambda *args: done.put(args)
        self.client.subscribe(topic, qos=1)
        done.get(timeout=5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)

    def expect(self, topic: str, payload: bytes, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        """Wait for ``(topic, payload)``; return what arrived before it."""
        before: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if got == (topic, payload):
                return before
            before.append(got)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class Mqtt:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.opened: list[Conn] = []

    def connect(self, username: str, password: str) -> Conn:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{username}-{len(self.opened)}"
        )
        client.username_pw_set(username, password)
        result: queue.Queue[str] = queue.Queue()
        client.on_connect = lambda _c, _u, _f, reason, _p: result.put(str(reason))
        conn = Conn(client, "")
        client.on_message = lambda _c, _u, msg: conn.messages.put((msg.topic, msg.payload))
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        deadline = time.monotonic() + 5
        while result.empty() and time.monotonic() < deadline:
            client.loop(timeout=0.05)  # no thread until connected: a refusal ends here
        conn.reason = result.get_nowait()
        if conn.ok:
            # loop_forever, not loop_start: loop_start would replace (and leak) the wake-up
            # socket pair that connect() made.
            conn.thread = threading.Thread(target=client.loop_forever, daemon=True)
            conn.thread.start()
            self.opened.append(conn)
        else:
            client.disconnect()
        return conn

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return seed_world(f"sqlite:///{tmp_path / 'registry.db'}")


@pytest.fixture
def sessions(world: World) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(world.url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@dataclass
class Files:
    sessions: sessionmaker[Session]
    password_file: Path
    acl_file: Path
    broker: Broker | None = None

    def write(self, now: datetime | None = None) -> None:
        with self.sessions() as s:
            files = mosquitto_files(
                s, [ServiceAccount.ingest(INGEST_USER, INGEST_PASSWORD)], now=now
            )
        write_files(files, self.password_file, self.acl_file)
        if self.broker is not None and self.broker.proc is not None:
            self.broker.reload()
            time.sleep(0.3)  # mosquitto re-reads the files in its main loop


@pytest.fixture
def files(sessions: sessionmaker[Session], tmp_path: Path) -> Files:
    f = Files(sessions, tmp_path / "edgewatch.passwd", tmp_path / "edgewatch.acl")
    f.write()
    return f


@pytest.fixture
def broker(files: Files, tmp_path: Path) -> Iterator[Broker]:
    try:
        b = Broker(tmp_path, password_file=files.password_file, acl_file=files.acl_file)
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI=true: a missing server is a failure)")
        pytest.skip(f"{exc}; run `make test` or `apt-get install mosquitto`")
    files.broker = b
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def net(broker: Broker) -> Iterator[Mqtt]:
    m = Mqtt(broker)
    try:
        yield m
    finally:
        m.close()


def ingest(net: Mqtt) -> Conn:
    conn = net.connect(INGEST_USER, INGEST_PASSWORD)
    assert conn.ok, conn.reason
    conn.subscribe(INGEST_SHARED_FILTER)
    conn.subscribe("edgewatch/v1/+/status")
    return conn


def test_gateways_reach_only_their_own_subtree(net: Mqtt, world: World) -> None:
    a, b = world.a, world.b
    ing = ingest(net)
    gw_a = net.connect(a.gateway_id, a.gateway_secret)
    assert gw_a.ok, gw_a.reason
    gw_b = net.connect(b.gateway_id, b.gateway_secret)
    assert gw_b.ok, gw_b.reason

    # A's own uplink and status reach ingest.
    gw_a.publish(up_topic(a.gateway_id), b"batch-a")
    assert ing.expect(up_topic(a.gateway_id), b"batch-a") == []
    gw_a.publish(status_topic(a.gateway_id), b"online")
    assert ing.expect(status_topic(a.gateway_id), b"online") == []

    # A writing into B's subtree: dropped by the broker. The sentinel after it proves that
    # ingest was listening all along.
    gw_a.publish(up_topic(b.gateway_id), b"forged")
    gw_a.publish(status_topic(b.gateway_id), b"offline")
    gw_a.publish(ack_topic(a.gateway_id), b"self-ack")  # a gateway never writes acks
    gw_a.publish(up_topic(a.gateway_id), b"sentinel")
    assert ing.expect(up_topic(a.gateway_id), b"sentinel") == []

    # A subscribing to B's acks and downlink gets nothing; B gets its own.
    gw_a.subscribe(ack_topic(b.gateway_id))
    gw_a.subscribe(f"edgewatch/v1/{b.gateway_id}/down/#")
    gw_a.subscribe("edgewatch/v1/+/ack")
    gw_a.subscribe(ack_topic(a.gateway_id))
    gw_b.subscribe(ack_topic(b.gateway_id))
    ing.publish(ack_topic(b.gateway_id), b"ack-b")
    ing.publish(f"edgewatch/v1/{b.gateway_id}/down/config", b"config-b")
    ing.publish(ack_topic(a.gateway_id), b"ack-a")
    assert gw_b.expect(ack_topic(b.gateway_id), b"ack-b") == []
    assert gw_a.expect(ack_topic(a.gateway_id), b"ack-a") == []
    time.sleep(QUIET_S)
    assert gw_a.messages.empty()


def test_wrong_and_unknown_passwords_are_refused(net: Mqtt, world: World) -> None:
    assert net.connect(world.a.gateway_id, world.b.gateway_secret).reason == "Not authorized"
    assert net.connect(world.a.gateway_id, "ewg_not-the-secret").reason == "Not authorized"
    assert net.connect("gw-unknown", world.a.gateway_secret).reason == "Not authorized"
    assert net.connect(INGEST_USER, "wrong").reason == "Not authorized"


def test_rotation_grace_expiry_and_revocation(
    net: Mqtt, world: World, files: Files, sessions: sessionmaker[Session]
) -> None:
    a = world.a
    t0 = datetime.now(UTC)
    with sessions() as s:
        issued = services.rotate_gateway_credentials(
            s, Principal.system(), a.gateway_id, grace_s=3600, now=t0
        )
        s.commit()
    new_user, new_secret = issued.username, issued.secret
    assert new_user == f"{a.gateway_id}@2"

    # During the grace period: both credentials connect, both reach A's topics.
    files.write(now=t0)
    ing = ingest(net)
    old = net.connect(a.gateway_id, a.gateway_secret)
    new = net.connect(new_user, new_secret)
    assert (old.ok, new.ok) == (True, True)
    old.publish(up_topic(a.gateway_id), b"via-old")
    new.publish(up_topic(a.gateway_id), b"via-new")
    ing.expect(up_topic(a.gateway_id), b"via-old")
    ing.expect(up_topic(a.gateway_id), b"via-new")

    # After the grace period the regenerated files drop the old credential: refused, and the
    # session still connected with it is disconnected when the broker reloads the files.
    files.write(now=t0 + timedelta(seconds=3601))
    assert net.connect(a.gateway_id, a.gateway_secret).reason == "Not authorized"
    wait_until(lambda: not old.client.is_connected(), "the expired session is dropped")
    assert new.client.is_connected()
    new.publish(up_topic(a.gateway_id), b"new-after-expiry")
    assert ing.expect(up_topic(a.gateway_id), b"new-after-expiry") == []

    # Revocation: at once, on the next regeneration.
    with sessions() as s:
        services.revoke_gateway_credential(
            s, Principal.system(), a.gateway_id, issued.credential.id
        )
        s.commit()
    files.write()
    assert net.connect(new_user, new_secret).reason == "Not authorized"
    wait_until(lambda: not new.client.is_connected(), "the revoked session is dropped")
    assert net.connect(world.b.gateway_id, world.b.gateway_secret).ok  # B is untouched


def test_the_rendered_hash_is_what_mosquitto_passwd_would_accept(files: Files) -> None:
    """The broker starts with the files (the other tests connect through it); here the
    format is also checked with Mosquitto's own tool when it is installed."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    lines = files.password_file.read_text().splitlines()
    assert lines and all(line.split(":", 1)[1].startswith("$7$101$") for line in lines)
