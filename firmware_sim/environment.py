"""What the site imposes on its appliances: outdoor air, occupancy, supply voltage.

Ambient temperature is a seasonal cycle (hemisphere aware: the warmest day is in July
north of the equator and in January south of it), a daily cycle peaking mid-afternoon
in local solar time, and weather: two smooth random processes sampled hourly from the
site's own stream and interpolated (a synoptic anomaly of a few kelvin lasting days,
and cloudiness that damps the daily swing for hours).

Occupancy is a 0..1 profile by local hour for each site kind (hotel, mall, office,
home), different on weekdays and weekends. All functions take epoch seconds (float64
arrays) and return arrays of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from firmware_sim.fleet import Location, SiteSpec
from firmware_sim.streams import rng_stream

F64 = npt.NDArray[np.float64]

_DAY = 86400.0
_YEAR_DAYS = 365.25

# Occupancy by local hour (0..23), weekday then weekend, per site kind.
# fmt: off
_OCCUPANCY: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "office": (
        (0.02, 0.02, 0.02, 0.02, 0.02, 0.03, 0.08, 0.3, 0.75, 0.95, 0.95, 0.95,
         0.8, 0.9, 0.95, 0.95, 0.9, 0.6, 0.3, 0.12, 0.05, 0.03, 0.02, 0.02),
        (0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.03, 0.05, 0.08, 0.1, 0.1,
         0.1, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02),
    ),
    "mall": (
        (0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.05, 0.1, 0.25, 0.4, 0.55, 0.65,
         0.75, 0.7, 0.65, 0.65, 0.7, 0.8, 0.85, 0.75, 0.55, 0.3, 0.08, 0.04),
        (0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.04, 0.08, 0.2, 0.45, 0.7, 0.85,
         0.95, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.5, 0.25, 0.06, 0.04),
    ),
    "hotel": (
        (0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.85, 0.8, 0.6, 0.45, 0.4, 0.4,
         0.45, 0.45, 0.4, 0.4, 0.45, 0.55, 0.7, 0.8, 0.85, 0.85, 0.85, 0.8),
        (0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.75, 0.6, 0.55, 0.5,
         0.55, 0.55, 0.5, 0.55, 0.6, 0.65, 0.8, 0.9, 0.9, 0.9, 0.9, 0.85),
    ),
    "home": (
        (0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.85, 0.8, 0.5, 0.25, 0.2, 0.2,
         0.25, 0.2, 0.2, 0.25, 0.35, 0.6, 0.8, 0.85, 0.85, 0.85, 0.9, 0.9),
        (0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.85, 0.8, 0.7, 0.65,
         0.7, 0.65, 0.6, 0.6, 0.65, 0.75, 0.8, 0.85, 0.85, 0.85, 0.9, 0.9),
    ),
}

#: Occupancy above which the building counts as open (HVAC out of night setback).
OPEN_THRESHOLD: dict[str, float] = {"office": 0.15, "mall": 0.2, "hotel": 0.0, "home": 0.0}

# Grid load by local hour (voltage sags with it): morning and evening peaks.
_GRID = np.array(
    [0.3, 0.25, 0.2, 0.2, 0.2, 0.25, 0.4, 0.6, 0.7, 0.7, 0.65, 0.65,
     0.65, 0.6, 0.6, 0.6, 0.65, 0.8, 0.95, 1.0, 0.9, 0.75, 0.55, 0.4]
)
# fmt: on


@dataclass(frozen=True)
class Climate:
    """The deterministic part of a site's outdoor temperature."""

    mean_c: float
    annual_swing_c: float
    daily_swing_c: float
    warmest_day: float
    """Day of year (0-based) of the seasonal maximum."""
    lon: float


def climate_of(loc: Location) -> Climate:
    """A location's climate; means and swings default to rough functions of latitude."""
    alat = abs(loc.lat)
    mean = loc.mean_temp_c if loc.mean_temp_c is not None else 28.0 - 0.42 * max(0.0, alat - 12.0)
    swing = loc.annual_swing_c if loc.annual_swing_c is not None else min(16.0, 0.5 + 0.22 * alat)
    warmest = 200.0 if loc.lat >= 0 else 17.0
    return Climate(mean, swing, loc.daily_swing_c, warmest, loc.lon)


def nominal_voltage(loc: Location) -> float:
    """Three-phase line-to-line voltage of the region (the Americas 460 V, elsewhere 400 V)."""
    return 460.0 if loc.lon < -30.0 else 400.0


class _HourlyProcess:
    """A stationary AR(1) process sampled hourly from ``origin``, extended on demand.

    Samples are drawn strictly in order from the generator, so the values do not depend
    on how (in which chunks) the process is queried.
    """

    _BLOCK = 24 * 31

    def __init__(self, rng: np.random.Generator, tau_h: float, sigma: float, origin: float) -> None:
        self._rng = rng
        self._phi = math.exp(-1.0 / tau_h)
        self._sigma = sigma
        self._origin = origin
        self._values: F64 = np.empty(0)
        self._last = float(rng.normal(0.0, sigma))

    def _extend(self, count: int) -> None:
        phi, scale = self._phi, self._sigma * math.sqrt(1.0 - self._phi**2)
        while self._values.size < count:
            shocks = self._rng.normal(0.0, scale, self._BLOCK)
            block = np.empty(self._BLOCK)
            x = self._last
            for i in range(self._BLOCK):
                x = phi * x + shocks[i]
                block[i] = x
            self._last = x
            self._values = np.concatenate([self._values, block])

    def __call__(self, t: F64) -> F64:
        h = (t - self._origin) / 3600.0
        if h.size and float(h.min()) < 0:
            raise ValueError("weather is defined from the fleet start onwards")
        top = math.floor(float(h.max())) + 2 if h.size else 0
        self._extend(top)
        i = np.floor(h).astype(np.int64)
        frac = h - i
        return self._values[i] * (1.0 - frac) + self._values[i + 1] * frac


class SiteEnvironment:
    """Ambient temperature, occupancy and supply voltage of one site."""

    def __init__(self, site: SiteSpec, seed: int, origin: datetime) -> None:
        self.site = site
        self.climate = climate_of(site.location)
        self.voltage_nominal = nominal_voltage(site.location)
        try:
            self._tz = ZoneInfo(site.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self._tz = ZoneInfo("UTC")
        t0 = origin.timestamp() - 7200.0
        self._synoptic = _HourlyProcess(
            rng_stream(seed, "site", site.id, "synoptic"), tau_h=60.0, sigma=2.6, origin=t0
        )
        self._cloud = _HourlyProcess(
            rng_stream(seed, "site", site.id, "cloud"), tau_h=10.0, sigma=0.35, origin=t0
        )
        week, weekend = _OCCUPANCY[site.kind]
        self._occ = (np.array(week), np.array(weekend))
        self.open_threshold = OPEN_THRESHOLD[site.kind]

    def ambient(self, t: F64) -> F64:
        """Outdoor dry-bulb temperature, degC."""
        c = self.climate
        doy = (t / _DAY) % _YEAR_DAYS
        seasonal = c.annual_swing_c * np.cos(2 * np.pi * (doy - c.warmest_day) / _YEAR_DAYS)
        solar_h = (t / 3600.0 + c.lon / 15.0) % 24.0
        cloud = np.clip(1.0 - self._cloud(t), 0.25, 1.3)
        daily = 0.5 * c.daily_swing_c * cloud * np.cos(2 * np.pi * (solar_h - 15.0) / 24.0)
        out: F64 = c.mean_c + seasonal + daily + self._synoptic(t)
        return out

    def _local(self, t: F64) -> tuple[F64, npt.NDArray[np.bool_]]:
        """Local hour of day (float) and whether it is a weekend, honouring DST."""
        hours = np.floor(t / 3600.0)
        uniq, inv = np.unique(hours, return_inverse=True)
        offs = np.array(
            [
                (
                    datetime.fromtimestamp(h * 3600.0, UTC).astimezone(self._tz).utcoffset()
                    or _ZERO
                ).total_seconds()
                for h in uniq
            ]
        )
        local = t + offs[inv]
        hour = (local % _DAY) / 3600.0
        weekday = (np.floor(local / _DAY).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
        return hour, weekday >= 5

    def occupancy(self, t: F64) -> tuple[F64, F64]:
        """Occupancy (0..1) and grid load (0..1, drives voltage sag) at ``t``."""
        hour, weekend = self._local(t)
        i = np.floor(hour).astype(np.int64) % 24
        j = (i + 1) % 24
        frac = hour - np.floor(hour)
        week, wkend = self._occ
        occ_week = week[i] * (1 - frac) + week[j] * frac
        occ_end = wkend[i] * (1 - frac) + wkend[j] * frac
        occ: F64 = np.where(weekend, occ_end, occ_week)
        grid: F64 = _GRID[i] * (1 - frac) + _GRID[j] * frac
        return occ, grid


_ZERO = datetime(2000, 1, 1, tzinfo=UTC) - datetime(2000, 1, 1, tzinfo=UTC)
