"""The fault soak: the whole data path on real servers while everything that can break does.

Simulated gateways (``firmware_sim`` over Modbus TCP) are polled by ``edgewatch-agent run``
processes, one per gateway, each behind a TCP proxy of its own (``soak/proxy.py``) on the
way to Mosquitto running the shipped ``deploy/cloud/mosquitto.conf`` (TLS, a password per
gateway, the generated ACL, persistence). ``edgewatch-cloud ingest`` workers store what
arrives in a private InfluxDB, with the registry in a private PostgreSQL cluster, and ack
it; ``edgewatch-cloud scorer`` turns the major alarm each agent raises at start into work
orders. Meanwhile, one at a time in an order drawn from a seed, with quiet spells between:

- ``broker_kill``: Mosquitto SIGKILLed (nothing saved since its last autosave) and started
  again on the same ports with the same persistence folder;
- ``agent_kill``: one agent SIGKILLed and started again;
- ``net_cut``: one agent's proxy resets its connections and every new one for a while;
- ``net_stall``: one agent's proxy stops moving bytes without closing anything;
- ``influx_restart``: influxd SIGKILLed and started again (same port, same data);
- ``pg_restart``: the private PostgreSQL restarted (``pg_ctl restart -m fast``, or stopped
  ``-m immediate``, or its postmaster SIGKILLed, then started);
- ``rogue_payloads``: a gateway credential publishing garbage, a wrong schema, another
  gateway's batch, NaN, far-future timestamps... (``soak/rogue.py``);
- ``foreign_topics``: a gateway's credential used on another gateway's topics.

Every kind comes once, in a shuffled order; then kinds are drawn at random until the soak's
time is up. Pass: every record every agent produced is stored exactly once (each agent's
buffer journals every seq it hands out; InfluxDB is read point by point), no seq reused,
nothing dropped; the rogue's good records stored, its bad ones refused with the right
reasons and counted; nothing of the foreign-topic attempts delivered or stored; at most
one open risk order per device and one per device and alarm (and orders were opened); and
at the end every process alive and answering, every agent's buffer drained.

Sizes come from the environment (``tests/soak/README.md`` shows a long run):
``EDGEWATCH_SOAK_SECONDS`` (90), ``EDGEWATCH_SOAK_GATEWAYS`` (3),
``EDGEWATCH_SOAK_WORKERS`` (ingest workers, 1), ``EDGEWATCH_SOAK_SEED`` (random, printed),
``EDGEWATCH_SOAK_REPORT`` (a path for the summary as JSON).

The module's other tests check the broker's doors on the same stack (plaintext,
anonymous, another gateway's topics) and that ``deploy/`` ships no default credential.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import _unavailable, log_tail
from soak.ledger import (
    IngestCounts,
    Journal,
    Key,
    add_journal,
    buffer_depth,
    ingest_counts,
    ping,
    read_journal,
    stored_keys,
    waiting_up_to,
)
from soak.proxy import FaultProxy
from soak.rogue import BATCH_LEVEL, ForeignResult, RogueResult, foreign_topics, rogue_payloads
from soak.stack import (
    INFLUX_DATABASE,
    INGEST_USER,
    ROGUE,
    Stack,
    device_names,
    gateway_id,
)
from sqlalchemy import func, select
from support.cloud_stub import free_port
from support.pg_cluster import RESTART_MODES
from support.processes import Process, die_with_parent, ingest_worker, scrape

from cloud.db import make_engine, make_sessionmaker
from cloud.risk.models import RiskRequest
from cloud.workorders.models import WorkOrder, open_key
from edge_agent.protocol import (
    INGEST_SHARED_FILTER,
    Ack,
    ack_topic,
    encode_ack,
    status_topic,
    up_topic,
)
from firmware_sim.clock import SimClock
from firmware_sim.engine import FleetSimulation
from firmware_sim.fleet import parse_fleet, profiles_of
from firmware_sim.modbus.server import ServerThread, SimServer, endpoint_configs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SHIPPED_BROKER_CONF = DEPLOY / "cloud" / "mosquitto.conf"


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise pytest.UsageError(f"{name}={raw!r}: at least {minimum:g}")
    return value


SOAK_SECONDS = _env_number("EDGEWATCH_SOAK_SECONDS", 90, 10)
GATEWAYS = int(_env_number("EDGEWATCH_SOAK_GATEWAYS", 3, 2))
WORKERS = int(_env_number("EDGEWATCH_SOAK_WORKERS", 1, 1))
SEED = int(os.environ.get("EDGEWATCH_SOAK_SEED") or secrets.randbelow(1_000_000))
REPORT = os.environ.get("EDGEWATCH_SOAK_REPORT")

POLL_S = 0.1
"""The counters' poll group: an energy record per device per poll."""
WINDOW_S = 5.0
LIVE_DEPTH = 100
"""An agent's buffer counts as drained at or below this many records (live ones in flight)."""
DRAIN_TIMEOUT_S = 240.0
"""How long the agents get to empty their buffers after the last fault (an agent that
backed off for a minute during a long outage takes that long to try again)."""
KINDS = (
    "broker_kill",
    "agent_kill",
    "net_cut",
    "net_stall",
    "influx_restart",
    "pg_restart",
    "rogue_payloads",
    "foreign_topics",
)
AGENT = (
    [str(Path(sys.executable).with_name("edgewatch-agent"))]
    if Path(sys.executable).with_name("edgewatch-agent").exists()
    else [sys.executable, "-m", "edge_agent.cli"]
)
"""``edgewatch-agent`` as installed beside this Python (the venv's console script)."""
ALARM = "soak_probe"
"""A major local alarm every agent raises on each device as it starts: each start asks the
scorer for a visit again, and the scorer must not open a second order for it."""


# ---- the stack, shared by the module's tests ---------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("soak"), GATEWAYS)
    try:
        try:
            s.start()
        except FileNotFoundError as exc:
            _unavailable(f"{exc}; run `make test` (installs the servers)")
        yield s
    finally:
        s.close()


# ---- security: fast checks on the same broker ---------------------------------------------------


def _mqtt_connect_packet(client_id: str, username: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with username and password, as plain bytes."""

    def text(value: str) -> bytes:
        raw = value.encode()
        return len(raw).to_bytes(2, "big") + raw

    body = b"\x00\x04MQTT\x04\xc2\x00\x1e" + text(client_id) + text(username) + text(password)
    size, length = bytearray(), len(body)
    while True:
        byte, length = length % 128, length // 128
        size.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x10" + bytes(size) + body


def test_plaintext_and_anonymous_connections_are_refused(stack: Stack) -> None:
    assert stack.broker is not None
    gw = stack.logins[gateway_id(0)]
    clients = stack.clients()
    try:
        assert clients.connect(gw.gateway_id, gw.secret, tls=True).ok  # the door does open
        assert not clients.connect(None, None, tls=True).ok  # anonymous, gateways' listener
        assert not clients.connect(None, None, tls=False).ok  # anonymous, local listener
        assert not clients.connect(gw.gateway_id, "ewg_guessed", tls=True).ok
        other = stack.logins[gateway_id(1)]
        assert not clients.connect(gw.gateway_id, other.secret, tls=True).ok
        assert not clients.connect(INGEST_USER, "ingest", tls=False).ok
    finally:
        clients.close()

    # A gateway's real credential in plain MQTT on the TLS port: no CONNACK (0x20), ever.
    packet = _mqtt_connect_packet("gw-plain", gw.gateway_id, gw.secret)
    with socket.create_connection(("127.0.0.1", stack.broker.tls_port), timeout=5) as sock:
        sock.sendall(packet)
        try:
            reply = sock.recv(16)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"\x20"), reply


def test_the_shipped_broker_listens_in_plaintext_only_on_loopback() -> None:
    """Every listener of deploy/cloud/mosquitto.conf has a certificate, or is bound to the
    loopback interface (the ingest workers' listener on the broker's own host); anonymous
    clients are refused and the password and ACL files are set."""
    blocks: list[dict[str, str]] = []
    settings: dict[str, str] = {}
    for line in SHIPPED_BROKER_CONF.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "listener":
            blocks.append({"port": words[1], "address": words[2] if len(words) > 2 else ""})
        elif blocks and words[0] in ("certfile", "keyfile"):
            blocks[-1][words[0]] = words[1]
        else:
            settings.setdefault(words[0], " ".join(words[1:]))
    assert blocks, "no listener in the shipped config"
    for block in blocks:
        assert "certfile" in block or block["address"] in ("127.0.0.1", "::1", "localhost"), (
            f"listener {block['port']} takes plaintext from the network"
        )
    assert settings.get("allow_anonymous") == "false"
    assert "allow_anonymous true" not in SHIPPED_BROKER_CONF.read_text()
    assert settings.get("password_file") and settings.get("acl_file")
    assert settings.get("per_listener_settings") == "false"  # the files hold for every listener


def test_a_gateway_cannot_read_or_write_another_gateways_topics(stack: Stack) -> None:
    a, b = stack.logins[gateway_id(0)], stack.logins[gateway_id(1)]
    clients = stack.clients()
    try:
        ingest = clients.connect(INGEST_USER, stack.ingest_password, tls=False)
        assert ingest.ok, ingest.reason
        ingest.subscribe(INGEST_SHARED_FILTER)
        ingest.subscribe("edgewatch/v1/+/status")
        gw_a = clients.connect(a.gateway_id, a.secret, tls=True, client_id="sec-a")
        gw_b = clients.connect(b.gateway_id, b.secret, tls=True, client_id="sec-b")
        assert gw_a.ok and gw_b.ok, (gw_a.reason, gw_b.reason)
        gw_b.subscribe(ack_topic(b.gateway_id))

        # A writes into B's subtree (batch, status, an ack that would make B delete its
        # buffer) and into the acks of its own: the broker passes none of it on. The
        # sentinels after them prove that ingest and B were listening all along.
        gw_a.publish(up_topic(b.gateway_id), b"forged-batch")
        gw_a.publish(status_topic(b.gateway_id), b"forged-status")
        gw_a.publish(ack_topic(b.gateway_id), encode_ack(Ack(b.gateway_id, [(1, 10**9)])))
        gw_a.publish(ack_topic(a.gateway_id), b"self-ack")
        gw_a.publish(up_topic(a.gateway_id), b"sentinel-a")
        assert ingest.expect(up_topic(a.gateway_id), b"sentinel-a") == []
        ingest.publish(ack_topic(b.gateway_id), b"ack-b")
        assert gw_b.expect(ack_topic(b.gateway_id), b"ack-b") == []

        # A subscribing to B's acks and downlink, or to every ack, hears only its own.
        for topic in (
            ack_topic(b.gateway_id),
            f"edgewatch/v1/{b.gateway_id}/down/#",
            "edgewatch/v1/+/ack",
        ):
            gw_a.subscribe(topic)
        ingest.publish(ack_topic(b.gateway_id), b"ack-b-2")
        ingest.publish(f"edgewatch/v1/{b.gateway_id}/down/config", b"config-b")
        ingest.publish(ack_topic(a.gateway_id), b"ack-a")
        assert gw_b.expect(ack_topic(b.gateway_id), b"ack-b-2") == []
        assert gw_a.expect(ack_topic(a.gateway_id), b"ack-a") == []
        time.sleep(0.5)
        assert gw_a.messages.empty()
    finally:
        clients.close()


# ---- security: what deploy/ ships ---------------------------------------------------------------

SECRET_WORDS = re.compile(
    r"pass(word|wd)?|pwd|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|credential",
    re.IGNORECASE,
)
PLACEHOLDER = "REPLACE-ME"
ASSIGNMENT = re.compile(
    r"""^\s*(?:-\s+)?(?:export\s+)?["']?(?P<key>[A-Za-z_][\w.-]*)["']?\s*(?:=|:)\s*(?P<value>.*?)\s*$"""
)
SPACED = re.compile(r"^\s*(?P<key>[A-Za-z_][\w.-]*)\s+(?P<value>[^\s#]+)\s*$")
"""``key value``, as in Mosquitto's and InfluxDB 1's config files."""
FLAG = re.compile(r"--(?P<key>[\w-]+)[ =](?P<value>\S+)")
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:(?P<value>[^@\s/]+)@", re.IGNORECASE)
REQUIRED_VAR = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?\?[^}]*)?\}$")
"""A compose variable with no default (``${X}``, ``${X:?message}``): the operator's own."""
NOT_A_SECRET = re.compile(
    r"""^(
        true|false|null|none|yes|no|~|
        \d+(\.\d+)?|                                     # a number (a TTL, a grace period)
        /[^\s]*|\.{0,2}/[^\s]*|                          # a path (a password file)
        \[.*\]|\{.*\}|\|\s*|>\s*                         # a list, a map, a block to follow
    )$""",
    re.VERBOSE,
)
COMMON_PASSWORDS = {
    "admin", "password", "passw0rd", "changeme", "change-me", "secret", "root", "toor",
    "edgewatch", "mosquitto", "postgres", "influxdb", "influx", "ingest", "test", "default",
    "guest", "letmein", "qwerty", "123456", "12345678", "1234",
}  # fmt: skip


def default_credentials(text: str) -> list[str]:
    """Lines of ``text`` that give a secret a value: anything but the ``REPLACE-ME``
    placeholder, a compose variable without a default, or what is plainly not a secret
    (a number, a path, a reference by name). Well-known passwords are reported wherever
    they are a secret's value, placeholders or not."""
    found: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        candidates: list[tuple[str, str]] = []
        m = ASSIGNMENT.match(line) or SPACED.match(line)
        if m:
            candidates.append((m["key"], m["value"]))
        candidates += [(f["key"], f["value"]) for f in FLAG.finditer(line)]
        candidates += [("url password", u["value"]) for u in URL_PASSWORD.finditer(line)]
        for key, raw in candidates:
            if not SECRET_WORDS.search(key):
                continue
            value = raw.split(" #", 1)[0].strip().strip("\"'")
            if value.lower() in COMMON_PASSWORDS:
                found.append(f"{n}: {key} = {value!r} (a well-known password)")
            elif (
                value in ("", PLACEHOLDER)
                or REQUIRED_VAR.match(value)
                or (key != "url password" and NOT_A_SECRET.match(value))
            ):
                continue
            elif "${" in value and not re.search(r"\$\{[A-Z_0-9]+:-", value):
                continue  # built of required variables (a URL with ${POSTGRES_PASSWORD:?...})
            else:
                found.append(f"{n}: {key} = {value!r}")
    return found


def test_the_credential_scan_finds_what_it_must() -> None:
    """The scan below fails on what someone might commit, and passes the placeholders."""
    bad = [
        "password=admin",
        "EDGEWATCH_CLOUD_MQTT_PASSWORD=hunter2-but-longer",
        "  EDGEWATCH_CLOUD_SECRET_KEY: c2VjcmV0LWtleS10aGF0LWlzLWxvbmctZW5vdWdo",
        'EDGEWATCH_CLOUD_DATABASE_URL: "postgresql+psycopg://edgewatch:s3cr3t@db:5432/x"',
        "      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-postgres}",
        "  INFLUXDB_ADMIN_PASSWORD: ${INFLUXDB_PASSWORD:-changeme-now}",
        "    - --ingest-password=letmein",
        "api_key = 'AKIA0123456789ABCDEF'",
        "remote_password hunter2-bridge",
    ]
    good = [
        "EDGEWATCH_CLOUD_SECRET_KEY=REPLACE-ME",
        '  EDGEWATCH_CLOUD_DATABASE_URL: "postgresql+psycopg://edgewatch:REPLACE-ME@pg:5432/e"',
        '    POSTGRES_PASSWORD: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"',
        '    X: "postgresql+psycopg://u:${POSTGRES_PASSWORD:?set it}@postgres:5432/edgewatch"',
        "    password_file: /etc/edgewatch/mqtt.password",
        "      automountServiceAccountToken: false",
        "EDGEWATCH_CLOUD_TOKEN_TTL_S=3600",
        "#EDGEWATCH_CLOUD_MQTT_PASSWORD=",
        "            - secretRef:",
        "      - --password-file",
        "password_file /etc/mosquitto/edgewatch.passwd",
    ]
    for line in bad:
        assert default_credentials(line), f"not flagged: {line}"
    for line in good:
        assert not default_credentials(line), f"flagged: {line}"


def test_no_default_credentials_anywhere_in_deploy() -> None:
    files = [p for p in sorted(DEPLOY.rglob("*")) if p.is_file()]
    assert len(files) >= 10, files
    findings = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        findings += [f"{path.relative_to(ROOT)}:{f}" for f in default_credentials(text)]
    assert not findings, "credentials shipped in deploy/:\n" + "\n".join(findings)


def test_the_placeholder_secret_key_is_refused_at_start_up(tmp_path: Path) -> None:
    """The one placeholder the cloud can recognise itself (deploy/ uses it for every
    secret): a process configured with it does not start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_CLOUD_")}
    env |= {
        "EDGEWATCH_CLOUD_ENVIRONMENT": "production",
        "EDGEWATCH_CLOUD_SECRET_KEY": PLACEHOLDER,
        "EDGEWATCH_CLOUD_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "migrate"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "secret_key" in done.stderr, done.stderr


# ---- the soak: the simulated fleet, the agents ------------------------------------------------


def fleet(gateways: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": "soak",
        "seed": 17,
        "start": "2026-07-01T00:00:00Z",
        "clients": [
            {
                "id": "c1",
                "sites": [
                    {
                        "id": "s1",
                        "kind": "hotel",
                        "floor_area_m2": 12000,
                        "location": {"lat": 25.1, "lon": 55.1},
                        "gateways": [
                            {
                                "id": gateway_id(g),
                                "devices": [
                                    {
                                        "id": name,
                                        "asset_type": "compressor",
                                        "variant": "split_ac",
                                        "profile": "ew-cc100",
                                        "unit_id": unit,
                                        "install_date": "2023-01-01",
                                        "rated_power_kw": 8,
                                    }
                                    for unit, name in enumerate(device_names(g), 1)
                                ],
                            }
                            for g in range(gateways)
                        ],
                    }
                ],
            }
        ],
    }


class AgentProcess:
    """``edgewatch-agent run`` for one gateway, behind its own proxy."""

    def __init__(self, index: int, workdir: Path, sim_port: int, proxy: FaultProxy, stack: Stack):
        assert stack.pki is not None
        self.gateway = gateway_id(index)
        self.proxy = proxy
        self.dir = workdir / self.gateway
        self.dir.mkdir(parents=True)
        password = self.dir / "mqtt.password"
        password.write_text(stack.logins[self.gateway].secret + "\n")
        password.chmod(0o600)
        self.buffer = self.dir / "state" / "buffer.sqlite"
        add_journal(self.buffer)
        config = {
            "schema_version": 1,
            "gateway": {"id": self.gateway},
            "buses": [
                {"id": "sim", "type": "tcp", "host": "127.0.0.1", "port": sim_port,
                 "timeout_s": 1}
            ],
            "poll_groups": [
                {"name": "fast", "period_s": 0.5, "window_s": WINDOW_S},
                {"name": "default", "period_s": 0.5, "window_s": WINDOW_S},
                {"name": "slow", "period_s": POLL_S, "window_s": WINDOW_S},
            ],
            "devices": [
                {"id": name, "bus": "sim", "unit_id": unit, "profile": "ew-cc100"}
                for unit, name in enumerate(device_names(index), 1)
            ],
            "alarms": {
                "thresholds": [
                    {"name": ALARM, "point": "ambient_temp", "above": -100.0,
                     "min_duration_s": 0, "severity": "major"}
                ],
                "offline_after_s": 3600,
            },
            "models": {"dir": "models"},
            "buffer": {"path": "state/buffer.sqlite"},
            "uplink": {
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": proxy.port,
                    "username": self.gateway,
                    "password_file": "mqtt.password",
                    "tls": {"ca_file": str(stack.pki.ca_file)},
                    "keepalive_s": 5,
                    "batch": {"max_delay_s": 0.05, "max_records": 200},
                }
            },
        }  # fmt: skip
        self.config = self.dir / "agent.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log = self.dir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*AGENT, "-v", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM; the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def depth(self) -> tuple[int, int]:
        return buffer_depth(self.buffer)

    def acked(self) -> int:
        depth, last = self.depth()
        return last - depth


# ---- the soak: faults ---------------------------------------------------------------------------


@dataclass
class Injected:
    kind: str
    target: str
    at_s: float
    took_s: float
    detail: str = ""


@dataclass
class Soak:
    stack: Stack
    agents: list[AgentProcess]
    workers: list[tuple[Process, int]]
    scorer: Process
    rng: random.Random
    t0: float = field(default_factory=time.monotonic)
    injected: list[Injected] = field(default_factory=list)
    rogue: list[RogueResult] = field(default_factory=list)
    foreign: list[ForeignResult] = field(default_factory=list)
    rogue_seq: int = 1

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def ingest_texts(self) -> list[str]:
        return [scrape(port) or "" for _, port in self.workers]

    def counts(self) -> IngestCounts:
        return ingest_counts(self.ingest_texts())

    def check_alive(self, context: str) -> None:
        """Every process that should be running is; the log of one that is not."""
        assert self.stack.pg is not None and self.stack.influx is not None
        for agent in self.agents:
            assert agent.alive, f"{agent.gateway} died ({context}):\n{log_tail(agent.log)}"
        for worker, _ in self.workers:
            assert worker.proc is not None and worker.proc.poll() is None, (
                f"an ingest worker died ({context}):\n{worker.tail()}"
            )
        assert self.scorer.proc is not None and self.scorer.proc.poll() is None, (
            f"the scorer died ({context}):\n{self.scorer.tail()}"
        )
        assert self.stack.broker_alive(), f"mosquitto died ({context})"
        assert self.stack.influx.running, f"influxd died ({context})"
        assert self.stack.pg.postmaster_pid() is not None, f"postgres died ({context})"

    def kinds(self) -> Iterator[str]:
        """Every kind once, shuffled; then kinds at random, as long as the caller asks."""
        first = list(KINDS)
        self.rng.shuffle(first)
        yield from first
        while True:
            yield self.rng.choice(KINDS)

    def run(self, seconds: float) -> None:
        for n, kind in enumerate(self.kinds()):
            if n >= len(KINDS) and self.elapsed() >= seconds:
                return
            time.sleep(self.rng.uniform(0.5, 4.0))  # a quiet spell: records flow normally
            self.check_alive(f"before fault {n + 1}, {kind}")
            started = time.monotonic()
            target, detail = getattr(self, f"_{kind}")()
            self.injected.append(
                Injected(kind, target, round(started - self.t0, 1),
                         round(time.monotonic() - started, 1), detail)
            )  # fmt: skip

    # Each fault returns (target, detail) once the system is whole again.

    def _broker_kill(self) -> tuple[str, str]:
        down = self.rng.uniform(0.3, 3.0)
        assert self.stack.broker is not None
        self.stack.kill_broker()
        time.sleep(down)
        self.stack.broker.start()  # same ports, same persistence folder
        return "mosquitto", f"down {down:.1f} s"

    def _agent_kill(self) -> tuple[str, str]:
        agent = self.rng.choice(self.agents)
        down = self.rng.uniform(0.2, 3.0)
        agent.kill9()
        time.sleep(down)
        agent.start()
        return agent.gateway, f"down {down:.1f} s"

    def _net_cut(self) -> tuple[str, str]:
        agent = self.rng.choice(self.agents)
        hold = self.rng.uniform(1.0, 6.0)
        agent.proxy.cut()
        time.sleep(hold)
        agent.proxy.heal()
        return agent.gateway, f"cut {hold:.1f} s"

    def _net_stall(self) -> tuple[str, str]:
        agent = self.rng.choice(self.agents)
        hold = self.rng.uniform(2.0, 12.0)  # either side of the 5 s keep-alive
        agent.proxy.stall()
        time.sleep(hold)
        agent.proxy.heal()
        return agent.gateway, f"stalled {hold:.1f} s"

    def _influx_restart(self) -> tuple[str, str]:
        assert self.stack.influx is not None
        down = self.rng.uniform(0.3, 3.0)
        self.stack.influx.kill()
        time.sleep(down)
        self.stack.influx.start()
        return "influxd", f"SIGKILL, down {down:.1f} s"

    def _pg_restart(self) -> tuple[str, str]:
        assert self.stack.pg is not None
        mode = self.rng.choice(RESTART_MODES)
        down = self.rng.uniform(0.2, 2.0)
        self.stack.pg.restart(mode, down_s=down)
        return "postgresql", mode if mode == "fast" else f"{mode}, down {down:.1f} s"

    def _rogue_payloads(self) -> tuple[str, str]:
        other = self.rng.choice(self.agents).gateway
        seq0 = self.rogue_seq
        self.rogue_seq += 100

        def counts() -> tuple[Counter[str], Counter[str]]:
            c = self.counts()
            return c.rejected_records, c.batches

        result = rogue_payloads(self.stack, seq0, other, counts)
        self.rogue.append(result)
        refused = sum(result.counted.values())
        return ROGUE, f"{len(BATCH_LEVEL)} non-batches, 1 mixed batch ({refused} refusals counted)"

    def _foreign_topics(self) -> tuple[str, str]:
        intruder, victim = self.rng.sample(self.agents, 2)
        by_gateway = {a.gateway: a for a in self.agents}
        result = foreign_topics(
            self.stack,
            intruder.gateway,
            victim.gateway,
            10**12 + 10 * len(self.foreign),
            lambda gw: by_gateway[gw].acked(),
        )
        self.foreign.append(result)
        return f"{intruder.gateway} -> {victim.gateway}", ", ".join(
            f"{t.split('/')[-1]}: {r}" for t, r in result.puback.items()
        )


# ---- the soak: checks -------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


@dataclass
class GatewayTally:
    produced: int
    delivered: int
    stored: int
    still_buffered: int
    missing: int
    extra: int
    reused_seqs: int
    gaps: int
    dropped: int
    key_collisions: int


def tally(
    journal: Journal, stored: Counter[Key], ids: dict[str, str]
) -> tuple[GatewayTally, list[str]]:
    """Compare one gateway's journal with its points; the problems found."""
    problems: list[str] = []
    gw = journal.gateway
    keys = {r[0]: journal.key(r, ids) for r in journal.records}
    per_key = Counter(keys.values())
    collisions = sum(n - 1 for n in per_key.values() if n > 1)
    delivered = Counter(k for s, k in keys.items() if s not in journal.buffered)
    everything = Counter(keys.values())
    missing = delivered - stored
    extra = stored - everything
    reused, gaps = journal.reused_seqs(), journal.gaps()
    dropped = sum(journal.dropped.values())
    t = GatewayTally(
        produced=len(set(journal.seqs)),
        delivered=sum(delivered.values()),
        stored=sum((stored & everything).values()),
        still_buffered=len(journal.buffered),
        missing=sum(missing.values()),
        extra=sum(extra.values()),
        reused_seqs=len(reused),
        gaps=len(gaps),
        dropped=dropped,
        key_collisions=collisions,
    )
    if reused:
        problems.append(f"{gw}: seqs handed out twice: {reused[:10]}")
    if gaps:
        problems.append(f"{gw}: seqs never journaled: {gaps[:10]}")
    if dropped:
        problems.append(f"{gw}: the buffer dropped records: {journal.dropped}")
    if collisions:
        same = sorted(s for s, k in keys.items() if per_key[k] > 1)
        problems.append(
            f"{gw}: {collisions} records share a point identity with another, so one overwrote "
            f"the other in the store (e.g. a window yielded twice), seqs {same[:10]}"
        )
    if missing:
        seqs = sorted(s for s, k in keys.items() if k in missing and s not in journal.buffered)
        problems.append(f"{gw}: {t.missing} acknowledged records not stored, seqs {seqs[:10]}")
    if extra:
        problems.append(f"{gw}: {t.extra} points no record accounts for, e.g. {list(extra)[:3]}")
    if t.produced < 50:
        problems.append(f"{gw}: only {t.produced} records produced: the agent hardly ran")
    return t, problems


@pytest.mark.timeout(int(SOAK_SECONDS) + 600)
def test_fault_soak(stack: Stack, tmp_path: Path) -> None:
    assert stack.pg is not None and stack.influx is not None and stack.broker is not None
    print(  # noqa: T201 - the seed, before anything can go wrong
        f"fault soak: seed {SEED} (EDGEWATCH_SOAK_SEED={SEED} repeats this order), "
        f"{SOAK_SECONDS:g} s, {GATEWAYS} gateways, {WORKERS} ingest worker(s)"
    )
    rng = random.Random(SEED)
    parsed = parse_fleet(fleet(GATEWAYS), "<soak>")
    profiles = profiles_of(parsed)
    server = SimServer(
        endpoint_configs(parsed.gateways(), profiles),
        FleetSimulation(parsed, profiles, step_s=60),
        SimClock(parsed.start, 60),
        tick_s=0.5,
    )
    env = stack.cloud_env()
    problems: list[str] = []
    summary: dict[str, Any] = {"seed": SEED, "seconds": SOAK_SECONDS, "gateways": GATEWAYS}
    with ExitStack() as cleanup:
        cleanup.enter_context(ServerThread(server))
        workers: list[tuple[Process, int]] = []
        for i in range(WORKERS):
            port = free_port()
            worker = ingest_worker(env, tmp_path / f"ingest-{i}.log", port)
            cleanup.callback(worker.stop)
            workers.append((worker, port))
        scorer = Process(
            [sys.executable, "-m", "cloud.cli", "scorer"], tmp_path / "scorer.log", env
        )
        scorer.start()
        cleanup.callback(scorer.stop)
        agents: list[AgentProcess] = []
        for g in range(GATEWAYS):
            gw = gateway_id(g)
            proxy = FaultProxy("127.0.0.1", stack.broker.tls_port, name=gw).start()
            cleanup.callback(proxy.close)
            sim_port = int(server.endpoint(gw).port)  # type: ignore[attr-defined]
            agent = AgentProcess(g, tmp_path, sim_port, proxy, stack)
            agent.start()
            cleanup.callback(agent.stop)
            agents.append(agent)
        soak = Soak(stack, agents, workers, scorer, rng)
        # Everyone reaches the cloud before the first fault.
        assert wait_for(lambda: all(a.acked() > 0 for a in agents), 90), [
            (a.gateway, a.depth(), log_tail(a.log, 5)) for a in agents
        ]
        soak.t0 = time.monotonic()
        soak.run(SOAK_SECONDS)
        summary["soak_s"] = round(soak.elapsed(), 1)

        # ---- the end: drained, healthy ----
        soak.check_alive("after the last fault")
        # Drained: everything produced until the faults ended has been acknowledged (the
        # uplink, the broker, ingest and the stores all work again); what is left is live.
        drain_started = time.monotonic()
        backlog = {a.gateway: a.depth()[1] for a in agents}
        drained = wait_for(
            lambda: all(waiting_up_to(a.buffer, backlog[a.gateway]) == 0 for a in agents),
            DRAIN_TIMEOUT_S,
        )
        summary["drain_s"] = round(time.monotonic() - drain_started, 1)
        depths = {a.gateway: a.depth()[0] for a in agents}
        summary["depth_at_end"] = depths
        if not drained:
            waiting = {a.gateway: waiting_up_to(a.buffer, backlog[a.gateway]) for a in agents}
            problems.append(
                f"backlogs not acknowledged within {DRAIN_TIMEOUT_S:.0f} s: {waiting} records "
                "from before the end of the faults still wait"
            )
        if any(d > LIVE_DEPTH for d in depths.values()):
            problems.append(f"buffers not drained: {depths} (at most {LIVE_DEPTH} in flight)")
        soak.check_alive("after draining")
        problems += healthy(soak)

        # Stop the agents the way systemd does; what they still hold stays in their buffers.
        exits = {a.gateway: a.stop() for a in agents}
        if any(code != 0 for code in exits.values()):
            problems.append(f"agents did not exit cleanly on SIGTERM: {exits}")
        time.sleep(1.0)  # acks of the last batches in flight land

        # ---- exactly once ----
        tallies: dict[str, GatewayTally] = {}
        for agent in agents:
            journal = read_journal(agent.gateway, agent.buffer)
            stored = stored_keys(stack.influx.url, INFLUX_DATABASE, agent.gateway)
            ids = stack.logins[agent.gateway].devices
            t, found = tally(journal, stored, ids)
            tallies[agent.gateway] = t
            problems += found
            forged = {k for f in soak.foreign if f.victim == agent.gateway for k in f.forged}
            if forged & set(stored):
                problems.append(f"{agent.gateway}: a forged batch from another gateway was stored")

        # ---- the rogue and the foreign topics ----
        problems += check_rogue(soak, stack)
        problems += check_foreign(soak)

        counts = soak.counts()  # every record has been handled by now

        # ---- work orders ----
        orders, open_doubled, requests_left = work_orders(stack)
        if open_doubled:
            problems.append(f"work orders doubled (open, per risk or alarm): {open_doubled}")
        if not orders:
            problems.append("no work order was opened: the alarm path never reached the scorer")
        if requests_left:
            problems.append(f"{requests_left} risk requests still waiting for the scorer")

        summary |= {
            "faults": [asdict(i) for i in soak.injected],
            "fault_counts": dict(Counter(i.kind for i in soak.injected)),
            "gateways_tally": {gw: asdict(t) for gw, t in tallies.items()},
            "records_produced": sum(t.produced for t in tallies.values()),
            "records_stored": sum(t.stored for t in tallies.values()),
            "duplicates": sum(t.extra + t.reused_seqs for t in tallies.values()),
            "missing": sum(t.missing for t in tallies.values()),
            "records_written_by_ingest": sum(counts.records.values()),
            "rejected_records_by_reason": dict(counts.rejected_records),
            "batches_by_outcome": dict(counts.batches),
            "store_errors": dict(counts.store_errors),
            "rogue_acks_rejected": dict(
                Counter(r for res in soak.rogue if res.ack for _, r in res.ack.rejected)
            ),
            "foreign": [
                {
                    "intruder": f.intruder,
                    "victim": f.victim,
                    "puback": f.puback,
                    "suback": f.suback,
                    "received": sorted(set(f.received)),
                    "retained_status_forged": f.retained_status_forged,
                }
                for f in soak.foreign
            ],
            "work_orders": orders,
            "proxies": {a.gateway: asdict(a.proxy.stats) for a in agents},
            "agent_starts": {a.gateway: a.starts for a in agents},
            "problems": problems,
        }
    print_summary(summary, tmp_path / "soak-summary.json")
    assert not problems, f"seed {SEED}:\n" + "\n".join(problems)


def healthy(soak: Soak) -> list[str]:
    """Every server answers, every process serves."""
    stack, problems = soak.stack, []
    assert stack.influx is not None and stack.pg is not None
    clients = stack.clients()
    try:
        gw = stack.logins[gateway_id(0)]
        if not clients.connect(gw.gateway_id, gw.secret, tls=True, client_id="health-gw").ok:
            problems.append("the broker refuses a gateway at the end")
        if not clients.connect(INGEST_USER, stack.ingest_password, tls=False).ok:
            problems.append("the broker refuses the ingest account at the end")
    finally:
        clients.close()
    if not ping(stack.influx.url):
        problems.append("InfluxDB does not answer /ping at the end")
    if not stack.pg.accepts_connections():
        problems.append("PostgreSQL refuses connections at the end")
    for worker, port in soak.workers:
        if scrape(port) is None:
            problems.append(f"ingest worker's metrics on {port} do not answer:\n{worker.tail()}")
    return problems


def check_rogue(soak: Soak, stack: Stack) -> list[str]:
    assert stack.influx is not None
    problems: list[str] = []
    if not soak.rogue:
        return ["the rogue never ran"]
    stored = stored_keys(stack.influx.url, INFLUX_DATABASE, ROGUE)
    good = Counter(k for r in soak.rogue for k in r.good.values())
    if stored != good:
        problems.append(
            f"the rogue's points: {sum(stored.values())} stored, {sum(good.values())} good "
            f"sent; bad ones stored {list(stored - good)[:3]}, good ones missing "
            f"{list(good - stored)[:3]}"
        )
    for r in soak.rogue:
        assert r.ack is not None
        got = dict(r.ack.rejected)
        if got != r.expected_rejected:
            problems.append(f"rogue ack rejected {got}, expected {r.expected_rejected}")
        acked = {s for a, b in r.ack.ranges for s in range(a, b + 1)}
        if acked != set(r.good):
            problems.append(f"rogue ack stored {sorted(acked)}, expected {sorted(r.good)}")
        want = Counter(r.expected_rejected.values())
        short = {k: (r.counted[k], n) for k, n in want.items() if r.counted[k] < n}
        if r.counted["batch:rejected"] < len(BATCH_LEVEL):
            short["batch:rejected"] = (r.counted["batch:rejected"], len(BATCH_LEVEL))
        if short:
            problems.append(f"ingest did not count the rogue's refusals (got, expected): {short}")
    return problems


def check_foreign(soak: Soak) -> list[str]:
    problems: list[str] = []
    if not soak.foreign:
        return ["the foreign-topic attempt never ran"]
    for f in soak.foreign:
        theirs = [t for t in f.received if f"/{f.victim}/" in t]
        if theirs:
            problems.append(f"{f.intruder} received {f.victim}'s messages: {theirs[:5]}")
        if f.retained_status_forged:
            problems.append(f"{f.intruder} replaced {f.victim}'s retained status")
        if f.victim_acked[1] <= f.victim_acked[0]:
            problems.append(
                f"{f.victim} was not acked while {f.intruder} listened: the check proves nothing"
            )
    return problems


def work_orders(stack: Stack) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """(every order, open orders per device's risk or device and alarm where more than one,
    requests left) once the scorer has handled what ingest asked of it."""
    engine = make_engine(stack.database_url)
    sessions = make_sessionmaker(engine)
    try:

        def pending() -> int:
            with sessions() as s:
                return int(s.scalar(select(func.count()).select_from(RiskRequest)) or 0)

        wait_for(lambda: pending() == 0, 60)
        with sessions() as s:
            rows = s.execute(
                select(
                    WorkOrder.device_id,
                    WorkOrder.fault,
                    WorkOrder.closed_at,
                    WorkOrder.number,
                    WorkOrder.source,
                )
            ).all()
        left = pending()
    finally:
        engine.dispose()
    open_per = Counter(open_key(d, f, source) for d, f, closed, _, source in rows if closed is None)
    doubled = {key: n for key, n in open_per.items() if n > 1}
    names = {i: n for login in stack.logins.values() for n, i in login.devices.items()}
    orders = [
        {"number": num, "device": names.get(d, d), "fault": f, "open": closed is None}
        for d, f, closed, num, _ in rows
    ]
    return sorted(orders, key=lambda o: o["number"]), doubled, left


def print_summary(summary: dict[str, Any], path: Path) -> None:
    lines = [
        f"== fault soak, seed {summary['seed']}: {summary.get('soak_s')} s of faults, "
        f"{summary.get('drain_s')} s to drain ==",
    ]
    for f in summary.get("faults", []):
        lines.append(
            f"  t={f['at_s']:>6.1f} s  {f['kind']:<15} {f['target']:<26} {f['took_s']:>5.1f} s"
            f"  {f['detail']}"
        )
    lines += [
        f"records produced {summary.get('records_produced')}, "
        f"stored {summary.get('records_stored')}, missing {summary.get('missing')}, "
        f"duplicates {summary.get('duplicates')}"
        f" (ingest wrote {summary.get('records_written_by_ingest')} records in all: resends "
        "after lost acks are stored again as the same points)",
        f"rejected records by reason: {summary.get('rejected_records_by_reason')}",
        f"batches by outcome: {summary.get('batches_by_outcome')}",
        f"work orders: {len(summary.get('work_orders', []))} "
        f"({sum(1 for o in summary.get('work_orders', []) if o['open'])} open): "
        + ", ".join(f"{o['device']} {o['fault']}" for o in summary.get("work_orders", [])),
        "problems: " + ("none" if not summary.get("problems") else str(len(summary["problems"]))),
    ]
    report = Path(REPORT) if REPORT else path
    report.write_text(json.dumps(summary, indent=1, default=str))
    lines.append(f"the whole summary (JSON): {report}")
    print("\n".join(lines))  # noqa: T201 - the soak's report
