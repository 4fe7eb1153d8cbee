"""A client with two sites and an October of energy readings, for the report tests.

``seed_report_world(sessions, store)`` writes into a migrated registry and a store:

Harbour Hotels
    Marina (Asia/Dubai, 5,000 m², time of use in AED: peak Mon-Fri 12:00-18:00 at 0.50,
    night 22:00-06:00 at 0.20, otherwise 0.30, 10 AED standing charge a day)
        cc-1  compressor ew-cc100: +2 kWh/h; runtime +0.75 h/h, starts +3/h; two feature
              windows an hour (ambient_temp and superheat); a work order in October
        cc-2  compressor ew-cc100: +3 kWh/h, its uint32 counter (0.1 kWh) wraps on 3 October
        fan-1 fan ew-fc200: +1 kWh/h, the controller reset on 15 October at 10:30 UTC (the
              reading 0.4 instead of the next kWh)
    Old Town (Europe/Paris, no floor area, flat 0.25 EUR/kWh and 0.50 EUR a day; its own
    grid factor 0.05 kg/kWh)
        cc-3  compressor, no profile: +1.5 kWh/h, no reading 20 October 03:30-07:30 UTC
        fan-2 fan that never reports

Readings are at half past every UTC hour from 28 September to 3 November 2026. The
figures a report must show are derived by hand in the tests from :data:`RATES` and these
events, not with the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cloud.auth import Principal
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.energy.carbon import GridFactors
from cloud.registry import services
from cloud.reports.collect import Options
from cloud.reports.service import generate_now
from cloud.tsdb.base import Point, TimeSeriesStore, to_ns
from cloud.tsdb.sqlite import SQLiteStore
from cloud.workorders.models import Source, WorkOrder, WorkOrderEvent
from cloud.workorders.policy import State
from support.registry_world import World, seed_points

MONTH = "2026-10"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
"""The clock of the tests: October has ended everywhere."""
FIRST = datetime(2026, 9, 28, 0, 30, tzinfo=UTC)
LAST = datetime(2026, 11, 3, 23, 30, tzinfo=UTC)
WRAP = 2**32 * 0.1
"""The modulus of ew-cc100's energy counter (uint32 in tenths of a kWh)."""
RATES = {"cc-1": 2.0, "cc-2": 3.0, "fan-1": 1.0, "cc-3": 1.5}
"""kWh per hour."""
RESET_AT = datetime(2026, 10, 15, 10, 30, tzinfo=UTC)
RESET_READING = 0.4
GAP = [datetime(2026, 10, 20, h, 30, tzinfo=UTC) for h in range(3, 8)]
"""cc-3's missing readings."""
DEFAULT_FACTOR = 0.4
OLD_TOWN_FACTOR = 0.05
MARINA_TARIFF: dict[str, Any] = {
    "kind": "tou",
    "currency": "AED",
    "default_price_per_kwh": 0.30,
    "standing_charge_per_day": 10.0,
    "periods": [
        {
            "name": "peak",
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "12:00",
            "end": "18:00",
            "price_per_kwh": 0.50,
        },
        {"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.20},
    ],
}
OLD_TOWN_TARIFF: dict[str, Any] = {
    "kind": "flat",
    "currency": "EUR",
    "price_per_kwh": 0.25,
    "standing_charge_per_day": 0.5,
}
WORK_ORDER_OPENED = datetime(2026, 10, 10, 8, 0, tzinfo=UTC)
WORK_ORDER_COMPLETED = datetime(2026, 10, 12, 8, 0, tzinfo=UTC)
WORK_ORDER_CLOSED = datetime(2026, 10, 15, 8, 0, tzinfo=UTC)


@dataclass
class ReportWorld:
    client_id: str = ""
    client_name: str = "Harbour Hotels"
    marina_id: str = ""
    old_town_id: str = ""
    devices: dict[str, str] = field(default_factory=dict)
    """name → id."""
    work_order_id: str = ""

    def options(self, *, baseline: bool = False) -> Options:
        return Options(
            GridFactors(DEFAULT_FACTOR, {self.old_town_id: OLD_TOWN_FACTOR}), baseline=baseline
        )


def hours(first: datetime = FIRST, last: datetime = LAST) -> list[datetime]:
    out, t = [], first
    while t <= last:
        out.append(t)
        t += timedelta(hours=1)
    return out


def _tags(world: ReportWorld, site_id: str, gateway: str, device: str) -> dict[str, str]:
    return {"client": world.client_id, "site": site_id, "gateway": gateway, "device": device}


def readings(name: str) -> list[tuple[datetime, dict[str, float]]]:
    """The energy points of one device: (time, counters)."""
    out: list[tuple[datetime, dict[str, float]]] = []
    rate = RATES[name]
    for k, t in enumerate(hours()):
        if name == "cc-1":
            out.append(
                (t, {"energy": 5000.0 + rate * k, "runtime_hours": 800.0 + 0.75 * k,
                     "start_count": 100.0 + 3 * k})
            )  # fmt: skip
        elif name == "cc-2":
            value = (WRAP - 300.4 + rate * k) % WRAP
            out.append((t, {"energy": value}))
        elif name == "fan-1":
            if t < RESET_AT:
                out.append((t, {"energy": 7000.0 + rate * k}))
            else:
                after = (t - RESET_AT) // timedelta(hours=1)
                out.append((t, {"energy": RESET_READING + rate * after}))
        elif name == "cc-3" and t not in GAP:
            out.append((t, {"energy": 100.0 + rate * k}))
    return out


def seed_report_world(sessions: sessionmaker[Session], store: TimeSeriesStore) -> ReportWorld:
    world = ReportWorld()
    system = Principal.system()
    with session_scope(sessions) as s:
        client = services.create_client(s, system, name=world.client_name)
        world.client_id = client.id
        marina = services.create_site(
            s, system, client_id=client.id, name="Marina", kind="hotel",
            floor_area_m2=5000.0, timezone="Asia/Dubai", tariff=MARINA_TARIFF,
            address="Al Marsa St 12, Dubai Marina",
        )  # fmt: skip
        old_town = services.create_site(
            s, system, client_id=client.id, name="Old Town", kind="office",
            timezone="Europe/Paris", tariff=OLD_TOWN_TARIFF,
        )  # fmt: skip
        world.marina_id, world.old_town_id = marina.id, old_town.id
        services.create_gateway(s, system, gateway_id="gw-marina", site_id=marina.id)
        services.create_gateway(s, system, gateway_id="gw-oldtown", site_id=old_town.id)
        for name, gateway, asset, profile in (
            ("cc-1", "gw-marina", "compressor", "ew-cc100"),
            ("cc-2", "gw-marina", "compressor", "ew-cc100"),
            ("fan-1", "gw-marina", "fan", "ew-fc200"),
            ("cc-3", "gw-oldtown", "compressor", None),
            ("fan-2", "gw-oldtown", "fan", None),
        ):
            device = services.create_device(
                s, system, gateway_id=gateway, name=name, asset_type=asset, profile=profile,
                make="Acme" if profile else None, model="CC-100" if name.startswith("cc") else None,
                location=f"{name} plant room",
            )  # fmt: skip
            world.devices[name] = device.id
        s.flush()
        order = WorkOrder(
            number=42,
            client_id=client.id,
            site_id=marina.id,
            device_id=world.devices["cc-1"],
            fault="condenser_fouling",
            source=Source.RISK,
            state=State.CLOSED,
            open_key=None,
            priority=3,
            problem="condenser fouling",
            cause="dirt",
            remedy="clean the coil",
            sla_due_at=WORK_ORDER_OPENED + timedelta(days=3),
            opened_at=WORK_ORDER_OPENED,
            updated_at=WORK_ORDER_CLOSED,
            closed_at=WORK_ORDER_CLOSED,
        )
        old = WorkOrder(
            number=41,
            client_id=client.id,
            site_id=marina.id,
            device_id=world.devices["cc-2"],
            fault="refrigerant_leak",
            source=Source.RISK,
            state=State.CLOSED,
            open_key=None,
            priority=2,
            problem="leak",
            cause="a joint",
            remedy="braze",
            sla_due_at=datetime(2026, 9, 2, tzinfo=UTC),
            opened_at=datetime(2026, 9, 1, tzinfo=UTC),
            updated_at=datetime(2026, 9, 5, tzinfo=UTC),
            closed_at=datetime(2026, 9, 5, tzinfo=UTC),
        )
        s.add_all([order, old])
        s.flush()
        s.add(
            WorkOrderEvent(
                work_order_id=order.id, seq=1, at=WORK_ORDER_COMPLETED, kind="state_changed",
                actor="desk:x", from_state="in_progress", to_state="complete",
            )
        )  # fmt: skip
        world.work_order_id = order.id
    points: list[Point] = []
    sites = {"cc-1": "marina", "cc-2": "marina", "fan-1": "marina", "cc-3": "oldtown"}
    for name, where in sites.items():
        site_id = world.marina_id if where == "marina" else world.old_town_id
        tags = _tags(world, site_id, f"gw-{where}", world.devices[name])
        for t, values in readings(name):
            points.append(Point("energy", to_ns(t.timestamp()), tags, values))
    tags = {**_tags(world, world.marina_id, "gw-marina", world.devices["cc-1"]), "group": "default"}
    for t in hours():
        for minute, extra in ((25, 0.0), (55, 1.0)):
            end = t.replace(minute=minute)
            points.append(
                Point(
                    "features",
                    to_ns(end.timestamp()),
                    tags,
                    {"ambient_temp__mean": 30.0 + extra, "superheat__mean": 6.0 + extra,
                     "ambient_temp__max": 99.0, "n_samples": 30,
                     "active_power__minimum": 2.5 * extra},  # ran throughout at :55 only
                )
            )  # fmt: skip
    store.write(points)
    return world


TENANT_MONTH = "2026-01"
"""The month of ``support.registry_world``'s readings."""


def seed_tenant_reports(world: World, folder: Path) -> World:
    """A ready report of :data:`TENANT_MONTH` for each tenant of the two-tenant registry
    (made from :func:`~support.registry_world.seed_points` in a store of its own, without a
    baseline); a copy of ``world`` whose tenants know their report's id."""
    store = SQLiteStore(folder / "report-ts.db")
    engine = make_engine(world.url)
    tenants = {}
    try:
        seed_points(store, world)
        sessions = make_sessionmaker(engine)
        for word, tenant in world.tenants.items():
            made = generate_now(
                sessions, store, tenant.client_id, TENANT_MONTH, Options(GridFactors(0.4), False)
            )
            assert made.exception is None, made.error
            tenants[word] = replace(tenant, report_id=made.report_id)
    finally:
        store.close()
        engine.dispose()
    return replace(world, tenants=tenants)
