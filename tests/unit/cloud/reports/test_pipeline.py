"""The report's figures through the whole pipeline (registry + SQLite store → collect →
build), against figures derived by hand from ``support.report_world``: a counter that
wraps, a controller reset, a gap, a silent device, a time-of-use site in Dubai and a
flat-rate site in Paris whose October has 745 hours."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from support.report_world import (
    DEFAULT_FACTOR,
    GAP,
    MONTH,
    NOW,
    OLD_TOWN_FACTOR,
    RATES,
    RESET_AT,
    RESET_READING,
    WORK_ORDER_COMPLETED,
    WORK_ORDER_OPENED,
)
from unit.cloud.reports.conftest import Env

from cloud.errors import InvalidInput, NotFound
from cloud.reports.build import build
from cloud.reports.collect import Inputs, collect, hourly_means
from cloud.reports.content import Report, SiteSection
from cloud.reports.errors import NoData
from cloud.reports.period import parse_month

H = timedelta(hours=1)


def local_month(zone: str) -> list[datetime]:
    """The UTC hour starts of October 2026 in ``zone`` (by hand: local midnights)."""
    tz = ZoneInfo(zone)
    t = datetime(2026, 10, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(2026, 11, 1, tzinfo=tz).astimezone(UTC)
    out = []
    while t < end:
        out.append(t)
        t += H
    return out


MARINA_HOURS = local_month("Asia/Dubai")
PARIS_HOURS = local_month("Europe/Paris")
RESET_HOUR = RESET_AT.replace(minute=0)


def marina_kwh(hour: datetime) -> float:
    """The three Marina devices in one UTC hour: the reset hour counts the new reading."""
    fan = RESET_READING if hour == RESET_HOUR else RATES["fan-1"]
    return RATES["cc-1"] + RATES["cc-2"] + fan


def marina_period(hour: datetime) -> tuple[str, float]:
    local = hour.astimezone(ZoneInfo("Asia/Dubai"))
    if local.weekday() < 5 and 12 <= local.hour < 18:
        return "peak", 0.50
    if local.hour >= 22 or local.hour < 6:
        return "night", 0.20
    return "default", 0.30


def site(report: Report, name: str) -> SiteSection:
    return next(s for s in report.sites if s.name == name)


def test_month_hours_are_local(report: Report) -> None:
    assert (len(MARINA_HOURS), len(PARIS_HOURS)) == (744, 745)  # Paris falls back on 25 Oct
    marina, paris = site(report, "Marina"), site(report, "Old Town")
    assert marina.period_start == "2026-10-01T00:00:00+04:00"
    assert paris.period_start == "2026-10-01T00:00:00+02:00"
    assert paris.period_end == "2026-11-01T00:00:00+01:00"
    assert marina.days == pytest.approx(31.0) and paris.days == pytest.approx(31.0)


def test_device_energy_through_a_wrap_a_reset_and_a_gap(report: Report) -> None:
    marina, paris = site(report, "Marina"), site(report, "Old Town")
    devices = {d.name: d for s in report.sites for d in s.devices}
    assert devices["cc-1"].kwh == pytest.approx(2.0 * 744)
    assert devices["cc-2"].kwh == pytest.approx(3.0 * 744, abs=1e-4)  # through the wrap
    assert devices["cc-2"].wraps == 1 and devices["cc-2"].resets == 0
    assert devices["fan-1"].kwh == pytest.approx(744 - (1 - RESET_READING))
    assert devices["fan-1"].resets == 1
    assert devices["cc-3"].kwh == pytest.approx(1.5 * 745)  # the gap spread, total kept
    assert devices["cc-3"].estimated_hours == len(GAP) + 1
    assert devices["cc-3"].estimated_kwh == pytest.approx(1.5 * (len(GAP) + 1))
    assert (devices["fan-2"].kwh, devices["fan-2"].readings) == (0.0, 0)
    assert devices["fan-2"].missing_hours == 745
    assert marina.totals.kwh == pytest.approx(sum(marina_kwh(h) for h in MARINA_HOURS), abs=1e-4)
    assert paris.totals.kwh == pytest.approx(1.5 * 745)
    assert [d.name for d in marina.devices] == ["cc-2", "cc-1", "fan-1"]  # largest first
    assert marina.devices[0].share_of_site == pytest.approx(2232 / marina.totals.kwh)


def test_cost_by_time_of_use_period_and_standing_charge(report: Report) -> None:
    marina = site(report, "Marina")
    by_period: dict[str, float] = {"peak": 0.0, "night": 0.0, "default": 0.0}
    kwh_by_period = dict.fromkeys(by_period, 0.0)
    for hour in MARINA_HOURS:
        name, price = marina_period(hour)
        by_period[name] += marina_kwh(hour) * price
        kwh_by_period[name] += marina_kwh(hour)
    rows = {p.period: p for p in marina.tariff_periods}
    assert set(rows) == set(by_period)
    for name in by_period:
        assert rows[name].cost == pytest.approx(by_period[name], abs=1e-6)
        assert rows[name].kwh == pytest.approx(kwh_by_period[name], abs=1e-4)
    energy_cost = sum(by_period.values())
    assert marina.currency == "AED"
    assert marina.totals.energy_cost == pytest.approx(energy_cost, abs=1e-6)
    assert marina.totals.standing_charge == pytest.approx(10.0 * 31)
    assert marina.totals.total_cost == pytest.approx(energy_cost + 310.0, abs=1e-6)
    assert rows["peak"].mean_price == pytest.approx(0.50)

    paris = site(report, "Old Town")
    assert paris.currency == "EUR"
    assert [p.period for p in paris.tariff_periods] == ["flat"]
    assert paris.totals.energy_cost == pytest.approx(1.5 * 745 * 0.25)
    assert paris.totals.standing_charge == pytest.approx(0.5 * 31)
    assert paris.totals.total_cost == pytest.approx(1.5 * 745 * 0.25 + 15.5)


def test_co2_intensity_and_client_totals(report: Report) -> None:
    marina, paris = site(report, "Marina"), site(report, "Old Town")
    assert marina.grid_factor_kg_per_kwh == DEFAULT_FACTOR
    assert marina.totals.co2_kg == pytest.approx(marina.totals.kwh * DEFAULT_FACTOR)
    assert paris.totals.co2_kg == pytest.approx(1.5 * 745 * OLD_TOWN_FACTOR)
    assert marina.intensity_kwh_per_m2_year == pytest.approx(marina.totals.kwh / 5000.0 * 365 / 31)
    assert paris.intensity_kwh_per_m2_year is None
    assert paris.intensity_note == "the site has no floor area"
    t = report.totals
    assert t.kwh == pytest.approx(marina.totals.kwh + paris.totals.kwh)
    assert t.co2_kg == pytest.approx(marina.totals.co2_kg + paris.totals.co2_kg)
    assert [(c.currency, c.sites) for c in t.costs] == [("AED", 1), ("EUR", 1)]  # never added
    assert t.costs[0].total_cost == pytest.approx(marina.totals.total_cost)
    assert (t.sites, t.devices, t.devices_without_data) == (2, 5, 1)
    assert t.device_hours == 3 * 744 + 2 * 745


def test_days_are_local_and_add_up(report: Report) -> None:
    paris = site(report, "Old Town")
    days = {d.date: d for d in paris.days_}
    assert len(days) == 31 and min(days) == "2026-10-01" and max(days) == "2026-10-31"
    assert days["2026-10-25"].kwh == pytest.approx(25 * 1.5)  # the 25-hour day
    assert days["2026-10-24"].kwh == pytest.approx(24 * 1.5)
    assert sum(d.kwh for d in paris.days_) == pytest.approx(paris.totals.kwh)
    assert sum(d.cost or 0 for d in paris.days_) == pytest.approx(paris.totals.total_cost or 0)
    assert days["2026-10-24"].missing_hours == 24  # fan-2, every hour
    marina = site(report, "Marina")
    assert sum(d.cost or 0 for d in marina.days_) == pytest.approx(marina.totals.total_cost or 0)


def test_units_for_the_efficiency_modules(inputs: Inputs, env: Env) -> None:
    cc1 = next(d for s in inputs.sites for d in s.devices if d.info.name == "cc-1")
    unit = cc1.unit
    assert unit.hours == 744 and unit.first_hour == int(MARINA_HOURS[0].timestamp())
    assert unit.model == "Acme CC-100" and unit.name == "cc-1"
    assert unit.runtime_h is not None and unit.starts is not None
    assert float(np.nansum(unit.runtime_h)) == pytest.approx(0.75 * 744)
    assert float(np.nansum(unit.starts)) == pytest.approx(3 * 744)
    # two windows an hour (at :25 and :55) with 30 and 31 °C: the hour's mean
    assert set(unit.signals) == {"ambient_temp", "superheat"}
    assert np.allclose(unit.signals["ambient_temp"], 30.5)
    assert np.allclose(unit.signals["superheat"], 6.5)
    # the running means take only the windows with power in every sample (the :55 ones)
    assert set(unit.running_signals) == {"ambient_temp", "superheat"}
    assert np.allclose(unit.running_signals["ambient_temp"], 31.0)
    assert np.allclose(unit.running_signals["superheat"], 7.0)
    fan2 = next(d for s in inputs.sites for d in s.devices if d.info.name == "fan-2")
    assert fan2.unit.runtime_h is None and fan2.unit.signals == {}
    assert np.isnan(fan2.unit.kwh).all()
    (episode,) = inputs.episodes  # the September order is left out
    assert episode.number == "WO-000042" and episode.fault == "condenser_fouling"
    assert episode.device_id == env.world.devices["cc-1"]
    assert episode.opened_at == WORK_ORDER_OPENED.timestamp()
    assert episode.closed_at == WORK_ORDER_COMPLETED.timestamp()  # completed, then closed


def test_hourly_means_put_a_window_ending_on_the_hour_in_the_hour_before() -> None:
    start = 3600 * 100
    means = hourly_means(
        [start + 1800.0, start + 3600.0, start + 3601.0, start - 10.0],
        {"x": [1.0, 3.0, 10.0, 99.0], "y": [math.nan, math.nan, math.nan, 1.0]},
        start,
        2,
    )
    assert means["x"].tolist() == [2.0, 10.0]
    assert "y" not in means  # nothing in the hours asked for


def test_work_orders_quality_notes_and_highlights(report: Report) -> None:
    (order,) = report.work_orders
    assert (order.number, order.device_name, order.hours_in_month) == ("WO-000042", "cc-1", 48.0)
    assert order.opened_at == "2026-10-10T12:00:00+04:00"
    devices = {d.name: d for s in report.sites for d in s.devices}
    assert devices["cc-1"].work_orders == 1 and devices["cc-2"].work_orders == 0
    marina_notes = " ".join(site(report, "Marina").quality)
    assert "fan-1 (1)" in marina_notes and "cc-2 (1)" in marina_notes
    paris_notes = " ".join(site(report, "Old Town").quality)
    assert "fan-2" in paris_notes and "estimated" in paris_notes
    assert report.top_consumers[0].name == "cc-2"
    assert "fan-2" not in [t.name for t in report.top_consumers]  # used nothing
    text = " ".join(report.highlights)
    assert "October 2026" in text and "AED 1,658" in text and "'peak'" in text
    assert "1 of 5 devices sent no energy reading" in text


def test_a_site_without_a_tariff_has_no_cost_rather_than_zero(inputs: Inputs) -> None:
    paris = inputs.sites[1]
    assert paris.name == "Old Town"
    untariffed = dataclasses.replace(paris, tariff=None, tariff_problem="no tariff is set")
    report = build(dataclasses.replace(inputs, sites=(inputs.sites[0], untariffed)))
    s = site(report, "Old Town")
    assert s.currency is None and s.totals.total_cost is None and s.totals.energy_cost is None
    assert all(d.cost is None for d in s.devices)
    assert [c.currency for c in report.totals.costs] == ["AED"]
    assert report.totals.sites_without_cost == 1
    assert "No cost figures: no tariff is set." in s.quality


def test_bad_requests_name_what_is_wrong(env: Env) -> None:
    options = env.world.options()
    with env.sessions() as session:
        with pytest.raises(InvalidInput, match="2026-11 has not ended yet at site 'Marina'"):
            collect(session, env.store, env.world.client_id, parse_month("2026-11"),
                    options=options, now=NOW)  # fmt: skip
        with pytest.raises(NoData, match="no energy-counter reading from any of 'Harbour"):
            collect(session, env.store, env.world.client_id, parse_month("2026-08"),
                    options=options, now=NOW)  # fmt: skip
        with pytest.raises(NotFound, match="client nope not found"):
            collect(session, env.store, "nope", parse_month(MONTH), options=options, now=NOW)


def test_outdoor_temperature_from_a_weather_file_or_the_sensors(env: Env, tmp_path: Path) -> None:
    marina, paris = env.world.marina_id, env.world.old_town_id
    (tmp_path / f"{marina}.csv").write_text(
        "time,temperature_c\n2026-09-30T20:00:00Z,31.5\n2026-09-30T21:00:00Z,31.0\n"
    )
    (tmp_path / f"{paris}.csv").write_text("time,temperature_c\n2026-10-01T00:00:00Z,hot\n")
    options = dataclasses.replace(env.world.options(baseline=True), weather_dir=tmp_path)
    with env.sessions() as session:
        inputs = collect(
            session, env.store, env.world.client_id, parse_month(MONTH), options=options, now=NOW
        )
    by_name = {s.name: s for s in inputs.sites}
    weather = by_name["Marina"].temperature
    assert weather is not None and weather.source == f"weather file {marina}.csv"
    assert weather.report is not None and weather.report.values[:2].tolist() == [31.5, 31.0]
    bad = by_name["Old Town"].temperature
    assert bad is not None and bad.baseline is None
    assert bad.problem == f"{tmp_path / paris}.csv:2: temperature_c 'hot' is not a number"
    meter = by_name["Marina"].meter
    assert meter is not None and len(meter.devices) == 3
    assert meter.report.values[0] == pytest.approx(6.0)  # the three devices' first hour
