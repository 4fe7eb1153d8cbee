"""The work-order board: filters, sorting, and the moves through its forms.

The world has three orders: WO-000001 (Alpha's compressor, refrigerant leak, P1, long
overdue), WO-000002 (Bravo's compressor, the same) and WO-000003 (Alpha's fan, a local
alarm, P3, due in about three days); all wait for approval.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from unit.cloud.web.conftest import csrf_of
from unit.cloud.web.dashboard_world import Dashboard

from cloud.auth.principal import Principal
from cloud.db import make_engine
from cloud.errors import Conflict, Forbidden
from cloud.registry.models import Role
from cloud.web.views import allowed_moves
from cloud.workorders import policy, service
from cloud.workorders.models import WorkOrder
from cloud.workorders.policy import State

Browser = Callable[[str], TestClient]


def numbers(html: str) -> list[str]:
    return re.findall(r'data-order="(WO-\d+)"', html)


def row_of(html: str, number: str) -> str:
    found = re.search(rf'<tr[^>]*data-order="{number}">(.*?)</tr>', html, re.S)
    assert found, number
    return found.group(1)


def order_row(url: str, order_id: str) -> dict[str, object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(WorkOrder).where(WorkOrder.id == order_id)).one()
            return dict(row._mapping)
    finally:
        engine.dispose()


def post(client: TestClient, url: str, data: dict[str, str], page: str = "/ui/work-orders") -> str:
    """Post a form of ``page`` (with the session's CSRF token) and follow the redirect: the
    page shown afterwards."""
    token = csrf_of(client.get(page).text)
    form = {"next": page, **data, "csrf_token": token}  # the forms send the page they are on
    r = client.post(url, data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    after = client.get(r.headers["location"])
    assert after.status_code == 200
    return after.text


def test_the_board_filters_by_state_site_priority_and_fault(
    browser: Browser, dash: Dashboard
) -> None:
    desk = browser(dash.world.desk_email)
    a = dash.world.a
    assert sorted(numbers(desk.get("/ui/work-orders").text)) == [
        "WO-000001",
        "WO-000002",
        "WO-000003",
    ]
    cases = {
        f"site_id={a.site_id}": ["WO-000001", "WO-000003"],
        "priority=1": ["WO-000001", "WO-000002"],
        "fault=alarm:high_vibration": ["WO-000003"],
        "state=waiting_approval": ["WO-000001", "WO-000002", "WO-000003"],
        "state=approved": [],
        "state=final": [],
        f"site_id={a.site_id}&priority=1&fault=refrigerant_leak": ["WO-000001"],
        "state=nonsense&priority=9&sort=nonsense": ["WO-000001", "WO-000002", "WO-000003"],
    }
    for query, expected in cases.items():
        page = desk.get(f"/ui/work-orders?{query}").text
        assert sorted(numbers(page)) == expected, query
    page = desk.get(f"/ui/work-orders?site_id={a.site_id}&priority=1").text
    assert f'<option value="{a.site_id}" selected>alpha-site</option>' in page
    assert '<option value="1" selected>P1 only</option>' in page
    assert "<strong>1</strong> order matches" in page


def test_the_board_sorts_by_priority_sla_or_age_and_marks_overdue(
    browser: Browser, dash: Dashboard
) -> None:
    engine = make_engine(dash.world.url)
    try:
        with engine.begin() as conn:  # Bravo's P1 is due last
            conn.execute(
                update(WorkOrder)
                .where(WorkOrder.id == dash.world.b.work_order_id)
                .values(sla_due_at=dash.now + timedelta(days=10))
            )
    finally:
        engine.dispose()
    desk = browser(dash.world.desk_email)
    assert numbers(desk.get("/ui/work-orders").text) == ["WO-000001", "WO-000002", "WO-000003"]
    assert numbers(desk.get("/ui/work-orders?sort=sla").text) == [
        "WO-000001",
        "WO-000003",
        "WO-000002",
    ]
    page = desk.get("/ui/work-orders?sort=newest").text
    assert numbers(page) == ["WO-000003", "WO-000002", "WO-000001"]
    assert 'class="row-overdue" data-order="WO-000001"' in page
    assert 'class="" data-order="WO-000003"' in page
    assert "overdue by" in row_of(page, "WO-000001")
    assert re.search(r"in \d+ (h|days)", row_of(page, "WO-000003"))
    assert "1 overdue" in page


def test_the_desk_moves_and_assigns_an_order_through_the_forms(
    browser: Browser, dash: Dashboard
) -> None:
    desk = browser(dash.world.desk_email)
    order = dash.world.a.work_order_id
    board = desk.get("/ui/work-orders").text
    options = re.findall(r'<option value="(\w+)">', row_of(board, "WO-000001"))
    assert options[:2] == ["approved", "cancelled"]  # the moves from waiting_approval

    after = post(
        desk,
        f"/ui/work-orders/{order}/transition",
        {"state": "approved", "next": "/ui/work-orders?sort=sla"},
    )
    assert "WO-000001 moved from Waiting approval to Approved." in after
    assert 'role="status"' in after
    assert order_row(dash.world.url, order)["state"] == "approved"
    moves = re.findall(r'<option value="(\w+)">(.*?)</option>', row_of(after, "WO-000001"))
    assert [m for m in moves if m[0] in ("scheduled", "cancelled")] == [
        ("scheduled", "Schedule"),
        ("cancelled", "Cancel order"),
    ]
    assert "Moved" not in desk.get("/ui/work-orders").text  # the message shows once

    # a move the life cycle refuses: the service's message, nothing changes
    after = post(desk, f"/ui/work-orders/{order}/transition", {"state": "closed"})
    assert "WO-000001 was not changed: a work order cannot go from approved to closed" in after
    assert 'role="alert"' in after
    assert order_row(dash.world.url, order)["state"] == "approved"

    ana = dash.technicians["ana"]
    after = post(desk, f"/ui/work-orders/{order}/assign", {"technician_id": ana})
    assert "WO-000001 assigned to Ana Silva." in after
    assert order_row(dash.world.url, order)["assigned_technician_id"] == ana
    assert f'<option value="{ana}" selected>Ana Silva</option>' in row_of(after, "WO-000001")
    after = post(desk, f"/ui/work-orders/{order}/assign", {"technician_id": ""})
    assert "WO-000001: assignment cleared." in after
    assert order_row(dash.world.url, order)["assigned_technician_id"] is None


def test_the_order_page_moves_with_a_note_and_takes_comments(
    browser: Browser, dash: Dashboard
) -> None:
    desk = browser(dash.world.desk_email)
    order = dash.world.a.work_order_id
    page = f"/ui/work-orders/{order}"
    for state in ("approved", "scheduled", "in_progress", "complete"):
        after = post(
            desk,
            f"{page}/transition",
            {"state": state, "note": f"now {state}", "failure_prevented": "yes", "next": page},
            page,
        )
    assert "moved from In progress to Complete" in after
    row = order_row(dash.world.url, order)
    assert row["state"] == "complete" and row["failure_prevented"] is True
    after = post(desk, f"{page}/comments", {"text": "parts on the way", "next": page}, page)
    assert "Comment added to WO-000001." in after
    assert "parts on the way" in after and "by You" in after
    after = post(desk, f"{page}/transition", {"state": "closed", "next": page}, page)
    assert "it cannot move any more" in after
    assert "Closed" in after


def test_a_facility_manager_may_approve_or_cancel_only(browser: Browser, dash: Dashboard) -> None:
    fm = browser(dash.world.a.manager_email)
    order = dash.world.a.work_order_id
    board = fm.get("/ui/work-orders").text
    row = row_of(board, "WO-000001")
    assert re.findall(r'<option value="(\w+)">', row) == ["approved", "cancelled"]
    assert "Assign" not in row and "technician_id" not in board
    after = post(fm, f"/ui/work-orders/{order}/transition", {"state": "approved"})
    assert "WO-000001 moved from Waiting approval to Approved." in after
    assert "<select" not in row_of(after, "WO-000001")  # nothing more a manager may do
    # forged posts: the service refuses them, the page says why
    after = post(fm, f"/ui/work-orders/{order}/transition", {"state": "scheduled"})
    assert "only admin or service_desk may move a work order to scheduled" in after
    after = post(fm, f"/ui/work-orders/{order}/assign", {"technician_id": dash.technicians["ana"]})
    assert "only admin or service_desk may assign technicians" in after
    row = order_row(dash.world.url, order)
    assert (row["state"], row["assigned_technician_id"]) == ("approved", None)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.SERVICE_DESK, Role.FACILITY_MANAGER])
def test_the_offered_moves_are_exactly_what_the_service_accepts(role: Role) -> None:
    p = Principal("u", role, "c" if role is Role.FACILITY_MANAGER else None)
    for current in State:
        offered = {m.target for m in allowed_moves(p, current)}
        accepted = set()
        for target in State:
            try:
                policy.check_transition(current, target)
                service._may_move(p, current, target)
            except (Conflict, Forbidden):
                continue
            accepted.add(target.value)
        assert offered == accepted, (role, current)
