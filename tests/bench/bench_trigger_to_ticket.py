"""Benchmark: from the scorer's trigger to the ticket at the service desk.

    .venv/bin/python tests/bench/bench_trigger_to_ticket.py [--desk webhook|servicenow]
        [--rate 20] [--seconds 20] [--burst 200] [--workers 1] [--postgres]

A migrated registry (SQLite in a temporary folder by default; ``--postgres``: a fresh
database on the machine's PostgreSQL, made as ``tests/conftest.py`` makes the tests' one
and dropped at the end; ``--registry-url``: a database of yours, migrated and written to)
holds the work-order world of ``tests/support/workorder_world.py`` (technicians, depots,
parts) with one compressor per order to open, and one desk of the client: a
:class:`FakeWebhookReceiver` (Standard Webhooks, signatures checked) or, with ``--desk
servicenow``, a :class:`FakeServiceNow` (a lookup by ``correlation_id`` and then the
create), on loopback. ``--workers`` :class:`cloud.delivery.worker.DeliveryWorker` threads
poll the outbox as ``edgewatch-cloud deliver`` runs them: ``run(stop)`` with the worker's
own idle wait (``--idle-s``; default the one ``run`` has, 0.5 s: there is no setting for
it) and lease, timeout and age limit from :class:`cloud.settings.Settings`.

1. steady: :func:`cloud.workorders.service.trigger` (what the scorer calls; it commits the
   order and its outbox message in one transaction) at ``--rate`` per second for
   ``--seconds``, each for another device; per order, the time from the trigger's commit
   (its return) to the desk receiving the request that creates the ticket (the fake's
   arrival time): p50, p95, p99 and max. The trigger call's own duration is reported too.
2. burst: the workers stopped, ``--burst`` orders opened, then the workers started: the
   time until the desk has received every create request, i.e. deliveries per second at
   saturation (and the burst's triggers per second).
3. batch: the same again, the orders opened by one
   :func:`cloud.workorders.service.trigger_many` call (what the scorer's request pass
   uses for alarms: the triggers share their round trips) instead of one ``trigger``
   each.

Checks that every order reached the desk exactly once. Everything (the registry, the
desk, the workers, the triggering thread) shares this machine's cores. Prints the
figures and writes ``tests/bench/results/trigger_to_ticket_<registry>.json``
(``--out``). Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: support, conftest

from sqlalchemy import func, select, update  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402
from support.desk_vendors import (  # noqa: E402
    SERVICENOW_PASSWORD,
    SERVICENOW_USER,
    FakeServiceNow,
    FakeVendor,
    FakeWebhookReceiver,
    Received,
)
from support.postgres import bench_registry, server_version  # noqa: E402
from support.workorder_world import DESK_SECRET, seed  # noqa: E402

from cloud.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from cloud.delivery.worker import DeliveryWorker  # noqa: E402
from cloud.settings import Settings  # noqa: E402
from cloud.workorders.models import DeliveryState, Desk, OutboxMessage, Source  # noqa: E402
from cloud.workorders.service import (  # noqa: E402
    OrderPolicy,
    Trigger,
    TriggerResult,
    trigger,
    trigger_many,
)

RESULTS = HERE / "results"
IDLE_S: float = inspect.signature(DeliveryWorker.run).parameters["idle_s"].default
FAULT = "refrigerant_leak"


# ---- the registry ----------------------------------------------------------------------------


# ---- the desk --------------------------------------------------------------------------------


def open_desk(kind: str) -> FakeVendor:
    if kind == "servicenow":
        return FakeServiceNow().start()
    return FakeWebhookReceiver(DESK_SECRET).start()


def point_desk(sessions: sessionmaker[Session], desk_id: str, kind: str, url: str) -> None:
    with sessions.begin() as s:
        s.execute(
            update(Desk)
            .where(Desk.id == desk_id)
            .values(kind=kind, url=url, username=SERVICENOW_USER, token=SERVICENOW_PASSWORD)
        )


def created_order(request: Received) -> str | None:
    """The order whose ticket ``request`` creates (a webhook's ``work_order.created`` POST,
    ServiceNow's incident POST), else None."""
    doc = request.json if isinstance(request.json, dict) else {}
    if request.method != "POST":
        return None
    if doc.get("type") == "work_order.created" and isinstance(doc.get("data"), dict):
        order = doc["data"].get("id")
        return order if isinstance(order, str) else None
    if request.path == FakeServiceNow.TABLE:
        order = doc.get("correlation_id")
        return order if isinstance(order, str) else None
    return None


def wait_received(
    desk: FakeVendor, orders: set[str], timeout_s: float
) -> dict[str, list[Received]]:
    """Poll the desk until it has a create request for every order (or ``timeout_s``);
    the create requests per order."""
    deadline = time.monotonic() + timeout_s
    while True:
        creates: dict[str, list[Received]] = {}
        for r in desk.requests:
            order = created_order(r)
            if order in orders:
                creates.setdefault(order, []).append(r)
        if len(creates) == len(orders) or time.monotonic() > deadline:
            return creates
        time.sleep(0.02)


# ---- workers ---------------------------------------------------------------------------------


class Workers:
    """``n`` delivery workers, each ``run`` in a thread of its own, as the CLI runs them."""

    def __init__(
        self, sessions: sessionmaker[Session], n: int, settings: Settings, idle_s: float
    ) -> None:
        self.workers = [
            DeliveryWorker(
                sessions,
                name=f"bench:{i}",
                max_age=timedelta(hours=settings.delivery_max_age_h),
                lease_s=settings.delivery_lease_s,
                timeout_s=settings.delivery_timeout_s,
            )
            for i in range(n)
        ]
        self.idle_s = idle_s
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(
                target=w.run, args=(self.stop_event,), kwargs={"idle_s": self.idle_s}, name=w.name
            )
            for w in self.workers
        ]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)

    def close(self) -> None:
        self.stop()
        for w in self.workers:
            w.close()


# ---- triggers --------------------------------------------------------------------------------


def risk_trigger(device: str, now: datetime) -> Trigger:
    return Trigger(
        device_id=device,
        fault=FAULT,
        source=Source.RISK,
        at=now,
        p24=0.2,
        p72=0.7,
        threshold=0.3,
        health=30,
    )


def opened(device: str, result: object) -> str:
    if not isinstance(result, TriggerResult) or result.outcome != "opened":
        raise RuntimeError(f"device {device}: the trigger did not open an order ({result})")
    assert result.order_id is not None
    return result.order_id


def fire(sessions: sessionmaker[Session], device: str) -> tuple[str, float, float]:
    """Open an order for ``device`` through the scorer's entry point; ``(order id, monotonic
    time before the call, monotonic time after its commit)``."""
    before = time.monotonic()
    now = datetime.now(UTC)
    result = trigger(sessions, risk_trigger(device, now), OrderPolicy(), now=now)
    committed = time.monotonic()
    return opened(device, result), before, committed


def fire_many(sessions: sessionmaker[Session], devices: list[str]) -> dict[str, float]:
    """Open an order for each of ``devices`` with one :func:`trigger_many` call; the
    monotonic time after its last commit, per order id."""
    now = datetime.now(UTC)
    results = trigger_many(sessions, [risk_trigger(d, now) for d in devices], OrderPolicy(), now)
    committed = time.monotonic()
    return {opened(d, r): committed for d, r in zip(devices, results, strict=True)}


def ms_quantiles(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000.0
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size),
        "mean_ms": round(float(a.mean()), 2),
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(a.max()), 2),
    }


def steady(
    sessions: sessionmaker[Session],
    desk: FakeVendor,
    devices: list[str],
    rate: float,
    timeout_s: float,
) -> dict[str, Any]:
    """Triggers at ``rate`` per second, one per device, the workers running."""
    fired: dict[str, tuple[float, float]] = {}
    interval = 1.0 / rate
    started = next_at = time.monotonic()
    for device in devices:
        time.sleep(max(0.0, next_at - time.monotonic()))
        order, before, committed = fire(sessions, device)
        fired[order] = (before, committed)
        next_at += interval
    fired_s = time.monotonic() - started
    creates = wait_received(desk, set(fired), timeout_s)
    latency = [creates[o][0].at - fired[o][1] for o in fired if o in creates]
    return {
        "orders": len(fired),
        "offered_per_s": rate,
        "achieved_per_s": round(len(fired) / fired_s, 2),
        "delivered": len(creates),
        "duplicate_creates": sum(len(v) - 1 for v in creates.values()),
        "commit_to_desk": ms_quantiles(latency),
        "trigger_call": ms_quantiles([c - b for b, c in fired.values()]),
    }


def burst(
    sessions: sessionmaker[Session],
    desk: FakeVendor,
    workers: Workers,
    devices: list[str],
    timeout_s: float,
    *,
    many: bool = False,
) -> dict[str, Any]:
    """``len(devices)`` orders opened with the workers stopped (one :func:`trigger` each,
    or ``many``: one :func:`trigger_many` for all), then delivered."""
    started = time.monotonic()
    if many:
        fired = fire_many(sessions, devices)
    else:
        fired = {order: committed for order, _, committed in (fire(sessions, d) for d in devices)}
    triggers_s = time.monotonic() - started
    begin = time.monotonic()
    workers.start()
    creates = wait_received(desk, set(fired), timeout_s)
    arrivals = sorted(v[0].at for v in creates.values())
    span = (arrivals[-1] - begin) if arrivals else float("nan")
    return {
        "orders": len(fired),
        "triggers_per_s": round(len(fired) / triggers_s, 1),
        "delivered": len(creates),
        "duplicate_creates": sum(len(v) - 1 for v in creates.values()),
        "seconds_to_deliver_all": round(span, 3),
        "deliveries_per_s": round(len(creates) / span, 1) if arrivals else 0.0,
        "first_delivery_ms": round((arrivals[0] - begin) * 1000, 1) if arrivals else None,
    }


def outbox_states(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as s:
        rows = s.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        ).all()
    return {str(DeliveryState(state)): int(n) for state, n in rows}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--desk", choices=("webhook", "servicenow"), default="webhook")
    p.add_argument("--rate", type=float, default=20.0, help="triggers per second (steady)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the steady phase")
    p.add_argument("--burst", type=int, default=200, help="orders at once (0: no burst phase)")
    p.add_argument("--workers", type=int, default=1, help="delivery worker threads")
    p.add_argument("--idle-s", type=float, default=IDLE_S, help="a worker's wait when idle")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--postgres", action="store_true", help="a fresh database on the local PostgreSQL"
    )
    where.add_argument(
        "--registry-url", help="a database of yours (migrated and written to; use an empty one)"
    )
    p.add_argument("--timeout-s", type=float, default=120.0, help="wait for deliveries at most")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    steady_n = max(1, round(args.rate * args.seconds))
    settings = Settings()
    with (
        tempfile.TemporaryDirectory(prefix="bench-ticket-") as tmp,
        bench_registry(args.registry_url, args.postgres, Path(tmp)) as url,
    ):
        migrate(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        desk = open_desk(args.desk)
        workers = Workers(sessions, args.workers, settings, args.idle_s)
        try:
            print(f"seeding {steady_n + 2 * args.burst} devices ...", flush=True)
            world = seed(sessions, devices=steady_n + 2 * args.burst, desk_url=desk.url)
            point_desk(sessions, world.desks[0], args.desk, desk.url)
            backend = engine.dialect.name
            version = server_version(sessions)
            print(
                f"registry: {version}; desk: {args.desk} at {desk.url}; "
                f"{args.workers} worker(s), idle {args.idle_s:g} s",
                flush=True,
            )
            workers.start()
            st = steady(sessions, desk, world.devices[:steady_n], args.rate, args.timeout_s)
            workers.stop()
            c = st["commit_to_desk"]
            print(
                f"steady {st['orders']} orders at {st['achieved_per_s']:g}/s "
                f"(offered {args.rate:g}/s): trigger commit → desk p50 {c['p50_ms']:.1f} ms, "
                f"p95 {c['p95_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, max {c['max_ms']:.1f} ms "
                f"({st['delivered']} delivered, {st['duplicate_creates']} duplicate creates); "
                f"trigger call p50 {st['trigger_call']['p50_ms']:.1f} ms, "
                f"p99 {st['trigger_call']['p99_ms']:.1f} ms",
                flush=True,
            )
            bu: dict[str, Any] | None = None
            bm: dict[str, Any] | None = None
            if args.burst:
                ends = steady_n + args.burst
                bu = burst(sessions, desk, workers, world.devices[steady_n:ends], args.timeout_s)
                workers.stop()
                bm = burst(sessions, desk, workers, world.devices[ends:], args.timeout_s, many=True)
                workers.stop()
                for label, b in (("burst", bu), ("batch", bm)):
                    print(
                        f"{label} {b['orders']} orders (opened at {b['triggers_per_s']:g}/s): "
                        f"all at the desk {b['seconds_to_deliver_all']:.2f} s after the "
                        f"workers started, {b['deliveries_per_s']:g} deliveries/s "
                        f"({b['delivered']} delivered, {b['duplicate_creates']} duplicate "
                        "creates)",
                        flush=True,
                    )
            states = outbox_states(sessions)
        finally:
            workers.close()
            desk.stop()
            engine.dispose()
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "registry": {"backend": backend, "version": version},
        "steady": st,
        "burst": bu,
        "batch": bm,
        "outbox": states,
    }
    out = args.out or RESULTS / f"trigger_to_ticket_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"outbox: {states}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
