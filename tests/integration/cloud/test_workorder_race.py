"""Never two open risk orders for a device, nor two for a device and alarm, on the real
PostgreSQL, under concurrent triggers from several OS processes and several risk scorers.

- 1,000 triggers from ``PROCESSES`` spawned processes (each with its own engine), released
  by one barrier, over 5 devices × 4 faults (3 a risk model may name, 1 alarm): one risk
  order per device, whatever fault each trigger named, and one alarm order, each opened
  by exactly one trigger; every other trigger updated it (its risk rose) or left it as it
  was, and the order, its history and its outbox agree with the answers.
- Triggers racing with the close of their order: no trigger changes the order once it
  is closed, none opens a new one during the cool-down; one does after it.
- Real ``edgewatch-cloud scorer --once`` processes over the same alarm requests, split
  (``0/2`` and ``1/2``) and misconfigured (both ``0/1``): one order per device and fault.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from support.workorder_world import DESK_SECRET, seed

from cloud.auth.principal import Principal
from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.registry.models import Client, Device, DeviceEvent, EventKind, Gateway, Site, SiteKind
from cloud.risk.models import RiskRequest
from cloud.workorders import policy
from cloud.workorders.models import (
    Desk,
    OutboxMessage,
    Part,
    Reservation,
    Source,
    Stock,
    WorkOrder,
    WorkOrderEvent,
    open_key,
)
from cloud.workorders.policy import State
from cloud.workorders.service import OrderPolicy, Trigger, transition, trigger

pytestmark = pytest.mark.integration

PROCESSES = 5
TRIGGERS = 1_000
DEVICES = 5
RISK_FAULTS = ("refrigerant_leak", "bearing_wear", "condenser_fouling")
ALARM_FAULT = "alarm:discharge_temp_high"
GRID = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""P72 values the risk triggers draw from, 0.05 apart."""
POLICY = OrderPolicy(rise_step=0.04)
"""Every step up the grid is a significant rise, so the order ends at the largest P72."""
THRESHOLD = 0.3
P24 = 0.1

Spec = tuple[int, str, str, float | None]
"""(index, device id, fault, P72 or None for an alarm)."""


def say(line: str) -> None:
    print(f"[race] {line}", flush=True)  # noqa: T201 - the test log documents the figures


def make_trigger(device_id: str, fault: str, p72: float | None, now: datetime) -> Trigger:
    if p72 is None:
        return Trigger(
            device_id=device_id,
            fault=fault,
            source=Source.ALARM,
            at=now,
            evidence={"alarm": {"name": fault}},
        )
    return Trigger(
        device_id=device_id,
        fault=fault,
        source=Source.RISK,
        at=now,
        p24=P24,
        p72=p72,
        threshold=THRESHOLD,
        health=round(100 * (1 - p72)),
    )


# ---- in spawned processes ------------------------------------------------------------------


def _child(
    name: str,
    url: str,
    barrier: Barrier,
    results: Queue[Any],
    work: Callable[[sessionmaker[Session]], Any],
) -> None:
    """Connect, wait at the barrier, run ``work``; put ``(name, result or traceback)``."""
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            s.execute(select(1))  # connected before the start
        barrier.wait(timeout=120)
        results.put((name, work(sessions)))
    except BaseException:
        results.put((name, RuntimeError(traceback.format_exc())))
        raise
    finally:
        engine.dispose()


def fire(name: str, url: str, barrier: Barrier, results: Queue[Any], specs: Sequence[Spec]) -> None:
    """Trigger each spec once; the result: ``[(index, outcome, order id, priority)]``."""

    def work(sessions: sessionmaker[Session]) -> list[tuple[int, str, str | None, int | None]]:
        out = []
        for index, device_id, fault, p72 in specs:
            now = datetime.now(UTC)
            r = trigger(sessions, make_trigger(device_id, fault, p72, now), POLICY, now=now)
            out.append((index, r.outcome, r.order_id, r.priority))
        return out

    _child(name, url, barrier, results, work)


def fire_until_cooled(
    name: str, url: str, barrier: Barrier, results: Queue[Any], device_id: str, rng_seed: int
) -> None:
    """Trigger risks from the grid for one device and fault until the cool-down answered
    15 times; the result: the outcomes in order."""

    def work(sessions: sessionmaker[Session]) -> list[str]:
        rng = random.Random(rng_seed)
        outcomes: list[str] = []
        while outcomes.count("cooldown") < 15 and len(outcomes) < 2_000:
            now = datetime.now(UTC)
            t = make_trigger(device_id, RISK_FAULTS[0], rng.choice(GRID), now)
            outcomes.append(trigger(sessions, t, POLICY, now=now).outcome)
        return outcomes

    _child(name, url, barrier, results, work)


def close_after(
    name: str, url: str, barrier: Barrier, results: Queue[Any], order_id: str, delay_s: float
) -> None:
    """Move the order through its life cycle to closed, ``delay_s`` after the start."""

    def work(sessions: sessionmaker[Session]) -> str:
        time.sleep(delay_s)
        for target in (
            State.APPROVED,
            State.SCHEDULED,
            State.IN_PROGRESS,
            State.COMPLETE,
            State.CLOSED,
        ):
            with sessions() as s:
                transition(s, Principal.system(), order_id, target, note=f"race: {target}")
                s.commit()
        return "closed"

    _child(name, url, barrier, results, work)


def run_together(
    spawn: SpawnContext, url: str, jobs: Sequence[tuple[Callable[..., None], tuple[Any, ...]]]
) -> tuple[dict[str, Any], float]:
    """Start one process per ``(target, extra args)``, release them together; their
    results by name, and the seconds from the release to the last result."""
    barrier = spawn.Barrier(len(jobs) + 1)
    results: Queue[Any] = spawn.Queue()
    procs = [
        spawn.Process(target=target, args=(f"p{k}", url, barrier, results, *args))
        for k, (target, args) in enumerate(jobs)
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        started = time.perf_counter()
        got = dict(results.get(timeout=120) for _ in procs)
        took = time.perf_counter() - started
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    failed = {name: r for name, r in got.items() if isinstance(r, Exception)}
    assert not failed, "\n".join(str(r) for r in failed.values())
    return got, took


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def engine(pg_schema_url: str) -> Iterator[Engine]:
    """The migrated registry's engine."""
    migrate(pg_schema_url)
    engine = make_engine(pg_schema_url)
    try:
        yield engine
    finally:
        engine.dispose()


def count(sessions: sessionmaker[Session], model: type, **where: object) -> int:
    with sessions() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.scalar(stmt) or 0)


# ---- 1,000 triggers --------------------------------------------------------------------------


@pytest.mark.timeout(240)
def kind(device_id: str, fault: str) -> tuple[str, str]:
    """What can be open once: a device's risk order, or its order for one alarm."""
    return (device_id, "risk") if fault in RISK_FAULTS else (device_id, fault)


def test_1000_concurrent_triggers_from_several_processes_open_one_order_per_device_and_kind(
    pg_schema_url: str, spawn: SpawnContext, engine: Engine
) -> None:
    sessions = make_sessionmaker(engine)
    biz = seed(sessions, devices=DEVICES)
    faults = (*RISK_FAULTS, ALARM_FAULT)
    pairs = [(d, f) for d in biz.devices for f in faults]
    rng = random.Random(7)
    specs: list[Spec] = [
        (i, d, f, None if f == ALARM_FAULT else rng.choice(GRID))
        for i, (d, f) in enumerate(pairs[i % len(pairs)] for i in range(TRIGGERS))
    ]
    rng.shuffle(specs)
    jobs = [(fire, (specs[k::PROCESSES],)) for k in range(PROCESSES)]
    got, took = run_together(spawn, pg_schema_url, jobs)
    answers = {i: (outcome, order, prio) for out in got.values() for i, outcome, order, prio in out}
    assert sorted(answers) == list(range(TRIGGERS))
    outcomes = Counter(outcome for outcome, _, _ in answers.values())
    say(
        f"{TRIGGERS} triggers from {PROCESSES} processes on {len(pairs)} device/fault "
        f"pairs in {took:.2f} s ({TRIGGERS / took:.0f}/s): {dict(outcomes)}"
    )
    kinds = sorted({kind(d, f) for d, f in pairs})
    assert set(outcomes) <= {"opened", "updated", "unchanged"}
    assert outcomes["opened"] == len(kinds)

    with sessions() as s:
        orders = list(s.scalars(select(WorkOrder)))
        devices = {d.id: d for d in s.scalars(select(Device))}
        events = defaultdict(list)
        for e in s.scalars(select(WorkOrderEvent).order_by(WorkOrderEvent.seq)):
            events[e.work_order_id].append(e)
        messages = Counter((m.work_order_id, m.event) for m in s.scalars(select(OutboxMessage)))
        opened_events = Counter(
            str(e.detail["work_order_id"])
            for e in s.scalars(
                select(DeviceEvent).where(DeviceEvent.kind == EventKind.WORK_ORDER_OPENED)
            )
            if e.detail
        )
        reservations = Counter(r.work_order_id for r in s.scalars(select(Reservation)))
        reserved = defaultdict(int)
        for r in s.scalars(select(Reservation)):
            if r.depot_id is not None:
                reserved[(r.depot_id, r.part_number)] += r.reserved
        stock = {(st.depot_id, st.part_number): st for st in s.scalars(select(Stock))}
        parts = set(s.scalars(select(Part.number)))
        desks = int(s.scalar(select(func.count()).select_from(Desk)) or 0)
    assert desks == 1
    by_kind = {kind(o.device_id, o.fault): o for o in orders}
    assert len(orders) == len(by_kind) == len(kinds), "two orders for a device's risk or alarm"
    for device_id, fault in kinds:
        order = by_kind[(device_id, fault)]
        assert order.open_key == open_key(device_id, order.fault, order.source)
        mine = [(answers[i], p72) for i, d, f, p72 in specs if kind(d, f) == (device_id, fault)]
        said = Counter(outcome for (outcome, _, _), _ in mine)
        assert said["opened"] == 1, (device_id, fault, said)
        opener = [f for i, d, f, _ in specs if answers[i][0] == "opened" and d == device_id]
        assert order.fault in opener  # the fault the opening trigger named
        assert {order_id for (_, order_id, _), _ in mine} == {order.id}
        history = events[order.id]
        assert [e.kind for e in history] == ["opened"] + ["updated"] * said["updated"]
        assert messages[(order.id, "created")] == 1
        assert messages[(order.id, "updated")] == said["updated"]
        assert sum(n for (o, _), n in messages.items() if o == order.id) == len(history)
        assert opened_events[order.id] == 1
        assert reservations[order.id] == len(set(order.parts) & parts)
        if fault == ALARM_FAULT:
            assert said["unchanged"] == len(mine) - 1
            continue
        # the order carries the largest risk any trigger reported, and its priority
        highest = max(p72 for _, p72 in mine if p72 is not None)
        device = devices[device_id]
        expected_prio = policy.priority(
            policy.risk_points(P24, highest, THRESHOLD, highest),
            str(device.criticality),
            device.occupant_flags or [],
        )
        assert order.p72 == highest
        assert order.priority == expected_prio == min(prio for (_, _, prio), _ in mine)
        # each update raised the risk: the answers were serialised, none was lost
        risks = [e.detail["p72"] for e in history if e.detail]
        assert risks == sorted(set(risks)), risks
        said_risks = {o: sorted(p for (out, _, _), p in mine if out == o) for o in said}
        assert said_risks["opened"] == risks[:1]
        assert said_risks.get("updated", []) == risks[1:]
    for key, st in stock.items():
        assert st.reserved == reserved.get(key, 0) <= st.on_hand


# ---- triggers racing with a close ------------------------------------------------------------


@pytest.mark.timeout(240)
def test_triggers_racing_with_the_close_of_their_order_respect_the_cooldown(
    pg_schema_url: str, spawn: SpawnContext, engine: Engine
) -> None:
    sessions = make_sessionmaker(engine)
    biz = seed(sessions, devices=1)
    device_id = biz.devices[0]
    first = trigger(
        sessions, make_trigger(device_id, RISK_FAULTS[0], GRID[0], datetime.now(UTC)), POLICY
    )
    assert first.outcome == "opened" and first.order_id is not None
    jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
        (fire_until_cooled, (device_id, k)) for k in range(PROCESSES - 1)
    ]
    jobs.append((close_after, (first.order_id, 0.3)))
    got, took = run_together(spawn, pg_schema_url, jobs)
    runs: list[list[str]] = [r for r in got.values() if isinstance(r, list)]
    outcomes = Counter(o for run in runs for o in run)
    say(
        f"{sum(outcomes.values())} triggers from {len(runs)} processes racing with a close "
        f"in {took:.2f} s: {dict(outcomes)}"
    )
    assert set(outcomes) <= {"updated", "unchanged", "cooldown"}
    assert outcomes["cooldown"] >= 15 * len(runs)
    assert outcomes["updated"] + outcomes["unchanged"] > 0, "no trigger ran before the close"
    for run in runs:  # once a process saw the close, it never sees the order open again
        first_cool = run.index("cooldown")
        assert set(run[first_cool:]) == {"cooldown"}, run

    with sessions() as s:
        orders = list(s.scalars(select(WorkOrder)))
        assert len(orders) == 1
        order = orders[0]
        assert order.state == State.CLOSED and order.open_key is None
        assert order.closed_at is not None
        closed_at = order.closed_at
        history = list(
            s.scalars(
                select(WorkOrderEvent)
                .where(WorkOrderEvent.work_order_id == order.id)
                .order_by(WorkOrderEvent.seq)
            )
        )
        events = Counter(
            m.event
            for m in s.scalars(select(OutboxMessage).where(OutboxMessage.work_order_id == order.id))
        )
    closing = next(e.seq for e in history if e.to_state == State.CLOSED)
    updates = [e.seq for e in history if e.kind == "updated"]
    assert updates == sorted(updates) and all(seq < closing for seq in updates)
    assert len(updates) == outcomes["updated"]
    assert events == {"created": 1, "updated": outcomes["updated"], "state_changed": 5}

    # the cool-down holds to its end, and no longer
    t = make_trigger(device_id, RISK_FAULTS[0], GRID[-1], datetime.now(UTC))
    near_end = closed_at + POLICY.cooldown - timedelta(seconds=1)
    assert trigger(sessions, t, POLICY, now=near_end).outcome == "cooldown"
    after = trigger(sessions, t, POLICY, now=closed_at + POLICY.cooldown + timedelta(seconds=1))
    assert after.outcome == "opened" and after.order_id != order.id
    assert count(sessions, WorkOrder) == 2


# ---- scorer processes ------------------------------------------------------------------------

ALARMS = ("discharge_temp_high", "device_offline")
REPEATS = 3
"""Each alarm is raised this many times per device (one request row each)."""


def fleet_sites(sessions: sessionmaker[Session], client_id: str, per_parity: int) -> list[str]:
    """Sites (each with a gateway) until both shard parities have ``per_parity``."""
    made: dict[int, list[str]] = {0: [], 1: []}
    n = 0
    with sessions.begin() as s:
        while min(len(v) for v in made.values()) < per_parity:
            site = Site(client_id=client_id, name=f"site {n}", kind=SiteKind.OFFICE)
            s.add(site)
            s.flush()
            s.add(Gateway(id=f"gw-{n}", site_id=site.id))
            made[site.shard % 2].append(site.id)
            n += 1
    return [f"gw-{k}" for k in range(n)]


def add_devices(
    sessions: sessionmaker[Session], gateways: Sequence[str], per_gateway: int, tag: str
) -> list[str]:
    rows = [
        {"id": f"{tag}-{g}-{k}", "gateway_id": g, "name": f"{tag}-{k}", "asset_type": "compressor"}
        for g in gateways
        for k in range(per_gateway)
    ]
    with sessions.begin() as s:
        s.execute(insert(Device), rows)
    return [r["id"] for r in rows]


def raise_alarms(sessions: sessionmaker[Session], devices: Sequence[str]) -> int:
    """``REPEATS`` raised critical alarms of each name per device, interleaved; rows."""
    with sessions.begin() as s:
        shard = dict(
            s.execute(
                select(Device.id, Site.shard)
                .join(Gateway, Device.gateway_id == Gateway.id)
                .join(Site, Gateway.site_id == Site.id)
                .where(Device.id.in_(list(devices)))
            ).all()
        )
        rows = [
            {
                "device_id": d,
                "shard": shard[d],
                "reason": "alarm",
                "detail": {"name": name, "severity": "critical", "ts": time.time() - r},
                "created_at": datetime.now(UTC),
            }
            for r in range(REPEATS)
            for name in ALARMS
            for d in devices
        ]
        s.execute(insert(RiskRequest), rows)
    return len(rows)


def scorers(
    url: str, partitions: Sequence[str], workdir: Path
) -> tuple[list[Counter[str]], list[str]]:
    """``edgewatch-cloud scorer --partition P --once`` for each P, all at once; the
    request passes' trigger outcomes and the printed lines."""
    procs = []
    for k, part in enumerate(partitions):
        env = os.environ | {
            "EDGEWATCH_CLOUD_DATABASE_URL": url,
            "EDGEWATCH_CLOUD_TSDB": "sqlite",
            "EDGEWATCH_CLOUD_TSDB_SQLITE_PATH": str(workdir / f"ts-{k}.db"),
        }
        argv = [sys.executable, "-m", "cloud.cli", "scorer", "--partition", part, "--once"]
        procs.append(
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    stats, lines = [], []
    for p in procs:
        out, err = p.communicate(timeout=120)
        text = out.decode()
        assert p.returncode == 0, f"scorer exited {p.returncode}:\n{text}\n{err.decode()[-3000:]}"
        found = re.search(r"request pass .*?orders: (.*?); [0-9.]+ s$", text.strip())
        assert found, text
        counts: Counter[str] = Counter()
        if found.group(1) != "none":
            for part in found.group(1).split(", "):
                outcome, n = part.rsplit(" ", 1)
                counts[outcome] += int(n)
        stats.append(counts)
        lines.append(text.strip())
    return stats, lines


def alarm_orders(
    sessions: sessionmaker[Session], devices: Sequence[str]
) -> Counter[tuple[str, str]]:
    with sessions() as s:
        return Counter(
            s.execute(
                select(WorkOrder.device_id, WorkOrder.fault).where(
                    WorkOrder.device_id.in_(list(devices))
                )
            ).all()
        )


@pytest.mark.timeout(240)
def test_scorer_processes_over_the_same_alarms_open_one_order_per_device_and_fault(
    pg_schema_url: str, tmp_path: Path, engine: Engine
) -> None:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        client = Client(name="Harbour Hotels")
        s.add(client)
        s.flush()
        s.add(
            Desk(
                client_id=client.id,
                kind="webhook",
                url="http://127.0.0.1:9/hook",
                secret=DESK_SECRET,
                options={},
            )
        )
        client_id = client.id
    gateways = fleet_sites(sessions, client_id, per_parity=2)
    expected = {f"alarm:{name}" for name in ALARMS}

    # two partitions, as deployed: each takes its half of the sites
    split = add_devices(sessions, gateways, 3, "split")
    rows = raise_alarms(sessions, split)
    stats, lines = scorers(pg_schema_url, ["0/2", "1/2"], tmp_path)
    for line in lines:
        say(line)
    orders = alarm_orders(sessions, split)
    pairs = len(split) * len(ALARMS)
    assert set(orders.values()) == {1} and len(orders) == pairs
    assert {f for _, f in orders} == expected
    assert all(st["opened"] > 0 for st in stats), "a partition had no sites"
    assert sum(st["opened"] for st in stats) == pairs
    assert sum(st["unchanged"] for st in stats) == rows - pairs
    assert count(sessions, RiskRequest) == 0

    # misconfigured: both scorers take every site, over the same requests
    both = add_devices(sessions, gateways, 3, "both")
    rows = raise_alarms(sessions, both)
    stats, lines = scorers(pg_schema_url, ["0/1", "0/1"], tmp_path)
    for line in lines:
        say(line)
    orders = alarm_orders(sessions, both)
    pairs = len(both) * len(ALARMS)
    assert set(orders.values()) == {1} and len(orders) == pairs
    assert sum(st["opened"] for st in stats) == pairs
    seen = sum(sum(st.values()) for st in stats)
    say(
        f"misconfigured scorers: {rows} requests, {seen} triggers between them "
        f"({seen - rows} of the same requests handled twice), {pairs} orders"
    )
    assert set().union(*stats) <= {"opened", "unchanged"}
    assert count(sessions, RiskRequest) == 0
    assert count(sessions, WorkOrder) == 2 * pairs
