"""Chart data for the dashboard: pure functions from store rows to series.

A :class:`Chart` is what a page embeds as JSON (``<script type="application/json">``) for
``static/app.js`` to draw with uPlot: epoch seconds on x, one or more series on y, the
site's time zone for the axis. Nothing here does I/O.

- :func:`resample` keeps a chart light: up to :data:`MAX_POINTS` points as they are (with
  a gap where readings stopped), more than that as means over equal buckets.
- :func:`month_to_date`, :func:`rollup_interval` and :func:`daily_totals` turn the store's
  epoch-aligned rollups into local calendar days of the site.
- :func:`key_signals` picks which of a device's signals the device page charts.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from cloud.tsdb.base import FEATURE_MARK, SiteRollup
from cloud.web.formatting import fmt_number, humanize, unit
from edge_agent.profiles import DeviceProfile, PointKind, builtin_profiles

MAX_POINTS: Final = 480
"""Points per series a chart draws at most (about one per two pixels of a wide chart)."""
GAP_FACTOR: Final = 3.0
"""Consecutive readings further apart than this many median steps are drawn with a gap."""
MEAN: Final = f"{FEATURE_MARK}mean"

SPANS: Final[Mapping[str, tuple[str, timedelta]]] = {
    "24h": ("24 hours", timedelta(hours=24)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
}
DEFAULT_SPAN: Final = "7d"
MAX_CUSTOM_SPAN: Final = timedelta(days=92)

KEY_SIGNALS: Final[Mapping[str, tuple[str, ...]]] = {
    "compressor": (
        "discharge_pressure",
        "suction_pressure",
        "discharge_temp",
        "superheat",
        "subcooling",
        "active_power",
        "current_l1",
        "vibration_rms",
    ),
    "fan": (
        "vibration_rms",
        "bearing_temp",
        "motor_current",
        "speed_rpm",
        "vib_band_bearing",
        "power",
    ),
}
"""What a technician looks at first, per asset type, in order."""
MAX_SIGNAL_CHARTS: Final = 4

PALETTE: Final = ("#1d4ed8", "#b45309", "#7e22ce", "#0f766e", "#be123c", "#4d7c0f")
"""Series colours with at least 4.5:1 contrast on white."""


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: list[float | None]
    color: str = PALETTE[0]
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    """The element id of the embedded JSON (unique on the page)."""
    title: str
    tz: str
    x: list[float]
    series: list[Series]
    kind: Literal["line", "bars"] = "line"
    y_min: float | None = None
    y_max: float | None = None
    y_label: str = ""
    x_min: float | None = None
    x_max: float | None = None
    """The x axis's span (the page's period) when it is not the data's."""
    summary: str = ""
    """One sentence for screen readers (the chart's ``aria-label``)."""

    @property
    def points(self) -> int:
        """How many values the chart draws (None is a gap, not a value)."""
        return sum(1 for s in self.series for v in s.values if v is not None)

    def payload(self) -> dict[str, Any]:
        return {
            "tz": self.tz,
            "kind": self.kind,
            "x": self.x,
            "x_range": None
            if self.x_min is None or self.x_max is None
            else [self.x_min, self.x_max],
            "y": {"min": self.y_min, "max": self.y_max, "label": self.y_label},
            "series": [
                {"label": s.label, "color": s.color, "unit": s.unit, "values": s.values}
                for s in self.series
            ],
        }


# ---- resampling ------------------------------------------------------------------------------


def _clean(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def resample(
    ts: Sequence[float],
    columns: Sequence[Sequence[float | None]],
    start: float,
    end: float,
    max_points: int = MAX_POINTS,
) -> tuple[list[float], list[list[float | None]]]:
    """The rows ``(ts[i], columns[0][i], columns[1][i], ...)`` (ascending ``ts``) for a chart.

    Up to ``max_points`` rows: as they are, with an all-None row in every gap longer than
    :data:`GAP_FACTOR` median steps (so a line stops where readings stopped). More: the mean
    of each column over ``max_points`` equal buckets of ``[start, end)``, at each bucket's
    middle, None where a bucket has no value."""
    n = len(ts)
    if n <= max_points:
        xs: list[float] = []
        out: list[list[float | None]] = [[] for _ in columns]
        steps = [b - a for a, b in itertools.pairwise(ts) if b > a]
        limit = GAP_FACTOR * statistics.median(steps) if len(steps) >= 2 else math.inf
        for i, t in enumerate(ts):
            if i and t - ts[i - 1] > limit:
                xs.append((t + ts[i - 1]) / 2)
                for col in out:
                    col.append(None)
            xs.append(float(t))
            for col, source in zip(out, columns, strict=True):
                col.append(_clean(source[i]))
        return xs, out
    width = (end - start) / max_points
    sums = [[0.0] * max_points for _ in columns]
    counts = [[0] * max_points for _ in columns]
    for i, t in enumerate(ts):
        b = min(max_points - 1, max(0, int((t - start) // width)))
        for c, source in enumerate(columns):
            v = _clean(source[i])
            if v is not None:
                sums[c][b] += v
                counts[c][b] += 1
    xs = [start + (b + 0.5) * width for b in range(max_points)]
    means: list[list[float | None]] = [
        [s / k if k else None for s, k in zip(sums[c], counts[c], strict=True)]
        for c in range(len(columns))
    ]
    return xs, means


# ---- local calendar --------------------------------------------------------------------------


def month_to_date(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The start of the site's current local month (aware, in ``tz``) and ``now``."""
    local = now.astimezone(tz)
    start = datetime(local.year, local.month, 1, tzinfo=tz)
    return start, now


def rollup_interval(tz: ZoneInfo, start: datetime, end: datetime) -> int:
    """The rollup interval that splits cleanly at the zone's local midnights: an hour when
    the zone's offsets over ``[start, end]`` are whole hours, else 15 minutes (India,
    Nepal, Chatham Islands …). The store aligns intervals to the epoch, not to the zone."""
    for moment in (start, end):
        offset = moment.astimezone(tz).utcoffset() or timedelta(0)
        if int(offset.total_seconds()) % 3600:
            return 900
    return 3600


def local_days(start: datetime, end: datetime, tz: ZoneInfo) -> list[date]:
    """Every local calendar day from ``start``'s to ``end``'s, both included."""
    first, last = start.astimezone(tz).date(), end.astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_start(day: date, tz: ZoneInfo) -> float:
    """Epoch seconds of the local midnight that starts ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


@dataclass(frozen=True, slots=True)
class DailyTotals:
    """A site's rollups summed per local day; None for a day without any data."""

    days: list[date]
    x: list[float]
    energy_kwh: list[float | None]
    windows: list[int | None]
    anomalous: list[int | None]
    alarms: list[int | None]
    reporting: list[int | None] = field(default_factory=list)
    """The most devices reporting in any interval of the day."""

    @property
    def has_data(self) -> bool:
        return any(v is not None for v in self.energy_kwh)

    def total(self, values: Sequence[float | int | None]) -> float | None:
        found = [v for v in values if v is not None]
        return float(sum(found)) if found else None


def daily_totals(rows: Sequence[SiteRollup], tz: ZoneInfo, days: Sequence[date]) -> DailyTotals:
    index = {d: i for i, d in enumerate(days)}
    energy: list[float | None] = [None] * len(days)
    windows: list[int | None] = [None] * len(days)
    anomalous: list[int | None] = [None] * len(days)
    alarms: list[int | None] = [None] * len(days)
    reporting: list[int | None] = [None] * len(days)
    for row in rows:
        i = index.get(datetime.fromtimestamp(row.start, tz).date())
        if i is None:
            continue
        energy[i] = (energy[i] or 0.0) + row.energy_kwh
        windows[i] = (windows[i] or 0) + row.windows
        anomalous[i] = (anomalous[i] or 0) + row.anomalous_windows
        alarms[i] = (alarms[i] or 0) + row.alarms_raised
        reporting[i] = max(reporting[i] or 0, row.devices_reporting)
    return DailyTotals(
        days=list(days),
        x=[day_start(d, tz) for d in days],
        energy_kwh=energy,
        windows=windows,
        anomalous=anomalous,
        alarms=alarms,
        reporting=reporting,
    )


# ---- the device page's signals ------------------------------------------------------------------


def _profile(asset_type: str, profile_id: str | None) -> DeviceProfile | None:
    shipped = builtin_profiles()
    if profile_id and profile_id in shipped:
        return shipped[profile_id]
    return next((p for p in shipped.values() if p.asset_type == asset_type), None)


def signal_units(asset_type: str, profile_id: str | None) -> dict[str, str]:
    """Signal → unit as people write it, from the device's shipped profile (or a shipped
    profile of the same asset type); empty when there is none."""
    profile = _profile(asset_type, profile_id)
    if profile is None:
        return {}
    return {p.name: unit(p.unit) for p in profile.points if p.unit}


def candidate_signals(
    asset_type: str, profile_id: str | None, reported: Sequence[str] = ()
) -> list[str]:
    """Signals worth charting, best first: the asset type's key signals, then the other
    measurements of its shipped profile, then ``reported`` (the ``<signal>__mean`` features
    of the device's newest window), without repeats."""
    out: list[str] = list(KEY_SIGNALS.get(asset_type, ()))
    profile = _profile(asset_type, profile_id)
    if profile is not None:
        out += [p.name for p in profile.points if p.kind is PointKind.MEASUREMENT]
    out += [name.removesuffix(MEAN) for name in sorted(reported) if name.endswith(MEAN)]
    return list(dict.fromkeys(out))


def key_signals(
    candidates: Sequence[str], available: Sequence[str], limit: int = MAX_SIGNAL_CHARTS
) -> list[str]:
    """The first ``limit`` of ``candidates`` whose mean the device reported (``available``
    holds feature names)."""
    have = set(available)
    return [s for s in candidates if f"{s}{MEAN}" in have][:limit]


def describe(title: str, values: Sequence[float | None], unit_text: str, span: str) -> str:
    """A sentence for screen readers: how many readings, their range and the latest."""
    found = [v for v in values if v is not None]
    if not found:
        return f"{title}: no readings in the last {span}."
    suffix = f" {unit_text}" if unit_text else ""
    return (
        f"{title} over the last {span}: {len(found)} points from {fmt_number(min(found))} to "
        f"{fmt_number(max(found))}{suffix}, latest {fmt_number(found[-1])}{suffix}."
    )


def signal_title(signal: str, unit_text: str) -> str:
    return f"{humanize(signal)} ({unit_text})" if unit_text else humanize(signal)
