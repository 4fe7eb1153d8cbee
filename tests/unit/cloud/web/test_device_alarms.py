"""The device page's alarm history: the device's local alarm events of the page's period,
newest first, in the site's time (Asia/Dubai, +04), never another device's; and the page
when the store cannot list them. Also the baseline warning that is logged once per site."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from unit.cloud.web.conftest import sign_in
from unit.cloud.web.dashboard_world import Dashboard

from cloud.app import create_app
from cloud.errors import StoreError
from cloud.registry.models import Site
from cloud.reports.errors import BaselineUnavailable
from cloud.settings import Settings
from cloud.tsdb.base import AlarmEvent, Point
from cloud.tsdb.sqlite import SQLiteStore
from cloud.web import routes, views

Browser = Callable[[str], TestClient]
NS = 1_000_000_000


@pytest.fixture
def now(dash: Dashboard, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The pages' clock: the world's ``now``."""
    monkeypatch.setattr(routes, "_now", lambda: dash.now)
    return dash.now


def write_alarms(path: Path, dash: Dashboard, device_id: str, events: list[AlarmEvent]) -> None:
    """``events`` as ingest stores them, for ``device_id`` of its tenant."""
    tenant = next(
        t for t in dash.world.tenants.values() if device_id in (t.device_id, t.device2_id)
    )
    tags = {"client": tenant.client_id, "site": tenant.site_id, "gateway": tenant.gateway_id}
    points = []
    for e in events:
        fields: dict[str, float | str] = {"state": e.state, "severity": e.severity}
        if e.value is not None:
            fields["value"] = e.value
        if e.detail is not None:
            fields["detail"] = e.detail
        points.append(
            Point("alarm", round(e.ts * NS), {**tags, "device": device_id, "name": e.name}, fields)
        )
    store = SQLiteStore(path)
    try:
        store.write(points)
    finally:
        store.close()


def local(ts: float) -> str:
    """How the page writes a time in Dubai (UTC+4 all year): its local day and clock."""
    at = datetime.fromtimestamp(ts, UTC) + timedelta(hours=4)
    return f"{at.day} {at:%b %Y}, {at:%H:%M}"


def alarm_rows(page: str) -> list[list[str]]:
    """The cells of the alarm history table, as text."""
    rows = re.findall(r"<tr data-alarm>(.*?)</tr>", page, re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in row] for row in cells]


def test_the_device_page_lists_its_alarms_newest_first_in_local_time(
    browser: Browser, dash: Dashboard, now: datetime, web_settings: Settings
) -> None:
    a, b = dash.world.a, dash.world.b
    t = now.timestamp()
    path = web_settings.tsdb_sqlite_path
    write_alarms(path, dash, a.device_id, [
        AlarmEvent(t - 3 * 86_400 - 600, "door_open", "raised", "minor", None, "door 2"),
        AlarmEvent(t - 3 * 86_400, "door_open", "cleared", "minor"),
        AlarmEvent(t - 1800, "high_pressure", "cleared", "major", 24.5),
        AlarmEvent(t - 10 * 86_400, "ancient_alarm", "raised", "major"),  # before the 7 days
    ])  # fmt: skip
    write_alarms(path, dash, a.device2_id, [AlarmEvent(t - 600, "fan_stall", "raised", "major")])
    write_alarms(path, dash, b.device_id, [AlarmEvent(t - 900, "bravo_trip", "raised", "major")])
    seeded = (int(now.timestamp()) // 3600 - 3) * 3600  # the world's raised high pressure

    fm = browser(a.manager_email)
    page = fm.get(f"/ui/devices/{a.device_id}").text
    assert "Alarm history over the last 7 days" in page
    assert alarm_rows(page) == [
        [local(t - 1800), "High pressure", "Cleared", "major", "24.5", "–"],
        [local(seeded), "High pressure", "Raised", "major", "27.5", "–"],
        [local(t - 3 * 86_400), "Door open", "Cleared", "minor", "–", "–"],
        [local(t - 3 * 86_400 - 600), "Door open", "Raised", "minor", "–", "door 2"],
    ]
    for theirs in ("Fan stall", "Bravo trip", "Ancient alarm"):
        assert theirs not in page
    assert "Only the newest" not in page

    month = fm.get(f"/ui/devices/{a.device_id}?span=30d").text
    assert "Alarm history over the last 30 days" in month
    assert [row[1] for row in alarm_rows(month)][-1] == "Ancient alarm"

    fan = fm.get(f"/ui/devices/{a.device2_id}").text
    assert [row[1:3] for row in alarm_rows(fan)] == [["Fan stall", "Raised"]]
    # Bravo's device is not Alpha's to see (its page is a 404, tested with the others).
    assert fm.get(f"/ui/devices/{b.device_id}").status_code == 404


def test_a_device_without_alarms_says_so(browser: Browser, dash: Dashboard, now: datetime) -> None:
    fm = browser(dash.world.a.manager_email)
    page = fm.get(f"/ui/devices/{dash.world.a.device2_id}").text
    assert alarm_rows(page) == []
    assert "The controller reported no alarm raised or cleared in this period." in page


def test_a_long_alarm_history_is_cut_at_200_rows_with_a_note(
    browser: Browser, dash: Dashboard, now: datetime, web_settings: Settings
) -> None:
    t = now.timestamp()
    events = [AlarmEvent(t - 60 * (k + 1), "flapping", "raised", "minor") for k in range(205)]
    write_alarms(web_settings.tsdb_sqlite_path, dash, dash.world.a.device2_id, events)
    fm = browser(dash.world.a.manager_email)
    page = fm.get(f"/ui/devices/{dash.world.a.device2_id}").text
    rows = alarm_rows(page)
    assert len(rows) == 200
    assert rows[0][0] == local(t - 60) and rows[-1][0] == local(t - 60 * 200)
    assert "Only the newest 200 alarm events of this period are listed." in page


class NoAlarms(SQLiteStore):
    """The store, refusing to list alarms."""

    def alarms(
        self, device: str, start: float, end: float, *, limit: int | None = 200
    ) -> list[AlarmEvent]:
        raise StoreError("alarm query refused")


def test_the_page_still_renders_when_the_store_cannot_list_alarms(
    web_settings: Settings, dash: Dashboard, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cloud.web.views")
    store = NoAlarms(web_settings.tsdb_sqlite_path)
    try:
        with TestClient(create_app(web_settings, store=store)) as c:
            assert getattr(sign_in(c, dash.world.a.manager_email), "status_code", None) == 303
            r = c.get(f"/ui/devices/{dash.world.a.device_id}")
            assert r.status_code == 200
            page = r.text
    finally:
        store.close()
    assert "The alarm history is unavailable right now." in page
    assert "Readings are unavailable right now" in page
    assert alarm_rows(page) == []
    assert "High pressure" in page and "27.5" in page  # the last alarm is still read
    assert 'id="chart-signal-0"' in page  # and so are the signals
    warned = [r for r in caplog.records if "failed reading the alarms" in r.getMessage()]
    assert [r.levelno for r in warned] == [logging.WARNING]


# ---- the baseline's warning ---------------------------------------------------------------------


class Flaky:
    """A baseline source that fails until told otherwise."""

    def __init__(self) -> None:
        self.failing = True

    def expected_kwh(self, site: Site, start: datetime, end: datetime) -> float | None:
        if self.failing:
            raise BaselineUnavailable(f"site {site.id}: no outdoor temperature")
        return 100.0


def test_an_unavailable_baseline_is_a_warning_once_per_site_until_it_is_back(
    web_app: FastAPI,
    browser: Browser,
    dash: Dashboard,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(views, "NO_BASELINE", views.Repeats())
    source = Flaky()
    web_app.state.baselines = source
    caplog.set_level(logging.DEBUG, logger="cloud.web.views")
    a, b = dash.world.a, dash.world.b

    def records(site_id: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if f"baseline for site {site_id}" in r.getMessage()]

    def logged(site_id: str) -> list[int]:
        return [r.levelno for r in records(site_id)]

    fm = browser(a.manager_email)
    assert "baseline unavailable" in fm.get("/ui/").text
    assert "baseline unavailable" in fm.get("/ui/").text
    assert "The baseline is unavailable right now." in fm.get(f"/ui/sites/{a.site_id}").text
    assert logged(a.site_id) == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "(3 times)" in records(a.site_id)[-1].getMessage()
    # Another site warns once of its own.
    browser(b.manager_email).get("/ui/")
    assert logged(b.site_id) == [logging.WARNING]
    # Back, then gone again: a new warning.
    source.failing = False
    assert "the expected 100 kWh" in fm.get("/ui/").text
    source.failing = True
    fm.get("/ui/")
    fm.get("/ui/")
    assert logged(a.site_id)[3:] == [logging.WARNING, logging.DEBUG]


def test_repeats_count_runs_per_key_and_forget_them_on_success() -> None:
    repeats = views.Repeats(max_keys=2)
    assert [repeats.failed("a"), repeats.failed("a"), repeats.failed("b")] == [1, 2, 1]
    assert [repeats.failed("c"), repeats.failed("c")] == [1, 1]  # full: not remembered
    repeats.succeeded("a")
    assert [repeats.failed("a"), repeats.failed("b")] == [1, 2]
