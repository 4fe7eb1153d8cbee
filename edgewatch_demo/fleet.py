"""The demo's fleet and its calendar: who owns what, which units fail, and when.

Two clients, three sites of different kinds in different climates, eight controllers on
three gateways (two over Modbus TCP, one over Modbus RTU). Every unit runs healthy for the
scorer's baseline week; then four develop a fault that ends in a failure four to six days
later, and four stay healthy. The simulated period is the last ``days`` of the month that
ended most recently at every site, so the month's energy report can be made at the end of
the run, and every record the agents stamp lies in the cloud's past.

Everything here is pure: :func:`plan` turns "now" into the calendar, :func:`fleet_document`
the calendar into a fleet document for :func:`firmware_sim.fleet.parse_fleet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from cloud.reports.period import Month

DEFAULT_DAYS: Final = 14.0
"""Simulated days: a baseline week, then faults developing to failure."""
BASELINE_DAYS: Final = 6.0
"""Each device's first days of windows are its baseline for the risk scorer."""


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    asset_type: str
    variant: str
    unit_id: int
    rated_power_kw: float
    fault: str | None = None
    onset_day: float = 0.0
    """Days after the start at which the fault begins."""
    days_to_failure: float = 0.0

    @property
    def profile(self) -> str:
        return "ew-cc100" if self.asset_type == "compressor" else "ew-fc200"

    @property
    def failure_day(self) -> float | None:
        return None if self.fault is None else self.onset_day + self.days_to_failure


@dataclass(frozen=True, slots=True)
class DemoSite:
    id: str
    client: str
    name: str
    kind: str
    floor_area_m2: float
    timezone: str
    lat: float
    lon: float
    mean_temp_c: float
    annual_swing_c: float
    daily_swing_c: float
    tariff: dict[str, Any]
    """In the cloud's tariff schema (:mod:`cloud.energy.tariff`)."""
    gateway: str
    transport: str
    units: tuple[Unit, ...]


CLIENTS: Final = {"acme": "Acme Hotels", "northwind": "Northwind Retail & Offices"}

SITES: Final = (
    DemoSite(
        id="dubai-marina", client="acme", name="Acme Marina Hotel, Dubai", kind="hotel",
        floor_area_m2=24_000, timezone="Asia/Dubai", lat=25.08, lon=55.14,
        mean_temp_c=28.5, annual_swing_c=8.0, daily_swing_c=9.0,
        tariff={"kind": "flat", "currency": "AED", "price_per_kwh": 0.38},
        gateway="gw-dxb-1", transport="tcp",
        units=(
            Unit("cc-dxb-01", "compressor", "split_ac", 1, 11.0,
                 "refrigerant_leak", onset_day=7.5, days_to_failure=5.0),
            Unit("cc-dxb-02", "compressor", "split_ac", 2, 9.5),
            Unit("fan-dxb-01", "fan", "condenser", 3, 1.5,
                 "bearing_wear", onset_day=7.0, days_to_failure=6.0),
        ),
    ),
    DemoSite(
        id="madrid-plaza", client="northwind", name="Plaza Norte shopping centre, Madrid",
        kind="mall", floor_area_m2=85_000, timezone="Europe/Madrid", lat=40.42, lon=-3.70,
        mean_temp_c=15.5, annual_swing_c=10.0, daily_swing_c=12.0,
        tariff={
            "kind": "tou", "currency": "EUR", "default_price_per_kwh": 0.14,
            "periods": [
                {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"],
                 "start": "18:00", "end": "22:00", "price_per_kwh": 0.31},
                {"name": "night", "start": "00:00", "end": "08:00", "price_per_kwh": 0.09},
            ],
        },
        gateway="gw-mad-1", transport="rtu",
        units=(
            Unit("cc-mad-01", "compressor", "rooftop", 11, 32.0,
                 "condenser_fouling", onset_day=7.0, days_to_failure=6.0),
            Unit("cc-mad-02", "compressor", "refrigeration", 12, 12.0),
        ),
    ),
    DemoSite(
        id="sydney-tower", client="northwind", name="Harbour Tower offices, Sydney",
        kind="office", floor_area_m2=18_000, timezone="Australia/Sydney", lat=-33.87,
        lon=151.21, mean_temp_c=18.0, annual_swing_c=5.0, daily_swing_c=7.0,
        tariff={"kind": "flat", "currency": "AUD", "price_per_kwh": 0.29},
        gateway="gw-syd-1", transport="tcp",
        units=(
            Unit("cc-syd-01", "compressor", "split_ac", 1, 14.0,
                 "electrical_degradation", onset_day=8.0, days_to_failure=4.5),
            Unit("fan-syd-01", "fan", "supply", 2, 7.5),
            Unit("cc-syd-02", "compressor", "split_ac", 3, 14.0),
        ),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """The simulated period and the report month it falls in."""

    start: datetime
    end: datetime
    month: Month
    """The local month every simulated day belongs to at every site (:mod:`cloud.reports`)."""

    @property
    def days(self) -> float:
        return (self.end - self.start) / timedelta(days=1)

    def at(self, day: float) -> datetime:
        return self.start + timedelta(days=day)


def _month_start(month: Month, timezone: str) -> datetime:
    return month.first_day(ZoneInfo(timezone)).astimezone(UTC)


def plan(now: datetime, days: float = DEFAULT_DAYS) -> Plan:
    """The last ``days`` of the most recent month that has ended at every site by ``now``:
    from ``days`` before the month's end at the site where it ends first (the one furthest
    east) to that end, in whole UTC hours. Every site's local month then holds all of it."""
    if not 1 <= days <= 27:
        raise ValueError(f"days must be between 1 and 27, got {days:g}")
    zones = {s.timezone for s in SITES}
    month = Month.of(now.astimezone(UTC), "UTC")
    while max(_month_start(month.plus(1), z) for z in zones) > now:
        month = month.plus(-1)
    # A month has at least 28 days and the sites' clocks are less than a day apart, so
    # 27 days before the first end are still in the month everywhere.
    end = min(_month_start(month.plus(1), z) for z in zones)
    end = end.replace(minute=0, second=0, microsecond=0)
    return Plan(start=end - timedelta(days=days), end=end, month=month)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fleet_document(p: Plan, *, seed: int = 7) -> dict[str, Any]:
    """The fleet for :func:`firmware_sim.fleet.parse_fleet`: the sites above, faults at
    their days after ``p.start``."""
    clients: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
    for site in SITES:
        devices = []
        for u in site.units:
            device: dict[str, Any] = {
                "id": u.id,
                "asset_type": u.asset_type,
                "variant": u.variant,
                "profile": u.profile,
                "unit_id": u.unit_id,
                "install_date": "2021-04-01",
                "rated_power_kw": u.rated_power_kw,
            }
            if u.fault is not None:
                device["faults"] = [
                    {
                        "type": u.fault,
                        "onset": _iso(p.at(u.onset_day)),
                        "days_to_failure": u.days_to_failure,
                    }
                ]
            devices.append(device)
        gateway: dict[str, Any] = {"id": site.gateway, "transport": site.transport}
        if site.transport == "rtu":
            gateway |= {"baudrate": 115200, "parity": "N"}
        clients[site.client].append(
            {
                "id": site.id,
                "name": site.name,
                "kind": site.kind,
                "floor_area_m2": site.floor_area_m2,
                "location": {
                    "lat": site.lat,
                    "lon": site.lon,
                    "mean_temp_c": site.mean_temp_c,
                    "annual_swing_c": site.annual_swing_c,
                    "daily_swing_c": site.daily_swing_c,
                },
                "timezone": site.timezone,
                "gateways": [gateway | {"devices": devices}],
            }
        )
    return {
        "schema_version": 1,
        "name": "edgewatch-demo",
        "seed": seed,
        "start": _iso(p.start),
        "clients": [{"id": c, "name": CLIENTS[c], "sites": s} for c, s in clients.items()],
    }


def failing_units() -> list[tuple[DemoSite, Unit]]:
    return [(s, u) for s in SITES for u in s.units if u.fault is not None]
