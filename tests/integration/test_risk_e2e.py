"""From a leaking compressor to one ticket at the service desk, through every real part.

A simulated gateway serves two compressors over Modbus TCP, one healthy and one whose
refrigerant starts leaking on day 8 and that fails five days later, at a hotel in a hot
climate; the simulator runs at 12,000x. The agent polls both every 5 simulated minutes,
fills 12-hour windows that slide every hour (what the shipped models were trained on),
scores them with the shipped compressor detector (signed with a test key) and ships
everything over MQTT through a real Mosquitto to ``edgewatch-cloud ingest``, which
stores it in the SQLite time-series store and acknowledges it. The risk scorer (the
shipped risk models) runs on its schedule and on anomaly requests, each device against
its own first week (the production default is two weeks); its work order goes through
the outbox and the delivery worker to a stand-in ServiceNow. The agent, the scorer and
the work orders keep simulated time; the delivery worker and the desk keep real time.

Exactly one work order (the leak) and exactly one incident are expected, before the
failure; the healthy compressor gets none. The test prints the lead time.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from support.agents import running_agent
from support.cloud_stub import free_port
from support.desk_vendors import SERVICENOW_PASSWORD, SERVICENOW_USER, FakeServiceNow
from support.models import Publisher
from support.processes import ingest_worker
from support.risk_sim import SITE
from support.workorder_world import DESK_SECRET

from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.delivery.worker import DeliveryWorker
from cloud.registry.models import Client, Device, Gateway, Site, SiteKind
from cloud.risk.models import RiskScore
from cloud.risk.scorer import RiskScorer, ScorerConfig
from cloud.settings import DEFAULT_MODELS_DIR
from cloud.tsdb.sqlite import SQLiteStore
from cloud.workorders.models import Desk, TicketRef, WorkOrder
from cloud.workorders.service import OrderPolicy
from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.models import MANIFEST_FILE, SIGNATURE_FILE, sign_manifest
from firmware_sim.clock import SimClock
from firmware_sim.engine import FleetSimulation
from firmware_sim.fleet import parse_fleet, profiles_of
from firmware_sim.groundtruth import GroundTruthEvent
from firmware_sim.modbus.server import ServerThread, SimServer, endpoint_configs
from models.runtime import RiskRuntime

pytestmark = pytest.mark.integration

SPEED = 12_000.0
"""Simulated seconds per wall second."""
POLL_S = 300.0
"""Simulated seconds between polls (the agent's period is POLL_S / SPEED wall seconds), and
the simulator's physics step: the shipped models were trained on 5-minute rows of
5-minute physics (``edgewatch-sim dataset --resolution 300``)."""
H = 3600.0
GW = "gw-risk"
START = datetime(2026, 6, 1, tzinfo=UTC)
BASELINE_DAYS = 7
ONSET = START + timedelta(days=8)
DAYS_TO_FAILURE = 5
FLEET: dict[str, Any] = {
    "schema_version": 1,
    "name": "risk-e2e",
    "seed": 23,
    "start": "2026-06-01T00:00:00Z",
    "clients": [
        {
            "id": "c1",
            "sites": [
                {
                    **SITE,
                    "gateways": [
                        {
                            "id": GW,
                            "devices": [
                                {
                                    "id": "cc-ok",
                                    "asset_type": "compressor",
                                    "variant": "split_ac",
                                    "profile": "ew-cc100",
                                    "unit_id": 1,
                                    "install_date": "2024-01-01",
                                    "rated_power_kw": 10.0,
                                },
                                {
                                    "id": "cc-leak",
                                    "asset_type": "compressor",
                                    "variant": "split_ac",
                                    "profile": "ew-cc100",
                                    "unit_id": 2,
                                    "install_date": "2024-01-01",
                                    "rated_power_kw": 10.0,
                                    "faults": [
                                        {
                                            "type": "refrigerant_leak",
                                            "onset": ONSET.isoformat().replace("+00:00", "Z"),
                                            "days_to_failure": DAYS_TO_FAILURE,
                                        }
                                    ],
                                },
                            ],
                        }
                    ],
                }
            ],
        }
    ],
}


def sign_shipped_detector(models_dir: Path, publisher: Publisher) -> None:
    """The shipped compressor detector, signed with ``publisher``'s key, as an operator
    signs it before shipping it to gateways."""
    folder = models_dir / "compressor"
    shutil.copytree(
        DEFAULT_MODELS_DIR / "compressor", folder, ignore=shutil.ignore_patterns("risk")
    )
    manifest = (folder / MANIFEST_FILE).read_bytes()
    (folder / SIGNATURE_FILE).write_bytes(sign_manifest(manifest, publisher.key).to_json())


def agent_config(tmp_path: Path, modbus_port: int, mqtt_port: int, points: list[str]) -> Path:
    publisher = Publisher()
    sign_shipped_detector(tmp_path / "models", publisher)
    everything = dict.fromkeys(points, "risk")
    config = {
        "schema_version": 1,
        "gateway": {"id": GW},
        "buses": [
            {"id": "sim", "type": "tcp", "host": "127.0.0.1", "port": modbus_port, "timeout_s": 1}
        ],
        "poll_groups": [
            {"name": "risk", "period_s": POLL_S / SPEED, "window_s": 12 * H, "hop_s": H}
        ],
        "devices": [
            {"id": d, "bus": "sim", "unit_id": u, "profile": "ew-cc100", "poll_groups": everything}
            for d, u in (("cc-ok", 1), ("cc-leak", 2))
        ],
        # Simulated time runs 12,000 times faster than the wall clock: a hiccup of the
        # machine must not read as a device offline for minutes.
        "alarms": {"offline_after_s": 30 * 86400},
        "models": {
            "dir": "models",
            "trusted_keys": [str(publisher.public_pem(tmp_path / "publisher.pem"))],
        },
        "buffer": {"path": "state/buffer.sqlite"},
        "uplink": {
            "mqtt": {
                "host": "127.0.0.1",
                "port": mqtt_port,
                "tls": None,
                "batch": {"max_delay_s": 0.02},
            }
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def registry(url: str, desk_url: str) -> dict[str, str]:
    """Client, site, gateway, the two compressors (registered at the simulation's start)
    and the client's ServiceNow desk; device name → registry id."""
    migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    ids: dict[str, str] = {}
    with sessions.begin() as s:
        client = Client(name="Gulf Hotels")
        s.add(client)
        s.flush()
        site = Site(
            client_id=client.id,
            name="Dubai Marina",
            kind=SiteKind.HOTEL,
            latitude=SITE["location"]["lat"],
            longitude=SITE["location"]["lon"],
            timezone=SITE["timezone"],
        )
        s.add(site)
        s.flush()
        s.add(Gateway(id=GW, site_id=site.id))
        s.flush()
        for name in ("cc-ok", "cc-leak"):
            device = Device(gateway_id=GW, name=name, asset_type="compressor", created_at=START)
            s.add(device)
            s.flush()
            ids[name] = device.id
        s.add(
            Desk(
                client_id=client.id,
                kind="servicenow",
                url=desk_url,
                username=SERVICENOW_USER,
                token=SERVICENOW_PASSWORD,
                secret=DESK_SECRET,
            )
        )
    engine.dispose()
    return ids


@contextmanager
def running(target: Any, name: str) -> Iterator[threading.Event]:
    """``target(stop)`` in a thread until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), f"{name} did not stop"


@pytest.mark.timeout(300)
def test_a_leak_becomes_one_work_order_and_one_ticket_before_the_failure(
    tmp_path: Path, mosquitto_broker: Any
) -> None:
    fleet = parse_fleet(FLEET, "<risk e2e>")
    profiles = profiles_of(fleet)
    failures: list[GroundTruthEvent] = []
    source = FleetSimulation(
        fleet,
        profiles,
        step_s=POLL_S,
        on_event=lambda e: failures.append(e) if e.event == "failure" else None,
    )
    clock = SimClock(fleet.start, SPEED)

    def sim_now() -> float:
        return clock.now().timestamp()

    server = SimServer(endpoint_configs(fleet.gateways(), profiles), source, clock, tick_s=0.02)
    desk = FakeServiceNow().start()
    db_url = f"sqlite:///{tmp_path / 'registry.db'}"
    ts_path = tmp_path / "timeseries.db"
    ids = registry(db_url, desk.url)
    env = os.environ | {
        "EDGEWATCH_CLOUD_DATABASE_URL": db_url,
        "EDGEWATCH_CLOUD_TSDB": "sqlite",
        "EDGEWATCH_CLOUD_TSDB_SQLITE_PATH": str(ts_path),
        "EDGEWATCH_CLOUD_MQTT_PORT": str(mosquitto_broker.port),
    }
    ingest = ingest_worker(env, tmp_path / "ingest.log", free_port())
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    store = SQLiteStore(ts_path)
    runtime = RiskRuntime.load(DEFAULT_MODELS_DIR)
    scorer = RiskScorer(
        sessions,
        store,
        runtime,
        OrderPolicy(),
        # every 2 simulated hours; requests (anomalous windows) looked at 20 times a second
        ScorerConfig(baseline_days=BASELINE_DAYS, interval_s=2 * H / SPEED, poll_s=0.05),
        clock=sim_now,
    )
    delivery = DeliveryWorker(sessions, timeout_s=5)
    points = [p.name for p in profiles["cc-ok"].points]
    ticket_at: float | None = None
    try:
        with ServerThread(server):
            port = int(server.endpoint(GW).port)  # type: ignore[attr-defined]
            agent = Agent(
                load_config(agent_config(tmp_path, port, mosquitto_broker.port, points)),
                health_every_s=86400,
                clock=sim_now,
            )
            with (
                running_agent(agent),
                running(scorer.run, "scorer"),
                running(lambda stop: delivery.run(stop, idle_s=0.05), "delivery"),
            ):
                deadline = ONSET.timestamp() + (DAYS_TO_FAILURE + 1) * 86400
                while not failures and sim_now() < deadline:
                    assert ingest.proc is not None and ingest.proc.poll() is None, ingest.tail()
                    if ticket_at is None and desk.incidents:
                        ticket_at = sim_now()
                    time.sleep(0.02)
                assert failures, "the simulated compressor never failed"
                time.sleep(2.0)  # what is in flight lands; a late order would show now
                depth = agent.store.depth()
    finally:
        ingest.stop()
        desk.stop()
        delivery.close()
        store.close()

    failed_at = failures[0].time.timestamp()
    assert failures[0].device_id == "cc-leak"
    with sessions() as s:
        orders = s.scalars(select(WorkOrder)).all()
        tickets = s.scalars(select(TicketRef)).all()
        scores = {
            name: s.execute(
                select(func.count(), func.max(RiskScore.p_alert)).where(RiskScore.device_id == id_)
            ).one()
            for name, id_ in ids.items()
        }
    engine.dispose()
    summary = {
        "orders": [
            (o.device_id == ids["cc-leak"], o.fault, o.opened_at.isoformat()) for o in orders
        ],
        "scores": {k: (n, p) for k, (n, p) in scores.items()},
        "failed_at": failures[0].time.isoformat(),
        "agent_buffer_depth": depth,
    }
    print(json.dumps(summary, indent=1, default=str))  # noqa: T201 - the log shows the run
    assert len(orders) == 1, f"expected one work order: {summary}"
    order = orders[0]
    assert order.device_id == ids["cc-leak"] and order.fault == "refrigerant_leak", summary
    opened = order.opened_at.replace(tzinfo=UTC).timestamp()
    assert ONSET.timestamp() < opened < failed_at, summary
    incidents = desk.incidents
    assert [i["correlation_id"] for i in incidents] == [order.id]  # one ticket, this order
    assert [(t.work_order_id, t.external_id) for t in tickets] == [
        (order.id, incidents[0]["sys_id"])
    ]
    assert ticket_at is not None and ticket_at < failed_at
    lead_h = (failed_at - ticket_at) / H
    print(  # noqa: T201 - the test log documents the lead time
        f"lead time: work order {(failed_at - opened) / H:.1f} h, "
        f"ticket {lead_h:.1f} h before the failure"
    )
    n_ok, alert_ok = scores["cc-ok"]  # the healthy compressor never reached the threshold
    assert n_ok > 0 and alert_ok is not None and alert_ok < runtime.threshold("compressor")
    assert depth <= 10  # the agent's buffer drained: everything was acknowledged
    assert not math.isnan(lead_h)
