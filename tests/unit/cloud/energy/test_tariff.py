"""Tariffs: schema validation with key paths, flat and time-of-use prices in local time,
DST days, half-hour boundaries, seasons; expected figures computed by hand."""

from __future__ import annotations

import copy
import math
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.energy.tariff import (
    FlatTariff,
    TouTariff,
    cost,
    cost_by_period,
    kwh_by_period,
    parse_tariff,
    price_per_hour,
    tariff_json_schema,
)
from cloud.errors import InvalidInput

H = 3600
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
FLAT: dict[str, Any] = {
    "kind": "flat",
    "currency": "EUR",
    "price_per_kwh": 0.21,
    "standing_charge_per_day": 0.5,
}
TOU: dict[str, Any] = {
    "kind": "tou",
    "currency": "EUR",
    "default_price_per_kwh": 0.20,
    "standing_charge_per_day": 0.5,
    "periods": [
        {"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.10},
        {"name": "peak", "days": WEEKDAYS, "start": "08:00", "end": "20:00", "price_per_kwh": 0.30},
    ],
}
NIGHT_ONLY: dict[str, Any] = {**TOU, "periods": [TOU["periods"][0]]}


def utc(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


def local(zone: str, year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=ZoneInfo(zone)).timestamp())


def hours(start: int, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.arange(start, start + count * H, H, dtype=np.int64)


# ---- flat ----------------------------------------------------------------------------------


def test_flat_tariff() -> None:
    # 1.0 + 2.0 + 0.5 = 3.5 kWh × 0.21 EUR = 0.735 EUR; 3 hours of a 24-hour UTC day:
    # standing 0.5 × 3/24 = 0.0625 EUR.
    prices = price_per_hour(FLAT, hours(utc(2024, 1, 8), 3), "UTC")
    kwh = [1.0, 2.0, 0.5]
    assert prices.prices.tolist() == [0.21, 0.21, 0.21]
    assert prices.periods.tolist() == ["flat"] * 3
    assert cost(kwh, prices.prices) == pytest.approx(0.735)
    assert cost_by_period(kwh, prices) == {"flat": pytest.approx(0.735)}
    assert prices.standing.sum() == pytest.approx(0.0625)
    assert prices.currency == "EUR"


def test_missing_hours_add_no_cost() -> None:
    # (1.0 + 3.0) × 0.21 = 0.84: the NaN hour is unknown, not free, but adds nothing.
    prices = price_per_hour(FLAT, hours(utc(2024, 1, 8), 3), "UTC")
    assert cost([1.0, math.nan, 3.0], prices.prices) == pytest.approx(0.84)


# ---- time of use ---------------------------------------------------------------------------


def test_tou_weekday_with_midnight_crossing_night() -> None:
    # Monday 8 January 2024 in Lisbon (WET, UTC+0), 1 kWh every hour:
    # 00-05 night (Sunday's night period runs on to 06:00) 6 h × 0.10 = 0.60
    # 06-07 default                                           2 h × 0.20 = 0.40
    # 08-19 peak                                             12 h × 0.30 = 3.60
    # 20-21 default                                           2 h × 0.20 = 0.40
    # 22-23 night                                             2 h × 0.10 = 0.20
    # total 5.20 EUR; night 0.80, default 0.80, peak 3.60.
    prices = price_per_hour(TOU, hours(local("Europe/Lisbon", 2024, 1, 8), 24), "Europe/Lisbon")
    expected = [0.10] * 6 + [0.20] * 2 + [0.30] * 12 + [0.20] * 2 + [0.10] * 2
    np.testing.assert_allclose(prices.prices, expected)
    assert prices.periods.tolist() == (
        ["night"] * 6 + ["default"] * 2 + ["peak"] * 12 + ["default"] * 2 + ["night"] * 2
    )
    kwh = np.ones(24)
    assert cost(kwh, prices.prices) == pytest.approx(5.20)
    by_period = cost_by_period(kwh, prices)
    assert by_period == {
        "night": pytest.approx(0.80),
        "peak": pytest.approx(3.60),
        "default": pytest.approx(0.80),
    }
    assert kwh_by_period(kwh, prices) == {
        "night": pytest.approx(8.0),
        "peak": pytest.approx(12.0),
        "default": pytest.approx(4.0),
    }
    assert prices.standing.sum() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("day", "hour", "period"),
    [
        # A night period on mon-fri: days name the day it starts.
        ((2024, 1, 8), 2, "default"),  # Monday 02:00: Sunday's night, Sunday not listed
        ((2024, 1, 8), 23, "night"),  # Monday 23:00: Monday's night
        ((2024, 1, 9), 2, "night"),  # Tuesday 02:00: Monday's night
        ((2024, 1, 13), 5, "night"),  # Saturday 05:00: Friday's night
        ((2024, 1, 13), 22, "default"),  # Saturday 22:00: Saturday not listed
    ],
)
def test_midnight_crossing_period_belongs_to_its_start_day(
    day: tuple[int, int, int], hour: int, period: str
) -> None:
    tariff = copy.deepcopy(NIGHT_ONLY)
    tariff["periods"][0]["days"] = WEEKDAYS
    prices = price_per_hour(tariff, [local("UTC", *day, hour)], "UTC")
    assert prices.periods.tolist() == [period]


def test_half_hour_boundary_splits_the_hour() -> None:
    # cheap 00:30-07:30 at 0.10, default 0.30, a UTC day, 1 kWh every hour:
    # 00:00-01:00 half default, half cheap: (0.30 + 0.10) / 2 = 0.20
    # 01-06 cheap 6 × 0.10; 07:00-08:00 half cheap, half default: 0.20; 08-23 16 × 0.30.
    # cost 0.20 + 0.60 + 0.20 + 4.80 = 5.80
    # cheap: 0.5 × 0.10 + 0.60 + 0.5 × 0.10 = 0.70; default: 0.15 + 0.15 + 4.80 = 5.10
    # kWh: cheap 0.5 + 6 + 0.5 = 7, default 17.
    tariff = {
        "kind": "tou",
        "currency": "EUR",
        "default_price_per_kwh": 0.30,
        "periods": [{"name": "cheap", "start": "00:30", "end": "07:30", "price_per_kwh": 0.10}],
    }
    prices = price_per_hour(tariff, hours(utc(2024, 1, 8), 24), "UTC")
    np.testing.assert_allclose(prices.prices, [0.20] + [0.10] * 6 + [0.20] + [0.30] * 16)
    np.testing.assert_allclose(prices.shares["cheap"][:9], [0.5, 1, 1, 1, 1, 1, 1, 0.5, 0])
    kwh = np.ones(24)
    assert cost(kwh, prices.prices) == pytest.approx(5.80)
    assert cost_by_period(kwh, prices) == {
        "cheap": pytest.approx(0.70),
        "default": pytest.approx(5.10),
    }
    assert kwh_by_period(kwh, prices) == {
        "cheap": pytest.approx(7.0),
        "default": pytest.approx(17.0),
    }
    assert prices.periods[0] == "cheap"  # a tie goes to the declared period


@pytest.mark.parametrize(
    ("utc_hour", "price"),
    [
        (2, 0.20),  # 02:00Z = 07:30-08:30 IST: half default, half peak: (0.10 + 0.30) / 2
        (3, 0.30),  # 08:30-09:30: peak
        (14, 0.20),  # 19:30-20:30: half peak, half default
        (15, 0.10),  # 20:30-21:30: default
    ],
)
def test_half_hour_time_zone(utc_hour: int, price: float) -> None:
    # Asia/Kolkata is UTC+05:30: every local hour boundary falls mid-way through a UTC hour.
    tariff = {
        "kind": "tou",
        "currency": "INR",
        "default_price_per_kwh": 0.10,
        "periods": [{"name": "peak", "start": "08:00", "end": "20:00", "price_per_kwh": 0.30}],
    }
    prices = price_per_hour(tariff, [utc(2024, 1, 8, utc_hour)], "Asia/Kolkata")
    assert prices.prices[0] == pytest.approx(price)


# ---- daylight saving time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_hour", "count", "tou_cost", "night_hours"),
    [
        # 31 March 2024, Lisbon springs forward at 01:00 UTC (01:00 WET → 02:00 WEST): the
        # local day runs from 00:00Z to 23:00Z, 23 hours; wall-clock 01:00-02:00 never
        # happens. Night (22-06): local 00, 02, 03, 04, 05, 22, 23 = 7 h; default 16 h.
        # Sunday, so no peak. Cost at 1 kWh/h: 7 × 0.10 + 16 × 0.20 = 0.70 + 3.20 = 3.90.
        pytest.param(utc(2024, 3, 31, 0), 23, 3.90, 7, id="spring-forward-23h"),
        # 27 October 2024, Lisbon falls back at 01:00 UTC (02:00 WEST → 01:00 WET): the
        # local day runs from 26 Oct 23:00Z to 28 Oct 00:00Z, 25 hours; 01:00-02:00 twice.
        # Night: local 00, 01, 01 again, 02, 03, 04, 05, 22, 23 = 9 h; default 16 h.
        # Cost: 9 × 0.10 + 16 × 0.20 = 0.90 + 3.20 = 4.10.
        pytest.param(utc(2024, 10, 26, 23), 25, 4.10, 9, id="fall-back-25h"),
    ],
)
def test_dst_day_in_lisbon(first_hour: int, count: int, tou_cost: float, night_hours: int) -> None:
    stamps = hours(first_hour, count)
    tou = price_per_hour(TOU, stamps, "Europe/Lisbon")
    kwh = np.ones(count)
    assert cost(kwh, tou.prices) == pytest.approx(tou_cost)
    assert list(tou.periods).count("night") == night_hours
    assert set(tou.periods) == {"night", "default"}
    # One local day: the daily standing charge once, whatever its length (0.5 / 23 or
    # 0.5 / 25 per hour).
    assert tou.days == pytest.approx(1.0)
    assert tou.standing.sum() == pytest.approx(0.5)
    np.testing.assert_allclose(tou.standing, 0.5 / count)
    # Flat: every hour that happened is charged: 23 × 0.21 = 4.83, 25 × 0.21 = 5.25.
    flat = price_per_hour(FLAT, stamps, "Europe/Lisbon")
    assert cost(kwh, flat.prices) == pytest.approx(count * 0.21)


def test_daily_costs_around_spring_forward_add_up() -> None:
    # 30 March (Sat, 24 h), 31 March (Sun, 23 h), 1 April (Mon, 24 h) 2024 in Lisbon:
    # 00:00 local 30 March = 00:00Z; 00:00 local 2 April = 23:00Z 1 April: 71 hours.
    # At 1 kWh/h with the night-only tariff (night 22-06 0.10, default 0.20):
    #   30 March: 8 night + 16 default = 0.80 + 3.20 = 4.00
    #   31 March: 7 night + 16 default = 0.70 + 3.20 = 3.90
    #   1 April:  8 night + 16 default = 4.00
    # and 0.50 standing charge each.
    zone = ZoneInfo("Europe/Lisbon")
    stamps = hours(utc(2024, 3, 30), 71)
    prices = price_per_hour(NIGHT_ONLY, stamps, "Europe/Lisbon")
    days = [datetime.fromtimestamp(int(t), zone).date() for t in stamps]
    daily: dict[date, list[float]] = {}
    for day, price, standing in zip(days, prices.prices, prices.standing, strict=True):
        energy, charge = daily.setdefault(day, [0.0, 0.0])
        daily[day] = [energy + price, charge + standing]
    assert [days.count(d) for d in daily] == [24, 23, 24]
    assert {d: pytest.approx(v) for d, v in daily.items()} == {
        date(2024, 3, 30): [4.00, 0.5],
        date(2024, 3, 31): [3.90, 0.5],
        date(2024, 4, 1): [4.00, 0.5],
    }
    assert prices.days == pytest.approx(3.0)


def test_march_in_lisbon_has_31_days_in_743_hours() -> None:
    stamps = hours(local("Europe/Lisbon", 2024, 3, 1), 743)
    assert local("Europe/Lisbon", 2024, 4, 1) == stamps[-1] + H
    assert price_per_hour(FLAT, stamps, "Europe/Lisbon").days == pytest.approx(31.0)


# ---- seasons -------------------------------------------------------------------------------

SEASONAL: dict[str, Any] = {
    "kind": "tou",
    "currency": "EUR",
    "default_price_per_kwh": 0.20,
    "periods": [
        {"name": "peak", "days": WEEKDAYS, "start": "08:00", "end": "20:00", "price_per_kwh": 0.30}
    ],
    "seasons": [
        {
            "name": "summer",
            "start_month": 6,
            "end_month": 9,
            "default_price_per_kwh": 0.25,
            "periods": [
                {
                    "name": "peak",
                    "days": WEEKDAYS,
                    "start": "12:00",
                    "end": "18:00",
                    "price_per_kwh": 0.40,
                },
                {"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.05},
            ],
        },
        {
            "name": "winter",
            "start_month": 11,
            "end_month": 2,
            "periods": [{"name": "peak", "start": "17:00", "end": "21:00", "price_per_kwh": 0.45}],
        },
    ],
}


@pytest.mark.parametrize(
    ("when", "price", "period"),
    [
        ((2024, 4, 8, 10), 0.30, "peak"),  # Monday in April: no season, top-level peak
        ((2024, 4, 8, 21), 0.20, "default"),  # top-level default
        ((2024, 3, 4, 18), 0.30, "peak"),  # March: no season
        ((2024, 10, 7, 18), 0.30, "peak"),  # October: no season
        ((2024, 7, 8, 10), 0.25, "default"),  # summer: the season's default
        ((2024, 7, 8, 13), 0.40, "peak"),  # summer peak 12-18
        ((2024, 7, 13, 13), 0.25, "default"),  # Saturday in summer: no peak
        ((2024, 1, 8, 10), 0.20, "default"),  # winter without its own default: the tariff's
        ((2024, 1, 13, 18), 0.45, "peak"),  # winter peak 17-21 every day (Saturday)
        ((2024, 12, 2, 18), 0.45, "peak"),  # December: winter wraps the year (11 to 2)
        ((2024, 9, 30, 23), 0.05, "night"),  # summer night, 30 September
        ((2024, 10, 1, 1), 0.20, "default"),  # its tail on 1 October: October's schedule
    ],
)
def test_seasons(when: tuple[int, int, int, int], price: float, period: str) -> None:
    prices = price_per_hour(SEASONAL, [utc(*when)], "UTC")
    assert (prices.prices[0], prices.periods[0]) == (pytest.approx(price), period)


# ---- validation ----------------------------------------------------------------------------


def _with(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the value at ``path`` replaced (or deleted: ``...``)."""
    out = copy.deepcopy(base)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


OVERLAPPING = _with(
    TOU,
    ("periods",),
    [
        *TOU["periods"],
        {"name": "shoulder", "start": "19:00", "end": "21:00", "price_per_kwh": 0.25},
    ],
)
EARLY = {"name": "early", "start": "05:00", "end": "07:00", "price_per_kwh": 0.15}


@pytest.mark.parametrize(
    ("data", "where", "why"),
    [
        (None, "tariff", "no tariff is set"),
        (5, "tariff", "valid dictionary"),
        (_with(FLAT, ("kind",), "fixed"), "tariff.kind", "expected 'flat' or 'tou', got 'fixed'"),
        (_with(FLAT, ("kind",), ...), "tariff.kind", "expected 'flat' or 'tou'"),
        (_with(FLAT, ("price_per_kwh",), ...), "tariff.price_per_kwh", "Field required"),
        (_with(FLAT, ("price_per_kWh",), 0.2), "tariff.price_per_kWh", "Extra inputs"),
        (
            _with(FLAT, ("price_per_kwh",), -0.01),
            "tariff.price_per_kwh",
            "greater than or equal to 0",
        ),
        (_with(FLAT, ("price_per_kwh",), math.nan), "tariff.price_per_kwh", "finite"),
        (_with(FLAT, ("currency",), "eur"), "tariff.currency", "pattern"),
        (_with(FLAT, ("schema_version",), 2), "tariff.schema_version", "1"),
        (
            _with(TOU, ("periods", 1, "start"), "25:00"),
            "tariff.periods[1].start",
            "'25:00' is not a time",
        ),
        (_with(TOU, ("periods", 0, "end"), "08:60"), "tariff.periods[0].end", "not a time"),
        (_with(TOU, ("periods", 0, "end"), "8:00"), "tariff.periods[0].end", "not a time"),
        (
            _with(TOU, ("periods", 0, "start"), "24:00"),
            "tariff.periods[0].start",
            "23:59 at the latest",
        ),
        (_with(TOU, ("periods", 0, "end"), "22:00"), "tariff.periods[0].end", "equals start"),
        (
            _with(TOU, ("periods", 1, "days"), ["mon", "tue", "mon"]),
            "tariff.periods[1].days[2]",
            "'mon' is listed twice",
        ),
        (_with(TOU, ("periods", 1, "days"), ["monday"]), "tariff.periods[1].days[0]", "'mon'"),
        (_with(TOU, ("periods", 1, "days"), []), "tariff.periods[1].days", "at least 1"),
        (_with(TOU, ("periods", 0, "name"), "default"), "tariff.periods[0].name", "reserved"),
        (_with(TOU, ("periods",), []), "tariff.periods", "at least one period"),
        (
            OVERLAPPING,
            "tariff.periods[2]",
            "'shoulder' (19:00-21:00) overlaps periods[1] ('peak', 08:00-20:00) on mon from 19:00",
        ),
        (
            # Sunday's night period runs to Monday 06:00: 'early' overlaps it from 05:00.
            _with(TOU, ("periods",), [TOU["periods"][0], EARLY]),
            "tariff.periods[1]",
            "'early' (05:00-07:00) overlaps periods[0] ('night', 22:00-06:00) on mon from 05:00",
        ),
        (
            _with(
                TOU,
                ("periods",),
                [*TOU["periods"], {**TOU["periods"][1], "days": ["sat"], "price_per_kwh": 0.35}],
            ),
            "tariff.periods[2].price_per_kwh",
            "differs from periods[1], also named 'peak' (0.3)",
        ),
        (
            _with(SEASONAL, ("seasons", 1, "start_month"), 9),
            "tariff.seasons[1]",
            "'winter' (months 9-2) overlaps seasons[0] ('summer', months 6-9) in month 9",
        ),
        (
            _with(SEASONAL, ("seasons", 0, "end_month"), 13),
            "tariff.seasons[0].end_month",
            "less than or equal to 12",
        ),
        (
            _with(SEASONAL, ("seasons", 0, "periods", 1, "start"), "17:00"),
            "tariff.seasons[0].periods[1]",
            "'night' (17:00-06:00) overlaps periods[0] ('peak', 12:00-18:00) on mon from 17:00",
        ),
    ],
)
def test_validation_errors_name_the_key_path(data: Any, where: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_tariff(data)
    assert caught.value.where == where
    assert why in caught.value.why


def test_more_problems_are_counted() -> None:
    data = _with(_with(FLAT, ("price_per_kwh",), -1), ("currency",), "x")
    with pytest.raises(InvalidInput, match=r"and 1 more problem\)"):
        parse_tariff(data)


def test_valid_tariffs() -> None:
    assert isinstance(parse_tariff(FLAT), FlatTariff)
    whole_day = {"name": "all", "start": "00:00", "end": "24:00", "price_per_kwh": 0.1}
    two_peaks = [
        {"name": "peak", "start": "07:00", "end": "09:00", "price_per_kwh": 0.3},
        {"name": "peak", "start": "17:00", "end": "20:00", "price_per_kwh": 0.3},
    ]
    for periods in ([whole_day], two_peaks):
        assert isinstance(parse_tariff({**TOU, "periods": periods}), TouTariff)
    assert isinstance(parse_tariff(SEASONAL), TouTariff)
    schema = tariff_json_schema()
    assert {"FlatTariff", "TouTariff"} <= set(schema["$defs"])


def test_custom_root_name() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_tariff(_with(FLAT, ("currency",), "x"), where="sites[3].tariff")
    assert caught.value.where == "sites[3].tariff.currency"


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda: price_per_hour(FLAT, [0], "Mars/Olympus"), "timezone"),
        (lambda: price_per_hour(FLAT, [0], "../etc/passwd"), "timezone"),
        (lambda: price_per_hour(FLAT, [[0, 3600]], "UTC"), "hour_starts_utc"),
        (lambda: price_per_hour(FLAT, [0.5], "UTC"), "hour_starts_utc"),
        (lambda: price_per_hour(FLAT, ["x"], "UTC"), "hour_starts_utc"),
        (lambda: price_per_hour(FLAT, [10**15], "UTC"), "hour_starts_utc"),
        (lambda: price_per_hour(_with(FLAT, ("currency",), "x"), [0], "UTC"), "tariff.currency"),
        (lambda: cost([1.0, 2.0], [0.2]), "kwh"),
    ],
)
def test_bad_evaluation_input(call: Any, where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.where == where


def test_no_hours() -> None:
    prices = price_per_hour(TOU, [], "Europe/Lisbon")
    assert (prices.prices.size, prices.periods.size, prices.days) == (0, 0, 0.0)


# ---- properties ----------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Lisbon",
    "America/New_York",
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Australia/Adelaide",  # +09:30 / +10:30
    "Australia/Lord_Howe",  # +10:30 / +11:00: a half-hour DST shift
]
starts = st.integers(min_value=utc(2000, 1, 1) // H, max_value=utc(2037, 1, 1) // H).map(
    lambda h: h * H
)


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start=starts,
    kwh=st.lists(st.floats(min_value=0.0, max_value=1e4, allow_nan=False), min_size=1, max_size=72),
    price=st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
)
def test_flat_cost_is_kwh_times_price(
    zone: str, start: int, kwh: list[float], price: float
) -> None:
    prices = price_per_hour({**FLAT, "price_per_kwh": price}, hours(start, len(kwh)), zone)
    assert cost(kwh, prices.prices) == pytest.approx(sum(kwh) * price, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(ZONES), start=starts, count=st.integers(min_value=1, max_value=200))
def test_tou_parts_add_up(zone: str, start: int, count: int) -> None:
    """Shares sum to 1, price parts to the price, cost by period to the cost, in any zone."""
    stamps = hours(start, count)
    prices = price_per_hour(SEASONAL, stamps, zone)
    np.testing.assert_allclose(sum(prices.shares.values()), 1.0)
    np.testing.assert_allclose(sum(prices.price_parts.values()), prices.prices)
    kwh = np.linspace(0.0, 5.0, count)
    assert sum(cost_by_period(kwh, prices).values()) == pytest.approx(cost(kwh, prices.prices))
    assert np.all((prices.local_days > 0) & (prices.local_days <= 60 / (23 * 60)))
