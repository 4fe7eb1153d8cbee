"""Parity with tsfresh: every EdgeWatch feature whose name tsfresh also has gives tsfresh's
value, computed by tsfresh's own ``extract_features`` (so its column names are checked too)
on windows without missing samples: random windows, a constant window, a ramp, and the NAB
machine-temperature recording cut into windows of 12 and 288 samples.

tsfresh is a training-side dependency (the ``models`` extra); the agent never imports it
(``test_import_weight.py``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from edge_agent.features import (
    COUNTER_FEATURES,
    FFT_AGGTYPES,
    QUANTILES,
    SIGNAL_FEATURES,
    STATE_FEATURES,
    feature_matrix,
    signal_features,
)

pd = pytest.importorskip("pandas")
tsfresh = pytest.importorskip("tsfresh")
from tsfresh.feature_extraction import extract_features  # noqa: E402
from tsfresh.feature_extraction import feature_calculators as fc  # noqa: E402

NAB = Path(__file__).resolve().parents[2] / "fixtures" / "nab"
NAB = NAB / "machine_temperature_system_failure.csv"

FC_PARAMETERS: dict[str, list[dict[str, object]] | None] = {
    "mean": None,
    "standard_deviation": None,
    "variance": None,
    "minimum": None,
    "maximum": None,
    "median": None,
    "quantile": [{"q": q} for q in QUANTILES],
    "root_mean_square": None,
    "abs_energy": None,
    "skewness": None,
    "kurtosis": None,
    "linear_trend": [{"attr": "slope"}],
    "mean_change": None,
    "mean_abs_change": None,
    "absolute_sum_of_changes": None,
    "number_crossing_m": [{"m": 0}],
    "count_above_mean": None,
    "count_below_mean": None,
    "autocorrelation": [{"lag": 1}],
    "fft_aggregated": [{"aggtype": a} for a in FFT_AGGTYPES],
}
"""The tsfresh calculators (and parameters) behind EdgeWatch's tsfresh-named features."""

NO_TSFRESH_COUNTERPART: dict[str, str] = {
    "trend_per_s": "a slope against the sample times (units per second); tsfresh's "
    "linear_trend_timewise needs a DatetimeIndex and gives units per hour",
    **{
        f"band_energy__b_{k}": "EdgeWatch's own band-power shares (tsfresh has "
        "fft_coefficient per bin and spkt_welch_density, not shares of quarters)"
        for k in range(4)
    },
    "delta": "counter feature: sum of increases with resets counted from 0",
    "resets": "counter feature: number of decreases (resets, wraps)",
    "rate_per_s": "counter feature: delta per second of the window's times",
    "duty": "state feature: share of non-zero samples",
    "changes": "state feature: number of changes of value (tsfresh has no such count)",
}
"""EdgeWatch features that tsfresh does not have, and why."""

TSFRESH_NAMED = tuple(
    f
    for f in (*SIGNAL_FEATURES, *COUNTER_FEATURES, *STATE_FEATURES)
    if f not in NO_TSFRESH_COUNTERPART
)


def test_every_feature_is_compared_or_listed_as_having_no_counterpart() -> None:
    every = {*SIGNAL_FEATURES, *COUNTER_FEATURES, *STATE_FEATURES}
    assert set(NO_TSFRESH_COUNTERPART) <= every
    for feature in NO_TSFRESH_COUNTERPART:
        assert not hasattr(fc, feature.split("__")[0]), feature
    for feature in TSFRESH_NAMED:
        assert feature.split("__")[0] in FC_PARAMETERS, feature


def _windows() -> dict[str, np.ndarray]:
    """Sets of equal-length windows, each (n_windows, n_samples), none with missing samples."""
    rng = np.random.default_rng(20240611)
    value = pd.read_csv(NAB)["value"].to_numpy(dtype=float)
    sets = {
        "random-12": rng.normal(40, 7, size=(20, 12)),
        "random-50": rng.gamma(2.0, 3.0, size=(20, 50)) - 4,  # skewed, crosses 0
        "random-288": rng.normal(0, 1, size=(5, 288)).cumsum(axis=1),
        "small-4": rng.integers(-3, 4, size=(30, 4)).astype(float),
        "constant": np.array([[3.7] * 12, [0.0] * 12, [-2.0] * 5, [1e6] * 5], dtype=object),
        "ramp": np.array([np.arange(20.0), 5 - 0.25 * np.arange(20.0)]),
        "nab-12": value[: value.size // 12 * 12].reshape(-1, 12),
        "nab-288": value[: value.size // 288 * 288].reshape(-1, 288),
    }
    out = {}
    for key, x in sets.items():
        if x.dtype == object:  # windows of different lengths: one set per length
            for row in x:
                row = np.asarray(row, dtype=float)
                out.setdefault(f"{key}-{row.size}", []).append(row)
        else:
            out[key] = x
    return {k: np.asarray(v, dtype=float).reshape(len(v), -1) for k, v in out.items()}


WINDOWS = _windows()


def _tsfresh(x: np.ndarray) -> pd.DataFrame:
    """tsfresh's features of each row of ``x``, columns ``value__{feature}``."""
    n_windows, n = x.shape
    long = pd.DataFrame(
        {
            "id": np.repeat(np.arange(n_windows), n),
            "time": np.tile(np.arange(n), n_windows),
            "value": x.reshape(-1),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tsfresh's own RuntimeWarnings on constant windows
        return extract_features(
            long,
            column_id="id",
            column_sort="time",
            default_fc_parameters=FC_PARAMETERS,
            n_jobs=0,
            disable_progressbar=True,
        ).sort_index()


def _close(ours: float, theirs: float) -> bool:
    if math.isnan(ours) or math.isnan(theirs):
        return math.isnan(ours) and math.isnan(theirs)
    return math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("key", sorted(WINDOWS))
def test_tsfresh_named_features_equal_tsfresh(key: str) -> None:
    x = WINDOWS[key]
    theirs = _tsfresh(x)
    names = [f"value__{f}" for f in TSFRESH_NAMED]
    assert set(names) <= set(theirs.columns), set(names) - set(theirs.columns)
    ours = feature_matrix({"value": x}, names)
    worst = 0.0
    for j, name in enumerate(names):
        for w in range(x.shape[0]):
            a, b = float(ours[w, j]), float(theirs[name].iloc[w])
            assert _close(a, b), (key, name, w, a, b)
            if math.isfinite(a) and a != b:
                worst = max(worst, abs(a - b) / max(abs(b), 1e-300))
    # one window alone (the agent's path) gives the same
    single = signal_features(x[0])
    for name in names:
        feature = name.removeprefix("value__")
        if feature in single:
            assert _close(single[feature], float(theirs[name].iloc[0])), (key, name)
    assert worst < 1e-9


def test_tsfresh_fft_kurtosis_is_not_the_fourth_standardised_moment() -> None:
    """Documented in features.py: tsfresh subtracts 3·μ1 where the fourth central moment
    has 3·μ1⁴. EdgeWatch keeps tsfresh's value (parity); this pins the difference."""
    x = np.array([0.0, 3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    a = np.abs(np.fft.rfft(x))
    j = np.arange(a.size, dtype=float)
    mu = [float(a.dot(j**p) / a.sum()) for p in range(5)]
    var = mu[2] - mu[1] ** 2
    central4 = float(a.dot((j - mu[1]) ** 4) / a.sum())
    theirs = dict(fc.fft_aggregated(x, [{"aggtype": "kurtosis"}]))['aggtype_"kurtosis"']
    ours = signal_features(x)['fft_aggregated__aggtype_"kurtosis"']
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert theirs == pytest.approx((central4 + 3 * mu[1] ** 4 - 3 * mu[1]) / var**2, rel=1e-9)
    assert not math.isclose(theirs, central4 / var**2, rel_tol=1e-3)
