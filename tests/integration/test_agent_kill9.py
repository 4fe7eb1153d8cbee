"""Zero loss for the whole agent: ``edgewatch-agent run`` polling the simulator is
``kill -9``-ed again and again during a run of more than 10,000 records; every sequence
number it ever assigned is at the stand-in cloud or still in its buffer, none twice in
the buffer, none missing."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import cloud_stub as stub

from edge_agent.config import BufferSettings
from edge_agent.store import RecordStore
from firmware_sim.clock import SimClock
from firmware_sim.engine import FleetSimulation
from firmware_sim.fleet import parse_fleet, profiles_of
from firmware_sim.modbus.server import ServerThread, SimServer, endpoint_configs

pytestmark = pytest.mark.integration

GATEWAYS, PER_GATEWAY = 4, 10
TARGET = 10_000


def fleet() -> dict[str, Any]:
    gateways = []
    for g in range(GATEWAYS):
        devices = [
            {
                "id": f"cc-{g}-{u}",
                "asset_type": "compressor",
                "variant": "split_ac",
                "profile": "ew-cc100",
                "unit_id": u,
                "install_date": "2022-01-01",
                "rated_power_kw": 6,
            }
            for u in range(1, PER_GATEWAY + 1)
        ]
        gateways.append({"id": f"gw-{g}", "devices": devices})
    site = {
        "id": "s1",
        "kind": "mall",
        "floor_area_m2": 20000,
        "location": {"lat": 45.0, "lon": 9.0},
        "gateways": gateways,
    }
    return {
        "schema_version": 1,
        "name": "kill9",
        "seed": 9,
        "start": "2026-07-01T00:00:00Z",
        "clients": [{"id": "c1", "sites": [site]}],
    }


@contextmanager
def simulator() -> Iterator[dict[str, int]]:
    parsed = parse_fleet(fleet(), "<kill9>")
    profiles = profiles_of(parsed)
    server = SimServer(
        endpoint_configs(parsed.gateways(), profiles),
        FleetSimulation(parsed, profiles, step_s=60),
        SimClock(parsed.start, 60),
        tick_s=0.5,
    )
    with ServerThread(server):
        yield {g.id: int(server.endpoint(g.id).port) for g in parsed.gateways()}  # type: ignore[attr-defined]


def agent_config(tmp_path: Path, ports: dict[str, int], mqtt_port: int) -> Path:
    every = 0.1  # every point every 0.1 s: an energy record per device poll, ~400 records/s
    config = {
        "schema_version": 1,
        "gateway": {"id": "gw-kill9"},
        "buses": [
            {"id": gw, "type": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.5}
            for gw, port in ports.items()
        ],
        "poll_groups": [
            {"name": n, "period_s": every, "window_s": 5} for n in ("fast", "default", "slow")
        ],
        "devices": [
            {"id": f"cc-{g}-{u}", "bus": f"gw-{g}", "unit_id": u, "profile": "ew-cc100"}
            for g in range(GATEWAYS)
            for u in range(1, PER_GATEWAY + 1)
        ],
        "buffer": {"path": "state/buffer.sqlite"},
        "uplink": {
            "mqtt": {
                "host": "127.0.0.1",
                "port": mqtt_port,
                "tls": None,
                "keepalive_s": 5,
                "batch": {"max_delay_s": 0.05},
            }
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.timeout(150)
def test_kill_9_of_the_running_agent_loses_no_record(tmp_path: Path) -> None:
    broker = stub.Broker(tmp_path)
    broker.start()
    cloud = stub.Cloud(tmp_path, "mqtt", "--port", str(broker.port))
    cloud.start()
    log = (tmp_path / "agent.log").open("ab")
    proc: subprocess.Popen[bytes] | None = None

    def start(config: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    try:
        with simulator() as ports:
            config = agent_config(tmp_path, ports, broker.port)
            rng = random.Random(3)
            kills = 0
            deadline = time.monotonic() + 100
            while len(set(cloud.seqs())) < TARGET and time.monotonic() < deadline:
                proc = start(config)
                time.sleep(rng.uniform(1.5, 4.0))
                proc.kill()  # SIGKILL: no goodbye, no flush
                proc.wait(10)
                kills += 1
            assert kills >= 8, kills
            proc = start(config)  # a last run that drains what the killed ones left
            time.sleep(4)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        log.close()
        cloud.stop()
        broker.stop()
    delivered = set(cloud.seqs())
    with RecordStore(BufferSettings(path=tmp_path / "state" / "buffer.sqlite")) as store:
        last = store.last_seq()
        buffered = [r.seq for r in store.pending(limit=1_000_000)]
    assert len(buffered) == len(set(buffered))
    missing = set(range(1, last + 1)) - delivered - set(buffered)
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:10]}"
    assert delivered <= set(range(1, last + 1))
    assert len(delivered) >= TARGET, (len(delivered), last)
