"""What the equipment-efficiency and fault-waste figures take: one unit's hours and its faults.

The report service (:mod:`cloud.reports`) builds these from the registry and the
time-series store; :mod:`cloud.energy.efficiency` and :mod:`cloud.energy.waste` compute
from them without knowing where they came from.

Hourly arrays
    Every array of a :class:`UnitHours` has one value per hour of the period, starting at
    :attr:`UnitHours.first_hour` (UTC, on the hour), NaN where nothing is known. Counters
    (``kwh``, ``runtime_h``, ``starts``) are what the counter advanced by in that hour
    (:func:`cloud.energy.counters.hourly_consumption`, wraps, resets and gaps handled);
    ``signals`` are the hour's mean of the point's window means (``<signal>__mean``
    features).

Running-state means (optional)
    A compressor cycles: at a few starts an hour most hours mix running and stopped
    minutes, and the hourly mean of a pressure mixes the running pressures with the
    equalising ones of the stops. ``running_signals`` are the same hourly means over only
    the windows in which the unit ran throughout (``run_state__duty`` = 1 of the window,
    or ``active_power__minimum`` > 0 / ``power__minimum`` > 0), NaN in hours without such
    a window. :mod:`cloud.energy.efficiency` estimates a compressor's COP from them; without
    them it falls back to the hours the unit ran almost throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud.errors import InvalidInput

F64 = npt.NDArray[np.float64]

HOUR_S: Final = 3600

SIGNALS: Final = (
    "suction_pressure",
    "discharge_pressure",
    "suction_temp",
    "discharge_temp",
    "superheat",
    "subcooling",
    "ambient_temp",
    "active_power",
    "current_l1",
    "current_l2",
    "current_l3",
    "vibration_rms",
    "power",
    "motor_current",
    "speed_rpm",
    "bearing_temp",
)
"""The signals whose hourly means the report service puts into :attr:`UnitHours.signals`
when a device reports them (the compressor profile ``ew-cc100`` and the fan profile
``ew-fc200`` name their points so)."""


@dataclass(frozen=True, slots=True)
class UnitHours:
    """One device's hourly figures over a report period (or a longer reference span)."""

    device_id: str
    asset_type: str
    site_id: str
    first_hour: int
    """Seconds since the epoch of the first hour (UTC, a multiple of 3600)."""
    kwh: F64
    """Energy per hour (kWh); NaN where missing."""
    runtime_h: F64 | None = None
    """Hours run per hour (the ``runtime_hours`` counter's advance); None without that counter."""
    starts: F64 | None = None
    """Starts per hour (the ``start_count`` counter's advance); None without that counter."""
    signals: Mapping[str, F64] = field(default_factory=dict)
    """Signal name (see :data:`SIGNALS`) → its hourly mean; only signals the device reports."""
    model: str | None = None
    """Make and model (``"Acme CC-100"``) for comparing like units; None when unknown."""
    name: str = ""
    """What people call the device (its registry name), for the report's text."""
    running_signals: Mapping[str, F64] = field(default_factory=dict)
    """Signal name → its hourly mean over the windows in which the unit ran throughout
    (see the module docstring); NaN in hours without such a window; empty when the service
    does not provide them."""

    def __post_init__(self) -> None:
        if self.first_hour % HOUR_S:
            raise InvalidInput(f"unit {self.device_id}.first_hour", "is not on the hour")
        n = len(self.kwh)
        arrays: dict[str, F64 | None] = {"runtime_h": self.runtime_h, "starts": self.starts}
        arrays.update({f"signals.{k}": v for k, v in self.signals.items()})
        arrays.update({f"running_signals.{k}": v for k, v in self.running_signals.items()})
        for what, values in arrays.items():
            if values is not None and len(values) != n:
                raise InvalidInput(
                    f"unit {self.device_id}.{what}", f"has {len(values)} hours, kwh has {n}"
                )

    @property
    def hours(self) -> int:
        return len(self.kwh)

    def hour_starts(self) -> npt.NDArray[np.int64]:
        """The hours' starts (seconds since the epoch, UTC)."""
        return self.first_hour + HOUR_S * np.arange(self.hours, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class FaultEpisode:
    """A work order of one unit: the fault the unit ran with, from when to when."""

    work_order_id: str
    number: str
    """The order's human number (``WO-000123``)."""
    device_id: str
    fault: str
    """The fault catalogue key (``condenser_fouling``, ``refrigerant_leak``, ...)."""
    opened_at: float
    """Seconds since the epoch."""
    closed_at: float | None
    """When the order was completed, closed or cancelled; None while it is open."""
    state: str
    failure_prevented: bool | None = None
    onset_at: float | None = None
    """When the fault is believed to have started (earliest evidence), when known."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.opened_at):
            raise InvalidInput(f"work order {self.number}.opened_at", "is not finite")
        if self.closed_at is not None and self.closed_at < self.opened_at:
            raise InvalidInput(f"work order {self.number}.closed_at", "is before opened_at")
