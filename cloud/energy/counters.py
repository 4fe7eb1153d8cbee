"""From a device's energy-counter readings to an hourly consumption series with provenance.

Input: the rows :meth:`cloud.tsdb.base.TimeSeriesStore.energy` returns for one device at
``interval_s=3600`` (:class:`~cloud.tsdb.base.EnergyInterval`: hour start, counter, the
counter's last reading in that hour). Only ``start`` and ``last`` are read; ``consumed``
is recomputed, because the store's rule is deliberately simpler than a report needs.

Attribution
    As in the store, the consumption of hour ``h`` is the last reading of ``h`` minus the
    last reading of the hour before: an hour is credited with what the counter advanced
    since the previous hour's last reading.

How :func:`hourly_consumption` differs from the store's rule (:func:`cloud.tsdb.base.consumed`)
    - a drop near the wrap value: the store counts the new reading; here
      ``wrap - before + after``;
    - any other drop: both count the new reading; here the hour is flagged RESET;
    - hours without a reading: the store gives ``None`` for them and for the hour after;
      here the advance across the gap is spread evenly over them, flagged ESTIMATED;
    - a gap longer than the limit: ``None`` in the store; MISSING here, not spread;
    - an implausible reading: the store counts it; here it is dropped and counted by reason.

    Without gaps, wraps or implausible readings the two agree hour for hour (a test checks
    it against :func:`cloud.tsdb.base.energy_intervals`).

Wrap or reset
    A reading lower than the one before is a *wrap* when the wrap-aware advance
    ``wrap - before + after`` is plausible (no more than the maximum power times the hours
    since the reading before), i.e. the counter was within that much of its wrap value;
    any other drop is a *reset* of the controller and the new reading counts as consumed
    since the reset (what was used between the reading before and the reset is unknown,
    so a RESET hour may be low). The wrap value of a counter comes from its register type
    and scale in the device profile (:func:`counter_spec`): ``2**bits * scale``, the
    counter's modulus (a uint32 counter in tenths of kWh reads 429,496,729.5 at most and
    0.0 one tenth later: modulus 429,496,729.6 kWh).

Gaps
    ``k`` hours without a reading, between a reading in hour ``a`` and the next one in hour
    ``b = a + k + 1``: the advance from the one to the other (wrap-aware, or the new
    reading after a reset) is spread evenly over the ``k + 1`` hours ``a+1 .. b`` (the
    empty hours and the hour whose reading closes the gap, whose own share cannot be told
    apart), flagged ESTIMATED, so totals are preserved. When ``k > max_gap_h`` (default
    7 days) nothing is spread: the ``k + 1`` hours are MISSING.

Implausible readings (dropped; :attr:`CounterSeries.rejected` counts them by reason)
    ``negative_reading``
        a reading below zero (or not finite); the hour joins a gap.
    ``above_max_power``
        the advance since the reading before exceeds ``max_kw`` × hours but the next
        reading is plausible again: a one-reading spike, dropped and bridged like a gap.
    ``counter_jump``
        the advance is implausible and the next reading does not return: the counter was
        set to a new value (a replaced controller, a preset). Nothing is credited for the
        hours up to it (MISSING) and it becomes the new base. An excursion of two or more
        readings is treated the same way.

    ``max_kw`` should be the device's rated power × :data:`RATED_POWER_MARGIN`
    (:func:`max_power_kw`); without a rating, a generous fleet-wide figure.

Output hours
    The hours of ``[start, end)`` (rounded out to whole hours); rows before ``start`` and
    after ``end`` are used as readings to bridge the period's edges, not reported. Without
    ``start``/``end`` the rows' own span is used. Hours before the first reading are
    MISSING (nothing to subtract from), like the store's first interval without a reading
    before it. ``kwh`` is NaN in MISSING hours.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud.errors import InvalidInput
from cloud.tsdb.base import ENERGY_COUNTER, EnergyInterval
from edge_agent.profiles import DataType, DeviceProfile, PointKind

HOUR_S: Final = 3600
DEFAULT_MAX_GAP_H: Final = 7 * 24
"""Longest run of hours without a reading that is still bridged (7 days)."""
RATED_POWER_MARGIN: Final = 1.5
""":func:`max_power_kw`: a device may draw this many times its rated power before its
readings count as implausible."""
DEFAULT_MAX_KW: Final = 1000.0
"""Maximum power when a device has no rating: large enough for any appliance EdgeWatch
monitors (a big chiller), so it only catches readings no appliance could produce."""

UNIT_TO_KWH: Final[Mapping[str, float]] = {"Wh": 0.001, "kWh": 1.0, "MWh": 1000.0}
"""Units an energy counter may be read in, and their factor to kWh."""

_UNSIGNED_BITS: Final[Mapping[DataType, int]] = {
    DataType.UINT16: 16,
    DataType.UINT32: 32,
    DataType.UINT64: 64,
}
_TOLERANCE: Final = 1e-9
"""Relative slack of the max-power check (float rounding of large counter values)."""


class HourFlag(enum.IntEnum):
    """Where an hour's figure comes from (values of :attr:`CounterSeries.flags`)."""

    MEASURED = 0
    """Readings at the end of this hour and the hour before."""
    RESET = 1
    """Measured from a controller reset: the new reading; may be low."""
    ESTIMATED = 2
    """A share of the advance across a gap (or across a dropped reading)."""
    MISSING = 3
    """Unknown (no reading to compute from, a gap over the limit, a counter jump): NaN."""


class Rejection(enum.StrEnum):
    """Why a reading was dropped (keys of :attr:`CounterSeries.rejected`)."""

    NEGATIVE_READING = "negative_reading"
    ABOVE_MAX_POWER = "above_max_power"
    COUNTER_JUMP = "counter_jump"


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """What a counter's readings mean: its name, unit and wrap value."""

    name: str = ENERGY_COUNTER
    to_kwh: float = 1.0
    """Factor from the counter's unit to kWh (:data:`UNIT_TO_KWH`)."""
    wrap: float | None = None
    """The counter's modulus in its own unit (``2**bits * scale``); ``None``: never wraps."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.to_kwh) and self.to_kwh > 0):
            raise InvalidInput(f"counter {self.name}.to_kwh", f"{self.to_kwh!r} is not positive")
        if self.wrap is not None and not (math.isfinite(self.wrap) and self.wrap > 0):
            raise InvalidInput(f"counter {self.name}.wrap", f"{self.wrap!r} is not positive")


def counter_spec(profile: DeviceProfile, name: str = ENERGY_COUNTER) -> CounterSpec:
    """The :class:`CounterSpec` of the energy counter ``name`` of a device profile.

    The point must be a ``counter`` in Wh, kWh or MWh. Its wrap value is ``2**bits *
    scale`` for an unsigned integer register (uint16/32/64); a float register does not
    wrap, and a signed one (which would turn negative) is given no wrap value: its
    negative readings are dropped."""
    where = f"profile {profile.id} point {name}"
    try:
        point = profile.point(name)
    except KeyError:
        raise InvalidInput(where, "the profile has no such point") from None
    if point.kind is not PointKind.COUNTER:
        raise InvalidInput(f"{where}.kind", f"is {point.kind.value}, not counter")
    if point.unit not in UNIT_TO_KWH:
        raise InvalidInput(
            f"{where}.unit", f"{point.unit!r} is not an energy unit ({', '.join(UNIT_TO_KWH)})"
        )
    bits = _UNSIGNED_BITS.get(point.type)
    wrap = None
    if bits is not None:
        if point.scale <= 0:
            raise InvalidInput(f"{where}.scale", f"{point.scale} is not positive")
        wrap = float(2**bits) * point.scale
    return CounterSpec(name=name, to_kwh=UNIT_TO_KWH[point.unit], wrap=wrap)


def max_power_kw(rated_kw: float | None = None, *, fallback_kw: float = DEFAULT_MAX_KW) -> float:
    """The power above which readings are implausible: rated × :data:`RATED_POWER_MARGIN`,
    or ``fallback_kw`` for a device without a rating."""
    where, given = ("fallback_kw", fallback_kw) if rated_kw is None else ("rated_kw", rated_kw)
    if not (math.isfinite(given) and given > 0):
        raise InvalidInput(where, f"{given!r} is not a positive power in kW")
    return given if rated_kw is None else given * RATED_POWER_MARGIN


@dataclass(frozen=True, slots=True)
class CounterSeries:
    """One counter of one device as hourly consumption, with where each figure comes from."""

    counter: str
    hours: npt.NDArray[np.int64]
    """Hour starts, seconds since the epoch (UTC), consecutive."""
    kwh: npt.NDArray[np.float64]
    """Consumption per hour; NaN where :attr:`flags` is MISSING."""
    flags: npt.NDArray[np.int8]
    """:class:`HourFlag` per hour."""
    wraps: int = 0
    """Counter wraps recognised in steps that end in or cross these hours."""
    resets: int = 0
    """Controller resets in steps that end in or cross these hours (in or across a gap too)."""
    long_gaps: int = 0
    """Gaps over the limit, left MISSING."""
    rejected: Mapping[str, int] = field(default_factory=dict)
    """Readings of these hours dropped, by :class:`Rejection` reason."""

    def _count(self, *flags: HourFlag) -> int:
        return int(np.isin(self.flags, [int(f) for f in flags]).sum())

    @property
    def measured_hours(self) -> int:
        """Hours flagged MEASURED or RESET."""
        return self._count(HourFlag.MEASURED, HourFlag.RESET)

    @property
    def estimated_hours(self) -> int:
        return self._count(HourFlag.ESTIMATED)

    @property
    def missing_hours(self) -> int:
        return self._count(HourFlag.MISSING)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def total_kwh(self) -> float:
        """Consumption over the hours that are not MISSING."""
        return float(np.nansum(self.kwh))

    @property
    def estimated_kwh(self) -> float:
        """The part of :attr:`total_kwh` that is ESTIMATED."""
        return float(np.nansum(self.kwh[self.flags == HourFlag.ESTIMATED]))


class _Step(enum.Enum):
    ADVANCE = "advance"
    WRAP = "wrap"
    RESET = "reset"


@dataclass(slots=True)
class _Builder:
    first: int
    """Hour number (hours since the epoch) of the first output hour."""
    kwh: npt.NDArray[np.float64]
    flags: npt.NDArray[np.int8]
    wraps: int = 0
    resets: int = 0
    long_gaps: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def touches(self, a: int, b: int) -> bool:
        """Whether the hours ``a+1 .. b`` overlap the output."""
        return b >= self.first and a + 1 < self.first + len(self.kwh)

    def fill(self, a: int, b: int, kwh: float, flag: HourFlag) -> None:
        """Give each of the hours ``a+1 .. b`` (those in the output) ``kwh`` and ``flag``."""
        lo = max(a + 1 - self.first, 0)
        hi = min(b + 1 - self.first, len(self.kwh))
        if lo < hi:
            self.kwh[lo:hi] = kwh
            self.flags[lo:hi] = flag

    def reject(self, hour: int, why: Rejection) -> None:
        if self.first <= hour < self.first + len(self.kwh):
            self.rejected[why.value] = self.rejected.get(why.value, 0) + 1


def _step(
    before: float, after: float, hours: int, wrap: float | None, max_kw: float
) -> tuple[float, _Step]:
    """The advance from ``before`` to ``after`` over ``hours`` and what kind of step it is."""
    if after >= before:
        return after - before, _Step.ADVANCE
    if wrap is not None:
        wrapped = (wrap - before) + after
        if _plausible(wrapped, hours, max_kw):
            return wrapped, _Step.WRAP
    return after, _Step.RESET


def _plausible(kwh: float, hours: int, max_kw: float) -> bool:
    return kwh <= max_kw * hours * (1.0 + _TOLERANCE)


def _readings(rows: Iterable[EnergyInterval], counter: str) -> tuple[dict[int, float], list[int]]:
    """Hour number → last reading, and every hour number the rows name."""
    lasts: dict[int, float] = {}
    named: list[int] = []
    for i, row in enumerate(rows):
        if row.counter != counter:
            continue
        if not math.isfinite(row.start) or row.start % HOUR_S:
            raise InvalidInput(f"rows[{i}].start", f"{row.start!r} is not the start of an hour")
        hour = int(row.start) // HOUR_S
        named.append(hour)
        if row.last is None:
            continue
        if hour in lasts:
            raise InvalidInput(f"rows[{i}].start", f"a second reading for hour {row.start:.0f}")
        lasts[hour] = float(row.last)
    return lasts, named


def _hour_span(start: float | None, end: float | None, named: list[int]) -> tuple[int, int]:
    """First output hour number and the number of output hours."""
    for what, value in (("start", start), ("end", end)):
        if value is not None and not math.isfinite(value):
            raise InvalidInput(what, f"{value!r} is not a time")
    if start is None and end is None and not named:
        return 0, 0
    first = math.floor(start / HOUR_S) if start is not None else min(named, default=None)
    stop = -math.floor(-end / HOUR_S) if end is not None else max(named, default=None)
    if first is None or stop is None:
        raise InvalidInput("rows", "no rows of the counter to take the missing start or end from")
    if end is None:
        stop += 1
    if stop < first:
        raise InvalidInput("end", f"the period ends (hour {stop}) before it starts ({first})")
    return first, stop - first


def hourly_consumption(
    rows: Iterable[EnergyInterval],
    spec: CounterSpec,
    *,
    max_kw: float,
    max_gap_h: int = DEFAULT_MAX_GAP_H,
    start: float | None = None,
    end: float | None = None,
) -> CounterSeries:
    """The hourly consumption (kWh) of counter ``spec.name`` in ``rows`` over ``[start, end)``.

    ``rows`` are hourly :class:`~cloud.tsdb.base.EnergyInterval` rows of one device (rows
    of other counters are ignored); query the store from before ``start`` and past
    ``end`` to let gaps at the period's edges be bridged. ``max_kw``: see
    :func:`max_power_kw`. The rules (wraps, resets, gaps, implausible readings) are in
    the module docstring. Raises :class:`~cloud.errors.InvalidInput` for a row that does
    not start an hour or a second reading of one hour."""
    if not (math.isfinite(max_kw) and max_kw > 0):
        raise InvalidInput("max_kw", f"{max_kw!r} is not positive")
    if type(max_gap_h) is not int or max_gap_h < 0:
        raise InvalidInput("max_gap_h", f"{max_gap_h!r} is not a non-negative int")
    lasts, named = _readings(rows, spec.name)
    first, count = _hour_span(start, end, named)
    out = _Builder(
        first=first,
        kwh=np.full(count, np.nan, dtype=np.float64),
        flags=np.full(count, HourFlag.MISSING, dtype=np.int8),
    )
    wrap = None if spec.wrap is None else spec.wrap * spec.to_kwh

    readings: list[tuple[int, float]] = []
    for hour in sorted(lasts):
        value = lasts[hour] * spec.to_kwh
        if math.isfinite(value) and value >= 0:
            readings.append((hour, value))
        else:
            out.reject(hour, Rejection.NEGATIVE_READING)

    anchor: tuple[int, float] | None = None
    for i, (hour, value) in enumerate(readings):
        if anchor is None:
            anchor = (hour, value)
            continue
        a, before = anchor
        hours = hour - a
        if hours - 1 > max_gap_h:
            if out.touches(a, hour):
                out.long_gaps += 1
            anchor = (hour, value)
            continue
        kwh, kind = _step(before, value, hours, wrap, max_kw)
        if not _plausible(kwh, hours, max_kw):
            if i + 1 < len(readings):
                nxt_hour, nxt_value = readings[i + 1]
                nxt_hours = nxt_hour - a
                nxt_kwh, _ = _step(before, nxt_value, nxt_hours, wrap, max_kw)
                if nxt_hours - 1 <= max_gap_h and _plausible(nxt_kwh, nxt_hours, max_kw):
                    out.reject(hour, Rejection.ABOVE_MAX_POWER)
                    continue
            out.reject(hour, Rejection.COUNTER_JUMP)
            anchor = (hour, value)
            continue
        if out.touches(a, hour):
            out.wraps += kind is _Step.WRAP
            out.resets += kind is _Step.RESET
        if hours == 1:
            out.fill(a, hour, kwh, HourFlag.RESET if kind is _Step.RESET else HourFlag.MEASURED)
        else:
            out.fill(a, hour, kwh / hours, HourFlag.ESTIMATED)
        anchor = (hour, value)

    return CounterSeries(
        counter=spec.name,
        hours=(np.arange(first, first + count, dtype=np.int64) * HOUR_S),
        kwh=out.kwh,
        flags=out.flags,
        wraps=out.wraps,
        resets=out.resets,
        long_gaps=out.long_gaps,
        rejected=dict(out.rejected),
    )
