"""The gateway deployment files: the example config is valid, the unit runs the agent
hardened, and the install script installs what the unit starts."""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

from edge_agent.config import load_config

ROOT = Path(__file__).parents[3]
GATEWAY = ROOT / "deploy" / "gateway"


def test_the_example_config_is_valid_and_uses_every_bus_type() -> None:
    loaded = load_config(GATEWAY / "agent.example.yaml")
    cfg = loaded.config
    assert {b.type for b in cfg.buses} == {"tcp", "rtu", "rtu_over_tcp"}
    assert set(loaded.profiles) == {d.id for d in cfg.devices}
    assert cfg.uplink.mqtt is not None and cfg.uplink.mqtt.tls is not None
    assert cfg.uplink.mqtt.password_file is not None  # per-gateway credentials, no default


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(GATEWAY / "edgewatch-agent.service")
    return parser


def test_the_unit_runs_the_agent_as_its_own_user_with_only_the_buffer_writable() -> None:
    service = _unit()["Service"]
    assert service["User"] == "edgewatch" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/edgewatch"
    assert service["CapabilityBoundingSet"] == ""
    assert service["Restart"] == "always"
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("/bin/edgewatch-agent") and exec_start[1] == "run"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["edgewatch-agent"] == "edge_agent.cli:main"


def test_the_install_script_installs_only_the_agent_extra_and_the_unit() -> None:
    script = (GATEWAY / "install.sh").read_text()
    assert '"$repo[agent]"' in script
    assert "edgewatch-agent.service" in script and "systemctl enable" in script
    assert (GATEWAY / "install.sh").stat().st_mode & 0o111
