"""Work orders on a real (SQLite) registry: open once, update on a rise, cool down, move
through the life cycle, reserve parts, suggest a technician, write the outbox."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support.workorder_world import NOW, Business

from cloud.auth.principal import Principal
from cloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from cloud.registry.models import DeviceEvent, EventKind, Role
from cloud.workorders import service
from cloud.workorders.models import (
    OutboxMessage,
    Reservation,
    Source,
    Stock,
    WorkOrder,
    WorkOrderEvent,
)
from cloud.workorders.policy import State
from cloud.workorders.service import OrderFilter, OrderPolicy, Trigger

POLICY = OrderPolicy(public_url="https://ew.example.com")
ADMIN = Principal.system()


def risk(
    device: str, p72: float, *, p24: float = 0.1, fault: str = "refrigerant_leak", at_h: float = 0
) -> Trigger:
    return Trigger(
        device_id=device,
        fault=fault,
        source=Source.RISK,
        at=NOW + timedelta(hours=at_h),
        p24=p24,
        p72=p72,
        threshold=0.3,
        health=round(100 * (1 - p72)),
        evidence={"top_signals": [{"signal": "superheat", "share": 0.6}]},
    )


def count(sessions: sessionmaker[Session], model: type, **where: object) -> int:
    with sessions() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.scalar(stmt) or 0)


def test_risk_over_the_threshold_opens_one_order_with_everything_the_technician_needs(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    dev = biz.devices[0]  # critical, vulnerable occupant
    r = service.trigger(wo_sessions, risk(dev, 0.62), POLICY, now=NOW)
    assert r.outcome == "opened" and r.priority == 1
    with wo_sessions() as s:
        o = s.get(WorkOrder, r.order_id)
        assert o is not None
        assert (o.state, o.fault, o.source) == (
            State.WAITING_APPROVAL,
            "refrigerant_leak",
            Source.RISK,
        )
        assert o.problem == "low refrigerant charge" and "recharge" in o.remedy
        assert o.skills == ["refrigeration", "f-gas"]
        assert o.parts == {"BRZ-ROD-KIT": 1, "RFG-R410A-5KG": 1}
        assert o.lead_time_h == 72.0
        assert o.sla_due_at == NOW + timedelta(hours=4)  # priority 1
        assert o.evidence["charts"].startswith(f"https://ew.example.com/dashboard/devices/{dev}")
        assert o.evidence["top_signals"][0]["signal"] == "superheat"
        # Ana: refrigeration + f-gas, in Lisbon; Carla has the skills but is in Porto
        assert o.suggested_technician_id == biz.technicians["ana"]
        assert o.suggestion is not None and o.suggestion["missing_skills"] == []
        events = s.scalars(select(DeviceEvent).where(DeviceEvent.device_id == dev)).all()
        assert [e.kind for e in events] == [EventKind.WORK_ORDER_OPENED]
        assert "WO-" in events[0].summary
    assert count(wo_sessions, OutboxMessage, work_order_id=r.order_id, event="created") == 1


def test_below_the_threshold_nothing_opens(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    r = service.trigger(wo_sessions, risk(biz.devices[1], 0.29), POLICY, now=NOW)
    assert r.outcome == "below_threshold"
    assert count(wo_sessions, WorkOrder) == 0


def test_the_threshold_applies_to_the_alert_horizon_s_risk_when_the_model_has_one(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    """A failure likely within 7 days but not within 3 opens an order, expected within
    the 7 days; a high P72 with a low 7-day risk is not what the threshold judges."""
    dev = biz.devices[1]  # medium criticality, no occupants
    week = replace(risk(dev, 0.12), p_alert=0.9, alert_horizon_h=168.0)
    r = service.trigger(wo_sessions, week, POLICY, now=NOW)
    assert r.outcome == "opened" and r.priority == 3  # 1 risk point + 1 criticality
    with wo_sessions() as s:
        o = s.get(WorkOrder, r.order_id)
        assert o is not None and o.lead_time_h == 168.0
        assert o.evidence["risk"]["p_alert"] == 0.9
        assert o.evidence["risk"]["alert_horizon_h"] == 168.0
    low = replace(risk(biz.devices[2], 0.35), p_alert=0.2, alert_horizon_h=168.0)
    assert service.trigger(wo_sessions, low, POLICY, now=NOW).outcome == "below_threshold"


def test_a_second_trigger_updates_the_open_order_only_when_risk_rises(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    dev = biz.devices[1]  # medium criticality, no occupants
    first = service.trigger(wo_sessions, risk(dev, 0.35), POLICY, now=NOW)
    assert first.outcome == "opened" and first.priority == 3
    same = service.trigger(wo_sessions, risk(dev, 0.37, at_h=1), POLICY, now=NOW)
    assert (same.outcome, same.order_id) == ("unchanged", first.order_id)
    up = service.trigger(wo_sessions, risk(dev, 0.85, at_h=2), POLICY, now=NOW + timedelta(hours=2))
    assert (up.outcome, up.order_id, up.priority) == ("updated", first.order_id, 2)
    lower = service.trigger(wo_sessions, risk(dev, 0.5, at_h=3), POLICY, now=NOW)
    assert lower.outcome == "unchanged" and lower.priority == 2  # priority never drops back
    with wo_sessions() as s:
        o = s.get(WorkOrder, first.order_id)
        assert o is not None and o.p72 == 0.85 and o.priority == 2
        # the SLA due moved earlier with the priority (24 h from the rise), never later
        assert o.sla_due_at == NOW + timedelta(hours=2) + timedelta(hours=24)
        kinds = s.scalars(
            select(WorkOrderEvent.kind)
            .where(WorkOrderEvent.work_order_id == o.id)
            .order_by(WorkOrderEvent.seq)
        ).all()
        assert kinds == ["opened", "updated"]
    assert count(wo_sessions, WorkOrder) == 1
    assert count(wo_sessions, OutboxMessage, event="updated") == 1


def test_a_risk_trigger_naming_another_fault_raises_the_device_s_open_risk_order(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    # The risk model gives one failure probability per device and names its likeliest
    # fault: another name for the same device is the same predicted failure, diagnosed
    # anew. One order, whose history and desk update say what the model now names.
    dev = biz.devices[1]
    a = service.trigger(wo_sessions, risk(dev, 0.5), POLICY, now=NOW)
    same = service.trigger(wo_sessions, risk(dev, 0.52, fault="bearing_wear"), POLICY, now=NOW)
    assert a.outcome == "opened" and (same.outcome, same.order_id) == ("unchanged", a.order_id)
    up = service.trigger(wo_sessions, risk(dev, 0.9, fault="bearing_wear"), POLICY, now=NOW)
    assert (up.outcome, up.order_id) == ("updated", a.order_id)
    assert count(wo_sessions, WorkOrder, device_id=dev) == 1
    with wo_sessions() as s:
        o = s.get(WorkOrder, a.order_id)
        assert o is not None and o.fault == "refrigerant_leak" and o.p72 == 0.9
        assert o.evidence["risk"]["fault"] == "bearing_wear"
        note = s.scalar(select(OutboxMessage.comment).where(OutboxMessage.event == "updated"))
        assert note is not None and "the model now names bearing_wear" in note
    # An alarm is its own order, beside the risk order.
    alarm = Trigger(device_id=dev, fault="alarm:device_offline", source=Source.ALARM, at=NOW)
    assert service.trigger(wo_sessions, alarm, POLICY, now=NOW).outcome == "opened"
    # In one batch as in separate calls: the first fault opens, the second raises it.
    other = biz.devices[2]
    results = service.trigger_many(
        wo_sessions,
        [risk(other, 0.4, fault="bearing_wear"), risk(other, 0.95, fault="refrigerant_leak")],
        POLICY,
        now=NOW,
    )
    assert [r.outcome for r in results] == ["opened", "updated"]  # type: ignore[union-attr]
    assert count(wo_sessions, WorkOrder, device_id=other) == 1


def test_closing_starts_a_cool_down_then_a_new_order_may_open(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    dev = biz.devices[2]
    first = service.trigger(wo_sessions, risk(dev, 0.6), POLICY, now=NOW)
    assert first.order_id is not None
    with wo_sessions.begin() as s:
        for state in ("approved", "scheduled", "in_progress", "complete"):
            service.transition(s, ADMIN, first.order_id, state, now=NOW)
        service.transition(
            s,
            ADMIN,
            first.order_id,
            "closed",
            failure_prevented=True,
            note="leak at the service valve brazed",
            now=NOW + timedelta(hours=5),
        )
    soon = service.trigger(wo_sessions, risk(dev, 0.9), POLICY, now=NOW + timedelta(hours=30))
    assert soon.outcome == "cooldown"
    later = service.trigger(wo_sessions, risk(dev, 0.9), POLICY, now=NOW + timedelta(hours=80))
    assert later.outcome == "opened" and later.order_id != first.order_id
    with wo_sessions() as s:
        closed = s.get(WorkOrder, first.order_id)
        assert closed is not None
        assert closed.state == State.CLOSED and closed.failure_prevented is True
        assert closed.outcome_note == "leak at the service valve brazed"
        kinds = [
            e.kind
            for e in s.scalars(
                select(DeviceEvent).where(DeviceEvent.device_id == dev).order_by(DeviceEvent.at)
            )
        ]
        assert kinds == [
            EventKind.WORK_ORDER_OPENED,
            EventKind.WORK_ORDER_CLOSED,
            EventKind.WORK_ORDER_OPENED,
        ]


def test_invalid_moves_are_refused_and_change_nothing(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    r = service.trigger(wo_sessions, risk(biz.devices[1], 0.6), POLICY, now=NOW)
    assert r.order_id is not None
    with wo_sessions.begin() as s, pytest.raises(Conflict, match="waiting_approval to closed"):
        service.transition(s, ADMIN, r.order_id, "closed")
    with wo_sessions.begin() as s, pytest.raises(InvalidInput, match="unknown state 'done'"):
        service.transition(s, ADMIN, r.order_id, "done")
    with wo_sessions.begin() as s, pytest.raises(InvalidInput, match="failure_prevented"):
        service.transition(s, ADMIN, r.order_id, "approved", failure_prevented=True)
    with wo_sessions() as s:
        o = s.get(WorkOrder, r.order_id)
        assert o is not None and o.state == State.WAITING_APPROVAL
    assert count(wo_sessions, OutboxMessage, event="state_changed") == 0


def test_roles_and_tenants(wo_sessions: sessionmaker[Session], biz: Business) -> None:
    r = service.trigger(wo_sessions, risk(biz.devices[1], 0.6), POLICY, now=NOW)
    assert r.order_id is not None
    mine = Principal(user_id="u1", role=Role.FACILITY_MANAGER, client_id=biz.client_id)
    other = Principal(user_id="u2", role=Role.FACILITY_MANAGER, client_id=biz.other_client_id)
    desk = Principal(user_id="u3", role=Role.SERVICE_DESK)
    with wo_sessions.begin() as s:
        assert [o.id for o in service.list_orders(s, mine, OrderFilter())] == [r.order_id]
        assert service.list_orders(s, other, OrderFilter()) == []
        with pytest.raises(NotFound):
            service.get_order(s, other, r.order_id)
        with pytest.raises(NotFound):
            service.transition(s, other, r.order_id, "approved")
        service.transition(s, mine, r.order_id, "approved")  # the client approves its own
        with pytest.raises(Forbidden):
            service.transition(s, mine, r.order_id, "scheduled")
        service.transition(s, desk, r.order_id, "scheduled")
        with pytest.raises(Forbidden):
            service.assign(s, mine, r.order_id, biz.technicians["bruno"])
        o = service.assign(s, desk, r.order_id, biz.technicians["bruno"])
        assert o.assigned_technician_id == biz.technicians["bruno"]
        assert o.suggested_technician_id == biz.technicians["ana"]  # the suggestion stays


def test_parts_are_reserved_and_shortages_said(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    # one R410A bottle in stock (Porto); two leaks: the second one is short
    a = service.trigger(wo_sessions, risk(biz.devices[1], 0.6), POLICY, now=NOW)
    b = service.trigger(wo_sessions, risk(biz.devices[2], 0.6), POLICY, now=NOW)
    assert a.order_id and b.order_id
    with wo_sessions() as s:
        ra = {r.part_number: r for r in service.reservations(s, a.order_id)}
        rb = {r.part_number: r for r in service.reservations(s, b.order_id)}
        assert (ra["RFG-R410A-5KG"].reserved, ra["RFG-R410A-5KG"].short) == (1, 0)
        assert ra["RFG-R410A-5KG"].depot_id == biz.depots["porto"]
        assert (rb["RFG-R410A-5KG"].reserved, rb["RFG-R410A-5KG"].short) == (0, 1)
        assert ra["BRZ-ROD-KIT"].short == 1  # catalogued, stocked nowhere
        stock = s.get(Stock, (biz.depots["porto"], "RFG-R410A-5KG"))
        assert stock is not None and (stock.on_hand, stock.reserved) == (1, 1)
    # cancelling the first gives the bottle back; closing uses it up
    with wo_sessions.begin() as s:
        service.transition(s, ADMIN, a.order_id, "cancelled")
    with wo_sessions() as s:
        stock = s.get(Stock, (biz.depots["porto"], "RFG-R410A-5KG"))
        assert stock is not None and (stock.on_hand, stock.reserved) == (1, 0)
        assert all(r.released for r in service.reservations(s, a.order_id))


def test_bearing_parts_come_from_the_technicians_depot(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    r = service.trigger(
        wo_sessions, risk(biz.devices[1], 0.6, fault="bearing_wear"), POLICY, now=NOW
    )
    assert r.order_id is not None
    with wo_sessions() as s:
        o = s.get(WorkOrder, r.order_id)
        assert o is not None and o.suggested_technician_id == biz.technicians["bruno"]
        (res,) = service.reservations(s, r.order_id)
        assert (res.part_number, res.reserved, res.depot_id) == (
            "BRG-6205-2RS",
            2,
            biz.depots["lisbon"],
        )
    with wo_sessions.begin() as s:
        for state in ("approved", "scheduled", "in_progress", "complete", "closed"):
            service.transition(s, ADMIN, r.order_id, state)
    with wo_sessions() as s:
        stock = s.get(Stock, (biz.depots["lisbon"], "BRG-6205-2RS"))
        assert stock is not None and (stock.on_hand, stock.reserved) == (8, 0)


def test_alarm_orders_and_desk_echo(wo_sessions: sessionmaker[Session], biz: Business) -> None:
    t = Trigger(
        device_id=biz.devices[1],
        fault="alarm:device_offline",
        source=Source.ALARM,
        at=NOW,
        evidence={"alarm": {"name": "device_offline", "severity": "major"}},
    )
    r = service.trigger(wo_sessions, t, POLICY, now=NOW)
    assert r.outcome == "opened" and r.priority == 3  # 2 (a visit) + 1 (medium)
    assert service.trigger(wo_sessions, t, POLICY, now=NOW).outcome == "unchanged"
    assert r.order_id is not None
    # a state change that came from the desk is not sent back to that desk
    with wo_sessions.begin() as s:
        service.transition(
            s,
            Principal(user_id=None, role=Role.SERVICE_DESK),
            r.order_id,
            "approved",
            actor=f"desk:{biz.desks[0]}",
            from_desk=biz.desks[0],
        )
        service.comment(s, ADMIN, r.order_id, "parts ordered")
    assert count(wo_sessions, OutboxMessage, event="state_changed") == 0
    assert count(wo_sessions, OutboxMessage, event="commented") == 1


def test_concurrent_triggers_open_one_order(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    """Many threads racing on SQLite; PostgreSQL and processes: tests/integration."""
    results: list[str] = []
    lock = threading.Lock()

    def go(i: int) -> None:
        r = service.trigger(wo_sessions, risk(biz.devices[0], 0.4 + i * 0.01), POLICY, now=NOW)
        with lock:
            results.append(r.outcome)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count("opened") == 1
    assert set(results) <= {"opened", "updated", "unchanged"}
    assert count(wo_sessions, WorkOrder) == 1
    assert count(wo_sessions, OutboxMessage, event="created") == 1
    with wo_sessions() as s:
        n = s.scalar(select(func.count()).select_from(Reservation))
        assert n == 2  # one order's parts, reserved once


def test_the_suggestion_counts_the_orders_this_process_opened_and_rereads_the_crew_when_due(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    """The crew's open orders are read once per ``crew_refresh_s``; orders opened here
    count at once, a cancel made meanwhile counts once the crew is read again."""
    cached = OrderPolicy(crew_refresh_s=3600)
    loads = []
    for dev in biz.devices:  # three refrigerant leaks in Lisbon: Ana each time
        r = service.trigger(wo_sessions, risk(dev, 0.62), cached, now=NOW)
        with wo_sessions() as s:
            o = s.get(WorkOrder, r.order_id)
            assert o is not None and o.suggestion is not None
            assert o.suggested_technician_id == biz.technicians["ana"]
            loads.append(o.suggestion["open_orders"])
    assert loads == [0, 1, 2]
    with wo_sessions.begin() as s:
        for o in s.scalars(select(WorkOrder)):
            service.transition(s, ADMIN, o.id, "cancelled", now=NOW)
    later = NOW + cached.cooldown + timedelta(seconds=1)  # a device's risk cool-down
    fouling = risk(biz.devices[0], 0.62, fault="condenser_fouling")
    r = service.trigger(wo_sessions, fouling, cached, now=later)
    with wo_sessions() as s:
        o = s.get(WorkOrder, r.order_id)
        assert o is not None and o.suggestion is not None
        assert o.suggestion["open_orders"] == 3  # the cancels are not read yet
    fresh = OrderPolicy(crew_refresh_s=0)
    valves = risk(biz.devices[1], 0.62, fault="valve_wear")
    r = service.trigger(wo_sessions, valves, fresh, now=later)
    with wo_sessions() as s:
        o = s.get(WorkOrder, r.order_id)
        assert o is not None and o.suggestion is not None
        assert o.suggestion["open_orders"] == 1  # only the fouling order is open
