"""Window features: pure numpy, the one definition the gateway and training share.

A model's input is an ordered list of feature names ``"{signal}__{feature}"`` (double
underscore, as tsfresh names its columns), e.g. ``discharge_temp__mean`` or
``vibration_rms__quantile__q_0.9``. :func:`feature_vector` turns one window (signal name ->
samples) into that vector; :func:`feature_matrix` does the same for many windows at once
(each signal a 2-D array, one row per window, column i = the sample's position i in the
window, NaN for a missing sample and for the padding of windows shorter than the longest);
:func:`signal_features` gives every per-signal feature of one signal.
Training (``models``) calls the same functions on its CSV/pandas data, so a model sees at
run time exactly what it saw when it was trained. All of them run the same vectorised code:
the windows of the signals a request needs become the rows of one 2-D array, and each
feature is a few numpy calls over all rows at once.

Missing samples are NaN (a non-finite value counts as missing too) and are left out: every
feature is computed over the valid samples ``v_0 .. v_{n-1}`` in time order, except where a
formula below says it uses the sample's position ``i`` in the window (its index before the
missing ones were left out) or its time ``t``. With fewer than 2 valid samples every feature
is NaN; skewness needs 3 and kurtosis 4 (as in pandas). A feature that cannot be computed is
NaN, never an exception: the scorer fills it (see :mod:`edge_agent.scoring`).

Per-signal features (measurement points). Where tsfresh has the feature, the name and the
value are tsfresh's (``tests/unit/edge_agent/test_features_tsfresh.py`` compares them with
tsfresh's own calculators on windows without missing samples); ``x̄`` is the mean of the
valid samples, ``n`` their number:

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
``autocorrelation__lag_1``         Σ_{k<n-1} (v_k - x̄)(v_{k+1} - x̄) / ((n - 1)·σ²) with
                                   σ² = Σ(v - x̄)² / n; NaN when σ² ≤ 1e-8 (tsfresh's
                                   ``np.isclose(σ², 0)``: an absolute threshold)
=================================  =============================================================

Spectral features (measurement points), over the valid samples as if they were consecutive
(a gap is closed, as for ``mean_abs_change``). ``A_j = |rfft(v)_j|``, j = 0 .. ⌊n/2⌋, is
the amplitude spectrum of the samples themselves (mean *not* removed, DC included), read as a
distribution over the bin index j with moments ``μ_p = Σ j^p·A_j / ΣA_j``:

======================================  ========================================================
``fft_aggregated__aggtype_"centroid"``  μ1; NaN when ΣA = 0 (an all-zero window)
``fft_aggregated__aggtype_"variance"``  σ² = μ2 - μ1²
``fft_aggregated__aggtype_"skew"``      (μ3 - 3μ1σ² - μ1³) / σ³; NaN when σ² < 0.5
``fft_aggregated__aggtype_"kurtosis"``  (μ4 - 4μ1μ3 + 6μ2μ1² - 3μ1) / σ⁴; NaN when σ² < 0.5.
                                        Exactly tsfresh 0.21's formula, which is *not* the
                                        fourth standardised moment: that needs -3μ1⁴ where
                                        tsfresh has -3μ1. Kept for parity with tsfresh.
                                        (Far from 0 the DC bin A_0 = n·x̄ dominates, σ² is
                                        small and these two are mostly NaN: the shape of
                                        the fluctuations is in band_energy.)
``band_energy__b_{k}``, k = 0 .. 3      EdgeWatch's own: with ``P_j = |rfft(v - x̄)_j|²`` and
                                        M = ⌊n/2⌋ bins j = 1 .. M (DC left out), bin j belongs
                                        to band k = ⌊4(j - 1) / M⌋ and b_k = Σ_{j in band k}
                                        P_j / Σ_{j=1..M} P_j: the share of the window's power
                                        in the k-th quarter of its frequency bins (the four sum
                                        to 1; with M < 4 some bands have no bin and are 0).
                                        NaN when there is no power (all valid samples equal)
======================================  ========================================================

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

Counter and state features need 2 valid samples like the others. Every feature can be asked
of any signal; the families only say which features the agent records for which point kind.

Derived signals (cross-signal relations). The ``{signal}`` part of a name may be an
expression over raw signals, evaluated sample by sample (at each sample time) into a derived
signal whose feature is then computed as above: ``discharge_temp-ambient_temp__mean``
(approach temperature), ``discharge_pressure/suction_pressure__mean`` (pressure ratio),
``active_power/(discharge_pressure/suction_pressure)__mean``,
``imbalance(current_l1,current_l2,current_l3)__maximum`` (current imbalance), and
``when(run_state==1,discharge_temp)__mean`` (the discharge temperature while the compressor
runs: a machine's condition shows while it works, and a window's features over its running
samples alone do not change with how much of the window it sat idle). Grammar, with
Python's precedence and parentheses (parsed by :mod:`ast`, never evaluated by Python)::

    expr   := expr ('+' | '-' | '*' | '/') expr | '-' expr | '(' expr ')'
            | expr ('==' | '!=' | '<' | '<=' | '>' | '>=') expr      (not chained)
            | 'imbalance(' expr (',' expr)+ ')' | 'when(' expr ',' expr ')'
            | name | number
    name   := identifier ('.' identifier)*     e.g. current_l1, status_flags.compressor_on
    number := an int or float literal

``a/b`` is NaN where b == 0; ``imbalance(x_1, .., x_k)`` is max_i |x_i - m| / m with
m = Σx_i / k (NEMA voltage/current imbalance), NaN where m == 0. A comparison is 1 where it
holds and 0 where it does not. ``when(c, x)`` is x where c is non-zero and missing (NaN)
elsewhere, so a feature of it is computed over the samples where c holds alone (with fewer
than 2 of them it is NaN, like any feature). A sample missing from any operand is missing
from the derived signal (a missing condition drops its sample). An expression must name at
least one signal.
Which signal part is an expression: a signal part that is a key of the window (a column of
the data) is always that raw signal, whatever its characters; otherwise one that contains any
of ``+ - * / ( ) , < > = !`` is an expression (:func:`check_feature_names` rejects a
malformed one),
and anything else is a raw signal name. A signal the window does not have, raw or named by an
expression, gives NaN features. :func:`signals_of` lists the raw signals a name needs.

Adding, removing or redefining a feature bumps :data:`FEATURE_SET_VERSION`; a model manifest
names the version it was trained with and the gateway refuses a model built for another one.

Feature set 2 (from 1): adds ``autocorrelation__lag_1``, the four ``fft_aggregated`` features
and ``band_energy__b_0`` .. ``b_3`` to the per-signal features (so to :data:`SIGNAL_FEATURES`
and to what :func:`signal_features` returns), and derived signals. Every feature of set 1
keeps its name and its value.

Feature set 3 (from 2): adds comparisons and ``when(c, x)`` to derived signals. Every feature
of sets 1 and 2 keeps its name and its value.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache

import numpy as np
import numpy.typing as npt

FEATURE_SET_VERSION = 3
COMPATIBLE_FEATURE_SETS: frozenset[int] = frozenset({1, 2, 3})
"""Feature sets whose every feature this code computes with the same name and value (sets 2
and 3 only added features to the one before): a model built for any of them runs unchanged."""

QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.75, 0.9)
FFT_AGGTYPES: tuple[str, ...] = ("centroid", "variance", "skew", "kurtosis")
"""The aggregates of ``fft_aggregated__aggtype_"{aggtype}"``, as tsfresh names them."""
BANDS = 4
"""Number of ``band_energy__b_{k}`` bands (quarters of the frequency bins)."""

_FPERR = 1e-14  # pandas treats sums of squares below this as zero round-off
_AUTOCORR_VAR_ZERO = 1e-8  # tsfresh: np.isclose(var, 0), i.e. |var| <= atol = 1e-8
_FFT_MIN_VARIANCE = 0.5  # tsfresh: no spectral skew/kurtosis below this variance
_CHUNK_ELEMENTS = 1 << 16  # feature_matrix works on blocks of about this many samples (cache-sized)
_NAN = float("nan")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]


# ---- the vectorised core -------------------------------------------------------------------


@cache
def _centred_positions(slots: int) -> tuple[FloatArray, float]:
    """Positions 0 .. slots-1 minus their mean, and their sum of squares."""
    dp = np.arange(slots, dtype=np.float64)
    dp -= dp.mean()
    return dp, float(np.dot(dp, dp))


@cache
def _band_weights(m: int) -> FloatArray:
    """(m, BANDS) 0/1 matrix: bin j = 1 .. m (row j - 1) is in band ⌊BANDS(j - 1) / m⌋."""
    band = (BANDS * np.arange(m)) // m
    out: FloatArray = (band[:, None] == np.arange(BANDS)[None, :]).astype(np.float64)
    return out


@cache
def _moment_weights(m: int) -> FloatArray:
    """(m, 4) matrix of j^p, j = 0 .. m-1, p = 1 .. 4 (tsfresh's get_moment weights)."""
    j = np.arange(m, dtype=np.float64)
    return np.stack([j**p for p in (1, 2, 3, 4)], axis=1)


class _Rows:
    """Rows of samples (one window of one signal each) and what features share over them.

    The valid samples of each row are moved to its front in order: row r's are
    ``v[r, :n[r]]``. The rest of a row is padding, 0 in ``v``, left out of every reduction.
    When every row has the same valid slots (a complete window, one window alone, polls
    that failed for every signal) those slots are simply taken: no row moves, nothing is
    masked and the count of valid samples is one number (``full``), the common case that
    costs the fewest numpy calls.
    """

    def __init__(self, x: FloatArray, t: FloatArray | None) -> None:
        """``x``: (rows, slots); ``t``: sample times, (rows, slots) or (1, slots), or None."""
        ok = np.isfinite(x)
        if t is not None:
            ok &= np.isfinite(t)
        self._shared_pos: FloatArray | None = None
        self._order: IntArray | None = None
        full = bool(ok.all())
        if not full:
            cols = ok[0] if ok.shape[0] == 1 else ok.all(axis=0)
            if ok.shape[0] == 1 or bool((ok == cols).all()):
                # The same samples missing from every row (one window alone, or polls that
                # failed): leave those slots out and every row is complete.
                x = x[:, cols]
                t = None if t is None else t[:, cols]
                self._shared_pos = np.flatnonzero(cols).astype(np.float64)[None, :]
                full = True
        self.rows, self.slots = x.shape
        self.full = full
        self._t = t
        self.v: FloatArray
        self.valid: BoolArray | None
        self.nf: float | FloatArray
        if self.full:
            self.n = np.full(self.rows, self.slots, dtype=np.intp)
            self.nf = float(self.slots)
            self.v = x
            self.valid = None
        else:
            self.n = np.count_nonzero(ok, axis=1)
            self.nf = self.n.astype(np.float64)
            self._order = np.argsort(~ok, axis=1, kind="stable")
            self.valid = np.arange(self.slots)[None, :] < self.n[:, None]
            self.v = np.where(self.valid, x[self.index[:, None], self._order], 0.0)

    @cached_property
    def pos(self) -> FloatArray | None:
        """Each valid sample's position in its window, (rows, slots) or (1, slots); None
        when they are 0 .. slots-1 in every row."""
        if self._shared_pos is not None:
            return self._shared_pos
        return None if self._order is None else self._order.astype(np.float64)

    @cached_property
    def t(self) -> FloatArray | None:
        """Each valid sample's time, (rows, slots) or (1, slots); None without times."""
        t = self._t
        if t is None or self._order is None:
            return t
        moved = t[0][self._order] if t.shape[0] == 1 else t[self.index[:, None], self._order]
        return self._masked(moved, 0.0)

    # -- masks and shared intermediates

    def _masked(self, a: FloatArray, fill: float) -> FloatArray:
        return a if self.valid is None else np.where(self.valid, a, fill)

    @cached_property
    def index(self) -> IntArray:
        return np.arange(self.rows)

    def take(self, a: FloatArray, k: IntArray) -> FloatArray:
        """a[r, k[r]] for every row; k in -1 .. slots-1 (-1, from a row without valid
        samples, reads the last slot: the row's features are NaN anyway)."""
        out: FloatArray = a[self.index, k]
        return out

    @cached_property
    def mean(self) -> FloatArray:
        out: FloatArray = self.v.sum(axis=1) / self.nf
        return out

    @cached_property
    def d(self) -> FloatArray:
        """Deviations from the row's mean, 0 in the padding."""
        return self._masked(self.v - self.mean[:, None], 0.0)

    @cached_property
    def d2(self) -> FloatArray:
        return self.d * self.d

    @cached_property
    def m2(self) -> FloatArray:
        out: FloatArray = self.d2.sum(axis=1)
        return out

    @cached_property
    def var(self) -> FloatArray:
        out: FloatArray = self.m2 / self.nf
        return out

    @cached_property
    def sum_sq(self) -> FloatArray:
        out: FloatArray = (self.v * self.v).sum(axis=1)
        return out

    @cached_property
    def sorted(self) -> FloatArray:
        """Each row sorted, the padding (as +inf) at the end."""
        return np.sort(self._masked(self.v, math.inf), axis=1)

    @cached_property
    def lo(self) -> FloatArray:
        if "sorted" in self.__dict__:
            return self.sorted[:, 0]
        out: FloatArray = self._masked(self.v, math.inf).min(axis=1)
        return out

    @cached_property
    def hi(self) -> FloatArray:
        if "sorted" in self.__dict__:
            return self.sorted[:, -1] if self.full else self.take(self.sorted, self.n - 1)
        out: FloatArray = self._masked(self.v, -math.inf).max(axis=1)
        return out

    @cached_property
    def step_ok(self) -> BoolArray | None:
        """Which of the (rows, slots - 1) steps v[k] -> v[k + 1] join two valid samples."""
        return None if self.valid is None else self.valid[:, 1:]

    @cached_property
    def diff(self) -> FloatArray:
        """v[k + 1] - v[k], 0 where the step is not between valid samples."""
        steps = self.v[:, 1:] - self.v[:, :-1]
        return steps if self.step_ok is None else np.where(self.step_ok, steps, 0.0)

    @cached_property
    def abs_changes(self) -> FloatArray:
        out: FloatArray = np.abs(self.diff).sum(axis=1)
        return out

    @cached_property
    def last(self) -> FloatArray:
        return self.v[:, -1] if self.full else self.take(self.v, self.n - 1)

    def count(self, mask: BoolArray) -> FloatArray:
        """Number of valid samples where ``mask`` (rows, slots)."""
        if self.valid is not None:
            mask = mask & self.valid
        out: FloatArray = mask.sum(axis=1, dtype=np.float64)
        return out

    def count_steps(self, changed: BoolArray) -> FloatArray:
        """Number of steps between valid samples where ``changed`` (rows, slots - 1)."""
        if self.step_ok is not None:
            changed = changed & self.step_ok
        out: FloatArray = changed.sum(axis=1, dtype=np.float64)
        return out

    def slope(self, x: FloatArray | None) -> FloatArray:
        """Least-squares slope of v against ``x`` (times, or positions when None)."""
        if x is None:
            x = self.pos
            if x is None:  # complete rows: positions 0 .. slots-1
                dx, den = _centred_positions(self.slots)
                out: FloatArray = (self.d @ dx) / den
                return out
        if x.shape[0] == 1 and self.full:  # one axis shared by every row
            dx = x[0] - x[0].mean()
            den = float(np.dot(dx, dx))
            if den == 0.0:
                return np.full(self.rows, _NAN)
            out = (self.d @ dx) / den
            return out
        xs = np.broadcast_to(x, self.v.shape)
        dxs = self._masked(xs - (self._masked(xs, 0.0).sum(axis=1) / self.nf)[:, None], 0.0)
        den_r = (dxs * dxs).sum(axis=1)
        return np.where(den_r == 0.0, _NAN, (dxs * self.d).sum(axis=1) / den_r)

    def t_span(self) -> FloatArray | None:
        if self.t is None:
            return None
        t = np.broadcast_to(self.t, self.v.shape)
        first = t[:, 0]
        return t[:, -1] - first if self.full else self.take(t, self.n - 1) - first

    # -- spectra: one rfft per distinct number of valid samples

    @cached_property
    def lengths(self) -> list[tuple[IntArray, int]]:
        """Rows grouped by their number n ≥ 2 of valid samples: (rows, n)."""
        order = np.argsort(self.n, kind="stable")
        ns = self.n[order]
        bounds = [0, *(np.flatnonzero(ns[1:] != ns[:-1]) + 1).tolist(), self.rows]
        return [(order[a:b], int(ns[a])) for a, b in itertools.pairwise(bounds) if ns[a] >= 2]

    def spectrum(self, of: FloatArray) -> npt.NDArray[np.complex128]:
        """rfft(of[r, :n_r]) of each row, zero-padded to (rows, slots // 2 + 1)."""
        if self.full:
            return np.fft.rfft(of, axis=1)
        out = np.zeros((self.rows, self.slots // 2 + 1), dtype=np.complex128)
        for rows, n in self.lengths:
            out[rows, : n // 2 + 1] = np.fft.rfft(of[rows, :n], axis=1)
        return out

    @cached_property
    def fft_aggregated(self) -> FloatArray:
        """(rows, 4): tsfresh's fft_aggregated centroid, variance, skew, kurtosis."""
        a = np.abs(self.spectrum(self.v))  # 0 past a row's own bins: adds nothing below
        mu = (a @ _moment_weights(a.shape[1])) / a.sum(axis=1)[:, None]
        m1, m2, m3, m4 = mu.T
        var = m2 - m1**2
        few = var < _FFT_MIN_VARIANCE
        skew = np.where(few, _NAN, (m3 - 3 * m1 * var - m1**3) / var**1.5)
        kurt = np.where(few, _NAN, (m4 - 4 * m1 * m3 + 6 * m2 * m1**2 - 3 * m1) / var**2)
        return np.stack([m1, var, skew, kurt], axis=1)

    @cached_property
    def band_energy(self) -> FloatArray:
        """(rows, BANDS): share of the mean-removed spectrum's power in each band."""
        spectrum = self.spectrum(self.d)[:, 1:]
        power = spectrum.real**2 + spectrum.imag**2
        total = power.sum(axis=1)
        if self.full:
            in_bands = power @ _band_weights(power.shape[1])
        else:  # bin j = 1 .. M_r is in band ⌊BANDS(j - 1) / M_r⌋; bins past M_r are 0
            m = np.maximum(self.n // 2, 1)
            band = (BANDS * np.arange(power.shape[1]))[None, :] // m[:, None]
            one_hot = band[:, :, None] == np.arange(BANDS)
            in_bands = (power[:, :, None] * one_hot).sum(axis=1)
        out: FloatArray = in_bands / total[:, None]
        out[(total <= 0) | (self.lo == self.hi)] = _NAN  # all samples equal: no power
        return out


def _quantile(q: float) -> Callable[[_Rows], FloatArray]:
    """np.quantile(v, q), 'linear' interpolation, in numpy's own arithmetic (its _lerp)."""

    def f(r: _Rows) -> FloatArray:
        s = r.sorted
        if r.full:
            h = (r.slots - 1) * q
            lo = math.floor(h)
            g = h - lo
            a = s[:, lo]
            b = s[:, min(lo + 1, r.slots - 1)]
            step = b - a
            out: FloatArray = b - step * (1 - g) if g >= 0.5 else a + step * g
            return out
        hs = (r.n - 1).astype(np.float64) * q
        los = np.floor(hs)
        gs = hs - los
        i = los.astype(np.intp)
        a = r.take(s, i)
        b = r.take(s, np.minimum(i + 1, r.n - 1))
        step = b - a
        return np.where(gs >= 0.5, b - step * (1 - gs), a + step * gs)

    return f


def _median(r: _Rows) -> FloatArray:
    """np.median(v): the middle sample, or the mean of the middle two."""
    s = r.sorted
    if r.full:
        k = (r.slots - 1) // 2
        out: FloatArray = s[:, k] if r.slots % 2 else (s[:, k] + s[:, k + 1]) / 2
        return out
    ks = (r.n - 1) // 2
    a = r.take(s, ks)
    return np.where(r.n % 2 == 1, a, (a + r.take(s, ks + 1)) / 2)


def _skewness(r: _Rows) -> FloatArray:
    # pandas zeroes m2 and m3 below _FPERR; either being 0 makes the skewness 0.
    n = r.nf
    m2 = r.m2
    m3 = (r.d2 * r.d).sum(axis=1)
    out = n * (n - 1) ** 0.5 / (n - 2) * (m3 / m2**1.5)
    return np.where((m2 < _FPERR) | (np.abs(m3) < _FPERR), 0.0, out)


def _kurtosis(r: _Rows) -> FloatArray:
    # pandas zeroes numerator and denominator below _FPERR (both ≥ 0 for n ≥ 4); a zero
    # denominator makes the kurtosis 0.
    n = r.nf
    m4 = (r.d2 * r.d2).sum(axis=1)
    adj = 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    num = n * (n + 1) * (n - 1) * m4
    den = (n - 2) * (n - 3) * r.m2**2
    out = np.where(num < _FPERR, 0.0, num) / den - adj
    return np.where(den < _FPERR, 0.0, out)


def _autocorrelation_lag_1(r: _Rows) -> FloatArray:
    # d is 0 in the padding, so the products past the last valid sample vanish.
    s = (r.d[:, :-1] * r.d[:, 1:]).sum(axis=1)
    var = r.var
    return np.where(var <= _AUTOCORR_VAR_ZERO, _NAN, s / ((r.nf - 1) * var))


def _crossings(r: _Rows) -> FloatArray:
    positive = r.v > 0
    return r.count_steps(positive[:, 1:] != positive[:, :-1])


def _trend_per_s(r: _Rows) -> FloatArray:
    return np.full(r.rows, _NAN) if r.t is None else r.slope(r.t)


def _counter_delta(r: _Rows) -> FloatArray:
    out: FloatArray = np.where(r.diff < 0, r.v[:, 1:], r.diff).sum(axis=1)
    return out


def _rate_per_s(r: _Rows) -> FloatArray:
    span = r.t_span()
    if span is None:
        return np.full(r.rows, _NAN)
    return np.where(span > 0, _counter_delta(r) / span, _NAN)


def _column(prop: str, k: int) -> Callable[[_Rows], FloatArray]:
    def f(r: _Rows) -> FloatArray:
        table: FloatArray = getattr(r, prop)
        return table[:, k]

    return f


_SIGNAL: dict[str, Callable[[_Rows], FloatArray]] = {
    "mean": lambda r: r.mean,
    "standard_deviation": lambda r: np.sqrt(r.var),
    "variance": lambda r: r.var,
    "minimum": lambda r: r.lo,
    "maximum": lambda r: r.hi,
    "median": _median,
    **{f"quantile__q_{q}": _quantile(q) for q in QUANTILES},
    "root_mean_square": lambda r: np.sqrt(r.sum_sq / r.nf),
    "abs_energy": lambda r: r.sum_sq,
    "skewness": _skewness,
    "kurtosis": _kurtosis,
    'linear_trend__attr_"slope"': lambda r: r.slope(None),
    "mean_change": lambda r: (r.last - r.v[:, 0]) / (r.nf - 1),
    "mean_abs_change": lambda r: r.abs_changes / (r.nf - 1),
    "absolute_sum_of_changes": lambda r: r.abs_changes,
    "number_crossing_m__m_0": _crossings,
    "count_above_mean": lambda r: r.count(r.v > r.mean[:, None]),
    "count_below_mean": lambda r: r.count(r.v < r.mean[:, None]),
    "trend_per_s": _trend_per_s,
    "autocorrelation__lag_1": _autocorrelation_lag_1,
    **{
        f'fft_aggregated__aggtype_"{agg}"': _column("fft_aggregated", k)
        for k, agg in enumerate(FFT_AGGTYPES)
    },
    **{f"band_energy__b_{k}": _column("band_energy", k) for k in range(BANDS)},
}

_COUNTER: dict[str, Callable[[_Rows], FloatArray]] = {
    "delta": _counter_delta,
    "resets": lambda r: r.count_steps(r.diff < 0),
    "rate_per_s": _rate_per_s,
}

_STATE: dict[str, Callable[[_Rows], FloatArray]] = {
    "duty": lambda r: r.count(r.v != 0) / r.nf,
    "changes": lambda r: r.count_steps(r.v[:, 1:] != r.v[:, :-1]),
}

SIGNAL_FEATURES: tuple[str, ...] = tuple(_SIGNAL)
"""Features of a measurement signal, in a stable order (feature set 1's first)."""
COUNTER_FEATURES: tuple[str, ...] = tuple(_COUNTER)
"""Features of a counter."""
STATE_FEATURES: tuple[str, ...] = tuple(_STATE)
"""Features of a state (run state, switch, flag)."""

_ALL: dict[str, Callable[[_Rows], FloatArray]] = {**_SIGNAL, **_COUNTER, **_STATE}
# Longest first, so that a signal whose own name ends in a feature's name still parses.
_BY_LENGTH = sorted(_ALL, key=len, reverse=True)
_MIN_VALID = {"skewness": 3, "kurtosis": 4}
"""Valid samples a feature needs, where more than 2."""
_ORDER_STATISTICS = frozenset(["median", *(f"quantile__q_{q}" for q in QUANTILES)])


@lru_cache(maxsize=256)
def _evaluation_order(features: tuple[str, ...]) -> tuple[tuple[int, str, int], ...]:
    """(output row, feature, valid samples needed), those that sort the rows first (then
    minimum and maximum read the sorted rows rather than reduce again)."""
    order = sorted(enumerate(features), key=lambda item: item[1] not in _ORDER_STATISTICS)
    return tuple((i, f, _MIN_VALID.get(f, 2)) for i, f in order)


def _compute(rows: _Rows, features: Sequence[str]) -> FloatArray:
    """(len(features), rows) feature values; NaN for rows with too few valid samples."""
    out = np.full((len(features), rows.rows), _NAN)
    order = _evaluation_order(tuple(features))
    with np.errstate(all="ignore"):
        if rows.full:
            for i, f, need in order:
                if rows.slots >= need:
                    out[i] = _ALL[f](rows)
            return out
        for i, f, _ in order:
            out[i] = _ALL[f](rows)
    few = int(rows.n.min())
    if few < 2:
        out[:, rows.n < 2] = _NAN
    for i, _, need in order:
        if need > 2 and few < need:
            out[i, rows.n < need] = _NAN
    return out


# ---- derived signals -----------------------------------------------------------------------

_EXPRESSION_CHARS = frozenset("+-*/(),<>=!")
_MAX_EXPRESSION = 1000  # characters: keeps the parser's recursion shallow

_Env = Mapping[str, FloatArray]
_Eval = Callable[[_Env], FloatArray]


def _divide(a: FloatArray, b: FloatArray) -> FloatArray:
    with np.errstate(all="ignore"):
        return np.where(b == 0, _NAN, np.divide(a, b))


def _imbalance(*xs: FloatArray) -> FloatArray:
    stacked = np.stack(np.broadcast_arrays(*xs))
    with np.errstate(all="ignore"):
        m = stacked.sum(axis=0) / len(xs)
        dev = np.abs(stacked - m).max(axis=0)
        return np.where(m == 0, _NAN, dev / m)


def _when(condition: FloatArray, x: FloatArray) -> FloatArray:
    return np.where(np.isfinite(condition) & (condition != 0), x, _NAN)


def _comparison(
    op: Callable[[FloatArray, FloatArray], BoolArray],
) -> Callable[[FloatArray, FloatArray], FloatArray]:
    def f(a: FloatArray, b: FloatArray) -> FloatArray:
        return np.where(np.isnan(a) | np.isnan(b), _NAN, op(a, b).astype(np.float64))

    return f


_BINARY: dict[type[ast.operator], Callable[[FloatArray, FloatArray], FloatArray]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: _divide,
}
_COMPARE: dict[type[ast.cmpop], Callable[[FloatArray, FloatArray], FloatArray]] = {
    ast.Eq: _comparison(np.equal),
    ast.NotEq: _comparison(np.not_equal),
    ast.Lt: _comparison(np.less),
    ast.LtE: _comparison(np.less_equal),
    ast.Gt: _comparison(np.greater),
    ast.GtE: _comparison(np.greater_equal),
}
_FUNCTIONS: dict[str, tuple[Callable[..., FloatArray], int, int | None]] = {
    "imbalance": (_imbalance, 2, None),
    "when": (_when, 2, 2),
}
"""Function -> (implementation, fewest arguments, most arguments or None)."""


@dataclass(frozen=True, slots=True)
class _Expression:
    """A parsed signal expression."""

    text: str
    names: tuple[str, ...]
    """The raw signals it reads, in order of first appearance."""
    evaluate: _Eval
    """Samples of the derived signal from the raw signals' (non-finite already NaN)."""


def _dotted(node: ast.expr) -> str | None:
    """``a`` or ``a.b.c`` as a signal name; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _snippet(node: ast.AST) -> str:
    try:
        return repr(ast.unparse(node))
    except (ValueError, RecursionError):  # pragma: no cover - unparse of a parsed node
        return type(node).__name__


def _compile(node: ast.expr, names: dict[str, None]) -> _Eval:
    name = _dotted(node)
    if name is not None:
        names.setdefault(name)
        return lambda env: env[name]
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ValueError(f"operator in {_snippet(node)} is not one of + - * /")
        left, right = _compile(node.left, names), _compile(node.right, names)
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub):
            raise ValueError(f"{_snippet(node)}: the only unary operator is -")
        operand = _compile(node.operand, names)
        return lambda env: np.negative(operand(env))
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{_snippet(node)} is not a number")
        c = np.float64(value)
        if not math.isfinite(c):
            raise ValueError(f"{_snippet(node)} is not a finite number")
        constant = np.asarray(c)
        return lambda env: constant
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            raise ValueError(f"{_snippet(node)}: comparisons cannot be chained")
        cmp = _COMPARE.get(type(node.ops[0]))
        if cmp is None:
            raise ValueError(f"comparison in {_snippet(node)} is not one of == != < <= > >=")
        lhs, rhs = _compile(node.left, names), _compile(node.comparators[0], names)
        return lambda env: cmp(lhs(env), rhs(env))
    if isinstance(node, ast.Call):
        fname = node.func.id if isinstance(node.func, ast.Name) else None
        spec = _FUNCTIONS.get(fname or "")
        if spec is None:
            raise ValueError(
                f"{_snippet(node)} calls {_snippet(node.func)}: the only functions are "
                f"{', '.join(f + '()' for f in _FUNCTIONS)}"
            )
        fn, fewest, most = spec
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ValueError(f"{_snippet(node)}: {fname}() takes plain arguments only")
        if len(node.args) < fewest:
            raise ValueError(f"{_snippet(node)}: {fname}() needs at least {fewest} arguments")
        if most is not None and len(node.args) > most:
            raise ValueError(f"{_snippet(node)}: {fname}() takes at most {most} arguments")
        args = [_compile(a, names) for a in node.args]
        return lambda env: fn(*(a(env) for a in args))
    raise ValueError(
        f"{_snippet(node)} ({type(node).__name__}) is not allowed: only signal names, "
        "numbers, + - * /, comparisons, parentheses, imbalance(...) and when(...)"
    )


@lru_cache(maxsize=1024)
def _parse_expression(text: str) -> _Expression:
    """The compiled expression ``text``; ValueError saying what is wrong with it."""
    if len(text) > _MAX_EXPRESSION:
        raise ValueError(f"longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        where = f" at column {e.offset}" if e.offset else ""
        raise ValueError(f"not a valid expression{where}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"not a valid expression: {e}") from None
    names: dict[str, None] = {}
    try:
        evaluate = _compile(tree.body, names)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not names:
        raise ValueError("names no signal")
    return _Expression(text=text, names=tuple(names), evaluate=evaluate)


def _is_expression(signal: str) -> bool:
    return not _EXPRESSION_CHARS.isdisjoint(signal)


def _derive(
    expression: _Expression, signal: Callable[[str], FloatArray | None]
) -> FloatArray | None:
    """Samples of a derived signal; None when a signal it names is missing."""
    env: dict[str, FloatArray] = {}
    for name in expression.names:
        x = signal(name)
        if x is None:
            return None
        env[name] = np.where(np.isfinite(x), x, _NAN)
    try:
        shape = np.broadcast_shapes(*(x.shape for x in env.values()))
    except ValueError:
        sizes = {name: x.shape for name, x in env.items()}
        raise ValueError(
            f"signal expression {expression.text!r}: its signals' samples differ in shape {sizes}"
        ) from None
    with np.errstate(all="ignore"):
        out = np.asarray(expression.evaluate(env), dtype=np.float64)
    return np.broadcast_to(out, shape)


# ---- names ---------------------------------------------------------------------------------


@cache
def parse_feature_name(name: str) -> tuple[str, str]:
    """``"{signal}__{feature}"`` -> ``(signal, feature)``; ValueError for an unknown feature.

    ``signal`` is the raw text before the feature: a signal name or a signal expression.
    """
    for feature in _BY_LENGTH:
        suffix = "__" + feature
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], feature
    raise ValueError(
        f"{name!r} is not '{{signal}}__{{feature}}' with a feature of feature set "
        f"{FEATURE_SET_VERSION} ({', '.join(_ALL)})"
    )


def check_feature_names(names: Iterable[str], signals: Collection[str] | None = None) -> None:
    """Raise ValueError naming every feature name this feature set cannot compute.

    That is an unknown feature, or a signal part that is a malformed expression (said why).
    ``signals``: the raw signals of the data, if known; a signal part that is one of them is
    that signal and never parsed as an expression.
    """
    unknown: list[str] = []
    malformed: list[str] = []
    for name in names:
        try:
            signal, _ = parse_feature_name(name)
        except ValueError:
            unknown.append(name)
            continue
        if (signals is not None and signal in signals) or not _is_expression(signal):
            continue
        try:
            _parse_expression(signal)
        except ValueError as e:
            malformed.append(f"{name!r}: signal expression {signal!r} is {e}")
    problems = []
    if unknown:
        problems.append(
            f"unknown features {unknown}: feature set {FEATURE_SET_VERSION} has "
            f"{', '.join(_ALL)} after '{{signal}}__'"
        )
    if malformed:
        problems.append("malformed signal expressions: " + "; ".join(malformed))
    if problems:
        raise ValueError("\n".join(problems))


def signal_of(name: str) -> str:
    """The signal a feature name belongs to (the part before its feature, maybe an
    expression)."""
    return parse_feature_name(name)[0]


def signals_of(name: str, available: Collection[str] | None = None) -> tuple[str, ...]:
    """The raw signals a feature name needs: its signal, or those its expression names.

    ``available``: the raw signals of the data, if known (a signal part that is one of them
    is that raw signal, see the module docstring). ValueError for an unknown feature or a
    malformed expression.
    """
    signal = signal_of(name)
    if (available is not None and signal in available) or not _is_expression(signal):
        return (signal,)
    try:
        return _parse_expression(signal).names
    except ValueError as e:
        raise ValueError(f"{name!r}: signal expression {signal!r} is {e}") from None


# ---- the request plan ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a list of feature names asks for, grouped for the vectorised code."""

    signals: tuple[str, ...]
    """Distinct signal parts, in order of first appearance."""
    features: tuple[str, ...]
    """Distinct features, in order of first appearance."""
    wanted: tuple[tuple[str, ...], ...]
    """Per signal part, its distinct features."""
    signal_index: IntArray
    """Per name, its signal part's index in ``signals``."""
    feature_index: IntArray
    """Per name, its feature's index in ``features``."""


@lru_cache(maxsize=256)
def _plan(names: tuple[str, ...]) -> _Plan:
    signals: dict[str, dict[str, None]] = {}
    features: dict[str, int] = {}
    pairs = []
    for name in names:
        signal, feature = parse_feature_name(name)
        signals.setdefault(signal, {})[feature] = None
        features.setdefault(feature, len(features))
        pairs.append((signal, feature))
    order = {s: i for i, s in enumerate(signals)}
    return _Plan(
        signals=tuple(signals),
        features=tuple(features),
        wanted=tuple(tuple(fs) for fs in signals.values()),
        signal_index=np.array([order[s] for s, _ in pairs], dtype=np.intp).reshape(-1),
        feature_index=np.array([features[f] for _, f in pairs], dtype=np.intp).reshape(-1),
    )


def _samples(
    signal: str, has: Callable[[str], bool], get: Callable[[str], FloatArray | None]
) -> FloatArray | None:
    """A signal part's samples: the raw signal if the data has it, else the derived one."""
    if has(signal):
        return get(signal)
    if not _is_expression(signal):
        return None
    try:
        expression = _parse_expression(signal)
    except ValueError as e:
        raise ValueError(f"signal expression {signal!r} is {e}") from None
    return _derive(expression, get)


# ---- public API ----------------------------------------------------------------------------


def _as_1d(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def signal_samples(signal: str, columns: Mapping[str, npt.ArrayLike]) -> FloatArray | None:
    """The samples of a signal part, raw or an expression, sample by sample over
    ``columns`` (NaN where missing); None when a signal it needs is not among them.
    ValueError for a malformed expression."""

    def get(name: str) -> FloatArray | None:
        return _as_1d(columns[name]) if name in columns else None

    x = _samples(signal, columns.__contains__, get)
    return None if x is None else np.where(np.isfinite(x), x, _NAN)


def _single(features: Sequence[str], x: npt.ArrayLike, t: npt.ArrayLike | None) -> dict[str, float]:
    values = _as_1d(x)
    times = None if t is None else _as_1d(t)
    if times is not None and times.shape != values.shape:
        raise ValueError(f"{values.size} samples but {times.size} times")
    rows = _Rows(values[None, :], None if times is None else times[None, :])
    out = _compute(rows, features)[:, 0]
    return dict(zip(features, out.tolist(), strict=True))


def signal_features(x: npt.ArrayLike, t: npt.ArrayLike | None = None) -> dict[str, float]:
    """Every feature of :data:`SIGNAL_FEATURES` over one window of one signal.

    ``x``: the samples (NaN = missing); ``t``: their times in epoch seconds, optional
    (without it ``trend_per_s`` is NaN).
    """
    return _single(SIGNAL_FEATURES, x, t)


def counter_features(x: npt.ArrayLike, t: npt.ArrayLike | None = None) -> dict[str, float]:
    """Every feature of :data:`COUNTER_FEATURES` over one window of one counter."""
    return _single(COUNTER_FEATURES, x, t)


def state_features(x: npt.ArrayLike, t: npt.ArrayLike | None = None) -> dict[str, float]:
    """Every feature of :data:`STATE_FEATURES` over one window of one state."""
    return _single(STATE_FEATURES, x, t)


def _stack_rows(rows: list[FloatArray], signals: list[str], times: FloatArray | None) -> FloatArray:
    """One window's signals as rows; without times the shorter are padded with NaN."""
    if times is not None:
        bad = {s: x.size for s, x in zip(signals, rows, strict=True) if x.size != times.size}
        if bad:
            raise ValueError(f"{times.size} times but samples {bad}")
    slots = max(x.size for x in rows)
    return np.array([np.pad(x, (0, slots - x.size), constant_values=_NAN) for x in rows])


def feature_vector(
    window: Mapping[str, npt.ArrayLike],
    names: Sequence[str],
    t: npt.ArrayLike | None = None,
) -> FloatArray:
    """The ordered feature vector ``names`` (``"{signal}__{feature}"``) over one window.

    ``window`` maps signal names to their samples, all on the sample times ``t`` (epoch
    seconds; optional, needed by the per-second features). A signal the window does not
    have gives NaN features. An unknown feature name, or a signal expression that is not
    a key of the window and is malformed, is a ValueError.
    """
    plan = _plan(tuple(names))
    times = None if t is None else _as_1d(t)
    loaded: dict[str, FloatArray] = {}

    def get(signal: str) -> FloatArray | None:
        if signal not in window:
            return None
        x = loaded.get(signal)
        if x is None:
            x = loaded[signal] = _as_1d(window[signal])
        return x

    rows: list[npt.ArrayLike] = []
    present: list[int] = []
    for i, signal in enumerate(plan.signals):
        if signal in window:
            rows.append(window[signal])
            present.append(i)
        else:
            derived = _samples(signal, window.__contains__, get)
            if derived is not None:
                rows.append(derived)
                present.append(i)
    out = np.full(len(names), _NAN)
    if not rows:
        return out
    try:
        x = np.array(rows, dtype=np.float64)  # the usual window: one call
    except ValueError:  # samples of different lengths
        x = np.empty(0)
    if x.ndim != 2 or (times is not None and x.shape[1] != times.size):
        x = _stack_rows([_as_1d(r) for r in rows], [plan.signals[i] for i in present], times)
    values = _compute(_Rows(x, None if times is None else times[None, :]), plan.features)
    column = np.full(len(plan.signals), -1, dtype=np.intp)
    column[present] = np.arange(len(present))
    col = column[plan.signal_index]
    ok = col >= 0
    out[ok] = values[plan.feature_index[ok], col[ok]]
    return out


def feature_matrix(
    series: Mapping[str, npt.ArrayLike],
    names: Sequence[str],
    ts: npt.ArrayLike | None = None,
) -> FloatArray:
    """Features ``names`` of many windows: (n_windows, len(names)), one row per window.

    ``series`` maps each signal name to a 2-D array (n_windows, n_slots): row w holds window
    w's samples, slot i a sample's position i in the window, NaN a missing sample (pad
    windows shorter than the longest with NaN at the end). ``ts``: the samples' times in
    epoch seconds, the same shape, optional. Same definitions and the same values as
    :func:`feature_vector` on each window alone.
    """
    plan = _plan(tuple(names))
    arrays: dict[str, FloatArray] = {}
    shape: tuple[int, ...] | None = None

    def get(signal: str) -> FloatArray | None:
        nonlocal shape
        if signal not in series:
            return None
        x = arrays.get(signal)
        if x is None:
            x = arrays[signal] = np.asarray(series[signal], dtype=np.float64)
            if x.ndim != 2:
                raise ValueError(
                    f"series[{signal!r}] has shape {x.shape}, not (n_windows, n_slots)"
                )
            if shape is None:
                shape = x.shape
            elif x.shape != shape:
                raise ValueError(f"series[{signal!r}] has shape {x.shape}, others {shape}")
        return x

    samples: dict[int, FloatArray] = {}
    for i, signal in enumerate(plan.signals):
        x = _samples(signal, series.__contains__, get)
        if x is not None:
            samples[i] = x
    if shape is None:
        for key in series:
            get(key)
            break
    n_windows, slots = shape if shape is not None else (0, 0)
    times = None
    if ts is not None:
        times = np.asarray(ts, dtype=np.float64)
        if shape is not None and times.shape != shape:
            raise ValueError(f"ts has shape {times.shape}, the series {shape}")
    out = np.full((n_windows, len(names)), _NAN)
    if not samples or n_windows == 0 or slots < 2:
        return out

    # Signal parts that want the same features are computed together, a block of windows
    # at a time; each name then takes its column from its group.
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in samples:
        groups.setdefault(plan.wanted[i], []).append(i)
    for features, members in groups.items():
        where = {s: k for k, s in enumerate(members)}
        fidx = {f: k for k, f in enumerate(features)}
        cols = [
            (c, where[s], fidx[plan.features[f]])
            for c, (s, f) in enumerate(zip(plan.signal_index, plan.feature_index, strict=True))
            if s in where
        ]
        block = max(1, _CHUNK_ELEMENTS // max(1, slots * len(members)))
        for a in range(0, n_windows, block):
            b = min(n_windows, a + block)
            rows = len(members) * (b - a)
            x = np.stack([samples[s][a:b] for s in members]).reshape(rows, slots)
            t = None
            if times is not None:
                t = np.broadcast_to(times[a:b], (len(members), b - a, slots)).reshape(rows, slots)
            values = _compute(_Rows(x, t), features).reshape(len(features), len(members), b - a)
            for c, k, f in cols:
                out[a:b, c] = values[f, k]
    return out
