"""The risk, work-order and delivery routes over HTTP, on the two-tenant registry world.

Alpha has a desk (ServiceNow), a depot with one of the two parts a leak repair takes, a
technician, a leak order on its compressor (from risk) and an alarm order on its fan;
Bravo has a leak order on its compressor. Orders are opened the way production opens
them (:func:`cloud.workorders.service.trigger`); risk rows and the desk's ticket and
delivery attempts are written straight into the registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support.registry_world import NOW, World
from unit.cloud.api.conftest import Headers, TestClient

from cloud.registry.models import Device
from cloud.risk.models import RiskScore
from cloud.workorders import service
from cloud.workorders.models import (
    DeliveryAttempt,
    DeliveryState,
    Depot,
    Desk,
    OutboxMessage,
    Part,
    Source,
    Stock,
    Technician,
    TicketRef,
    WorkOrder,
)
from cloud.workorders.service import OrderPolicy, Trigger

Login = Callable[[str], Headers]


@dataclass
class Orders:
    leak: str
    alarm: str
    bravo: str
    desk: str
    technician: str
    outbox: int
    """The leak order's ``created`` delivery to Alpha's desk (failed once)."""


def _risk(device_id: str, fault: str = "refrigerant_leak") -> Trigger:
    return Trigger(
        device_id=device_id, fault=fault, source=Source.RISK, at=NOW, p24=0.3, p72=0.7, health=30
    )


@pytest.fixture
def orders(world: World, sessions: sessionmaker[Session]) -> Orders:
    a, b = world.a, world.b
    with sessions.begin() as s:
        desk = Desk(
            client_id=a.client_id,
            kind="servicenow",
            url="https://alpha.service-now.example",
            username="edgewatch",
            token="t",  # noqa: S106 - a test desk
            secret="whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",  # noqa: S106
        )
        depot = Depot(name="Dubai depot", latitude=25.2, longitude=55.3)
        s.add_all([desk, depot])
        s.add_all(
            [
                Part(number="RFG-R410A-5KG", name="R410A 5 kg"),
                Part(number="BRZ-ROD-KIT", name="brazing kit"),
            ]
        )
        s.flush()
        s.add(Stock(depot_id=depot.id, part_number="RFG-R410A-5KG", on_hand=3))
        tech = Technician(
            name="Omar", skills=["refrigeration", "f-gas"], depot_id=depot.id, latitude=25.1
        )
        s.add(tech)
        s.flush()
        desk_id, tech_id = desk.id, tech.id
    leak = service.trigger(sessions, _risk(a.device_id), OrderPolicy(), now=NOW)
    alarm = service.trigger(
        sessions,
        Trigger(
            device_id=a.device2_id,
            fault="alarm:high_pressure",
            source=Source.ALARM,
            at=NOW + timedelta(minutes=5),
            note="local alarm high_pressure raised (critical)",
        ),
        OrderPolicy(),
        now=NOW + timedelta(minutes=5),
    )
    bravo = service.trigger(sessions, _risk(b.device_id), OrderPolicy(), now=NOW)
    assert leak.order_id and alarm.order_id and bravo.order_id
    with sessions.begin() as s:
        s.add(
            TicketRef(
                work_order_id=leak.order_id,
                desk_id=desk_id,
                external_id="8d1b2c3a9f",
                external_ref="INC0012345",
            )
        )
        msg = s.scalars(
            select(OutboxMessage).where(OutboxMessage.work_order_id == leak.order_id)
        ).one()
        msg.state, msg.attempts, msg.last_error = DeliveryState.FAILED, 1, "503 from the desk"
        s.add(
            DeliveryAttempt(
                outbox_id=msg.id,  # the model says str; the column is the outbox's integer id
                attempt=1,
                at=NOW,
                worker="w1",
                ok=False,
                status_code=503,
                duration_ms=12.5,
                detail="503 Service Unavailable",
            )
        )
        outbox = msg.id
    return Orders(leak.order_id, alarm.order_id, bravo.order_id, desk_id, tech_id, outbox)


def ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [o["id"] for o in r.json()]


# ---- list and filter ------------------------------------------------------------------------


def test_lists_filter_and_stay_within_the_tenant(
    client: TestClient, world: World, login: Login, orders: Orders
) -> None:
    admin = login(world.admin_email)
    everything = ids(client.get("/v1/work-orders", headers=admin))
    assert everything == [orders.bravo, orders.alarm, orders.leak]  # newest number first

    def q(headers: Headers, **params: Any) -> list[str]:
        return ids(client.get("/v1/work-orders", params=params, headers=headers))

    assert q(admin, site_id=world.a.site_id) == [orders.alarm, orders.leak]
    assert q(admin, device_id=world.a.device2_id) == [orders.alarm]
    assert q(admin, fault="alarm:high_pressure") == [orders.alarm]
    assert q(admin, priority_max=1) == [orders.bravo, orders.leak]  # high + vulnerable + risk
    assert q(admin, state="approved") == []
    assert q(admin, open="false") == []
    assert q(admin, limit=1, offset=1) == [orders.alarm]

    client.post(
        f"/v1/work-orders/{orders.alarm}/transition", json={"state": "cancelled"}, headers=admin
    ).raise_for_status()
    assert q(admin, open="false") == [orders.alarm]
    assert q(admin, open="true") == [orders.bravo, orders.leak]
    assert q(admin, state=["cancelled", "approved"]) == [orders.alarm]  # repeatable

    fm_a, fm_b = login(world.a.manager_email), login(world.b.manager_email)
    assert q(fm_a) == [orders.alarm, orders.leak]
    assert q(fm_b) == [orders.bravo]
    assert q(fm_b, site_id=world.a.site_id) == []

    for bad in ({"state": "bogus"}, {"priority_max": 0}, {"limit": 0}, {"open": "maybe"}):
        r = client.get("/v1/work-orders", params=bad, headers=admin)
        assert (r.status_code, r.json()["error"]) == (422, "invalid_input"), bad


def test_an_order_with_everything_about_it(
    client: TestClient, world: World, login: Login, orders: Orders
) -> None:
    r = client.get(f"/v1/work-orders/{orders.leak}", headers=login(world.a.manager_email))
    assert r.status_code == 200, r.text
    o = r.json()
    assert re.fullmatch(r"WO-\d{6}", o["number"])
    assert (o["state"], o["open"], o["source"], o["priority"]) == (
        "waiting_approval",
        True,
        "risk",
        1,
    )
    assert (o["device_id"], o["device_name"], o["asset_type"]) == (
        world.a.device_id,
        "cc-alpha",
        "compressor",
    )
    assert (o["site_id"], o["site_name"], o["client_id"]) == (
        world.a.site_id,
        "alpha-site",
        world.a.client_id,
    )
    assert o["problem"] == "low refrigerant charge" and o["p72"] == 0.7
    assert o["parts"] == {"BRZ-ROD-KIT": 1, "RFG-R410A-5KG": 1}
    assert o["suggested_technician_id"] == orders.technician
    assert o["evidence"]["api"].endswith(f"/v1/devices/{world.a.device_id}/risk")
    assert [(e["seq"], e["kind"], e["actor"]) for e in o["events"]] == [(1, "opened", "scorer")]
    assert {r["part_number"]: (r["reserved"], r["short"]) for r in o["reservations"]} == {
        "BRZ-ROD-KIT": (0, 1),  # stocked nowhere
        "RFG-R410A-5KG": (1, 0),
    }
    assert o["tickets"] == [
        {
            "desk_id": orders.desk,
            "desk_kind": "servicenow",
            "external_id": "8d1b2c3a9f",
            "external_ref": "INC0012345",
            "created_at": o["tickets"][0]["created_at"],
        }
    ]
    # the numbers follow the order of opening
    numbers = [
        client.get(f"/v1/work-orders/{i}", headers=login(world.admin_email)).json()["number"]
        for i in (orders.leak, orders.alarm, orders.bravo)
    ]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


# ---- moves ----------------------------------------------------------------------------------


def test_the_life_cycle_over_http(
    client: TestClient,
    world: World,
    login: Login,
    orders: Orders,
    sessions: sessionmaker[Session],
) -> None:
    fm, desk = login(world.a.manager_email), login(world.desk_email)
    url = f"/v1/work-orders/{orders.leak}/transition"

    r = client.post(url, json={"state": "approved", "note": "go ahead"}, headers=fm)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved"
    last = r.json()["events"][-1]
    assert (last["kind"], last["from_state"], last["to_state"], last["note"], last["actor"]) == (
        "state_changed",
        "waiting_approval",
        "approved",
        "go ahead",
        f"user:{world.a.manager_id}",
    )
    r = client.post(url, json={"state": "scheduled"}, headers=fm)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")

    r = client.post(url, json={"state": "complete"}, headers=desk)
    assert (r.status_code, r.json()["error"]) == (409, "conflict")
    assert "from approved to complete (allowed: cancelled, scheduled)" in r.json()["detail"]

    r = client.post(url, json={"state": "scheduled", "failure_prevented": True}, headers=desk)
    assert r.status_code == 422 and "failure_prevented" in r.json()["detail"]
    for bad in ({"state": "nowhere"}, {"state": "scheduled", "extra": 1}, {}):
        assert client.post(url, json=bad, headers=desk).status_code == 422, bad

    for state in ("scheduled", "in_progress", "complete"):
        r = client.post(url, json={"state": state}, headers=desk)
        assert r.status_code == 200, r.text
    r = client.post(
        url,
        json={"state": "closed", "note": "suction line brazed", "failure_prevented": True},
        headers=desk,
    )
    assert r.status_code == 200, r.text
    o = r.json()
    assert (o["state"], o["open"], o["failure_prevented"], o["outcome_note"]) == (
        "closed",
        False,
        True,
        "suction line brazed",
    )
    assert o["closed_at"] is not None
    assert all(r["released"] for r in o["reservations"])
    with sessions() as s:  # the bottle held for it was used; Bravo's leak holds another
        stock = s.scalars(select(Stock).where(Stock.part_number == "RFG-R410A-5KG")).one()
        assert (stock.on_hand, stock.reserved) == (2, 1)
    r = client.post(url, json={"state": "in_progress"}, headers=desk)
    assert r.status_code == 409 and "none: the order is final" in r.json()["detail"]
    # every move went to Alpha's desk
    r = client.get(f"/v1/work-orders/{orders.leak}/deliveries", headers=desk)
    assert [d["event"] for d in r.json()] == ["created"] + ["state_changed"] * 5


def test_comments(client: TestClient, world: World, login: Login, orders: Orders) -> None:
    fm = login(world.a.manager_email)
    url = f"/v1/work-orders/{orders.leak}/comments"
    r = client.post(url, json={"text": "access via the service lift"}, headers=fm)
    assert r.status_code == 200, r.text
    last = r.json()["events"][-1]
    assert (last["kind"], last["note"]) == ("commented", "access via the service lift")
    for bad in ({"text": ""}, {"text": "   "}, {"text": "x" * 10_001}, {"note": "x"}):
        r = client.post(url, json=bad, headers=fm)
        assert (r.status_code, r.json()["error"]) == (422, "invalid_input"), bad
        assert ("text" if "text" in bad else "note") in str(r.json()["detail"]), r.text
    deliveries = client.get(f"/v1/work-orders/{orders.leak}/deliveries", headers=fm).json()
    assert deliveries[-1]["event"] == "commented"
    assert deliveries[-1]["comment"] == "access via the service lift"


def test_assignment(client: TestClient, world: World, login: Login, orders: Orders) -> None:
    desk, fm = login(world.desk_email), login(world.a.manager_email)
    url = f"/v1/work-orders/{orders.alarm}/assignment"
    r = client.put(url, json={"technician_id": orders.technician}, headers=desk)
    assert r.status_code == 200, r.text
    assert r.json()["assigned_technician_id"] == orders.technician
    assert r.json()["events"][-1]["kind"] == "assigned"
    r = client.put(url, json={"technician_id": None}, headers=fm)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    r = client.put(url, json={"technician_id": "no-such-technician"}, headers=desk)
    assert r.status_code == 422 and "technician_id" in r.json()["detail"]
    assert client.put(url, json={}, headers=desk).status_code == 422  # null must be explicit
    r = client.put(url, json={"technician_id": None}, headers=desk)
    assert r.status_code == 200 and r.json()["assigned_technician_id"] is None
    client.post(
        f"/v1/work-orders/{orders.alarm}/transition", json={"state": "cancelled"}, headers=desk
    ).raise_for_status()
    r = client.put(url, json={"technician_id": orders.technician}, headers=desk)
    assert (r.status_code, r.json()["error"]) == (409, "conflict")


# ---- tenants --------------------------------------------------------------------------------


def test_another_clients_manager_finds_nothing(
    client: TestClient,
    world: World,
    login: Login,
    orders: Orders,
    sessions: sessionmaker[Session],
) -> None:
    fm_b = login(world.b.manager_email)
    base = f"/v1/work-orders/{orders.leak}"
    calls = [
        ("GET", base, None),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/transition", {"state": "cancelled"}),
        ("POST", f"{base}/comments", {"text": "hello"}),
        ("PUT", f"{base}/assignment", {"technician_id": orders.technician}),
        ("POST", f"/v1/deliveries/{orders.outbox}/replay", None),
    ]
    for method, url, body in calls:
        r = client.request(method, url, json=body, headers=fm_b)
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), (method, url)
        assert world.a.device_id not in r.text and orders.desk not in r.text
    assert ids(client.get("/v1/work-orders", headers=fm_b)) == [orders.bravo]
    with sessions() as s:
        order = s.get(WorkOrder, orders.leak)
        assert order is not None and order.state == "waiting_approval"
        assert len(order.events) == 1
        msg = s.get(OutboxMessage, orders.outbox)
        assert msg is not None and msg.state is DeliveryState.FAILED


# ---- risk -----------------------------------------------------------------------------------


def _score(device_id: str, site_id: str, hours: float, p72: float) -> RiskScore:
    at = NOW + timedelta(hours=hours)
    return RiskScore(
        device_id=device_id,
        site_id=site_id,
        ts=at,
        computed_at=at,
        p24=p72 / 2,
        p72=p72,
        horizon_h=72.0,
        fault_type="refrigerant_leak",
        fault_probs={"refrigerant_leak": 0.7, "valve_wear": 0.3},
        health=round(100 * (1 - p72)),
        anomaly_score=None,
        alert=p72 >= 0.5,
        top_signals=[{"signal": "superheat", "share": 0.6, "trend_per_day": 0.2}],
        model="compressor-risk",
    )


def test_risk_of_a_device_and_of_a_site(
    client: TestClient, world: World, login: Login, sessions: sessionmaker[Session]
) -> None:
    a = world.a
    with sessions.begin() as s:
        never = Device(gateway_id=a.gateway_id, name="cc-alpha-new", asset_type="compressor")
        s.add(never)
        s.add_all(
            [
                _score(a.device_id, a.site_id, -3, 0.2),
                _score(a.device_id, a.site_id, -2, 0.4),
                _score(a.device_id, a.site_id, -1, 0.6),
                _score(a.device2_id, a.site_id, -5, 0.9),
                _score(a.device2_id, a.site_id, -4, 0.3),  # the newest counts, not the highest
                _score(world.b.device_id, world.b.site_id, -1, 0.99),
            ]
        )
        s.flush()
        never_id = never.id
    fm = login(a.manager_email)
    url = f"/v1/devices/{a.device_id}/risk"
    window = {"start": (NOW - timedelta(hours=6)).isoformat(), "end": NOW.isoformat()}
    r = client.get(url, params=window, headers=fm)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["device_id"] == a.device_id
    assert body["latest"]["p72"] == 0.6
    assert body["latest"]["top_signals"] == [
        {"signal": "superheat", "share": 0.6, "trend_per_day": 0.2}
    ]
    assert [h["p72"] for h in body["history"]] == [0.2, 0.4, 0.6]  # oldest first
    r = client.get(url, params={**window, "limit": 2}, headers=fm)
    assert [h["p72"] for h in r.json()["history"]] == [0.4, 0.6]  # the newest two
    narrow = {
        "start": (NOW - timedelta(hours=2.5)).isoformat(),
        "end": (NOW - timedelta(hours=1)).isoformat(),
    }
    r = client.get(url, params=narrow, headers=fm)
    assert [h["p72"] for h in r.json()["history"]] == [0.4]  # end is exclusive
    assert r.json()["latest"]["p72"] == 0.6  # the newest, whatever the range
    r = client.get(f"/v1/devices/{never_id}/risk", params=window, headers=fm)
    assert r.json() == {"device_id": never_id, "latest": None, "history": []}
    r = client.get(url, params={"start": NOW.isoformat(), "end": NOW.isoformat()}, headers=fm)
    assert r.status_code == 422

    r = client.get(f"/v1/sites/{a.site_id}/risk", headers=fm)
    assert r.status_code == 200, r.text
    rows = [(d["device_name"], d["risk"] and d["risk"]["p72"]) for d in r.json()]
    assert rows == [("cc-alpha", 0.6), ("fan-alpha", 0.3), ("cc-alpha-new", None)]
    assert r.json()[0]["criticality"] == "high"

    fm_b = login(world.b.manager_email)
    for path in (url, f"/v1/sites/{a.site_id}/risk"):
        r = client.get(path, headers=fm_b)
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), path


# ---- deliveries -----------------------------------------------------------------------------


def test_deliveries_and_their_replay(
    client: TestClient,
    world: World,
    login: Login,
    orders: Orders,
    sessions: sessionmaker[Session],
) -> None:
    fm, desk = login(world.a.manager_email), login(world.desk_email)
    r = client.get(f"/v1/work-orders/{orders.leak}/deliveries", headers=fm)
    assert r.status_code == 200, r.text
    [d] = r.json()
    assert (d["id"], d["desk_id"], d["event"], d["state"], d["attempts"]) == (
        orders.outbox,
        orders.desk,
        "created",
        "failed",
        1,
    )
    assert d["last_error"] == "503 from the desk" and d["delivered_at"] is None
    assert [(a["attempt"], a["ok"], a["status_code"]) for a in d["attempt_log"]] == [
        (1, False, 503)
    ]
    assert client.get(f"/v1/work-orders/{orders.bravo}/deliveries", headers=fm).status_code == 404
    # Bravo has no desk: its order has nothing to deliver
    assert client.get(f"/v1/work-orders/{orders.bravo}/deliveries", headers=desk).json() == []

    replay = f"/v1/deliveries/{orders.outbox}/replay"
    r = client.post(replay, headers=fm)  # the client's own delivery, but not theirs to replay
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    before = datetime.now(UTC)
    r = client.post(replay, headers=desk)
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["state"], d["attempts"], len(d["attempt_log"])) == ("pending", 1, 1)
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(d["next_attempt_at"])
    assert datetime.fromisoformat(d["next_attempt_at"]) <= datetime.now(UTC)
    listed = client.get(f"/v1/work-orders/{orders.leak}/deliveries", headers=fm).json()
    assert listed[0]["state"] == "pending"  # committed

    for missing in ("999999", "0", "abc"):
        r = client.post(f"/v1/deliveries/{missing}/replay", headers=desk)
        assert r.status_code in (404, 422), missing
    assert client.post("/v1/deliveries/999999/replay", headers=desk).status_code == 404

    # a delivered message goes out once more (the desk adapters are idempotent)
    with sessions.begin() as s:
        msg = s.get(OutboxMessage, orders.outbox)
        assert msg is not None
        msg.state, msg.delivered_at = DeliveryState.DELIVERED, NOW
    r = client.post(replay, headers=login(world.admin_email))
    assert r.status_code == 200 and r.json()["state"] == "pending"
