"""Energy wasted by faults, and the recommendations ranked by money saved per year.

Pure functions over :class:`~cloud.energy.units.UnitHours`,
:class:`~cloud.energy.units.FaultEpisode`, a site's :class:`~cloud.energy.tariff.HourlyPrices`
and what :mod:`cloud.energy.efficiency` computes.

Degraded span of a work order (:func:`fault_waste`)
    From ``onset_at`` when known, else from ``opened_at`` minus
    :attr:`WasteSettings.lookback_h` (default 14 days: a predicted fault is flagged days to
    weeks after it starts to cost energy, e.g. condenser fouling builds up over weeks), to
    ``closed_at``, or to the end of the period while the order is open. An hour is in the
    span when any part of it is. Only episodes whose span overlaps the period are reported.
    Where two episodes of one unit overlap, each hour counts once, for the episode whose span
    began last (the fault that was added on top); ``hours_shared`` says how many hours an
    episode gave up so.

Expected (healthy) energy
    1. *The unit's own history*: ordinary least squares of hourly kWh, over the unit's
       healthy hours (outside the degraded span of any of its work orders), on
       time-of-week bins (local hour of day × weekday/weekend, 48 bins; or the hour of day,
       24 bins; or none, whichever is the finest in which every bin has at least
       :attr:`WasteSettings.min_bin_hours` healthy hours) plus a linear term in outdoor
       temperature (the unit's ``ambient_temp`` means, else the ``outdoor_temp_c`` given)
       when the healthy hours span at least :attr:`WasteSettings.min_ambient_span_k`.
       Runtime is deliberately *not* a regressor: a degraded unit runs longer for the same
       load, and that extra runtime is part of the waste. Needs
       :attr:`WasteSettings.min_reference_hours` (168) healthy hours; give the unit's hours
       from before the report period too (with ``report_from`` the period's start: earlier
       hours are then reference only) when the period itself is mostly degraded.
    2. *Like units at the same site* (same asset type, same model when known), when the
       unit's own healthy hours are too few: kWh = k × (the like units' mean kWh in the
       same hour, over those healthy then), with k fitted on the unit's own healthy hours
       (at least :attr:`WasteSettings.min_like_reference_hours`, 24). Same site means same
       weather and tariff; it assumes the like units carry a load proportional to this one.
    3. Otherwise *not estimable*, with the reason.

Hours counted
    The episode's hours with a known kWh and known regressors, less the hours in a stretch
    of at least :attr:`WasteSettings.stopped_run_h` (6) hours without consumption: the unit
    was stopped (tripped, switched off, or off by schedule), and a trip's missing
    consumption must not offset the waste. Stopped hours are left out of the healthy
    reference the same way, so the model describes the unit while in service;
    ``hours_stopped`` reports them.

Significance: negative or insignificant differences are not waste
    The difference (actual − expected, Σ over the hours counted) has a standard error from
    the regression: ``n s² f + gᵀ V g`` with ``s²`` the residual variance, ``f = (1 + ρ) /
    (1 − ρ)`` the inflation for the residuals' lag-1 autocorrelation ρ (as ASHRAE Guideline
    14 does), ``g`` the sum of the counted hours' regressors and ``V`` the coefficients'
    covariance. It is waste only when it exceeds :attr:`WasteSettings.z` (1.645: one-sided
    95 %) standard errors *and* :attr:`WasteSettings.min_excess_share` (3 %) of the expected
    energy; otherwise ``extra_kwh``, its cost and CO2 are 0 and ``is_waste`` is false, with
    ``difference_kwh`` kept for the engineer. ``confidence``: ``high`` at three standard
    errors or more with the unit's own model, ``medium`` for other waste, ``low`` when not
    significant, ``none`` when not estimable.

Cost, CO2 and the year
    Cost = Σ (actual − expected) × the hour's price over the hours counted (time-of-use
    included); CO2 = extra kWh × the grid factor. The annual figures extrapolate the
    observed rate: extra × 8,760 h / the hours observed (counted + stopped). That assumes
    the fault would go on all year as it did in the period: for a seasonal load (cooling in
    summer) a summer month overstates the year, a winter month understates it.

Recommendations (:func:`recommend`)
    Ranked by money saved per year (by kWh when the sites' currencies differ), at most
    :attr:`RecommendSettings.top_n`. Kinds (stable keys):

    ``repair_fault``
        an open work order whose episode is waste: the saving is its annual extra cost
        (from the hourly prices) and kWh; the action names the order and the catalogue's
        remedy.
    ``short_cycling``
        a unit flagged short cycling: every start above the limit costs
        :attr:`RecommendSettings.start_loss_minutes` (1.25) minutes of running power, the
        cycling loss implied by a degradation coefficient Cd = 0.25 (the long-standing
        default of the single-speed air-conditioner test procedure, AHRI 210/240) at the
        3 cycles an hour and 50 % load its rating assumes (PLF = 1 − Cd × 0.5: 12.5 % of a
        10-minute on-cycle). Saving = excess starts × that, annualised over the days counted.
    ``clean_condenser``
        a compressor whose condensing approach (T_cond − ambient) exceeds
        :attr:`RecommendSettings.max_condensing_approach_k` (20 K; air-cooled condensers
        are designed for 8–17 K) with no open work order: at equal heat moved, electricity
        scales with the lift (the COP estimate's Carnot form), so bringing the approach
        back to :attr:`RecommendSettings.target_condensing_approach_k` (12 K) saves
        ``1 − (lift − (approach − target)) / lift`` of its energy.
    ``inspect_unit``
        a unit that is an outlier the unfavourable way among its like units: kWh per
        runtime hour above the group's median (saving: the excess per runtime hour × its
        runtime), else a COP below it (saving: ``1 − COP / median`` of its energy).

    One cause is not counted twice: a unit with a ``repair_fault`` recommendation gets no
    ``clean_condenser`` or ``inspect_unit`` one, and one with ``clean_condenser`` no
    ``inspect_unit`` one (the open fault, or the fouled condenser, explains it).
    ``short_cycling`` is a separate cause and is kept. Money from kWh uses the caller's
    mean price per kWh of the site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypedDict

import numpy as np
import numpy.typing as npt

from cloud.energy.carbon import check_grid_factor, co2_kg
from cloud.energy.efficiency import (
    COMPRESSOR,
    LikeUnitGroup,
    MetricComparison,
    UnitEfficiency,
    check_unit,
    local_hours,
)
from cloud.energy.summary import DAYS_PER_YEAR
from cloud.energy.tariff import HourlyPrices, zone_of
from cloud.energy.units import F64, HOUR_S, FaultEpisode, UnitHours
from cloud.errors import InvalidInput
from cloud.workorders.catalogue import Catalogue

HOURS_PER_YEAR: Final = DAYS_PER_YEAR * 24.0
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class WasteSettings:
    """The stated constants of :func:`fault_waste` (see the module docstring)."""

    lookback_h: int = 14 * 24
    min_reference_hours: int = 168
    min_bin_hours: int = 3
    min_ambient_span_k: float = 3.0
    min_like_reference_hours: int = 24
    stopped_run_h: int = 6
    z: float = 1.645
    min_excess_share: float = 0.03

    def __post_init__(self) -> None:
        for name in (
            "lookback_h",
            "min_reference_hours",
            "min_bin_hours",
            "min_like_reference_hours",
            "stopped_run_h",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"settings.{name}", f"{value!r} is not a whole number ≥ 0")
        for name in ("min_ambient_span_k", "z", "min_excess_share"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInput(f"settings.{name}", f"{value!r} is not a number ≥ 0")


DEFAULT_SETTINGS: Final = WasteSettings()


@dataclass(frozen=True, slots=True)
class FaultWaste:
    """What one work order's fault cost while the unit ran degraded in the period."""

    work_order_id: str
    number: str
    device_id: str
    site_id: str
    fault: str
    state: str
    open: bool
    """The order was still open at the end of the period."""
    span_start: float
    """Start of the degraded span within the period (epoch seconds)."""
    span_end: float
    span_source: str
    """``onset_at`` or ``opened_at minus lookback``."""
    hours_in_span: int
    hours_counted: int
    hours_stopped: int
    hours_missing: int
    hours_shared: int
    model: str
    """``own_history``, ``like_units`` or ``none``."""
    model_terms: str
    reference_hours: int
    cv_rmse: float | None
    """Hourly CV(RMSE) of the model on its reference hours."""
    expected_kwh: float | None
    actual_kwh: float | None
    difference_kwh: float | None
    """Actual − expected, signed, whether waste or not."""
    uncertainty_kwh: float | None
    """Standard error (1σ) of the difference."""
    extra_kwh: float
    """The waste: the difference when significant, else 0."""
    extra_percent: float | None
    extra_cost: float
    currency: str
    co2_kg: float
    annual_extra_kwh: float
    annual_extra_cost: float
    is_waste: bool
    confidence: str
    """``high``, ``medium``, ``low`` or ``none``."""
    note: str


class _Common(TypedDict):
    work_order_id: str
    number: str
    device_id: str
    site_id: str
    fault: str
    state: str
    open: bool
    span_start: float
    span_end: float
    span_source: str
    hours_in_span: int
    hours_shared: int
    currency: str


# -- helpers -------------------------------------------------------------------------------


def _stopped(kwh: F64, run_h: int) -> B:
    """Hours in a stretch of at least ``run_h`` hours with zero consumption."""
    zero = np.isfinite(kwh) & (kwh <= 0.0)
    out = np.zeros(kwh.shape, dtype=bool)
    if run_h <= 0:
        return out
    i, n = 0, len(kwh)
    while i < n:
        if not zero[i]:
            i += 1
            continue
        j = i
        while j < n and zero[j]:
            j += 1
        if j - i >= run_h:
            out[i:j] = True
        i = j
    return out


def _span(ep: FaultEpisode, settings: WasteSettings) -> tuple[float, float, str]:
    if ep.onset_at is not None:
        if not math.isfinite(ep.onset_at):
            raise InvalidInput(f"work order {ep.number}.onset_at", "is not finite")
        start, source = ep.onset_at, "onset_at"
    else:
        start, source = ep.opened_at - settings.lookback_h * HOUR_S, "opened_at minus lookback"
    end = math.inf if ep.closed_at is None else ep.closed_at
    if end < start:
        raise InvalidInput(
            f"work order {ep.number}.{'onset_at' if ep.onset_at is not None else 'closed_at'}",
            "puts the fault's start after the order's close",
        )
    return start, end, source


def _in_span(hours: npt.NDArray[np.int64], start: float, end: float) -> B:
    return (hours + HOUR_S > start) & (hours < end)


def _healthy_mask(unit: UnitHours, episodes: Sequence[FaultEpisode], settings: WasteSettings) -> B:
    hours = unit.hour_starts()
    degraded = np.zeros(unit.hours, dtype=bool)
    for ep in episodes:
        if ep.device_id == unit.device_id:
            start, end, _ = _span(ep, settings)
            degraded |= _in_span(hours, start, end)
    return ~degraded


@dataclass(frozen=True, slots=True)
class _Model:
    kind: str
    terms: str
    x: F64
    """Regressors of every hour (NaN rows where unknown)."""
    beta: F64
    s2: float
    inflation: float
    cov: F64
    reference_hours: int
    cv_rmse: float | None


def _fit(x: F64, y: F64, ref: B, kind: str, terms: str) -> _Model:
    xr, yr = x[ref], y[ref]
    beta = np.asarray(np.linalg.lstsq(xr, yr, rcond=None)[0], dtype=np.float64)
    resid = yr - xr @ beta
    n, p = xr.shape
    rank = int(np.linalg.matrix_rank(xr)) if n else 0
    dof = max(n - rank, 1)
    s2 = float(resid @ resid) / dof
    # Lag-1 autocorrelation over consecutive reference hours.
    idx = np.flatnonzero(ref)
    pos = {int(h): k for k, h in enumerate(idx)}
    pairs = [(pos[int(h)], pos[int(h) + 1]) for h in idx if int(h) + 1 in pos]
    rho = 0.0
    if len(pairs) > 2 and s2 > 0:
        a = np.array([resid[i] for i, _ in pairs])
        b = np.array([resid[j] for _, j in pairs])
        rho = float(np.sum(a * b) / (float(resid @ resid) / n) / len(pairs))
    rho = min(max(rho, 0.0), 0.95)
    inflation = (1.0 + rho) / (1.0 - rho)
    cov = s2 * inflation * np.linalg.pinv(xr.T @ xr) if n else np.zeros((p, p))
    mean_y = float(np.mean(yr)) if n else 0.0
    cv = math.sqrt(s2) / mean_y if mean_y > 0 else None
    return _Model(kind, terms, x, beta, s2, inflation, cov, n, cv)


def _own_model(
    unit: UnitHours,
    y: F64,
    ref: B,
    ambient: F64 | None,
    timezone: str | None,
    settings: WasteSettings,
) -> _Model | str:
    usable = ref.copy()
    amb_ok = ambient is not None and bool(np.isfinite(ambient[ref]).any())
    if amb_ok:
        assert ambient is not None  # noqa: S101 - narrowed by amb_ok
        amb_ref = ambient[ref & np.isfinite(ambient)]
        span = float(np.percentile(amb_ref, 95) - np.percentile(amb_ref, 5))
        amb_ok = span >= settings.min_ambient_span_k and amb_ref.size >= 2
        if amb_ok:
            usable &= np.isfinite(ambient)
    n_ref = int(usable.sum())
    if n_ref < settings.min_reference_hours:
        return (
            f"only {n_ref} healthy hour{'s' if n_ref != 1 else ''} in service outside its work "
            f"orders (the model needs {settings.min_reference_hours})"
        )
    if timezone is not None:
        cal = local_hours(unit.first_hour, unit.hours, timezone)
        hour, weekend = cal.hour, cal.weekday >= 5
        where = "local"
    else:
        hours = unit.hour_starts()
        hour = (hours % 86400) // HOUR_S
        weekend = ((hours // 86400 + 3) % 7) >= 5
        where = "UTC"
    cols: list[F64] = []
    terms = ""
    for nbins, label in ((48, "48 time-of-week bins"), (24, "24 hour-of-day bins")):
        b = hour + 24 * weekend if nbins == 48 else hour
        counts = np.bincount(b[usable], minlength=nbins)
        if counts.min() >= settings.min_bin_hours:
            cols = [(b == k).astype(np.float64) for k in range(nbins)]
            terms = f"{label} ({where})"
            break
    if not cols:
        cols = [np.ones(unit.hours)]
        terms = "a constant"
    if amb_ok:
        assert ambient is not None  # noqa: S101
        centre = float(np.mean(ambient[usable]))
        cols.append(ambient - centre)
        terms += " + outdoor temperature"
    x = np.column_stack(cols)
    return _fit(x, y, usable, "own_history", terms)


def _like_model(
    unit: UnitHours,
    y: F64,
    ref: B,
    like_units: Sequence[UnitHours],
    episodes: Sequence[FaultEpisode],
    settings: WasteSettings,
) -> _Model | str:
    peers: list[F64] = []
    for i, other in enumerate(like_units):
        if other.device_id == unit.device_id or other.site_id != unit.site_id:
            continue
        if other.asset_type != unit.asset_type:
            continue
        if unit.model is not None and other.model != unit.model:
            continue
        if other.first_hour != unit.first_hour or other.hours != unit.hours:
            raise InvalidInput(
                f"like_units[{i}] ({other.device_id})", "does not cover the unit's hours"
            )
        check_unit(other)
        kwh = np.asarray(other.kwh, dtype=np.float64).copy()
        kwh[~_healthy_mask(other, episodes, settings)] = np.nan
        peers.append(kwh)
    if not peers:
        return "no like unit at the site to compare with"
    stack = np.vstack(peers)
    known = np.isfinite(stack)
    count = known.sum(axis=0)
    m = np.where(count > 0, np.where(known, stack, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    usable = ref & np.isfinite(m)
    n_ref = int(usable.sum())
    if n_ref < settings.min_like_reference_hours:
        return (
            f"only {n_ref} healthy hours with like units to scale them by "
            f"(needs {settings.min_like_reference_hours})"
        )
    terms = f"k × the mean of {len(peers)} like unit{'s' if len(peers) > 1 else ''} at the site"
    return _fit(m[:, None], y, usable, "like_units", terms)


# -- fault waste ---------------------------------------------------------------------------


def fault_waste(
    unit: UnitHours,
    episodes: Sequence[FaultEpisode],
    prices: HourlyPrices,
    grid_factor: float,
    *,
    timezone: str | None = None,
    settings: WasteSettings = DEFAULT_SETTINGS,
    like_units: Sequence[UnitHours] = (),
    outdoor_temp_c: F64 | None = None,
    report_from: int | None = None,
) -> tuple[FaultWaste, ...]:
    """The waste of each of ``unit``'s work orders whose degraded span overlaps its hours,
    in order of span start (see the module docstring).

    ``episodes`` may hold other units' orders too: they are ignored, except that a like
    unit's own degraded hours are left out of the like-unit reference. ``prices`` covers the
    unit's hours; ``timezone`` (IANA) places the time-of-week bins (None: UTC bins);
    ``like_units`` are candidates for the like-unit fallback (only those at the unit's site,
    of its asset type and model, are used); ``outdoor_temp_c`` is used when the unit has no
    ``ambient_temp``; ``report_from`` (epoch seconds, on the hour): the hours before it are
    healthy reference only, and the results cover the hours from it (a report month whose
    unit's hours start months earlier)."""
    check_unit(unit)
    factor = check_grid_factor(grid_factor)
    if timezone is not None:
        zone_of(timezone)
    hours = unit.hour_starts()
    if not np.array_equal(np.asarray(prices.hours), hours):
        raise InvalidInput(
            "prices.hours",
            f"{len(prices.hours)} hours that are not the {unit.hours} hours of unit "
            f"{unit.device_id}",
        )
    period_start = float(unit.first_hour)
    period_end = float(unit.first_hour + unit.hours * HOUR_S)
    if report_from is not None:
        if report_from % HOUR_S or not period_start <= report_from < period_end:
            raise InvalidInput(
                "report_from", f"{report_from!r} is not an hour start within the unit's hours"
            )
        period_start = float(report_from)
    reported = hours >= period_start
    ambient: F64 | None = None
    if "ambient_temp" in unit.signals:
        ambient = np.asarray(unit.signals["ambient_temp"], dtype=np.float64)
    elif outdoor_temp_c is not None:
        ambient = np.asarray(outdoor_temp_c, dtype=np.float64)
        if ambient.shape != (unit.hours,):
            raise InvalidInput("outdoor_temp_c", f"has shape {ambient.shape}, not ({unit.hours},)")
    own = [ep for ep in episodes if ep.device_id == unit.device_id]
    if not own:
        return ()
    spans = [(ep, *_span(ep, settings)) for ep in own]
    spans = [s for s in spans if s[1] < period_end and s[2] > period_start and unit.hours]
    if not spans:
        return ()
    spans.sort(key=lambda s: (s[1], s[0].opened_at, s[0].work_order_id))
    y = np.asarray(unit.kwh, dtype=np.float64)
    stopped = _stopped(y, settings.stopped_run_h)
    ref = _healthy_mask(unit, episodes, settings) & np.isfinite(y) & ~stopped
    model = _own_model(unit, y, ref, ambient, timezone, settings)
    if isinstance(model, str):
        fallback = _like_model(unit, y, ref, like_units, episodes, settings)
        model = f"{model}; {fallback}" if isinstance(fallback, str) else fallback
    owner = np.full(unit.hours, -1, dtype=np.int64)
    in_span = []
    for k, (_, start, end, _) in enumerate(spans):
        mask = _in_span(hours, start, end) & reported
        in_span.append(mask)
        owner[mask] = k  # the span that began last wins
    price = np.asarray(prices.prices, dtype=np.float64)
    out: list[FaultWaste] = []
    for k, (ep, start, end, source) in enumerate(spans):
        owned = owner == k
        common: _Common = {
            "work_order_id": ep.work_order_id,
            "number": ep.number,
            "device_id": unit.device_id,
            "site_id": unit.site_id,
            "fault": ep.fault,
            "state": ep.state,
            "open": ep.closed_at is None or ep.closed_at >= period_end,
            "span_start": max(start, period_start),
            "span_end": min(end, period_end),
            "span_source": source,
            "hours_in_span": int(owned.sum()),
            "hours_shared": int((in_span[k] & ~owned).sum()),
            "currency": prices.currency,
        }
        if isinstance(model, str):
            out.append(
                FaultWaste(
                    **common,
                    hours_counted=0,
                    hours_stopped=int((owned & stopped).sum()),
                    hours_missing=int((owned & ~stopped).sum()),
                    model="none",
                    model_terms="",
                    reference_hours=int(ref.sum()),
                    cv_rmse=None,
                    expected_kwh=None,
                    actual_kwh=None,
                    difference_kwh=None,
                    uncertainty_kwh=None,
                    extra_kwh=0.0,
                    extra_percent=None,
                    extra_cost=0.0,
                    co2_kg=0.0,
                    annual_extra_kwh=0.0,
                    annual_extra_cost=0.0,
                    is_waste=False,
                    confidence="none",
                    note=f"not estimable: {model}",
                )
            )
            continue
        out.append(_episode_waste(common, owned, stopped, y, price, model, factor, settings))
    return tuple(out)


def _episode_waste(
    common: _Common,
    owned: B,
    stopped: B,
    y: F64,
    price: F64,
    model: _Model,
    factor: float,
    settings: WasteSettings,
) -> FaultWaste:
    x_ok = np.all(np.isfinite(model.x), axis=1)
    counted = owned & ~stopped & np.isfinite(y) & x_ok
    n = int(counted.sum())
    hours_stopped = int((owned & stopped).sum())
    missing = int((owned & ~stopped).sum()) - n
    predicted = model.x[counted] @ model.beta
    actual = float(y[counted].sum())
    expected = float(predicted.sum())
    diff = actual - expected
    g = model.x[counted].sum(axis=0)
    var = n * model.s2 * model.inflation + float(g @ model.cov @ g)
    se = math.sqrt(max(var, 0.0))
    significant = n > 0 and diff > settings.z * se
    big_enough = expected > 0 and diff >= settings.min_excess_share * expected
    is_waste = bool(significant and big_enough and diff > 0)
    extra = diff if is_waste else 0.0
    cost = 0.0
    if is_waste:
        cost = max(0.0, float(np.sum((y[counted] - predicted) * price[counted])))
    observed = n + hours_stopped
    per_year = HOURS_PER_YEAR / observed if observed else 0.0
    if not is_waste:
        confidence = "low"
    elif model.kind == "own_history" and diff >= 3.0 * se:
        confidence = "high"
    else:
        confidence = "medium"
    pct = 100.0 * diff / expected if expected > 0 else None
    parts = [f"expected from {model.terms}", f"{model.reference_hours} healthy reference hours"]
    if model.cv_rmse is not None:
        parts.append(f"hourly CV(RMSE) {model.cv_rmse:.0%}")
    parts.append(f"difference {diff:+.1f} kWh ± {se:.1f} (1σ) over {n} h")
    if not is_waste:
        if n == 0:
            parts.append("no hour to count: not waste")
        elif diff <= 0:
            parts.append("no more than healthy: not waste")
        elif not significant:
            parts.append(f"within {settings.z:g} standard errors: not significant, not waste")
        else:
            parts.append(f"below {settings.min_excess_share:.0%} of the expected energy: not waste")
    if hours_stopped:
        parts.append(f"{hours_stopped} h stopped left out")
    return FaultWaste(
        **common,
        hours_counted=n,
        hours_stopped=hours_stopped,
        hours_missing=missing,
        model=model.kind,
        model_terms=model.terms,
        reference_hours=model.reference_hours,
        cv_rmse=model.cv_rmse,
        expected_kwh=expected,
        actual_kwh=actual,
        difference_kwh=diff,
        uncertainty_kwh=se,
        extra_kwh=extra,
        extra_percent=pct if is_waste else None,
        extra_cost=cost,
        co2_kg=co2_kg(extra, factor),
        annual_extra_kwh=extra * per_year,
        annual_extra_cost=cost * per_year,
        is_waste=is_waste,
        confidence=confidence,
        note="; ".join(parts),
    )


# -- recommendations -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecommendSettings:
    """The stated constants of :func:`recommend` (see the module docstring)."""

    top_n: int = 10
    start_loss_minutes: float = 1.25
    max_condensing_approach_k: float = 20.0
    target_condensing_approach_k: float = 12.0

    def __post_init__(self) -> None:
        if isinstance(self.top_n, bool) or not isinstance(self.top_n, int) or self.top_n < 1:
            raise InvalidInput("settings.top_n", f"{self.top_n!r} is not a whole number ≥ 1")
        for name in (
            "start_loss_minutes",
            "max_condensing_approach_k",
            "target_condensing_approach_k",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInput(f"settings.{name}", f"{value!r} is not a number ≥ 0")
        if self.target_condensing_approach_k > self.max_condensing_approach_k:
            raise InvalidInput(
                "settings.target_condensing_approach_k", "is above max_condensing_approach_k"
            )


DEFAULT_RECOMMEND: Final = RecommendSettings()

KINDS: Final = ("repair_fault", "short_cycling", "clean_condenser", "inspect_unit")
"""The recommendation kinds (stable keys)."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    rank: int
    """1 = the largest saving."""
    kind: str
    """One of :data:`KINDS`."""
    site_id: str
    device_ids: tuple[str, ...]
    device_names: tuple[str, ...]
    action: str
    """One sentence for the facility manager."""
    saving_kwh_per_year: float
    saving_per_year: float
    currency: str
    basis: str
    """How the saving was estimated."""
    work_order_id: str | None = None
    work_order_number: str | None = None


@dataclass(frozen=True, slots=True)
class _Draft:
    kind: str
    unit: UnitEfficiency
    action: str
    kwh_year: float
    money_year: float
    currency: str
    basis: str
    work_order_id: str | None = None
    work_order_number: str | None = None


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y").lstrip("0")


def _site_price(
    site_id: str, mean_price: Mapping[str, float], currency: Mapping[str, str]
) -> tuple[float, str]:
    if site_id not in mean_price:
        raise InvalidInput(f"mean_price[{site_id!r}]", "no mean price for the site")
    if site_id not in currency:
        raise InvalidInput(f"currency[{site_id!r}]", "no currency for the site")
    price = mean_price[site_id]
    if isinstance(price, bool) or not (
        isinstance(price, int | float) and math.isfinite(price) and price >= 0
    ):
        raise InvalidInput(f"mean_price[{site_id!r}]", f"{price!r} is not a price ≥ 0 per kWh")
    return float(price), currency[site_id]


def _per_year(hours: int) -> float:
    return HOURS_PER_YEAR / hours if hours > 0 else 0.0


def recommend(
    assessments: Sequence[UnitEfficiency],
    wastes: Sequence[FaultWaste],
    groups: Sequence[LikeUnitGroup],
    *,
    mean_price: Mapping[str, float],
    currency: Mapping[str, str],
    settings: RecommendSettings = DEFAULT_RECOMMEND,
    catalogue: Catalogue | None = None,
) -> tuple[Recommendation, ...]:
    """The top recommendations by money saved per year (see the module docstring).

    ``assessments``: :func:`~cloud.energy.efficiency.assess_unit` of every unit;
    ``wastes``: every unit's :func:`fault_waste`; ``groups``:
    :func:`~cloud.energy.efficiency.compare_like_units` of the assessments;
    ``mean_price`` and ``currency``: site id → the period's mean price per kWh and its
    currency; ``catalogue``: the work-order fault catalogue for the remedy's words."""
    cat = catalogue if catalogue is not None else Catalogue()
    units: dict[str, UnitEfficiency] = {}
    for i, a in enumerate(assessments):
        if a.device_id in units:
            raise InvalidInput(f"assessments[{i}]", f"device {a.device_id} is given twice")
        units[a.device_id] = a
    drafts: list[_Draft] = []
    repaired: set[str] = set()
    for i, w in enumerate(wastes):
        if w.device_id not in units:
            raise InvalidInput(f"wastes[{i}].device_id", f"{w.device_id!r} has no assessment")
        if not (w.is_waste and w.open and w.annual_extra_kwh > 0):
            continue
        u = units[w.device_id]
        remedy = cat[w.fault].remedy
        drafts.append(
            _Draft(
                kind="repair_fault",
                unit=u,
                action=f"Have work order {w.number} on {u.name} completed ({remedy}).",
                kwh_year=w.annual_extra_kwh,
                money_year=w.annual_extra_cost,
                currency=w.currency,
                basis=(
                    f"{w.extra_kwh:.0f} kWh ({w.extra_percent or 0.0:.0f} %) and "
                    f"{w.extra_cost:.2f} {w.currency} more than the unit would use healthy "
                    f"over {w.hours_counted} h since {_date(w.span_start)}, annualised at "
                    f"that rate; {w.confidence} confidence ({w.note})"
                ),
                work_order_id=w.work_order_id,
                work_order_number=w.number,
            )
        )
        repaired.add(u.device_id)
    cleaned: set[str] = set()
    for u in units.values():
        s = u.starts
        kw = u.mean_running_kw or u.kwh_per_runtime_hour
        if s.short_cycling and s.days_counted and s.excess_starts > 0 and kw:
            price, cur = _site_price(u.site_id, mean_price, currency)
            kwh = s.excess_starts * kw * settings.start_loss_minutes / 60.0
            kwh_year = kwh * DAYS_PER_YEAR / s.days_counted
            drafts.append(
                _Draft(
                    kind="short_cycling",
                    unit=u,
                    action=(
                        f"Have the controls of {u.name} adjusted (wider thermostat deadband, "
                        "longer minimum off time) so it starts less often, and its sizing "
                        "checked if it keeps short cycling."
                    ),
                    kwh_year=kwh_year,
                    money_year=kwh_year * price,
                    currency=cur,
                    basis=(
                        f"over {s.limit_per_day:g} starts on {s.days_over_limit} local days "
                        f"(mean {s.mean_per_day or 0.0:.0f}/day, max {s.max_per_day or 0.0:.0f}); "
                        f"{s.excess_starts:.0f} starts above the limit in {s.days_counted} days, "
                        f"each costing {settings.start_loss_minutes:g} min at {kw:.2f} kW "
                        "(cycling loss, Cd 0.25), annualised"
                    ),
                )
            )
        cop = u.cop
        if (
            u.device_id not in repaired
            and u.asset_type == COMPRESSOR
            and cop.condensing_approach_k is not None
            and cop.lift_k
            and cop.condensing_approach_k > settings.max_condensing_approach_k
        ):
            price, cur = _site_price(u.site_id, mean_price, currency)
            cut = cop.condensing_approach_k - settings.target_condensing_approach_k
            share = min(1.0, cut / cop.lift_k)
            kwh_year = u.kwh * share * _per_year(u.kwh_hours)
            drafts.append(
                _Draft(
                    kind="clean_condenser",
                    unit=u,
                    action=(
                        f"Have the condenser coil of {u.name} cleaned and its condenser fan "
                        "checked."
                    ),
                    kwh_year=kwh_year,
                    money_year=kwh_year * price,
                    currency=cur,
                    basis=(
                        f"condensing {cop.condensing_approach_k:.1f} K above ambient (limit "
                        f"{settings.max_condensing_approach_k:g} K); back to "
                        f"{settings.target_condensing_approach_k:g} K cuts the lift of "
                        f"{cop.lift_k:.1f} K by {share:.0%}, and the energy with it, on "
                        f"{u.kwh:.0f} kWh over {u.kwh_hours} h, annualised"
                    ),
                )
            )
            cleaned.add(u.device_id)
    for group in groups:
        if not group.comparable:
            continue
        for member in group.members:
            found = units.get(member.device_id)
            if found is None:
                raise InvalidInput(
                    f"groups: {member.device_id}", "is in a group but has no assessment"
                )
            u = found
            if u.device_id in repaired or u.device_id in cleaned or not member.outlier:
                continue
            price, cur = _site_price(u.site_id, mean_price, currency)
            draft = _inspect(u, member.metric("kwh_per_runtime_hour"), member.metric("cop"))
            if draft is None:
                continue
            kwh_year, basis = draft
            drafts.append(
                _Draft(
                    kind="inspect_unit",
                    unit=u,
                    action=(
                        f"Have {u.name} serviced and inspected: it uses more energy than "
                        f"like units ({group.model or group.asset_type})."
                    ),
                    kwh_year=kwh_year,
                    money_year=kwh_year * price,
                    currency=cur,
                    basis=basis,
                )
            )
    drafts = [d for d in drafts if d.kwh_year > 0 and math.isfinite(d.kwh_year)]
    one_currency = len({d.currency for d in drafts}) <= 1
    drafts.sort(
        key=lambda d: (
            -(d.money_year if one_currency else d.kwh_year),
            -d.kwh_year,
            KINDS.index(d.kind),
            d.unit.device_id,
        )
    )
    return tuple(
        Recommendation(
            rank=i + 1,
            kind=d.kind,
            site_id=d.unit.site_id,
            device_ids=(d.unit.device_id,),
            device_names=(d.unit.name,),
            action=d.action,
            saving_kwh_per_year=float(d.kwh_year),
            saving_per_year=float(d.money_year),
            currency=d.currency,
            basis=d.basis
            + ("" if one_currency else "; ranked by kWh: the sites' currencies differ"),
            work_order_id=d.work_order_id,
            work_order_number=d.work_order_number,
        )
        for i, d in enumerate(drafts[: settings.top_n])
    )


def _inspect(
    u: UnitEfficiency, per_rt: MetricComparison, cop: MetricComparison
) -> tuple[float, str] | None:
    if (
        per_rt.outlier
        and per_rt.worse
        and per_rt.value is not None
        and per_rt.median is not None
        and u.runtime_h
    ):
        kwh = (per_rt.value - per_rt.median) * u.runtime_h
        kwh_year = kwh * _per_year(u.runtime_data_hours)
        return kwh_year, (
            f"{per_rt.value:.2f} kWh per runtime hour against the like units' median "
            f"{per_rt.median:.2f} ({per_rt.deviation_percent or 0.0:+.0f} %), over "
            f"{u.runtime_h:.0f} runtime hours, annualised"
        )
    if cop.outlier and cop.worse and cop.value is not None and cop.median:
        share = 1.0 - cop.value / cop.median
        kwh_year = u.kwh * share * _per_year(u.kwh_hours)
        return kwh_year, (
            f"estimated COP {cop.value:.2f} against the like units' median {cop.median:.2f} "
            f"({cop.deviation_percent or 0.0:+.0f} %): at the median it would use {share:.0%} "
            f"less of its {u.kwh:.0f} kWh, annualised"
        )
    return None
