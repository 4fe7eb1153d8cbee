"""A burst of 10,000 work orders reaches two flaky service desks exactly once, on the real
PostgreSQL, with the delivery worker killed (``kill -9``) twice on the way.

- The fleet: two clients of 5,000 devices each (bulk-inserted); one client's desk is a
  ServiceNow instance, the other's a Zendesk account (:mod:`support.desk_vendors`), each
  answering about 20 % of requests with a 5xx (half of them *after* carrying the request
  out: the incident or ticket exists, the answer is lost) and about 1 % with no answer
  within the delivery timeout (half of those after carrying it out too).
- The burst: ``OPENERS`` spawned processes, each with its own engine, call
  :func:`cloud.workorders.service.trigger` for their share of the devices from one
  barrier, so the outbox is written the production way (in the order's transaction).
- Delivery: ``edgewatch-cloud deliver --workers 4`` subprocesses, started before the burst;
  the first is killed after a few thousand deliveries and started again, a second one
  joins, one is killed again and replaced, until nothing is pending.
- Exactly once: every order has exactly one incident (ServiceNow ``correlation_id``) or
  one ticket (Zendesk ``external_id``) at the desk, one :class:`TicketRef` naming it, and
  its outbox message delivered; no message failed; every message a killed worker held
  was delivered by another.

The production backoff (5 s doubling, :func:`cloud.delivery.worker.backoff_s`) is not a
setting, so it is not lowered here: :class:`~support.desk_vendors.CappedFlaky` allows at
most three faults per order, which keeps the slowest order's retries to about 35 s.
The delivery timeout and lease are settings and are small (1 s, 4 s), so timeouts and
the recovery after a kill take seconds; a batch can outlast the lease, so the workers'
renewal of the lease before each delivery is exercised too (no message may be delivered
by two workers). The test prints its figures. It is CPU-bound: an order opened costs
about 5 ms of CPU (3.5 in Python, 1.5 in PostgreSQL), a delivery attempt about 10, and
the 10,000 orders take some 15,600 attempts. On two otherwise idle cores the burst is
over in about 35 s (some 290 orders/s, the delivery process taking its share of the
cores meanwhile) and the test takes about three minutes; other work on the machine
stretches both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from support.desk_vendors import (
    SERVICENOW_PASSWORD,
    SERVICENOW_USER,
    ZENDESK_EMAIL,
    ZENDESK_TOKEN,
    CappedFlaky,
    FakeServiceNow,
    FakeVendor,
    FakeZendesk,
)
from support.workorder_world import DESK_SECRET, seed

from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.delivery.worker import Claimed, DeliveryWorker
from cloud.desk.tickets import Outcome
from cloud.registry.models import Criticality, Device, new_id
from cloud.workorders.models import (
    DeliveryAttempt,
    DeliveryState,
    Desk,
    OutboxMessage,
    Source,
    TicketRef,
    WorkOrder,
)
from cloud.workorders.service import OrderPolicy, Trigger, trigger

pytestmark = pytest.mark.integration

ORDERS = 10_000
OPENERS = 4
DELIVERY_WORKERS = 4
TIMEOUT_S = 1.0
LEASE_S = 4.0
"""A delivery (at most two requests here) fits; a batch of 20 with a few timeouts does not."""
ZENDESK_LAG_S = 10.0
"""Zendesk lists a new ticket by ``external_id`` only after this: a retry within it misses
the ticket and sends the create again, which the idempotency key turns into a replay."""
FAULTS = {"error": 0.10, "applied_error": 0.10, "timeout": 0.005, "applied_timeout": 0.005}
HANG_S = 1.5  # longer than TIMEOUT_S: a timeout
FAULT_TYPES = (
    "condenser_fouling",
    "bearing_wear",
    "refrigerant_leak",
    "valve_wear",
    "electrical_degradation",
)
KILL_AT = (2_500, 7_000)
"""Delivered messages after which the oldest running delivery process is killed."""
SECOND_AT = 4_500
"""Delivered messages after which a second delivery process joins."""
DRAIN_TIMEOUT_S = 200.0


def say(line: str) -> None:
    print(f"[burst] {line}", flush=True)  # noqa: T201 - the test log documents the figures


# ---- the burst (runs in spawned processes) -------------------------------------------------


def open_orders(
    url: str, devices: list[tuple[str, int]], barrier: Barrier, results: Queue[Any]
) -> None:
    """Trigger one order per ``(device id, index)``; put ``(outcomes, seconds)``."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as s:
            s.execute(select(1))  # connected before the start
        pol = OrderPolicy()
        barrier.wait(timeout=120)
        started = time.perf_counter()
        outcomes: Counter[str] = Counter()
        for device_id, i in devices:
            now = datetime.now(UTC)
            p72 = 0.5 + (i % 10) * 0.05
            t = Trigger(
                device_id=device_id,
                fault=FAULT_TYPES[i % len(FAULT_TYPES)],
                source=Source.RISK,
                at=now,
                p24=p72 / 3,
                p72=p72,
                threshold=0.4,
                health=round(100 * (1 - p72)),
                evidence={"burst": i},
            )
            outcomes[trigger(sessions, t, pol, now=now).outcome] += 1
        results.put((dict(outcomes), time.perf_counter() - started))
    finally:
        engine.dispose()


# ---- the fleet -------------------------------------------------------------------------------


@dataclass
class Fleet:
    servicenow_desk: str
    zendesk_desk: str
    devices: list[str]


def seed_fleet(sessions: sessionmaker[Session], servicenow_url: str, zendesk_url: str) -> Fleet:
    """Two clients (:func:`support.workorder_world.seed`) with ``ORDERS / 2`` devices
    each, the first client's desk on ServiceNow, the second's on Zendesk."""
    biz = seed(sessions, devices=0, desk_url=servicenow_url)
    with sessions.begin() as s:
        s.execute(
            update(Desk)
            .where(Desk.id == biz.desks[0])
            .values(kind="servicenow", username=SERVICENOW_USER, token=SERVICENOW_PASSWORD)
        )
        zendesk = Desk(
            client_id=biz.other_client_id,
            kind="zendesk",
            url=zendesk_url,
            username=ZENDESK_EMAIL,
            token=ZENDESK_TOKEN,
            secret=DESK_SECRET,
            options={},
        )
        s.add(zendesk)
        s.flush()
        levels = list(Criticality)
        rows = [
            {
                "id": new_id(),
                "gateway_id": "gw-lisbon" if i % 2 == 0 else "gw-porto",
                "name": f"unit-{i:05d}",
                "asset_type": "compressor",
                "criticality": levels[i % len(levels)],
                "occupant_flags": ["vulnerable_occupant"] if i % 7 == 0 else [],
                "location": f"plant room {i % 40}",
            }
            for i in range(ORDERS)
        ]
        s.execute(insert(Device), rows)
        return Fleet(biz.desks[0], zendesk.id, [r["id"] for r in rows])


# ---- delivery processes ----------------------------------------------------------------------


class Deliverer:
    """One ``edgewatch-cloud deliver`` process, its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        argv = [sys.executable, "-m", "cloud.cli", "deliver", "--workers"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*argv, str(DELIVERY_WORKERS)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM: the workers finish their round and exit; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return -9
        return self.proc.returncode


@pytest.fixture
def deliverers() -> Iterator[list[Deliverer]]:
    started: list[Deliverer] = []
    try:
        yield started
    finally:
        for d in started:
            if d.running():
                d.proc.kill()
                d.proc.wait(10)


def outbox_states(sessions: sessionmaker[Session]) -> Counter[str]:
    with sessions() as s:
        rows = s.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        ).all()
    return Counter({str(state): int(n) for state, n in rows})


def leased_by(sessions: sessionmaker[Session], pid: int) -> set[int]:
    """Pending messages a delivery process (by pid) holds a lease on."""
    with sessions() as s:
        return set(
            s.scalars(
                select(OutboxMessage.id).where(
                    OutboxMessage.state == DeliveryState.PENDING,
                    OutboxMessage.locked_by.like(f"%:{pid}:%"),
                )
            )
        )


# ---- the test --------------------------------------------------------------------------------


@pytest.mark.timeout(720)
def test_a_burst_of_10000_orders_reaches_flaky_desks_exactly_once_through_kills(
    pg_schema_url: str, spawn: SpawnContext, tmp_path: Path, deliverers: list[Deliverer]
) -> None:
    t_test = time.monotonic()
    migrate(pg_schema_url)
    engine = make_engine(pg_schema_url)
    sessions = make_sessionmaker(engine)
    env = os.environ | {
        "EDGEWATCH_CLOUD_DATABASE_URL": pg_schema_url,
        "EDGEWATCH_CLOUD_DELIVERY_TIMEOUT_S": str(TIMEOUT_S),
        "EDGEWATCH_CLOUD_DELIVERY_LEASE_S": str(LEASE_S),
    }
    try:
        with FakeServiceNow() as servicenow, FakeZendesk(search_lag_s=ZENDESK_LAG_S) as zendesk:
            for seed_, desk in ((1, servicenow), (2, zendesk)):
                desk.flaky(CappedFlaky(seed=seed_, hang_s=HANG_S, **FAULTS).bind(desk))
            t0 = time.monotonic()
            fleet = seed_fleet(sessions, servicenow.url, zendesk.url)
            say(f"seeded {len(fleet.devices)} devices in {time.monotonic() - t0:.1f} s")

            deliverers.append(Deliverer("deliver-1", env, tmp_path))
            barrier = spawn.Barrier(OPENERS + 1)
            results: Queue[Any] = spawn.Queue()
            shares = [
                [(d, i) for i, d in enumerate(fleet.devices) if i % OPENERS == k]
                for k in range(OPENERS)
            ]
            openers = [
                spawn.Process(
                    target=open_orders,
                    args=(pg_schema_url, share, barrier, results),
                    name=f"opener-{k}",
                )
                for k, share in enumerate(shares)
            ]
            for p in openers:
                p.start()
            try:
                barrier.wait(timeout=120)
                burst_started = time.monotonic()
                kills, in_flight, burst_s = _drive(
                    sessions, env, tmp_path, deliverers, openers, burst_started
                )
                for p in openers:
                    p.join(timeout=30)
                    assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
                opened: Counter[str] = Counter()
                opener_s = []
                for _ in openers:
                    outcomes, seconds = results.get(timeout=30)
                    opened.update(outcomes)
                    opener_s.append(seconds)
            finally:
                for p in openers:
                    p.join(timeout=30)
                    if p.is_alive():
                        p.kill()
            drained_s = time.monotonic() - burst_started
            exits = [d.stop() for d in deliverers if d.running()]

            _check(sessions, fleet, servicenow, zendesk, opened, in_flight)

            with sessions() as s:
                attempts = int(s.scalar(select(func.count()).select_from(DeliveryAttempt)) or 0)
                most = int(s.scalar(select(func.max(OutboxMessage.attempts))) or 0)
                ok_attempts = Counter(
                    s.scalars(select(DeliveryAttempt.outbox_id).where(DeliveryAttempt.ok))
                )
                at = OutboxMessage.delivered_at
                first, last = s.execute(select(func.min(at), func.max(at))).one()
            span = (last - first).total_seconds() if first and last else 0.0
            requests = len(servicenow.requests) + len(zendesk.requests)
            faults = servicenow.faults_applied + zendesk.faults_applied
            say(
                f"opened {ORDERS} orders in {burst_s:.1f} s ({ORDERS / burst_s:.0f} orders/s; "
                f"{OPENERS} processes, each {min(opener_s):.1f}-{max(opener_s):.1f} s), "
                f"delivery processes running alongside"
            )
            say(
                f"delivered {ORDERS} in {drained_s:.1f} s from the burst's start "
                f"(first to last delivery {span:.1f} s, {ORDERS / max(span, 1e-9):.0f} "
                f"deliveries/s)"
            )
            say(
                f"{attempts} recorded attempts for {ORDERS} messages ({attempts - ORDERS} "
                f"retries, at most {most} for one message); "
                f"{sum(1 for n in ok_attempts.values() if n > 1)} messages delivered twice "
                "(a lease that ran out under a worker)"
            )
            say(
                f"desks: {requests} requests, {faults} faults injected "
                f"({100 * faults / max(requests, 1):.1f} %), {zendesk.replays} Zendesk "
                "idempotency replays"
            )
            say(
                f"kill -9: {kills} times, {sum(len(v) for v in in_flight)} leased messages "
                f"taken over ({', '.join(str(len(v)) for v in in_flight)}); "
                f"clean exits {exits}; whole test {time.monotonic() - t_test:.0f} s"
            )
            assert all(code == 0 for code in exits), exits
            assert all(n == 1 for n in ok_attempts.values()), "two workers delivered a message"
            assert zendesk.replays > 0, "no create was sent twice: the hard case did not happen"
    finally:
        engine.dispose()


def _drive(
    sessions: sessionmaker[Session],
    env: dict[str, str],
    logs: Path,
    deliverers: list[Deliverer],
    openers: list[Any],
    burst_started: float,
) -> tuple[int, list[set[int]], float]:
    """Watch the outbox until the burst is over and nothing is pending; kill, restart
    and add delivery processes on the way. Returns the kills, the messages each killed
    process held a lease on, and the burst's duration."""
    kills = 0
    in_flight: list[set[int]] = []
    burst_s: float | None = None
    deadline = float("inf")  # the test's timeout until the burst is over
    serial = 1
    next_report = time.monotonic() + 10
    while True:
        states = outbox_states(sessions)
        delivered, pending = states["delivered"], states["pending"]
        burst_over = not any(p.is_alive() for p in openers)
        crashed = [p.name for p in openers if p.exitcode not in (None, 0)]
        assert not crashed, f"{crashed} failed (their tracebacks are on stderr)"
        if time.monotonic() >= next_report:
            next_report += 10
            say(f"{time.monotonic() - burst_started:5.0f} s: outbox {dict(states)}")
        if burst_over and burst_s is None:
            burst_s = time.monotonic() - burst_started
            say(f"burst over after {burst_s:.1f} s: {dict(states)}")
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
        if burst_over and pending == 0 and sum(states.values()) >= ORDERS:
            assert burst_s is not None
            return kills, in_flight, burst_s
        if kills < len(KILL_AT) and delivered >= KILL_AT[kills]:
            victim = next(d for d in deliverers if d.running())
            victim.kill9()
            held = leased_by(sessions, victim.pid)
            in_flight.append(held)
            kills += 1
            serial += 1
            deliverers.append(Deliverer(f"deliver-{serial}", env, logs))
            say(
                f"kill -9 {victim.name} at {delivered} delivered ({len(held)} leased "
                f"messages in its hands); started deliver-{serial}"
            )
        elif serial == 2 and delivered >= SECOND_AT:
            serial += 1
            deliverers.append(Deliverer(f"deliver-{serial}", env, logs))
            say(f"deliver-{serial} joins at {delivered} delivered")
        for d in deliverers:
            assert d.running() or d.proc.returncode == -signal.SIGKILL, (
                f"{d.name} exited with {d.proc.returncode}:\n{d.output()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the outbox did not drain: {dict(states)}; last log:\n"
                + deliverers[-1].output()[-3000:]
            )
        time.sleep(0.5)


def _check(
    sessions: sessionmaker[Session],
    fleet: Fleet,
    servicenow: FakeServiceNow,
    zendesk: FakeZendesk,
    opened: Counter[str],
    in_flight: list[set[int]],
) -> None:
    assert opened == {"opened": ORDERS}, opened
    with sessions() as s:
        orders = {o: c for o, c in s.execute(select(WorkOrder.id, WorkOrder.client_id))}
        desk_of = {c: d for c, d in s.execute(select(Desk.client_id, Desk.id))}
        messages = s.execute(
            select(OutboxMessage.id, OutboxMessage.work_order_id, OutboxMessage.state)
        ).all()
        refs = {(r.work_order_id, r.desk_id): r.external_id for r in s.scalars(select(TicketRef))}
    assert len(orders) == ORDERS
    # every order: one message, delivered; none failed, none pending
    assert Counter(str(m.state) for m in messages) == {"delivered": ORDERS}
    assert sorted(m.work_order_id for m in messages) == sorted(orders)
    delivered_ids = {m.id for m in messages}
    for held in in_flight:
        assert held <= delivered_ids
    # every order: one ticket reference, to its client's desk
    assert len(refs) == ORDERS
    assert {order for order, _ in refs} == set(orders)
    for (order, desk), _ in refs.items():
        assert desk == desk_of[orders[order]]
    # every order: exactly one record at its desk, the one the reference names
    _one_each(
        servicenow,
        {o for o, c in orders.items() if desk_of[c] == fleet.servicenow_desk},
        [(r["correlation_id"], r["sys_id"]) for r in servicenow.incidents],
        {o: ext for (o, d), ext in refs.items() if d == fleet.servicenow_desk},
    )
    _one_each(
        zendesk,
        {o for o, c in orders.items() if desk_of[c] == fleet.zendesk_desk},
        [(t["external_id"], str(t["id"])) for t in zendesk.tickets],
        {o: ext for (o, d), ext in refs.items() if d == fleet.zendesk_desk},
    )


def _one_each(
    desk: FakeVendor,
    orders: set[str],
    records: list[tuple[str, str]],
    refs: dict[str, str],
) -> None:
    per_order = Counter(order for order, _ in records)
    twice = {o: n for o, n in per_order.items() if n > 1}
    assert not twice, f"{desk.name}: {len(twice)} orders with more than one record: {twice}"
    assert set(per_order) == orders, f"{desk.name}: records for unknown or missing orders"
    assert dict(records) == refs, f"{desk.name}: a TicketRef names another record"


# ---- a batch that outlasts its lease ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_worker_whose_lease_ran_out_mid_batch_leaves_the_rest_to_the_worker_that_took_it(
    pg_schema_url: str,
) -> None:
    """The burst's "no message delivered twice", made deterministic: worker A claims two
    messages, its first delivery outlasts the lease, worker B claims and delivers the
    second; A must not deliver it again (at ServiceNow a second concurrent delivery could
    create a second incident: both look the order up, find nothing and create)."""
    migrate(pg_schema_url)
    engine = make_engine(pg_schema_url)
    sessions = make_sessionmaker(engine)
    now = [time.time()]

    def clock() -> float:
        return now[0]

    try:
        with FakeServiceNow() as desk:
            biz = seed(sessions, devices=2, desk_url=desk.url)
            with sessions.begin() as s:
                s.execute(
                    update(Desk)
                    .where(Desk.id == biz.desks[0])
                    .values(kind="servicenow", username=SERVICENOW_USER, token=SERVICENOW_PASSWORD)
                )
            for device_id in biz.devices:
                at = datetime.fromtimestamp(now[0], UTC)
                t = Trigger(device_id, "bearing_wear", Source.RISK, at, p24=0.2, p72=0.7)
                assert trigger(sessions, t, OrderPolicy(), now=at).outcome == "opened"
            b = DeliveryWorker(sessions, name="b", clock=clock, lease_s=60, timeout_s=5)

            class SlowFirst(DeliveryWorker):
                """A worker whose first delivery takes longer than its lease, during
                which ``b`` claims what is left of its batch."""

                def deliver(self, msg: Claimed) -> Outcome:
                    outcome = super().deliver(msg)
                    if now[0] == started:
                        now[0] += 61
                        assert b.run_once() == 1
                    return outcome

            a = SlowFirst(sessions, name="a", clock=clock, lease_s=60, timeout_s=5)
            started = now[0]
            try:
                assert a.run_once() == 2
            finally:
                a.close()
                b.close()
            with sessions() as s:
                attempts = Counter(
                    (r.outbox_id, r.worker) for r in s.scalars(select(DeliveryAttempt))
                )
            assert sorted(attempts.values()) == [1, 1], attempts
            assert {w for _, w in attempts} == {"a", "b"}
            assert Counter(r["correlation_id"] for r in desk.incidents).most_common(1)[0][1] == 1
            assert len(desk.incidents) == 2
    finally:
        engine.dispose()
