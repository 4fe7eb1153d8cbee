"""``edgewatch-cloud``: migrate, the admin commands, and how settings errors are reported."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cloud.auth.passwords import verify_mosquitto_hash
from cloud.cli import main
from cloud.db import head_revision


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    for key in list(os.environ):
        if key.startswith("EDGEWATCH_CLOUD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EDGEWATCH_CLOUD_DATABASE_URL", url)
    return url


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> Any:
    code, out, err = run(capsys, monkeypatch, *argv, stdin=stdin)
    assert code == 0, err
    return json.loads(out)


def test_migrate_then_build_a_site_and_its_broker_files(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, monkeypatch, "migrate")
    assert code == 0 and f"at revision {head_revision()}" in out
    assert run(capsys, monkeypatch, "migrate")[0] == 0  # idempotent

    client = run_json(capsys, monkeypatch, "admin", "create-client", "Jumeirah Hotels")
    site = run_json(
        capsys, monkeypatch,
        "admin", "create-site", "--client", "Jumeirah Hotels", "--name", "Marina",
        "--kind", "hotel", "--floor-area", "42000", "--lat", "25.08", "--lon", "55.14",
        "--timezone", "Asia/Dubai",
        "--tariff-json", '{"kind": "flat", "currency": "AED", "price_per_kwh": 0.38}',
    )  # fmt: skip
    assert site["client_id"] == client["id"]
    user = run_json(
        capsys, monkeypatch,
        "admin", "create-user", "--email", "FM@Jumeirah.example", "--role", "facility_manager",
        "--client", client["id"], "--password-stdin",
        stdin="a long enough password\n",
    )  # fmt: skip
    assert (user["email"], user["client_id"]) == ("fm@jumeirah.example", client["id"])
    gateway = run_json(
        capsys, monkeypatch, "admin", "create-gateway", "--site", site["id"], "gw-dxb-1"
    )
    device = run_json(
        capsys, monkeypatch,
        "admin", "create-device", "--gateway", "gw-dxb-1", "--name", "cc-dxb-01",
        "--asset-type", "compressor", "--serial", "BZ-1", "--install-date", "2023-04-01",
        "--occupant-flag", "vulnerable_occupant", "--criticality", "high",
    )  # fmt: skip
    assert device["gateway_id"] == gateway["id"]

    cred = run_json(capsys, monkeypatch, "admin", "gateway-credentials", "gw-dxb-1")
    assert cred["mqtt_username"] == "gw-dxb-1" and cred["secret"].startswith("ewg_")
    pw, acl = tmp_path / "mosquitto.passwd", tmp_path / "mosquitto.acl"
    files = run_json(
        capsys, monkeypatch,
        "admin", "mosquitto-files", "--password-file", str(pw), "--acl-file", str(acl),
        "--ingest-password-stdin",
        stdin="ingest-secret\n",
    )  # fmt: skip
    assert (files["gateway_usernames"], files["service_accounts"]) == (1, 1)
    lines = dict(line.split(":", 1) for line in pw.read_text().splitlines())
    assert verify_mosquitto_hash(cred["secret"], lines["gw-dxb-1"])
    assert verify_mosquitto_hash("ingest-secret", lines["_ingest"])
    assert "user gw-dxb-1\ntopic write edgewatch/v1/gw-dxb-1/up" in acl.read_text()

    revoked = run_json(
        capsys, monkeypatch, "admin", "revoke-credential", "gw-dxb-1", cred["credential_id"]
    )
    assert revoked["revoked_at"]
    run_json(
        capsys, monkeypatch,
        "admin", "mosquitto-files", "--password-file", str(pw), "--acl-file", str(acl),
        "--no-ingest",
    )  # fmt: skip
    assert pw.read_text() == ""


def test_secrets_are_not_logged(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level("DEBUG")
    run(capsys, monkeypatch, "migrate")
    run_json(capsys, monkeypatch, "admin", "create-client", "C")
    site = run_json(
        capsys,
        monkeypatch,
        "admin",
        "create-site",
        "--client",
        "C",
        "--name",
        "S",
        "--kind",
        "home",
    )
    run_json(capsys, monkeypatch, "admin", "create-gateway", "--site", site["id"], "gw-1")
    cred = run_json(capsys, monkeypatch, "-vv", "admin", "gateway-credentials", "gw-1")
    assert cred["secret"] not in caplog.text
    assert "gw-1" in caplog.text  # it did log the rotation


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["admin", "create-client", "X"], 1, "run `edgewatch-cloud migrate` first"),
    ],
)
def test_admin_before_migrate(
    env: str, argv: list[str], code: int, message: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    got, _, err = run(capsys, monkeypatch, *argv)
    assert got == code and message in err


def test_registry_refusals_and_bad_values(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, monkeypatch, "migrate")
    run_json(capsys, monkeypatch, "admin", "create-client", "C")
    code, _, err = run(capsys, monkeypatch, "admin", "create-client", "C")
    assert code == 1 and err.startswith("edgewatch-cloud: error: conflicts with existing data")
    code, _, err = run(
        capsys,
        monkeypatch,
        "admin",
        "create-site",
        "--client",
        "nope",
        "--name",
        "S",
        "--kind",
        "home",
    )
    assert code == 1 and "no client with id or name 'nope'" in err
    code, _, err = run(
        capsys, monkeypatch,
        "admin", "create-site", "--client", "C", "--name", "S", "--kind", "home",
        "--timezone", "Mars/Base",
    )  # fmt: skip
    assert code == 2 and "error: timezone: 'Mars/Base' is not an IANA time zone name" in err
    code, _, err = run(
        capsys, monkeypatch, "admin", "mosquitto-files", "--password-file", "p", "--acl-file", "a"
    )
    assert code == 2 and "--ingest-password-stdin" in err
    code, _, err = run(
        capsys, monkeypatch,
        "admin", "mosquitto-files", "--password-file", "p", "--acl-file", "a",
        "--ingest-user", "ingest", "--ingest-password-stdin",
        stdin="pw\n",
    )  # fmt: skip
    assert code == 2 and "must start with '_'" in err


def test_a_bad_setting_names_the_variable(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEWATCH_CLOUD_API_PORT", "99999")
    code, _, err = run(capsys, monkeypatch, "migrate")
    assert code == 2
    assert err.startswith("edgewatch-cloud: error: EDGEWATCH_CLOUD_API_PORT: ")
    monkeypatch.delenv("EDGEWATCH_CLOUD_API_PORT")
    env_file = tmp_path / "cloud.env"
    env_file.write_text("EDGEWATCH_CLOUD_ENVIRONMENT=production\n")
    code, _, err = run(capsys, monkeypatch, "--env-file", str(env_file), "migrate")
    assert code == 2 and "secret_key" in err and "refused outside development" in err
    code, _, err = run(capsys, monkeypatch, "--env-file", str(tmp_path / "missing.env"), "migrate")
    assert code == 2 and "error: --env-file: " in err
    monkeypatch.setenv("EDGEWATCH_CLOUD_DATABASE_URL", "mysql://db/x")
    code, _, err = run(capsys, monkeypatch, "migrate")
    assert code == 2 and "EDGEWATCH_CLOUD_DATABASE_URL: 'mysql' is not supported" in err
    monkeypatch.delenv("EDGEWATCH_CLOUD_DATABASE_URL")
    monkeypatch.setenv("EDGEWATCH_CLOUD_DELIVERY_TIMEOUT_S", "30")
    code, _, err = run(capsys, monkeypatch, "deliver", "--once")
    assert code == 2 and "delivery_lease_s: 60 s is shorter than three delivery timeouts" in err


def test_the_console_script_runs(env: str, tmp_path: Path) -> None:
    """The installed entry point, in its own process (settings from the environment)."""
    script = Path(sys.executable).with_name("edgewatch-cloud")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "cloud.cli"]
    done = subprocess.run(
        [*argv, "migrate"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"at revision {head_revision()}" in done.stdout
    bad = subprocess.run(
        [*argv, "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "EDGEWATCH_CLOUD_TOKEN_TTL_S": "5"},
    )
    assert bad.returncode == 2
    expected = "edgewatch-cloud: error: EDGEWATCH_CLOUD_TOKEN_TTL_S: Input should be greater"
    assert bad.stderr.startswith(expected)
