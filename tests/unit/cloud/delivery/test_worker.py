"""Delivery workers against local stand-ins of the desks: one ticket per order through
retries, leases that expire, 429s, timeouts, refusals and the 72-hour limit.

Time is the worker's clock, stepped by the tests, so backoffs of minutes take no time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from support.desk_vendors import (
    SERVICENOW_PASSWORD,
    SERVICENOW_USER,
    FakeServiceNow,
    FakeWebhookReceiver,
    Flaky,
    applied_then_timeout,
    rate_limited,
    server_error,
)
from support.workorder_world import DESK_SECRET as SECRET
from support.workorder_world import NOW, Business, seed

from cloud.auth.principal import Principal
from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.delivery.worker import DeliveryWorker, backoff_s, pending
from cloud.workorders import service
from cloud.workorders.models import (
    DeliveryAttempt,
    DeliveryState,
    Desk,
    OutboxMessage,
    Source,
    TicketRef,
)
from cloud.workorders.service import OrderPolicy, Trigger


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Business]:
    path = tmp_path_factory.mktemp("delivery") / "template.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    try:
        return path, seed(make_sessionmaker(engine), devices=6)
    finally:
        engine.dispose()


@pytest.fixture
def biz(template: tuple[Path, Business]) -> Business:
    return template[1]


@pytest.fixture
def sessions(template: tuple[Path, Business], tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    shutil.copyfile(template[0], tmp_path / "r.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def point_desk(sessions: sessionmaker[Session], biz: Business, kind: str, url: str) -> None:
    with sessions.begin() as s:
        s.execute(
            update(Desk)
            .where(Desk.id == biz.desks[0])
            .values(kind=kind, url=url, username=SERVICENOW_USER, token=SERVICENOW_PASSWORD)
        )


def open_orders(
    sessions: sessionmaker[Session],
    biz: Business,
    n: int,
    *,
    first: int = 0,
    fault: str = "refrigerant_leak",
) -> list[str]:
    ids = []
    for dev in biz.devices[first : first + n]:
        r = service.trigger(
            sessions,
            Trigger(
                device_id=dev,
                fault=fault,
                source=Source.RISK,
                at=NOW,
                p24=0.2,
                p72=0.7,
                threshold=0.3,
            ),
            OrderPolicy(),
            now=NOW,
        )
        assert r.order_id is not None
        ids.append(r.order_id)
    return ids


def drain(
    worker: DeliveryWorker,
    clock: Clock,
    sessions: sessionmaker[Session],
    step_s: float = 600,
    rounds: int = 200,
) -> None:
    for _ in range(rounds):
        worker.run_once()
        with sessions() as s:
            if pending(s) == 0:
                return
        clock.now += step_s
    with sessions() as s:
        left = [
            (m.id, m.attempts, m.last_error)
            for m in s.scalars(
                select(OutboxMessage).where(OutboxMessage.state == DeliveryState.PENDING)
            )
        ]
    raise AssertionError(f"the outbox did not drain: {left}")


def worker(
    sessions: sessionmaker[Session], clock: Clock, name: str = "w1", **kw: object
) -> DeliveryWorker:
    return DeliveryWorker(sessions, name=name, clock=clock, timeout_s=0.3, seed=1, **kw)  # type: ignore[arg-type]


def test_every_order_reaches_the_webhook_once_in_spite_of_a_flaky_desk(
    sessions: sessionmaker[Session], biz: Business
) -> None:
    clock = Clock()
    with FakeWebhookReceiver(SECRET, clock=clock) as desk:
        point_desk(sessions, biz, "webhook", desk.url)
        orders = open_orders(sessions, biz, 6)
        desk.flaky(
            Flaky(
                seed=3,
                rate_limit=0.15,
                error=0.2,
                applied_error=0.1,
                timeout=0.05,
                applied_timeout=0.05,
                hang_s=0.5,
                retry_after="30",
            )
        )
        w = worker(sessions, clock)
        try:
            drain(w, clock, sessions)
        finally:
            w.close()
        created = [d["data"] for d in desk.deliveries.values() if d["type"] == "work_order.created"]
        assert sorted(d["id"] for d in created) == sorted(orders)
        assert desk.faults_applied > 0
        with sessions() as s:
            states = s.scalars(select(OutboxMessage.state)).all()
            attempts = s.scalar(select(func.count()).select_from(DeliveryAttempt))
        assert set(states) == {DeliveryState.DELIVERED} and len(states) == 6
        assert attempts is not None and attempts > 6  # the failures were retried and logged
        sample = created[0]
        assert sample["failure_code"]["remedy"].startswith("locate and repair")
        assert sample["device"]["asset_type"] == "compressor" and sample["number"].startswith("WO-")


def test_a_worker_killed_after_the_vendor_created_the_ticket_causes_no_second_one(
    sessions: sessionmaker[Session], biz: Business
) -> None:
    clock = Clock()
    with FakeServiceNow() as desk:
        point_desk(sessions, biz, "servicenow", desk.url)
        (order,) = open_orders(sessions, biz, 1)
        desk.inject(applied_then_timeout(hang_s=0.6, method="POST"))
        first = worker(sessions, clock, "w1", lease_s=60)
        claimed = first.claim()
        assert len(claimed) == 1
        first.deliver(claimed[0])  # the incident exists, the worker saw a timeout
        # ... and now a worker that dies holding its lease: nothing is claimable until it ends
        with sessions.begin() as s:
            s.execute(update(OutboxMessage).values(next_attempt_at=NOW))
        assert len(first.claim()) == 1
        second = worker(sessions, clock, "w2", lease_s=60)
        assert second.claim() == []
        clock.now += 61
        drain(second, clock, sessions)
        first.close()
        second.close()
        assert len(desk.incidents_for(order)) == 1
        with sessions() as s:
            ref = s.scalars(select(TicketRef)).one()
        assert ref.external_id == desk.incidents_for(order)[0]["sys_id"]
        # a later change updates that incident, not a new one
        with sessions.begin() as s:
            service.comment(
                s, Principal.system(), order, "technician on the way", now=NOW + timedelta(hours=1)
            )
        third = worker(sessions, clock, "w3")
        drain(third, clock, sessions)
        third.close()
        (incident,) = desk.incidents_for(order)
        assert any("technician on the way" in note for note in incident["journal"])
        patches = [r for r in desk.requests if r.method == "PATCH"]
        assert patches and patches[-1].path.endswith(ref.external_id)


def test_messages_of_one_order_go_out_in_order(
    sessions: sessionmaker[Session], biz: Business
) -> None:
    clock = Clock()
    with FakeWebhookReceiver(SECRET, clock=clock) as desk:
        point_desk(sessions, biz, "webhook", desk.url)
        (order,) = open_orders(sessions, biz, 1)
        with sessions.begin() as s:
            service.comment(s, Principal.system(), order, "first note", now=NOW)
        desk.inject(server_error(503))
        w = worker(sessions, clock)
        assert w.run_once() == 1  # "created" fails; "commented" must wait behind it
        assert w.claim() == []
        drain(w, clock, sessions)
        w.close()
        events = [r.json["data"]["event"] for r in desk.requests if r.json]
        assert events == ["created", "created", "commented"]


def test_429_retry_after_is_honoured(sessions: sessionmaker[Session], biz: Business) -> None:
    clock = Clock()
    with FakeWebhookReceiver(SECRET, clock=clock) as desk:
        point_desk(sessions, biz, "webhook", desk.url)
        open_orders(sessions, biz, 1)
        desk.inject(rate_limited("120"))
        w = worker(sessions, clock)
        w.run_once()
        with sessions() as s:
            msg = s.scalars(select(OutboxMessage)).one()
        assert msg.state == DeliveryState.PENDING and msg.attempts == 1
        assert msg.next_attempt_at >= NOW + timedelta(seconds=120)
        clock.now += 60
        assert w.run_once() == 0
        clock.now += 61
        assert w.run_once() == 1
        w.close()
        assert len(desk.deliveries) == 1


def test_refusals_and_the_72_hour_limit_fail_the_delivery(
    sessions: sessionmaker[Session], biz: Business
) -> None:
    clock = Clock()
    with FakeWebhookReceiver(SECRET, clock=clock) as desk:
        point_desk(sessions, biz, "webhook", desk.url)
        (a,) = open_orders(sessions, biz, 1)
        desk.inject(server_error(400))  # a permanent refusal
        w = worker(sessions, clock)
        w.run_once()
        desk.flaky(Flaky(seed=1, error=1.0))  # the desk is down from now on
        (b,) = open_orders(sessions, biz, 1, first=1, fault="bearing_wear")
        for _ in range(40):
            clock.now += 3 * 3600
            w.run_once()
        w.close()
        with sessions() as s:
            by_order = {m.work_order_id: m for m in s.scalars(select(OutboxMessage))}
        assert by_order[a].state == by_order[b].state == DeliveryState.FAILED
        assert by_order[a].attempts == 1
        assert by_order[b].attempts > 5
        assert clock.now - NOW.timestamp() >= 72 * 3600


@pytest.mark.parametrize(
    ("attempts", "low", "high"), [(1, 2.5, 5), (2, 5, 10), (5, 40, 80), (30, 1800, 3600)]
)
def test_backoff(attempts: int, low: float, high: float) -> None:
    import random

    rng = random.Random(0)
    for _ in range(50):
        assert low <= backoff_s(attempts, None, rng) <= high
    assert backoff_s(1, 900.0, rng) == 900.0
