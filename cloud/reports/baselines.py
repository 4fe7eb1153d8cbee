"""Each site's fitted baseline model, kept for the dashboard, and the dashboard's source.

Keeping (:func:`keep_models`)
    When a report is generated, every site whose weather-normalised baseline was fitted
    as a daily model that eemeter did not disqualify gets that model stored in
    ``site_baselines`` (:class:`~cloud.reports.models.SiteBaseline`): eemeter's own JSON
    (``DailyModel.to_json()``), the zone its days are local to, the devices summed into
    its meter and the devices whose ``ambient_temp`` was its outdoor temperature. A site
    keeps the model of the newest report month that had one: making an older month again
    does not replace it, and a newer month with too little data leaves it as it is. Hourly
    models (``report_baseline_granularity`` ``hourly``, or ``auto`` when the data allows)
    are not kept.

Predicting (:class:`StoredBaselines`, the dashboard's
:class:`~cloud.web.baseline.BaselineSource`)
    For ``[start, end)`` (the dashboard asks for the current local month to date) the
    stored model predicts each local day from that day's outdoor temperature, read as the
    report reads it: the site's weather file (``<report_weather_dir>/<site id>.csv``) when
    there is one, otherwise the hourly mean of the stored sensors' ``ambient_temp``
    windows (:func:`~cloud.reports.collect.sensor_temperature`). Each day counts in
    proportion to its part inside the period, so the day under way counts for the share
    of it that has passed, at the mean temperature of its hours so far
    (:func:`cloud.energy.baseline.predict_daily`). Days without a temperature (eemeter's
    rule: more than half of the day's hours missing) are filled in proportion by the
    others, as long as those cover at least :data:`MIN_COVERAGE` of the period; below
    that the baseline is unavailable. No model: None ("no baseline yet"). Any failure:
    :class:`~cloud.reports.errors.BaselineUnavailable` or another
    :class:`~cloud.errors.CloudError` (the page says the baseline is unavailable).

    The model predicts the sum of its meter's devices (those that reported in at least
    90 % of the baseline year's hours, :mod:`cloud.reports.collect`); the dashboard
    compares it with the whole site's use, so a device added since the fit, or left out
    of the meter, counts against the baseline.

Cache
    Each site's daily predictions are kept per model (report month and time of fitting)
    and period start, for the UTC hour of the period's end they were made in: a page asks
    eemeter at most once an hour per site, and a request within the hour only adds the
    cached days up again (the day under way prorated to the request's ``end``). In a new
    hour only the days that were not over at the last prediction (or had none) are read
    and predicted again; the days before keep their figures (a reading that arrives for
    them later counts from the next month or model on). Each request still looks up
    which model the site has (one indexed row, not the model), so a new report's model is
    used from its first page. A failure is kept for :data:`ERROR_TTL_S`. At most
    :data:`MAX_ENTRIES` entries are kept, the least recently used dropped first.

eemeter's first call in a process
    Importing eemeter and the first prediction (numba loading the model functions from
    its cache, or compiling them) take seconds: :meth:`StoredBaselines.warm_up_in_background`
    does both in a thread at the API's start-up when any model is stored (and eemeter has
    not predicted in the process yet), and a page that needs a prediction meanwhile waits
    for it (at most :data:`WARM_WAIT_S`). A report's fit in the same process holds eemeter
    for seconds: a prediction waits at most :data:`BUSY_WAIT_S` for it, then the baseline
    is unavailable (and other sites do not wait) for :data:`BUSY_BACKOFF_S`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import flush, translate_errors
from cloud.energy.baseline import (
    Baseline,
    DailyPrediction,
    Granularity,
    HourlyValues,
    predict_daily,
    prediction_ready,
    read_weather_csv,
)
from cloud.errors import CloudError
from cloud.registry.models import Site
from cloud.reports.collect import Inputs, sensor_temperature, weather_file
from cloud.reports.errors import BaselineUnavailable
from cloud.reports.models import SiteBaseline
from cloud.reports.period import HOUR_S
from cloud.tsdb.base import TimeSeriesStore

log = logging.getLogger(__name__)

MIN_COVERAGE: Final = 0.5
"""Days with a prediction must cover this share of the period asked for."""
ERROR_TTL_S: Final = 60.0
"""A failed prediction is not tried again for this long."""
BUSY_WAIT_S: Final = 3.0
"""A prediction waits this long for eemeter while a fit holds it."""
BUSY_BACKOFF_S: Final = 30.0
"""After a wait for eemeter ran out, predictions are not tried for this long."""
WARM_WAIT_S: Final = 60.0
"""A prediction waits at most this long for the start-up warm-up."""
MAX_ENTRIES: Final = 4096
KIND: Final = "daily"
WARM_UP_DAYS: Final = 2


# ---- keeping ---------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def keep_models(
    session: Session, inputs: Inputs, models: Mapping[str, Baseline], now: datetime
) -> list[str]:
    """Store the report's fitted daily models (module docstring); the ids of the sites
    whose model was stored. The caller commits."""
    month = str(inputs.month)
    kept: list[str] = []
    for site in inputs.sites:
        fitted = models.get(site.id)
        if fitted is None or fitted.kind is not Granularity.DAILY or fitted.disqualification:
            continue
        if site.meter is None or site.temperature is None:
            continue
        row = session.get(SiteBaseline, site.id)
        if row is not None and row.month > month:
            continue
        values = {
            "month": month,
            "kind": KIND,
            "model": fitted.model.to_json(),
            "timezone": fitted.timezone,
            "baseline_start": datetime.fromtimestamp(fitted.start, UTC),
            "baseline_end": datetime.fromtimestamp(fitted.end + HOUR_S, UTC),
            "meter_devices": list(site.meter.devices),
            "temperature_sensors": list(site.temperature.sensors),
            "temperature_source": site.temperature.source[:300],
            "monthly_cv_rmse": _finite(fitted.monthly.cv_rmse),
            "monthly_nmbe": _finite(fitted.monthly.nmbe),
            "passes_g14": fitted.passes_g14,
            "fitted_at": now,
        }
        if row is None:
            session.add(SiteBaseline(site_id=site.id, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
        kept.append(site.id)
    flush(session)
    return kept


# ---- predicting ------------------------------------------------------------------------------


CacheKey = tuple[str, str, str, float]
"""(site id, model month, model fitted at, period start)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    hour: int
    """The UTC hour (epoch hours) of the period ends it answers for."""
    prediction: DailyPrediction | None
    until: int = 0
    """The temperature read ends here (the end of :attr:`hour`)."""
    error: str | None = None
    expires: float | None = None
    """Monotonic time after which a failure is tried again (None: kept for its hour)."""


@dataclass(frozen=True, slots=True)
class _Stored:
    model: str
    temperature_sensors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    """Answers from the cache alone."""
    misses: int
    """Answers that needed a prediction: a whole one, or a refresh."""
    refreshes: int
    """Of the misses, those that predicted only the days not yet over (a new hour)."""
    entries: int


class StoredBaselines:
    """The dashboard's baseline source: the sites' stored models (module docstring).

    ``sessions`` and ``store`` are called for the registry's sessionmaker and the
    time-series store when they are needed (the API makes them at start-up, after this
    source); ``weather_dir`` is ``report_weather_dir``. Safe to call from several threads."""

    def __init__(
        self,
        sessions: Callable[[], sessionmaker[Session]],
        store: Callable[[], TimeSeriesStore],
        *,
        weather_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
        wait_s: float = BUSY_WAIT_S,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self.weather_dir = weather_dir
        self._clock = clock
        self._max_entries = max_entries
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._cache: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._refreshes = 0
        self._busy_until = -math.inf
        self._warm = threading.Event()
        self._warm.set()

    # -- the BaselineSource ----------------------------------------------------------------

    def expected_kwh(self, site: Site, start: datetime, end: datetime) -> float | None:
        t0, t1 = start.timestamp(), end.timestamp()
        version = self._version(site.id)
        if version is None:
            return None
        if t1 <= t0:
            return 0.0
        hour = math.floor(t1 / HOUR_S)
        key: CacheKey = (site.id, version[0], version[1], t0)
        entry, earlier = self._cached(key, hour)
        if entry is None:
            entry = self._predict(site, key, hour, earlier)
        if entry.prediction is None:
            raise BaselineUnavailable(entry.error or "no prediction")
        kwh, covered = entry.prediction.over(t0, t1)
        if covered < MIN_COVERAGE:
            raise BaselineUnavailable(
                f"site {site.id}: outdoor temperature for only {covered:.0%} of the period"
                f" (at least {MIN_COVERAGE:.0%} needed)"
            )
        return kwh / covered

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._refreshes, len(self._cache))

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- start-up -----------------------------------------------------------------------------

    def warm_up_in_background(self) -> threading.Thread | None:
        """Import eemeter and predict once with a stored model, in a daemon thread, so the
        first page does not pay for it (module docstring); None when eemeter is ready
        already, no model is stored (nothing to warm up for) or the registry cannot say."""
        if prediction_ready():
            return None
        try:
            with self._sessions()() as session, translate_errors():
                model = session.scalars(
                    select(SiteBaseline.model).order_by(SiteBaseline.site_id).limit(1)
                ).first()
        except CloudError as exc:
            log.warning("dashboard baselines: no warm-up, the registry failed: %s", exc)
            return None
        if model is None:
            return None
        self._warm.clear()
        thread = threading.Thread(
            target=self._warm_up, args=(model,), name="baseline-warm-up", daemon=True
        )
        thread.start()
        return thread

    def _warm_up(self, model: str) -> None:
        began = time.perf_counter()
        try:
            end = math.floor(time.time() / HOUR_S) * HOUR_S
            start = end - WARM_UP_DAYS * 86_400
            hours = np.arange(start, end, HOUR_S, dtype=np.int64)
            predict_daily(model, HourlyValues(hours, np.full(hours.size, 20.0)), start, end)
            log.info("dashboard baselines: eemeter ready in %.1f s", time.perf_counter() - began)
        except CloudError as exc:
            log.warning("dashboard baselines: the warm-up prediction failed: %s", exc)
        finally:
            self._warm.set()

    # -- internals -------------------------------------------------------------------------

    def _version(self, site_id: str) -> tuple[str, str] | None:
        """(month, fitted at) of the site's stored model, without loading the model."""
        with self._sessions()() as session, translate_errors():
            row = session.execute(
                select(SiteBaseline.month, SiteBaseline.fitted_at).where(
                    SiteBaseline.site_id == site_id
                )
            ).first()
        return None if row is None else (row[0], row[1].isoformat())

    def _cached(self, key: CacheKey, hour: int) -> tuple[_Entry | None, _Entry | None]:
        """The entry that answers for ``hour``, or None and the site's earlier prediction
        (to refresh) when there is one."""
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and entry.expires is not None and self._clock() >= entry.expires:
                del self._cache[key]
                entry = None
            if entry is not None and entry.hour == hour:
                self._cache.move_to_end(key)
                self._hits += 1
                return entry, None
            self._misses += 1
            earlier = entry if entry is not None and entry.prediction is not None else None
            return None, earlier if earlier is not None and earlier.hour < hour else None

    def _keep(self, key: CacheKey, entry: _Entry) -> _Entry:
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return entry

    def _predict(self, site: Site, key: CacheKey, hour: int, earlier: _Entry | None) -> _Entry:
        """Predict the period's days up to the end of ``hour``: all of them, or with an
        earlier prediction, only those that were not over when it was made or had no
        prediction (their temperature may have come in late since)."""
        t0 = key[3]
        until = (hour + 1) * HOUR_S
        if not self._warm.wait(WARM_WAIT_S):
            return _Entry(hour, None, error="eemeter is still starting")
        now = self._clock()
        if now < self._busy_until:
            return _Entry(hour, None, error="eemeter is busy fitting a report's baselines")
        kept, begin = 0, t0
        old = earlier.prediction if earlier is not None else None
        if earlier is not None and old is not None and old.starts.size:
            over = (old.ends <= earlier.until) & np.isfinite(old.kwh)
            kept = over.size if over.all() else int(np.argmin(over))
            begin = float(old.ends[-1] if kept == over.size else old.starts[kept])
        try:
            row = self._row(site.id)
            if row is None:  # removed since the version was read
                return _Entry(hour, None, error="the site's baseline was removed")
            temp = self._temperature(site.id, row, math.floor(begin / HOUR_S) * HOUR_S, until)
            fresh = predict_daily(row.model, temp, begin, until, wait_s=self._wait_s)
        except TimeoutError as exc:
            with self._lock:
                self._busy_until = self._clock() + BUSY_BACKOFF_S
            log.info("dashboard baselines: %s", exc)
            return _Entry(hour, None, error=f"eemeter is busy: {exc}")
        except CloudError as exc:
            log.warning("dashboard baselines: site %s: %s", site.id, exc)
            failed = _Entry(hour, None, error=str(exc), expires=self._clock() + ERROR_TTL_S)
            return self._keep(key, failed)
        if old is not None and kept:
            fresh = DailyPrediction(
                old.dates[:kept] + fresh.dates,
                np.concatenate([old.starts[:kept], fresh.starts]),
                np.concatenate([old.ends[:kept], fresh.ends]),
                np.concatenate([old.kwh[:kept], fresh.kwh]),
            )
            with self._lock:
                self._refreshes += 1
        return self._keep(key, _Entry(hour, fresh, until))

    def _row(self, site_id: str) -> _Stored | None:
        with self._sessions()() as session, translate_errors():
            row = session.execute(
                select(SiteBaseline.model, SiteBaseline.temperature_sensors).where(
                    SiteBaseline.site_id == site_id
                )
            ).first()
        return None if row is None else _Stored(row[0], tuple(row[1] or ()))

    def _temperature(self, site_id: str, row: _Stored, start: int, end: int) -> HourlyValues:
        path = weather_file(self.weather_dir, site_id)
        if path is not None:
            weather = read_weather_csv(path)
            keep = (weather.hours >= start) & (weather.hours < end)
            return HourlyValues(weather.hours[keep], weather.values[keep])
        if not row.temperature_sensors:
            raise BaselineUnavailable(
                f"site {site_id}: the baseline's outdoor temperature was a weather file"
                " that is not there any more"
            )
        found = sensor_temperature(self._store(), row.temperature_sensors, start, end)
        if found is None:
            raise BaselineUnavailable(
                f"site {site_id}: no outdoor temperature from its sensors in the period"
            )
        return found
