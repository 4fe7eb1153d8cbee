"""The dashboard in a real headless browser against the real service.

A facility manager signs in, sees their own sites only, opens a device page whose charts
have data; the service desk moves a work order on the board (checked in the database).
Every page visited is kept as a screenshot in ``tests/artifacts/screenshots/``; no page
may ask another host for anything or log an error in the browser's console.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from integration.web.conftest import BrowserLog, Server
from sqlalchemy import select
from support.registry_world import PASSWORD

from cloud.db import make_engine
from cloud.workorders.models import WorkOrder

pytestmark = pytest.mark.integration

Shoot = Callable[[Any, str], Path]

CANVAS_INK = """(el) => {
  const canvas = el.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0 && (data[i] < 200 || data[i + 1] < 200 || data[i + 2] < 200)) ink++;
  }
  return ink;
}"""


def sign_in(page: Any, server: Server, email: str) -> None:
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def order_state(server: Server, order_id: str) -> str:
    engine = make_engine(server.dashboard.world.url)
    try:
        with engine.connect() as conn:
            return str(conn.scalar(select(WorkOrder.state).where(WorkOrder.id == order_id)))
    finally:
        engine.dispose()


def test_a_facility_manager_sees_their_sites_and_a_device_with_charts(
    page: Any, dashboard_server: Server, browser_log: BrowserLog, shoot: Shoot
) -> None:
    server, world = dashboard_server, dashboard_server.dashboard.world
    page.goto(server.base_url + "/")
    assert page.url == f"{server.base_url}/ui/login?next=%2Fui%2F"
    assert page.evaluate("document.activeElement.id") == "email"  # the form is ready to type in
    shoot(page, "01-login")

    page.fill("#email", world.a.manager_email)
    page.fill("#password", "wrong password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect email or password."
    sign_in(page, server, world.a.manager_email)
    page.wait_for_url(f"{server.base_url}/ui/")
    assert page.get_by_role("heading", level=1).inner_text() == "Client Alpha: sites"
    content = page.content()
    assert "alpha-site" in content
    assert "bravo-site" not in content and "Client Bravo" not in content
    page.keyboard.press("Tab")  # keyboard users can skip the menu
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    shoot(page, "02-fleet-facility-manager")

    page.get_by_role("link", name="alpha-site").click()
    page.wait_for_selector('[data-chart="chart-energy"][data-rendered="true"]')
    assert page.get_by_role("heading", level=1).inner_text() == "alpha-site"
    shoot(page, "03-site")

    page.get_by_role("table").first.get_by_role("link", name="cc-alpha").click()
    risk = page.wait_for_selector('[data-chart="chart-risk"][data-rendered="true"]')
    signal = page.wait_for_selector('[data-chart="chart-signal-0"][data-rendered="true"]')
    assert int(risk.get_attribute("data-points")) == 3 * 48
    assert int(signal.get_attribute("data-points")) == 48
    assert signal.evaluate(CANVAS_INK) > 200, "the signal chart drew nothing"
    assert page.locator(".chart-canvas[data-rendered=true]").count() == 5
    assert "Times in Asia/Dubai (+04)" in page.content()
    shoot(page, "04-device-7d")

    page.get_by_role("link", name="24 hours").click()
    signal = page.wait_for_selector('[data-chart="chart-signal-0"][data-rendered="true"]')
    assert 23 <= int(signal.get_attribute("data-points")) <= 25
    shoot(page, "05-device-24h")

    page.goto(f"{server.base_url}/ui/devices/{world.b.device_id}")
    assert page.get_by_role("heading", level=1).inner_text() == "Not found"
    shoot(page, "06-other-clients-device-404")

    page.goto(f"{server.base_url}/ui/work-orders")
    assert re.findall(r'data-order="(WO-\d+)"', page.content()) == ["WO-000001", "WO-000003"]
    shoot(page, "07-board-facility-manager")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/ui/login\?why=signed_out$"))
    assert browser_log.errors == []
    assert browser_log.foreign == []


def test_the_service_desk_moves_a_work_order_on_the_board(
    page: Any, dashboard_server: Server, browser_log: BrowserLog, shoot: Shoot
) -> None:
    server, world = dashboard_server, dashboard_server.dashboard.world
    order = world.a.work_order_id
    assert order_state(server, order) == "waiting_approval"
    page.goto(server.base_url + "/ui/login")
    sign_in(page, server, world.desk_email)
    page.wait_for_url(f"{server.base_url}/ui/work-orders")
    assert page.locator("tr[data-order]").count() == 3
    shoot(page, "08-board-service-desk")

    row = page.locator('tr[data-order="WO-000001"]')
    row.get_by_label("Move WO-000001 to").select_option("approved")
    row.get_by_role("button", name="Apply").click()
    page.wait_for_selector(".flash-ok")
    assert page.locator(".flash-ok").inner_text() == (
        "WO-000001 moved from Waiting approval to Approved."
    )
    assert order_state(server, order) == "approved"
    assert "Approved" in page.locator('tr[data-order="WO-000001"] .state').inner_text()
    shoot(page, "09-board-after-move")

    row = page.locator('tr[data-order="WO-000001"]')
    row.get_by_label("Technician for WO-000001").select_option(label="Ana Silva")
    row.get_by_role("button", name="Assign").click()
    page.wait_for_selector(".flash-ok")
    assert "assigned to Ana Silva" in page.locator(".flash-ok").inner_text()

    page.locator('tr[data-order="WO-000001"]').get_by_role("link", name="WO-000001").click()
    assert page.get_by_role("heading", level=1).inner_text().startswith("WO-000001")
    assert "Ana Silva" in page.content()
    shoot(page, "10-order")

    page.goto(f"{server.base_url}/ui/work-orders?state=all&sort=sla")
    shoot(page, "11-board-all-by-sla")
    assert browser_log.errors == []
    assert browser_log.foreign == []
