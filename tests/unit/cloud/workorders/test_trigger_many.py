"""Triggers decided together (:func:`cloud.workorders.service.trigger_many`) answer and
write what the same triggers called one after the other do; and what one trigger costs
in statements."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker
from support.workorder_world import NOW, Business

from cloud.auth.principal import Principal
from cloud.db import make_engine, make_sessionmaker
from cloud.errors import NotFound
from cloud.workorders import service
from cloud.workorders.models import OutboxMessage, Source, WorkOrder, WorkOrderEvent
from cloud.workorders.service import OrderPolicy, Trigger, TriggerResult

POLICY = OrderPolicy(public_url="https://ew.example.com", crew_refresh_s=3600)
ADMIN = Principal.system()


def risk(device: str, p72: float, fault: str = "refrigerant_leak", p24: float = 0.1) -> Trigger:
    return Trigger(
        device_id=device,
        fault=fault,
        source=Source.RISK,
        at=NOW,
        p24=p24,
        p72=p72,
        threshold=0.3,
        health=round(100 * (1 - p72)),
        evidence={"top_signals": [{"signal": "superheat", "share": 0.6}]},
    )


def alarm(device: str, name: str = "device_offline") -> Trigger:
    return Trigger(
        device_id=device,
        fault=f"alarm:{name}",
        source=Source.ALARM,
        at=NOW,
        evidence={"alarm": {"name": name}},
        note=f"local alarm {name}",
    )


@pytest.fixture
def twin(business_template: tuple[Path, Business], tmp_path: Path) -> Iterator[Engine]:
    """A second copy of the business, for the same triggers one at a time."""
    target = tmp_path / "twin.db"
    shutil.copyfile(business_template[0], target)
    engine = make_engine(f"sqlite:///{target}")
    try:
        yield engine
    finally:
        engine.dispose()


def one_by_one(sessions: sessionmaker[Session], triggers: list[Trigger]) -> list[Any]:
    out: list[Any] = []
    for t in triggers:
        try:
            out.append(service.trigger(sessions, t, POLICY, now=NOW))
        except NotFound as exc:
            out.append(exc)
    return out


def same_answers(batch: list[Any], single: list[Any]) -> None:
    """Order ids differ between the two registries; everything else must not."""
    assert len(batch) == len(single)
    for b, s in zip(batch, single, strict=True):
        if isinstance(s, NotFound):
            assert isinstance(b, NotFound) and str(b) == str(s)
        else:
            assert isinstance(b, TriggerResult)
            assert (b.outcome, b.number, b.priority) == (s.outcome, s.number, s.priority)
            assert (b.order_id is None) == (s.order_id is None)


def snapshot(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows triggers write, with order ids replaced by order numbers."""
    with sessions() as s:
        numbers = {oid: number for oid, number in s.execute(select(WorkOrder.id, WorkOrder.number))}

        def rows(sql: str) -> list[tuple[Any, ...]]:
            out = []
            for row in s.execute(text(sql)):
                values = []
                for v in row:
                    if isinstance(v, str):
                        for order_id, number in numbers.items():
                            v = v.replace(order_id, f"WO{number}")
                    values.append(v)
                out.append(tuple(values))
            return sorted(out, key=repr)

        return {
            "orders": rows("SELECT * FROM work_orders"),
            "events": rows(
                "SELECT work_order_id, seq, at, kind, actor, from_state, to_state, note, detail"
                " FROM work_order_events"
            ),
            "device_events": rows(
                "SELECT device_id, at, kind, summary, detail, created_by FROM device_events"
            ),
            "outbox": rows("SELECT * FROM outbox"),
            "reservations": rows(
                "SELECT work_order_id, part_number, depot_id, quantity, reserved, short, released"
                " FROM reservations"
            ),
            "stock": rows("SELECT * FROM stock"),
        }


def mixed(biz: Business) -> list[Trigger]:
    d = biz.devices
    return [
        risk(d[0], 0.6),  # opens (critical, vulnerable occupant: priority 1)
        risk(d[1], 0.6),  # opens, takes Porto's only R410A bottle
        risk(d[1], 0.62),  # same order, too small a rise: unchanged
        risk(d[1], 0.9, p24=0.6),  # same order, risen: updated (priority 2)
        risk(d[2], 0.6),  # opens, short of R410A
        risk(d[1], 0.6, fault="bearing_wear"),  # another fault named: the same order
        risk(d[2], 0.2),  # below the threshold
        alarm(d[2]),  # an alarm order
        alarm(d[2]),  # ... raised again: unchanged
        risk("no-such-device", 0.9),  # NotFound in its place
        risk(d[1], 0.99, p24=0.7),  # updated again
        risk(biz.other_device, 0.7, fault="fan_imbalance"),  # the other client (no desk)
    ]


def test_a_batch_answers_and_writes_what_the_same_triggers_one_by_one_do(
    wo_sessions: sessionmaker[Session], twin: Engine, biz: Business
) -> None:
    triggers = mixed(biz)
    batch = service.trigger_many(wo_sessions, triggers, POLICY, now=NOW)
    single = one_by_one(make_sessionmaker(twin), triggers)
    same_answers(batch, single)
    assert [r.outcome if isinstance(r, TriggerResult) else "not_found" for r in batch] == [
        "opened",
        "opened",
        "unchanged",
        "updated",
        "opened",
        "unchanged",
        "below_threshold",
        "opened",
        "unchanged",
        "not_found",
        "updated",
        "opened",
    ]
    assert snapshot(wo_sessions) == snapshot(make_sessionmaker(twin))


def test_one_order_per_device_and_fault_whatever_the_batch_repeats(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    dev = biz.devices[1]
    grid = [0.5, 0.6, 0.55, 0.7, 0.7, 0.65, 0.9]
    results = service.trigger_many(wo_sessions, [risk(dev, p) for p in grid], POLICY, now=NOW)
    outcomes = [r.outcome for r in results if isinstance(r, TriggerResult)]
    assert outcomes == [
        "opened",
        "updated",
        "unchanged",
        "updated",
        "unchanged",
        "unchanged",
        "updated",
    ]
    assert len({r.order_id for r in results if isinstance(r, TriggerResult)}) == 1
    with wo_sessions() as s:
        (order,) = s.scalars(select(WorkOrder)).all()
        assert order.p72 == 0.9 and order.open_key is not None
        history = s.execute(
            select(WorkOrderEvent.seq, WorkOrderEvent.kind).order_by(WorkOrderEvent.seq)
        ).all()
        assert [tuple(h) for h in history] == [
            (1, "opened"),
            (2, "updated"),
            (3, "updated"),
            (4, "updated"),
        ]
        messages = s.execute(select(OutboxMessage.event).order_by(OutboxMessage.id)).all()
        assert [m.event for m in messages] == ["created", "updated", "updated", "updated"]


def test_an_open_order_is_updated_not_duplicated_and_its_history_goes_on(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    dev = biz.devices[1]
    first = service.trigger(wo_sessions, risk(dev, 0.5), POLICY, now=NOW)
    assert first.outcome == "opened"
    later = NOW + timedelta(hours=2)
    results = service.trigger_many(
        wo_sessions, [risk(dev, 0.51), risk(dev, 0.85), risk(dev, 0.8)], POLICY, now=later
    )
    assert [(r.outcome, r.order_id) for r in results if isinstance(r, TriggerResult)] == [
        ("unchanged", first.order_id),
        ("updated", first.order_id),
        ("unchanged", first.order_id),
    ]
    with wo_sessions() as s:
        (order,) = s.scalars(select(WorkOrder)).all()
        assert (order.p72, order.priority, order.updated_at) == (0.85, 2, later)
        assert order.sla_due_at == later + timedelta(hours=24)
        kinds = s.scalars(select(WorkOrderEvent.kind).order_by(WorkOrderEvent.seq)).all()
        assert kinds == ["opened", "updated"]


def test_the_cool_down_holds_for_every_trigger_of_the_batch(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    dev = biz.devices[2]
    first = service.trigger(wo_sessions, risk(dev, 0.6), POLICY, now=NOW)
    assert first.order_id is not None
    with wo_sessions.begin() as s:
        service.transition(s, ADMIN, first.order_id, "cancelled", now=NOW)
    batch = [risk(dev, 0.7), risk(dev, 0.95), risk(dev, 0.7, fault="bearing_wear")]
    soon = service.trigger_many(wo_sessions, batch, POLICY, now=NOW + timedelta(hours=1))
    assert [r.outcome for r in soon if isinstance(r, TriggerResult)] == [
        "cooldown",
        "cooldown",
        "cooldown",  # another fault named: the device's risk cool-down all the same
    ]
    after = NOW + POLICY.cooldown + timedelta(seconds=1)
    late = service.trigger_many(wo_sessions, batch[:2], POLICY, now=after)
    assert [r.outcome for r in late if isinstance(r, TriggerResult)] == ["opened", "updated"]
    with wo_sessions() as s:
        orders = s.scalars(select(WorkOrder).where(WorkOrder.fault == "refrigerant_leak")).all()
        assert len(orders) == 2 and sum(o.open_key is not None for o in orders) == 1


def test_batches_larger_than_a_chunk_answer_as_one_by_one(
    wo_sessions: sessionmaker[Session],
    twin: Engine,
    biz: Business,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks are separate transactions: a device and fault repeated across them still
    gets one order, raised by the later chunk."""
    monkeypatch.setattr(service, "TRIGGER_CHUNK", 3)
    triggers = mixed(biz) + mixed(biz)[::-1]
    batch = service.trigger_many(wo_sessions, triggers, POLICY, now=NOW)
    same_answers(batch, one_by_one(make_sessionmaker(twin), triggers))
    assert snapshot(wo_sessions) == snapshot(make_sessionmaker(twin))


def test_the_suggestion_weighs_the_orders_opened_earlier_in_the_batch(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    results = service.trigger_many(
        wo_sessions, [risk(d, 0.62) for d in biz.devices], POLICY, now=NOW
    )
    with wo_sessions() as s:
        loads = []
        for r in results:
            assert isinstance(r, TriggerResult)
            o = s.get(WorkOrder, r.order_id)
            assert o is not None and o.suggestion is not None
            assert o.suggested_technician_id == biz.technicians["ana"]
            loads.append(o.suggestion["open_orders"])
    assert loads == [0, 1, 2]


def test_trigger_raises_not_found_and_writes_nothing(
    wo_sessions: sessionmaker[Session],
) -> None:
    with pytest.raises(NotFound, match="device no-such-device not found"):
        service.trigger(wo_sessions, risk("no-such-device", 0.9), POLICY, now=NOW)
    assert snapshot(wo_sessions)["orders"] == []


# -- what a trigger costs ----------------------------------------------------------------------


class Statements:
    """The statements an engine sends, by their first words."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(" ".join(statement.split()[:3]))

    def count(self, work: Any) -> list[str]:
        self.seen.clear()
        work()
        return list(self.seen)


def test_statements_per_trigger(wo_sessions: sessionmaker[Session], biz: Business) -> None:
    """A regression guard on round trips (the SQL statements sent; the connection's
    BEGIN and COMMIT come on top): the technicians are read once per crew_refresh_s, so
    one order is opened first."""
    engine = wo_sessions.kw["bind"]
    assert isinstance(engine, Engine)
    statements = Statements(engine)
    d = biz.devices
    service.trigger(wo_sessions, risk(d[0], 0.6, fault="bearing_wear"), POLICY, now=NOW)

    def trigger(t: Trigger) -> None:
        service.trigger(wo_sessions, t, POLICY, now=NOW)

    opened = statements.count(lambda: trigger(risk(d[1], 0.6)))
    assert opened == [
        "SELECT devices.id, devices.criticality,",  # device, site, client, desks
        "SELECT work_orders.id, work_orders.number,",  # the open order, locked
        "SELECT work_orders.device_id, work_orders.fault,",  # the last close
        "INSERT INTO work_order_numbers",
        "INSERT INTO work_orders",
        "INSERT INTO work_order_events",
        "INSERT INTO device_events",
        "INSERT INTO outbox",
        "SELECT parts.number, stock.depot_id,",  # parts and stock, not locked
        "SELECT stock.depot_id, stock.part_number,",  # stock with some free, locked
        "UPDATE stock SET",
        "INSERT INTO reservations",
    ]
    # no part of the fault's in stock: nothing locked, nothing to update
    short = statements.count(lambda: trigger(risk(d[2], 0.6)))
    assert len(short) == len(opened) - 2 and "UPDATE stock SET" not in short
    unchanged = statements.count(lambda: trigger(risk(d[1], 0.6)))
    assert len(unchanged) == 2
    updated = statements.count(lambda: trigger(risk(d[1], 0.9)))
    assert updated[2:] == [
        "UPDATE work_orders SET",
        "SELECT work_order_events.work_order_id, max(work_order_events.seq)",
        "INSERT INTO work_order_events",
        "INSERT INTO outbox",
    ]
    # a batch shares the statements (SQLite numbers new orders one at a time): the first
    # device's order is open, the three others are opened (the risk orders of the second
    # and third cancelled first, their cool-down over: a device has one risk order open)
    with wo_sessions.begin() as s:
        for dev in d[1:3]:
            order_id = s.scalar(select(WorkOrder.id).where(WorkOrder.device_id == dev))
            service.transition(s, ADMIN, str(order_id), "cancelled", now=NOW)
    later = NOW + POLICY.cooldown + timedelta(seconds=1)
    many = [risk(dev, 0.6, fault="bearing_wear") for dev in [*d, biz.other_device]]
    batch = statements.count(lambda: service.trigger_many(wo_sessions, many, POLICY, now=later))
    assert batch.count("INSERT INTO work_order_numbers") == 3
    assert len(batch) - 3 == len(opened) - 1
