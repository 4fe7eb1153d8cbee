"""The gateway config: the buffer's group-commit interval (``buffer.commit_interval_s``)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.agent import COMMIT_INTERVAL_S, Agent
from edge_agent.config import load_config, parse_config
from edge_agent.errors import ConfigError

ROOT = Path(__file__).parents[3]


def document(tmp_path: Path, **buffer: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "gateway": {"id": "gw"},
        "buses": [{"id": "bus", "type": "tcp", "host": "127.0.0.1", "port": 5020}],
        "devices": [{"id": "cc-1", "bus": "bus", "unit_id": 1, "profile": "ew-cc100"}],
        "models": {"dir": str(tmp_path / "models")},
        "buffer": {"path": str(tmp_path / "buffer.sqlite"), **buffer},
        "uplink": {"https": {"url": "https://example.invalid"}},
    }


def test_the_default_is_the_agents_10_ms(tmp_path: Path) -> None:
    loaded = parse_config(document(tmp_path))
    assert loaded.config.buffer.commit_interval_s == COMMIT_INTERVAL_S == 0.01


@pytest.mark.parametrize("value", [0, 0.001, 0.05, 0.5, 1])
def test_an_interval_from_0_to_1_s_is_taken(tmp_path: Path, value: float) -> None:
    loaded = parse_config(document(tmp_path, commit_interval_s=value))
    assert loaded.config.buffer.commit_interval_s == value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (-0.01, "greater than or equal to 0"),
        (1.5, "less than or equal to 1"),
        ("soon", "valid number"),
        (None, "valid number"),
    ],
)
def test_a_bad_interval_fails_at_start_up_naming_the_key(
    tmp_path: Path, value: object, why: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(document(tmp_path, commit_interval_s=value)))
    with pytest.raises(ConfigError, match=why) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert caught.value.key == "buffer.commit_interval_s"


def test_the_example_config_documents_the_interval() -> None:
    example = ROOT / "deploy" / "gateway" / "agent.example.yaml"
    assert "commit_interval_s" in example.read_text()
    assert load_config(example).config.buffer.commit_interval_s == COMMIT_INTERVAL_S


def test_the_agent_commits_at_the_configured_interval(tmp_path: Path) -> None:
    uplink = types.SimpleNamespace(gateway_id="gw")
    configured = parse_config(document(tmp_path, commit_interval_s=0.25), base_dir=tmp_path)
    agent = Agent(configured, uplink=uplink)  # type: ignore[arg-type]
    try:
        assert agent.commit_interval_s == 0.25
    finally:
        agent.store.close()
    default = parse_config(document(tmp_path), base_dir=tmp_path)
    agent = Agent(default, uplink=uplink, commit_interval_s=0.0)  # type: ignore[arg-type]
    try:
        assert agent.commit_interval_s == 0.0  # an explicit argument wins
    finally:
        agent.store.close()
