"""Report totals per device, asset type and site, and energy use intensity, for April 2024
at a Lisbon site; every expected figure is computed by hand in the comments."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from cloud.energy.counters import CounterSeries, CounterSpec, hourly_consumption
from cloud.energy.summary import (
    DeviceEnergy,
    Intensity,
    SiteContext,
    Totals,
    energy_intensity,
    summarise,
    summarise_site,
)
from cloud.energy.tariff import price_per_hour
from cloud.errors import InvalidInput
from cloud.tsdb.base import EnergyInterval

H = 3600
ZONE = "Europe/Lisbon"
START = int(datetime(2024, 4, 1, tzinfo=ZoneInfo(ZONE)).timestamp())  # 31 Mar 23:00Z (WEST)
END = int(datetime(2024, 5, 1, tzinfo=ZoneInfo(ZONE)).timestamp())
HOURS = np.arange(START, END, H, dtype=np.int64)  # 720: April has no DST change
FLAT = {"kind": "flat", "currency": "EUR", "price_per_kwh": 0.20, "standing_charge_per_day": 1.0}
TOU = {
    "kind": "tou",
    "currency": "EUR",
    "default_price_per_kwh": 0.20,
    "periods": [
        {"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.10},
        {
            "name": "peak",
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "08:00",
            "end": "20:00",
            "price_per_kwh": 0.30,
        },
    ],
}


def series(reading: Callable[[int], float | None]) -> CounterSeries:
    """April's series from hourly readings ``reading(i)``, ``i = 0`` the hour before April."""
    rows = [EnergyInterval(START + (i - 1) * H, "energy", reading(i), None) for i in range(721)]
    return hourly_consumption(rows, CounterSpec(), max_kw=30.0, start=START, end=END)


# comp-a: 1 kWh every hour, all measured: 720 kWh.
COMP_A = series(lambda i: float(i))
# comp-b: 2 kWh every hour, no readings for i = 10..14: hours 10..15 share
# (30 − 18) = 12 kWh, 2.0 each, estimated; 1440 kWh in all, 12 of them estimated.
COMP_B = series(lambda i: None if 10 <= i <= 14 else 2.0 * i)
# fan-1: 0.5 kWh an hour but silent until i = 24: hours 1..24 missing (24), then
# 696 hours × 0.5 = 348 kWh.
FAN_1 = series(lambda i: 0.5 * i if i >= 24 else None)
DEVICES = [
    DeviceEnergy("fan-1", "fan", "s1", FAN_1),
    DeviceEnergy("comp-b", "compressor", "s1", COMP_B),
    DeviceEnergy("comp-a", "compressor", "s1", COMP_A),
]


def site(tariff: dict[str, object] = FLAT, floor_area_m2: float | None = 1000.0) -> SiteContext:
    return SiteContext("s1", price_per_hour(tariff, HOURS, ZONE), 0.25, floor_area_m2)


def test_site_summary() -> None:
    summary = summarise_site(site(), DEVICES)
    # kWh 720 + 1440 + 348 = 2508; × 0.20 EUR = 501.60; × 0.25 kg = 627.0 kg CO2e;
    # standing 30 days × 1.00 = 30.00; total 531.60 EUR.
    t = summary.totals
    assert (t.kwh, t.cost, t.co2_kg) == (
        pytest.approx(2508.0),
        pytest.approx(501.6),
        pytest.approx(627.0),
    )
    assert (summary.days, summary.standing_charge) == (pytest.approx(30.0), pytest.approx(30.0))
    assert summary.total_cost == pytest.approx(531.6)
    assert summary.currency == "EUR"
    # Device-hours: measured 720 + 714 + 696 = 2130, estimated 6, missing 24 (= 3 × 720).
    assert (t.measured_hours, t.estimated_hours, t.missing_hours, t.devices) == (2130, 6, 24, 3)
    assert t.estimated_kwh == pytest.approx(12.0)
    assert t.share_estimated == pytest.approx(12.0 / 2508.0)
    assert t.cost_by_period == {"flat": pytest.approx(501.6)}
    # EUI: 2508 kWh / 1000 m² × 365 / 30 days = 2.508 × 12.1667 = 30.514 kWh/m²·year.
    assert summary.intensity.kwh_per_m2_year == pytest.approx(30.514)
    assert summary.intensity.reason is None


def test_asset_types_and_devices() -> None:
    summary = summarise_site(site(), DEVICES)
    by_type = {a.asset_type: a for a in summary.asset_types}
    assert [a.asset_type for a in summary.asset_types] == ["compressor", "fan"]
    # compressors: 720 + 1440 = 2160 kWh, 432.00 EUR, 540.0 kg; fan: 348 kWh, 69.60, 87.0.
    compressors, fans = by_type["compressor"].totals, by_type["fan"].totals
    assert (compressors.kwh, compressors.cost, compressors.co2_kg, compressors.devices) == (
        pytest.approx(2160.0),
        pytest.approx(432.0),
        pytest.approx(540.0),
        2,
    )
    assert (fans.kwh, fans.cost, fans.co2_kg) == (
        pytest.approx(348.0),
        pytest.approx(69.6),
        pytest.approx(87.0),
    )
    assert [d.device_id for d in by_type["compressor"].devices] == ["comp-a", "comp-b"]
    comp_b = by_type["compressor"].devices[1]
    assert (comp_b.totals.kwh, comp_b.totals.estimated_kwh) == (
        pytest.approx(1440.0),
        pytest.approx(12.0),
    )
    assert by_type["fan"].devices[0].totals.missing_hours == 24


def test_cost_by_tou_period() -> None:
    # comp-a, 1 kWh every hour of April 2024 (30 days of 24 h; 22 weekdays, 8 weekend days):
    # night 22-06 every day: 8 h × 30 = 240 h × 0.10 = 24.00
    # peak 08-20 on weekdays: 12 h × 22 = 264 h × 0.30 = 79.20
    # default: 4 h × 22 + 16 h × 8 = 216 h × 0.20 = 43.20; total 720 h, 146.40 EUR.
    summary = summarise_site(site(TOU), [DeviceEnergy("comp-a", "compressor", "s1", COMP_A)])
    t = summary.totals
    assert t.kwh_by_period == {
        "night": pytest.approx(240.0),
        "peak": pytest.approx(264.0),
        "default": pytest.approx(216.0),
    }
    assert t.cost_by_period == {
        "night": pytest.approx(24.0),
        "peak": pytest.approx(79.2),
        "default": pytest.approx(43.2),
    }
    assert t.cost == pytest.approx(146.4)
    assert summary.standing_charge == 0.0


@pytest.mark.parametrize(
    ("kwh", "area", "days", "measured", "expected"),
    [
        (2000.0, 1000.0, 30.0, True, Intensity(2000 / 1000 * 365 / 30)),  # 24.333
        (100.0, 50.0, 365.0, True, Intensity(2.0)),  # a whole year: 100 / 50
        (310.0, 10.0, 31.0, True, Intensity(365.0)),  # 31 kWh/m² in 31 days: 1 a day
        (0.0, 100.0, 30.0, True, Intensity(0.0)),
        (1000.0, None, 30.0, True, Intensity(None, "the site has no floor area")),
        (1000.0, 0.0, 30.0, True, Intensity(None, "the floor area 0.0 m² is not positive")),
        (1000.0, math.nan, 30.0, True, Intensity(None, "the floor area nan m² is not positive")),
        (1000.0, 100.0, 0.0, True, Intensity(None, "the period has no days")),
        (0.0, 100.0, 30.0, False, Intensity(None, "no consumption was measured in the period")),
    ],
)
def test_energy_intensity(
    kwh: float, area: float | None, days: float, measured: bool, expected: Intensity
) -> None:
    got = energy_intensity(kwh, area, days, measured=measured)
    assert got.reason == expected.reason
    if expected.kwh_per_m2_year is None:
        assert got.kwh_per_m2_year is None
    else:
        assert got.kwh_per_m2_year == pytest.approx(expected.kwh_per_m2_year)


def test_site_without_floor_area_or_devices() -> None:
    assert summarise_site(site(floor_area_m2=None), DEVICES).intensity == Intensity(
        None, "the site has no floor area"
    )
    (empty,) = summarise([], {"s1": site()})
    assert (empty.totals, empty.asset_types) == (Totals(), ())
    assert empty.intensity.reason == "no consumption was measured in the period"
    assert empty.totals.share_estimated is None
    assert empty.total_cost == pytest.approx(30.0)  # the standing charge alone


def test_summarise_groups_by_site() -> None:
    s2 = SiteContext("s2", price_per_hour(FLAT, HOURS, ZONE), 0.1, None)
    moved = DeviceEnergy("comp-c", "compressor", "s2", COMP_A)
    summaries = summarise([*DEVICES, moved], {"s2": s2, "s1": site()})
    assert [(s.site_id, s.totals.devices) for s in summaries] == [("s1", 3), ("s2", 1)]
    assert summaries[1].totals.co2_kg == pytest.approx(72.0)  # 720 kWh × 0.1


@pytest.mark.parametrize(
    ("devices", "where"),
    [
        ([DeviceEnergy("x", "fan", "s9", COMP_A)], "device x.site_id"),
        ([DeviceEnergy("x", "fan", "s1", COMP_A)] * 2, "device x"),
        (
            [
                DeviceEnergy(
                    "x",
                    "fan",
                    "s1",
                    # one hour short of the site's prices
                    CounterSeries("energy", HOURS[:-1], COMP_A.kwh[:-1], COMP_A.flags[:-1]),
                )
            ],
            "series energy.hours",
        ),
    ],
)
def test_summarise_site_refuses(devices: Sequence[DeviceEnergy], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        summarise_site(site(), devices)
    assert caught.value.where == where


def test_summarise_refuses_unknown_site_and_bad_factor() -> None:
    with pytest.raises(InvalidInput) as caught:
        summarise([DeviceEnergy("x", "fan", "s9", COMP_A)], {"s1": site()})
    assert caught.value.where == "device x.site_id"
    bad = SiteContext("s1", price_per_hour(FLAT, HOURS, ZONE), 3.0, None)
    with pytest.raises(InvalidInput) as caught:
        summarise_site(bad, DEVICES)
    assert caught.value.where == "site s1.grid_factor"
