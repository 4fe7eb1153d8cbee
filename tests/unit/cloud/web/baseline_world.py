"""Baselines for the dashboard's tests: a daily CalTRACK model of a Dubai site, stored as the
report service stores it, outdoor temperatures in the store, and eemeter's own prediction
for them computed without :mod:`cloud.reports.baselines`.

- :func:`fit_dubai_model`: eemeter's daily model (through
  :func:`cloud.energy.baseline.fit_baseline`) of a year of a synthetic cooling load in
  Asia/Dubai, as its JSON.
- :func:`store_model`: a ``site_baselines`` row for a site.
- :func:`write_temperatures`: one ``ambient_temp`` window a minute past every UTC hour,
  from ``first`` up to ``now``, at ``celsius(hour)`` (so each hour's mean is that value).
- :func:`eemeter_expected_kwh`: what eemeter's ``DailyModel`` predicts for local days at
  those hourly temperatures, each day counted for its share inside ``[start, end)``.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.energy.baseline import (
    Baseline,
    HourlyValues,
    fit_baseline,
    predict_daily,
    prediction_ready,
    warm_up,
)
from cloud.reports.models import SiteBaseline
from cloud.tsdb.base import Point, to_ns
from cloud.tsdb.sqlite import SQLiteStore

ZONE = "Asia/Dubai"
HOUR = 3600


def synthetic_year(seed: int = 1) -> tuple[HourlyValues, HourlyValues]:
    """A year of hourly kWh that rises 0.3 kWh per °C above 22 °C, and its temperature."""
    start = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) - 4 * HOUR  # Dubai midnight
    hours = np.arange(start, start + 365 * 24 * HOUR, HOUR, dtype=np.int64)
    rng = np.random.default_rng(seed)
    day = (hours - start) / 86_400
    hour_of_day = ((hours - start) // HOUR) % 24
    temp = (
        28.0
        - 8.0 * np.cos(2 * np.pi * (day - 200) / 365)
        + 4.0 * np.sin(2 * np.pi * (hour_of_day - 9) / 24)
        + rng.normal(0, 1.0, hours.size)
    )
    kwh = 1.0 + 0.3 * np.maximum(temp - 22.0, 0.0) + rng.normal(0, 0.1, hours.size)
    return HourlyValues(hours, kwh), HourlyValues(hours, temp)


def fit_dubai_model() -> str:
    """The model's JSON, once predicted with (:func:`cloud.energy.baseline.predict_daily`),
    so that apps started afterwards need no warm-up thread: one in the background would
    share the process's warning filters with the requests of the test."""
    kwh, temp = synthetic_year()
    result = fit_baseline(kwh, temp, timezone=ZONE)
    assert isinstance(result, Baseline), str(result)
    assert not result.disqualification
    json_text: str = result.model.to_json()
    end = int(kwh.hours[-1]) + HOUR
    predict_daily(json_text, temp, end - 2 * 86_400, end)
    assert prediction_ready()
    return json_text


def store_model(url: str, site_id: str, model: str, sensors: list[str], month: str) -> None:
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            s.merge(
                SiteBaseline(
                    site_id=site_id,
                    month=month,
                    kind="daily",
                    model=model,
                    timezone=ZONE,
                    baseline_start=datetime(2025, 1, 1, tzinfo=UTC),
                    baseline_end=datetime(2026, 1, 1, tzinfo=UTC),
                    meter_devices=list(sensors),
                    temperature_sensors=list(sensors),
                    temperature_source="sensors: test",
                    monthly_cv_rmse=0.01,
                    monthly_nmbe=0.0,
                    passes_g14=True,
                    fitted_at=datetime.now(UTC),
                )
            )
    finally:
        engine.dispose()


def write_temperatures(
    path: Path,
    tags: Mapping[str, str],
    celsius: Callable[[int], float],
    first: datetime,
    now: datetime,
) -> dict[int, float]:
    """The windows written, as hour start → °C (the hours whose window is at or before now)."""
    store = SQLiteStore(path)
    written: dict[int, float] = {}
    try:
        hour = math.floor(first.timestamp() / HOUR) * HOUR
        points = []
        while hour + 60 <= now.timestamp():
            written[hour] = celsius(hour)
            points.append(
                Point(
                    "features",
                    to_ns(hour + 60),
                    {**tags, "group": "default"},
                    {"ambient_temp__mean": written[hour]},
                )
            )
            hour += HOUR
        store.write(points)
    finally:
        store.close()
    return written


def eemeter_expected_kwh(
    model: str, celsius: Mapping[int, float], start: datetime, end: datetime, zone: str = ZONE
) -> float:
    """eemeter's own expectation for ``[start, end)``: ``DailyModel.from_json`` predicting
    the local days from the hourly temperatures inside the period, each day weighted by
    the share of it inside the period."""
    warm_up()  # imports eemeter with its side effects on sklearn and the environment undone
    em = importlib.import_module("eemeter.eemeter")
    t0, t1 = start.timestamp(), end.timestamp()
    hours = sorted(h for h in celsius if t0 <= h < t1)
    index = pd.DatetimeIndex(pd.to_datetime(hours, unit="s", utc=True)).tz_convert(zone)
    series = pd.Series([celsius[h] * 1.8 + 32 for h in hours], index=index)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        data = em.DailyReportingData.from_series(None, series, tzinfo=index.tz)
        predicted = em.DailyModel.from_json(model).predict(data)["predicted"]
    total = 0.0
    for midnight, kwh in predicted.items():
        day_start = midnight.timestamp()
        day_end = (midnight + pd.Timedelta(days=1)).timestamp()
        inside = max(0.0, min(day_end, t1) - max(day_start, t0))
        total += float(kwh) * inside / (day_end - day_start)
    return total
