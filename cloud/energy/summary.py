"""A period's report figures: per device, per asset type of a site, per site.

Pure functions over what :mod:`cloud.energy.counters`, :mod:`cloud.energy.tariff` and
:mod:`cloud.energy.carbon` produce; the service that queries the registry and the store
comes on top. Inputs are plain: a :class:`DeviceEnergy` per device (id, asset type, site
id, hourly series) and a :class:`SiteContext` per site (its prices over the same hours,
grid factor, floor area).

Figures
    ``kwh`` counts MEASURED, RESET and ESTIMATED hours (MISSING hours add nothing; their
    number is reported); ``share_estimated`` is the ESTIMATED part of ``kwh``. Energy cost
    and cost by tariff period come from the hourly prices; the site's standing charge is
    added once per site (``total_cost``), never per device. Hours are device-hours: a site
    of 3 devices over a 30-day month has 2,160.

Energy use intensity
    ``kwh / floor_area_m2 × 365 / days`` in kWh/m²·year, annualised from the period's
    local calendar days (:attr:`~cloud.energy.tariff.HourlyPrices.days`: 31 for March
    whatever DST does), with a year of :data:`DAYS_PER_YEAR` days. It is the intensity of
    the monitored appliances, not of the whole building. ``None`` with a reason when the
    site has no (or no positive) floor area, the period has no days, or nothing was
    measured.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from cloud.energy.carbon import check_grid_factor, co2_kg
from cloud.energy.counters import CounterSeries
from cloud.energy.tariff import HourlyPrices, cost, cost_by_period, kwh_by_period
from cloud.errors import InvalidInput

DAYS_PER_YEAR: Final = 365.0


@dataclass(frozen=True, slots=True)
class DeviceEnergy:
    """One device's hourly series and where it belongs."""

    device_id: str
    asset_type: str
    site_id: str
    series: CounterSeries


@dataclass(frozen=True, slots=True)
class SiteContext:
    """What a site's figures need besides its devices' series."""

    site_id: str
    prices: HourlyPrices
    """The site's tariff over the period's hours (the devices' series have the same hours)."""
    grid_factor: float
    """kg CO2e/kWh (:func:`cloud.energy.carbon.check_grid_factor`)."""
    floor_area_m2: float | None = None


def _merge(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0.0) + value
    return out


@dataclass(frozen=True, slots=True)
class Totals:
    """Energy, cost and CO2 of one device or a group of devices over the period."""

    kwh: float = 0.0
    estimated_kwh: float = 0.0
    cost: float = 0.0
    """Energy cost (no standing charge), in the site's currency."""
    cost_by_period: Mapping[str, float] = field(default_factory=dict)
    kwh_by_period: Mapping[str, float] = field(default_factory=dict)
    co2_kg: float = 0.0
    measured_hours: int = 0
    estimated_hours: int = 0
    missing_hours: int = 0
    devices: int = 0

    @property
    def share_estimated(self) -> float | None:
        """ESTIMATED kWh / kWh; ``None`` when nothing was consumed."""
        return self.estimated_kwh / self.kwh if self.kwh > 0 else None

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            kwh=self.kwh + other.kwh,
            estimated_kwh=self.estimated_kwh + other.estimated_kwh,
            cost=self.cost + other.cost,
            cost_by_period=_merge(self.cost_by_period, other.cost_by_period),
            kwh_by_period=_merge(self.kwh_by_period, other.kwh_by_period),
            co2_kg=self.co2_kg + other.co2_kg,
            measured_hours=self.measured_hours + other.measured_hours,
            estimated_hours=self.estimated_hours + other.estimated_hours,
            missing_hours=self.missing_hours + other.missing_hours,
            devices=self.devices + other.devices,
        )


@dataclass(frozen=True, slots=True)
class Intensity:
    """Energy use intensity, kWh/m²·year, or why there is none."""

    kwh_per_m2_year: float | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    device_id: str
    asset_type: str
    totals: Totals
    wraps: int
    resets: int
    long_gaps: int
    rejected: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class AssetTypeSummary:
    asset_type: str
    totals: Totals
    devices: tuple[DeviceSummary, ...]
    """By device id."""


@dataclass(frozen=True, slots=True)
class SiteSummary:
    site_id: str
    currency: str
    days: float
    """Local calendar days of the period."""
    totals: Totals
    standing_charge: float
    total_cost: float
    """Energy cost of every device plus the standing charge."""
    intensity: Intensity
    asset_types: tuple[AssetTypeSummary, ...]
    """By asset type name."""


def device_totals(series: CounterSeries, prices: HourlyPrices, grid_factor: float) -> Totals:
    """One device's totals; ``series`` and ``prices`` must cover the same hours."""
    if not np.array_equal(series.hours, prices.hours):
        raise InvalidInput(
            f"series {series.counter}.hours",
            f"{len(series.hours)} hours that are not the {len(prices.hours)} hours of the prices",
        )
    return Totals(
        kwh=series.total_kwh,
        estimated_kwh=series.estimated_kwh,
        cost=cost(series.kwh, prices.prices),
        cost_by_period=cost_by_period(series.kwh, prices),
        kwh_by_period=kwh_by_period(series.kwh, prices),
        co2_kg=co2_kg(series.kwh, grid_factor),
        measured_hours=series.measured_hours,
        estimated_hours=series.estimated_hours,
        missing_hours=series.missing_hours,
        devices=1,
    )


def energy_intensity(
    kwh: float, floor_area_m2: float | None, days: float, *, measured: bool = True
) -> Intensity:
    """``kwh`` over ``days`` as kWh/m²·year (see the module docstring); ``measured``: whether
    any hour of the period had a figure."""
    if floor_area_m2 is None:
        return Intensity(None, "the site has no floor area")
    if not (math.isfinite(floor_area_m2) and floor_area_m2 > 0):
        return Intensity(None, f"the floor area {floor_area_m2!r} m² is not positive")
    if not (math.isfinite(days) and days > 0):
        return Intensity(None, "the period has no days")
    if not measured:
        return Intensity(None, "no consumption was measured in the period")
    return Intensity(kwh / floor_area_m2 * DAYS_PER_YEAR / days)


def summarise_site(site: SiteContext, devices: Iterable[DeviceEnergy]) -> SiteSummary:
    """The site's figures from its devices (each must name this site, once)."""
    factor = check_grid_factor(site.grid_factor, f"site {site.site_id}.grid_factor")
    by_type: dict[str, list[DeviceSummary]] = defaultdict(list)
    seen: set[str] = set()
    for device in devices:
        where = f"device {device.device_id}"
        if device.site_id != site.site_id:
            raise InvalidInput(f"{where}.site_id", f"is {device.site_id!r}, not {site.site_id!r}")
        if device.device_id in seen:
            raise InvalidInput(where, "is given twice")
        seen.add(device.device_id)
        s = device.series
        by_type[device.asset_type].append(
            DeviceSummary(
                device_id=device.device_id,
                asset_type=device.asset_type,
                totals=device_totals(s, site.prices, factor),
                wraps=s.wraps,
                resets=s.resets,
                long_gaps=s.long_gaps,
                rejected=dict(s.rejected),
            )
        )
    asset_types = []
    for asset_type in sorted(by_type):
        members = tuple(sorted(by_type[asset_type], key=lambda d: d.device_id))
        totals = sum((d.totals for d in members), Totals())
        asset_types.append(AssetTypeSummary(asset_type, totals, members))
    totals = sum((a.totals for a in asset_types), Totals())
    standing = float(site.prices.standing.sum())
    days = site.prices.days
    measured = totals.measured_hours + totals.estimated_hours > 0
    return SiteSummary(
        site_id=site.site_id,
        currency=site.prices.currency,
        days=days,
        totals=totals,
        standing_charge=standing,
        total_cost=totals.cost + standing,
        intensity=energy_intensity(totals.kwh, site.floor_area_m2, days, measured=measured),
        asset_types=tuple(asset_types),
    )


def summarise(
    devices: Iterable[DeviceEnergy], sites: Mapping[str, SiteContext]
) -> list[SiteSummary]:
    """Every site of ``sites`` (by site id; a site without devices has zero totals) from
    the devices, each of which must belong to one of them."""
    for site_id, site in sites.items():
        if site.site_id != site_id:
            raise InvalidInput(f"sites[{site_id!r}].site_id", f"is {site.site_id!r}")
    by_site: dict[str, list[DeviceEnergy]] = {site_id: [] for site_id in sites}
    for device in devices:
        if device.site_id not in by_site:
            raise InvalidInput(
                f"device {device.device_id}.site_id", f"{device.site_id!r} is not a site given"
            )
        by_site[device.site_id].append(device)
    return [summarise_site(sites[site_id], by_site[site_id]) for site_id in sorted(sites)]
