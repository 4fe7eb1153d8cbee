"""Equipment efficiency: duty cycle, starts per local day (DST included), kWh per runtime
hour, the COP estimate on synthetic saturation curves, and like units compared. Every
expected figure is computed by hand in the comments or from the fixture's own definition.

The COP of simulated healthy and fouled compressors is checked in ``test_waste.py``, which
simulates them once for both figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from cloud.energy.efficiency import (
    ATMOSPHERE_BAR,
    BTU_PER_WH,
    EfficiencyLimits,
    LikeUnitRule,
    UnitEfficiency,
    assess_unit,
    compare_like_units,
)
from cloud.energy.units import UnitHours
from cloud.errors import InvalidInput

H = 3600
PARIS = "Europe/Paris"
START = int(datetime(2024, 6, 3, tzinfo=ZoneInfo(PARIS)).timestamp())  # a Monday, local midnight
NAN = math.nan


def unit(
    kwh: Any,
    runtime: Any = None,
    starts: Any = None,
    *,
    signals: dict[str, Any] | None = None,
    running: dict[str, Any] | None = None,
    device: str = "cc-1",
    asset: str = "compressor",
    site: str = "s1",
    model: str | None = "CC-100",
    first: int = START,
) -> UnitHours:
    def arr(x: Any) -> np.ndarray | None:
        return None if x is None else np.asarray(x, dtype=np.float64)

    kwh_a = arr(kwh)
    assert kwh_a is not None
    return UnitHours(
        device_id=device,
        asset_type=asset,
        site_id=site,
        first_hour=first,
        kwh=kwh_a,
        runtime_h=arr(runtime),
        starts=arr(starts),
        signals={k: np.asarray(v, dtype=np.float64) for k, v in (signals or {}).items()},
        model=model,
        name=f"{device} name",
        running_signals={k: np.asarray(v, dtype=np.float64) for k, v in (running or {}).items()},
    )


def plain(value: Any) -> None:
    """Only JSON's own types, all the way down (no numpy scalars or arrays)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            plain(v)
    elif isinstance(value, list | tuple):
        for v in value:
            plain(v)
    else:
        assert value is None or type(value) in (bool, int, float, str), (type(value), value)


# -- duty cycle, kWh per runtime hour -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwh", "runtime", "duty", "per_rt", "data_hours"),
    [
        # 8 hours, runtime 1,1,0,0,1,0,1,1 = 5 h → duty 5/8; kWh 2 per running hour → 2.0 kW.
        ([2, 2, 0, 0, 2, 0, 2, 2], [1, 1, 0, 0, 1, 0, 1, 1], 5 / 8, 2.0, 8),
        # Runtime unknown in 2 hours: 3 h over 6 known hours → 0.5; kWh of hour 3 (runtime
        # unknown) and runtime of hour 5 (kWh unknown) are left out of kWh/runtime:
        # hours 0, 1, 4, 6, 7: kWh 3 + 3 + 0 + 1 + 0 = 7 over runtime 1 + 1 + 0 + 0 + 0 = 2
        # → 3.5 kW.
        ([3, 3, 0, 3, 0, NAN, 1, 0], [1, 1, NAN, NAN, 0, 1, 0, 0], 3 / 6, 3.5, 6),
        # Whole-hour counter rounding: 5 h counted in 4 hours → capped at 1.
        ([4, 4, 4, 4], [1, 2, 1, 1], 1.0, 16 / 5, 4),
    ],
)
def test_duty_cycle_and_kwh_per_runtime_hour(
    kwh: list[float], runtime: list[float], duty: float, per_rt: float, data_hours: int
) -> None:
    result = assess_unit(unit(kwh, runtime), timezone=PARIS)
    assert result.duty_cycle == pytest.approx(duty)
    assert result.kwh_per_runtime_hour == pytest.approx(per_rt)
    assert result.runtime_data_hours == data_hours
    assert result.mean_running_kw == pytest.approx(per_rt)
    assert result.mean_running_kw_source == "energy and runtime counters"
    assert result.kwh == pytest.approx(float(np.nansum(kwh)))
    assert result.kwh_hours == int(np.isfinite(kwh).sum())


def test_no_runtime_counter() -> None:
    result = assess_unit(unit([1.0, 2.0, NAN]), timezone=PARIS)
    assert result.runtime_h is None and result.duty_cycle is None
    assert result.kwh_per_runtime_hour is None and result.mean_running_kw is None
    assert result.kwh == 3.0 and result.kwh_hours == 2
    assert any("no runtime counter" in n for n in result.notes)
    assert result.starts.total is None and result.starts.reason == "no start counter"
    assert result.cop.cop is None and result.cop.reason is not None


def test_a_unit_that_did_not_run() -> None:
    result = assess_unit(unit([0.0] * 4, [0.0] * 4), timezone=PARIS)
    assert result.duty_cycle == 0.0 and result.kwh_per_runtime_hour is None
    assert any("did not run" in n for n in result.notes)


def test_running_power_from_readings_when_given() -> None:
    # kWh/runtime says 2.0 kW; the running-window readings say 2.2 and 2.4 → 2.3.
    u = unit([2, 2, 2], [1, 1, 1], running={"active_power": [2.2, NAN, 2.4]})
    result = assess_unit(u, timezone=PARIS)
    assert result.kwh_per_runtime_hour == pytest.approx(2.0)
    assert result.mean_running_kw == pytest.approx(2.3)
    assert result.mean_running_kw_source == "active_power readings while running"


# -- starts per local day ------------------------------------------------------------------


def _local(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=ZoneInfo(PARIS)).timestamp())


SPRING = _local(2024, 3, 29)  # Paris springs forward on Sunday 31 March: a 23-hour day
SPRING_END = _local(2024, 4, 2)
FALL = _local(2024, 10, 26)  # and falls back on Sunday 27 October: a 25-hour day
FALL_END = _local(2024, 10, 29)


@pytest.mark.parametrize(
    ("first", "end", "limit", "per_day", "over", "mean", "worst"),
    [
        # 3 starts every hour: 29 Mar 72, 30 Mar 72, 31 Mar 23 h × 3 = 69, 1 Apr 72.
        # Limit 70: three days over, 31 March not; mean (72 + 72 + 69 + 72) / 4 = 71.25.
        (
            SPRING,
            SPRING_END,
            70.0,
            [72, 72, 69, 72],
            ["2024-03-29", "2024-03-30", "2024-04-01"],
            71.25,
            "2024-03-29",
        ),
        # 26 Oct 72, 27 Oct 25 h × 3 = 75, 28 Oct 72. Limit 73: only the 25-hour day.
        (FALL, FALL_END, 73.0, [72, 75, 72], ["2024-10-27"], 73.0, "2024-10-27"),
    ],
)
def test_starts_per_local_day_across_dst(
    first: int,
    end: int,
    limit: float,
    per_day: list[int],
    over: list[str],
    mean: float,
    worst: str,
) -> None:
    n = (end - first) // H
    assert n == sum(per_day) // 3  # the fixture's own check: 95 and 73 hours
    limits = EfficiencyLimits(short_cycle_starts_per_day=limit, short_cycle_min_days=3)
    u = unit(np.full(n, 1.0), np.full(n, 0.5), np.full(n, 3.0), first=first)
    s = assess_unit(u, timezone=PARIS, limits=limits).starts
    assert s.days_counted == len(per_day)
    assert s.mean_per_day == pytest.approx(mean)
    assert s.max_per_day == max(per_day)
    assert s.worst_day == worst
    assert list(s.days_over) == over and s.days_over_limit == len(over)
    assert s.excess_starts == pytest.approx(sum(max(0.0, c - limit) for c in per_day))
    assert s.short_cycling is (len(over) >= 3)
    assert s.total == 3.0 * n and s.max_per_hour == 3.0
    # runtime 0.5 h per hour, 3 starts per hour → 10-minute cycles.
    assert s.mean_run_minutes == pytest.approx(10.0)


def test_utc_days_would_differ() -> None:
    # The same spring fixture bucketed by UTC day would not give 69 on 31 March: this is
    # what the local calendar changes (a guard that the DST case above tests something).
    hours = SPRING + H * np.arange((SPRING_END - SPRING) // H)
    utc_days = np.unique(hours // 86400, return_counts=True)[1] * 3
    assert 69 not in utc_days.tolist()


def test_partial_and_incomplete_days() -> None:
    # From noon on 3 June (Mon) for 60 hours: 3 Jun 12 h (partial), 4 Jun 24 h, 5 Jun 24 h.
    # 4 June has an unknown hour: incomplete. 3 June's 12 hours have 10 starts each = 120,
    # over the limit of 72 though partial; 4 June 23 × 1 = 23; 5 June 24 × 2 = 48.
    n = 60
    starts = np.concatenate([np.full(12, 10.0), np.full(24, 1.0), np.full(24, 2.0)])
    starts[20] = NAN
    u = unit(np.ones(n), np.full(n, 0.2), starts, first=START + 12 * H)
    s = assess_unit(u, timezone=PARIS).starts
    assert s.days_counted == 1  # only 5 June is complete
    assert s.mean_per_day == 48.0 and s.max_per_day == 48.0 and s.worst_day == "2024-06-05"
    assert s.days_over == ("2024-06-03",)  # partial, but already over
    assert s.excess_starts == 0.0  # excess counts complete days only
    assert s.hours_with_data == 59
    assert not s.short_cycling  # 1 day < 3


def test_short_cycling_flag_needs_the_stated_days() -> None:
    # 5 local days of 4 starts an hour = 96/day against 72: 5 days over.
    n = 5 * 24
    u = unit(np.ones(n), np.full(n, 0.5), np.full(n, 4.0))
    assert assess_unit(u, timezone=PARIS).starts.short_cycling
    strict = EfficiencyLimits(short_cycle_min_days=6)
    assert not assess_unit(u, timezone=PARIS, limits=strict).starts.short_cycling
    lenient = EfficiencyLimits(short_cycle_starts_per_day=100.0)
    s = assess_unit(u, timezone=PARIS, limits=lenient).starts
    assert s.days_over_limit == 0 and not s.short_cycling


# -- COP -----------------------------------------------------------------------------------


def sat_p_abs(t_c: Any, a: float, b: float) -> np.ndarray:
    """A Clausius–Clapeyron saturation curve ln p = a − b/T (bar abs, °C) for the fixtures."""
    return np.exp(a - b / (np.asarray(t_c, dtype=np.float64) + 273.15))


def running_hours(
    t_evap: Any, t_cond: Any, a: float, b: float, superheat: float = 5.0, ambient: Any = None
) -> dict[str, np.ndarray]:
    """Running-state means of the hours at these saturation temperatures (gauge pressures)."""
    te = np.asarray(t_evap, dtype=np.float64)
    out = {
        "suction_pressure": sat_p_abs(te, a, b) - ATMOSPHERE_BAR,
        "discharge_pressure": sat_p_abs(t_cond, a, b) - ATMOSPHERE_BAR,
        "suction_temp": te + superheat,
        "superheat": np.full(te.shape, superheat),
    }
    if ambient is not None:
        out["ambient_temp"] = np.asarray(ambient, dtype=np.float64)
    return out


def test_cop_on_the_default_slope() -> None:
    # 24 running hours at 5 °C evaporating and 45 °C condensing on a curve of slope
    # 2,400 K (the default). The evaporating points span 0 K, so the default slope is used
    # and reproduces 45 °C: COP = 0.5 × 278.15 / 40 = 3.4769, EER = COP × 3.412.
    a = math.log(8.0) + 2400.0 / 273.15
    n = 24
    run = running_hours(np.full(n, 5.0), np.full(n, 45.0), a, 2400.0, ambient=np.full(n, 33.0))
    cop = assess_unit(unit(np.full(n, 3.0), np.ones(n), running=run), timezone=PARIS).cop
    assert cop.source == "running_signals" and cop.curve == "default_slope"
    assert cop.hours == n
    assert cop.evaporating_c == pytest.approx(5.0)
    assert cop.condensing_c == pytest.approx(45.0)
    assert cop.cop == pytest.approx(0.5 * 278.15 / 40.0)
    assert cop.eer == pytest.approx(0.5 * 278.15 / 40.0 * 3.41214, rel=1e-5)
    assert pytest.approx(3.41214, rel=1e-5) == BTU_PER_WH
    assert cop.ambient_c == pytest.approx(33.0)
    assert cop.condensing_approach_k == pytest.approx(12.0)
    assert cop.lift_k == pytest.approx(40.0)


def test_cop_fits_the_units_own_curve() -> None:
    # An R134a-like slope (2,700 K), evaporating from −5 to 15 °C (a 20 K span), condensing
    # at 45 °C: the fit finds 2,700 K and the condensing temperature exactly; the period's
    # COP is the energy-weighted mean of the hours' 0.5 × T_evap / (45 − t_evap).
    a = math.log(3.0) + 2700.0 / 273.15
    te = np.linspace(-5.0, 15.0, 30)
    kwh = np.linspace(2.0, 4.0, 30)
    run = running_hours(te, np.full(30, 45.0), a, 2700.0)
    cop = assess_unit(unit(kwh, np.ones(30), running=run), timezone=PARIS).cop
    assert cop.curve == "fitted" and cop.curve_slope_k == pytest.approx(2700.0)
    assert cop.condensing_c == pytest.approx(45.0)
    per_hour = 0.5 * (te + 273.15) / (45.0 - te)
    assert cop.cop == pytest.approx(float(np.sum(kwh * per_hour) / np.sum(kwh)))
    assert cop.ambient_c is None and cop.condensing_approach_k is None
    # The default slope would have been wrong here: the fit matters.
    narrow = running_hours(np.full(30, 5.0), np.full(30, 45.0), a, 2700.0)
    default = assess_unit(unit(kwh, np.ones(30), running=narrow), timezone=PARIS).cop
    assert default.curve == "default_slope"
    assert default.condensing_c is not None and abs(default.condensing_c - 45.0) > 3.0


def test_cop_falls_back_to_near_continuous_hours() -> None:
    # No running-state means. 20 hours ran throughout (kWh 10, runtime 1, no start):
    # signals at 5 / 45 °C. 20 cycling hours (kWh 5, 3 starts) and 4 hours that ran almost
    # throughout but started once (kWh 9.6) have blended means (pressures part-way to
    # equalised) that must be left out: mean running power (200 + 100 + 38.4) / 34 h
    # = 9.95 kW, so the 9.6 kWh hours pass the 95 % test and only their start excludes
    # them. The COP is that of the 20 running hours alone, 0.5 × 278.15 / 40.
    a = math.log(8.0) + 2400.0 / 273.15
    full = running_hours(np.full(20, 5.0), np.full(20, 45.0), a, 2400.0)
    blend = running_hours(np.full(24, 15.0), np.full(24, 30.0), a, 2400.0)
    signals = {k: np.concatenate([full[k], blend[k]]) for k in full}
    kwh = np.concatenate([np.full(20, 10.0), np.full(20, 5.0), np.full(4, 9.6)])
    runtime = np.concatenate([np.ones(20), np.full(20, 0.5), np.ones(4)])
    starts = np.concatenate([np.zeros(20), np.full(20, 3.0), np.ones(4)])
    result = assess_unit(unit(kwh, runtime, starts, signals=signals), timezone=PARIS)
    assert result.kwh_per_runtime_hour == pytest.approx(338.4 / 34)
    cop = result.cop
    assert cop.source == "near_continuous_hours" and cop.hours == 20
    assert cop.cop == pytest.approx(0.5 * 278.15 / 40.0)


@pytest.mark.parametrize(
    ("u", "reason"),
    [
        (unit(np.ones(24), np.ones(24), asset="fan"), "compressors"),
        (unit(np.ones(24), np.ones(24)), "no suction_pressure, discharge_pressure"),
        (
            unit(
                np.ones(24),
                np.ones(24),
                signals={
                    k: np.full(24, NAN)
                    for k in ("suction_pressure", "discharge_pressure", "suction_temp", "superheat")
                },
            ),
            "no hour in which the unit ran",
        ),
        (
            unit(
                np.ones(24),
                None,
                signals={
                    k: np.ones(24)
                    for k in ("suction_pressure", "discharge_pressure", "suction_temp", "superheat")
                },
            ),
            "without a runtime counter",
        ),
        (
            unit(
                np.ones(24),
                np.ones(24),
                running=running_hours(
                    np.r_[np.full(5, 5.0), np.full(19, NAN)], np.full(24, 45.0), 11.0, 2400.0
                ),
            ),
            "only 5 running hours",
        ),
    ],
    ids=["fan", "no signals", "all NaN signals", "no runtime counter", "too few hours"],
)
def test_no_cop_and_why(u: UnitHours, reason: str) -> None:
    cop = assess_unit(u, timezone=PARIS).cop
    assert cop.cop is None and cop.eer is None
    assert cop.reason is not None and reason in cop.reason, cop.reason


def test_implausible_lift_is_left_out() -> None:
    # 12 hours at a 40 K lift and 12 with condensing below evaporating (a swapped sensor):
    # the latter are left out, so 12 hours remain, enough for the default minimum of 12.
    a = math.log(8.0) + 2400.0 / 273.15
    te = np.full(24, 5.0)
    tc = np.r_[np.full(12, 45.0), np.full(12, 2.0)]
    cop = assess_unit(
        unit(np.ones(24), np.ones(24), running=running_hours(te, tc, a, 2400.0)), timezone=PARIS
    ).cop
    assert cop.hours == 12 and cop.cop == pytest.approx(0.5 * 278.15 / 40.0)


# -- like units ----------------------------------------------------------------------------


def assessed(
    device: str,
    per_rt: float,
    duty: float,
    *,
    model: str | None = "CC-100",
    site: str = "s1",
    starts_per_hour: float = 1.0,
    asset: str = "compressor",
) -> UnitEfficiency:
    """A 4-day unit with the given kWh per runtime hour and duty cycle."""
    n = 96
    return assess_unit(
        unit(
            np.full(n, per_rt * duty),
            np.full(n, duty),
            np.full(n, starts_per_hour),
            device=device,
            model=model,
            site=site,
            asset=asset,
        ),
        timezone=PARIS,
    )


def test_like_unit_medians_deviations_and_outliers() -> None:
    units = [
        assessed("a", 10.0, 0.5, site="s1"),
        assessed("b", 11.0, 0.42, site="s2"),
        assessed("c", 14.0, 0.5, site="s2", starts_per_hour=2.0),
        assessed("x", 9.0, 0.3, model="XL-9"),  # the only XL-9
        assessed("n1", 5.0, 0.2, model=None),  # unknown models, compared with each other
        assessed("n2", 6.0, 0.3, model=None),
        assessed("f", 2.0, 0.9, model=None, asset="fan"),
    ]
    groups = compare_like_units(units)
    keys = [(g.asset_type, g.model) for g in groups]
    assert keys == [
        ("compressor", "CC-100"),
        ("compressor", "XL-9"),
        ("compressor", None),
        ("fan", None),
    ]
    cc = groups[0]
    assert cc.comparable and cc.units == 3 and cc.sites == ("s1", "s2")
    # kWh per runtime hour 10, 11, 14 → median 11: −9.09 %, 0 %, +27.27 % (outlier, worse).
    assert cc.medians["kwh_per_runtime_hour"] == pytest.approx(11.0)
    dev = {m.device_id: m.metric("kwh_per_runtime_hour") for m in cc.members}
    assert dev["a"].deviation_percent == pytest.approx(-100 / 11)
    assert dev["b"].deviation_percent == pytest.approx(0.0)
    assert dev["c"].deviation_percent == pytest.approx(300 / 11)
    assert [d for d, m in dev.items() if m.outlier] == ["c"] and dev["c"].worse
    # Duty 0.5, 0.42, 0.5 → median 0.5; b is −16 %: within 20 %, no outlier.
    duty = {m.device_id: m.metric("duty_cycle") for m in cc.members}
    assert cc.medians["duty_cycle"] == pytest.approx(0.5)
    assert duty["b"].deviation_percent == pytest.approx(-16.0) and not duty["b"].outlier
    assert not duty["b"].worse  # a lower duty is not the unfavourable way
    # Starts per day 24, 24, 48 → median 24; c +100 %.
    starts = {m.device_id: m.metric("starts_per_day") for m in cc.members}
    assert starts["c"].deviation_percent == pytest.approx(100.0) and starts["c"].outlier
    assert {m.device_id: m.outlier for m in cc.members} == {"a": False, "b": False, "c": True}
    # No COP in these fixtures: the median is None and nothing deviates.
    assert cc.medians["cop"] is None
    assert all(m.metric("cop").deviation_percent is None for m in cc.members)

    alone = groups[1]
    assert not alone.comparable and alone.units == 1 and alone.note is not None
    assert alone.members[0].metric("kwh_per_runtime_hour").deviation_percent is None

    # Two units: 5 and 6 → median 5.5, deviations ±9.09 %, but no outliers with fewer
    # than 3 units.
    pair = groups[2]
    assert pair.comparable and pair.units == 2
    devs = [m.metric("kwh_per_runtime_hour").deviation_percent for m in pair.members]
    assert devs == pytest.approx([-100 / 11, 100 / 11])
    loose = compare_like_units(units, rule=LikeUnitRule(outlier_percent=5.0))[2]
    assert not any(m.outlier for m in loose.members)
    assert pair.note is not None and "no outliers" in pair.note


def test_like_units_with_a_tighter_rule() -> None:
    units = [assessed("a", 10.0, 0.5), assessed("b", 11.0, 0.5), assessed("c", 12.0, 0.5)]
    assert not any(m.outlier for m in compare_like_units(units)[0].members)
    tight = compare_like_units(units, rule=LikeUnitRule(outlier_percent=5.0))[0]
    # 10, 11, 12 → median 11: a −9.1 % (outlier, the better way), c +9.1 % (outlier, worse).
    flags = {
        m.device_id: (m.metric("kwh_per_runtime_hour").outlier, m.outlier) for m in tight.members
    }
    assert flags == {"a": (True, False), "b": (False, False), "c": (True, True)}


def test_like_units_refuse_a_device_twice() -> None:
    u = assessed("a", 10.0, 0.5)
    with pytest.raises(InvalidInput, match="twice"):
        compare_like_units([u, u])


# -- results are plain data; bad input is refused --------------------------------------------


def test_results_are_json_able() -> None:
    a = math.log(8.0) + 2400.0 / 273.15
    run = running_hours(np.full(24, 5.0), np.full(24, 45.0), a, 2400.0, ambient=np.full(24, 30.0))
    result = assess_unit(
        unit(np.full(24, 3.0), np.ones(24), np.full(24, 4.0), running=run), timezone=PARIS
    )
    assert result.cop.cop is not None
    data = dataclasses.asdict(result)
    plain(data)
    json.dumps(data)
    groups = compare_like_units([result, assessed("b", 3.0, 1.0)])
    for g in groups:
        plain(dataclasses.asdict(g))
        json.dumps(dataclasses.asdict(g))


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda: assess_unit(unit([1.0, -0.5]), timezone=PARIS), "unit cc-1.kwh[1]"),
        (lambda: assess_unit(unit([1.0], [-1.0]), timezone=PARIS), "unit cc-1.runtime_h[0]"),
        (lambda: assess_unit(unit([1.0], [1.0], [-2.0]), timezone=PARIS), "unit cc-1.starts[0]"),
        (lambda: assess_unit(unit([1.0]), timezone="Mars/Olympus"), "timezone"),
        (
            lambda: EfficiencyLimits(short_cycle_starts_per_day=0.0),
            "limits.short_cycle_starts_per_day",
        ),
        (lambda: EfficiencyLimits(second_law_efficiency=1.5), "limits.second_law_efficiency"),
        (lambda: EfficiencyLimits(min_cop_hours=0), "limits.min_cop_hours"),
        (lambda: LikeUnitRule(min_units=1), "rule.min_units"),
    ],
)
def test_bad_input_names_the_value(call: Any, where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.where == where
