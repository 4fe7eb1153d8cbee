"""``edgewatch-cloud scorer`` and the admin commands that set up the service business
(desks, depots, technicians, parts, stock), on a migrated SQLite registry."""

from __future__ import annotations

import io
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support.desk_vendors import FakeWebhookReceiver
from support.workorder_world import DESK_SECRET

from cloud.cli import main
from cloud.db import make_engine, make_sessionmaker
from cloud.desk.signing import secret_key
from cloud.registry.models import Site, site_shard
from cloud.risk.models import RiskRequest
from cloud.workorders.models import Desk, Stock, Technician, WorkOrder


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    for key in list(os.environ):
        if key.startswith("EDGEWATCH_CLOUD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EDGEWATCH_CLOUD_DATABASE_URL", url)
    monkeypatch.setenv("EDGEWATCH_CLOUD_TSDB_SQLITE_PATH", str(tmp_path / "ts.db"))
    return url


@pytest.fixture
def sessions(url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> Any:
    code, out, err = run(capsys, monkeypatch, *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def migrated(url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated registry with client "Gulf Hotels"; its id."""
    assert run(capsys, monkeypatch, "migrate")[0] == 0
    return str(run_json(capsys, monkeypatch, "admin", "create-client", "Gulf Hotels")["id"])


def test_set_up_desks_depots_technicians_parts_and_stock(
    migrated: str,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = run_json(
        capsys, monkeypatch,
        "admin", "create-desk", "--client", "Gulf Hotels", "--kind", "webhook",
        "--url", "https://hooks.gulf.example/edgewatch",
    )  # fmt: skip
    assert hook["client_id"] == migrated and hook["kind"] == "webhook"
    assert len(secret_key(hook["secret"])) == 32  # whsec_ + 32 random bytes
    monkeypatch.setenv("SN_TOKEN", "sn-api-token-1")
    sn = run_json(
        capsys, monkeypatch,
        "admin", "create-desk", "--client", migrated, "--kind", "servicenow",
        "--url", "https://gulf.service-now.example", "--username", "edgewatch",
        "--token-env", "SN_TOKEN", "--option", "assignment_group=facilities",
        "--option", "close_code=Solved (Permanently)",
    )  # fmt: skip
    assert "sn-api-token-1" not in json.dumps(sn)
    assert sn["secret"] != hook["secret"]
    with sessions() as s:
        desk = s.get(Desk, sn["id"])
        assert desk is not None
        assert (desk.username, desk.token, desk.secret, desk.enabled) == (
            "edgewatch",
            "sn-api-token-1",
            sn["secret"],
            True,
        )
        assert desk.options == {
            "assignment_group": "facilities",
            "close_code": "Solved (Permanently)",
        }

    depot = run_json(
        capsys, monkeypatch, "admin", "create-depot", "--name", "Dubai depot",
        "--lat", "25.2", "--lon", "55.3",
    )  # fmt: skip
    tech = run_json(
        capsys, monkeypatch,
        "admin", "create-technician", "--name", "Omar Saleh",
        "--skills", "Refrigeration, f-gas,refrigeration", "--depot", "Dubai depot",
        "--lat", "25.1", "--lon", "55.2", "--email", "Omar@Example.com",
    )  # fmt: skip
    assert (tech["skills"], tech["depot_id"], tech["email"]) == (
        ["refrigeration", "f-gas"],
        depot["id"],
        "omar@example.com",
    )
    part = run_json(
        capsys, monkeypatch, "admin", "create-part", "--number", "RFG-R410A-5KG",
        "--name", "R410A 5 kg", "--unit-cost", "120",
    )  # fmt: skip
    assert part == {"number": "RFG-R410A-5KG", "name": "R410A 5 kg", "unit_cost": 120.0}
    stock = ("admin", "stock", "--depot", depot["id"], "--part", "RFG-R410A-5KG", "--on-hand")
    assert run_json(capsys, monkeypatch, *stock, "4")["on_hand"] == 4
    with sessions.begin() as s:  # an order holds one
        row = s.get(Stock, (depot["id"], "RFG-R410A-5KG"))
        assert row is not None
        row.reserved = 1
    again = run_json(capsys, monkeypatch, *stock, "2")  # a recount: the held one stays held
    assert (again["on_hand"], again["reserved"]) == (2, 1)
    with sessions() as s:
        assert s.scalars(select(Stock)).all() == [s.get(Stock, (depot["id"], "RFG-R410A-5KG"))]
        t = s.get(Technician, tech["id"])
        assert t is not None and (t.latitude, t.longitude, t.active) == (25.1, 55.2, True)


def test_bad_values_exit_2_naming_the_argument_and_refusals_1(
    migrated: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_json(
        capsys, monkeypatch, "admin", "create-depot", "--name", "D", "--lat", "0", "--lon", "0"
    )
    run_json(capsys, monkeypatch, "admin", "create-part", "--number", "P-1", "--name", "p")
    desk = f"admin create-desk --client {migrated} --url"
    tech = "admin create-technician --name T --depot D --lon 0"
    cases: list[tuple[str, int, str]] = [
        (f"{desk} ftp://x.example --kind webhook", 2, "url: expected an http(s) URL"),
        (f"{desk} https://u:p@x.example --kind webhook", 2, "url: credentials belong"),
        (f"{desk} https://x.example --kind webhook --option a=b", 2, "options.a: unknown"),
        (f"{desk} https://x.example --kind webhook --option ab", 2, "option: 'ab'"),
        (f"{desk} https://x.example --kind jira", 2, "username: the jira account email"),
        (f"{desk} https://x --kind jira --token-env NO_SUCH_VAR", 2, "--token-env"),
        ("admin create-desk --client nobody --kind webhook --url https://x", 1, "'nobody'"),
        (f"{tech} --skills refrigeration --lat 91", 2, "latitude: must be from -90"),
        (f"{tech} --skills 'Air Con!' --lat 0", 2, "skills: 'Air Con!'"),
        (f"{tech} --skills , --lat 0", 2, "skills: at least one"),
        (f"{tech} --skills hvac --lat 0 --email x", 2, "email: 'x'"),
        (f"{tech} --skills hvac --lat 0 --depot nowhere", 1, "no depot with id or name 'nowhere'"),
        ("admin create-depot --name ' ' --lat 0 --lon 0", 2, "name: is required"),
        ("admin create-depot --name D --lat 0 --lon 0", 1, "conflicts with existing data"),
        ("admin create-part --number 'bad part' --name p", 2, "number: 'bad part'"),
        ("admin create-part --number P-2 --name p --unit-cost -1", 2, "unit_cost: must be"),
        ("admin create-part --number P-1 --name p", 1, "conflicts with existing data"),
        ("admin stock --depot D --part P-1 --on-hand -1", 2, "on_hand: must be a whole number"),
        ("admin stock --depot D --part P-9 --on-hand 1", 1, "no part 'P-9'"),
    ]
    for line, code, message in cases:
        got, out, err = run(capsys, monkeypatch, *shlex.split(line))
        assert (got, out) == (code, ""), (line, err)
        assert err.startswith("edgewatch-cloud: error: ") and message in err, (line, err)


def test_scorer_once_on_an_empty_fleet(
    migrated: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, monkeypatch, "scorer", "--once")
    assert code == 0, err
    assert out.startswith("scorer 0/1: scheduled pass 0 devices, 0 scored, 0 learning, ")
    assert "request pass 0 devices" in out and out.count("\n") == 1
    code, out, _ = run(capsys, monkeypatch, "scorer", "--once", "--partition", "3/4")
    assert code == 0 and out.startswith("scorer 3/4: ")


def one_compressor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, client: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A site, its gateway and one compressor, made with the admin commands."""
    site = run_json(
        capsys, monkeypatch, "admin", "create-site", "--client", client, "--name", "Marina",
        "--kind", "hotel",
    )  # fmt: skip
    run_json(capsys, monkeypatch, "admin", "create-gateway", "--site", site["id"], "gw-1")
    device = run_json(
        capsys, monkeypatch, "admin", "create-device", "--gateway", "gw-1", "--name", "cc-1",
        "--asset-type", "compressor",
    )  # fmt: skip
    return site, device


def test_scorer_once_handles_an_alarm_request(
    migrated: str,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, device = one_compressor(capsys, monkeypatch, migrated)
    with sessions.begin() as s:
        shard = s.scalars(select(Site.shard).where(Site.id == site["id"])).one()
        assert shard == site_shard(site["id"])
        s.add(
            RiskRequest(
                device_id=device["id"],
                shard=shard,
                reason="alarm",
                detail={"name": "high_pressure", "severity": "critical", "state": "raised"},
            )
        )
    code, out, err = run(capsys, monkeypatch, "scorer", "--once")
    assert code == 0, err
    # no readings yet: the device is learning its baseline; the alarm opens an order
    assert "scheduled pass 1 devices, 0 scored, 1 learning" in out
    assert "orders: opened 1" in out
    with sessions() as s:
        order = s.scalars(select(WorkOrder)).one()
        assert (order.device_id, order.fault) == (device["id"], "alarm:high_pressure")
        assert s.scalars(select(RiskRequest)).all() == []  # handled


@pytest.mark.parametrize("partition", ["3/2", "0/0", "1", "a/b", "0/4096"])
def test_scorer_refuses_a_bad_partition(
    url: str, partition: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, monkeypatch, "scorer", "--once", "--partition", partition)
    assert (code, out) == (2, "")
    assert err.startswith(f"edgewatch-cloud: error: --partition: {partition!r}: expected I/N")


def test_scorer_before_migrate(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, monkeypatch, "scorer", "--once")
    assert code == 1 and "run `edgewatch-cloud migrate` first" in err


def test_scorer_with_an_unusable_models_dir(
    migrated: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEWATCH_CLOUD_MODELS_DIR", str(tmp_path / "no-models"))
    code, _, err = run(capsys, monkeypatch, "scorer", "--once")
    assert code == 2 and "EDGEWATCH_CLOUD_MODELS_DIR" in err


def test_deliver_once_sends_an_alarm_order_to_the_clients_webhook(
    migrated: str,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, device = one_compressor(capsys, monkeypatch, migrated)
    with FakeWebhookReceiver(DESK_SECRET) as desk:
        created = run_json(
            capsys, monkeypatch, "admin", "create-desk", "--client", migrated, "--kind",
            "webhook", "--url", desk.url,
        )  # fmt: skip
        with sessions.begin() as s:
            s.get_one(Desk, created["id"]).secret = DESK_SECRET
            s.add(
                RiskRequest(
                    device_id=device["id"],
                    shard=site_shard(site["id"]),
                    reason="alarm",
                    detail={"name": "high_pressure", "severity": "critical"},
                )
            )
        assert run(capsys, monkeypatch, "scorer", "--once")[0] == 0
        code, out, err = run(capsys, monkeypatch, "deliver", "--once")
        assert code == 0, err
        assert out.strip() == "deliver: 1 messages tried, 0 pending"
        (message,) = desk.deliveries.values()
        assert message["type"] == "work_order.created"
        assert message["data"]["fault"] == "alarm:high_pressure"
    assert run(capsys, monkeypatch, "deliver", "--workers", "0")[0] == 2
