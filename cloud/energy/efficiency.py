"""Equipment efficiency: runtime, duty cycle, short cycling, COP/EER, and like units compared.

Pure functions over :class:`~cloud.energy.units.UnitHours`; :func:`assess_unit` gives one
unit's figures (:class:`UnitEfficiency`), :func:`compare_like_units` sets like units side
by side (:class:`LikeUnitGroup`). NaN hours are missing data: every figure says how many
hours it rests on, and none of them treats a missing hour as a zero.

Runtime and duty cycle
    ``runtime_h`` is the sum of the ``runtime_hours`` counter's hourly advances; the duty
    cycle is that runtime over the hours whose advance is known
    (:attr:`UnitEfficiency.runtime_data_hours`), capped at 1. Run-hour counters count whole
    hours (``ew-cc100`` and ``ew-fc200`` both do), so a single hour reads 0 or 1 and only
    sums over many hours mean anything: the period's total is right to within an hour.
    Without the counter the duty cycle, kWh per runtime hour and mean run length are
    ``None`` with the reason.

kWh per runtime hour and mean running power
    ``kwh_per_runtime_hour`` is Σ kWh / Σ runtime over the hours in which both are known:
    the mean electrical power while running, in kW, from the counters. ``mean_running_kw``
    is the same figure from the power readings (the mean of ``active_power`` or ``power``
    over the windows in which the unit ran throughout, :attr:`UnitHours.running_signals`)
    when the service provides them, else the counters' figure; ``mean_running_kw_source``
    says which.

Starts and short cycling
    Starts are grouped by the *local calendar day* (the site's IANA zone) of each hour's
    start, so a DST day has 23 or 25 hours and is still one day. Only *complete* days (every
    hour of the local day in the period and its start count known) enter the mean and the
    maximum; a day over the limit is counted as such even when incomplete, since its known
    starts already exceed it. The limit is :attr:`EfficiencyLimits.short_cycle_starts_per_day`
    (default 72: three starts an hour around the clock, the cycle rate room thermostats are
    commonly rated at for cooling (3 cycles an hour at 50 % on-time, as in NEMA DC 3); a
    unit above it on a whole day starts more often than its controls should ever make it,
    and every start costs a start-up transient of poor efficiency and wears contactor,
    windings and valves).
    A unit is flagged ``short_cycling`` when at least
    :attr:`EfficiencyLimits.short_cycle_min_days` days (default 3) are over the limit: a
    pattern, not a one-off day of commissioning or tests. ``excess_starts`` is the sum over
    complete days of the starts above the limit (what :func:`cloud.energy.waste.recommend`
    prices). ``mean_run_minutes`` is runtime / starts, the mean length of a running cycle.

COP and EER of a compressor (estimate)
    No signal measures the heat a unit moves (no air or water flow, no refrigerant mass
    flow), so the COP cannot be measured; it is *estimated* from the temperature lift:

        COP ≈ η × T_evap / (T_cond − T_evap)   (temperatures in kelvin)

    the Carnot COP of a refrigerator between the evaporating and condensing saturation
    temperatures times a second-law efficiency η (:attr:`EfficiencyLimits.second_law_efficiency`,
    default 0.5: rated split and rooftop units reach 0.45–0.55 of Carnot on their saturation
    temperatures, e.g. EER 11.5 BTU/Wh at 7 °C evaporating and 47 °C condensing).
    EER = COP × 3.412 BTU/Wh (:data:`BTU_PER_WH`), at the unit's operating conditions, not
    at the AHRI rating point.

    Saturation temperatures without the refrigerant: the cloud does not know a unit's
    refrigerant, and the project keeps no refrigerant tables. The evaporating temperature is
    read from the controller itself: it computes ``superheat = suction_temp − T_sat(suction
    pressure)`` with its own saturation curve, so ``suction_temp − superheat`` is T_sat at
    the suction pressure. The condensing temperature comes from the discharge pressure
    through the Clausius–Clapeyron relation ``ln p = A − B / T`` (absolute pressure, gauge
    + 1.01325 bar, sea level assumed), fitted to the unit's own saturation points (the
    running evaporating points, and the equalised pressures of hours the unit was stopped
    throughout: less than 1 % of the running power's energy, no runtime, no start) when there
    are at least 6, they span at least :attr:`EfficiencyLimits.min_curve_span_k` (10 K) and
    give a plausible slope (1,800–3,200 K); otherwise the slope is
    :attr:`EfficiencyLimits.default_clapeyron_slope_k` (2,400 K, what R410A, R32, R22 and
    R404A show between −10 and 50 °C; R134a's is ~2,670 K, which would put its condensing
    temperature ~8 K low and its COP ~15 % high) anchored at the evaporating points. The
    straight line in 1/T reproduces R410A's saturation temperature to 1–2 K at 45–50 °C
    from an anchor near 5 °C; on simulated R410A units the fitted slope comes out at
    ~2,360 K and the healthy condensing approach at the simulator's 12 ± 1 K.

    Running conditions: the hourly means of a cycling unit mix running and stopped minutes
    (the pressures equalise when it stops), which would understate the lift and overstate
    the COP. The estimate therefore uses :attr:`UnitHours.running_signals` (running windows
    only) when the service provides them, else only the hours the unit ran almost throughout
    (the energy of the hour ≥ :attr:`EfficiencyLimits.near_continuous_share` (0.95) of the
    mean running power, no start in the hour); the source is stated. The period's COP is
    the energy-weighted mean of the hours' COPs (Σ heat / Σ electricity over those hours),
    with at least :attr:`EfficiencyLimits.min_cop_hours` (12) of them, and temperatures
    and the condensing approach (T_cond − ambient, the classic sign of a fouled condenser
    or a failing condenser fan) are energy-weighted the same way.

    What it sees and what it does not: the estimate follows everything that changes the
    lift — a fouled condenser or failing condenser fan (higher condensing temperature), low
    charge or a starved evaporator (lower evaporating temperature), a hotter day — but not
    losses inside the compressor or its motor (worn valves, electrical faults), which change
    the power drawn without changing the lift; those show in kWh per runtime hour against
    like units. Its absolute value is good to perhaps ±25 %; the same unit over time, or
    like units at similar ambient, compare much better than that. ``None`` with the reason
    when the unit is not a compressor, lacks a signal (suction and discharge pressure,
    suction temperature and superheat) or has too few running hours.

Like units (:func:`compare_like_units`)
    Units are like when they share the asset type and the model; units without a model are
    compared with the other units of their asset type that lack one. Groups span the
    client's sites. Per group: the median of kWh per runtime hour, duty cycle, starts per
    day, COP and condensing approach over the units that have the figure, and each unit's
    deviation from it in percent. A unit is an *outlier* on a figure when the group has at
    least :attr:`LikeUnitRule.min_units` (3) units with it and the unit is more than
    :attr:`LikeUnitRule.outlier_percent` (20 %) from the median; ``worse`` says whether the
    deviation is the unfavourable way (higher kWh per runtime hour, duty, starts or
    approach; lower COP). Sites differ in climate and load, so a deviation is a prompt to
    look, not a verdict; the condensing approach is the least climate-dependent figure. A
    group of one unit is reported with ``comparable`` false.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import scipy.constants

from cloud.energy.tariff import zone_of
from cloud.energy.units import F64, HOUR_S, UnitHours
from cloud.errors import InvalidInput

BTU_PER_WH: Final = 3600.0 / scipy.constants.Btu
"""BTU per watt-hour (3.412): EER in BTU/Wh = COP × this."""
ATMOSPHERE_BAR: Final = scipy.constants.atm / scipy.constants.bar
"""Standard atmosphere in bar (1.01325): gauge → absolute pressure, sea level assumed."""
KELVIN: Final = scipy.constants.zero_Celsius
COMPRESSOR: Final = "compressor"
_SLOPE_RANGE_K: Final = (1800.0, 3200.0)
_OFF_SHARE: Final = 0.01
"""An hour with less energy than this share of the mean running power (and no runtime or
start) counts as stopped throughout: its pressures are equalised saturation points."""
_POWER_SIGNAL: Final = {"compressor": "active_power", "fan": "power"}
_COP_SIGNALS: Final = ("suction_pressure", "discharge_pressure", "suction_temp", "superheat")


@dataclass(frozen=True, slots=True)
class EfficiencyLimits:
    """The stated limits and the COP method's constants (see the module docstring)."""

    short_cycle_starts_per_day: float = 72.0
    """Starts per local calendar day above which a day counts as short cycling."""
    short_cycle_min_days: int = 3
    """Days over the limit that make a unit ``short_cycling``."""
    second_law_efficiency: float = 0.5
    """η: the share of the Carnot COP a unit reaches on its saturation temperatures."""
    default_clapeyron_slope_k: float = 2400.0
    """B of ``ln p = A − B/T`` when the unit's own points cannot fit it."""
    min_curve_span_k: float = 10.0
    """Span of saturation temperatures the unit's own points need to fit B."""
    min_cop_hours: int = 12
    """Running hours a COP estimate needs."""
    near_continuous_share: float = 0.95
    """Without running-state means: an hour counts as running when its energy is at least
    this share of the mean running power (and no start happened in it)."""
    min_lift_k: float = 5.0
    """Hours whose condensing − evaporating temperature is below this are implausible and
    left out (a sensor fault, or the unit just started)."""

    def __post_init__(self) -> None:
        positive = {
            "short_cycle_starts_per_day": self.short_cycle_starts_per_day,
            "second_law_efficiency": self.second_law_efficiency,
            "default_clapeyron_slope_k": self.default_clapeyron_slope_k,
            "min_curve_span_k": self.min_curve_span_k,
            "min_lift_k": self.min_lift_k,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise InvalidInput(f"limits.{name}", f"{value!r} is not a positive number")
        if not 0 < self.second_law_efficiency <= 1:
            raise InvalidInput(
                "limits.second_law_efficiency", f"{self.second_law_efficiency!r} is not in (0, 1]"
            )
        if not 0 < self.near_continuous_share <= 1:
            raise InvalidInput(
                "limits.near_continuous_share", f"{self.near_continuous_share!r} is not in (0, 1]"
            )
        for name, count in (
            ("short_cycle_min_days", self.short_cycle_min_days),
            ("min_cop_hours", self.min_cop_hours),
        ):
            if count < 1:
                raise InvalidInput(f"limits.{name}", f"{count!r} is not at least 1")


DEFAULT_LIMITS: Final = EfficiencyLimits()


@dataclass(frozen=True, slots=True)
class StartsSummary:
    """Starts per local calendar day against the short-cycling limit."""

    limit_per_day: float
    total: float | None
    """Starts over the hours whose count is known; None without a start counter."""
    hours_with_data: int
    days_counted: int
    """Complete local days (see the module docstring)."""
    mean_per_day: float | None
    max_per_day: float | None
    worst_day: str | None
    """ISO local date of the maximum."""
    days_over_limit: int
    days_over: tuple[str, ...]
    """ISO local dates over the limit."""
    excess_starts: float
    """Σ over complete days of the starts above the limit."""
    max_per_hour: float | None
    mean_run_minutes: float | None
    """Runtime / starts: the mean length of a running cycle."""
    short_cycling: bool
    reason: str | None = None
    """Why figures are None."""


@dataclass(frozen=True, slots=True)
class CopEstimate:
    """A compressor's COP and EER estimate at its running conditions, or why there is none."""

    cop: float | None
    eer: float | None
    """BTU/Wh."""
    hours: int
    """Running hours the estimate rests on."""
    source: str
    """``running_signals`` (running windows), ``near_continuous_hours`` or ``none``."""
    evaporating_c: float | None = None
    condensing_c: float | None = None
    lift_k: float | None = None
    ambient_c: float | None = None
    condensing_approach_k: float | None = None
    """Condensing temperature − ambient (None without ambient)."""
    curve: str | None = None
    """``fitted`` (the unit's own saturation points) or ``default_slope``."""
    curve_slope_k: float | None = None
    """B of ``ln p = A − B/T`` used."""
    second_law_efficiency: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class UnitEfficiency:
    """One unit's efficiency figures over the period (see the module docstring)."""

    device_id: str
    name: str
    asset_type: str
    site_id: str
    model: str | None
    first_hour: int
    hours: int
    kwh: float
    """Σ kWh of the hours whose kWh is known."""
    kwh_hours: int
    """Hours whose kWh is known."""
    runtime_h: float | None
    runtime_data_hours: int
    """Hours whose runtime advance is known."""
    duty_cycle: float | None
    kwh_per_runtime_hour: float | None
    mean_running_kw: float | None
    mean_running_kw_source: str | None
    starts: StartsSummary
    cop: CopEstimate
    notes: tuple[str, ...] = ()


# -- local calendar ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalHours:
    """Where each hour of a period falls in the site's local time."""

    day: npt.NDArray[np.int64]
    """Local calendar day of the hour's start (days since 1970-01-01)."""
    hour: npt.NDArray[np.int64]
    """Local hour of the day of the hour's start (0-23)."""
    weekday: npt.NDArray[np.int64]
    """Monday = 0."""
    day_hours: Mapping[int, int]
    """Local day → how many hour starts (UTC, on the hour) fall in it: 24, or 23/25 on a
    DST change."""


def _midnight_utc(timezone: str, day: int) -> float:
    d = date(1970, 1, 1) + timedelta(days=day)
    return datetime(d.year, d.month, d.day, tzinfo=zone_of(timezone)).timestamp()


@functools.lru_cache(maxsize=64)
def local_hours(first_hour: int, hours: int, timezone: str) -> LocalHours:
    """The local day, hour and weekday of ``hours`` hours from ``first_hour`` (UTC epoch
    seconds, on the hour) in ``timezone`` (IANA)."""
    zone = zone_of(timezone)
    starts = first_hour + HOUR_S * np.arange(hours, dtype=np.int64)
    try:
        offsets = np.array([_offset(zone, int(t)) for t in starts] if hours else [], dtype=np.int64)
    except (OverflowError, ValueError, OSError) as exc:
        raise InvalidInput("first_hour", f"a time is out of range: {exc}") from None
    local = starts + offsets
    day = local // 86400
    hour = (local % 86400) // HOUR_S
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    day_hours: dict[int, int] = {}
    for d in np.unique(day).tolist():
        t0 = _midnight_utc(timezone, int(d))
        t1 = _midnight_utc(timezone, int(d) + 1)
        day_hours[int(d)] = math.ceil(t1 / HOUR_S) - math.ceil(t0 / HOUR_S)
    for arr in (day, hour, weekday):
        arr.setflags(write=False)
    return LocalHours(day, hour, weekday, day_hours)


def _offset(zone: ZoneInfo, t: int) -> int:
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def _iso(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


# -- checks --------------------------------------------------------------------------------


def check_unit(unit: UnitHours) -> None:
    """Counters must not go backwards: negative kWh, runtime or starts are refused."""
    counters: dict[str, F64 | None] = {
        "kwh": unit.kwh,
        "runtime_h": unit.runtime_h,
        "starts": unit.starts,
    }
    for name, values in counters.items():
        if values is None:
            continue
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1:
            raise InvalidInput(f"unit {unit.device_id}.{name}", f"has shape {arr.shape}")
        bad = np.flatnonzero(arr < 0)
        if bad.size:
            raise InvalidInput(
                f"unit {unit.device_id}.{name}[{int(bad[0])}]",
                f"is {float(arr[bad[0]])!r}: a counter's hourly advance is never negative",
            )
        if np.isinf(arr).any():
            raise InvalidInput(f"unit {unit.device_id}.{name}", "has an infinite hour")


def _f64(values: F64 | None) -> F64 | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


# -- starts --------------------------------------------------------------------------------


def _no_starts(limit: float, reason: str) -> StartsSummary:
    return StartsSummary(
        limit_per_day=limit,
        total=None,
        hours_with_data=0,
        days_counted=0,
        mean_per_day=None,
        max_per_day=None,
        worst_day=None,
        days_over_limit=0,
        days_over=(),
        excess_starts=0.0,
        max_per_hour=None,
        mean_run_minutes=None,
        short_cycling=False,
        reason=reason,
    )


def _starts(
    unit: UnitHours, runtime_h: float | None, timezone: str, limits: EfficiencyLimits
) -> StartsSummary:
    limit = limits.short_cycle_starts_per_day
    starts = _f64(unit.starts)
    if starts is None:
        return _no_starts(limit, "no start counter")
    known = np.isfinite(starts)
    if not known.any():
        return _no_starts(limit, "no hour with a start count")
    cal = local_hours(unit.first_hour, unit.hours, timezone)
    per_day: list[tuple[int, float, bool]] = []
    for d in np.unique(cal.day).tolist():
        in_day = cal.day == d
        count = float(starts[in_day & known].sum())
        complete = int((in_day & known).sum()) == cal.day_hours[int(d)]
        per_day.append((int(d), count, complete))
    complete_days = [(d, c) for d, c, ok in per_day if ok]
    over = [(d, c) for d, c, _ in per_day if c > limit]
    total = float(starts[known].sum())
    mean = max_ = None
    worst = None
    if complete_days:
        counts = [c for _, c in complete_days]
        mean = float(statistics.fmean(counts))
        worst_day, max_ = max(complete_days, key=lambda dc: (dc[1], -dc[0]))
        worst = _iso(worst_day)
    run_minutes = None
    if runtime_h is not None and unit.runtime_h is not None and total > 0:
        both = known & np.isfinite(np.asarray(unit.runtime_h, dtype=np.float64))
        if both.any():
            rt = float(np.asarray(unit.runtime_h, dtype=np.float64)[both].sum())
            st = float(starts[both].sum())
            run_minutes = 60.0 * rt / st if st > 0 else None
    reason = None if complete_days else "no complete local day with start counts"
    return StartsSummary(
        limit_per_day=limit,
        total=total,
        hours_with_data=int(known.sum()),
        days_counted=len(complete_days),
        mean_per_day=mean,
        max_per_day=None if max_ is None else float(max_),
        worst_day=worst,
        days_over_limit=len(over),
        days_over=tuple(_iso(d) for d, _ in over),
        excess_starts=float(sum(max(0.0, c - limit) for _, c in complete_days)),
        max_per_hour=float(starts[known].max()),
        mean_run_minutes=run_minutes,
        short_cycling=len(over) >= limits.short_cycle_min_days,
        reason=reason,
    )


# -- COP -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Curve:
    a: float
    b: float
    fitted: bool

    def temperature_c(self, p_abs: F64) -> F64:
        with np.errstate(divide="ignore", invalid="ignore"):
            out: F64 = self.b / (self.a - np.log(p_abs)) - KELVIN
        return out


def _fit_curve(
    p_abs: F64, t_c: F64, anchor: npt.NDArray[np.bool_], limits: EfficiencyLimits
) -> _Curve:
    """``ln p = A − B/T`` through the saturation points ``(p_abs, t_c)``; with too narrow a
    span or an implausible slope, the default slope through the ``anchor`` points."""
    ok = np.isfinite(p_abs) & np.isfinite(t_c) & (p_abs > 0.05) & (t_c > -KELVIN + 100)
    x = 1.0 / (t_c[ok] + KELVIN)
    y = np.log(p_abs[ok])
    if ok.sum() >= 6 and float(np.ptp(t_c[ok])) >= limits.min_curve_span_k:
        slope, intercept = np.polyfit(x, y, 1)
        b = -float(slope)
        if _SLOPE_RANGE_K[0] <= b <= _SLOPE_RANGE_K[1]:
            return _Curve(float(intercept), b, True)
    b = limits.default_clapeyron_slope_k
    use = ok & anchor
    if not use.any():
        use = ok
    a = float(np.mean(np.log(p_abs[use]) + b / (t_c[use] + KELVIN)))
    return _Curve(a, b, False)


def _no_cop(reason: str, source: str = "none", hours: int = 0) -> CopEstimate:
    return CopEstimate(None, None, hours, source, reason=reason)


def _estimate_cop(
    unit: UnitHours, mean_running_kw: float | None, limits: EfficiencyLimits
) -> CopEstimate:
    if unit.asset_type != COMPRESSOR:
        return _no_cop(f"a {unit.asset_type} has no refrigerant cycle: COP is for compressors")
    kwh = np.asarray(unit.kwh, dtype=np.float64)
    sig = {k: np.asarray(v, dtype=np.float64) for k, v in unit.signals.items()}
    run = {k: np.asarray(v, dtype=np.float64) for k, v in unit.running_signals.items()}
    # Hours stopped throughout: equalised pressures, saturation points of their own.
    stopped = np.zeros(unit.hours, dtype=bool)
    if mean_running_kw is not None and mean_running_kw > 0:
        stopped = np.isfinite(kwh) & (kwh <= _OFF_SHARE * mean_running_kw)
        for counter in (unit.runtime_h, unit.starts):
            if counter is not None:
                c = np.asarray(counter, dtype=np.float64)
                stopped &= np.isfinite(c) & (c == 0)
    if all(k in run for k in _COP_SIGNALS):
        source = "running_signals"
        values = {k: run[k] for k in _COP_SIGNALS}
        ambient = run.get("ambient_temp", sig.get("ambient_temp"))
        running = np.all([np.isfinite(v) for v in values.values()], axis=0)
    else:
        missing = [k for k in _COP_SIGNALS if k not in sig]
        if missing:
            return _no_cop(
                f"no {', '.join(missing)}: the estimate needs suction and discharge pressure, "
                "suction temperature and superheat"
            )
        if unit.runtime_h is None or mean_running_kw is None or mean_running_kw <= 0:
            return _no_cop(
                "no running-state means, and without a runtime counter the hours the unit "
                "ran throughout cannot be told from hourly means that mix running and stopped "
                "minutes"
            )
        source = "near_continuous_hours"
        values = {k: sig[k] for k in _COP_SIGNALS}
        ambient = sig.get("ambient_temp")
        running = np.isfinite(kwh) & (kwh >= limits.near_continuous_share * mean_running_kw)
        if unit.starts is not None:
            s = np.asarray(unit.starts, dtype=np.float64)
            running &= np.isfinite(s) & (s == 0)
        running &= np.all([np.isfinite(v) for v in values.values()], axis=0)
    if not running.any():
        why = (
            "no hour with a running window"
            if source == "running_signals"
            else f"no hour in which the unit ran ≥ {limits.near_continuous_share:.0%} of the "
            "time (hourly means of a cycling unit mix running and stopped minutes)"
        )
        return _no_cop(why, source)
    ps = values["suction_pressure"] + ATMOSPHERE_BAR
    pd = values["discharge_pressure"] + ATMOSPHERE_BAR
    t_evap = values["suction_temp"] - values["superheat"]
    # Saturation points: the running evaporating points and, when the blended hourly means
    # are there, the equalised pressures of the hours stopped throughout.
    points_p = [ps[running]]
    points_t = [t_evap[running]]
    anchor = [np.ones(int(running.sum()), dtype=bool)]
    if all(k in sig for k in ("suction_pressure", "suction_temp", "superheat")):
        off = stopped & np.isfinite(sig["suction_pressure"])
        off &= np.isfinite(sig["suction_temp"]) & np.isfinite(sig["superheat"])
        points_p.append(sig["suction_pressure"][off] + ATMOSPHERE_BAR)
        points_t.append(sig["suction_temp"][off] - sig["superheat"][off])
        anchor.append(np.zeros(int(off.sum()), dtype=bool))
    curve = _fit_curve(
        np.concatenate(points_p), np.concatenate(points_t), np.concatenate(anchor), limits
    )
    t_cond = curve.temperature_c(pd)
    lift = t_cond - t_evap
    good = running & np.isfinite(lift) & (lift >= limits.min_lift_k)
    good &= (t_evap > -60.0) & (t_cond < 90.0)
    n = int(good.sum())
    implausible = int(running.sum()) - n
    if n < limits.min_cop_hours:
        extra = f" ({implausible} more left out as implausible)" if implausible else ""
        return _no_cop(
            f"only {n} running hour{'s' if n != 1 else ''} with the signals{extra}; "
            f"the estimate needs {limits.min_cop_hours}",
            source,
            n,
        )
    eta = limits.second_law_efficiency
    cop_h = eta * (t_evap[good] + KELVIN) / lift[good]
    w = kwh[good]
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if w.sum() <= 0:
        w = np.ones(n)
    cop = float(np.sum(w * cop_h) / np.sum(w))
    te = float(np.sum(w * t_evap[good]) / np.sum(w))
    tc = float(np.sum(w * t_cond[good]) / np.sum(w))
    amb_c = approach = None
    if ambient is not None:
        amb = np.asarray(ambient, dtype=np.float64)[good]
        a_ok = np.isfinite(amb)
        if a_ok.any() and w[a_ok].sum() > 0:
            amb_c = float(np.sum(w[a_ok] * amb[a_ok]) / np.sum(w[a_ok]))
            approach = float(np.sum(w[a_ok] * (t_cond[good][a_ok] - amb[a_ok])) / w[a_ok].sum())
    return CopEstimate(
        cop=cop,
        eer=cop * BTU_PER_WH,
        hours=n,
        source=source,
        evaporating_c=te,
        condensing_c=tc,
        lift_k=tc - te,
        ambient_c=amb_c,
        condensing_approach_k=approach,
        curve="fitted" if curve.fitted else "default_slope",
        curve_slope_k=curve.b,
        second_law_efficiency=eta,
        reason=None,
    )


# -- one unit ------------------------------------------------------------------------------


def assess_unit(
    unit: UnitHours, *, timezone: str, limits: EfficiencyLimits = DEFAULT_LIMITS
) -> UnitEfficiency:
    """One unit's efficiency figures over its hours; ``timezone`` is the site's IANA zone
    (local calendar days for the starts). See the module docstring for every method."""
    check_unit(unit)
    zone_of(timezone)
    notes: list[str] = []
    kwh = np.asarray(unit.kwh, dtype=np.float64)
    kwh_known = np.isfinite(kwh)
    total_kwh = float(kwh[kwh_known].sum())
    runtime_h = duty = per_rt = None
    rt_hours = 0
    if unit.runtime_h is None:
        notes.append("no runtime counter: no duty cycle, kWh per runtime hour or run length")
    else:
        rt = np.asarray(unit.runtime_h, dtype=np.float64)
        rt_known = np.isfinite(rt)
        rt_hours = int(rt_known.sum())
        if rt_hours:
            runtime_h = float(rt[rt_known].sum())
            raw = runtime_h / rt_hours
            duty = min(1.0, raw)
            if raw > 1.0:
                notes.append(
                    f"runtime {runtime_h:g} h over {rt_hours} h with data: the whole-hour "
                    "counter's rounding, duty capped at 1"
                )
            both = rt_known & kwh_known
            rt_both = float(rt[both].sum())
            if rt_both > 0:
                per_rt = float(kwh[both].sum()) / rt_both
            else:
                notes.append("the unit did not run: no kWh per runtime hour")
        else:
            notes.append("no hour with a runtime count")
    running_kw = per_rt
    kw_source = "energy and runtime counters" if per_rt is not None else None
    power_name = _POWER_SIGNAL.get(unit.asset_type)
    if power_name is not None and power_name in unit.running_signals:
        p = np.asarray(unit.running_signals[power_name], dtype=np.float64)
        if np.isfinite(p).any():
            running_kw = float(np.nanmean(p))
            kw_source = f"{power_name} readings while running"
    starts = _starts(unit, runtime_h, timezone, limits)
    cop = _estimate_cop(unit, per_rt if per_rt is not None else running_kw, limits)
    return UnitEfficiency(
        device_id=unit.device_id,
        name=unit.name or unit.device_id,
        asset_type=unit.asset_type,
        site_id=unit.site_id,
        model=unit.model,
        first_hour=unit.first_hour,
        hours=unit.hours,
        kwh=total_kwh,
        kwh_hours=int(kwh_known.sum()),
        runtime_h=runtime_h,
        runtime_data_hours=rt_hours,
        duty_cycle=duty,
        kwh_per_runtime_hour=per_rt,
        mean_running_kw=running_kw,
        mean_running_kw_source=kw_source,
        starts=starts,
        cop=cop,
        notes=tuple(notes),
    )


# -- like units ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LikeUnitRule:
    """When a unit stands out from its like units."""

    outlier_percent: float = 20.0
    """Deviation from the group's median, in percent, beyond which a figure is an outlier."""
    min_units: int = 3
    """Units with the figure a group needs before it flags outliers (with two, the median
    is their mean and either could be the odd one)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.outlier_percent) and self.outlier_percent > 0):
            raise InvalidInput("rule.outlier_percent", f"{self.outlier_percent!r} is not positive")
        if self.min_units < 2:
            raise InvalidInput("rule.min_units", f"{self.min_units!r} is not at least 2")


DEFAULT_RULE: Final = LikeUnitRule()

METRICS: Final[Mapping[str, int]] = {
    "kwh_per_runtime_hour": +1,
    "duty_cycle": +1,
    "starts_per_day": +1,
    "cop": -1,
    "condensing_approach_k": +1,
}
"""The figures compared, and which way is worse (+1: higher, −1: lower)."""


def metric_values(unit: UnitEfficiency) -> dict[str, float | None]:
    """The figures :func:`compare_like_units` compares, by :data:`METRICS` name."""
    return {
        "kwh_per_runtime_hour": unit.kwh_per_runtime_hour,
        "duty_cycle": unit.duty_cycle,
        "starts_per_day": unit.starts.mean_per_day,
        "cop": unit.cop.cop,
        "condensing_approach_k": unit.cop.condensing_approach_k,
    }


@dataclass(frozen=True, slots=True)
class MetricComparison:
    metric: str
    value: float | None
    median: float | None
    """The group's median over the units with the figure."""
    deviation_percent: float | None
    outlier: bool
    worse: bool
    """Whether the deviation is the unfavourable way (see :data:`METRICS`)."""


@dataclass(frozen=True, slots=True)
class LikeUnitMember:
    device_id: str
    name: str
    site_id: str
    metrics: tuple[MetricComparison, ...]
    outlier: bool
    """Whether any figure is an outlier the unfavourable way."""

    def metric(self, name: str) -> MetricComparison:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class LikeUnitGroup:
    asset_type: str
    model: str | None
    """None: the units of this asset type whose model is unknown."""
    units: int
    sites: tuple[str, ...]
    comparable: bool
    """False for a group of one unit: nothing to compare with."""
    medians: Mapping[str, float | None] = field(default_factory=dict)
    members: tuple[LikeUnitMember, ...] = ()
    note: str | None = None


def compare_like_units(
    units: Sequence[UnitEfficiency], *, rule: LikeUnitRule = DEFAULT_RULE
) -> tuple[LikeUnitGroup, ...]:
    """Like units side by side (see the module docstring), groups by asset type then model
    (unknown model last), members by device id."""
    by_key: dict[tuple[str, str | None], list[UnitEfficiency]] = {}
    seen: set[str] = set()
    for i, u in enumerate(units):
        if u.device_id in seen:
            raise InvalidInput(f"units[{i}]", f"device {u.device_id} is given twice")
        seen.add(u.device_id)
        by_key.setdefault((u.asset_type, u.model), []).append(u)
    groups: list[LikeUnitGroup] = []
    for key in sorted(by_key, key=lambda k: (k[0], k[1] is None, k[1] or "")):
        members = sorted(by_key[key], key=lambda u: u.device_id)
        values = [metric_values(u) for u in members]
        medians: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for name in METRICS:
            have = [x for v in values if (x := v[name]) is not None]
            counts[name] = len(have)
            medians[name] = float(statistics.median(have)) if have else None
        comparable = len(members) > 1
        rows: list[LikeUnitMember] = []
        for u, v in zip(members, values, strict=True):
            comps: list[MetricComparison] = []
            for name, direction in METRICS.items():
                value, med = v[name], medians[name]
                dev = None
                if comparable and value is not None and med is not None and med != 0:
                    dev = 100.0 * (value - med) / abs(med)
                outlier = (
                    dev is not None
                    and counts[name] >= rule.min_units
                    and abs(dev) > rule.outlier_percent
                )
                worse = dev is not None and dev * direction > 0
                comps.append(MetricComparison(name, value, med, dev, outlier, worse))
            rows.append(
                LikeUnitMember(
                    u.device_id,
                    u.name,
                    u.site_id,
                    tuple(comps),
                    any(c.outlier and c.worse for c in comps),
                )
            )
        asset_type, model = key
        note = None
        if not comparable:
            note = "the only unit of its kind: no comparison possible"
        elif all(c < rule.min_units for c in counts.values()):
            note = f"fewer than {rule.min_units} units with each figure: deviations, no outliers"
        groups.append(
            LikeUnitGroup(
                asset_type=asset_type,
                model=model,
                units=len(members),
                sites=tuple(sorted({u.site_id for u in members})),
                comparable=comparable,
                medians=medians,
                members=tuple(rows),
                note=note,
            )
        )
    return tuple(groups)
