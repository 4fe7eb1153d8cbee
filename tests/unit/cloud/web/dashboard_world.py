"""A registry and a time-series store for the dashboard's tests, relative to the real clock.

On top of the two-tenant registry world (:mod:`support.registry_world`, with its work
orders from ``seed_work_orders``: one leak order per tenant, waiting for approval and long
overdue), :func:`seed_dashboard` adds

- two technicians, gateways seen a few minutes ago;
- per tenant, 48 hourly risk assessments of the compressor (P72 rising to 0.75) and
  48 hourly feature windows (pressures, superheat, temperatures, vibration), anomaly
  scores, an energy counter over the last 3 days, and a raised alarm;
- for Alpha a second order (an alarm on its fan, from 2 hours ago), so the board has
  something to sort and filter.

The browser test (``tests/integration/web``) seeds its server with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from support.registry_world import World, seed_work_orders

from cloud.db import make_engine, make_sessionmaker
from cloud.registry.models import Gateway
from cloud.risk.models import RiskScore
from cloud.tsdb.base import Point
from cloud.tsdb.sqlite import SQLiteStore
from cloud.workorders import service
from cloud.workorders.models import Source, Technician

HOURS = 48
SIGNALS = {
    "discharge_pressure__mean": (17.0, 0.05),
    "suction_pressure__mean": (4.5, -0.01),
    "superheat__mean": (6.0, 0.12),
    "discharge_temp__mean": (78.0, 0.2),
    "vibration_rms__mean": (2.1, 0.01),
}


@dataclass
class Dashboard:
    world: World
    now: datetime
    technicians: dict[str, str]
    alarm_order_id: str


def _risk_rows(device_id: str, site_id: str, now: datetime) -> list[RiskScore]:
    rows = []
    for i in range(HOURS):
        ts = (now - timedelta(hours=HOURS - 1 - i)).replace(microsecond=0)
        p72 = 0.1 + 0.65 * i / (HOURS - 1)
        rows.append(
            RiskScore(
                device_id=device_id,
                site_id=site_id,
                ts=ts,
                computed_at=ts,
                p24=p72 * 0.5,
                p72=p72,
                horizon_h=72.0,
                fault_type="refrigerant_leak",
                fault_probs={"refrigerant_leak": 0.8, "valve_wear": 0.2},
                health=int(100 - p72 * 90),
                anomaly_score=p72 * 3,
                alert=p72 >= 0.7,
                top_signals=[{"signal": "superheat", "share": 0.6, "trend_per_day": 0.4}],
                model="compressor-risk v1",
            )
        )
    return rows


def seed_registry(world: World, now: datetime) -> Dashboard:
    seeded = seed_work_orders(world)
    engine = make_engine(seeded.url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as s:
            ana = Technician(name="Ana Silva", skills=["refrigeration", "f-gas", "hvac"])
            bruno = Technician(name="Bruno Costa", skills=["mechanical", "electrical"])
            s.add_all([ana, bruno])
            for t in seeded.tenants.values():
                s.add_all(_risk_rows(t.device_id, t.site_id, now))
            s.execute(update(Gateway).values(last_seen_at=now - timedelta(minutes=3)))
            s.flush()
            techs = {"ana": ana.id, "bruno": bruno.id}
        alarm = service.trigger(
            sessions,
            service.Trigger(
                device_id=seeded.a.device2_id,
                fault="alarm:high_vibration",
                source=Source.ALARM,
                at=now - timedelta(hours=2),
                note="local alarm high_vibration raised (major)",
            ),
            service.OrderPolicy(),
            now=now - timedelta(hours=2),
        )
        assert alarm.order_id is not None
    finally:
        engine.dispose()
    return Dashboard(world=seeded, now=now, technicians=techs, alarm_order_id=alarm.order_id)


def seed_store(path: Path, world: World, now: datetime) -> None:
    """Hourly windows, scores and energy of each tenant's compressor up to ``now``."""
    store = SQLiteStore(path)
    try:
        points: list[Point] = []
        end = int(now.timestamp()) // 3600 * 3600
        for t in world.tenants.values():
            tags = {"client": t.client_id, "site": t.site_id, "gateway": t.gateway_id}
            dev = {**tags, "device": t.device_id}
            for i in range(HOURS):
                ts = (end - (HOURS - 1 - i) * 3600) * 1_000_000_000
                fields: dict[str, float | int] = {
                    name: base + slope * i + (0.3 if i % 5 == 0 else 0.0)
                    for name, (base, slope) in SIGNALS.items()
                }
                fields["n_samples"] = 60
                points.append(Point("features", ts, {**dev, "group": "default"}, fields))
                points.append(
                    Point(
                        "score",
                        ts,
                        {**dev, "model_id": "cc-v1"},
                        {"score": 0.2 + i / HOURS, "anomalous": i > HOURS - 6, "threshold": 1.0},
                    )
                )
            for i in range(72):
                ts = (end - (71 - i) * 3600) * 1_000_000_000
                points.append(Point("energy", ts, dev, {"energy": 1000.0 + 2.5 * i}))
            points.append(
                Point(
                    "alarm",
                    (end - 3 * 3600) * 1_000_000_000,
                    {**dev, "name": "high_pressure"},
                    {"state": "raised", "severity": "major", "value": 27.5},
                )
            )
        store.write(points)
    finally:
        store.close()


def seed_dashboard(world: World, ts_path: Path, now: datetime | None = None) -> Dashboard:
    at = (now or datetime.now(UTC)).replace(microsecond=0)
    dashboard = seed_registry(world, at)
    seed_store(ts_path, dashboard.world, at)
    return replace(dashboard, world=dashboard.world)
