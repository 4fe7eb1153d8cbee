"""The dashboard's pages for each role, tenant isolation, and what the pages link to."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from unit.cloud.web.conftest import csrf_of, sign_in
from unit.cloud.web.dashboard_world import Dashboard

from cloud.app import create_app
from cloud.db import make_engine
from cloud.errors import StoreUnavailable
from cloud.registry.models import Site
from cloud.settings import Settings
from cloud.tsdb.base import AlarmEvent, FeatureRow, Latest, SiteRollup, TimeSeriesStore
from cloud.tsdb.sqlite import SQLiteStore
from cloud.workorders.models import WorkOrder

Browser = Callable[[str], TestClient]


class Links(HTMLParser):
    """Every ``src`` and ``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [v for k, v in attrs if k in ("src", "href") and v]


def links(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.found


def chart_data(html: str, chart_id: str) -> dict[str, object]:
    found = re.search(
        rf'<script type="application/json" id="{chart_id}">(.*?)</script>', html, re.S
    )
    assert found, f"no chart {chart_id}"
    data: dict[str, object] = json.loads(found.group(1))
    return data


def pages_of(d: Dashboard) -> list[str]:
    w = d.world
    return [
        "/ui/",
        f"/ui/sites/{w.a.site_id}",
        f"/ui/devices/{w.a.device_id}",
        f"/ui/devices/{w.a.device_id}?span=24h",
        f"/ui/devices/{w.a.device2_id}",
        "/ui/work-orders",
        f"/ui/work-orders/{w.a.work_order_id}",
    ]


# ---- roles -------------------------------------------------------------------------------------


def test_a_facility_manager_sees_only_their_own_sites_and_orders(
    browser: Browser, dash: Dashboard
) -> None:
    fm = browser(dash.world.a.manager_email)
    a, b = dash.world.a, dash.world.b
    for url in pages_of(dash):
        r = fm.get(url)
        assert r.status_code == 200, url
        found = sorted(m for m in b.markers() if m and m in r.text)
        assert not found, f"{url} shows Bravo's {found}"
    fleet = fm.get("/ui/").text
    assert "Client Alpha: sites" in fleet and "alpha-site" in fleet
    assert f"/ui/sites/{a.site_id}" in fleet and f"/ui/devices/{a.device_id}" in fleet
    assert "no baseline yet" in fleet
    board = fm.get("/ui/work-orders?state=all").text
    assert set(re.findall(r'data-order="(WO-\d+)"', board)) == {"WO-000001", "WO-000003"}
    # a filter naming Bravo's site finds nothing rather than Bravo's orders
    board = fm.get(f"/ui/work-orders?site_id={b.site_id}&state=all").text
    assert not re.findall(r'data-order="(WO-\d+)"', board)
    assert "No orders match this filter" in board


def test_another_clients_site_device_or_order_is_a_404_page(
    browser: Browser, dash: Dashboard
) -> None:
    fm = browser(dash.world.a.manager_email)
    b = dash.world.b
    missing = "00000000-0000-4000-8000-000000000000"
    for path in ("/ui/sites/{}", "/ui/devices/{}", "/ui/work-orders/{}"):
        theirs = fm.get(
            path.format(
                {"sites": b.site_id, "devices": b.device_id}.get(
                    path.split("/")[2], b.work_order_id
                )
            )
        )
        nothing = fm.get(path.format(missing))
        assert theirs.status_code == nothing.status_code == 404, path
        assert theirs.text.replace(b.site_id, "").replace(b.device_id, "").replace(
            b.work_order_id, ""
        ) == nothing.text.replace(missing, ""), path
        assert "belongs to a site you do not have access to" in theirs.text
        assert not [m for m in b.markers() if m and m in theirs.text]
    # moving Bravo's order: 404, and the order stays as it was
    token = csrf_of(fm.get("/ui/").text)
    for action, data in [
        ("transition", {"state": "approved"}),
        ("assign", {"technician_id": dash.technicians["ana"]}),
        ("comments", {"text": "hello"}),
    ]:
        r = fm.post(
            f"/ui/work-orders/{b.work_order_id}/{action}",
            data={**data, "csrf_token": token},
            follow_redirects=False,
        )
        assert r.status_code == 404, action
    engine = make_engine(dash.world.url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(WorkOrder.state, WorkOrder.assigned_technician_id).where(
                    WorkOrder.id == b.work_order_id
                )
            ).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("waiting_approval", None)


def test_an_admin_sees_every_clients_sites_grouped(browser: Browser, dash: Dashboard) -> None:
    admin = browser(dash.world.admin_email)
    fleet = admin.get("/ui/").text
    assert '<h2 class="group-head">Client Alpha</h2>' in fleet
    assert '<h2 class="group-head">Client Bravo</h2>' in fleet
    assert "alpha-site" in fleet and "bravo-site" in fleet
    board = admin.get("/ui/work-orders").text
    assert set(re.findall(r'data-order="(WO-\d+)"', board)) == {
        "WO-000001",
        "WO-000002",
        "WO-000003",
    }
    assert "Client Bravo" in board  # the client column: orders of several clients
    assert admin.get(f"/ui/devices/{dash.world.b.device_id}").status_code == 200


def test_the_service_desk_lands_on_the_board(browser: Browser, dash: Dashboard) -> None:
    desk = browser(dash.world.desk_email)
    r = desk.get("/ui/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/work-orders"
    board = desk.get("/ui/work-orders").text
    assert ">Sites</a>" not in board  # no fleet in the desk's menu
    assert set(re.findall(r'data-order="(WO-\d+)"', board)) == {
        "WO-000001",
        "WO-000002",
        "WO-000003",
    }
    assert "Ana Silva" in board  # the technicians to assign
    # the desk reads every client's equipment
    assert desk.get(f"/ui/devices/{dash.world.b.device_id}").status_code == 200
    assert desk.get(f"/ui/sites/{dash.world.b.site_id}").status_code == 200


# ---- what the pages show ------------------------------------------------------------------------


def test_the_device_page_is_the_life_cycle_file_with_chart_data(
    browser: Browser, dash: Dashboard
) -> None:
    fm = browser(dash.world.a.manager_email)
    page = fm.get(f"/ui/devices/{dash.world.a.device_id}").text
    for fact in ("SER-ALPHA-1", "1 Apr 2023", "Expired 31 Mar 2026", "Vulnerable occupant",
                 "alpha roof", "High", "WO-000001", "alpha compressor installed",
                 "High pressure", "27.5", "Refrigerant leak"):  # fmt: skip
        assert fact in page, fact
    assert "Times in Asia/Dubai (+04)" in page
    assert "1 Apr 2023, 13:00" in page  # installed 09:00 UTC: 13:00 in Dubai
    risk = chart_data(page, "chart-risk")
    assert [s["label"] for s in risk["series"]][:2] == [  # type: ignore[index]
        "P(failure within 72 h)",
        "P(failure within 24 h)",
    ]
    p72 = [v for v in risk["series"][0]["values"] if v is not None]  # type: ignore[index]
    assert len(p72) == 48 and max(p72) == 75.0
    titles = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert titles[1:] == [
        "Discharge pressure (bar)",
        "Suction pressure (bar)",
        "Discharge temp (°C)",
        "Superheat (K)",
    ]
    signal = chart_data(page, "chart-signal-0")
    assert signal["tz"] == "Asia/Dubai"
    assert len([v for v in signal["series"][0]["values"] if v is not None]) == 48  # type: ignore[index]
    day = fm.get(f"/ui/devices/{dash.world.a.device_id}?span=24h").text
    assert 'aria-current="true">24 hours<' in day
    values = chart_data(day, "chart-signal-0")["series"][0]["values"]  # type: ignore[index]
    assert 23 <= len([v for v in values if v is not None]) <= 25
    # a device without readings says so instead of drawing empty charts
    fan = fm.get(f"/ui/devices/{dash.world.a.device2_id}").text
    assert "No readings of this device's key signals in this period" in fan
    assert "Not scored yet" in fan


def test_a_work_orders_evidence_link_opens_the_device_over_its_period(
    browser: Browser, dash: Dashboard
) -> None:
    fm = browser(dash.world.a.manager_email)
    end = int(dash.now.timestamp())
    start = end - 3 * 86400
    r = fm.get(f"/dashboard/devices/{dash.world.a.device_id}?start={start}&end={end}",
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 307
    assert r.headers["location"] == f"/ui/devices/{dash.world.a.device_id}?start={start}&end={end}"
    page = fm.get(r.headers["location"]).text
    assert "Signals and risk over the chosen period" in page
    assert chart_data(page, "chart-risk")["x_range"] == [start, end]


def test_the_site_page_shows_devices_by_risk_and_energy_per_local_day(
    browser: Browser, dash: Dashboard
) -> None:
    fm = browser(dash.world.a.manager_email)
    page = fm.get(f"/ui/sites/{dash.world.a.site_id}").text
    assert page.index("cc-alpha") < page.index("fan-alpha")  # riskiest first
    assert "Not scored" in page
    assert "No baseline yet" in page
    energy = chart_data(page, "chart-energy")
    assert energy["kind"] == "bars" and energy["tz"] == "Asia/Dubai"
    days = energy["x"]
    assert isinstance(days, list)
    first = (
        datetime.fromtimestamp(days[0])
        .astimezone()
        .astimezone(__import__("zoneinfo").ZoneInfo("Asia/Dubai"))
    )
    assert (first.day, first.hour, first.minute) == (1, 0, 0)  # local midnight of the 1st
    kwh = [v for v in energy["series"][0]["values"] if v is not None]  # type: ignore[index]
    assert 0 < sum(kwh) <= 72 * 2.5
    events = chart_data(page, "chart-events")
    assert [s["label"] for s in events["series"]] == ["Anomalous windows", "Alarms raised"]  # type: ignore[index]
    assert "Daily figures as a table" in page
    assert "WO-000001" in page and "overdue by" in page


def test_a_baseline_source_on_the_app_is_shown(
    web_app: FastAPI, browser: Browser, dash: Dashboard
) -> None:
    class Expected:
        def __init__(self) -> None:
            self.asked: list[tuple[str, datetime, datetime]] = []

        def expected_kwh(self, site: Site, start: datetime, end: datetime) -> float | None:
            self.asked.append((site.name, start, end))
            return 100.0 if site.name == "alpha-site" else None

    source = Expected()
    web_app.state.baselines = source
    fm = browser(dash.world.a.manager_email)
    fleet = fm.get("/ui/").text
    assert "<meter" in fleet and "the expected 100 kWh" in fleet
    name, start, end = source.asked[0]
    assert name == "alpha-site" and start.day == 1 and start.hour == 0
    assert str(start.tzinfo) == "Asia/Dubai" and end > start


class FailingStore(TimeSeriesStore):
    """A store that is down."""

    def __init__(self, inner: TimeSeriesStore) -> None:
        self.inner = inner

    def write(self, points: Sequence[object]) -> None:  # type: ignore[override]
        raise StoreUnavailable("store down")

    def ping(self) -> bool:
        return False

    def feature_history(self, *args: object, **kwargs: object) -> list[FeatureRow]:
        raise StoreUnavailable("store down")

    def latest(self, device: str) -> dict[str, Latest]:
        raise StoreUnavailable("store down")

    def alarms(self, *args: object, **kwargs: object) -> list[AlarmEvent]:
        raise StoreUnavailable("store down")

    def energy(self, *args: object, **kwargs: object) -> list[object]:  # type: ignore[override]
        raise StoreUnavailable("store down")

    def site_rollup(self, *args: object, **kwargs: object) -> list[SiteRollup]:
        raise StoreUnavailable("store down")

    def count(self, *args: object, **kwargs: object) -> int:
        raise StoreUnavailable("store down")


def test_pages_still_show_risk_and_orders_when_the_store_is_down(
    web_settings: Settings, dash: Dashboard
) -> None:
    inner = SQLiteStore(web_settings.tsdb_sqlite_path)
    try:
        with TestClient(create_app(web_settings, store=FailingStore(inner))) as c:
            assert getattr(sign_in(c, dash.world.a.manager_email), "status_code", None) == 303
            for url in pages_of(dash)[:3]:
                r = c.get(url)
                assert r.status_code == 200, url
                assert "Readings are unavailable right now" in r.text, url
            device = c.get(f"/ui/devices/{dash.world.a.device_id}").text
            assert "75%" in device and "WO-000001" in device
    finally:
        inner.close()


def test_names_are_escaped(browser: Browser, dash: Dashboard) -> None:
    name = '<script>alert("x")</script> & co'
    engine = make_engine(dash.world.url)
    try:
        with engine.begin() as conn:
            conn.execute(update(Site).where(Site.id == dash.world.a.site_id).values(name=name))
    finally:
        engine.dispose()
    fm = browser(dash.world.a.manager_email)
    a = dash.world.a
    for url in ("/ui/", f"/ui/sites/{a.site_id}", f"/ui/devices/{a.device_id}", "/ui/work-orders"):
        page = fm.get(url).text
        assert "<script>alert" not in page, url
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in page, url


# ---- links, assets and the API's schema ---------------------------------------------------------


def test_no_page_links_to_a_broken_or_foreign_address(browser: Browser, dash: Dashboard) -> None:
    checked: dict[str, int] = {}
    for email in (dash.world.a.manager_email, dash.world.desk_email):
        client = browser(email)
        for page in [*pages_of(dash), "/ui/work-orders?state=all&sort=sla"]:
            r = client.get(page)
            assert r.status_code == 200, page
            for link in links(r.text):
                url = urlsplit(urljoin(f"http://testserver{page}", link))
                assert url.netloc == "testserver", f"{page} links off-site: {link}"
                assert not link.startswith("//"), link
                target = url.path + (f"?{url.query}" if url.query else "")
                if target not in checked:
                    checked[target] = client.get(target).status_code
                assert checked[target] == 200, f"{page} links to {target}: {checked[target]}"
    assets = {t for t in checked if t.startswith("/static/")}
    assert assets >= {
        "/static/app.css",
        "/static/app.js",
        "/static/favicon.svg",
        "/static/vendor/uPlot.iife.min.js",
        "/static/vendor/uPlot.min.css",
    }


def test_no_page_or_asset_asks_another_host_for_anything(anonymous: TestClient) -> None:
    for asset in ("/static/app.js", "/static/app.css", "/ui/login"):
        text = anonymous.get(asset).text
        assert not re.search(r"https?://", text.replace("http://www.w3.org/2000/svg", "")), asset


def test_the_pages_stay_out_of_the_api_schema_and_route_table(web_app: FastAPI) -> None:
    paths = web_app.openapi()["paths"]
    assert not [p for p in paths if p.startswith(("/ui", "/static", "/dashboard")) or p == "/"]
    api_routes = [
        ctx.path
        for ctx in iter_route_contexts(web_app.routes)
        if isinstance(ctx.original_route, APIRoute)
    ]
    assert all(p.startswith("/v1/") or p in ("/healthz", "/readyz", "/metrics") for p in api_routes)


def test_unknown_dashboard_paths_are_an_html_404(anonymous: TestClient) -> None:
    r = anonymous.get("/ui/no/such/page")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert anonymous.get("/static/no-such.css").status_code == 404


def test_sites_and_devices_are_listed_with_their_own_times(
    browser: Browser, dash: Dashboard
) -> None:
    admin = browser(dash.world.admin_email)
    board = admin.get("/ui/work-orders?state=all").text
    assert re.search(r"\d+ \w{3}, \d\d:\d\d \+04", board)  # each time with the site's zone
