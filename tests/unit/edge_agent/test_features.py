"""Window features: hand-computed values, pandas parity, invariants."""

from __future__ import annotations

import cmath
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.features import (
    COUNTER_FEATURES,
    FEATURE_SET_VERSION,
    QUANTILES,
    SIGNAL_FEATURES,
    STATE_FEATURES,
    check_feature_names,
    counter_features,
    feature_vector,
    parse_feature_name,
    signal_features,
    state_features,
)

NAN = float("nan")

# x = 2 4 4 4 5 5 7 9: mean 5, deviations -3 -1 -1 -1 0 0 2 4,
# Σd² = 32, Σd³ = 42, Σd⁴ = 356, Σx² = 232, n = 8.
X = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
T = [100.0 + 2 * i for i in range(8)]  # polled every 2 s
HAND = {
    "mean": 5.0,
    "standard_deviation": 2.0,
    "variance": 4.0,
    "minimum": 2.0,
    "maximum": 9.0,
    "median": 4.5,
    "quantile__q_0.1": 2 + 0.7 * (4 - 2),  # position 0.7
    "quantile__q_0.25": 4.0,  # position 1.75, between 4 and 4
    "quantile__q_0.75": 5 + 0.25 * (7 - 5),  # position 5.25
    "quantile__q_0.9": 7 + 0.3 * (9 - 7),  # position 6.3
    "root_mean_square": math.sqrt(232 / 8),
    "abs_energy": 232.0,
    "skewness": 8 * 7**0.5 / 6 * 42 / 32**1.5,
    "kurtosis": 8 * 9 * 7 * 356 / (6 * 5 * 32**2) - 3 * 7**2 / (6 * 5),
    # positions 0..7 (mean 3.5): Σ(i - 3.5)(x - 5) = 34, Σ(i - 3.5)² = 42
    'linear_trend__attr_"slope"': 34 / 42,
    "mean_change": (9 - 2) / 7,
    "mean_abs_change": (2 + 0 + 0 + 1 + 0 + 2 + 2) / 7,
    "absolute_sum_of_changes": 7.0,
    "number_crossing_m__m_0": 0.0,
    "count_above_mean": 2.0,
    "count_below_mean": 4.0,
    "trend_per_s": 34 / 42 / 2,
    # deviations d: Σ d_k·d_{k+1} = 3 + 1 + 1 + 0 + 0 + 0 + 8 = 13; σ² = 4
    "autocorrelation__lag_1": 13 / (7 * 4),
}


def _dft_amplitudes(x: list[float]) -> list[float]:
    """|X_j| for j = 0 .. n//2, by the DFT's definition (no FFT)."""
    n = len(x)
    return [
        abs(sum(v * cmath.exp(-2j * math.pi * j * k / n) for k, v in enumerate(x)))
        for j in range(n // 2 + 1)
    ]


def _spectral_by_definition(x: list[float]) -> dict[str, float]:
    a = _dft_amplitudes(x)
    mu = [sum(j**p * aj for j, aj in enumerate(a)) / sum(a) for p in range(5)]
    var = mu[2] - mu[1] ** 2
    skew = (mu[3] - 3 * mu[1] * var - mu[1] ** 3) / var**1.5
    kurt = (mu[4] - 4 * mu[1] * mu[3] + 6 * mu[2] * mu[1] ** 2 - 3 * mu[1]) / var**2
    mean = sum(x) / len(x)
    power = [p**2 for p in _dft_amplitudes([v - mean for v in x])[1:]]  # M = n//2 bins
    m = len(power)
    bands = [sum(p for j, p in enumerate(power) if 4 * j // m == k) for k in range(4)]
    return {
        'fft_aggregated__aggtype_"centroid"': mu[1],
        'fft_aggregated__aggtype_"variance"': var,
        'fft_aggregated__aggtype_"skew"': skew if var >= 0.5 else NAN,
        'fft_aggregated__aggtype_"kurtosis"': kurt if var >= 0.5 else NAN,
        **{f"band_energy__b_{k}": b / sum(power) for k, b in enumerate(bands)},
    }


# n = 8: bins 0..4; band k of the mean-removed power is bin k + 1 alone.
HAND.update(_spectral_by_definition(X))


def test_every_signal_feature_has_a_hand_computed_value() -> None:
    assert set(HAND) == set(SIGNAL_FEATURES)
    assert FEATURE_SET_VERSION == 3
    assert tuple(f"quantile__q_{q}" for q in QUANTILES) == tuple(
        f for f in SIGNAL_FEATURES if f.startswith("quantile")
    )


@pytest.mark.parametrize("feature", sorted(HAND))
def test_signal_feature_against_hand_computed_value(feature: str) -> None:
    assert signal_features(np.array(X), np.array(T))[feature] == pytest.approx(
        HAND[feature], rel=1e-12
    )


@pytest.mark.parametrize(
    ("x", "feature", "expected"),
    [
        ([-1.0, 2.0, -3.0, 4.0, 5.0], "number_crossing_m__m_0", 3.0),
        ([0.0, 1.0, 0.0], "number_crossing_m__m_0", 2.0),  # 0 is not > 0
        ([1.0, 3.0], "skewness", NAN),  # needs 3
        ([1.0, 3.0, 8.0], "kurtosis", NAN),  # needs 4
        ([1.0, 2.0, 4.0], "skewness", 3 * 2**0.5 / 1 * (20 / 9) / (14 / 3) ** 1.5),
        ([3.0, 3.0, 3.0, 3.0], "skewness", 0.0),  # pandas: 0 for a constant
        ([3.0, 3.0, 3.0, 3.0], "kurtosis", 0.0),
        ([3.0, 3.0, 3.0, 3.0], "standard_deviation", 0.0),
        ([3.0, 3.0, 3.0, 3.0], 'linear_trend__attr_"slope"', 0.0),
        ([0.0, NAN, 2.0], 'linear_trend__attr_"slope"', 1.0),  # by position in the window
        ([5.0, NAN, NAN, 5.0, 7.0], "mean_abs_change", 1.0),  # over the valid samples
        ([1.0, NAN], "mean", NAN),  # fewer than 2 valid samples
        ([1.0, math.inf, 3.0], "mean", 2.0),  # non-finite is missing
        ([], "maximum", NAN),
    ],
)
def test_signal_feature_edge_cases(x: list[float], feature: str, expected: float) -> None:
    value = signal_features(np.array(x, dtype=float))[feature]
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_trend_per_s_needs_times_and_uses_them() -> None:
    assert math.isnan(signal_features(X)["trend_per_s"])
    irregular = signal_features([0.0, 1.0, 2.0], t=[0.0, 1.0, 4.0])
    # t mean 5/3, x mean 1: Σ(t - 5/3)(x - 1) = 5/3 + 0 + 7/3 = 4; Σ(t - 5/3)² = 26/3
    assert irregular["trend_per_s"] == pytest.approx(4 / (26 / 3))


def test_skewness_and_kurtosis_equal_pandas() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(7)
    for n in (3, 4, 5, 17, 300):
        x = rng.gamma(2.0, 3.0, size=n) + 40
        f = signal_features(x)
        s = pd.Series(x)
        assert f["skewness"] == pytest.approx(s.skew(), rel=1e-9)
        if n >= 4:
            assert f["kurtosis"] == pytest.approx(s.kurtosis(), rel=1e-9, abs=1e-12)
        assert f["standard_deviation"] == pytest.approx(s.std(ddof=0), rel=1e-12)
        assert f["median"] == pytest.approx(s.median())
        assert f["quantile__q_0.1"] == pytest.approx(s.quantile(0.1))


@pytest.mark.parametrize(
    ("x", "t", "expected"),
    [
        ([100.0, 105.0, 110.0, 3.0, 8.0], None, {"delta": 18.0, "resets": 1.0}),
        ([100.0, NAN, 110.0], None, {"delta": 10.0, "resets": 0.0}),
        ([7.0, 7.0, 7.0], None, {"delta": 0.0, "resets": 0.0}),
        ([4294967290.0, 5.0, 9.0], None, {"delta": 9.0, "resets": 1.0}),  # wrap: from 0
        ([10.0, 20.0, 0.0, 0.0], None, {"delta": 10.0, "resets": 1.0}),
        ([100.0, 105.0, 110.0, 3.0, 8.0], [0, 10, 20, 30, 40], {"rate_per_s": 18 / 40}),
        ([100.0, 105.0], None, {"rate_per_s": NAN}),
        ([100.0, 105.0], [5.0, 5.0], {"rate_per_s": NAN}),
        ([100.0], None, {"delta": NAN}),
    ],
)
def test_counter_features(
    x: list[float], t: list[float] | None, expected: dict[str, float]
) -> None:
    got = counter_features(x, t)
    assert set(got) == set(COUNTER_FEATURES)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, nan_ok=True)


@pytest.mark.parametrize(
    ("x", "duty", "changes"),
    [
        ([0.0, 1.0, 1.0, 2.0, 0.0, NAN], 3 / 5, 3.0),
        ([1.0, 1.0, 1.0], 1.0, 0.0),
        ([0.0, 0.0], 0.0, 0.0),
        ([True, False, True, NAN, True], 3 / 4, 2.0),
        ([1.0], NAN, NAN),
    ],
)
def test_state_features(x: list[float], duty: float, changes: float) -> None:
    got = state_features(np.array(x, dtype=float))
    assert set(got) == set(STATE_FEATURES)
    assert got["duty"] == pytest.approx(duty, nan_ok=True)
    assert got["changes"] == pytest.approx(changes, nan_ok=True)


# ---- names and vectors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("discharge_temp__mean", ("discharge_temp", "mean")),
        ("vibration_rms__quantile__q_0.9", ("vibration_rms", "quantile__q_0.9")),
        ('x__linear_trend__attr_"slope"', ("x", 'linear_trend__attr_"slope"')),
        ("energy__delta", ("energy", "delta")),
        ("run_state__duty", ("run_state", "duty")),
        ("count__count_above_mean", ("count", "count_above_mean")),
        ("odd__name__mean_abs_change", ("odd__name", "mean_abs_change")),
        ("status_flags.compressor_on__changes", ("status_flags.compressor_on", "changes")),
    ],
)
def test_feature_names_parse(name: str, parsed: tuple[str, str]) -> None:
    assert parse_feature_name(name) == parsed


@pytest.mark.parametrize("name", ["mean", "__mean", "x__fourier", "x_mean", "x__quantile__q_0.5"])
def test_unknown_feature_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not"):
        parse_feature_name(name)
    with pytest.raises(ValueError, match="unknown features"):
        check_feature_names(["x__mean", name])


def test_feature_vector_in_the_model_order() -> None:
    window = {
        "discharge_temp": np.array(X),
        "energy": np.array([10.0, 11.0, 12.5, NAN, 13.0, 13.0, 14.0, 15.0]),
        "run_state": np.array([0, 1, 1, 1, 1, 1, 0, 0], dtype=float),
    }
    names = [
        "energy__delta",
        "discharge_temp__standard_deviation",
        "run_state__duty",
        "suction_temp__mean",  # a signal the window does not have
        "discharge_temp__mean",
        "discharge_temp__trend_per_s",
        "energy__rate_per_s",
    ]
    vec = feature_vector(window, names, t=np.array(T))
    assert vec.dtype == np.float64
    np.testing.assert_allclose(
        vec, [5.0, 2.0, 5 / 8, NAN, 5.0, 34 / 42 / 2, 5.0 / 14.0], rtol=1e-12
    )
    no_times = feature_vector(window, names)
    assert math.isnan(no_times[5]) and math.isnan(no_times[6])
    with pytest.raises(ValueError):
        feature_vector(window, ["discharge_temp__nope"])


def test_times_must_match_samples() -> None:
    with pytest.raises(ValueError, match="times"):
        signal_features([1.0, 2.0, 3.0], t=[1.0, 2.0])


# ---- invariants ----------------------------------------------------------------------------

values = st.lists(st.integers(-500, 500), min_size=4, max_size=60).map(
    lambda xs: np.array(xs, dtype=float)
)
SHIFT_INVARIANT = (
    "standard_deviation",
    "variance",
    "skewness",
    "kurtosis",
    'linear_trend__attr_"slope"',
    "mean_change",
    "mean_abs_change",
    "absolute_sum_of_changes",
    "count_above_mean",
    "count_below_mean",
)
SHIFT_EQUIVARIANT = (
    "mean",
    "minimum",
    "maximum",
    "median",
    *(f"quantile__q_{q}" for q in QUANTILES),
)
SCALE_INVARIANT = ("skewness", "kurtosis", "count_above_mean", "count_below_mean")
SCALE_EQUIVARIANT = (
    "mean",
    "standard_deviation",
    "minimum",
    "maximum",
    "median",
    "root_mean_square",
    'linear_trend__attr_"slope"',
    "mean_abs_change",
    *(f"quantile__q_{q}" for q in QUANTILES),
)


def _close(a: float, b: float, scale: float = 1.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-9 * scale)


@settings(max_examples=60, deadline=None)
@given(x=values, c=st.integers(-2000, 2000))
def test_shifting_a_signal(x: np.ndarray, c: int) -> None:
    if np.std(x) < 1:
        return  # near-constant: skewness and kurtosis hit pandas' round-off guard
    a, b = signal_features(x), signal_features(x + c)
    for f in SHIFT_INVARIANT:
        assert _close(a[f], b[f], scale=1e3), f
    for f in SHIFT_EQUIVARIANT:
        assert _close(a[f] + c, b[f], scale=1e3), f


@settings(max_examples=60, deadline=None)
@given(x=values, k=st.sampled_from([0.01, 0.5, 3.0, 1000.0]))
def test_scaling_a_signal(x: np.ndarray, k: float) -> None:
    if np.std(x) < 1:
        return
    a, b = signal_features(x), signal_features(x * k)
    for f in SCALE_INVARIANT:
        assert _close(a[f], b[f], scale=1e3), f
    for f in SCALE_EQUIVARIANT:
        assert _close(a[f] * k, b[f], scale=1e3 * k), f
    assert _close(a["variance"] * k * k, b["variance"], scale=1e6 * k * k)
    assert _close(a["abs_energy"] * k * k, b["abs_energy"], scale=1e6 * k * k)


@settings(max_examples=60, deadline=None)
@given(x=values, holes=st.lists(st.integers(0, 60), max_size=10))
def test_missing_samples_are_left_out(x: np.ndarray, holes: list[int]) -> None:
    with_holes = list(x)
    for h in sorted(holes, reverse=True):
        with_holes.insert(min(h, len(with_holes)), NAN)
    a, b = signal_features(x), signal_features(np.array(with_holes))
    for f in SIGNAL_FEATURES:
        if f == 'linear_trend__attr_"slope"':
            continue  # by position in the window: holes move the samples apart
        assert _close(a[f], b[f], scale=1e3), f
    for fa, fb in (
        (counter_features(x), counter_features(with_holes)),
        (state_features(x), state_features(with_holes)),
    ):
        assert all(_close(fa[k], fb[k]) for k in fa), (fa, fb)


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.just(NAN)),
        max_size=30,
    )
)
def test_features_never_raise_and_order_statistics_hold(x: list[float]) -> None:
    f = signal_features(np.array(x, dtype=float))
    assert set(f) == set(SIGNAL_FEATURES)
    finite = [v for v in x if math.isfinite(v)]
    if len(finite) < 2:
        assert all(math.isnan(v) for v in f.values())
        return
    qs = [f["minimum"], *(f[f"quantile__q_{q}"] for q in QUANTILES), f["maximum"]]
    assert all(lo <= hi for lo, hi in itertools.pairwise(qs))
    assert f["count_above_mean"] + f["count_below_mean"] <= len(finite)


def test_reversing_a_window_negates_its_slope() -> None:
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    forward = signal_features(x)['linear_trend__attr_"slope"']
    assert signal_features(x[::-1])['linear_trend__attr_"slope"'] == pytest.approx(-forward)
