"""``edgewatch-agent check`` and config errors, against the simulator over real TCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.cli import main as agent_main
from edge_agent.profiles import builtin_profiles
from firmware_sim.clock import SimClock
from firmware_sim.engine import FleetSimulation
from firmware_sim.fleet import parse_fleet, profiles_of
from firmware_sim.modbus.server import ServerThread, SimServer, endpoint_configs

pytestmark = pytest.mark.integration

FLEET: dict[str, Any] = {
    "schema_version": 1,
    "name": "cli",
    "seed": 2,
    "start": "2026-07-01T10:00:00Z",
    "clients": [
        {
            "id": "c1",
            "sites": [
                {
                    "id": "s1",
                    "kind": "home",
                    "floor_area_m2": 120,
                    "location": {"lat": 48.1, "lon": 11.6},
                    "gateways": [
                        {
                            "id": "gw",
                            "devices": [
                                {
                                    "id": "cc-1",
                                    "asset_type": "compressor",
                                    "variant": "split_ac",
                                    "profile": "ew-cc100",
                                    "unit_id": 1,
                                    "install_date": "2022-01-01",
                                    "rated_power_kw": 5,
                                },
                                {
                                    "id": "fan-1",
                                    "asset_type": "fan",
                                    "variant": "condenser",
                                    "profile": "ew-fc200",
                                    "unit_id": 2,
                                    "install_date": "2022-01-01",
                                    "rated_power_kw": 1,
                                },
                            ],
                        }
                    ],
                }
            ],
        }
    ],
}


@pytest.fixture
def sim() -> Iterator[SimServer]:
    fleet = parse_fleet(FLEET, "<cli>")
    profiles = profiles_of(fleet)
    server = SimServer(
        endpoint_configs(fleet.gateways(), profiles),
        FleetSimulation(fleet, profiles),
        SimClock.manual(fleet.start),
        tick_s=0.1,
    )
    with ServerThread(server):
        yield server


def write_config(tmp_path: Path, port: int, **changes: Any) -> Path:
    config: dict[str, Any] = {
        "schema_version": 1,
        "gateway": {"id": "gw"},
        "buses": [
            {"id": "sim", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.3}
        ],
        "devices": [
            {"id": "cc-1", "bus": "sim", "unit_id": 1, "profile": "ew-cc100"},
            {"id": "fan-1", "bus": "sim", "unit_id": 2, "profile": "ew-fc200"},
        ],
        "buffer": {"path": "state/buffer.sqlite"},
        "uplink": {"mqtt": {"host": "127.0.0.1", "port": 1, "tls": None}},
        **changes,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_check_reads_every_device_once_and_prints_a_table(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = int(sim.endpoint("gw").port)  # type: ignore[attr-defined]
    assert agent_main(["check", "--config", str(write_config(tmp_path, port))]) == 0
    out = capsys.readouterr().out
    assert "valid; gateway gw" in out and "all 2 devices read" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    assert set(rows) == {"cc-1", "fan-1"}
    assert rows["cc-1"][3] == "ew-cc100" and rows["cc-1"][6] == "0"  # no failed blocks
    cc = builtin_profiles()["ew-cc100"]
    assert f"{cc.points[0].name}=" in out  # a sample value, decoded


def test_check_names_the_device_that_does_not_answer_and_exits_1(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.faults("gw").add(2, "offline")
    port = int(sim.endpoint("gw").port)  # type: ignore[attr-defined]
    assert agent_main(["check", "--config", str(write_config(tmp_path, port))]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 devices could not be read completely: fan-1" in out
    assert "timeout" in out.lower()


def test_a_bad_config_names_the_file_key_and_why_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        tmp_path,
        5020,
        devices=[{"id": "cc-1", "bus": "nowhere", "unit_id": 1, "profile": "ew-cc100"}],
    )
    assert agent_main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"edgewatch-agent: error: {path}" in err
    assert "device cc-1: bus 'nowhere' is not one of ['sim']" in err
