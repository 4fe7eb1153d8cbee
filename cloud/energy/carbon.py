"""CO2 from consumption: kg CO2e = kWh × the grid's emission factor (kg CO2e/kWh).

The factor is configured: one default for the service and, optionally, one per site
(:class:`GridFactors`). Every factor is checked to lie in ``[0, 2]`` kg/kWh
(:data:`MAX_GRID_FACTOR`: above what even a coal-only grid emits, so a factor in g/kWh
entered as kg/kWh is refused rather than reported a thousand times too high).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud.errors import InvalidInput

MAX_GRID_FACTOR: Final = 2.0
"""Largest grid factor accepted, kg CO2e/kWh."""


def check_grid_factor(value: object, where: str = "grid_factor") -> float:
    """``value`` as a grid factor (kg CO2e/kWh) or :class:`~cloud.errors.InvalidInput`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(where, f"{value!r} is not a number of kg CO2e/kWh")
    factor = float(value)
    if not (math.isfinite(factor) and 0.0 <= factor <= MAX_GRID_FACTOR):
        raise InvalidInput(
            where, f"{value!r} kg CO2e/kWh is not between 0 and {MAX_GRID_FACTOR} kg/kWh"
        )
    return factor


@dataclass(frozen=True, slots=True)
class GridFactors:
    """The service's default grid factor and per-site overrides (site id → factor)."""

    default: float
    sites: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_grid_factor(self.default, "grid_factors.default")
        for site_id, factor in self.sites.items():
            check_grid_factor(factor, f"grid_factors.sites[{site_id!r}]")

    def for_site(self, site_id: str) -> float:
        """The site's own factor, else the default."""
        return float(self.sites.get(site_id, self.default))


def co2_kg(kwh: float | npt.ArrayLike, factor: float) -> float:
    """kg CO2e of ``kwh`` (a figure or per-hour figures; NaN hours add nothing)."""
    factor = check_grid_factor(factor)
    return float(np.nansum(np.asarray(kwh, dtype=np.float64))) * factor
