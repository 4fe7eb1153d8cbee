"""The broker configuration that ships, ``deploy/cloud/mosquitto.conf``, on a real Mosquitto.

Debian's ``mosquitto`` runs the file as it is, with only what must differ on a test
machine rewritten: the two listeners' ports (bound to loopback), the paths of the
certificate, key, password file, ACL file and persistence directory, and ``user`` (the
current user, who can read the temporary directory). The certificate is made here by a
throwaway CA; the password and ACL files are the ones ``edgewatch-cloud admin
mosquitto-files`` writes from a registry with two gateways. It shows that

- the broker accepts the file and opens both listeners;
- a gateway connects over TLS (the client checks the broker's certificate) with its own
  password, and a wrong password, no password, or plain MQTT on the TLS port get nowhere;
- a gateway publishes and reads only inside its own subtree;
- more than 1,000 QoS 1 messages queued for a disconnected persistent session all arrive
  when it comes back, across a broker restart (persistence); with Mosquitto's default
  queue limit the same run loses messages, which shows that the check can fail.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import os
import pwd
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import (
    LOOPBACK,
    MOSQUITTO,
    _accepts_tcp,
    _find_binary,
    _log_has,
    free_port,
    log_tail,
    start_process,
    start_with_retries,
    stop_process,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from integration.cloud.test_mosquitto_acl import INGEST_PASSWORD, INGEST_USER, QUIET_S, Conn
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.registry_world import World, seed_world

from edge_agent.protocol import INGEST_SHARED_FILTER, TOPIC_ROOT, ack_topic, up_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DEPLOYED = ROOT / "deploy" / "cloud" / "mosquitto.conf"
QUEUE_DIRECTIVES = ("max_queued_messages", "max_queued_bytes")
REWRITTEN = {
    "listener",
    "certfile",
    "keyfile",
    "password_file",
    "acl_file",
    "persistence_location",
    "user",
}
"""The directives whose values the test changes; every other line runs as shipped."""
QUEUED = 2_500
"""Messages queued for an offline session: well over Mosquitto's default limit of 1,000."""
SESSION_EXPIRY_S = 3600
_serial = itertools.count()
"""Distinct client ids and broker directories within the module."""


# ---- what the operator would have: a CA, a server certificate, the generated files ---------


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(workdir: Path) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("EdgeWatch test CA"))
        .issuer_name(_name("EdgeWatch test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.key_file.chmod(0o600)
    return pki


@dataclass(frozen=True)
class Setup:
    workdir: Path
    world: World
    pki: Pki
    password_file: Path
    acl_file: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    workdir = tmp_path_factory.mktemp("mosquitto-deploy")
    world = seed_world(f"sqlite:///{workdir / 'registry.db'}")
    password_file, acl_file = workdir / "edgewatch.passwd", workdir / "edgewatch.acl"
    # The command the operator runs (deploy/cloud/mosquitto.conf names it), as a process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_CLOUD_")}
    env["EDGEWATCH_CLOUD_DATABASE_URL"] = world.url
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "admin", "mosquitto-files",
         "--password-file", str(password_file), "--acl-file", str(acl_file),
         "--ingest-user", INGEST_USER, "--ingest-password-stdin"],
        input=f"{INGEST_PASSWORD}\n", capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Setup(workdir, world, make_pki(workdir), password_file, acl_file)


# ---- the shipped config with its paths and ports rewritten -----------------------------------


def adapt(conf: str, *, ports: dict[str, int], paths: dict[str, str], user: str) -> str:
    """``conf`` with each listener's port mapped through ``ports`` (and bound to loopback),
    the directives in ``paths`` pointed there and ``user`` replaced; every other line kept.
    Fails if the file's path and port directives are not exactly :data:`REWRITTEN`."""
    lines, seen = [], set()
    for line in conf.splitlines():
        words = line.split()
        key = words[0] if words and not words[0].startswith("#") else ""
        if key == "listener":
            line = f"listener {ports[words[1]]} {LOOPBACK}"
        elif key in paths:
            line = f"{key} {paths[key]}"
        elif key == "user":
            line = f"user {user}"
        if key in REWRITTEN:
            seen.add(key)
        lines.append(line)
    assert seen == REWRITTEN, f"the shipped file's path/port directives changed: {seen}"
    return "\n".join(lines) + "\n"


@dataclass
class DeployedBroker:
    """Mosquitto running the adapted file; :meth:`restart` keeps its ports and data."""

    binary: str
    workdir: Path
    conf: Path
    tls_port: int
    local_port: int
    ca_file: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.logs[-1]

    def start(self) -> None:
        self.starts += 1
        log = self.workdir / f"mosquitto-{self.starts}.log"
        self.logs.append(log)
        self.proc = start_process(
            [self.binary, "-c", str(self.conf)],
            name="mosquitto (deploy/cloud/mosquitto.conf)",
            log_path=log,
            cwd=self.workdir,
            is_ready=lambda: (
                _log_has(log, " running")
                and _accepts_tcp(LOOPBACK, self.tls_port)
                and _accepts_tcp(LOOPBACK, self.local_port)
            ),
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)  # SIGTERM: mosquitto saves its database on the way out
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def run_broker(setup: Setup, name: str, *, drop: tuple[str, ...] = ()) -> DeployedBroker:
    """Start the shipped config (without the directives in ``drop``) in a fresh directory."""
    binary = _find_binary(MOSQUITTO)
    workdir = setup.workdir / name
    (workdir / "data").mkdir(parents=True)
    shipped = DEPLOYED.read_text()
    kept = "\n".join(line for line in shipped.splitlines() if not line.startswith(drop))

    def start(attempt: int) -> tuple[subprocess.Popen[bytes], DeployedBroker]:
        tls_port, local_port = free_port(), free_port()
        conf = workdir / f"mosquitto-{attempt}.conf"
        conf.write_text(
            adapt(
                kept,
                ports={"8883": tls_port, "1883": local_port},
                paths={
                    "certfile": str(setup.pki.cert_file),
                    "keyfile": str(setup.pki.key_file),
                    "password_file": str(setup.password_file),
                    "acl_file": str(setup.acl_file),
                    "persistence_location": f"{workdir / 'data'}/",
                },
                user=pwd.getpwuid(os.getuid()).pw_name,
            )
        )
        broker = DeployedBroker(binary, workdir, conf, tls_port, local_port, setup.pki.ca_file)
        broker.start()
        assert broker.proc is not None
        return broker.proc, broker

    _proc, broker = start_with_retries(start, "mosquitto (deploy/cloud/mosquitto.conf)")
    assert isinstance(broker, DeployedBroker)
    return broker


@pytest.fixture
def broker(setup: Setup) -> Iterator[DeployedBroker]:
    b = run_broker(setup, f"shipped-{next(_serial)}")
    try:
        yield b
    finally:
        b.stop()


# ---- MQTT 5 clients, as the agent and the ingest workers are ----------------------------------


def _write_in_the_loop(_client: mqtt.Client, _userdata: object, _sock: object) -> None:
    """paho's ``on_socket_register_write``: set, paho leaves every write to the network
    thread instead of writing from whichever thread publishes."""


class Clients:
    def __init__(self, broker: DeployedBroker) -> None:
        self.broker = broker
        self.opened: list[Conn] = []

    def connect(
        self,
        username: str | None,
        password: str | None,
        *,
        tls: bool,
        client_id: str | None = None,
        session_expiry_s: int = 0,
    ) -> Conn:
        """A connection over TLS to the gateways' listener, or to the local one."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{username}-{next(_serial)}",
            protocol=mqtt.MQTTProtocolVersion.MQTTv5,
        )
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set_context(ssl.create_default_context(cafile=str(self.broker.ca_file)))
        client.max_inflight_messages_set(256)
        props = Properties(PacketTypes.CONNECT)
        if session_expiry_s:
            props.SessionExpiryInterval = session_expiry_s
        result: queue.Queue[str] = queue.Queue()
        client.on_connect = lambda _c, _u, _f, reason, _p: result.put(str(reason))
        conn = Conn(client, "")
        client.on_message = lambda _c, _u, msg: conn.messages.put((msg.topic, msg.payload))
        port = self.broker.tls_port if tls else self.broker.local_port
        client.connect(
            LOOPBACK, port, keepalive=30, clean_start=not session_expiry_s, properties=props
        )
        deadline = time.monotonic() + 5
        while result.empty() and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        conn.reason = result.get_nowait() if not result.empty() else "no CONNACK"
        if conn.ok:
            # loop_forever on a thread of our own, as in test_mosquitto_acl: loop_start would
            # replace (and leak) the wake-up socket pair that connect() made.
            conn.thread = threading.Thread(target=client.loop_forever, daemon=True)
            conn.thread.start()
            # paho does not know that thread is its network loop, so it would write a
            # publish from the caller's thread while the loop reads: two threads in one
            # OpenSSL connection, which corrupted the heap of a long soak. Set, this hook
            # leaves every write to the loop.
            client.on_socket_register_write = _write_in_the_loop
            self.opened.append(conn)
        else:
            client.disconnect()
        return conn

    def close(self) -> None:
        for conn in self.opened:
            conn.close()
        self.opened.clear()


@pytest.fixture
def clients(broker: DeployedBroker) -> Iterator[Clients]:
    c = Clients(broker)
    try:
        yield c
    finally:
        c.close()


def publish_all(conn: Conn, topic: str, payloads: list[bytes]) -> None:
    """QoS 1, all in flight at once as far as the windows allow; returns when acked. A
    connection lost on the way (a starved machine) is waited out, and what was not acked
    is published again, as a gateway does: QoS 1 may then deliver a payload twice."""
    pending = list(payloads)
    for _ in range(3):
        infos = [(p, conn.client.publish(topic, p, qos=1)) for p in pending]
        lost = []
        for payload, info in infos:
            try:
                info.wait_for_publish(timeout=30)
            except RuntimeError:
                lost.append(payload)
        if not lost:
            return
        pending = lost
        deadline = time.monotonic() + 30
        while not conn.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.1)
    raise AssertionError(f"{len(pending)} of {len(payloads)} messages were never acked")


def drain(conn: Conn, want: int, timeout: float) -> list[bytes]:
    """Payloads as they arrive, until ``want`` came, or nothing came for ``timeout`` s."""
    got: list[bytes] = []
    while len(got) < want:
        try:
            got.append(conn.messages.get(timeout=timeout)[1])
        except queue.Empty:
            break
    return got


# ---- the checks --------------------------------------------------------------------------------


def test_mosquitto_accepts_the_shipped_config_and_opens_both_listeners(
    broker: DeployedBroker,
) -> None:
    log = broker.log.read_text()
    assert f"Opening ipv4 listen socket on port {broker.tls_port}." in log
    assert f"Opening ipv4 listen socket on port {broker.local_port}." in log
    assert "Error" not in log, log_tail(broker.log)


def test_a_gateway_connects_over_tls_with_its_own_password_only(
    clients: Clients, broker: DeployedBroker, setup: Setup
) -> None:
    a, b = setup.world.a, setup.world.b
    assert clients.connect(a.gateway_id, a.gateway_secret, tls=True).ok
    assert not clients.connect(a.gateway_id, b.gateway_secret, tls=True).ok
    assert not clients.connect(a.gateway_id, "ewg_not-the-secret", tls=True).ok
    assert not clients.connect(None, None, tls=True).ok  # anonymous
    assert not clients.connect(INGEST_USER, "wrong", tls=False).ok

    # Plain MQTT on the TLS port: the broker answers a CONNECT with no CONNACK (0x20).
    with socket.create_connection((LOOPBACK, broker.tls_port), timeout=5) as sock:
        client_id = b"gw-plain"
        body = b"\x00\x04MQTT\x04\x02\x00\x1e" + len(client_id).to_bytes(2, "big") + client_id
        sock.sendall(bytes([0x10, len(body)]) + body)
        try:
            reply = sock.recv(4)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"\x20"), reply


def test_a_gateway_publishes_and_reads_only_inside_its_own_subtree(
    clients: Clients, setup: Setup
) -> None:
    a, b = setup.world.a, setup.world.b
    ingest = clients.connect(INGEST_USER, INGEST_PASSWORD, tls=False)
    assert ingest.ok, ingest.reason
    ingest.subscribe(INGEST_SHARED_FILTER)
    gw_a = clients.connect(a.gateway_id, a.gateway_secret, tls=True)
    assert gw_a.ok, gw_a.reason

    # Writing into B's subtree reaches nobody; A's own uplink, sent after, arrives first.
    gw_a.publish(up_topic(b.gateway_id), b"forged")
    gw_a.publish(up_topic(a.gateway_id), b"sentinel")
    assert ingest.expect(up_topic(a.gateway_id), b"sentinel") == []

    # Reading B's acks and downlink, or everything, yields only A's own.
    gw_a.subscribe(ack_topic(b.gateway_id))
    gw_a.subscribe(f"edgewatch/v1/{b.gateway_id}/down/#")
    gw_a.subscribe("edgewatch/v1/#")
    ingest.publish(ack_topic(b.gateway_id), b"ack-b")
    ingest.publish(f"edgewatch/v1/{b.gateway_id}/down/config", b"config-b")
    ingest.publish(ack_topic(a.gateway_id), b"ack-a")
    assert gw_a.expect(ack_topic(a.gateway_id), b"ack-a") == []
    time.sleep(QUIET_S)
    assert gw_a.messages.empty()


def _queue_for_an_offline_session(
    clients: Clients, setup: Setup, broker: DeployedBroker, *, restart: bool, quiet_s: float
) -> list[bytes]:
    """Park a persistent ingest session, publish :data:`QUEUED` QoS 1 messages from a
    gateway, (restart the broker), resume the session: the payloads that arrive before
    ``quiet_s`` passes without one."""
    a = setup.world.a
    client_id = "ingest-durable"
    parked = clients.connect(
        INGEST_USER, INGEST_PASSWORD, tls=False, client_id=client_id,
        session_expiry_s=SESSION_EXPIRY_S,
    )  # fmt: skip
    assert parked.ok, parked.reason
    parked.subscribe(f"{TOPIC_ROOT}/+/up")  # a subscription of its own, not the shared one
    clients.close()

    gateway = clients.connect(a.gateway_id, a.gateway_secret, tls=True)
    assert gateway.ok, gateway.reason
    publish_all(gateway, up_topic(a.gateway_id), [b"%d" % i for i in range(QUEUED)])
    clients.close()
    if restart:
        broker.restart()

    resumed = clients.connect(
        INGEST_USER, INGEST_PASSWORD, tls=False, client_id=client_id,
        session_expiry_s=SESSION_EXPIRY_S,
    )  # fmt: skip
    assert resumed.ok, resumed.reason
    return drain(resumed, QUEUED, timeout=quiet_s)


def test_more_than_a_thousand_queued_messages_all_arrive_across_a_restart(
    clients: Clients, setup: Setup, broker: DeployedBroker
) -> None:
    got = _queue_for_an_offline_session(clients, setup, broker, restart=True, quiet_s=5.0)
    assert set(got) == {b"%d" % i for i in range(QUEUED)}, (
        f"{len(set(got))} of {QUEUED} arrived; {log_tail(broker.log)}"
    )


def test_with_mosquittos_default_queue_limit_the_same_run_loses_messages(setup: Setup) -> None:
    """The control: the shipped file without its queue limits drops what the check above
    would miss."""
    broker = run_broker(setup, "default-queue", drop=QUEUE_DIRECTIVES)
    c = Clients(broker)
    try:
        got = _queue_for_an_offline_session(c, setup, broker, restart=False, quiet_s=3.0)
    finally:
        c.close()
        broker.stop()
    # Mosquitto keeps its default of 1,000 (2.0.11 delivers exactly that many) and drops the
    # rest without telling anyone.
    assert 1_000 <= len(set(got)) < QUEUED, len(got)
