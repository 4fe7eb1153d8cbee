"""A small service business for work-order tests: clients, sites, devices, technicians,
depots, parts and desks, written straight into a migrated registry.

``seed(sessions)`` makes one client ("Harbour Hotels") with a site in Lisbon, a gateway
and ``devices`` compressors (the first critical, with a vulnerable occupant), a second
client ("Mall Co") with one fan, three technicians at two depots and the parts the
default catalogue names for a refrigerant leak and bearing wear, stocked at one depot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from cloud.registry.models import Client, Criticality, Device, Gateway, Site, SiteKind
from cloud.workorders.models import Depot, Desk, Part, Stock, Technician

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DESK_SECRET = "whsec_RWRnZVdhdGNoIHRlc3QgZGVzayBzaWduaW5nIGtleSE="  # noqa: S105 - test desks


@dataclass
class Business:
    client_id: str = ""
    other_client_id: str = ""
    site_id: str = ""
    other_site_id: str = ""
    devices: list[str] = field(default_factory=list)
    other_device: str = ""
    technicians: dict[str, str] = field(default_factory=dict)
    depots: dict[str, str] = field(default_factory=dict)
    desks: list[str] = field(default_factory=list)


def seed(
    sessions: sessionmaker[Session],
    *,
    devices: int = 3,
    desks: int = 1,
    desk_url: str = "http://127.0.0.1:9/hook",
) -> Business:
    b = Business()
    with sessions.begin() as s:
        client = Client(name="Harbour Hotels")
        other = Client(name="Mall Co")
        s.add_all([client, other])
        s.flush()
        site = Site(
            client_id=client.id,
            name="Lisbon Riverside",
            kind=SiteKind.HOTEL,
            latitude=38.7071,
            longitude=-9.1355,
            timezone="Europe/Lisbon",
        )
        other_site = Site(
            client_id=other.id,
            name="Porto Mall",
            kind=SiteKind.MALL,
            latitude=41.1579,
            longitude=-8.6291,
            timezone="Europe/Lisbon",
        )
        s.add_all([site, other_site])
        s.flush()
        gw = Gateway(id="gw-lisbon", site_id=site.id)
        gw2 = Gateway(id="gw-porto", site_id=other_site.id)
        s.add_all([gw, gw2])
        s.flush()
        for i in range(devices):
            d = Device(
                gateway_id=gw.id,
                name=f"cc-{i}",
                asset_type="compressor",
                criticality=Criticality.CRITICAL if i == 0 else Criticality.MEDIUM,
                occupant_flags=["vulnerable_occupant"] if i == 0 else [],
                location=f"plant room {i}",
            )
            s.add(d)
            s.flush()
            b.devices.append(d.id)
        fan = Device(gateway_id=gw2.id, name="fan-1", asset_type="fan", criticality=Criticality.LOW)
        s.add(fan)
        depot_lx = Depot(name="Lisbon depot", latitude=38.74, longitude=-9.15)
        depot_po = Depot(name="Porto depot", latitude=41.15, longitude=-8.61)
        s.add_all([depot_lx, depot_po])
        s.flush()
        techs = {
            "ana": Technician(
                name="Ana",
                skills=["refrigeration", "f-gas", "hvac"],
                depot_id=depot_lx.id,
                latitude=38.75,
                longitude=-9.14,
            ),
            "bruno": Technician(
                name="Bruno",
                skills=["mechanical", "electrical"],
                depot_id=depot_lx.id,
                latitude=38.72,
                longitude=-9.10,
            ),
            "carla": Technician(
                name="Carla",
                skills=["refrigeration", "f-gas", "mechanical"],
                depot_id=depot_po.id,
                latitude=41.15,
                longitude=-8.61,
            ),
        }
        s.add_all(techs.values())
        s.add_all(
            [
                Part(number="RFG-R410A-5KG", name="R410A 5 kg", unit_cost=120.0),
                Part(number="BRZ-ROD-KIT", name="brazing kit", unit_cost=35.0),
                Part(number="BRG-6205-2RS", name="bearing 6205-2RS", unit_cost=8.5),
            ]
        )
        s.flush()
        s.add_all(
            [
                Stock(depot_id=depot_po.id, part_number="RFG-R410A-5KG", on_hand=1),
                Stock(depot_id=depot_lx.id, part_number="BRG-6205-2RS", on_hand=10),
            ]
        )
        for _ in range(desks):
            desk = Desk(
                client_id=client.id,
                kind="webhook",
                url=desk_url,
                secret=DESK_SECRET,
                options={},
            )
            s.add(desk)
            s.flush()
            b.desks.append(desk.id)
        s.flush()
        b.client_id, b.other_client_id = client.id, other.id
        b.site_id, b.other_site_id = site.id, other_site.id
        b.other_device = fan.id
        b.technicians = {k: t.id for k, t in techs.items()}
        b.depots = {"lisbon": depot_lx.id, "porto": depot_po.id}
    return b
