"""CO2 from kWh and a validated grid factor."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.energy.carbon import GridFactors, check_grid_factor, co2_kg
from cloud.errors import InvalidInput


@pytest.mark.parametrize(
    ("kwh", "factor", "kg"),
    [
        (1234.5, 0.2, 246.9),  # 1234.5 × 0.2
        ([1.0, math.nan, 3.0], 0.5, 2.0),  # (1 + 3) × 0.5: the missing hour adds nothing
        (100.0, 0.0, 0.0),
        (10.0, 2.0, 20.0),  # the largest factor accepted
    ],
)
def test_co2(kwh: Any, factor: float, kg: float) -> None:
    assert co2_kg(kwh, factor) == pytest.approx(kg)


@pytest.mark.parametrize("value", [-0.1, 2.01, 233.0, math.nan, math.inf, "0.2", True, None])
def test_bad_grid_factor(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_grid_factor(value, "sites.s1.grid_factor")
    assert caught.value.where == "sites.s1.grid_factor"


def test_grid_factors_per_site_or_default() -> None:
    factors = GridFactors(default=0.25, sites={"s1": 0.1})
    assert (factors.for_site("s1"), factors.for_site("s2")) == (0.1, 0.25)
    with pytest.raises(InvalidInput) as caught:
        GridFactors(default=0.25, sites={"s1": 250.0})  # g/kWh entered as kg/kWh
    assert caught.value.where == "grid_factors.sites['s1']"
    with pytest.raises(InvalidInput) as caught:
        GridFactors(default=-1.0)
    assert caught.value.where == "grid_factors.default"


@given(
    kwh=st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
    factor=st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
)
def test_co2_is_linear(kwh: float, factor: float) -> None:
    assert co2_kg([kwh / 2, kwh / 2], factor) == pytest.approx(kwh * factor)
