"""The vectorised features against a plain reference, and derived signals.

``_reference`` below is the straightforward one-window, one-feature implementation (feature
set 1's code as it was before the features were vectorised, plus the spectral features
written out the same way, and derived signals evaluated one sample at a time with Python
floats). :func:`feature_matrix` (many windows, padded), :func:`feature_vector` (one window,
its signals stacked) and :func:`signal_features` must all give its values.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.features import (
    BANDS,
    COUNTER_FEATURES,
    SIGNAL_FEATURES,
    STATE_FEATURES,
    check_feature_names,
    counter_features,
    feature_matrix,
    feature_vector,
    parse_feature_name,
    signal_features,
    signal_of,
    signal_samples,
    signals_of,
    state_features,
)

NAN = float("nan")
ALL_FEATURES = (*SIGNAL_FEATURES, *COUNTER_FEATURES, *STATE_FEATURES)

# ---- the reference ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Valid:
    v: np.ndarray
    pos: np.ndarray
    t: np.ndarray | None

    @property
    def n(self) -> int:
        return int(self.v.size)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean()
    den = float(np.dot(dx, dx))
    if den == 0.0:
        return NAN
    return float(np.dot(dx, y - y.mean()) / den)


def _skewness(s: _Valid) -> float:
    n = s.n
    if n < 3:
        return NAN
    d = s.v - s.v.mean()
    m2 = float(np.dot(d, d))
    m3 = float(np.sum(d**3))
    m2 = 0.0 if abs(m2) < 1e-14 else m2
    m3 = 0.0 if abs(m3) < 1e-14 else m3
    if m2 == 0.0:
        return 0.0
    return float(n * (n - 1) ** 0.5 / (n - 2) * (m3 / m2**1.5))


def _kurtosis(s: _Valid) -> float:
    n = s.n
    if n < 4:
        return NAN
    d = s.v - s.v.mean()
    d2 = d * d
    m2 = float(d2.sum())
    m4 = float(np.dot(d2, d2))
    adj = 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    num = n * (n + 1) * (n - 1) * m4
    den = (n - 2) * (n - 3) * m2**2
    num = 0.0 if abs(num) < 1e-14 else num
    den = 0.0 if abs(den) < 1e-14 else den
    if den == 0.0:
        return 0.0
    return float(num / den - adj)


def _autocorrelation(s: _Valid) -> float:
    x = s.v
    m = x.mean()
    var = x.var()
    if np.isclose(var, 0):
        return NAN
    return float(np.sum((x[:-1] - m) * (x[1:] - m)) / ((s.n - 1) * var))


def _fft_aggregated(s: _Valid, agg: str) -> float:
    y = np.abs(np.fft.rfft(s.v))
    j = np.arange(y.size, dtype=float)
    if y.sum() == 0:
        return NAN
    mu = [float(y.dot(j**p) / y.sum()) for p in range(5)]
    var = mu[2] - mu[1] ** 2
    if agg == "centroid":
        return mu[1]
    if agg == "variance":
        return var
    if var < 0.5:
        return NAN
    if agg == "skew":
        return (mu[3] - 3 * mu[1] * var - mu[1] ** 3) / var**1.5
    return (mu[4] - 4 * mu[1] * mu[3] + 6 * mu[2] * mu[1] ** 2 - 3 * mu[1]) / var**2


def _band_energy(s: _Valid, k: int) -> float:
    if s.v.min() == s.v.max():
        return NAN
    power = np.abs(np.fft.rfft(s.v - s.v.mean())[1:]) ** 2
    m = power.size
    in_band = sum(float(p) for j, p in enumerate(power, start=1) if 4 * (j - 1) // m == k)
    return in_band / float(power.sum())


def _quantile(s: _Valid, q: float) -> float:
    return float(np.quantile(s.v, q))


def _counter_delta(v: np.ndarray) -> tuple[float, int]:
    steps = np.diff(v)
    reset = steps < 0
    return float(np.where(reset, v[1:], steps).sum()), int(np.count_nonzero(reset))


def _rate(s: _Valid) -> float:
    if s.t is None:
        return NAN
    span = float(s.t[-1] - s.t[0])
    return NAN if span <= 0 else _counter_delta(s.v)[0] / span


_REF: dict[str, Callable[[_Valid], float]] = {
    "mean": lambda s: float(s.v.mean()),
    "standard_deviation": lambda s: float(s.v.std()),
    "variance": lambda s: float(s.v.var()),
    "minimum": lambda s: float(s.v.min()),
    "maximum": lambda s: float(s.v.max()),
    "median": lambda s: float(np.median(s.v)),
    **{f"quantile__q_{q}": partial(_quantile, q=q) for q in (0.1, 0.25, 0.75, 0.9)},
    "root_mean_square": lambda s: float(np.sqrt(np.dot(s.v, s.v) / s.n)),
    "abs_energy": lambda s: float(np.dot(s.v, s.v)),
    "skewness": _skewness,
    "kurtosis": _kurtosis,
    'linear_trend__attr_"slope"': lambda s: _slope(s.pos, s.v),
    "mean_change": lambda s: float((s.v[-1] - s.v[0]) / (s.n - 1)),
    "mean_abs_change": lambda s: float(np.abs(np.diff(s.v)).mean()),
    "absolute_sum_of_changes": lambda s: float(np.abs(np.diff(s.v)).sum()),
    "number_crossing_m__m_0": lambda s: float(np.count_nonzero(np.diff(s.v > 0))),
    "count_above_mean": lambda s: float(np.count_nonzero(s.v > s.v.mean())),
    "count_below_mean": lambda s: float(np.count_nonzero(s.v < s.v.mean())),
    "trend_per_s": lambda s: NAN if s.t is None else _slope(s.t, s.v),
    "autocorrelation__lag_1": _autocorrelation,
    **{
        f'fft_aggregated__aggtype_"{a}"': partial(_fft_aggregated, agg=a)
        for a in ("centroid", "variance", "skew", "kurtosis")
    },
    **{f"band_energy__b_{k}": partial(_band_energy, k=k) for k in range(4)},
    "delta": lambda s: _counter_delta(s.v)[0],
    "resets": lambda s: float(_counter_delta(s.v)[1]),
    "rate_per_s": _rate,
    "duty": lambda s: float(np.count_nonzero(s.v) / s.n),
    "changes": lambda s: float(np.count_nonzero(s.v[1:] != s.v[:-1])),
}
_MIN_N = {"skewness": 3, "kurtosis": 4}


def _reference(feature: str, x: Sequence[float], t: Sequence[float] | None = None) -> float:
    values = np.asarray(x, dtype=float)
    times = None if t is None else np.asarray(t, dtype=float)
    ok = np.isfinite(values)
    if times is not None:
        ok &= np.isfinite(times)
    if np.count_nonzero(ok) < max(2, _MIN_N.get(feature, 2)):
        return NAN
    s = _Valid(
        v=values[ok],
        pos=np.flatnonzero(ok).astype(float),
        t=None if times is None else times[ok],
    )
    with np.errstate(all="ignore"):
        return _REF[feature](s)


def _ref_eval(node: ast.expr, sample: Mapping[str, float]) -> float:
    """One sample of a derived signal, with Python floats."""
    if isinstance(node, ast.Name):
        return sample[node.id]
    if isinstance(node, ast.Attribute):
        return sample[ast.unparse(node)]
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        return -_ref_eval(node.operand, sample)
    if isinstance(node, ast.BinOp):
        a, b = _ref_eval(node.left, sample), _ref_eval(node.right, sample)
        if math.isnan(a) or math.isnan(b):
            return NAN
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return NAN if b == 0 else a / b
    if isinstance(node, ast.Compare):
        a, b = _ref_eval(node.left, sample), _ref_eval(node.comparators[0], sample)
        if math.isnan(a) or math.isnan(b):
            return NAN
        holds = {
            ast.Eq: a == b,
            ast.NotEq: a != b,
            ast.Lt: a < b,
            ast.LtE: a <= b,
            ast.Gt: a > b,
            ast.GtE: a >= b,
        }[type(node.ops[0])]
        return 1.0 if holds else 0.0
    assert isinstance(node, ast.Call)
    xs = [_ref_eval(a, sample) for a in node.args]
    if isinstance(node.func, ast.Name) and node.func.id == "when":
        c, x = xs
        return x if not math.isnan(c) and c != 0 else NAN
    if any(math.isnan(x) for x in xs):
        return NAN
    m = sum(xs) / len(xs)
    return NAN if m == 0 else max(abs(x - m) for x in xs) / m


def _ref_derived(expr: str, window: Mapping[str, Sequence[float]]) -> list[float]:
    node = ast.parse(expr, mode="eval").body
    names = {ast.unparse(n) for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)}
    names = {n for n in names if n in window}
    size = len(next(iter(window.values())))
    out = []
    for i in range(size):
        sample = {k: float(window[k][i]) if math.isfinite(window[k][i]) else NAN for k in names}
        try:
            value = _ref_eval(node, sample)
        except OverflowError:  # pragma: no cover - inputs are small
            value = NAN
        out.append(value)
    return out


# ---- comparing ---------------------------------------------------------------------------------


def _same(a: float, b: float, scale: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * scale)


def _scale(feature: str, x: np.ndarray) -> float:
    """The magnitude a feature's round-off is relative to (for values near 0)."""
    finite = x[np.isfinite(x)]
    m = max(float(np.max(np.abs(finite))) if finite.size else 1.0, 1.0)
    n = max(1, x.size)
    if feature in ("abs_energy", "variance", "kurtosis", "skewness"):
        return m * m * n * n
    if feature.startswith("fft_aggregated"):  # moments of bin indices up to n/2: μ_p ~ n^p
        power = {"centroid": 1, "variance": 2, "skew": 3, "kurtosis": 4}
        return float(n ** power[feature.split('"')[1]])
    if feature.startswith("band_energy"):
        return 1.0
    return m * n


# ---- hypothesis strategies ------------------------------------------------------------------

value = st.one_of(
    st.integers(-60, 60).map(float),
    st.sampled_from([NAN, NAN, 0.0, math.inf, -math.inf, 0.5, -2.25]),
)


@st.composite
def windows(draw: st.DrawFn) -> tuple[list[list[float]], list[list[float]]]:
    """Windows of varying length: random, constant, with holes, with <2/<3/<4 valid."""
    n_windows = draw(st.integers(1, 6))
    out, times = [], []
    for _ in range(n_windows):
        size = draw(st.one_of(st.integers(0, 5), st.integers(0, 40)))
        kind = draw(st.sampled_from(["random", "constant", "few"]))
        if kind == "constant":
            c = draw(st.sampled_from([0.0, 3.0, -7.0, 0.5]))
            x = [c] * size
            for i in draw(st.lists(st.integers(0, max(0, size - 1)), max_size=3)):
                if size:
                    x[i] = NAN
        elif kind == "few":
            x = [NAN] * size
            for i in draw(st.lists(st.integers(0, max(0, size - 1)), max_size=4)):
                if size:
                    x[i] = draw(value)
        else:
            x = draw(st.lists(value, min_size=size, max_size=size))
        t0 = draw(st.integers(1_700_000_000, 1_700_100_000))
        steps = draw(st.lists(st.sampled_from([1.0, 2.0, 5.0]), min_size=size, max_size=size))
        t = list(np.cumsum([float(t0), *steps])[:size])
        if size and draw(st.booleans()):
            t[draw(st.integers(0, size - 1))] = NAN
        out.append(x)
        times.append(t)
    return out, times


def _pad(rows: list[list[float]]) -> np.ndarray:
    width = max((len(r) for r in rows), default=0)
    return np.array([r + [NAN] * (width - len(r)) for r in rows], dtype=float).reshape(
        len(rows), width
    )


def _check_against_reference(
    rows: list[list[float]], times: list[list[float]], with_times: bool
) -> None:
    """feature_matrix over the padded windows, feature_vector and the per-kind functions on
    each window alone: all equal to the reference."""
    names = [f"x__{f}" for f in ALL_FEATURES]
    ts = _pad(times) if with_times else None
    got = feature_matrix({"x": _pad(rows)}, names, ts)
    assert got.shape == (len(rows), len(names))
    for w, (x, t) in enumerate(zip(rows, times, strict=True)):
        tw = t if with_times else None
        single = feature_vector({"x": x}, names, tw)
        per_kind = {
            **signal_features(x, tw),
            **counter_features(x, tw),
            **state_features(x, tw),
        }
        for j, f in enumerate(ALL_FEATURES):
            ref = _reference(f, x, tw)
            scale = _scale(f, np.asarray(x, dtype=float))
            assert _same(got[w, j], ref, scale), (f, x, tw, got[w, j], ref)
            assert _same(single[j], ref, scale), (f, x, single[j], ref)
            assert _same(per_kind[f], ref, scale), (f, x, per_kind[f], ref)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=windows(), with_times=st.booleans())
def test_feature_matrix_equals_the_reference_window_by_window(
    data: tuple[list[list[float]], list[list[float]]], with_times: bool
) -> None:
    _check_against_reference(*data, with_times)


EDGE_WINDOWS = [
    [],
    [NAN],
    [4.0],
    [NAN, 4.0, NAN],  # 1 valid
    [1.0, NAN, 3.0],  # 2 valid
    [1.0, 5.0, NAN, 2.0],  # 3 valid: no kurtosis
    [1.0, 5.0, NAN, 2.0, 9.0],  # 4 valid
    [7.0] * 6,  # constant
    [0.0] * 6,  # all zero: no spectrum at all
    [7.0, 7.0, NAN, 7.0, math.inf, 7.0],  # constant with holes
    [0.1] * 10,  # constant, not exact in binary
    [NAN] * 5,
    [-3.0, 2.0, -1.0, 4.0, 0.0, 0.0, 5.0, -2.0],
]


@pytest.mark.parametrize("with_times", [False, True])
def test_edge_windows_equal_the_reference(with_times: bool) -> None:
    times = [[100.0 + 2 * i for i in range(len(x))] for x in EDGE_WINDOWS]
    _check_against_reference(EDGE_WINDOWS, times, with_times)
    for x, t in zip(EDGE_WINDOWS, times, strict=True):  # each alone in a batch, too
        _check_against_reference([x], [t], with_times)


@settings(max_examples=60, deadline=None)
@given(data=windows())
def test_padding_and_batch_company_do_not_change_a_window(
    data: tuple[list[list[float]], list[list[float]]],
) -> None:
    """A window's features are the same alone, padded further, and among other windows."""
    rows, times = data
    names = [f"x__{f}" for f in SIGNAL_FEATURES]
    batch = feature_matrix({"x": _pad(rows)}, names, _pad(times))
    for w, (x, t) in enumerate(zip(rows, times, strict=True)):
        alone = feature_matrix({"x": _pad([x + [NAN] * 7])}, names, _pad([t + [NAN] * 7]))
        for j, f in enumerate(SIGNAL_FEATURES):
            assert _same(batch[w, j], alone[0, j], _scale(f, np.asarray(x))), (f, x)


EXPRESSIONS = [
    "a-b",
    "a/b",
    "a+b*c",
    "(a+b)*c",
    "a/(b/c)",
    "-a+2.5",
    "imbalance(a,b,c)",
    "imbalance(a, b)",
    "a*0.5-c/4",
    "when(a>0,b)",
    "when(a>=b,c-b)",
    "when(c,a)",
    "when(a<0.5,b)",
    "when(b<=c,a/b)",
    "when(a==0,c)",
    "when(a!=b,imbalance(a,b,c))",
    "(a>b)*c",
]


@settings(max_examples=80, deadline=None)
@given(
    cols=st.lists(st.lists(value, min_size=12, max_size=12), min_size=3, max_size=3),
    expr=st.sampled_from(EXPRESSIONS),
)
def test_derived_signals_equal_the_sample_by_sample_reference(
    cols: list[list[float]], expr: str
) -> None:
    window = dict(zip("abc", cols, strict=True))
    derived = _ref_derived(expr, window)
    features = ("mean", "maximum", "standard_deviation", "count_above_mean", "duty")
    names = [f"{expr}__{f}" for f in features]
    vec = feature_vector({k: np.array(v) for k, v in window.items()}, names)
    mat = feature_matrix({k: np.array([v, v[::-1]]) for k, v in window.items()}, names)
    reversed_window = {k: v[::-1] for k, v in window.items()}
    derived_reversed = _ref_derived(expr, reversed_window)
    for j, f in enumerate(features):
        ref = _reference(f, derived)
        scale = _scale(f, np.asarray(derived))
        assert _same(vec[j], ref, scale), (expr, f, vec[j], ref)
        assert _same(mat[0, j], ref, scale), (expr, f)
        assert _same(mat[1, j], _reference(f, derived_reversed), scale), (expr, f)


# ---- derived signals: names, values, errors -------------------------------------------------

W = {
    "discharge_temp": np.array([50.0, 52.0, 54.0, 56.0]),
    "ambient_temp": np.array([30.0, 30.0, 31.0, 32.0]),
    "discharge_pressure": np.array([16.0, 18.0, 20.0, 15.0]),
    "suction_pressure": np.array([4.0, 4.5, 0.0, 5.0]),
    "active_power": np.array([8.0, 9.0, 9.5, 6.0]),
    "current_l1": np.array([10.0, 10.0, 0.0, 12.0]),
    "current_l2": np.array([10.0, 11.0, 0.0, 12.0]),
    "current_l3": np.array([10.0, 9.5, 0.0, 9.0]),
    "status_flags.compressor_on": np.array([1.0, 1.0, 0.0, 1.0]),
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("discharge_temp-ambient_temp__mean", (20 + 22 + 23 + 24) / 4),
        ("discharge_pressure/suction_pressure__mean", (4 + 4 + 3) / 3),  # /0 is missing
        ("discharge_pressure/suction_pressure__maximum", 4.0),
        ("active_power/(discharge_pressure/suction_pressure)__mean", (2 + 9 / 4 + 2) / 3),
        # mean 10 -> 0; mean 30.5/3 -> |11 - m|/m; all 0 -> missing; mean 11 -> 2/11
        ("imbalance(current_l1,current_l2,current_l3)__maximum", 2 / 11),
        ("imbalance(current_l1, current_l2, current_l3)__minimum", 0.0),
        ("status_flags.compressor_on*active_power__mean", (8 + 9 + 0 + 6) / 4),
        ("(discharge_temp - ambient_temp) * 2 + -1__minimum", 39.0),
        # while the compressor runs: samples 0, 1 and 3
        ("when(status_flags.compressor_on,discharge_temp)__mean", (50 + 52 + 56) / 3),
        ("when(current_l1>5,active_power)__minimum", 6.0),
        ("when(current_l1 >= 12, discharge_temp)__mean", NAN),  # one sample: too few
        ("when(status_flags.compressor_on==0,discharge_temp)__mean", NAN),
        ("when(current_l1<1,active_power)__maximum", NAN),
        ("when(suction_pressure!=4.5,discharge_pressure)__maximum", 20.0),
        ("(current_l1>0)__mean", 0.75),
        ("when(current_l1>0,discharge_temp-ambient_temp)__maximum", 24.0),
    ],
)
def test_derived_signal_features(name: str, expected: float) -> None:
    got = feature_vector(W, [name, "discharge_temp__mean"])
    assert got[0] == pytest.approx(expected, rel=1e-12, nan_ok=True)
    assert got[1] == 53.0
    matrix = feature_matrix({k: v[None, :] for k, v in W.items()}, [name])
    assert matrix[0, 0] == pytest.approx(expected, rel=1e-12, nan_ok=True)


def test_when_leaves_out_the_samples_where_its_condition_fails_or_is_missing() -> None:
    window = {
        "on": np.array([1.0, 0.0, NAN, 1.0, 1.0, 0.0]),
        "x": np.array([10.0, 99.0, 99.0, 12.0, 14.0, -99.0]),
    }
    t = np.array([0.0, 60.0, 120.0, 180.0, 240.0, 300.0])
    names = ["when(on,x)__mean", "when(on,x)__trend_per_s", "x__mean", "when(on==0,x)__mean"]
    got = feature_vector(window, names, t)
    # running samples at t = 0, 180, 240: x 10, 12, 14; slope by time, not position
    slope = np.polyfit([0.0, 180.0, 240.0], [10.0, 12.0, 14.0], 1)[0]
    np.testing.assert_allclose(got, [12.0, slope, 135 / 6, 0.0])
    # a window where the condition never holds has no value, not an error
    idle = {"on": np.zeros(4), "x": np.arange(4.0)}
    assert np.isnan(feature_vector(idle, ["when(on,x)__mean"])[0])


def test_imbalance_is_the_nema_definition() -> None:
    x = feature_vector(
        {"a": [230.0, 0.0], "b": [225.0, 0.0], "c": [238.0, 0.0]}, ["imbalance(a,b,c)__mean"]
    )
    m = (230 + 225 + 238) / 3
    # one sample: the other has mean 0 -> missing -> fewer than 2 valid samples
    assert np.isnan(x[0])
    x = feature_vector(
        {"a": [230.0, 230.0], "b": [225.0, 225.0], "c": [238.0, 238.0]}, ["imbalance(a,b,c)__mean"]
    )
    assert x[0] == pytest.approx(max(abs(230 - m), abs(225 - m), abs(238 - m)) / m)


def test_a_window_key_is_a_raw_signal_before_it_is_an_expression() -> None:
    window = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 1.0, 1.0])}
    window["a-b"] = np.array([100.0, 100.0, 100.0])
    assert feature_vector(window, ["a-b__mean"])[0] == 100.0
    assert feature_matrix({k: v[None, :] for k, v in window.items()}, ["a-b__mean"])[0, 0] == 100
    del window["a-b"]
    assert feature_vector(window, ["a-b__mean"])[0] == 1.0
    assert signals_of("a-b__mean") == ("a", "b")
    assert signals_of("a-b__mean", available={"a-b"}) == ("a-b",)
    check_feature_names(["temp (C)__mean"], signals={"temp (C)"})
    weird = {"temp (C)": np.array([1.0, 3.0])}
    assert feature_vector(weird, ["temp (C)__mean"])[0] == 2.0


def test_signal_samples_of_a_raw_or_derived_signal() -> None:
    columns = {"a": [1.0, 2.0, math.inf, 4.0], "b": np.array([0.0, 1.0, 1.0, NAN])}
    np.testing.assert_array_equal(signal_samples("a", columns), [1.0, 2.0, NAN, 4.0])
    np.testing.assert_array_equal(signal_samples("when(b==1,a)", columns), [NAN, 2.0, NAN, NAN])
    np.testing.assert_array_equal(signal_samples("b>0", columns), [0.0, 1.0, 1.0, NAN])
    assert signal_samples("c", columns) is None
    assert signal_samples("when(c,a)", columns) is None
    with pytest.raises(ValueError, match="signal expression 'when\\(a\\)'"):
        signal_samples("when(a)", columns)


def test_an_expression_naming_a_missing_signal_gives_nan() -> None:
    got = feature_vector(W, ["discharge_temp-condenser_temp__mean", "discharge_temp__maximum"])
    assert np.isnan(got[0]) and got[1] == 56.0
    matrix = feature_matrix({k: v[None, :] for k, v in W.items()}, ["nope/discharge_temp__mean"])
    assert np.isnan(matrix[0, 0])


def test_missing_samples_of_any_operand_are_missing() -> None:
    window = {
        "a": np.array([1.0, NAN, 3.0, 4.0, math.inf]),
        "b": np.array([1.0, 1.0, NAN, 1.0, 1.0]),
    }
    # valid derived samples: 1 - 1 = 0 (pos 0), 4 - 1 = 3 (pos 3)
    got = feature_vector(window, ["a-b__mean", 'a-b__linear_trend__attr_"slope"', "a/b__mean"])
    np.testing.assert_allclose(got, [1.5, 1.0, 2.5])


@pytest.mark.parametrize(
    ("name", "signals"),
    [
        ("discharge_temp__mean", ("discharge_temp",)),
        ("status_flags.compressor_on__duty", ("status_flags.compressor_on",)),
        ("odd__name__mean", ("odd__name",)),
        ("discharge_temp-ambient_temp__mean", ("discharge_temp", "ambient_temp")),
        (
            "active_power/(discharge_pressure/suction_pressure)__mean",
            ("active_power", "discharge_pressure", "suction_pressure"),
        ),
        (
            "imbalance(current_l1,current_l2,current_l3)__maximum",
            ("current_l1", "current_l2", "current_l3"),
        ),
        ("a*a+a/b__mean", ("a", "b")),
        ("status_flags.demand*power__mean", ("status_flags.demand", "power")),
        ("when(run_state==1,discharge_temp)__mean", ("run_state", "discharge_temp")),
    ],
)
def test_signals_of(name: str, signals: tuple[str, ...]) -> None:
    assert signals_of(name) == signals
    assert signal_of(name) == parse_feature_name(name)[0]
    check_feature_names([name])


@pytest.mark.parametrize(
    ("signal", "why"),
    [
        ("a/(b", "not a valid expression"),
        ("a**2", "not one of"),
        ("a%b-c", "not one of"),
        ("a//b", "not one of"),
        ("sqrt(a)", "the only functions are imbalance(), when()"),
        ("imbalance(a)", "at least 2 arguments"),
        ("when(a)", "at least 2 arguments"),
        ("when(a, b, c)", "at most 2 arguments"),
        ("when(a < b < c, d)", "cannot be chained"),
        ("when(a is b, c)", "not one of == != < <= > >="),
        ("when(a in b, c)", "not one of == != < <= > >="),
        ("a and b-c", "not allowed"),
        ("imbalance(a, b, k=c)", "plain arguments"),
        ("imbalance(*a)", "plain arguments"),
        ("a.b()", "the only functions"),
        ("a[0]+b", "not allowed"),
        ("a if b else c-d", "not allowed"),
        ("lambda: a-b", "not allowed"),
        ("(a, b)", "not allowed"),
        ("'a'+b", "not a number"),
        ("True*a", "not a number"),
        ("1e999*a", "not a finite number"),
        ("2-3", "names no signal"),
        ("+a", "the only unary operator is -"),
        ("~a+b", "the only unary operator is -"),
        ("__import__('os').system('x')", "the only functions"),
        ("a-b" * 400, "longer than"),
    ],
)
def test_malformed_expressions_are_refused_with_the_reason(signal: str, why: str) -> None:
    name = f"{signal}__mean"
    with pytest.raises(ValueError, match="malformed signal expressions") as e:
        check_feature_names(["x__mean", name])
    assert why in str(e.value)
    assert repr(name) in str(e.value)
    with pytest.raises(ValueError, match="signal expression"):
        signals_of(name)
    with pytest.raises(ValueError, match="signal expression"):
        feature_vector({"a": [1.0, 2.0], "b": [1.0, 2.0]}, [name])
    with pytest.raises(ValueError, match="signal expression"):
        feature_matrix({"a": np.ones((2, 3)), "b": np.ones((2, 3))}, [name])


def test_unknown_features_and_malformed_expressions_are_both_reported() -> None:
    with pytest.raises(ValueError) as e:
        check_feature_names(["x__nope", "a/(b__mean"])
    assert "unknown features ['x__nope']" in str(e.value)
    assert "'a/(b__mean'" in str(e.value)


# ---- feature_matrix's shapes and errors ------------------------------------------------------


def test_feature_matrix_shapes_and_missing_signals() -> None:
    rng = np.random.default_rng(3)
    series = {"a": rng.normal(size=(5, 9)), "b": rng.normal(size=(5, 9))}
    names = ["a__mean", "zz__mean", "b__maximum", "a-b__mean", "a__delta"]
    got = feature_matrix(series, names)
    assert got.shape == (5, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got[:, 0], series["a"].mean(axis=1))
    assert np.isnan(got[:, 1]).all()
    np.testing.assert_allclose(got[:, 2], series["b"].max(axis=1))
    np.testing.assert_allclose(got[:, 3], (series["a"] - series["b"]).mean(axis=1))
    for w in range(5):
        np.testing.assert_allclose(
            got[w], feature_vector({k: v[w] for k, v in series.items()}, names), rtol=1e-12
        )
    assert feature_matrix(series, []).shape == (5, 0)
    assert feature_matrix({"a": np.empty((0, 4))}, ["a__mean"]).shape == (0, 1)


def test_feature_matrix_works_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_agent.features as features

    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 20))
    x[rng.random(x.shape) < 0.1] = NAN
    ts = 1e9 + np.cumsum(rng.uniform(1, 3, size=(50, 20)), axis=1)
    names = [f"x__{f}" for f in ALL_FEATURES]
    whole = feature_matrix({"x": x}, names, ts)
    monkeypatch.setattr(features, "_CHUNK_ELEMENTS", 60)
    # Equal up to rounding: the FFT and BLAS kernels may sum in another order for another
    # batch shape (seen: 2e-13 absolute on one machine, exact on another).
    np.testing.assert_allclose(feature_matrix({"x": x}, names, ts), whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("series", "ts", "match"),
    [
        ({"a": np.ones(4)}, None, "not \\(n_windows, n_slots\\)"),
        ({"a": np.ones((2, 4)), "b": np.ones((2, 5))}, None, "others"),
        ({"a": np.ones((2, 4))}, np.ones((2, 5)), "ts has shape"),
    ],
)
def test_feature_matrix_refuses_bad_shapes(
    series: dict[str, np.ndarray], ts: np.ndarray | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        feature_matrix(series, ["a__mean", "b__mean"], ts)


def test_feature_vector_pads_signals_of_different_lengths_without_times() -> None:
    got = feature_vector({"a": [1.0, 2.0, 3.0], "b": [5.0, 7.0]}, ["a__mean", "b__mean"])
    np.testing.assert_allclose(got, [2.0, 6.0])
    with pytest.raises(ValueError, match="times"):
        feature_vector({"a": [1.0, 2.0, 3.0], "b": [5.0, 7.0]}, ["b__mean"], t=[1.0, 2.0, 3.0])


def test_band_energy_finds_the_band_of_a_tone() -> None:
    n = 64
    i = np.arange(n)
    names = [f"x__band_energy__b_{k}" for k in range(BANDS)]
    for k in range(BANDS):
        j = 1 + 8 * k + 3  # bin j of M = 32 is in band (j - 1) // 8
        shares = feature_vector({"x": 5 + np.sin(2 * np.pi * j * i / n)}, names)
        np.testing.assert_allclose(shares, np.eye(BANDS)[k], atol=1e-12)
    assert np.isnan(feature_vector({"x": np.full(n, 3.3)}, names)).all()
