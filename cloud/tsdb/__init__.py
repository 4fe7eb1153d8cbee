"""Time-series stores: :class:`TimeSeriesStore` and its InfluxDB and SQLite implementations.

:func:`open_store` picks the one ``settings.tsdb`` names. The implementations are imported
there, not here, so that the SQLite path never imports httpx or influxdb-client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloud.errors import ConfigError
from cloud.tsdb.base import (
    MEASUREMENTS,
    TENANT_TAGS,
    EnergyInterval,
    FeatureRow,
    Latest,
    Point,
    SiteRollup,
    StoreStats,
    TimeSeriesStore,
)

if TYPE_CHECKING:
    from cloud.settings import Settings


def open_store(settings: Settings) -> TimeSeriesStore:
    """The store ``settings.tsdb`` names (``"sqlite"`` or ``"influxdb"``), configured from
    ``settings``. Opening SQLite creates its file; InfluxDB is first contacted by the
    store's first call (see :class:`cloud.tsdb.influx.InfluxStore`)."""
    if settings.tsdb == "sqlite":
        from cloud.tsdb.sqlite import SQLiteStore

        return SQLiteStore.from_settings(settings)
    if settings.tsdb == "influxdb":
        from cloud.tsdb.influx import InfluxStore

        return InfluxStore.from_settings(settings)
    raise ConfigError("EDGEWATCH_CLOUD_TSDB", f"{settings.tsdb!r} is not sqlite or influxdb")


__all__ = [
    "MEASUREMENTS",
    "TENANT_TAGS",
    "EnergyInterval",
    "FeatureRow",
    "Latest",
    "Point",
    "SiteRollup",
    "StoreStats",
    "TimeSeriesStore",
    "open_store",
]
