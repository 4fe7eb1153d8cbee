"""Collect a client's month from the registry and the time-series store: the report's inputs.

What is read, per site of the client (sites by name, devices by name):

- the site's local calendar month (:mod:`cloud.reports.period`) and its tariff evaluated
  at every hour of it (:func:`cloud.energy.tariff.price_per_hour`); a site without a
  valid tariff gets no cost (its problem is reported), never a made-up price;
- per device, hourly store queries (:meth:`~cloud.tsdb.base.TimeSeriesStore.energy`)
  of only the counters used, from :data:`PAD_S` before to :data:`PAD_S` after the period,
  so that gaps at the edges are bridged: ``energy`` over the baseline year and the month
  (the month alone without a baseline), ``runtime_hours`` and ``start_count`` over the
  month (one query for the three without a baseline); they become hourly series with
  :func:`cloud.energy.counters.hourly_consumption` (wraps from the device profile,
  resets, gaps, implausible readings), and one feature query gives the hourly means of
  :data:`cloud.energy.units.SIGNALS` (``<signal>__mean``; a window belongs to the hour
  its end falls in, a window ending on the hour to the hour before);
- the work orders of the client's devices that overlap the device's month, as
  :class:`~cloud.energy.units.FaultEpisode` s (a fault ends when the order was completed,
  else when it was closed or cancelled).

For the weather-normalised baseline (when enabled) also, per site:

- the **meter**: the hourly sum of the site's devices over the 12 months before the
  report month and over the month. Only devices that reported in at least
  :data:`METER_COVERAGE` of the hours since the site's first reading of that year are
  summed (a device added or gone mid-year would change what the meter measures), the
  same devices in both periods, and an hour in which one of them is missing is missing;
- the **outdoor temperature**: from ``<weather_dir>/<site id>.csv`` when that file exists
  (:func:`cloud.energy.baseline.read_weather_csv`), otherwise from the site's sensors:
  the hourly mean of the ``ambient_temp__mean`` feature of up to
  :data:`TEMPERATURE_SENSORS` devices that report it (those reporting in the month
  first, by name). Outdoor air is one value per site: a few sensors average out one that
  sits in a condenser's exhaust, and keep a year's feature query small.

Nothing is fitted or summed here: :mod:`cloud.reports.build` does that.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.energy.baseline import HourlyValues, hourly_temperature, read_weather_csv
from cloud.energy.carbon import GridFactors
from cloud.energy.counters import (
    DEFAULT_MAX_GAP_H,
    CounterSeries,
    CounterSpec,
    counter_spec,
    hourly_consumption,
    max_power_kw,
)
from cloud.energy.tariff import (
    FlatTariff,
    HourlyPrices,
    TouTariff,
    parse_tariff,
    price_per_hour,
)
from cloud.energy.units import SIGNALS, FaultEpisode, UnitHours
from cloud.errors import InvalidInput, NotFound
from cloud.registry.models import Client, Device, Gateway, Site
from cloud.reports.errors import NoData
from cloud.reports.period import HOUR_S, Month, local_iso
from cloud.tsdb.base import ENERGY_COUNTER, EnergyInterval, TimeSeriesStore
from cloud.workorders.catalogue import Catalogue, load_catalogue
from cloud.workorders.models import WorkOrder, WorkOrderEvent
from cloud.workorders.policy import State
from cloud.workorders.service import order_number
from edge_agent.profiles import DataType, DeviceProfile, PointKind, builtin_profiles

if TYPE_CHECKING:
    from cloud.settings import Settings

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

PAD_S: Final = (DEFAULT_MAX_GAP_H + 1) * HOUR_S
"""Readings this far beyond the period are read to bridge gaps at its edges."""
BASELINE_MONTHS: Final = 12
"""CalTRACK's baseline: the 12 months before the reporting period."""
METER_COVERAGE: Final = 0.9
"""A device joins the baseline's meter when it reported in this share of the year's hours
(since the site's first reading in it)."""
TEMPERATURE_SENSORS: Final = 3
"""At most this many devices' ``ambient_temp`` make a site's outdoor temperature."""
AMBIENT: Final = "ambient_temp"
RUNTIME_COUNTER: Final = "runtime_hours"
STARTS_COUNTER: Final = "start_count"
UNIT_COUNTERS: Final = (RUNTIME_COUNTER, STARTS_COUNTER)
"""The counters read for the month only (the ``energy`` counter is read for the baseline
year too)."""
MAX_RUNTIME_PER_H: Final = 2.0
"""Plausibility bound of the runtime counter (hours per hour): the last readings of two
consecutive hours can be almost two hours apart."""
MAX_STARTS_PER_H: Final = 60.0
"""Plausibility bound of the start counter: far above any anti-short-cycle limit."""
SIGNAL_FEATURES: Final = tuple(f"{s}__mean" for s in SIGNALS)
NO_TARIFF: Final = FlatTariff(kind="flat", currency="XXX", price_per_kwh=0.0)
"""Evaluated for a site without a valid tariff (ISO 4217 ``XXX``: no currency); its costs
are reported as unknown, never as zero."""
_UNSIGNED_BITS: Final = {DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}

Granularity = Literal["daily", "hourly", "auto"]


# ---- options --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """How a report is made (from :class:`~cloud.settings.Settings`, see there)."""

    grid_factors: GridFactors
    baseline: bool = True
    """Fit the weather-normalised baseline (and read the year before the month)."""
    granularity: Granularity = "daily"
    weather_dir: Path | None = None
    fault_catalogue: Path | None = None
    """The work orders' fault catalogue (remedies named in the recommendations)."""

    @classmethod
    def from_settings(cls, settings: Settings, *, baseline: bool | None = None) -> Options:
        return cls(
            grid_factors=GridFactors(
                settings.report_grid_factor, dict(settings.report_grid_factors)
            ),
            baseline=settings.report_baseline if baseline is None else baseline,
            granularity=settings.report_baseline_granularity,
            weather_dir=settings.report_weather_dir,
            fault_catalogue=settings.fault_catalogue,
        )


# ---- what is collected ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    name: str
    asset_type: str
    site_id: str
    profile: str | None = None
    make: str | None = None
    model: str | None = None
    location: str | None = None
    criticality: str = "medium"

    @property
    def make_model(self) -> str | None:
        """``"Acme CC-100"``; None when neither is known."""
        text = " ".join(p for p in (self.make, self.model) if p)
        return text or None


@dataclass(frozen=True, slots=True)
class DeviceData:
    """One device's month."""

    info: DeviceInfo
    energy: CounterSeries
    unit: UnitHours
    readings: int
    """Energy-counter readings in the month."""


@dataclass(frozen=True, slots=True)
class Temperature:
    """A site's outdoor temperature (°C, hourly) for the baseline."""

    source: str
    """``weather file <path>``, ``sensors: <names>`` or ``none``."""
    baseline: HourlyValues | None
    report: HourlyValues | None
    problem: str | None = None
    """Why there is none (a bad weather file names its line)."""
    sensors: tuple[str, ...] = ()
    """Ids of the devices whose ``ambient_temp`` it is (none for a weather file)."""


@dataclass(frozen=True, slots=True)
class Meter:
    """The site's metered devices summed per hour (see the module docstring)."""

    devices: tuple[str, ...]
    """Ids of the devices summed."""
    excluded: tuple[str, ...]
    """Devices with baseline readings that were not summed (too little coverage)."""
    baseline: HourlyValues
    report: HourlyValues


@dataclass(frozen=True, slots=True)
class SiteData:
    id: str
    name: str
    kind: str
    timezone: str
    address: str | None
    floor_area_m2: float | None
    start: int
    """The month in seconds since the epoch: ``[start, end)``, whole UTC hours."""
    end: int
    prices: HourlyPrices
    tariff: FlatTariff | TouTariff | None
    tariff_problem: str | None
    """Why the site has no cost figures (no tariff, or an invalid one)."""
    grid_factor: float
    devices: tuple[DeviceData, ...]
    baseline_start: int
    """The baseline year ``[baseline_start, start)``."""
    meter: Meter | None = None
    meter_problem: str | None = None
    temperature: Temperature | None = None

    @property
    def hours(self) -> npt.NDArray[np.int64]:
        return np.arange(self.start, self.end, HOUR_S, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything a report is built from."""

    client_id: str
    client_name: str
    month: Month
    now: datetime
    options: Options
    sites: tuple[SiteData, ...]
    episodes: tuple[FaultEpisode, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    """Device id → name."""
    catalogue: Catalogue = field(default_factory=Catalogue)


# ---- counters -------------------------------------------------------------------------------


def _wrap(profile: DeviceProfile | None, name: str) -> float | None:
    """The wrap value of a non-energy counter of the profile (``2**bits × scale``)."""
    if profile is None or name not in profile.names:
        return None
    point = profile.point(name)
    bits = _UNSIGNED_BITS.get(point.type)
    if point.kind is not PointKind.COUNTER or bits is None or point.scale <= 0:
        return None
    return float(2**bits) * point.scale


def _energy_spec(profile: DeviceProfile | None) -> CounterSpec:
    if profile is not None and ENERGY_COUNTER in profile.names:
        return counter_spec(profile, ENERGY_COUNTER)
    return CounterSpec(ENERGY_COUNTER)


def _split(rows: Iterable[EnergyInterval]) -> dict[str, list[EnergyInterval]]:
    """Rows by counter (each list in the store's order: by interval)."""
    out: dict[str, list[EnergyInterval]] = defaultdict(list)
    for row in rows:
        out[row.counter].append(row)
    return out


def _window(rows: Sequence[EnergyInterval], start: float, end: float) -> Sequence[EnergyInterval]:
    """The rows of ``[start - PAD_S, end + PAD_S)`` (rows sorted by interval): what
    :func:`~cloud.energy.counters.hourly_consumption` needs for ``[start, end)``, so that a
    month of a year's rows is not walked through whole."""
    starts = [r.start for r in rows]
    return rows[bisect_left(starts, start - PAD_S) : bisect_left(starts, end + PAD_S)]


def _has_readings(rows: Sequence[EnergyInterval], start: int, end: int) -> int:
    return sum(1 for r in rows if r.last is not None and start <= r.start < end)


# ---- features --------------------------------------------------------------------------------


def _hour_index(ts: F64, first: int) -> npt.NDArray[np.int64]:
    """The hour (index from ``first``) a window ending at ``ts`` belongs to."""
    return (np.ceil(ts / HOUR_S).astype(np.int64) - 1) - first // HOUR_S


def hourly_means(
    times: Sequence[float], values: Mapping[str, list[float]], start: int, hours: int
) -> dict[str, F64]:
    """Per signal, the mean of the values whose window ends in each hour (NaN if none).

    ``values[name][i]`` belongs to ``times[i]`` (NaN where the window lacked it)."""
    out: dict[str, F64] = {}
    if not times:
        return out
    index = _hour_index(np.asarray(times, dtype=np.float64), start)
    inside = (index >= 0) & (index < hours)
    for name, column in values.items():
        v = np.asarray(column, dtype=np.float64)
        keep = inside & np.isfinite(v)
        if not keep.any():
            continue
        sums = np.bincount(index[keep], weights=v[keep], minlength=hours)
        counts = np.bincount(index[keep], minlength=hours)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


RUNNING_FEATURES: Final = ("active_power__minimum", "power__minimum", "run_state__duty")
"""What says a window ran throughout: power above zero in every sample, else (a device
without a power reading) a run state that was never off (``duty`` is the share of
samples whose state is not 0)."""


def _ran_throughout(features: Mapping[str, float]) -> bool:
    for name in RUNNING_FEATURES[:2]:
        low = features.get(name)
        if low is not None and math.isfinite(low):
            return low > 0.0
    duty = features.get("run_state__duty")
    return duty is not None and math.isfinite(duty) and duty >= 1.0


def _signals(
    store: TimeSeriesStore, device_id: str, start: int, end: int
) -> tuple[dict[str, F64], dict[str, F64], tuple[list[float], list[float]]]:
    """The device's hourly signal means over ``[start, end)``, the same means over only
    the windows in which it ran throughout (:attr:`UnitHours.running_signals`), and its
    raw ``ambient_temp`` window means (window ends, values)."""
    rows = store.feature_history(
        device_id, start, end + 1, names=SIGNAL_FEATURES + RUNNING_FEATURES
    )
    times = [r.ts for r in rows]
    running = [_ran_throughout(r.features) for r in rows]
    columns: dict[str, list[float]] = {}
    running_columns: dict[str, list[float]] = {}
    for name, feature in zip(SIGNALS, SIGNAL_FEATURES, strict=True):
        column = [r.features.get(feature, math.nan) for r in rows]
        if any(math.isfinite(v) for v in column):
            columns[name] = column
            if any(running):
                running_columns[name] = [
                    v if ran else math.nan for v, ran in zip(column, running, strict=True)
                ]
    ambient = columns.get(AMBIENT)
    raw = (times, ambient) if ambient is not None else ([], [])
    hours = (end - start) // HOUR_S
    return (
        hourly_means(times, columns, start, hours),
        hourly_means(times, running_columns, start, hours),
        raw,
    )


# ---- collection -------------------------------------------------------------------------------


@dataclass(slots=True)
class _SiteWork:
    """A site's data while its devices are read."""

    base_hours: int
    base_kwh: dict[str, F64] = field(default_factory=dict)
    month_kwh: dict[str, F64] = field(default_factory=dict)
    ambient: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)


def _profile(ref: str | None, profiles: Mapping[str, DeviceProfile]) -> DeviceProfile | None:
    return None if ref is None else profiles.get(ref)


def _device(
    store: TimeSeriesStore,
    info: DeviceInfo,
    profile: DeviceProfile | None,
    site: Site,
    bounds: tuple[int, int, int],
    work: _SiteWork,
    with_baseline: bool,
) -> DeviceData:
    base_start, start, end = bounds
    if with_baseline:
        groups = _split(
            store.energy(
                info.id, base_start - PAD_S, end + PAD_S, HOUR_S, counters=(ENERGY_COUNTER,)
            )
        )
        groups |= _split(
            store.energy(info.id, start - PAD_S, end + PAD_S, HOUR_S, counters=UNIT_COUNTERS)
        )
    else:
        groups = _split(
            store.energy(
                info.id,
                start - PAD_S,
                end + PAD_S,
                HOUR_S,
                counters=(ENERGY_COUNTER, *UNIT_COUNTERS),
            )
        )
    spec = _energy_spec(profile)
    energy_rows = groups.get(ENERGY_COUNTER, [])
    month_rows = _window(energy_rows, start, end)
    energy = hourly_consumption(month_rows, spec, max_kw=max_power_kw(None), start=start, end=end)
    if with_baseline:
        work.month_kwh[info.id] = energy.kwh
        work.base_kwh[info.id] = hourly_consumption(
            _window(energy_rows, base_start, start),
            spec,
            max_kw=max_power_kw(None),
            start=base_start,
            end=start,
        ).kwh

    def counter(name: str, max_per_h: float) -> F64 | None:
        rows = _window(groups.get(name, []), start, end)
        if not any(r.last is not None for r in rows):
            return None
        spec = CounterSpec(name, wrap=_wrap(profile, name))
        return hourly_consumption(rows, spec, max_kw=max_per_h, start=start, end=end).kwh

    signals, running_signals, ambient = _signals(store, info.id, start, end)
    if ambient[0]:
        work.ambient[info.id] = ambient
    unit = UnitHours(
        device_id=info.id,
        asset_type=info.asset_type,
        site_id=site.id,
        first_hour=start,
        kwh=energy.kwh,
        runtime_h=counter(RUNTIME_COUNTER, MAX_RUNTIME_PER_H),
        starts=counter(STARTS_COUNTER, MAX_STARTS_PER_H),
        signals=signals,
        model=info.make_model,
        name=info.name,
        running_signals=running_signals,
    )
    return DeviceData(info, energy, unit, _has_readings(month_rows, start, end))


def _meter(
    devices: Sequence[DeviceInfo], work: _SiteWork, base_start: int, start: int
) -> tuple[Meter | None, str | None]:
    """The site's meter over the baseline year and the month (module docstring)."""
    firsts = {}
    for d in devices:
        present = np.flatnonzero(np.isfinite(work.base_kwh[d.id]))
        if present.size:
            firsts[d.id] = int(present[0])
    if not firsts:
        return None, "no device of the site has a reading in the 12 months before the month"
    first = min(firsts.values())
    span = work.base_hours - first
    included: list[str] = []
    excluded: list[str] = []
    for d in devices:
        if d.id not in firsts:
            continue
        covered = int(np.isfinite(work.base_kwh[d.id][first:]).sum())
        (included if covered >= METER_COVERAGE * span else excluded).append(d.id)
    if not included:
        return None, (
            f"no device reported in {METER_COVERAGE:.0%} of the hours since the site's first "
            "reading of the baseline year"
        )

    def total(series: Mapping[str, F64], first_hour: int) -> HourlyValues:
        stack = np.vstack([series[i] for i in included])
        values = np.where(np.isnan(stack).any(axis=0), np.nan, np.nansum(stack, axis=0))
        hours = first_hour + HOUR_S * np.arange(values.size, dtype=np.int64)
        return HourlyValues(hours, values)

    meter = Meter(
        devices=tuple(included),
        excluded=tuple(excluded),
        baseline=total(work.base_kwh, base_start),
        report=total(work.month_kwh, start),
    )
    return meter, None


def _slice(series: HourlyValues, start: int, end: int) -> HourlyValues:
    keep = (series.hours >= start) & (series.hours < end)
    return HourlyValues(series.hours[keep], series.values[keep], series.dropped)


def _temperature(
    store: TimeSeriesStore,
    site: Site,
    devices: Sequence[DeviceInfo],
    profiles: Mapping[str, DeviceProfile],
    work: _SiteWork,
    bounds: tuple[int, int, int],
    weather_dir: Path | None,
) -> Temperature:
    base_start, start, end = bounds
    path = weather_file(weather_dir, site.id)
    if path is not None:
        try:
            weather = read_weather_csv(path)
        except InvalidInput as exc:
            log.error("site %s: weather file: %s", site.id, exc)
            return Temperature(f"weather file {path}", None, None, problem=str(exc))
        return Temperature(
            f"weather file {path.name}",
            _slice(weather, base_start, start),
            _slice(weather, start, end),
        )
    candidates = [
        d for d in devices if (p := _profile(d.profile, profiles)) is None or AMBIENT in p.names
    ]
    candidates.sort(key=lambda d: (d.id not in work.ambient, d.name, d.id))
    chosen = [d for d in candidates if d.id in work.ambient][:TEMPERATURE_SENSORS]
    if not chosen:
        chosen = candidates[:TEMPERATURE_SENSORS]
    times: list[float] = []
    values: list[float] = []
    used: list[str] = []
    ids: list[str] = []
    for d in chosen:
        rows = store.feature_history(d.id, base_start, start + 1, names=(f"{AMBIENT}__mean",))
        month_t, month_v = work.ambient.get(d.id, ([], []))
        year = [(r.ts, r.features[f"{AMBIENT}__mean"]) for r in rows if r.ts > base_start]
        if not year and not month_t:
            continue
        used.append(d.name)
        ids.append(d.id)
        times += [t for t, _ in year if t <= start] + [t for t in month_t if t > start]
        values += [v for t, v in year if t <= start] + [
            v for t, v in zip(month_t, month_v, strict=True) if t > start
        ]
    if not used:
        return Temperature("none", None, None, problem="no device of the site reports ambient_temp")
    # A window ending on the hour belongs to the hour before (as for the signals).
    hourly = hourly_temperature(
        np.asarray(times) - 1e-3, np.asarray(values), start=base_start, end=end
    )
    return Temperature(
        "sensors: " + ", ".join(used),
        _slice(hourly, base_start, start),
        _slice(hourly, start, end),
        sensors=tuple(ids),
    )


def weather_file(weather_dir: Path | None, site_id: str) -> Path | None:
    """The site's weather file, ``<weather_dir>/<site id>.csv``, when it exists."""
    if weather_dir is None:
        return None
    path = weather_dir / f"{site_id}.csv"
    return path if path.is_file() else None


def sensor_temperature(
    store: TimeSeriesStore, sensors: Sequence[str], start: int, end: int
) -> HourlyValues | None:
    """The hourly outdoor temperature (°C) of ``[start, end)`` (whole UTC hours) from the
    ``ambient_temp`` windows of ``sensors`` (device ids), by the report's rule: the mean of
    the windows whose end falls in the hour, a window ending on the hour belonging to the
    hour before. None when none of them has a window in the period."""
    times: list[float] = []
    values: list[float] = []
    name = f"{AMBIENT}__mean"
    for device_id in sensors:
        for r in store.feature_history(device_id, start, end + 1, names=(name,)):
            if start < r.ts <= end and name in r.features:
                times.append(r.ts)
                values.append(r.features[name])
    if not times:
        return None
    return hourly_temperature(np.asarray(times) - 1e-3, np.asarray(values), start=start, end=end)


def _site(
    store: TimeSeriesStore,
    site: Site,
    devices: Sequence[DeviceInfo],
    profiles: Mapping[str, DeviceProfile],
    month: Month,
    options: Options,
) -> SiteData:
    start, end = month.bounds(site.timezone)
    base_start, _ = month.plus(-BASELINE_MONTHS).bounds(site.timezone)
    hours = np.arange(start, end, HOUR_S, dtype=np.int64)
    try:
        tariff: FlatTariff | TouTariff | None = parse_tariff(
            site.tariff, where=f"site {site.name!r} tariff"
        )
        problem = None
    except InvalidInput as exc:
        tariff, problem = None, str(exc)
        if site.tariff is not None:
            log.warning("site %s: %s", site.id, exc)
    prices = price_per_hour(tariff or NO_TARIFF, hours, site.timezone)
    work = _SiteWork(base_hours=(start - base_start) // HOUR_S)
    bounds = (base_start, start, end)
    data = tuple(
        _device(
            store,
            d,
            _profile(d.profile, profiles),
            site,
            bounds,
            work,
            options.baseline,
        )
        for d in devices
    )
    meter: Meter | None = None
    meter_problem: str | None = None
    temperature: Temperature | None = None
    if options.baseline:
        if devices:
            meter, meter_problem = _meter(devices, work, base_start, start)
        else:
            meter_problem = "the site has no devices"
        temperature = _temperature(
            store, site, devices, profiles, work, bounds, options.weather_dir
        )
    return SiteData(
        id=site.id,
        name=site.name,
        kind=site.kind.value,
        timezone=site.timezone,
        address=site.address,
        floor_area_m2=site.floor_area_m2,
        start=start,
        end=end,
        prices=prices,
        tariff=tariff,
        tariff_problem=problem,
        grid_factor=options.grid_factors.for_site(site.id),
        devices=data,
        baseline_start=base_start,
        meter=meter,
        meter_problem=meter_problem,
        temperature=temperature,
    )


def _episodes(
    session: Session, client_id: str, periods: Mapping[str, tuple[int, int]]
) -> tuple[FaultEpisode, ...]:
    """The work orders of the client's devices that overlap the month of the device's site."""
    if not periods:
        return ()
    first = datetime.fromtimestamp(min(s for s, _ in periods.values()), UTC)
    last = datetime.fromtimestamp(max(e for _, e in periods.values()), UTC)
    orders = session.scalars(
        select(WorkOrder)
        .where(
            WorkOrder.client_id == client_id,
            WorkOrder.opened_at < last,
            (WorkOrder.closed_at.is_(None)) | (WorkOrder.closed_at >= first),
        )
        .order_by(WorkOrder.number)
    ).all()
    if not orders:
        return ()
    completed: dict[str, datetime] = {}
    for order_id, at in session.execute(
        select(WorkOrderEvent.work_order_id, WorkOrderEvent.at)
        .where(
            WorkOrderEvent.work_order_id.in_([o.id for o in orders]),
            WorkOrderEvent.to_state == State.COMPLETE.value,
        )
        .order_by(WorkOrderEvent.at)
    ):
        completed.setdefault(order_id, at)
    out = []
    for order in orders:
        period = periods.get(order.site_id)
        if period is None:
            continue
        ends = [t for t in (completed.get(order.id), order.closed_at) if t is not None]
        closed = min(ends).timestamp() if ends else None
        opened = order.opened_at.timestamp()
        if opened >= period[1] or (closed is not None and closed < period[0]):
            continue
        out.append(
            FaultEpisode(
                work_order_id=order.id,
                number=order_number(order.number),
                device_id=order.device_id,
                fault=order.fault,
                opened_at=opened,
                closed_at=None if closed is None else max(closed, opened),
                state=order.state.value,
                failure_prevented=order.failure_prevented,
            )
        )
    return tuple(out)


def check_month_ended(month: Month, sites: Sequence[Site], now: datetime) -> None:
    """:class:`~cloud.errors.InvalidInput` unless ``month`` has ended at every site."""
    for site in sites:
        _, end = month.bounds(site.timezone)
        if end > now.timestamp():
            raise InvalidInput(
                "month",
                f"{month} has not ended yet at site {site.name!r} ({site.timezone}): its "
                f"report can be made from {local_iso(end, site.timezone)}",
            )


def collect(
    session: Session,
    store: TimeSeriesStore,
    client_id: str,
    month: Month,
    *,
    options: Options,
    now: datetime | None = None,
) -> Inputs:
    """The inputs of ``client_id``'s report of ``month`` (see the module docstring).

    Raises :class:`~cloud.errors.NotFound` for an unknown client,
    :class:`~cloud.errors.InvalidInput` for a month that has not ended at one of its
    sites, and :class:`~cloud.reports.errors.NoData` when the client has no site, no
    device or no energy reading in the month."""
    now = datetime.now(UTC) if now is None else now
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    sites = session.scalars(
        select(Site).where(Site.client_id == client.id).order_by(Site.name, Site.id)
    ).all()
    if not sites:
        raise NoData("client", f"{client.name!r} has no sites to report on")
    check_month_ended(month, sites, now)
    by_site: dict[str, list[DeviceInfo]] = {s.id: [] for s in sites}
    for device, site_id in session.execute(
        select(Device, Gateway.site_id)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .where(Gateway.site_id.in_(list(by_site)))
        .order_by(Device.name, Device.id)
    ):
        by_site[site_id].append(
            DeviceInfo(
                id=device.id,
                name=device.name,
                asset_type=device.asset_type,
                site_id=site_id,
                profile=device.profile,
                make=device.make,
                model=device.model,
                location=device.location,
                criticality=device.criticality.value,
            )
        )
    count = sum(len(d) for d in by_site.values())
    if count == 0:
        raise NoData("client", f"{client.name!r} has no devices to report on")
    profiles = builtin_profiles()
    data = tuple(_site(store, s, by_site[s.id], profiles, month, options) for s in sites)
    if not any(d.readings for s in data for d in s.devices):
        raise NoData(
            "month",
            f"no energy-counter reading from any of {client.name!r}'s {count} devices in {month}",
        )
    periods = {s.id: (s.start, s.end) for s in data}
    return Inputs(
        client_id=client.id,
        client_name=client.name,
        month=month,
        now=now,
        options=options,
        sites=data,
        episodes=_episodes(session, client.id, periods),
        names={d.info.id: d.info.name for s in data for d in s.devices},
        catalogue=load_catalogue(options.fault_catalogue),
    )
