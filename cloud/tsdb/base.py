"""The time-series store: one small interface, two implementations (InfluxDB, SQLite).

Both pass one conformance suite (``tests/unit/cloud/tsdb/conformance.py``). What the rest
of the service stores and asks for is expressed here; nothing above this module knows
which backend it talks to. The helpers at the end of the module (time grid, counter rule,
site totals) are the semantics both backends share, written once.

Points
    A :class:`Point` is one uplink record as stored: ``measurement`` is the record kind
    (``features``, ``score``, ``alarm``, ``energy``, ``health``), ``tags`` say whose it is
    (:data:`TENANT_TAGS`, always present, plus per-kind tags such as ``group``), ``fields``
    carry the values, ``ts_ns`` the record's time in integer nanoseconds.

    A tag whose value is ``""`` is the same as no tag (InfluxDB stores no empty tag
    values): ``device=""`` marks a gateway-level record, and queries return the tenant
    tags always, other tags only when they have a value.

    Names and tag values travel as InfluxDB line protocol, which cannot carry every
    string: tag keys, tag values and field keys must not contain a tab, carriage return
    or newline nor end in a backslash, a field key must not have a backslash right
    before a space, comma, ``=`` or ``"``, and ``time`` is no valid key. :class:`Point`
    refuses them (``ValueError``), so both backends store the same things. String field
    values may hold anything.

Idempotent writes
    A point with the same measurement, tags and ``ts_ns`` as a stored one is merged into
    it: its fields replace the stored fields of the same name, other stored fields stay
    (InfluxDB's rule for duplicate points; the SQLite store does the same). A replayed
    batch therefore stores nothing twice and changes nothing.

Device and site ids
    Queries by ``device`` match the ``device`` tag alone and queries by ``site`` the
    ``site`` tag alone. Whoever maps records to points must make these globally unique
    (the registry's device UUID, or a gateway-qualified name; site ids are UUIDs):
    devices of two gateways that share a ``device`` tag would be read together.

Features
    A ``features`` point holds one window of one device: its feature values and window
    metadata. Feature fields are those whose name contains ``"__"`` (:data:`FEATURE_MARK`;
    ``discharge_temp__mean``, ``a/b__mean``: the names ``edge_agent.features`` gives);
    every other field (``n_samples``, ``n_missing``, ``start``) is metadata and never
    appears in a :class:`FeatureRow`. A window holding none of the features asked for is
    left out of :meth:`TimeSeriesStore.feature_history`.

Alarms
    An ``alarm`` point is one event of a controller's local alarm: its ``name`` tag says
    which alarm, its fields the ``state`` (``"raised"`` or ``"cleared"``), the
    ``severity``, and optionally the ``value`` that tripped it and a ``detail`` text.
    :meth:`TimeSeriesStore.alarms` gives them as :class:`AlarmEvent` (:func:`alarm_event`).

Intervals
    :meth:`TimeSeriesStore.energy` and :meth:`TimeSeriesStore.site_rollup` report whole
    intervals aligned to multiples of ``interval_s`` since the epoch: ``start`` is rounded
    down and ``end`` up to the grid (:func:`interval_grid`), so the first interval is the
    one holding ``start`` and the last the one holding the instant before ``end``.

Errors
    A backend that cannot be reached raises :class:`cloud.errors.StoreUnavailable` (ingest
    then withholds its ack); a request the backend refuses raises
    :class:`cloud.errors.StoreError`. A write of several batches may have stored the
    first ones when it raises; writing the same points again is harmless.
"""

from __future__ import annotations

import abc
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from cloud.errors import StoreError

FieldValue = float | int | bool | str

TENANT_TAGS: Final = ("client", "site", "gateway", "device")
"""Every point carries these tags (``device`` is ``""`` for gateway-level records)."""

MEASUREMENTS: Final = ("features", "score", "alarm", "energy", "health")

FEATURE_MARK: Final = "__"
"""A field whose name contains this is a feature (``signal__feature``); others are metadata."""

ENERGY_COUNTER: Final = "energy"
"""The counter (kWh) that :meth:`TimeSeriesStore.site_rollup` sums into ``energy_kwh``."""

NS_PER_S: Final = 1_000_000_000
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
_UNSAFE_NAME: Final = re.compile(r"[\t\r\n]|\\\Z")
_UNSAFE_FIELD_NAME: Final = re.compile(r'[\t\r\n]|\\\Z|\\[ ,="]')


_GOOD_FIELD_NAMES: set[str] = set()
"""Field names that passed :func:`_check_name` (features repeat on every point)."""
_GOOD_TAGS: set[tuple[str, str]] = set()
"""Tags that passed :func:`_check_name` (a series' tags repeat on every point)."""
_MAX_GOOD_NAMES: Final = 100_000


def _check_name(what: str, name: object, unsafe: re.Pattern[str] = _UNSAFE_NAME) -> None:
    """Refuse a key or tag value that line protocol cannot carry unchanged."""
    if not isinstance(name, str):
        raise ValueError(f"{what} {name!r} is not a string")
    if unsafe.search(name):
        raise ValueError(
            f"{what} {name!r} holds a tab, carriage return or newline, ends in a backslash"
            ' or (a field name) has a backslash before a space, comma, = or ", which'
            " InfluxDB line protocol cannot carry"
        )


@dataclass(frozen=True, slots=True)
class Point:
    """One record as stored; construction refuses what a backend could not store as given."""

    measurement: str
    ts_ns: int
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]

    def __post_init__(self) -> None:
        if self.measurement not in MEASUREMENTS:
            raise ValueError(f"measurement {self.measurement!r} is not one of {MEASUREMENTS}")
        if type(self.ts_ns) is not int:
            raise ValueError(f"ts_ns {self.ts_ns!r} is not an int (nanoseconds)")
        missing = [t for t in TENANT_TAGS if t not in self.tags]
        if missing:
            raise ValueError(f"point lacks the tags {missing}")
        if not self.fields:
            raise ValueError("a point needs at least one field")
        for key, tag in self.tags.items():
            if (key, tag) in _GOOD_TAGS:
                continue
            if not key or key == "time":
                raise ValueError(f"tag key {key!r} is not allowed")
            _check_name("tag key", key)
            _check_name(f"tag {key!r} value", tag)
            if len(_GOOD_TAGS) < _MAX_GOOD_NAMES:
                _GOOD_TAGS.add((key, tag))
        for name, value in self.fields.items():
            if name not in _GOOD_FIELD_NAMES:
                if not name or name == "time":
                    raise ValueError(f"field name {name!r} is not allowed")
                _check_name("field name", name, _UNSAFE_FIELD_NAME)
                if len(_GOOD_FIELD_NAMES) < _MAX_GOOD_NAMES:
                    _GOOD_FIELD_NAMES.add(name)
            if name in self.tags:
                raise ValueError(f"{name!r} is both a tag and a field")
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):  # type: ignore[arg-type]
                    raise ValueError(f"field {name!r} is not finite: {value!r}")
            elif kind is bool or kind is str:
                pass
            elif isinstance(value, float):
                if not math.isfinite(value):
                    raise ValueError(f"field {name!r} is not finite: {value!r}")
            elif isinstance(value, int) and not isinstance(value, bool):
                if not INT64_MIN <= value <= INT64_MAX:
                    raise ValueError(f"field {name!r} does not fit a signed 64-bit integer")
            elif not isinstance(value, bool | str):
                raise ValueError(
                    f"field {name!r} is a {type(value).__name__}, not a float, int, bool or str"
                )


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One window's feature vector."""

    ts: float
    """The window's end (seconds since the epoch)."""
    group: str
    """The point's ``group`` tag (the poll group), ``""`` when it has none."""
    features: dict[str, float]
    """Feature name → value; only feature fields (see :data:`FEATURE_MARK`)."""


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest point of one measurement for one device."""

    ts: float
    tags: dict[str, str]
    """The tenant tags (always) and the point's other non-empty tags."""
    fields: dict[str, FieldValue]


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One event of a device's local alarm: raised or cleared."""

    ts: float
    """When the controller reported it (seconds since the epoch)."""
    name: str
    """The point's ``name`` tag (a ``name`` text field where it has no such tag; ``""``
    when it has neither)."""
    state: str
    """``"raised"`` or ``"cleared"`` as reported (``""`` when the point has no state)."""
    severity: str
    """As reported (``""`` when the point has none)."""
    value: float | None = None
    """The reading that tripped the alarm, when the point has a numeric ``value``."""
    detail: str | None = None
    """The point's ``detail`` field, when it has one."""


@dataclass(frozen=True, slots=True)
class EnergyInterval:
    """What one counter of one device advanced by in ``[start, start + interval)``.

    ``last`` is the counter's last reading in the interval. ``consumed`` is ``last`` minus
    the last reading of the interval just before; a counter that went down (a controller
    reset or a wrap) counts its new reading as consumed since the reset. ``None`` when the
    interval or the one just before it had no reading (a gap is not spread over the
    intervals after it). See :func:`consumed`.
    """

    start: float
    counter: str
    last: float | None
    consumed: float | None


@dataclass(frozen=True, slots=True)
class SiteRollup:
    """One interval of one site, all its devices together."""

    start: float
    devices_reporting: int
    """Distinct ``(gateway, device)`` with any point in the interval (gateway-level
    records, ``device=""``, make an interval present but count no device)."""
    energy_kwh: float
    """Sum over devices of what their ``energy`` counters (kWh) advanced by."""
    windows: int
    """``score`` points with a ``score`` field."""
    anomalous_windows: int
    """Of these, those whose ``anomalous`` field is ``True``."""
    mean_score: float | None
    max_score: float | None
    alarms_raised: int
    """``alarm`` points whose ``state`` field is ``"raised"``."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    points_written: int = 0
    write_batches: int = 0
    write_errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class TimeSeriesStore(abc.ABC):
    """What the cloud needs of a time-series database.

    Implementations are safe to call from several threads at once (the API's threadpool
    and the ingest threads share one store)."""

    @abc.abstractmethod
    def write(self, points: Sequence[Point]) -> None:
        """Store ``points`` durably (idempotently, see the module docstring) or raise."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """True when the store answers (``/readyz``)."""

    @abc.abstractmethod
    def feature_history(
        self,
        device: str,
        start: float,
        end: float,
        *,
        group: str | None = None,
        names: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[FeatureRow]:
        """Feature vectors of ``device`` with ``start <= ts < end``, oldest first; only the
        features in ``names`` when given; the newest ``limit`` rows when given.

        Windows holding none of the wanted features are left out; names that are not
        feature names (no ``"__"``) are ignored. Rows of the same time are ordered by
        their tags (:func:`series_key`)."""

    @abc.abstractmethod
    def latest(self, device: str) -> dict[str, Latest]:
        """The newest point of each measurement stored for ``device``, by measurement."""

    @abc.abstractmethod
    def alarms(
        self, device: str, start: float, end: float, *, limit: int | None = 200
    ) -> list[AlarmEvent]:
        """The ``alarm`` points of ``device`` with ``start <= ts < end``, newest first; the
        newest ``limit`` of them (all when ``limit`` is ``None``).

        Events of the same time are ordered by their tags (:func:`series_key`)."""

    @abc.abstractmethod
    def energy(
        self,
        device: str,
        start: float,
        end: float,
        interval_s: int,
        *,
        counters: Sequence[str] | None = None,
    ) -> list[EnergyInterval]:
        """Per counter and per interval (aligned to multiples of ``interval_s`` since the
        epoch) of ``[start, end)``: what the device's counters advanced by.

        Counters are the numeric fields of the device's ``energy`` points (only those
        named in ``counters`` when given: the others are not read); each counter read in
        these intervals or the one before gets one row per interval (``last`` is ``None``
        where it was not read). Sorted by interval, then counter."""

    @abc.abstractmethod
    def site_rollup(self, site: str, start: float, end: float, interval_s: int) -> list[SiteRollup]:
        """Per interval (aligned as in :meth:`energy`) of ``[start, end)``, the site's totals;
        intervals with no data at all are left out."""

    @abc.abstractmethod
    def count(self, measurement: str, *, gateway: str | None = None) -> int:
        """How many points of ``measurement`` are stored (of one gateway when given).

        InfluxQL counts fields, not points: InfluxDB's figure is exact when the points of
        one series share a field (every EdgeWatch record kind does)."""

    def time_span(self) -> tuple[int, int] | None:
        """``(oldest, newest)`` ``ts_ns`` of the stored points, ``None`` when there are none.

        With :meth:`export`, how a backup reads the whole store: window by window from the
        oldest point to the newest. A store that cannot export raises :class:`StoreError`."""
        raise StoreError(f"{type(self).__name__} cannot export its points")

    def export(self, start_ns: int, stop_ns: int) -> Iterator[Point]:
        """Every stored point with ``start_ns <= ts_ns < stop_ns``, of every measurement,
        in no particular order, streamed: the store holds a bounded part of the answer at
        a time however many points the range holds.

        Points come back as queries see them: a rewritten point once, its fields merged;
        tags as :func:`normalise_tags` gives them; each field of the type it was written
        with. Writing them into an empty store makes it answer every query as this one
        does. Concurrent writes may or may not be seen."""
        raise StoreError(f"{type(self).__name__} cannot export its points")

    def stats(self) -> StoreStats:
        return StoreStats()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# ---- shared semantics ----------------------------------------------------------------------


def is_feature(name: str) -> bool:
    """Whether a ``features`` field is a feature (not window metadata)."""
    return FEATURE_MARK in name


def feature_values(
    fields: Mapping[str, object], names: Iterable[str] | None = None
) -> dict[str, float]:
    """The numeric feature fields of ``fields`` (only ``names`` when given) as floats."""
    keys = fields.keys() if names is None else names
    out: dict[str, float] = {}
    for name in keys:
        value = fields.get(name)
        if is_feature(name) and isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def numeric(value: object) -> float | None:
    """``value`` as a float when it is an int or a float (never a bool); else ``None``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def to_ns(seconds: float) -> int:
    """Seconds since the epoch → integer nanoseconds, without float rounding of the whole part."""
    whole = math.floor(seconds)
    return int(whole) * NS_PER_S + round((seconds - whole) * NS_PER_S)


def alarm_event(ts_ns: int, tags: Mapping[str, str], fields: Mapping[str, object]) -> AlarmEvent:
    """An ``alarm`` point's time, tags and fields as an :class:`AlarmEvent`."""
    name = tags.get("name") or fields.get("name")
    detail = fields.get("detail")
    return AlarmEvent(
        ts=ts_ns / NS_PER_S,
        name=name if isinstance(name, str) else "",
        state=str(fields.get("state", "")),
        severity=str(fields.get("severity", "")),
        value=numeric(fields.get("value")),
        detail=None if detail is None else str(detail),
    )


def check_device(device: str) -> None:
    """Refuse ``""`` as a device to query: it would match every gateway-level record."""
    if not isinstance(device, str) or not device:
        raise ValueError(f"device {device!r} is not a device id")


def check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"limit {limit!r} is not a non-negative int")


def interval_grid(start: float, end: float, interval_s: int) -> range:
    """The starts (ns) of the whole intervals of the grid of ``interval_s`` that overlap
    ``[start, end)``: ``start`` rounded down, ``end`` rounded up to multiples of the
    interval since the epoch. Empty when ``end <= start``."""
    if type(interval_s) is not int or interval_s <= 0:
        raise ValueError(f"interval_s {interval_s!r} is not a positive int")
    step = interval_s * NS_PER_S
    start_ns, end_ns = to_ns(start), to_ns(end)
    if end_ns <= start_ns:
        return range(0, 0, step)
    first = start_ns - start_ns % step
    stop = -(-end_ns // step) * step
    return range(first, stop, step)


def normalise_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags as queries return them: tenant tags always, others only when not empty."""
    out = {t: "" for t in TENANT_TAGS}
    out.update((k, v) for k, v in tags.items() if v != "")
    return out


def series_key(tags: Mapping[str, str]) -> str:
    """A canonical text of a tag set (sorted, empty values dropped): the SQLite store's
    series key and the order of rows that share a time."""
    return json.dumps(
        {k: tags[k] for k in sorted(tags) if tags[k] != ""},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def consumed(before: float | None, last: float | None) -> float | None:
    """What a counter advanced by from ``before`` (last reading of the previous interval)
    to ``last``; a reading lower than ``before`` is a reset and counts whole."""
    if before is None or last is None:
        return None
    return last - before if last >= before else last


def energy_intervals(grid: range, lasts: Mapping[int, Mapping[str, float]]) -> list[EnergyInterval]:
    """:meth:`TimeSeriesStore.energy`'s rows from the counters' last readings per interval
    start (``lasts`` may hold the interval before ``grid`` too)."""
    if not grid:
        return []
    wanted = {grid.start - grid.step, *grid}
    counters = sorted({c for b, values in lasts.items() if b in wanted for c in values})
    out: list[EnergyInterval] = []
    for b in grid:
        now, before = lasts.get(b, {}), lasts.get(b - grid.step, {})
        for counter in counters:
            last = now.get(counter)
            out.append(
                EnergyInterval(b / NS_PER_S, counter, last, consumed(before.get(counter), last))
            )
    return out


@dataclass(slots=True)
class ScoreTotals:
    """The ``score`` points of one interval: count, anomalous count, sum and maximum."""

    windows: int = 0
    anomalous: int = 0
    total: float = 0.0
    maximum: float | None = None

    def add(self, score: float, anomalous: bool) -> None:
        self.windows += 1
        self.anomalous += int(anomalous)
        self.total += score
        self.maximum = score if self.maximum is None else max(self.maximum, score)


DeviceKey = tuple[str, str]
"""``(gateway, device)``: a device within its site."""


def site_rollups(
    grid: range,
    *,
    active: Mapping[int, set[DeviceKey]],
    energy: Mapping[DeviceKey, Mapping[int, float]],
    scores: Mapping[int, ScoreTotals],
    alarms: Mapping[int, int],
) -> list[SiteRollup]:
    """:meth:`TimeSeriesStore.site_rollup`'s rows from per-interval parts.

    ``active``: interval start → devices with any point (``device=""`` included);
    ``energy``: device → interval start → last ``energy`` reading (the interval before
    ``grid`` included); ``scores`` and ``alarms``: per interval start."""
    out: list[SiteRollup] = []
    for b in grid:
        devices = active.get(b)
        if not devices:
            continue
        kwh = 0.0
        for lasts in energy.values():
            used = consumed(lasts.get(b - grid.step), lasts.get(b))
            if used is not None:
                kwh += used
        s = scores.get(b, ScoreTotals())
        out.append(
            SiteRollup(
                start=b / NS_PER_S,
                devices_reporting=sum(1 for _, device in devices if device),
                energy_kwh=kwh,
                windows=s.windows,
                anomalous_windows=s.anomalous,
                mean_score=s.total / s.windows if s.windows else None,
                max_score=s.maximum,
                alarms_raised=alarms.get(b, 0),
            )
        )
    return out
