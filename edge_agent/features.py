"""Window features: pure numpy, the one definition the gateway and training share.

A model's input is an ordered list of feature names ``"{signal}__{feature}"`` (double
underscore, as tsfresh names its columns), e.g. ``discharge_temp__mean`` or
``vibration_rms__quantile__q_0.9``. :func:`feature_vector` turns one window (signal name ->
samples) into that vector; :func:`signal_features` gives every per-signal feature of one
signal. Training (``models``) calls the same functions on its CSV/pandas data, so a model
sees at run time exactly what it saw when it was trained.

Missing samples are NaN (a non-finite value counts as missing too) and are left out: every
feature is computed over the valid samples ``v_0 .. v_{n-1}`` in time order, except where a
formula below says it uses the sample's position ``i`` in the window (its index before the
missing ones were left out) or its time ``t``. With fewer than 2 valid samples every feature
is NaN; skewness needs 3 and kurtosis 4 (as in pandas). A feature that cannot be computed is
NaN, never an exception: the scorer fills it (see :mod:`edge_agent.scoring`).

Per-signal features (measurement points). Where tsfresh has the feature, the name and the
value are tsfresh's (a parity test compares them on windows without missing samples); ``x̄``
is the mean of the valid samples, ``n`` their number:

=================================  =============================================================
``mean``                           Σv / n
``standard_deviation``             sqrt(Σ(v - x̄)² / n)   (population, ddof = 0)
``variance``                       Σ(v - x̄)² / n
``minimum``, ``maximum``           min v, max v
``median``                         np.median(v)
``quantile__q_{q}``                np.quantile(v, q), linear interpolation; q in QUANTILES
``root_mean_square``               sqrt(Σv² / n)
``abs_energy``                     Σv²   (grows with n: windows with missing samples are lower)
``skewness``                       pandas ``Series.skew()``: m2 = Σ(v - x̄)², m3 = Σ(v - x̄)³,
                                   n·sqrt(n - 1) / (n - 2) · m3 / m2^1.5; 0 when m2 < 1e-14
                                   (pandas' round-off guard); NaN for n < 3
``kurtosis``                       pandas ``Series.kurt()`` (excess, bias-corrected):
                                   m4 = Σ(v - x̄)⁴, n(n + 1)(n - 1)·m4 / ((n - 2)(n - 3)·m2²)
                                   - 3(n - 1)² / ((n - 2)(n - 3)); 0 when the denominator
                                   < 1e-14; NaN for n < 4
``linear_trend__attr_"slope"``     least-squares slope of v against its position i in the
                                   window (units per sample), as tsfresh's
                                   ``linregress(range(len(x)), x)`` on a complete window
``mean_change``                    (v_{n-1} - v_0) / (n - 1)
``mean_abs_change``                Σ|v_{k+1} - v_k| / (n - 1)
``absolute_sum_of_changes``        Σ|v_{k+1} - v_k|
``number_crossing_m__m_0``         number of k where (v_k > 0) != (v_{k+1} > 0)
``count_above_mean``               number of v > x̄
``count_below_mean``               number of v < x̄
``trend_per_s``                    least-squares slope of v against its time t (units per
                                   second; EdgeWatch's own, robust to irregular polling);
                                   NaN without times
=================================  =============================================================

Counter features (energy, run hours, starts: monotonic totals that may reset or wrap):

``{counter}__delta``       Σ over consecutive valid samples of (v_{k+1} - v_k) when it is ≥ 0,
                           else v_{k+1}: a decrease is a reset (or wrap) and the counter
                           counts again from 0
``{counter}__resets``      number of decreases
``{counter}__rate_per_s``  delta / (t_last - t_first) over the valid samples; NaN without
                           times or when they span no time

State features (run state, switches, flags):

``{state}__duty``          fraction of valid samples that are non-zero ("running")
``{state}__changes``       number of k where v_{k+1} != v_k

Counter and state features need 2 valid samples like the others. Adding, removing or
redefining a feature bumps :data:`FEATURE_SET_VERSION`; a model manifest names the version
it was trained with and the gateway refuses a model built for another one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

FEATURE_SET_VERSION = 1

QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.75, 0.9)
_FPERR = 1e-14  # pandas treats sums of squares below this as zero round-off

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Valid:
    """The valid samples of one window of one signal."""

    v: FloatArray
    """Values, missing ones left out, in time order."""
    pos: FloatArray
    """Position of each value in the window, counting the missing ones."""
    t: FloatArray | None
    """Time of each value (epoch seconds), when known."""

    @property
    def n(self) -> int:
        return int(self.v.size)


def _slope(x: FloatArray, y: FloatArray) -> float:
    dx = x - x.mean()
    den = float(np.dot(dx, dx))
    if den == 0.0:
        return float("nan")
    return float(np.dot(dx, y - y.mean()) / den)


def _skewness(s: _Valid) -> float:
    n = s.n
    if n < 3:
        return float("nan")
    d = s.v - s.v.mean()
    m2 = float(np.dot(d, d))
    m3 = float(np.sum(d**3))
    m2 = 0.0 if abs(m2) < _FPERR else m2
    m3 = 0.0 if abs(m3) < _FPERR else m3
    if m2 == 0.0:
        return 0.0
    return float(n * (n - 1) ** 0.5 / (n - 2) * (m3 / m2**1.5))


def _kurtosis(s: _Valid) -> float:
    n = s.n
    if n < 4:
        return float("nan")
    d = s.v - s.v.mean()
    d2 = d * d
    m2 = float(d2.sum())
    m4 = float(np.dot(d2, d2))
    adj = 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    num = n * (n + 1) * (n - 1) * m4
    den = (n - 2) * (n - 3) * m2**2
    num = 0.0 if abs(num) < _FPERR else num
    den = 0.0 if abs(den) < _FPERR else den
    if den == 0.0:
        return 0.0
    return float(num / den - adj)


def _quantile(q: float) -> Callable[[_Valid], float]:
    def f(s: _Valid) -> float:
        return float(np.quantile(s.v, q))

    return f


def _trend_per_s(s: _Valid) -> float:
    return float("nan") if s.t is None else _slope(s.t, s.v)


def _crossings(s: _Valid) -> float:
    positive = s.v > 0
    return float(np.count_nonzero(positive[1:] != positive[:-1]))


_SIGNAL: dict[str, Callable[[_Valid], float]] = {
    "mean": lambda s: float(s.v.mean()),
    "standard_deviation": lambda s: float(s.v.std()),
    "variance": lambda s: float(s.v.var()),
    "minimum": lambda s: float(s.v.min()),
    "maximum": lambda s: float(s.v.max()),
    "median": lambda s: float(np.median(s.v)),
    **{f"quantile__q_{q}": _quantile(q) for q in QUANTILES},
    "root_mean_square": lambda s: float(np.sqrt(np.dot(s.v, s.v) / s.n)),
    "abs_energy": lambda s: float(np.dot(s.v, s.v)),
    "skewness": _skewness,
    "kurtosis": _kurtosis,
    'linear_trend__attr_"slope"': lambda s: _slope(s.pos, s.v),
    "mean_change": lambda s: float((s.v[-1] - s.v[0]) / (s.n - 1)),
    "mean_abs_change": lambda s: float(np.abs(np.diff(s.v)).mean()),
    "absolute_sum_of_changes": lambda s: float(np.abs(np.diff(s.v)).sum()),
    "number_crossing_m__m_0": _crossings,
    "count_above_mean": lambda s: float(np.count_nonzero(s.v > s.v.mean())),
    "count_below_mean": lambda s: float(np.count_nonzero(s.v < s.v.mean())),
    "trend_per_s": _trend_per_s,
}


def _counter_delta(v: FloatArray) -> tuple[float, int]:
    steps = np.diff(v)
    reset = steps < 0
    delta = np.where(reset, v[1:], steps)
    return float(delta.sum()), int(np.count_nonzero(reset))


def _rate_per_s(s: _Valid) -> float:
    if s.t is None:
        return float("nan")
    span = float(s.t[-1] - s.t[0])
    if span <= 0:
        return float("nan")
    return _counter_delta(s.v)[0] / span


_COUNTER: dict[str, Callable[[_Valid], float]] = {
    "delta": lambda s: _counter_delta(s.v)[0],
    "resets": lambda s: float(_counter_delta(s.v)[1]),
    "rate_per_s": _rate_per_s,
}

_STATE: dict[str, Callable[[_Valid], float]] = {
    "duty": lambda s: float(np.count_nonzero(s.v) / s.n),
    "changes": lambda s: float(np.count_nonzero(s.v[1:] != s.v[:-1])),
}

SIGNAL_FEATURES: tuple[str, ...] = tuple(_SIGNAL)
"""Features of a measurement signal, in a stable order."""
COUNTER_FEATURES: tuple[str, ...] = tuple(_COUNTER)
"""Features of a counter."""
STATE_FEATURES: tuple[str, ...] = tuple(_STATE)
"""Features of a state (run state, switch, flag)."""

_ALL: dict[str, Callable[[_Valid], float]] = {**_SIGNAL, **_COUNTER, **_STATE}
# Longest first, so that a signal whose own name ends in a feature's name still parses.
_BY_LENGTH = sorted(_ALL, key=len, reverse=True)


@cache
def parse_feature_name(name: str) -> tuple[str, str]:
    """``"{signal}__{feature}"`` -> ``(signal, feature)``; ValueError for an unknown feature."""
    for feature in _BY_LENGTH:
        suffix = "__" + feature
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], feature
    raise ValueError(
        f"{name!r} is not '{{signal}}__{{feature}}' with a feature of feature set "
        f"{FEATURE_SET_VERSION} ({', '.join(_ALL)})"
    )


def check_feature_names(names: Iterable[str]) -> None:
    """Raise ValueError naming every feature name this feature set cannot compute."""
    bad = []
    for name in names:
        try:
            parse_feature_name(name)
        except ValueError:
            bad.append(name)
    if bad:
        raise ValueError(
            f"unknown features {bad}: feature set {FEATURE_SET_VERSION} has {', '.join(_ALL)} "
            "after '{signal}__'"
        )


def signal_of(name: str) -> str:
    """The signal a feature name belongs to (the part before its feature)."""
    return parse_feature_name(name)[0]


def _prepare(x: npt.ArrayLike, t: npt.ArrayLike | None) -> _Valid | None:
    values = np.asarray(x, dtype=np.float64).reshape(-1)
    times = None if t is None else np.asarray(t, dtype=np.float64).reshape(-1)
    if times is not None and times.shape != values.shape:
        raise ValueError(f"{values.size} samples but {times.size} times")
    ok = np.isfinite(values)
    if times is not None:
        ok &= np.isfinite(times)
    if np.count_nonzero(ok) < 2:
        return None
    pos = np.flatnonzero(ok).astype(np.float64)
    return _Valid(v=values[ok], pos=pos, t=None if times is None else times[ok])


def _compute(
    features: Iterable[str], x: npt.ArrayLike, t: npt.ArrayLike | None
) -> dict[str, float]:
    s = _prepare(x, t)
    if s is None:
        return dict.fromkeys(features, float("nan"))
    with np.errstate(all="ignore"):
        return {f: _ALL[f](s) for f in features}


def signal_features(x: npt.ArrayLike, t: npt.ArrayLike | None = None) -> dict[str, float]:
    """Every feature of :data:`SIGNAL_FEATURES` over one window of one signal.

    ``x``: the samples (NaN = missing); ``t``: their times in epoch seconds, optional
    (without it ``trend_per_s`` is NaN).
    """
    return _compute(SIGNAL_FEATURES, x, t)


def counter_features(x: npt.ArrayLike, t: npt.ArrayLike | None = None) -> dict[str, float]:
    """Every feature of :data:`COUNTER_FEATURES` over one window of one counter."""
    return _compute(COUNTER_FEATURES, x, t)


def state_features(x: npt.ArrayLike, t: npt.ArrayLike | None = None) -> dict[str, float]:
    """Every feature of :data:`STATE_FEATURES` over one window of one state."""
    return _compute(STATE_FEATURES, x, t)


def feature_vector(
    window: Mapping[str, npt.ArrayLike],
    names: Sequence[str],
    t: npt.ArrayLike | None = None,
) -> FloatArray:
    """The ordered feature vector ``names`` (``"{signal}__{feature}"``) over one window.

    ``window`` maps signal names to their samples, all on the sample times ``t`` (epoch
    seconds; optional, needed by the per-second features). A signal the window does not
    have gives NaN features. An unknown feature name is a ValueError.
    """
    wanted: dict[str, list[str]] = {}
    for name in names:
        signal, feature = parse_feature_name(name)
        wanted.setdefault(signal, []).append(feature)
    values: dict[str, dict[str, float]] = {}
    for signal, features in wanted.items():
        if signal in window:
            values[signal] = _compute(dict.fromkeys(features), window[signal], t)
        else:
            values[signal] = dict.fromkeys(features, float("nan"))
    out = np.empty(len(names), dtype=np.float64)
    for i, name in enumerate(names):
        signal, feature = parse_feature_name(name)
        out[i] = values[signal][feature]
    return out
