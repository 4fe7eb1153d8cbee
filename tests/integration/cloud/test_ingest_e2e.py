"""Ingest end to end on real servers: gateway → Mosquitto → two ingest workers → InfluxDB → ack.

The gateway is the agent's own store-and-forward (SQLite buffer, forwarder, MQTT uplink)
in a producer process appending energy records at a steady rate; the workers are
``edgewatch-cloud ingest`` processes sharing one subscription; the registry is PostgreSQL.
At the end the store holds exactly the N records, each once, and the gateway's buffer is
empty (everything it sent was acknowledged). Killing a worker or InfluxDB mid-run must
not change that.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import cloud_stub as stub
from support.influx import RestartableInflux
from support.processes import Process, ingest_worker, scrape

from cloud.auth.gateways import issue_credential
from cloud.db import create_engine_from_settings, make_sessionmaker, migrate
from cloud.registry.models import Client, Device, Gateway, Site, SiteKind
from cloud.settings import Settings
from cloud.tsdb.influx import InfluxStore

pytestmark = pytest.mark.integration

N = 6000
RATE = 600.0  # records/s: about 10 s of producing

PRODUCER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edge_agent.config import BatchSettings, BufferSettings, HttpsSettings, MqttSettings
    from edge_agent.forwarder import Forwarder
    from edge_agent.store import RecordStore
    from edge_agent.uplink.https import HttpsUplink
    from edge_agent.uplink.mqtt import MqttUplink

    db, port, total, rate, gw, token = sys.argv[1:7]
    port, total, rate = int(port), int(total), float(rate)
    store = RecordStore(BufferSettings(path=Path(db)))
    if token == "-":
        uplink = MqttUplink(gw, MqttSettings(host="127.0.0.1", port=port, tls=None, keepalive_s=5),
                            reconnect_min_s=0.5, reconnect_max_s=1)
    else:
        uplink = HttpsUplink(gw, HttpsSettings(url=f"http://127.0.0.1:{port}",
                                               token_file=Path(token)),
                             retry_min_s=0.2, retry_max_s=1)
    forwarder = Forwarder(store, uplink, BatchSettings(max_records=100, max_delay_s=0.05),
                          ack_timeout_s=2.0)
    uplink.start()
    forwarder.start()
    t0 = time.time()
    chunk = 10
    next_t = time.monotonic()
    while (last := store.last_seq()) < total:
        k = min(chunk, total - last)
        store.append([(t0 + (last + j) * 1e-3, "energy", "cc-1",
                       {"values": {"energy": 100.0 + last + j}}) for j in range(k)])
        forwarder.notify()
        next_t += chunk / rate
        time.sleep(max(0.0, next_t - time.monotonic()))
    deadline = time.monotonic() + 60
    while store.depth() > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    s = store.stats()
    print(f"done depth={s.depth} last_seq={s.last_seq} dropped={s.dropped_total}", flush=True)
    forwarder.stop()
    uplink.stop()
    store.close()
    """
)


@dataclass
class Site_:
    settings: Settings
    env: dict[str, str]
    workdir: Path
    broker: stub.Broker
    influx: RestartableInflux
    gateway: str


@pytest.fixture
def site(tmp_path: Path, postgres_db: str, request: pytest.FixtureRequest) -> Iterator[Site_]:
    gateway = "gw-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40]
    broker = stub.Broker(tmp_path)
    broker.start()
    influx = RestartableInflux(tmp_path / "influx")
    influx.start()
    db_url = postgres_db.replace("postgresql://", "postgresql+psycopg://", 1)
    settings = Settings(
        database_url=db_url,
        tsdb="influxdb",
        influx_url=influx.url,
        influx_database="edgewatch_e2e",
        mqtt_port=broker.port,
    )
    migrate(settings)
    engine = create_engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        client = Client(name=f"client of {gateway}")
        s.add(client)
        s.flush()
        site_row = Site(client_id=client.id, name="plant", kind=SiteKind.OFFICE)
        s.add(site_row)
        s.flush()
        s.add(Gateway(id=gateway, site_id=site_row.id))
        s.add(Device(gateway_id=gateway, name="cc-1", asset_type="compressor"))
    engine.dispose()
    env = os.environ | {
        "EDGEWATCH_CLOUD_DATABASE_URL": db_url,
        "EDGEWATCH_CLOUD_TSDB": "influxdb",
        "EDGEWATCH_CLOUD_INFLUX_URL": influx.url,
        "EDGEWATCH_CLOUD_INFLUX_DATABASE": "edgewatch_e2e",
        "EDGEWATCH_CLOUD_MQTT_PORT": str(broker.port),
    }
    try:
        yield Site_(settings, env, tmp_path, broker, influx, gateway)
    finally:
        broker.stop()
        influx.stop()


def worker(site: Site_, name: str, metrics_port: int, processes: int = 1) -> Process:
    return ingest_worker(site.env, site.workdir / f"{name}.log", metrics_port, processes)


def site_log(proc: Process) -> str:
    return proc.tail()


def stored_batches(port: int) -> float:
    text = scrape(port) or ""
    found = re.search(
        r'^edgewatch_ingest_batches_total\{outcome="stored",transport="mqtt"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def producer(site: Site_, https: tuple[int, Path] | None = None) -> Process:
    """The gateway: over MQTT, or over HTTPS to ``(api port, token file)``."""
    port, token = (site.broker.port, "-") if https is None else (https[0], str(https[1]))
    argv = [sys.executable, "-c", PRODUCER, str(site.workdir / "buffer.sqlite"),
            str(port), str(N), str(RATE), site.gateway, token]  # fmt: skip
    return Process(argv, site.workdir / "producer.log")


def stored(site: Site_) -> int:
    store = InfluxStore.from_settings(site.settings)
    try:
        return store.count("energy", gateway=site.gateway)
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_two_workers_one_killed_mid_run_store_everything_once(site: Site_) -> None:
    port_a, port_b = stub.free_port(), stub.free_port()
    a, b = worker(site, "worker-a", port_a), worker(site, "worker-b", port_b)
    gateway = producer(site)
    try:
        gateway.start()
        time.sleep(N / RATE / 3)
        before_kill = stored_batches(port_a), stored_batches(port_b)
        a.kill()
        log = gateway.wait(90)
        after_b = stored_batches(port_b)
    finally:
        gateway.stop()
        a.stop()
        b.stop()
    assert before_kill[0] > 0 and before_kill[1] > 0, f"the load was not shared: {before_kill}"
    assert after_b > before_kill[1]
    assert f"done depth=0 last_seq={N} dropped=0" in log, log[-2000:]
    assert stored(site) == N


@pytest.mark.timeout(120)
def test_influxdb_killed_and_restarted_nothing_acked_is_missing(site: Site_) -> None:
    """Worker b is ``--workers 2``, a supervisor of two worker processes (the metrics of
    the first are scraped): they log as the CLI does, not a line per store write."""
    port_a, port_b = stub.free_port(), stub.free_port()
    a, b = worker(site, "worker-a", port_a), worker(site, "worker-b", port_b, processes=2)
    gateway = producer(site)
    try:
        gateway.start()
        time.sleep(N / RATE / 3)
        site.influx.kill()
        time.sleep(0.3)  # a write that was under way when it died has finished by now
        outage_started = stored_batches(port_a) + stored_batches(port_b)
        time.sleep(2.0)
        during = stored_batches(port_a) + stored_batches(port_b)
        site.influx.start()
        log = gateway.wait(90)
    finally:
        gateway.stop()
        a.stop()
        b.stop()
    assert during == outage_started, "batches were reported stored while InfluxDB was down"
    assert f"done depth=0 last_seq={N} dropped=0" in log, log[-2000:]
    assert stored(site) == N
    worker_logs = site_log(a) + site_log(b)
    assert "cannot store a batch now, retrying: InfluxDB" in worker_logs
    assert "HTTP Request" not in worker_logs, worker_logs[-2000:]


@pytest.mark.timeout(120)
def test_https_uplink_through_the_api_stores_everything_once(site: Site_) -> None:
    engine = create_engine_from_settings(site.settings)
    with make_sessionmaker(engine).begin() as s:
        secret = issue_credential(s, s.get_one(Gateway, site.gateway), grace_s=0).secret
    engine.dispose()
    token = site.workdir / "gateway.token"
    token.write_text(secret + "\n")
    port = stub.free_port()
    api = Process([sys.executable, "-m", "cloud.cli", "api", "--port", str(port)],
                  site.workdir / "api.log", site.env)  # fmt: skip
    api.start()
    deadline = time.monotonic() + 20
    while not _ready(port):
        assert api.proc is not None and api.proc.poll() is None, site_log(api)
        assert time.monotonic() < deadline, site_log(api)
        time.sleep(0.1)
    gateway = producer(site, (port, token))
    try:
        gateway.start()
        log = gateway.wait(90)
    finally:
        gateway.stop()
        api.stop()
    assert f"done depth=0 last_seq={N} dropped=0" in log, log[-2000:]
    assert stored(site) == N
    assert secret not in site_log(api)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False
