"""Batches of triggers (:func:`cloud.workorders.service.trigger_many`) on the real
PostgreSQL, from several processes at once, and the delivery claim over a burst's outbox.

- Processes each deciding shuffled batches over the same devices and faults, with
  repeats inside a batch and new devices of their own (several order numbers in one
  statement): one risk order per device, whatever fault each trigger names, opened by
  exactly one trigger; the history and the outbox agree with the answers; every number
  once.
- A delivery claim over thousands of pending messages walks them in id order and stops
  at the batch, whatever the planner's statistics say (they are older than the burst).
"""

from __future__ import annotations

import random
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select, text, update
from support.workorder_world import seed

from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.delivery.worker import DeliveryWorker
from cloud.registry.models import Device, new_id
from cloud.workorders.models import (
    DeliveryState,
    OutboxMessage,
    Source,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderNumber,
)
from cloud.workorders.service import OrderPolicy, Trigger, TriggerResult, trigger_many

pytestmark = pytest.mark.integration

PROCESSES = 4
BATCH = 40
SHARED_DEVICES = 6
FAULTS = ("refrigerant_leak", "bearing_wear", "condenser_fouling")
OWN_DEVICES = 60
"""Devices only one process triggers: their orders open many to a transaction."""
POLICY = OrderPolicy(rise_step=0.04)
GRID = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

Spec = tuple[int, str, str, float]
"""(index, device id, fault, P72)."""


def batches(
    name: str, url: str, barrier: Barrier, results: Queue[Any], specs: Sequence[Spec]
) -> None:
    """Decide ``specs`` in batches of :data:`BATCH`; put ``(name, [(index, outcome,
    order id)])`` or ``(name, traceback)``."""
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            s.execute(select(1))
        barrier.wait(timeout=120)
        out = []
        for start in range(0, len(specs), BATCH):
            chunk = specs[start : start + BATCH]
            now = datetime.now(UTC)
            triggers = [
                Trigger(d, f, Source.RISK, now, p24=0.1, p72=p72, threshold=0.3)
                for _, d, f, p72 in chunk
            ]
            for (index, *_), r in zip(
                chunk, trigger_many(sessions, triggers, POLICY, now=now), strict=True
            ):
                assert isinstance(r, TriggerResult), r
                out.append((index, r.outcome, r.order_id))
        results.put((name, out))
    except BaseException:
        results.put((name, traceback.format_exc()))
        raise
    finally:
        engine.dispose()


@pytest.fixture
def engine(pg_schema_url: str) -> Iterator[Engine]:
    migrate(pg_schema_url)
    engine = make_engine(pg_schema_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.mark.timeout(240)
def test_concurrent_batches_open_one_risk_order_per_device(
    pg_schema_url: str, spawn: SpawnContext, engine: Engine
) -> None:
    sessions = make_sessionmaker(engine)
    biz = seed(sessions, devices=SHARED_DEVICES)
    own = [[new_id() for _ in range(OWN_DEVICES)] for _ in range(PROCESSES)]
    with sessions.begin() as s:
        s.execute(
            insert(Device),
            [
                {"id": d, "gateway_id": "gw-lisbon", "name": f"own-{d}", "asset_type": "compressor"}
                for devices in own
                for d in devices
            ],
        )
    rng = random.Random(11)
    shared = [(d, f) for d in biz.devices for f in FAULTS]
    specs: list[Spec] = []
    per_process: list[list[Spec]] = [[] for _ in range(PROCESSES)]
    for k in range(PROCESSES):
        pairs = [rng.choice(shared) for _ in range(120)] + [(d, FAULTS[0]) for d in own[k]]
        rng.shuffle(pairs)
        for d, f in pairs:
            spec = (len(specs), d, f, rng.choice(GRID))
            specs.append(spec)
            per_process[k].append(spec)
    barrier = spawn.Barrier(PROCESSES + 1)
    results: Queue[Any] = spawn.Queue()
    procs = [
        spawn.Process(target=batches, args=(f"p{k}", pg_schema_url, barrier, results, mine))
        for k, mine in enumerate(per_process)
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        got = dict(results.get(timeout=180) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    failed = [r for r in got.values() if isinstance(r, str)]
    assert not failed, "\n".join(failed)
    answers = {i: (outcome, order) for out in got.values() for i, outcome, order in out}
    assert sorted(answers) == [i for i, *_ in specs]

    with sessions() as s:
        orders = list(s.scalars(select(WorkOrder)))
        history = defaultdict(list)
        for e in s.scalars(select(WorkOrderEvent).order_by(WorkOrderEvent.seq)):
            history[e.work_order_id].append((e.seq, e.kind))
        messages = Counter((m.work_order_id, m.event) for m in s.scalars(select(OutboxMessage)))
        numbers = list(s.scalars(select(WorkOrderNumber.number)))
    by_device = {o.device_id: o for o in orders}
    devices = {d for _, d, _, _ in specs}
    assert len(orders) == len(by_device) == len(devices), "two risk orders for a device"
    assert len({o.number for o in orders}) == len(orders)
    assert {o.number for o in orders} <= set(numbers)
    for device in devices:
        order = by_device[device]
        mine = [answers[i] for i, d, _, _ in specs if d == device]
        said = Counter(outcome for outcome, _ in mine)
        assert said["opened"] == 1, (device, said)
        opener = [f for i, d, f, _ in specs if d == device and answers[i][0] == "opened"]
        assert opener == [order.fault]  # the fault the opening trigger named
        assert set(said) <= {"opened", "updated", "unchanged"}
        assert {order_id for _, order_id in mine} == {order.id}
        kinds = [kind for _, kind in history[order.id]]
        assert [seq for seq, _ in history[order.id]] == list(range(1, len(kinds) + 1))
        assert kinds == ["opened"] + ["updated"] * said["updated"]
        assert messages[(order.id, "created")] == 1
        assert messages[(order.id, "updated")] == said["updated"]
        highest = max(p72 for _, d, _, p72 in specs if d == device)
        assert order.p72 == highest


@pytest.mark.timeout(120)
def test_a_claim_walks_the_pending_messages_in_order_and_stops_at_the_batch(
    engine: Engine,
) -> None:
    """Thousands pending, statistics from before they were written: the claim's plan
    has no sort of every due message, and its answers are the oldest claimable ones."""
    sessions = make_sessionmaker(engine)
    with engine.begin() as conn:  # statistics of an empty outbox, kept
        conn.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = false)"))
        conn.execute(text("ANALYZE outbox"))
    biz = seed(sessions, devices=0)
    n = 3000
    with sessions.begin() as s:
        s.execute(
            insert(Device),
            [
                {"id": f"d{i}", "gateway_id": "gw-lisbon", "name": f"d{i}", "asset_type": "fan"}
                for i in range(n)
            ],
        )
    now = datetime.now(UTC)
    first = [Trigger(f"d{i}", "fan_imbalance", Source.ALARM, now) for i in range(n)]
    assert all(
        isinstance(r, TriggerResult) and r.outcome == "opened"
        for r in trigger_many(sessions, first, POLICY, now=now)
    )
    with sessions.begin() as s:  # the oldest 500 in backoff, with an update behind them
        ids = list(s.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id).limit(500)))
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(next_attempt_at=now + timedelta(minutes=5))
        )
        orders = list(
            s.scalars(select(OutboxMessage.work_order_id).where(OutboxMessage.id.in_(ids)))
        )
        s.execute(
            insert(OutboxMessage),
            [
                {
                    "work_order_id": o,
                    "desk_id": biz.desks[0],
                    "event": "updated",
                    "state": DeliveryState.PENDING,
                    "created_at": now,
                    "next_attempt_at": now,
                }
                for o in orders
            ],
        )
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FOR UPDATE SKIP LOCKED" in statement or "enable_sort" in statement:
            statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", seen)
    worker = DeliveryWorker(sessions, name="probe", batch=20)
    try:
        claimed = worker.claim()
    finally:
        worker.close()
        event.remove(engine, "before_cursor_execute", seen)
    with sessions() as s:
        expected = list(
            s.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.event == "created", OutboxMessage.id.not_in(ids))
                .order_by(OutboxMessage.id)
                .limit(20)
            )
        )
        pending = s.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.state == DeliveryState.PENDING)
        )
    assert pending == n + 500
    assert [c.id for c in claimed] == expected  # none of the blocked updates
    (setting, _), (statement, params), *_ = statements
    assert setting == "SET LOCAL enable_sort = off"
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute("SET LOCAL enable_sort = off")  # as the worker does
            cur.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + statement, params)
            plan = "\n".join(row[0] for row in cur.fetchall())
        conn.rollback()
    assert "Sort" not in plan, plan
    assert "Index Scan using ix_outbox_state_id on outbox" in plan, plan
