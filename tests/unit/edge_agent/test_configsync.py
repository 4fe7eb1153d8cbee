"""Config changes over the downlink: only a signed, valid, newer config for this gateway
ever runs, and a broken one leaves the file's config running."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.models import Publisher

from edge_agent.configsync import (
    DOWNLINKED_CONFIG,
    DOWNLINKED_SIGNATURE,
    check_config_change,
    effective_config,
    install_config_change,
)
from edge_agent.errors import UpdateRefused
from edge_agent.models import sign_manifest


def config(version: int, **changes: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "config_version": version,
        "gateway": {"id": "gw-1"},
        "buses": [{"id": "b", "type": "tcp", "host": "127.0.0.1"}],
        "devices": [{"id": "d1", "bus": "b", "unit_id": 1, "profile": "ew-cc100"}],
        "models": {"dir": "models", "trusted_keys": ["keys/models.pub"]},
        "buffer": {"path": "state/buffer.sqlite"},
        "uplink": {"mqtt": {"host": "broker", "port": 1883, "tls": None}},
        **changes,
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Publisher]:
    publisher = Publisher()
    (tmp_path / "keys").mkdir()
    publisher.public_pem(tmp_path / "keys" / "models.pub")
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config(1)), encoding="utf-8")
    return path, publisher


def signed(publisher: Publisher, doc: dict[str, Any]) -> tuple[bytes, bytes]:
    data = yaml.safe_dump(doc).encode()
    return data, sign_manifest(data, publisher.key).to_json()


def test_a_signed_newer_config_is_kept_and_runs_at_the_next_start(
    setup: tuple[Path, Publisher],
) -> None:
    path, publisher = setup
    running = effective_config(path)
    assert running.config.config_version == 1
    newer = config(
        2,
        poll_groups=[
            {"name": n, "period_s": 2, "window_s": 60} for n in ("fast", "default", "slow")
        ],
    )
    document, signature = signed(publisher, newer)
    check_config_change(running, document, signature, source="downlink", version=2)
    kept = install_config_change(running, document, signature)
    assert kept == path.parent / "state" / DOWNLINKED_CONFIG
    after = effective_config(path)
    assert after.config.config_version == 2
    assert {g.period_s for g in after.config.poll_groups} == {2}
    assert after.base_dir == running.base_dir  # relative paths mean the same


class _Signer:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def sign(self, doc: dict[str, Any]) -> bytes:
        return self.sign_bytes(yaml.safe_dump(doc).encode())

    def sign_bytes(self, data: bytes) -> bytes:
        return sign_manifest(data, self.publisher.key).to_json()

    def signed(self, doc: dict[str, Any]) -> tuple[bytes, bytes]:
        data = yaml.safe_dump(doc).encode()
        return data, self.sign_bytes(data)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda p, doc: (yaml.safe_dump(doc).encode(), _Signer(Publisher()).sign(doc)),
            "unknown_key",
        ),
        (lambda p, doc: (yaml.safe_dump(doc).encode() + b"\n# x", p.sign(doc)), "bad_signature"),
        (lambda p, doc: p.signed({**doc, "config_version": 1}), "not_newer"),
        (lambda p, doc: p.signed({**doc, "gateway": {"id": "gw-2"}}), "wrong_gateway"),
        (
            lambda p, doc: p.signed(
                {**doc, "devices": [{"id": "d", "bus": "zz", "unit_id": 1, "profile": "ew-cc100"}]}
            ),
            "invalid",
        ),
        (lambda p, doc: (b"{", p.sign_bytes(b"{")), "malformed"),
        (lambda p, doc: (yaml.safe_dump(doc).encode(), b"not json"), "malformed"),
    ],
)
def test_a_config_change_that_may_not_run_is_refused_with_its_reason(
    setup: tuple[Path, Publisher], make: Any, reason: str
) -> None:
    path, publisher = setup
    running = effective_config(path)
    document, signature = make(_Signer(publisher), config(2))
    with pytest.raises(UpdateRefused) as err:
        check_config_change(running, document, signature, source="downlink")
    assert err.value.reason == reason


def test_a_tampered_or_torn_downlinked_config_leaves_the_file_config_running(
    setup: tuple[Path, Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    path, publisher = setup
    running = effective_config(path)
    install_config_change(running, *signed(publisher, config(2)))
    state = path.parent / "state"
    (state / DOWNLINKED_CONFIG).write_bytes((state / DOWNLINKED_CONFIG).read_bytes() + b"\n")
    with caplog.at_level(logging.WARNING, logger="edge_agent.configsync"):
        assert effective_config(path).config.config_version == 1
    assert "bad_signature" in caplog.text and str(path) in caplog.text
    (state / DOWNLINKED_SIGNATURE).unlink()  # a crash between the two writes
    assert effective_config(path).config.config_version == 1


def test_raising_the_version_in_the_file_wins_over_an_older_downlinked_config(
    setup: tuple[Path, Publisher],
) -> None:
    path, publisher = setup
    install_config_change(effective_config(path), *signed(publisher, config(2)))
    assert effective_config(path).config.config_version == 2
    path.write_text(yaml.safe_dump(config(3)), encoding="utf-8")
    assert effective_config(path).config.config_version == 3
