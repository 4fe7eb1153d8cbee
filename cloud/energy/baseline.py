"""Weather-normalised baselines and avoided energy use: CalTRACK through LF Energy's eemeter.

The models are eemeter's (OpenEEmeter 4.1), not re-derived here; this module prepares
their input, checks their output against ASHRAE Guideline 14 and computes the savings
uncertainty. eemeter needs pandas < 3 (4.1.1 fails with pandas 3) and is imported on
first use, not with this module.

Input
    Hourly kWh of one device (:class:`~cloud.energy.counters.CounterSeries`, or
    :class:`HourlyValues`: hour starts in epoch seconds and kWh, NaN where missing) and
    hourly outdoor temperature in °C (:class:`HourlyValues`) from the site's sensors
    (:func:`hourly_temperature` averages irregular ``ambient_temp`` readings per hour) or
    a weather file (:func:`read_weather_csv`). Both are placed on the hours of the kWh
    series in the site's time zone; eemeter wants °F, and gets it.

Daily model (``granularity="daily"``)
    eemeter's ``DailyModel`` with its default settings: heating and cooling degree-day
    change-point models (smoothed where that fits better), split by season and weekday /
    weekend where that pays for itself. Days are local calendar days. The hours are
    summed into days here, because eemeter 4.1.1 drops missing hours before its own
    roll-up and so under-counts a day with gaps; the rule is CalTRACK's (2.2.2.1): a day
    with more than half its hours is scaled up to a whole day, a day with fewer is
    missing. Temperature goes in hourly so that eemeter applies its own per-day
    temperature coverage rule.

Hourly model (``granularity="hourly"``)
    eemeter's ``HourlyCaltrackModel``: the CalTRACK hourly method (time of week and
    temperature with occupancy, fitted per month on three-month weighted windows).
    eemeter 4.1.1's newer ``HourlyModel`` is not used: its clustering calls a
    scikit-learn API removed in scikit-learn 1.6. Whether the data is sufficient is
    decided by eemeter 4's hourly criteria (``HourlyBaselineData``), the same rules as
    the daily model's plus monthly meter coverage: 329 to 365 days, at least 90 % of
    days with data, no month with more than 10 % of its meter or temperature data
    missing, no negative values.

``granularity="auto"``: hourly when the hourly criteria are met, otherwise daily (the
reason hourly was not used is in :attr:`Baseline.notes`). Data that does not qualify
gives an :class:`InsufficientData` naming eemeter's disqualifications, not an exception
(malformed input raises :class:`~cloud.errors.InvalidInput`).

Zero readings are kept (the data goes to eemeter as ``is_electricity_data=False``): an
appliance that draws nothing for an hour or a day really drew nothing, whereas
CalTRACK's rule that treats zero as missing is meant for whole-building meters. That
setting also makes eemeter disqualify negative values.

Fit quality (ASHRAE Guideline 14)
    Over the baseline's points with both a reading and a prediction, with ``y`` measured,
    ``ŷ`` predicted and ``ȳ`` the mean of ``y``::

        CV(RMSE) = sqrt(Σ(y − ŷ)² / (n − p)) / ȳ
        NMBE     = Σ(y − ŷ) / ((n − p) · ȳ)          (positive: the model under-predicts)

    At the model's granularity, ``p`` is the number of fitted parameters (for the hourly
    model, summed over its monthly segments); for the monthly totals ``p = 1`` (the
    model was not fitted to them). A local calendar month counts when the points cover
    more than half of it. The limits applied: hourly points CV(RMSE) ≤ 30 % and |NMBE| ≤
    10 %, monthly totals ≤ 15 % and ≤ 5 %. Guideline 14 gives none for daily points, so
    a daily model's daily figures are reported without a verdict and the monthly ones
    decide.

Savings (:func:`savings`)
    The counterfactual is the baseline model's prediction under the reporting period's
    weather; avoided energy use = counterfactual − actual over the reporting points with
    both a reading and a prediction. Its uncertainty is Guideline 14's fractional savings
    uncertainty (ASHRAE Guideline 14-2014, Annex B, after Reddy & Claridge 2000)::

        ΔE_save / E_save = t · 1.26 · CV · sqrt((n / n') · (1 + 2 / n') / m) / F

    with ``CV`` the baseline's CV(RMSE) at its granularity, ``n`` its points, ``m`` the
    reporting points, ``F = E_save / E_counterfactual`` the savings fraction,
    ``n' = n (1 − ρ) / (1 + ρ)`` the effective number of points for residuals with
    lag-1 autocorrelation ``ρ`` (``n' = n`` when ``ρ ≤ 0``) and ``t`` Student's two-sided
    value for the confidence level with ``n − p`` degrees of freedom. In kWh this is
    ``ΔE_save = t · 1.26 · CV · E_counterfactual · sqrt((n / n') · (1 + 2 / n') / m)``;
    it is given at 68 % and 90 % confidence.

Prediction from a stored model (:func:`predict_daily`)
    A daily model kept as eemeter's JSON (``DailyModel.to_json()``) is read back with
    ``DailyModel.from_json`` and predicts local days (in the zone it was fitted in) from
    hourly temperature, as the reporting period of :func:`savings` is predicted; no fit.
    A day under way gets the mean temperature of its hours so far. The first prediction
    in a process imports eemeter and loads (or, with an empty numba cache, compiles) its
    model functions, which takes seconds; later ones are cheap (:func:`prediction_ready`
    says whether that was paid).

Warm-up
    eemeter's daily model is compiled by numba on its first fit in a process. Measured on
    a busy two-core machine: :func:`warm_up` takes about 40 s with an empty numba cache
    and about 3 s (plus 2 to 4 s of import) once numba's on-disk cache (next to eemeter's
    sources, or ``NUMBA_CACHE_DIR``) is filled; then a year's daily fit takes 2 to 16 s
    (more splits, longer) and an hourly fit about 10 s. Call :func:`warm_up` at service
    start-up (it runs once per process), and in the image build to fill the cache.

Side effects contained
    Importing eemeter sets scikit-learn's global configuration (``assume_finite``) and
    the ``OMP/MKL/OPENBLAS_NUM_THREADS`` variables; both are restored after the import.
    Calls into eemeter run one at a time (a lock), with BLAS limited to one thread (with
    more, a loaded machine spends minutes in thread contention on the hourly model's
    least squares), with the warnings they raise (numpy, statsmodels) logged at DEBUG
    instead of shown (warnings raised by other threads meanwhile are logged the same way)
    and with what eemeter logs at WARNING (its findings, which the results carry as
    :class:`Issue` s) logged at DEBUG by this module.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import importlib
import io
import json
import logging
import math
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from cloud.energy.counters import HOUR_S, CounterSeries
from cloud.energy.tariff import zone_of
from cloud.errors import InvalidInput

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

FSU_FACTOR: Final = 1.26
"""The empirical factor of Guideline 14's fractional savings uncertainty formula."""
CONFIDENCE_LEVELS: Final = (0.68, 0.90)
"""Confidence levels of :attr:`Savings.uncertainty`."""
PLAUSIBLE_C: Final = (-90.0, 60.0)
"""Outdoor temperatures outside this range (°C) are not weather."""
MIN_DAY_COVERAGE: Final = 0.5
"""A local day needs more than this share of its hours to count (CalTRACK 2.2.2.1)."""
_THREAD_ENV: Final = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Granularity(enum.StrEnum):
    """The points a model is fitted on (``DAILY``, ``HOURLY``) or a figure aggregates."""

    DAILY = "daily"
    HOURLY = "hourly"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class G14Limits:
    """ASHRAE Guideline 14's limits on a model's errors, as fractions."""

    cv_rmse: float
    nmbe: float
    """Limit on the absolute value."""


HOURLY_LIMITS: Final = G14Limits(cv_rmse=0.30, nmbe=0.10)
MONTHLY_LIMITS: Final = G14Limits(cv_rmse=0.15, nmbe=0.05)


@dataclass(frozen=True, slots=True)
class HourlyValues:
    """Values per hour: hour starts (epoch seconds, UTC, increasing) and a value each."""

    hours: I64
    values: F64
    """NaN where missing."""
    dropped: int = 0
    """Readings left out as implausible while building the series."""

    def __post_init__(self) -> None:
        hours = np.asarray(self.hours)
        values = np.asarray(self.values, dtype=np.float64)
        if hours.ndim != 1 or values.shape != hours.shape:
            raise InvalidInput(
                "hours", f"shapes {hours.shape} and {values.shape}: need two equal 1-D arrays"
            )
        whole = np.issubdtype(hours.dtype, np.integer) or (
            bool(np.all(np.isfinite(hours))) and bool(np.all(hours == np.round(hours)))
        )
        if not whole:
            raise InvalidInput("hours", "hour starts must be whole seconds")
        hours = hours.astype(np.int64)
        if np.any(hours % HOUR_S):
            bad = int(hours[hours % HOUR_S != 0][0])
            raise InvalidInput("hours", f"{bad} is not the start of an hour")
        if np.any(np.diff(hours) <= 0):
            raise InvalidInput("hours", "hour starts must increase")
        object.__setattr__(self, "hours", hours)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_counter(cls, series: CounterSeries) -> HourlyValues:
        """The kWh of a counter series (NaN in its MISSING hours)."""
        return cls(series.hours, series.kwh)


@dataclass(frozen=True, slots=True)
class Issue:
    """One of eemeter's warnings or disqualifications (or one of ours, ``edgewatch.*``)."""

    name: str
    """eemeter's qualified name (``eemeter.sufficiency_criteria.no_data``, ...)."""
    description: str
    data: Any = None

    def __str__(self) -> str:
        return f"{self.name}: {self.description}"


@dataclass(frozen=True, slots=True)
class FitStats:
    """CV(RMSE) and NMBE of a model over its baseline, at one granularity."""

    granularity: Granularity
    n: int
    p: int
    """Parameters subtracted from ``n`` (see the module docstring)."""
    cv_rmse: float
    nmbe: float
    limits: G14Limits | None
    """Guideline 14's limits for this granularity; ``None`` for daily points (it has none)."""

    @property
    def passes(self) -> bool | None:
        """Whether both figures are within :attr:`limits`; ``None`` without limits."""
        if self.limits is None:
            return None
        return self.cv_rmse <= self.limits.cv_rmse and abs(self.nmbe) <= self.limits.nmbe

    def __str__(self) -> str:
        text = (
            f"{self.granularity.value} CV(RMSE) {self.cv_rmse:.1%}, NMBE {self.nmbe:+.2%}"
            f" (n={self.n}, p={self.p})"
        )
        if self.limits is None:
            return text + ", no Guideline 14 limits at this granularity"
        verdict = "passes" if self.passes else "fails"
        return (
            f"{text} {verdict} Guideline 14's ≤ {self.limits.cv_rmse:.0%} / ±{self.limits.nmbe:.0%}"
        )


@dataclass(frozen=True, slots=True)
class DailySplit:
    """One sub-model of a daily model, in °C and kWh per day."""

    name: str
    """eemeter's key: day type (``fw`` every day, ``wd`` weekdays, ``we`` weekends) and
    seasons (``su`` summer, ``sh`` shoulder, ``wi`` winter), e.g. ``fw-su_sh_wi``."""
    model_type: str
    """eemeter's: ``tidd``, ``hdd_tidd``, ``tidd_cdd``, ``hdd_tidd_cdd``, ``..._smooth``."""
    intercept_kwh: float
    heating_balance_c: float | None
    heating_kwh_per_degree_day: float | None
    """kWh per °C-day below the heating balance point."""
    cooling_balance_c: float | None
    cooling_kwh_per_degree_day: float | None
    """kWh per °C-day above the cooling balance point."""
    smooth: bool
    parameters: int


@dataclass(frozen=True)
class Baseline:
    """A fitted baseline and how well it fits."""

    kind: Granularity
    """DAILY or HOURLY."""
    model: Any
    """The fitted eemeter model (``DailyModel`` or ``HourlyCaltrackModel``); its
    ``to_json()`` serialises it."""
    timezone: str
    fit: FitStats
    """At the model's granularity."""
    monthly: FitStats
    """Over local calendar months."""
    autocorrelation: float
    """Lag-1 autocorrelation of the residuals at the model's granularity."""
    n_effective: float
    """``n'`` of the savings uncertainty."""
    days: int
    """Days with a reading and a temperature (for an hourly model: with any such hour)."""
    hours: int
    """Hours with a reading and a temperature."""
    start: int
    """First and last hour (epoch seconds) of the kWh series fitted on."""
    end: int
    splits: tuple[DailySplit, ...]
    """The daily model's sub-models; empty for an hourly model."""
    warnings: tuple[Issue, ...]
    disqualification: tuple[Issue, ...]
    """Set by eemeter after the fit (CV(RMSE) above 100 %): :func:`savings` refuses it."""
    notes: tuple[str, ...] = ()

    @property
    def passes_g14(self) -> bool:
        """Whether every figure that has Guideline 14 limits is within them."""
        verdicts = [s.passes for s in (self.fit, self.monthly) if s.passes is not None]
        return bool(verdicts) and all(verdicts)

    def summary(self) -> str:
        """One line per figure, with the limits that applied."""
        return f"{self.kind.value} model; {self.fit}; {self.monthly}"


@dataclass(frozen=True)
class InsufficientData:
    """No baseline: the data does not meet eemeter's sufficiency criteria."""

    kind: Granularity
    """The model that was asked for (DAILY for ``auto`` when neither fits)."""
    reasons: tuple[Issue, ...]
    warnings: tuple[Issue, ...]
    days: int
    hours: int
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        why = "; ".join(str(r) for r in self.reasons)
        return f"not enough data for a {self.kind.value} CalTRACK baseline: {why}"


@dataclass(frozen=True, slots=True)
class SavingsUncertainty:
    """Guideline 14's savings uncertainty at one confidence level."""

    confidence: float
    t: float
    kwh: float
    """± kWh around :attr:`Savings.avoided_kwh`."""
    percent_of_savings: float | None
    """The fractional savings uncertainty in %; ``None`` when nothing was saved."""
    percent_points: float
    """± percentage points around :attr:`Savings.avoided_percent`."""


@dataclass(frozen=True)
class Savings:
    """Avoided energy use over a reporting period, with its uncertainty."""

    kind: Granularity
    counterfactual_kwh: float
    """What the baseline predicts under the reporting period's weather (points used)."""
    actual_kwh: float
    avoided_kwh: float
    """counterfactual − actual; positive when less was used."""
    avoided_percent: float
    """Of the counterfactual."""
    points: int
    """Reporting days or hours with a reading and a prediction (``m``)."""
    skipped: int
    """Reporting days or hours without one of them."""
    uncertainty: tuple[SavingsUncertainty, ...]
    """At :data:`CONFIDENCE_LEVELS`."""
    starts: I64
    """Start of every reporting day or hour (epoch seconds)."""
    predicted: F64
    observed: F64
    warnings: tuple[Issue, ...]
    disqualification: tuple[Issue, ...]
    """eemeter's findings on the reporting data (the figures are computed regardless)."""

    def at(self, confidence: float) -> SavingsUncertainty:
        for u in self.uncertainty:
            if math.isclose(u.confidence, confidence):
                return u
        raise KeyError(f"no uncertainty at {confidence}; have {CONFIDENCE_LEVELS}")


@dataclass(frozen=True, slots=True)
class WarmUp:
    """What :func:`warm_up` took, in seconds."""

    import_s: float
    first_fit_s: float


# -- eemeter, imported once, called one at a time -----------------------------------------

_LOCK = threading.RLock()
_eemeter_module: Any = None
_import_s = 0.0
_warm: WarmUp | None = None


class _EemeterLogToDebug(logging.Filter):
    """eemeter logs each finding at WARNING (twice per fit); the results carry them as
    :class:`Issue` s, so here they are logged at DEBUG instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        log.debug("eemeter: %s", record.getMessage())
        return False


_EEMETER_LOG = logging.getLogger("eemeter")
_TO_DEBUG = _EemeterLogToDebug()


@contextlib.contextmanager
def _eemeter_calls() -> Iterator[None]:
    """Serialise a call into eemeter; one BLAS thread; its warnings and log at DEBUG."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    caught: list[warnings.WarningMessage] = []
    with _LOCK:
        _EEMETER_LOG.addFilter(_TO_DEBUG)
        try:
            with (
                warnings.catch_warnings(record=True) as record,
                np.errstate(all="ignore"),
                threadpool_limits(limits=1),
            ):
                warnings.simplefilter("always")
                try:
                    yield
                finally:
                    caught = list(record)
        finally:
            _EEMETER_LOG.removeFilter(_TO_DEBUG)
            counts = Counter(f"{w.category.__name__}: {w.message}" for w in caught)
            for message, count in counts.items():
                log.debug("eemeter raised %s (%d times)", message, count)


def _eemeter() -> Any:
    """The ``eemeter.eemeter`` module, imported on first use with its side effects undone."""
    global _eemeter_module, _import_s
    with _LOCK:
        if _eemeter_module is None:
            began = time.perf_counter()
            import sklearn

            saved = {name: os.environ.get(name) for name in _THREAD_ENV}
            try:
                with sklearn.config_context(), _eemeter_calls():
                    _eemeter_module = importlib.import_module("eemeter.eemeter")
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            _import_s = time.perf_counter() - began
        return _eemeter_module


def warm_up() -> WarmUp:
    """Import eemeter and fit a small synthetic daily model once per process, so that numba
    compiles (or loads from its cache) eemeter's daily model before a real fit needs it.
    Later calls return the first one's timings."""
    global _warm
    with _LOCK:
        if _warm is None:
            em = _eemeter()
            began = time.perf_counter()
            # 40 days from -3 to 33 °C, heating and cooling: every base model is tried (few
            # days keep the split search, and so the fit, short).
            days = np.arange(40)
            celsius = -3.0 + 36.0 * days / 39.0
            kwh = 20.0 + 2.0 * np.maximum(celsius - 18.0, 0) + 1.5 * np.maximum(12.0 - celsius, 0)
            index = pd.date_range("2025-01-01", periods=days.size, freq="D", tz="Europe/Paris")
            frame = pd.DataFrame(
                {"observed": kwh + 0.3 * np.sin(1.7 * days), "temperature": celsius * 1.8 + 32},
                index=index,
            )
            with _eemeter_calls():
                data = em.DailyBaselineData(frame, is_electricity_data=False)
                em.DailyModel().fit(data, ignore_disqualification=True)
            _warm = WarmUp(import_s=_import_s, first_fit_s=time.perf_counter() - began)
            log.info(
                "eemeter warmed up: import %.1f s, first fit %.1f s",
                _warm.import_s,
                _warm.first_fit_s,
            )
        return _warm


# -- temperature input ---------------------------------------------------------------------


def hourly_temperature(
    t: npt.ArrayLike,
    celsius: npt.ArrayLike,
    *,
    start: float | None = None,
    end: float | None = None,
) -> HourlyValues:
    """Irregular temperature readings (epoch seconds, °C) → the mean of each hour's readings.

    Hours ``[start, end)`` (rounded out to whole hours; default: the readings' span);
    an hour without readings is NaN. Missing readings (NaN) are ignored; readings outside
    :data:`PLAUSIBLE_C` are dropped and counted in :attr:`HourlyValues.dropped`."""
    times = np.asarray(t, dtype=np.float64)
    values = np.asarray(celsius, dtype=np.float64)
    if times.ndim != 1 or values.shape != times.shape:
        raise InvalidInput("t", f"shapes {times.shape} and {values.shape}: need equal 1-D arrays")
    if not np.all(np.isfinite(times)):
        raise InvalidInput("t", "times must be finite epoch seconds")
    for what, value in (("start", start), ("end", end)):
        if value is not None and not math.isfinite(value):
            raise InvalidInput(what, f"{value!r} is not a time")
    present = np.isfinite(values)
    plausible = present & (values >= PLAUSIBLE_C[0]) & (values <= PLAUSIBLE_C[1])
    dropped = int(np.count_nonzero(present & ~plausible))
    hour = np.floor(times / HOUR_S).astype(np.int64)
    if start is not None:
        first = math.floor(start / HOUR_S)
    elif times.size:
        first = int(hour.min())
    else:
        return HourlyValues(np.zeros(0, np.int64), np.zeros(0), dropped)
    stop = -math.floor(-end / HOUR_S) if end is not None else int(hour.max()) + 1
    if stop < first:
        raise InvalidInput("end", "the period ends before it starts")
    keep = plausible & (hour >= first) & (hour < stop)
    index = hour[keep] - first
    sums = np.bincount(index, weights=values[keep], minlength=stop - first)
    counts = np.bincount(index, minlength=stop - first)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    hours = np.arange(first, stop, dtype=np.int64) * HOUR_S
    return HourlyValues(hours, means.astype(np.float64), dropped)


def _parse_time(cell: str) -> float | str:
    """Epoch seconds, or why the cell is not a time."""
    try:
        number = float(cell)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else f"time {cell!r} is not finite"
    try:
        moment = datetime.fromisoformat(cell)
    except ValueError:
        return f"time {cell!r} is neither ISO-8601 nor epoch seconds"
    if moment.tzinfo is None:
        return f"time {cell!r} has no UTC offset (add Z or ±hh:mm)"
    return moment.timestamp()


def read_weather_csv(path: str | Path, *, unit: Literal["C", "F"] | None = None) -> HourlyValues:
    """Outdoor temperature from a CSV file, as hourly means in °C.

    A header row names the columns (case and surrounding spaces ignored; others are
    ignored): ``time``, ISO-8601 with a UTC offset (``2025-01-01T00:00:00Z``) or epoch
    seconds; and the temperature, in a column that states its unit, ``temperature_c`` or
    ``temperature_f``, or ``temperature`` with ``unit`` given. An empty temperature cell
    is a missing reading; anything else that is not a number, or not plausible
    (:data:`PLAUSIBLE_C`), is an error naming the file and line
    (:class:`~cloud.errors.InvalidInput`, ``where`` = ``path:line``). Readings at any
    interval are averaged per hour (:func:`hourly_temperature`)."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInput(where, f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InvalidInput(where, "is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise InvalidInput(where, "is empty; expected a header: time,temperature_c")
    columns = [c.strip().lower() for c in header]
    if "time" not in columns:
        raise InvalidInput(f"{where}:1", f"no 'time' column (the header names {columns})")
    named = [c for c in ("temperature_c", "temperature_f", "temperature") if c in columns]
    if not named:
        raise InvalidInput(
            f"{where}:1", f"no temperature_c or temperature_f column (the header names {columns})"
        )
    if len(named) > 1:
        raise InvalidInput(f"{where}:1", f"more than one temperature column: {named}")
    column = named[0]
    stated = {"temperature_c": "C", "temperature_f": "F"}.get(column)
    if stated is None and unit is None:
        raise InvalidInput(
            f"{where}:1",
            "column 'temperature' does not state its unit: name it temperature_c or"
            " temperature_f, or pass unit='C' or unit='F'",
        )
    if stated is not None and unit is not None and unit != stated:
        raise InvalidInput(f"{where}:1", f"column {column!r} is in °{stated}, not °{unit}")
    fahrenheit = (stated or unit) == "F"
    t_col, v_col = columns.index("time"), columns.index(column)
    times: list[float] = []
    celsius: list[float] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row] + [""] * (len(columns) - len(row))
        moment = _parse_time(cells[t_col])
        if isinstance(moment, str):
            raise InvalidInput(f"{where}:{line}", moment)
        if not cells[v_col]:
            continue
        try:
            value = float(cells[v_col])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InvalidInput(f"{where}:{line}", f"{column} {cells[v_col]!r} is not a number")
        value_c = (value - 32.0) / 1.8 if fahrenheit else value
        if not PLAUSIBLE_C[0] <= value_c <= PLAUSIBLE_C[1]:
            raise InvalidInput(
                f"{where}:{line}",
                f"{column} {cells[v_col]} is {value_c:.1f} °C, outside"
                f" {PLAUSIBLE_C[0]:.0f}..{PLAUSIBLE_C[1]:.0f} °C",
            )
        times.append(moment)
        celsius.append(value_c)
    if not times:
        raise InvalidInput(where, "has no temperature readings")
    return hourly_temperature(np.array(times), np.array(celsius))


# -- fitting -------------------------------------------------------------------------------


def _as_hourly(series: CounterSeries | HourlyValues, what: str) -> HourlyValues:
    if isinstance(series, CounterSeries):
        return HourlyValues.from_counter(series)
    if isinstance(series, HourlyValues):
        return series
    raise InvalidInput(what, f"expected HourlyValues or CounterSeries, got {type(series).__name__}")


def _on(hours: I64, series: HourlyValues) -> F64:
    """``series`` on the consecutive ``hours`` (NaN where it has no value)."""
    out = np.full(hours.size, np.nan)
    if hours.size == 0 or series.hours.size == 0:
        return out
    pos = (series.hours - hours[0]) // HOUR_S
    inside = (pos >= 0) & (pos < hours.size)
    out[pos[inside]] = series.values[inside]
    return out


def _frame(kwh: HourlyValues, temp: HourlyValues, timezone: str) -> Any:
    """The kWh series' hours in local time: ``observed`` (kWh) and ``temperature`` (°F)."""
    zone_of(timezone)
    if kwh.hours.size == 0:
        raise InvalidInput("kwh", "has no hours")
    hours = np.arange(kwh.hours[0], kwh.hours[-1] + HOUR_S, HOUR_S, dtype=np.int64)
    index = pd.DatetimeIndex(pd.to_datetime(hours, unit="s", utc=True)).tz_convert(timezone)
    return pd.DataFrame(
        {"observed": _on(hours, kwh), "temperature": _on(hours, temp) * 1.8 + 32.0},
        index=index,
    )


def _daily_kwh(frame: Any) -> Any:
    """Local calendar days' kWh: a day with more than :data:`MIN_DAY_COVERAGE` of its hours
    is scaled up to the whole day, any other day is NaN."""
    wall = frame.index.tz_localize(None).normalize()
    observed = frame["observed"]
    sums = observed.groupby(wall).sum(min_count=1)
    counts = observed.notna().groupby(wall).sum()
    days = sums.index
    first_choice = np.ones(len(days), dtype=bool)
    starts = days.tz_localize(frame.index.tz, ambiguous=first_choice, nonexistent="shift_forward")
    ends = (days + pd.Timedelta(days=1)).tz_localize(
        frame.index.tz, ambiguous=first_choice, nonexistent="shift_forward"
    )
    length_h = np.asarray((ends - starts) / pd.Timedelta(hours=1), dtype=np.float64)
    coverage = np.asarray(counts, dtype=np.float64) / length_h
    values = np.asarray(sums, dtype=np.float64)
    scaled = np.where(coverage > MIN_DAY_COVERAGE, values / np.maximum(coverage, 1e-12), np.nan)
    return pd.Series(scaled, index=starts, name="observed")


def _issues(items: Sequence[Any]) -> tuple[Issue, ...]:
    return tuple(Issue(str(w.qualified_name), str(w.description), w.data) for w in items)


def _stats(
    observed: F64, predicted: F64, p: int, granularity: Granularity, limits: G14Limits | None
) -> FitStats:
    n = int(observed.size)
    mean = float(observed.mean()) if n else math.nan
    dof = n - p
    if dof <= 0 or not mean > 0:
        return FitStats(granularity, n, p, math.nan, math.nan, limits)
    resid = observed - predicted
    cv = math.sqrt(float(np.sum(resid**2)) / dof) / mean
    nmbe = float(np.sum(resid)) / (dof * mean)
    return FitStats(granularity, n, p, cv, nmbe, limits)


def _lag1(resid: F64) -> float:
    """Lag-1 autocorrelation of a regular series with NaN gaps (pairs with both present)."""
    present = np.isfinite(resid)
    if present.sum() < 3:
        return 0.0
    d = resid - np.nanmean(resid)
    pairs = present[:-1] & present[1:]
    if not pairs.any():
        return 0.0
    variance = float(np.nanmean(d[present] ** 2))
    if variance == 0.0:
        return 0.0
    return float(np.mean(d[:-1][pairs] * d[1:][pairs])) / variance


def _monthly(predicted: Any, kind: Granularity) -> FitStats:
    """Local calendar months' totals over the points with a reading and a prediction; a
    month counts when those points cover more than :data:`MIN_DAY_COVERAGE` of it."""
    both = predicted[["observed", "predicted"]].dropna()
    zone = both.index.tz
    months = both.index.tz_localize(None).to_period("M")
    totals = both.groupby(months).sum()
    counts = both.groupby(months).size()
    keep = []
    for period in totals.index:
        if kind is Granularity.DAILY:
            length = float(period.days_in_month)
        else:
            edges = pd.DatetimeIndex([period.start_time, (period + 1).start_time])
            local = edges.tz_localize(zone, ambiguous=np.ones(2, dtype=bool))
            length = (local[1] - local[0]) / pd.Timedelta(hours=1)
        keep.append(counts[period] > MIN_DAY_COVERAGE * length)
    totals = totals[np.array(keep, dtype=bool)]
    return _stats(
        totals["observed"].to_numpy(np.float64),
        totals["predicted"].to_numpy(np.float64),
        1,
        Granularity.MONTHLY,
        MONTHLY_LIMITS,
    )


def effective_points(n: int, rho: float) -> float:
    """``n' = n (1 − ρ) / (1 + ρ)``: the number of independent points that ``n`` points
    with lag-1 autocorrelation ``ρ`` are worth (``n`` when ``ρ ≤ 0``)."""
    if not -1.0 < rho < 1.0:
        raise InvalidInput("rho", f"{rho!r} is not an autocorrelation in (-1, 1)")
    return n * (1.0 - rho) / (1.0 + rho) if rho > 0 else float(n)


def savings_uncertainty(
    *,
    cv_rmse: float,
    n: int,
    p: int,
    n_effective: float,
    m: int,
    counterfactual_kwh: float,
    avoided_kwh: float,
    confidence: float,
) -> SavingsUncertainty:
    """Guideline 14's savings uncertainty (Annex B; the formula is in the module docstring)
    of ``avoided_kwh`` over ``m`` reporting points, for a baseline of ``n`` points, ``p``
    parameters, CV(RMSE) ``cv_rmse`` and ``n_effective`` (:func:`effective_points`)."""
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise InvalidInput("confidence", f"{confidence!r} is not in (0, 1)")
    if m < 1 or n < 1 or not n_effective > 0:
        raise InvalidInput("m", f"need points: n={n}, n'={n_effective}, m={m}")
    t = float(stats.t.ppf(0.5 + confidence / 2.0, max(n - p, 1)))
    spread = math.sqrt((n / n_effective) * (1.0 + 2.0 / n_effective) / m)
    kwh = t * FSU_FACTOR * cv_rmse * counterfactual_kwh * spread
    return SavingsUncertainty(
        confidence=confidence,
        t=t,
        kwh=kwh,
        percent_of_savings=100.0 * kwh / abs(avoided_kwh) if avoided_kwh else None,
        percent_points=100.0 * kwh / counterfactual_kwh if counterfactual_kwh else math.nan,
    )


def _result(
    kind: Granularity,
    model: Any,
    predicted: Any,
    p: int,
    frame: Any,
    timezone: str,
    splits: tuple[DailySplit, ...],
    warned: tuple[Issue, ...],
    disqualified: tuple[Issue, ...],
    notes: tuple[str, ...],
) -> Baseline:
    both = predicted[["observed", "predicted"]].dropna()
    observed = both["observed"].to_numpy(np.float64)
    fit = _stats(
        observed,
        both["predicted"].to_numpy(np.float64),
        p,
        kind,
        HOURLY_LIMITS if kind is Granularity.HOURLY else None,
    )
    rho = _lag1((predicted["observed"] - predicted["predicted"]).to_numpy(np.float64))
    n_eff = effective_points(fit.n, rho)
    valid_hours = frame["observed"].notna() & frame["temperature"].notna()
    days = (
        fit.n
        if kind is Granularity.DAILY
        else int(both.index.tz_localize(None).normalize().nunique())
    )
    return Baseline(
        kind=kind,
        model=model,
        timezone=timezone,
        fit=fit,
        monthly=_monthly(predicted, kind),
        autocorrelation=rho,
        n_effective=n_eff,
        days=days,
        hours=int(valid_hours.sum()),
        start=int(frame.index[0].timestamp()),
        end=int(frame.index[-1].timestamp()),
        splits=splits,
        warnings=warned,
        disqualification=disqualified,
        notes=notes,
    )


_COEFFICIENTS: Final = ("intercept", "hdd_bp", "hdd_beta", "hdd_k", "cdd_bp", "cdd_beta", "cdd_k")


def _splits(model: Any) -> tuple[DailySplit, ...]:
    out = []
    for name, sub in model.params.submodels.items():
        c = sub.coefficients

        def bp(value: float | None) -> float | None:
            return None if value is None else (float(value) - 32.0) / 1.8

        def slope(value: float | None) -> float | None:
            return None if value is None else float(value) * 1.8

        out.append(
            DailySplit(
                name=str(name),
                model_type=str(c.model_type.value),
                intercept_kwh=float(c.intercept),
                heating_balance_c=bp(c.hdd_bp),
                heating_kwh_per_degree_day=slope(c.hdd_beta),
                cooling_balance_c=bp(c.cdd_bp),
                cooling_kwh_per_degree_day=slope(c.cdd_beta),
                smooth=bool(c.is_smooth),
                parameters=sum(getattr(c, k) is not None for k in _COEFFICIENTS),
            )
        )
    return tuple(out)


def _fit_daily(
    em: Any, frame: Any, timezone: str, notes: tuple[str, ...]
) -> Baseline | InsufficientData:
    daily = _daily_kwh(frame)
    data = em.DailyBaselineData.from_series(daily, frame["temperature"], is_electricity_data=False)
    if data.disqualification:
        return InsufficientData(
            kind=Granularity.DAILY,
            reasons=_issues(data.disqualification),
            warnings=_issues(data.warnings),
            days=int(daily.notna().sum()),
            hours=int((frame["observed"].notna() & frame["temperature"].notna()).sum()),
            notes=notes,
        )
    model = em.DailyModel().fit(data)
    predicted = model.predict(data, ignore_disqualification=True)
    splits = _splits(model)
    return _result(
        Granularity.DAILY,
        model,
        predicted,
        sum(s.parameters for s in splits),
        frame,
        timezone,
        splits,
        _issues(model.warnings),
        _issues(model.disqualification),
        notes,
    )


def _hourly_check(em: Any, frame: Any) -> tuple[tuple[Issue, ...], tuple[Issue, ...]]:
    """eemeter 4's hourly sufficiency criteria: (disqualifications, warnings)."""
    data = em.HourlyBaselineData(frame[["observed", "temperature"]].copy(), False)
    return _issues(data.disqualification), _issues(data.warnings)


def _fit_hourly(
    em: Any, frame: Any, timezone: str, warned: tuple[Issue, ...], notes: tuple[str, ...]
) -> Baseline:
    data = em.HourlyCaltrackBaselineData(frame[["observed", "temperature"]].copy(), False)
    model = em.HourlyCaltrackModel().fit(data)
    predicted = model.predict(data)
    segments = model.model.model.segment_models
    p = sum(len(s.model_params or {}) for s in segments)
    return _result(
        Granularity.HOURLY,
        model,
        predicted,
        p,
        frame,
        timezone,
        (),
        warned + _issues(model.model.warnings),
        (),
        notes,
    )


def fit_baseline(
    kwh: CounterSeries | HourlyValues,
    temp: HourlyValues,
    *,
    granularity: Literal["daily", "hourly", "auto"] = "daily",
    timezone: str = "UTC",
) -> Baseline | InsufficientData:
    """Fit a CalTRACK baseline with eemeter to a device's hourly kWh and the outdoor
    temperature (°C).

    ``kwh``'s hours are the baseline period: CalTRACK's baseline is the 12 months before
    the change being measured (329 to 365 days). ``timezone`` is the site's (days, months
    and hour of week are local). ``granularity``: see the module docstring. Returns an
    :class:`InsufficientData` with eemeter's reasons when the data does not qualify;
    raises :class:`~cloud.errors.InvalidInput` for malformed input."""
    if granularity not in ("daily", "hourly", "auto"):
        raise InvalidInput("granularity", f"{granularity!r} is not daily, hourly or auto")
    frame = _frame(_as_hourly(kwh, "kwh"), _as_hourly(temp, "temp"), timezone)
    both = frame["observed"].notna() & frame["temperature"].notna()
    if not both.any():
        kind = Granularity.HOURLY if granularity == "hourly" else Granularity.DAILY
        reason = Issue(
            "edgewatch.baseline.no_overlap", "no hour has both a kWh figure and a temperature"
        )
        return InsufficientData(kind, (reason,), (), 0, 0)
    em = _eemeter()
    with _eemeter_calls():
        notes: tuple[str, ...] = ()
        if granularity in ("hourly", "auto"):
            reasons, warned = _hourly_check(em, frame)
            if not reasons:
                return _fit_hourly(em, frame, timezone, warned, notes)
            if granularity == "hourly":
                days = int(frame.index[both].tz_localize(None).normalize().nunique())
                return InsufficientData(Granularity.HOURLY, reasons, warned, days, int(both.sum()))
            notes = ("hourly model not used: " + "; ".join(str(r) for r in reasons),)
        return _fit_daily(em, frame, timezone, notes)


# -- savings -------------------------------------------------------------------------------


def savings(
    baseline: Baseline,
    kwh_report: CounterSeries | HourlyValues,
    temp_report: HourlyValues,
) -> Savings:
    """Avoided energy use over the reporting period (the hours of ``kwh_report``) and its
    uncertainty (Guideline 14's fractional savings uncertainty; formula in the module
    docstring). Raises :class:`~cloud.errors.InvalidInput` for a baseline eemeter
    disqualified or a period without a point that has both a reading and a prediction."""
    if baseline.disqualification:
        why = "; ".join(str(i) for i in baseline.disqualification)
        raise InvalidInput("baseline", f"eemeter disqualified the model: {why}")
    frame = _frame(_as_hourly(kwh_report, "kwh_report"), temp_report, baseline.timezone)
    if not (frame["observed"].notna() & frame["temperature"].notna()).any():
        raise InvalidInput("kwh_report", "no hour has both a kWh figure and a temperature")
    em = _eemeter()
    with _eemeter_calls():
        if baseline.kind is Granularity.DAILY:
            data = em.DailyReportingData.from_series(
                _daily_kwh(frame), frame["temperature"], is_electricity_data=False
            )
        else:
            data = em.HourlyCaltrackReportingData(frame[["observed", "temperature"]].copy(), False)
        predicted = baseline.model.predict(data)
    observed = predicted["observed"].to_numpy(np.float64)
    expected = predicted["predicted"].to_numpy(np.float64)
    used = np.isfinite(observed) & np.isfinite(expected)
    m = int(used.sum())
    if m == 0:
        raise InvalidInput("kwh_report", "no reporting period has both a reading and a prediction")
    counterfactual = float(expected[used].sum())
    actual = float(observed[used].sum())
    avoided = counterfactual - actual
    return Savings(
        kind=baseline.kind,
        counterfactual_kwh=counterfactual,
        actual_kwh=actual,
        avoided_kwh=avoided,
        avoided_percent=100.0 * avoided / counterfactual if counterfactual else math.nan,
        points=m,
        skipped=int(used.size - m),
        uncertainty=tuple(
            savings_uncertainty(
                cv_rmse=baseline.fit.cv_rmse,
                n=baseline.fit.n,
                p=baseline.fit.p,
                n_effective=baseline.n_effective,
                m=m,
                counterfactual_kwh=counterfactual,
                avoided_kwh=avoided,
                confidence=c,
            )
            for c in CONFIDENCE_LEVELS
        ),
        starts=np.array([int(ts.timestamp()) for ts in predicted.index], dtype=np.int64),
        predicted=expected,
        observed=observed,
        warnings=_issues(getattr(data, "warnings", [])),
        disqualification=_issues(getattr(data, "disqualification", [])),
    )


# -- prediction from a stored model ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DailyPrediction:
    """A daily model's expected kWh on local calendar days."""

    dates: tuple[str, ...]
    """The local days (``YYYY-MM-DD``)."""
    starts: I64
    """Each day's local midnight, epoch seconds (the next day's start ends it)."""
    ends: I64
    kwh: F64
    """Expected kWh of the whole day; NaN where the day has no outdoor temperature."""

    def over(self, start: float, end: float) -> tuple[float, float]:
        """The expected kWh of ``[start, end)``, each day counted in proportion to the
        part of it inside (so a day under way counts for the share of it that has passed),
        over the days that have a prediction; and the share of ``[start, end)`` those days
        cover (1.0 when every day in it has one, 0.0 for an empty period)."""
        overlap = np.clip(np.minimum(self.ends, end) - np.maximum(self.starts, start), 0, None)
        length = (self.ends - self.starts).astype(np.float64)
        known = np.isfinite(self.kwh)
        total = float(overlap.sum())
        if total <= 0:
            return 0.0, 0.0
        kwh = float(np.sum(self.kwh[known] * overlap[known] / length[known]))
        return kwh, float(overlap[known].sum()) / total


def _local_days(start: float, end: float, timezone: str) -> tuple[list[str], I64, I64]:
    """The local calendar days that ``[start, end)`` touches: dates, starts and ends."""
    zone = zone_of(timezone)
    first = datetime.fromtimestamp(start, zone).date()
    last = datetime.fromtimestamp(max(end - 1e-6, start), zone).date()
    walls = pd.date_range(first, last + pd.Timedelta(days=1), freq="D")
    first_choice = np.ones(len(walls), dtype=bool)
    edges = walls.tz_localize(timezone, ambiguous=first_choice, nonexistent="shift_forward")
    seconds = np.array([int(ts.timestamp()) for ts in edges], dtype=np.int64)
    dates = [w.date().isoformat() for w in walls[:-1]]
    return dates, seconds[:-1], seconds[1:]


_predicted = False
"""Whether :func:`predict_daily` has run eemeter in this process (its code is loaded)."""


def prediction_ready() -> bool:
    """Whether eemeter is imported and its daily prediction loaded in this process (a
    :func:`predict_daily` call has run it), so the next prediction pays no start-up cost."""
    return _predicted


def _lock(wait_s: float | None) -> None:
    if not _LOCK.acquire(timeout=-1 if wait_s is None else max(wait_s, 0.0)):
        raise TimeoutError(f"eemeter was busy (another fit or prediction) for {wait_s:g} s")


def model_timezone(model_json: str) -> str:
    """The time zone a stored daily model was fitted in (its local days)."""
    try:
        zone = json.loads(model_json)["info"]["baseline_timezone"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("model", f"is not eemeter's JSON of a daily model ({exc})") from None
    if not isinstance(zone, str):
        raise InvalidInput("model", f"baseline_timezone {zone!r} is not a time zone")
    zone_of(zone)
    return zone


def predict_daily(
    model_json: str,
    temp: HourlyValues,
    start: float,
    end: float,
    *,
    wait_s: float | None = None,
) -> DailyPrediction:
    """What a stored daily model (eemeter's ``DailyModel.to_json()``) expects on each local
    day (in the zone it was fitted in) that ``[start, end)`` touches, under the outdoor
    temperature ``temp`` (°C, hourly; hours at or after ``end`` are ignored).

    The days and their temperature go to eemeter as the report's reporting period does
    (``DailyReportingData`` from hourly °F, eemeter's own rule for days with missing
    hours); a day under way gets the mean of its hours so far. :meth:`DailyPrediction.over`
    adds the days up. No fit: eemeter's prediction evaluates the model's change-point
    functions (numba, loaded from its cache or compiled on the first call in a process).

    Raises :class:`~cloud.errors.InvalidInput` when the model cannot be read or eemeter
    refuses to predict with it, and :class:`TimeoutError` when ``wait_s`` is given and
    eemeter stays busy (a fit in another thread) that long."""
    global _predicted
    timezone = model_timezone(model_json)
    dates, starts, ends = _local_days(start, end, timezone)
    kwh = np.full(len(dates), np.nan)
    if temp.hours.size:
        hours = np.arange(starts[0], ends[-1], HOUR_S, dtype=np.int64)
        celsius = _on(hours, temp)
        celsius[hours >= end] = np.nan
    else:
        celsius = np.zeros(0)
    if not np.isfinite(celsius).any():
        return DailyPrediction(tuple(dates), starts, ends, kwh)
    index = pd.DatetimeIndex(pd.to_datetime(hours, unit="s", utc=True)).tz_convert(timezone)
    series = pd.Series(celsius * 1.8 + 32.0, index=index, name="temperature")
    _lock(wait_s)
    try:
        em = _eemeter()
        failures = (
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            RuntimeError,
            importlib.import_module("eemeter.eemeter.common.exceptions").EEMeterError,
        )
        with _eemeter_calls():
            try:
                model = em.DailyModel.from_json(model_json)
                data = em.DailyReportingData.from_series(None, series, tzinfo=index.tz)
                predicted = model.predict(data)
                _predicted = True
            except failures as exc:
                why = " ".join(str(exc).split())[:300]
                raise InvalidInput(
                    "model", f"eemeter could not predict with it: {type(exc).__name__}: {why}"
                ) from exc
    finally:
        _LOCK.release()
    by_date = {
        ts.date().isoformat(): float(v)
        for ts, v in zip(predicted.index, predicted["predicted"], strict=True)
    }
    for i, day in enumerate(dates):
        kwh[i] = by_date.get(day, math.nan)
    return DailyPrediction(tuple(dates), starts, ends, kwh)
