"""CalTRACK baselines through eemeter: a hand-made year with a known answer, a simulated
compressor's year, insufficient data, the savings uncertainty formula and the inputs.

eemeter fits take seconds each, so every fit is made once per module (fixtures) and the
tests read it; the first fit of the session pays numba's compilation (``eemeter_warm``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from cloud.energy.baseline import (
    HOURLY_LIMITS,
    MONTHLY_LIMITS,
    Baseline,
    Granularity,
    HourlyValues,
    InsufficientData,
    Issue,
    Savings,
    WarmUp,
    effective_points,
    fit_baseline,
    hourly_temperature,
    read_weather_csv,
    savings,
    savings_uncertainty,
)
from cloud.energy.counters import CounterSeries, counter_spec, hourly_consumption, max_power_kw
from cloud.errors import InvalidInput
from cloud.tsdb.base import EnergyInterval
from firmware_sim.dataset import write_dataset
from firmware_sim.fleet import parse_fleet, profiles_of

H = 3600
ZONE = "Europe/Paris"
START = int(datetime(2025, 1, 1, tzinfo=ZoneInfo(ZONE)).timestamp())  # local midnight
REPORT_START = int(datetime(2026, 1, 1, tzinfo=ZoneInfo(ZONE)).timestamp())
F64 = npt.NDArray[np.float64]
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ENV_AT_COLLECTION = {name: os.environ.get(name) for name in THREAD_ENV}
"""Before eemeter is imported: cloud.energy.baseline imports it on first use only."""


# -- a hand-made year: kWh/day = 50 + 4 × max(0, T − 18) + noise ---------------------------


def _local_days(start: int, days: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Hour starts of ``days`` local days from ``start`` and each hour's day number."""
    end = datetime.fromtimestamp(start, ZoneInfo(ZONE)).date() + timedelta(days=days)
    stop = int(datetime(end.year, end.month, end.day, tzinfo=ZoneInfo(ZONE)).timestamp())
    hours = np.arange(start, stop, H, dtype=np.int64)
    wall = pd.to_datetime(hours, unit="s", utc=True).tz_convert(ZONE).tz_localize(None)
    day = np.asarray((wall.normalize() - wall[0].normalize()).days, dtype=np.int64)
    return hours, day


def _year(
    start: int, seed: int, use: Callable[[F64], F64]
) -> tuple[HourlyValues, HourlyValues, F64]:
    """A year of daily weather and use spread over each local day's hours (23, 24 or 25)."""
    rng = np.random.default_rng(seed)
    days = np.arange(365)
    celsius = 14.0 - 9.0 * np.cos(2 * np.pi * (days - 15) / 365) + rng.normal(0.0, 2.5, 365)
    kwh_day = use(celsius) + rng.normal(0.0, 1.0, 365)
    hours, day = _local_days(start, 365)
    per_day = np.bincount(day)
    kwh = HourlyValues(hours, kwh_day[day] / per_day[day])
    return kwh, HourlyValues(hours, celsius[day]), celsius


def _cooling(celsius: F64) -> F64:
    return 50.0 + 4.0 * np.maximum(0.0, celsius - 18.0)


@pytest.fixture(scope="module")
def synthetic(eemeter_warm: WarmUp) -> Baseline:
    kwh, temp, _ = _year(START, 1, _cooling)
    result = fit_baseline(kwh, temp, granularity="daily", timezone=ZONE)
    assert isinstance(result, Baseline), str(result)
    return result


@pytest.fixture(scope="module")
def synthetic_savings(synthetic: Baseline) -> tuple[Savings, float]:
    """The next year, using 10 % less than the baseline would; and the true saving in %."""
    kwh, temp, celsius = _year(REPORT_START, 2, lambda c: 0.9 * _cooling(c))
    true_counterfactual = float(_cooling(celsius).sum())
    true_percent = 100.0 * (1.0 - float(np.nansum(kwh.values)) / true_counterfactual)
    return savings(synthetic, kwh, temp), true_percent


def test_daily_model_recovers_the_balance_point_and_slope(synthetic: Baseline) -> None:
    assert synthetic.kind is Granularity.DAILY
    assert synthetic.days == 365 and synthetic.hours == 365 * 24
    cooling = [s for s in synthetic.splits if s.cooling_balance_c is not None]
    assert cooling, synthetic.splits
    for split in cooling:
        assert split.cooling_balance_c == pytest.approx(18.0, abs=1.0), split
        assert split.cooling_kwh_per_degree_day == pytest.approx(4.0, abs=0.3), split
        assert split.intercept_kwh == pytest.approx(50.0, abs=1.0), split
        # eemeter may keep a heating leg with a negligible slope at the same balance point.
        assert (split.heating_kwh_per_degree_day or 0.0) < 0.1, split


def test_synthetic_fit_passes_guideline_14(synthetic: Baseline) -> None:
    fit, monthly = synthetic.fit, synthetic.monthly
    assert fit.granularity is Granularity.DAILY and fit.n == 365
    assert fit.limits is None and fit.passes is None  # G14 states no daily limits
    assert fit.cv_rmse < 0.03, str(fit)  # noise of 1 kWh on ~55 kWh/day
    assert abs(fit.nmbe) < 0.005, str(fit)
    assert monthly.granularity is Granularity.MONTHLY and monthly.n == 12
    assert monthly.limits == MONTHLY_LIMITS
    assert monthly.passes, str(monthly)
    assert synthetic.passes_g14, synthetic.summary()
    assert abs(synthetic.autocorrelation) < 0.2  # independent daily noise
    assert synthetic.disqualification == ()


def test_savings_of_ten_percent_less_use(synthetic_savings: tuple[Savings, float]) -> None:
    result, true_percent = synthetic_savings
    assert result.kind is Granularity.DAILY
    assert result.points == 365 and result.skipped == 0
    assert result.avoided_kwh == pytest.approx(result.counterfactual_kwh - result.actual_kwh)
    assert result.avoided_percent == pytest.approx(10.0, abs=0.5)
    u68, u90 = result.at(0.68), result.at(0.90)
    assert 0 < u68.kwh < u90.kwh
    assert u90.percent_of_savings == pytest.approx(100 * u90.kwh / result.avoided_kwh)
    assert u90.percent_points == pytest.approx(100 * u90.kwh / result.counterfactual_kwh)
    band = (
        result.avoided_percent - u90.percent_points,
        result.avoided_percent + u90.percent_points,
    )
    assert band[0] <= true_percent <= band[1], (band, true_percent)
    assert band[0] <= 10.0 <= band[1], band
    assert result.starts.size == result.predicted.size == result.observed.size == 365


def test_savings_refuses_a_disqualified_baseline(synthetic: Baseline) -> None:
    bad = dataclasses.replace(
        synthetic, disqualification=(Issue("eemeter.model_fit_metrics.cvrmse", "CVRMSE > 1"),)
    )
    kwh, temp, _ = _year(REPORT_START, 2, _cooling)
    with pytest.raises(InvalidInput, match="disqualified"):
        savings(bad, kwh, temp)


# -- the savings uncertainty, by hand -------------------------------------------------------


def test_savings_uncertainty_by_hand() -> None:
    # n = m = 365, p = 3, ρ = 0 (n' = n), CV 10 %, counterfactual 1000 kWh, 100 kWh saved.
    # t(0.90, 362) = 1.6491; sqrt((1 + 2/365) / 365) = 0.052486
    # ΔE = 1.6491 × 1.26 × 0.10 × 1000 × 0.052486 = 10.906 kWh: 10.9 % of the savings.
    u = savings_uncertainty(
        cv_rmse=0.10,
        n=365,
        p=3,
        n_effective=365.0,
        m=365,
        counterfactual_kwh=1000.0,
        avoided_kwh=100.0,
        confidence=0.90,
    )
    assert u.t == pytest.approx(1.6491, abs=1e-4)
    assert u.kwh == pytest.approx(10.906, abs=5e-3)
    assert u.percent_of_savings == pytest.approx(10.906, abs=5e-3)
    assert u.percent_points == pytest.approx(1.0906, abs=5e-4)
    # Autocorrelated residuals are worth fewer points: ρ = 0.5 → n' = n/3, wider band.
    assert effective_points(365, 0.5) == pytest.approx(365 / 3)
    assert effective_points(365, -0.3) == 365.0
    wider = savings_uncertainty(
        cv_rmse=0.10,
        n=365,
        p=3,
        n_effective=365 / 3,
        m=365,
        counterfactual_kwh=1000.0,
        avoided_kwh=0.0,
        confidence=0.68,
    )
    # t(0.68, 362) = 0.9951; sqrt(3 × (1 + 6/365) / 365) = 0.091395 → 11.459 kWh
    assert wider.kwh == pytest.approx(0.9951 * 1.26 * 0.10 * 1000.0 * 0.091395, rel=1e-3)
    assert wider.percent_of_savings is None  # nothing saved: no fraction of it


# -- a simulated compressor's year ------------------------------------------------------------

SIM_SITE: dict[str, Any] = {
    "id": "s1",
    "kind": "office",
    "floor_area_m2": 2000,
    "location": {
        "lat": 41.4,
        "lon": 2.2,
        "mean_temp_c": 16.0,
        "annual_swing_c": 8.0,
        "daily_swing_c": 8.0,
    },
    "timezone": "Europe/Madrid",
}


@dataclasses.dataclass
class SimYear:
    kwh: CounterSeries
    temp: HourlyValues


@pytest.fixture(scope="module")
def sim_year(tmp_path_factory: pytest.TempPathFactory) -> SimYear:
    """One split AC compressor in an office near Barcelona, 2025, at hourly resolution:
    kWh from its energy counter, outdoor temperature from its ambient_temp readings."""
    device = {
        "id": "cc-1",
        "asset_type": "compressor",
        "variant": "split_ac",
        "profile": "ew-cc100",
        "unit_id": 1,
        "install_date": "2024-01-01",
        "rated_power_kw": 10.0,
    }
    data = {
        "schema_version": 1,
        "name": "baseline",
        "seed": 5,
        "start": "2025-01-01T00:00:00Z",
        "clients": [
            {"id": "c1", "sites": [{**SIM_SITE, "gateways": [{"id": "g", "devices": [device]}]}]}
        ],
    }
    fleet = parse_fleet(data, "<baseline test fleet>")
    profiles = profiles_of(fleet)
    out = tmp_path_factory.mktemp("sim")
    write_dataset(fleet, profiles, out, days=365, resolution_s=3600, workers=1)
    (path,) = (out / "data").glob("*/*.csv")
    t, energy, ambient = [], [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            t.append(datetime.fromisoformat(row["time"]).timestamp())
            energy.append(float(row["energy"]))
            ambient.append(float(row["ambient_temp"]))
    rows = [
        EnergyInterval(start=ts, counter="energy", last=reading, consumed=None)
        for ts, reading in zip(t, energy, strict=True)
    ]
    kwh = hourly_consumption(rows, counter_spec(profiles["cc-1"]), max_kw=max_power_kw(10.0))
    assert kwh.resets == kwh.wraps == kwh.rejected_total == 0
    return SimYear(kwh, hourly_temperature(np.array(t), np.array(ambient)))


@pytest.fixture(scope="module")
def sim_daily(sim_year: SimYear, eemeter_warm: WarmUp) -> Baseline | InsufficientData:
    return fit_baseline(sim_year.kwh, sim_year.temp, granularity="daily", timezone="Europe/Madrid")


def test_simulated_compressor_daily_model_passes_guideline_14(
    sim_daily: Baseline | InsufficientData,
) -> None:
    assert isinstance(sim_daily, Baseline), str(sim_daily)
    monthly = sim_daily.monthly
    figures = sim_daily.summary()
    assert sim_daily.kind is Granularity.DAILY and sim_daily.fit.n >= 329, figures
    assert monthly.n == 12, figures
    assert monthly.cv_rmse <= 0.15, figures
    assert abs(monthly.nmbe) <= 0.05, figures
    assert sim_daily.passes_g14, figures
    # A cooling load: every split with a temperature term cools, none heats.
    assert any(s.cooling_balance_c is not None for s in sim_daily.splits), sim_daily.splits
    assert all(s.heating_balance_c is None for s in sim_daily.splits), sim_daily.splits


def test_simulated_compressor_auto_takes_the_hourly_model(
    sim_year: SimYear, eemeter_warm: WarmUp
) -> None:
    result = fit_baseline(sim_year.kwh, sim_year.temp, granularity="auto", timezone="Europe/Madrid")
    assert isinstance(result, Baseline), str(result)
    figures = result.summary()
    assert result.kind is Granularity.HOURLY, figures
    assert result.fit.granularity is Granularity.HOURLY and result.fit.limits == HOURLY_LIMITS
    assert result.fit.n >= 329 * 24 and result.fit.p > 0, figures
    assert result.splits == () and result.notes == ()
    # The simulator at 3600 s runs the compressor whole hours on or off, so single hours
    # are far from any model (hourly CV(RMSE) > 100 %); the months are not.
    assert result.monthly.passes, figures


# -- insufficient data ----------------------------------------------------------------------


def _ten_days() -> tuple[HourlyValues, HourlyValues]:
    kwh, temp, _ = _year(START, 3, _cooling)
    keep = slice(0, 240)
    return (
        HourlyValues(kwh.hours[keep], kwh.values[keep]),
        HourlyValues(temp.hours[keep], temp.values[keep]),
    )


def test_ten_days_are_not_enough_for_a_daily_model(eemeter_warm: WarmUp) -> None:
    result = fit_baseline(*_ten_days(), granularity="daily", timezone=ZONE)
    assert isinstance(result, InsufficientData)
    assert result.kind is Granularity.DAILY and result.days == 10 and result.hours == 240
    names = [r.name for r in result.reasons]
    assert "eemeter.sufficiency_criteria.incorrect_number_of_total_days" in names
    assert "329-365 days" in str(result)


def test_ten_days_are_not_enough_for_an_hourly_model(eemeter_warm: WarmUp) -> None:
    hourly = fit_baseline(*_ten_days(), granularity="hourly", timezone=ZONE)
    assert isinstance(hourly, InsufficientData) and hourly.kind is Granularity.HOURLY
    assert "incorrect_number_of_total_days" in str(hourly)
    auto = fit_baseline(*_ten_days(), granularity="auto", timezone=ZONE)
    assert isinstance(auto, InsufficientData) and auto.kind is Granularity.DAILY
    assert auto.notes and auto.notes[0].startswith("hourly model not used")


def test_no_overlap_between_kwh_and_temperature() -> None:
    kwh, temp = _ten_days()
    later = HourlyValues(temp.hours + 30 * 86400, temp.values)
    result = fit_baseline(kwh, later, timezone=ZONE)
    assert isinstance(result, InsufficientData)
    assert [r.name for r in result.reasons] == ["edgewatch.baseline.no_overlap"]


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [({"granularity": "weekly"}, "granularity"), ({"timezone": "Mars/Olympus"}, "timezone")],
)
def test_bad_arguments(kwargs: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as err:
        fit_baseline(*_ten_days(), **kwargs)
    assert err.value.where == where


def test_importing_eemeter_leaves_sklearn_and_the_environment_alone(
    eemeter_warm: WarmUp,
) -> None:
    import sklearn

    # eemeter's import sets assume_finite=True and these variables to 1.
    assert sklearn.get_config()["assume_finite"] is False
    assert {name: os.environ.get(name) for name in THREAD_ENV} == ENV_AT_COLLECTION
    assert eemeter_warm.import_s > 0 and eemeter_warm.first_fit_s > 0


# -- inputs -----------------------------------------------------------------------------------


def test_hourly_values_must_be_increasing_hour_starts() -> None:
    with pytest.raises(InvalidInput, match="start of an hour"):
        HourlyValues(np.array([0, 1800]), np.array([1.0, 2.0]))
    with pytest.raises(InvalidInput, match="increase"):
        HourlyValues(np.array([3600, 0]), np.array([1.0, 2.0]))
    with pytest.raises(InvalidInput, match="shapes"):
        HourlyValues(np.array([0, 3600]), np.array([1.0]))


def test_hourly_temperature_averages_irregular_readings() -> None:
    t = np.array([0.0, 600.0, 3000.0, 7300.0, 7400.0, 7500.0, 9000.0])
    c = np.array([10.0, 12.0, 14.0, 20.0, 99.0, np.nan, 22.0])
    out = hourly_temperature(t, c)
    assert out.hours.tolist() == [0, 3600, 7200]
    assert out.values[0] == pytest.approx(12.0)
    assert math.isnan(out.values[1])  # no reading
    assert out.values[2] == pytest.approx(21.0)  # 99 °C dropped, NaN ignored
    assert out.dropped == 1
    framed = hourly_temperature(t, c, start=-3600, end=4 * 3600)
    assert framed.hours.tolist() == [-3600, 0, 3600, 7200, 10800]


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "weather.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_weather_csv_in_fahrenheit_with_iso_and_epoch_times(tmp_path: Path) -> None:
    t0 = int(datetime(2025, 7, 1, tzinfo=UTC).timestamp())
    path = _csv(
        tmp_path,
        "Time, Temperature_F ,station\n"
        "2025-07-01T00:00:00Z,50,x\n"
        "2025-07-01T00:30:00+00:00,59,x\n"
        f"{t0 + 3600},,x\n"
        f"{t0 + 7200},-40,x\n",
    )
    out = read_weather_csv(path)
    assert out.hours.tolist() == [t0, t0 + 3600, t0 + 7200]
    assert out.values[0] == pytest.approx(12.5)  # 10 °C and 15 °C
    assert math.isnan(out.values[1])  # an empty cell is a missing reading
    assert out.values[2] == pytest.approx(-40.0)
    stated = _csv(tmp_path, "time,temperature\n2025-07-01T00:00:00Z,41\n")
    assert read_weather_csv(stated, unit="F").values[0] == pytest.approx(5.0)
    assert read_weather_csv(stated, unit="C").values[0] == pytest.approx(41.0)


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        ("time,temperature_c\n2025-07-01T00:00:00Z,20\n2025-07-01T01:00:00Z,warm\n", ":3", "warm"),
        ("time,temperature_c\n2025-07-01T00:00:00,20\n", ":2", "UTC offset"),
        ("time,temperature_c\nyesterday,20\n", ":2", "neither ISO-8601 nor epoch"),
        ("time,temperature_c\n2025-07-01T00:00:00Z,80\n", ":2", "outside"),
        ("time,temp\n2025-07-01T00:00:00Z,20\n", ":1", "temperature_c or temperature_f"),
        ("when,temperature_c\n2025-07-01T00:00:00Z,20\n", ":1", "'time'"),
        ("time,temperature\n2025-07-01T00:00:00Z,20\n", ":1", "does not state its unit"),
        ("time,temperature_c,temperature_f\n", ":1", "more than one"),
        ("time,temperature_c\n", "weather.csv", "no temperature readings"),
        ("", "weather.csv", "empty"),
    ],
)
def test_weather_csv_errors_name_the_file_and_line(
    tmp_path: Path, text: str, where: str, why: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        read_weather_csv(_csv(tmp_path, text))
    assert err.value.where.startswith(str(tmp_path / "weather.csv"))
    assert err.value.where.endswith(where)
    assert why in err.value.why


def test_weather_csv_unit_conflict_and_missing_file(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time,temperature_c\n2025-07-01T00:00:00Z,20\n")
    with pytest.raises(InvalidInput, match="in °C, not °F"):
        read_weather_csv(path, unit="F")
    with pytest.raises(InvalidInput, match="cannot be read"):
        read_weather_csv(tmp_path / "absent.csv")
