"""A small registry with two tenants, for the cloud's registry, auth and API tests.

``seed_world(url)`` migrates the database at ``url`` and creates an admin, a service-desk
user and two clients (Alpha and Bravo), each with a site, a gateway (with a credential),
two devices, a device event, a facility manager with a password and an API key. Every
name and serial carries the tenant's word (``alpha``/``bravo``), so a test can look for
any trace of one tenant in a response meant for the other. ``seed_work_orders(world)``
adds, per tenant, a service desk, a risk score and a work order opened from it (with its
delivery in the outbox).

Password hashing (scrypt) is the slow part; tests seed once per session into a template
file and copy it (``copy_sqlite``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.api.schemas import EXAMPLE_TECHNICIAN_ID
from cloud.auth import Principal, create_api_key
from cloud.db import make_engine, make_sessionmaker, migrate, session_scope
from cloud.registry import services
from cloud.registry.models import Client, Gateway, Site, SiteKind
from cloud.risk.models import RiskScore
from cloud.settings import Settings, load_settings
from cloud.tsdb.base import Point, TimeSeriesStore
from cloud.workorders import service as work_orders
from cloud.workorders.models import Desk, OutboxMessage, Source, Technician

PASSWORD = "correct horse battery"  # noqa: S105 - test users only
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@dataclass
class Tenant:
    word: str
    client_id: str = ""
    client_name: str = ""
    site_id: str = ""
    gateway_id: str = ""
    credential_id: str = ""
    gateway_secret: str = ""
    device_id: str = ""
    device2_id: str = ""
    serial: str = ""
    event_id: str = ""
    manager_id: str = ""
    manager_email: str = ""
    api_key: str = ""
    api_key_id: str = ""
    # seed_work_orders:
    desk_id: str = ""
    work_order_id: str = ""
    outbox_id: str = ""
    """The order's delivery to the desk (an integer id)."""
    # report_world.seed_tenant_reports:
    report_id: str = ""

    def ids(self) -> dict[str, str]:
        """Every object id of this tenant, by the path/query parameter that names it."""
        ids = {
            "client_id": self.client_id,
            "site_id": self.site_id,
            "gateway_id": self.gateway_id,
            "credential_id": self.credential_id,
            "device_id": self.device_id,
            "event_id": self.event_id,
            "user_id": self.manager_id,
            "key_id": self.api_key_id,
        }
        if self.work_order_id:
            ids |= {"work_order_id": self.work_order_id, "outbox_id": self.outbox_id}
        if self.report_id:
            ids["report_id"] = self.report_id
        return ids

    def markers(self) -> set[str]:
        """Strings that only this tenant's data contains (not the outbox id: a small
        integer, which any text may contain)."""
        return {
            *(v for k, v in self.ids().items() if k != "outbox_id"),
            self.desk_id,
            self.client_name,
            self.serial,
            self.manager_email,
            self.device2_id,
            f"{self.word}-site",
            f"{self.word} roof",
        }


@dataclass
class World:
    url: str
    admin_id: str = ""
    admin_email: str = "admin@edgewatch.example"
    desk_id: str = ""
    desk_email: str = "desk@edgewatch.example"
    tenants: dict[str, Tenant] = field(default_factory=dict)

    @property
    def a(self) -> Tenant:
        return self.tenants["alpha"]

    @property
    def b(self) -> Tenant:
        return self.tenants["bravo"]


def seed_world(url: str) -> World:
    migrate(url)
    world = World(url=url)
    system = Principal.system()
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            admin = services.create_user(
                s, system, email=world.admin_email, role="admin", password=PASSWORD
            )
            desk = services.create_user(
                s, system, email=world.desk_email, role="service_desk", password=PASSWORD
            )
            world.admin_id, world.desk_id = admin.id, desk.id
            for word in ("alpha", "bravo"):
                t = Tenant(word=word)
                client = services.create_client(s, system, name=f"Client {word.title()}")
                t.client_id, t.client_name = client.id, client.name
                site = services.create_site(
                    s,
                    system,
                    client_id=client.id,
                    name=f"{word}-site",
                    kind="hotel",
                    address=f"{word} street 1",
                    timezone="Asia/Dubai",
                    tariff={"kind": "flat", "currency": "AED", "price_per_kwh": 0.38},
                )
                t.site_id = site.id
                gateway = services.create_gateway(
                    s, system, gateway_id=f"gw-{word}", site_id=site.id, name=f"{word} controller"
                )
                t.gateway_id = gateway.id
                issued = services.rotate_gateway_credentials(s, system, gateway.id, grace_s=86_400)
                t.credential_id, t.gateway_secret = issued.credential.id, issued.secret
                t.serial = f"SER-{word.upper()}-1"
                device = services.create_device(
                    s,
                    system,
                    gateway_id=gateway.id,
                    name=f"cc-{word}",
                    asset_type="compressor",
                    serial=t.serial,
                    install_date=date(2023, 4, 1),
                    warranty_end=date(2026, 3, 31),
                    criticality="high",
                    location=f"{word} roof",
                    occupant_flags=["vulnerable_occupant"],
                )
                t.device_id = device.id
                device2 = services.create_device(
                    s, system, gateway_id=gateway.id, name=f"fan-{word}", asset_type="fan"
                )
                t.device2_id = device2.id
                event = services.add_device_event(
                    s,
                    system,
                    device.id,
                    kind="installed",
                    summary=f"{word} compressor installed",
                    at=datetime(2023, 4, 1, 9, tzinfo=UTC),
                )
                t.event_id = event.id
                t.manager_email = f"fm@{word}.example"
                manager = services.create_user(
                    s,
                    system,
                    email=t.manager_email,
                    role="facility_manager",
                    client_id=client.id,
                    name=f"{word} manager",
                    password=PASSWORD,
                )
                t.manager_id = manager.id
                key = create_api_key(s, Principal.of(manager), f"{word} key")
                t.api_key, t.api_key_id = key.secret, key.key.id
                world.tenants[word] = t
    finally:
        engine.dispose()
    return world


def seed_work_orders(world: World) -> World:
    """Per tenant: a webhook desk, a risk score of the first device (at ``NOW`` + 1 h) and
    a work order opened from it through :func:`cloud.workorders.service.trigger` (so its
    ``created`` delivery waits in the outbox); and the technician of the API's assignment
    example. A copy of ``world`` with the new ids; the tenants of ``world`` itself are left
    as they are (fixtures share them)."""
    engine = make_engine(world.url)
    sessions = make_sessionmaker(engine)
    at = NOW + timedelta(hours=1)
    tenants: dict[str, Tenant] = {}
    try:
        with sessions.begin() as s:
            s.add(Technician(id=EXAMPLE_TECHNICIAN_ID, name="Example Technician", skills=["hvac"]))
        for word, t in world.tenants.items():
            with sessions.begin() as s:
                desk = Desk(
                    client_id=t.client_id,
                    kind="webhook",
                    url=f"https://desk.{word}.example/hook",
                    secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
                )
                s.add(desk)
                s.add(
                    RiskScore(
                        device_id=t.device_id,
                        site_id=t.site_id,
                        ts=at,
                        computed_at=at,
                        p24=0.3,
                        p72=0.7,
                        horizon_h=72.0,
                        fault_type="refrigerant_leak",
                        fault_probs={"refrigerant_leak": 0.8, "valve_wear": 0.2},
                        health=30,
                        anomaly_score=2.5,
                        alert=True,
                        top_signals=[{"signal": "superheat", "share": 0.6, "trend_per_day": 0.4}],
                        model="compressor-risk",
                    )
                )
                s.flush()
                desk_id = desk.id
            result = work_orders.trigger(
                sessions,
                work_orders.Trigger(
                    device_id=t.device_id,
                    fault="refrigerant_leak",
                    source=Source.RISK,
                    at=at,
                    p24=0.3,
                    p72=0.7,
                    health=30,
                ),
                work_orders.OrderPolicy(),
                now=at,
            )
            assert result.order_id is not None, result
            with sessions() as s:
                outbox_id = s.scalars(
                    select(OutboxMessage.id).where(OutboxMessage.work_order_id == result.order_id)
                ).one()
            tenants[word] = replace(
                t, desk_id=desk_id, work_order_id=result.order_id, outbox_id=str(outbox_id)
            )
    finally:
        engine.dispose()
    return replace(world, tenants=tenants)


def add_gateway(
    session: Session, gateway_id: str, *, client: str = "Hotel group", site: str = "Dubai marina"
) -> Gateway:
    """A client with one hotel site and ``gateway_id`` on it (flushed): the least a
    registry needs before devices and their records."""
    c = Client(name=client)
    session.add(c)
    session.flush()
    s = Site(client_id=c.id, name=site, kind=SiteKind.HOTEL)
    session.add(s)
    session.flush()
    gateway = Gateway(id=gateway_id, site_id=s.id)
    session.add(gateway)
    session.flush()
    return gateway


def copy_sqlite(template: Path, target: Path) -> str:
    """Copy a seeded SQLite file (its engine disposed, so no WAL is pending); its URL."""
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def settings_for(url: str, tsdb_path: Path, **overrides: object) -> Settings:
    return load_settings(database_url=url, tsdb="sqlite", tsdb_sqlite_path=tsdb_path, **overrides)


def seed_points(store: TimeSeriesStore, world: World) -> None:
    """A few points per tenant's first device: features, a score, an alarm, energy."""
    base_ns = int(NOW.timestamp()) * 1_000_000_000
    hour = 3600 * 1_000_000_000
    points: list[Point] = []
    for t in world.tenants.values():
        tags = {"client": t.client_id, "site": t.site_id, "gateway": t.gateway_id}
        dev = {**tags, "device": t.device_id}
        for i in range(4):
            ts = base_ns + i * hour
            points.append(
                Point(
                    "features", ts, {**dev, "group": "fast"}, {"p__mean": 1.0 + i, "n_samples": 30}
                )
            )
            points.append(
                Point(
                    "score",
                    ts,
                    {**dev, "model_id": "cc-v1"},
                    {"score": 0.5 * i, "anomalous": i == 3, "threshold": 1.0},
                )
            )
            points.append(Point("energy", ts, dev, {"energy": 100.0 + 5 * i}))
        points.append(
            Point(
                "alarm", base_ns + 2 * hour, {**dev, "name": "high_pressure"}, {"state": "raised"}
            )
        )
    store.write(points)
