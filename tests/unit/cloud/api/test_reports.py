"""``/v1/clients/{client_id}/reports`` and ``/v1/reports/{report_id}``: generate a report on
demand, fetch it in every format, and nobody but its client's manager (and staff) sees it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session
from support.registry_world import World
from unit.cloud.api.conftest import Headers, TestClient

from cloud.db import session_scope
from cloud.reports import service
from cloud.reports.period import Month
from cloud.reports.render import TABLES

Login = Callable[[str], Headers]
FILES = {
    "html": ("report.html", "text/html; charset=utf-8"),
    "pdf": ("report.pdf", "application/pdf"),
    "json": ("report.json", "application/json"),
    "csv_zip": ("report.csv.zip", "application/zip"),
}


def assert_error(r: Any, status: int, code: str, detail: str = "") -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and detail in str(body["detail"]), body


def test_generate_fetch_every_format_and_hide_it_from_other_clients(
    client: TestClient, login: Login, world: World
) -> None:
    a, b = world.a, world.b
    fm_a, fm_b = login(a.manager_email), login(b.manager_email)
    r = client.post(f"/v1/clients/{a.client_id}/reports", json={"month": "2026-01"}, headers=fm_a)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert (accepted["month"], accepted["status"], accepted["client_id"]) == (
        "2026-01",
        "generating",
        a.client_id,
    )
    assert accepted["requested_by"] == f"user:{a.manager_id}" and accepted["links"] == {}
    report_id = accepted["id"]

    r = client.get(f"/v1/reports/{report_id}", headers=fm_a)
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["status"] == "ready" and meta["error"] is None, meta
    assert meta["summary"]["kwh"] == 15.0  # the seeded readings: 100, 105, 110, 115 kWh
    assert set(meta["links"]) == set(FILES)

    for fmt, (name, media_type) in FILES.items():
        r = client.get(meta["links"][fmt], headers=fm_a)
        assert r.status_code == 200, (fmt, r.text[:200])
        assert r.headers["content-type"] == media_type
        assert name in r.headers["content-disposition"]
        if fmt == "html":
            assert "Client Alpha" in r.text and "<script" not in r.text
            assert r.headers["content-security-policy"].startswith("default-src 'none'")
        elif fmt == "pdf":
            assert r.content.startswith(b"%PDF-")
        elif fmt == "json":
            doc = r.json()
            assert (doc["client_name"], doc["totals"]["kwh"]) == ("Client Alpha", 15.0)
            assert doc["sites"][0]["totals"]["total_cost"] == pytest.approx(15.0 * 0.38)
        else:
            names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
            assert sorted(names) == sorted(f"{t}.csv" for t in TABLES)

    listed = client.get(f"/v1/clients/{a.client_id}/reports", headers=fm_a)
    assert [x["id"] for x in listed.json()] == [report_id]
    for who in (world.admin_email, world.desk_email):
        assert client.get(f"/v1/reports/{report_id}", headers=login(who)).status_code == 200

    # Bravo's manager: nothing of Alpha's exists.
    assert_error(client.get(f"/v1/reports/{report_id}", headers=fm_b), 404, "not_found")
    for fmt in FILES:
        url = meta["links"][fmt]
        assert_error(client.get(url, headers=fm_b), 404, "not_found")
    assert_error(client.get(f"/v1/clients/{a.client_id}/reports", headers=fm_b), 404, "not_found")
    r = client.post(f"/v1/clients/{a.client_id}/reports", json={"month": "2026-01"}, headers=fm_b)
    assert_error(r, 404, "not_found")
    assert client.get(f"/v1/clients/{b.client_id}/reports", headers=fm_b).json() == []


def test_bad_requests(client: TestClient, login: Login, world: World) -> None:
    fm = login(world.a.manager_email)
    url = f"/v1/clients/{world.a.client_id}/reports"
    assert_error(client.post(url, json={"month": "2026-13"}, headers=fm), 422, "invalid_input",
                 "month 13 is not 01 to 12")  # fmt: skip
    assert_error(client.post(url, json={"month": "October"}, headers=fm), 422, "invalid_input")
    assert_error(client.post(url, json={"month": "2099-01"}, headers=fm), 422, "invalid_input",
                 "2099-01 has not ended yet at site 'alpha-site' (Asia/Dubai)")  # fmt: skip
    desk = login(world.desk_email)
    assert_error(client.post(url, json={"month": "2026-01"}, headers=desk), 403, "forbidden")
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(client.get(f"/v1/reports/{missing}", headers=fm), 404, "not_found")
    r = client.post(f"/v1/clients/{missing}/reports", json={"month": "2026-01"}, headers=fm)
    assert_error(r, 404, "not_found")


def test_a_failed_report_says_why_and_has_no_files(
    client: TestClient, login: Login, world: World
) -> None:
    admin = login(world.admin_email)
    r = client.post(
        f"/v1/clients/{world.a.client_id}/reports", json={"month": "2025-06"}, headers=admin
    )
    assert r.status_code == 202, r.text
    meta = client.get(f"/v1/reports/{r.json()['id']}", headers=admin).json()
    assert meta["status"] == "failed" and meta["links"] == {}
    assert "no energy-counter reading" in meta["error"]
    r = client.get(f"/v1/reports/{meta['id']}/report.pdf", headers=admin)
    assert_error(r, 409, "conflict", "has no outputs yet; it is failed: month: no energy")


def test_a_month_being_generated_is_not_started_twice(
    app: FastAPI, client: TestClient, login: Login, world: World
) -> None:
    with session_scope(app.state.sessionmaker) as s:
        assert isinstance(s, Session)
        service.claim(s, world.a.client_id, Month(2026, 1), "schedule", datetime.now(UTC))
    r = client.post(
        f"/v1/clients/{world.a.client_id}/reports",
        json={"month": "2026-01"},
        headers=login(world.a.manager_email),
    )
    assert_error(r, 409, "conflict", "is being generated")
    listed = client.get(
        f"/v1/clients/{world.a.client_id}/reports", headers=login(world.admin_email)
    ).json()
    assert [(x["status"], x["requested_by"]) for x in listed] == [("generating", "schedule")]
    assert json.dumps(listed)  # plain JSON
