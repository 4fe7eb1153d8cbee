"""Energy counters → hourly kWh: wraps, resets, gaps, implausible readings, against
hand-computed figures (the arithmetic is in the comments)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.energy.counters import (
    DEFAULT_MAX_KW,
    CounterSpec,
    HourFlag,
    counter_spec,
    hourly_consumption,
    max_power_kw,
)
from cloud.errors import InvalidInput
from cloud.tsdb.base import NS_PER_S, EnergyInterval, energy_intervals
from edge_agent.profiles import builtin_profiles, parse_profile

H = 3600
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
N = math.nan
CC100 = counter_spec(builtin_profiles()["ew-cc100"])
"""uint32 × 0.1 kWh: modulus 2**32 × 0.1 = 429,496,729.6 kWh."""
PLAIN = CounterSpec()
"""kWh, no wrap."""
FLAGS = {
    "M": HourFlag.MEASURED,
    "R": HourFlag.RESET,
    "E": HourFlag.ESTIMATED,
    "-": HourFlag.MISSING,
}


def rows(
    readings: Sequence[float | None], t0: int = T0, counter: str = "energy"
) -> list[EnergyInterval]:
    """One hourly row per reading from ``t0`` (``consumed`` is not read, so ``None``)."""
    return [EnergyInterval(t0 + i * H, counter, v, None) for i, v in enumerate(readings)]


def flags(text: str) -> list[int]:
    return [int(FLAGS[c]) for c in text]


CASES: list[Any] = [
    pytest.param(
        # 429,496,700.0 → 429,496,720.0: +20.0; then the counter wraps:
        # (2**32 × 0.1 − 429,496,720.0) + 5.0 = 9.6 + 5.0 = 14.6 kWh (not just 5.0);
        # its largest reading is 429,496,729.5 and 0.0 comes one tenth later, hence the
        # modulus 429,496,729.6, not 429,496,729.5 (which would give 14.5); then 5 → 12: +7.
        CC100,
        [429_496_700.0, 429_496_720.0, 5.0, 12.0],
        {"max_kw": 30.0},
        [N, 20.0, 14.6, 7.0],
        "-MMM",
        {"wraps": 1},
        id="uint32x0.1-wrap",
    ),
    pytest.param(
        # A drop from 729.6 kWh below the wrap value: wrap-aware advance 729.6 + 3.0 = 732.6
        # is more than 30 kW × 1 h, so it is no wrap but a reset: 3.0 counts.
        CC100,
        [429_496_000.0, 3.0],
        {"max_kw": 30.0},
        [N, 3.0],
        "-R",
        {"resets": 1},
        id="drop-far-below-wrap-is-reset",
    ),
    pytest.param(
        # 100 → 103: +3.0; reset to 0 and 0.5 by the end of the hour: 0.5; 0.5 → 2.5: +2.0.
        CC100,
        [100.0, 103.0, 0.5, 2.5],
        {"max_kw": 30.0},
        [N, 3.0, 0.5, 2.0],
        "-MRM",
        {"resets": 1},
        id="controller-reset",
    ),
    pytest.param(
        # Reset to exactly 0.0: 0.0 counts; 0 → 1: +1.0.
        PLAIN,
        [100.0, 0.0, 1.0],
        {"max_kw": 30.0},
        [N, 0.0, 1.0],
        "-RM",
        {"resets": 1},
        id="reset-to-zero",
    ),
    pytest.param(
        # 1000 → 1002: +2.0; five hours without a reading; 1014 closes the gap:
        # 1014 − 1002 = 12.0 spread over the 5 empty hours + the closing hour = 6 h → 2.0 each;
        # 1014 → 1015.5: +1.5. Total 2 + 12 + 1.5 = 15.5 = 1015.5 − 1000 (preserved).
        PLAIN,
        [1000.0, 1002.0, None, None, None, None, None, 1014.0, 1015.5],
        {"max_kw": 30.0},
        [N, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.5],
        "-MEEEEEEM",
        {},
        id="5-hour-gap-spread",
    ),
    pytest.param(
        # A wrap inside a 2-hour gap: (429,496,729.6 − 429,496,726.6) + 6.0 = 9.0 over 3 h = 3.0.
        CC100,
        [429_496_726.6, None, None, 6.0],
        {"max_kw": 30.0},
        [N, 3.0, 3.0, 3.0],
        "-EEE",
        {"wraps": 1},
        id="wrap-inside-gap",
    ),
    pytest.param(
        # A reset inside a gap: 100 → (reset) → 4.0: 4.0 over 2 h = 2.0 each (a lower bound).
        PLAIN,
        [100.0, None, 4.0],
        {"max_kw": 30.0},
        [N, 2.0, 2.0],
        "-EE",
        {"resets": 1},
        id="reset-inside-gap",
    ),
    pytest.param(
        # Limit 3 h, gap of 3 h: 14 − 10 = 4.0 over 4 h = 1.0 each.
        PLAIN,
        [10.0, None, None, None, 14.0],
        {"max_kw": 30.0, "max_gap_h": 3},
        [N, 1.0, 1.0, 1.0, 1.0],
        "-EEEE",
        {},
        id="gap-at-limit-spread",
    ),
    pytest.param(
        # Limit 3 h, gap of 4 h: 20 − 11 = 9 kWh not spread; the 4 empty hours and the one
        # closing the gap are missing; 20 → 21: +1.0.
        PLAIN,
        [10.0, 11.0, None, None, None, None, 20.0, 21.0],
        {"max_kw": 30.0, "max_gap_h": 3},
        [N, 1.0, N, N, N, N, N, 1.0],
        "-M-----M",
        {"long_gaps": 1},
        id="gap-over-limit-missing",
    ),
    pytest.param(
        # Max 10 kW. 50 → 52: +2.0; 9050 is +8998 in 1 h: implausible, and 56 is plausible
        # again (56 − 52 = 4 ≤ 10 kW × 2 h): a spike, dropped; 4.0 spread over 2 h = 2.0 each;
        # 56 → 57: +1.0. Total 7.0 = 57 − 50.
        PLAIN,
        [50.0, 52.0, 9050.0, 56.0, 57.0],
        {"max_kw": 10.0},
        [N, 2.0, 2.0, 2.0, 1.0],
        "-MEEM",
        {"rejected": {"above_max_power": 1}},
        id="spike-rejected",
    ),
    pytest.param(
        # Max 10 kW. 10 → 12: +2; 5000 is implausible and stays (5001 − 12 = 4989 > 20):
        # the counter was set to a new value; its hour is unknown, 5000 → 5001: +1.0.
        PLAIN,
        [10.0, 12.0, 5000.0, 5001.0],
        {"max_kw": 10.0},
        [N, 2.0, N, 1.0],
        "-M-M",
        {"rejected": {"counter_jump": 1}},
        id="counter-jump",
    ),
    pytest.param(
        # −3 is no reading: dropped; 12 − 10 = 2.0 over 2 h = 1.0 each.
        PLAIN,
        [10.0, -3.0, 12.0],
        {"max_kw": 30.0},
        [N, 1.0, 1.0],
        "-EE",
        {"rejected": {"negative_reading": 1}},
        id="negative-reading",
    ),
    pytest.param(
        PLAIN,
        [None, 5.0, 6.0],
        {"max_kw": 30.0},
        [N, N, 1.0],
        "--M",
        {},
        id="nothing-before-first-reading",
    ),
    pytest.param(PLAIN, [None, None], {"max_kw": 30.0}, [N, N], "--", {}, id="no-readings"),
    pytest.param(
        # A Wh counter: 1,000 Wh → 3,500 Wh = 2.5 kWh.
        CounterSpec(to_kwh=0.001),
        [1000.0, 3500.0],
        {"max_kw": 30.0},
        [N, 2.5],
        "-M",
        {},
        id="wh-counter",
    ),
]


@pytest.mark.parametrize(("spec", "readings", "kwargs", "kwh", "flag_text", "counts"), CASES)
def test_hourly_consumption(
    spec: CounterSpec,
    readings: list[float | None],
    kwargs: dict[str, Any],
    kwh: list[float],
    flag_text: str,
    counts: dict[str, Any],
) -> None:
    series = hourly_consumption(rows(readings), spec, **kwargs)
    assert series.hours.tolist() == [T0 + i * H for i in range(len(readings))]
    np.testing.assert_allclose(series.kwh, kwh, rtol=0, atol=1e-6, equal_nan=True)
    assert series.flags.tolist() == flags(flag_text)
    expected = {"wraps": 0, "resets": 0, "long_gaps": 0, "rejected": {}, **counts}
    got = {k: getattr(series, k) for k in expected}
    assert got == expected
    assert series.measured_hours == flag_text.count("M") + flag_text.count("R")
    assert series.estimated_hours == flag_text.count("E")
    assert series.missing_hours == flag_text.count("-")


def test_estimated_kwh_and_total() -> None:
    # The 5-hour-gap case: 15.5 kWh in all, 6 × 2.0 = 12.0 of it estimated.
    series = hourly_consumption(
        rows([1000.0, 1002.0, None, None, None, None, None, 1014.0, 1015.5]), PLAIN, max_kw=30.0
    )
    assert series.total_kwh == pytest.approx(15.5)
    assert series.estimated_kwh == pytest.approx(12.0)


def test_readings_outside_the_period_bridge_its_edges() -> None:
    # Readings at T0−2h (100) and T0 (104), none at T0−1h: 4.0 over 2 h = 2.0 each, of
    # which only the hour T0 is in the period; T0 → T0+1h: +1.0. The reading at T0+3h
    # (111, after a gap at T0+2h) closes a gap whose first hour, T0+2h, is in the period:
    # (111 − 105) / 2 = 3.0.
    readings = [100.0, None, 104.0, 105.0, None, 111.0]
    series = hourly_consumption(
        rows(readings, t0=T0 - 2 * H), PLAIN, max_kw=30.0, start=T0, end=T0 + 3 * H
    )
    assert series.hours.tolist() == [T0, T0 + H, T0 + 2 * H]
    np.testing.assert_allclose(series.kwh, [2.0, 1.0, 3.0])
    assert series.flags.tolist() == flags("EME")


def test_period_is_rounded_out_to_whole_hours() -> None:
    series = hourly_consumption(rows([1.0, 2.0]), PLAIN, max_kw=30.0, start=T0 + 1, end=T0 + H + 1)
    assert series.hours.tolist() == [T0, T0 + H]


def test_counts_only_events_of_the_period() -> None:
    # The reset (hour 1) and the spike (hour 3) lie before the period [T0+5h, T0+7h).
    readings = [100.0, 0.5, 1.5, 900.0, 3.5, 4.5, 5.5]
    series = hourly_consumption(
        rows(readings), PLAIN, max_kw=10.0, start=T0 + 5 * H, end=T0 + 7 * H
    )
    assert (series.resets, series.rejected) == (0, {})
    np.testing.assert_allclose(series.kwh, [1.0, 1.0])


def test_other_counters_are_ignored() -> None:
    mixed = rows([1.0, 2.0]) + rows([50.0, 10.0], counter="runtime_hours")
    series = hourly_consumption(mixed, PLAIN, max_kw=30.0)
    np.testing.assert_allclose(series.kwh, [N, 1.0], equal_nan=True)


def test_no_rows_and_no_period_is_empty() -> None:
    series = hourly_consumption([], PLAIN, max_kw=30.0)
    assert (series.hours.size, series.kwh.size, series.flags.size) == (0, 0, 0)


@pytest.mark.parametrize(
    ("given", "kwargs", "where"),
    [
        (
            [EnergyInterval(T0, "energy", 1.0, None), EnergyInterval(T0 + 60, "energy", 2.0, None)],
            {},
            "rows[1].start",
        ),
        (
            [EnergyInterval(T0, "energy", 1.0, None), EnergyInterval(T0, "energy", 2.0, None)],
            {},
            "rows[1].start",
        ),
        ([EnergyInterval(math.inf, "energy", 1.0, None)], {}, "rows[0].start"),
        (rows([1.0]), {"max_kw": 0.0}, "max_kw"),
        (rows([1.0]), {"max_kw": math.nan}, "max_kw"),
        (rows([1.0]), {"max_gap_h": -1}, "max_gap_h"),
        (rows([1.0]), {"start": T0 + 2 * H, "end": T0}, "end"),
        (rows([1.0]), {"start": math.nan}, "start"),
        ([], {"end": T0}, "rows"),
    ],
)
def test_bad_input_names_the_value(
    given: list[EnergyInterval], kwargs: dict[str, Any], where: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        hourly_consumption(given, PLAIN, **{"max_kw": 30.0, **kwargs})
    assert caught.value.where == where


# ---- counter specs from device profiles -----------------------------------------------------


def test_counter_specs_of_the_shipped_profiles() -> None:
    cc100 = counter_spec(builtin_profiles()["ew-cc100"])
    fc200 = counter_spec(builtin_profiles()["ew-fc200"])
    assert (cc100.name, cc100.to_kwh, cc100.wrap) == ("energy", 1.0, 2**32 * 0.1)
    assert cc100.wrap == pytest.approx(429_496_729.6)
    # uint64 counting Wh, scaled 0.001 to kWh: modulus 2**64 × 0.001 kWh
    assert (fc200.name, fc200.to_kwh, fc200.wrap) == ("energy", 1.0, 2**64 * 0.001)


def _profile(**energy: Any) -> Any:
    point = {
        "name": "energy",
        "kind": "counter",
        "table": "input",
        "address": 0,
        "type": "uint16",
        "unit": "kWh",
        **energy,
    }
    return parse_profile(
        {"schema_version": 1, "id": "ew-test", "asset_type": "compressor", "points": [point]}
    )


@pytest.mark.parametrize(
    ("energy", "spec"),
    [
        ({"type": "uint16", "unit": "Wh"}, CounterSpec("energy", 0.001, 65536.0)),
        (
            {"type": "uint32", "scale": 0.01, "unit": "MWh"},
            CounterSpec("energy", 1000.0, 2**32 * 0.01),
        ),
        ({"type": "int32"}, CounterSpec("energy", 1.0, None)),
        ({"type": "float32"}, CounterSpec("energy", 1.0, None)),
    ],
)
def test_counter_spec_derives_wrap_and_unit(energy: dict[str, Any], spec: CounterSpec) -> None:
    assert counter_spec(_profile(**energy)) == spec


@pytest.mark.parametrize(
    ("profile", "name", "where"),
    [
        (
            builtin_profiles()["ew-cc100"],
            "runtime_hours",
            "profile ew-cc100 point runtime_hours.unit",
        ),
        (
            builtin_profiles()["ew-cc100"],
            "suction_temp",
            "profile ew-cc100 point suction_temp.kind",
        ),
        (builtin_profiles()["ew-cc100"], "nope", "profile ew-cc100 point nope"),
        (_profile(scale=-0.1), "energy", "profile ew-test point energy.scale"),
    ],
)
def test_counter_spec_refuses(profile: Any, name: str, where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        counter_spec(profile, name)
    assert caught.value.where == where


def test_max_power_from_rating() -> None:
    assert max_power_kw(20.0) == 30.0  # 20 kW × 1.5
    assert max_power_kw() == DEFAULT_MAX_KW
    assert max_power_kw(fallback_kw=50.0) == 50.0
    with pytest.raises(InvalidInput, match="rated_kw"):
        max_power_kw(0.0)


# ---- properties ----------------------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=50.0, allow_nan=False),
        st.booleans(),  # reading present?
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(start=st.floats(min_value=0.0, max_value=1e6, allow_nan=False), steps=steps)
def test_gap_spreading_preserves_the_total(start: float, steps: list[tuple[float, bool]]) -> None:
    """Whatever the gaps (within the limit), the hours add up to last − first reading."""
    readings: list[float | None] = [start]
    value = start
    for advance, present in steps:
        value += advance
        readings.append(value if present else None)
    readings[-1] = value  # the last reading closes any gap
    series = hourly_consumption(rows(readings), PLAIN, max_kw=100.0, max_gap_h=len(readings))
    assert series.missing_hours == 1  # only the first hour: nothing before it
    assert series.total_kwh == pytest.approx(value - start, rel=1e-9, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.floats(min_value=0.0, max_value=20.0, allow_nan=False),  # an advance
            st.just(-1.0),  # a reset to 0
            st.none(),  # no reading
        ),
        min_size=1,
        max_size=60,
    )
)
def test_agrees_with_the_store_where_it_has_a_figure(steps: list[float | None]) -> None:
    """Fed the store's own rows, every hour the store gives a figure is MEASURED or RESET
    here, with the same figure (no wrap value, nothing implausible)."""
    lasts: dict[int, dict[str, float]] = {}
    value = 5.0
    lasts[T0 * NS_PER_S] = {"energy": value}
    for i, step in enumerate(steps, start=1):
        if step is None:
            continue
        value = 0.0 if step < 0 else value + step
        lasts[(T0 + i * H) * NS_PER_S] = {"energy": value}
    grid = range(T0 * NS_PER_S, (T0 + (len(steps) + 1) * H) * NS_PER_S, H * NS_PER_S)
    store_rows = energy_intervals(grid, lasts)
    series = hourly_consumption(store_rows, PLAIN, max_kw=1e9)
    for i, row in enumerate(store_rows):
        if row.consumed is None:
            assert series.flags[i] != HourFlag.MEASURED
        else:
            assert series.flags[i] in (HourFlag.MEASURED, HourFlag.RESET)
            assert series.kwh[i] == pytest.approx(row.consumed)
