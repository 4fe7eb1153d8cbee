"""Window features of a recording, computed by the gateway's own code.

Offline, a window is the trailing ``size`` rows of a recording ending at one row (its *end*
row), taken every ``hop`` rows: causal by construction, and as a gateway sees it (a window
of ``window_s`` seconds of polls). Rows are counted, not seconds, so one model serves
assets that sample at different rates (a recording at 5 min and another at 1 h each get
windows of ``size`` samples); the model records the nominal window in seconds
(``size`` × the training data's typical sample interval) for the gateway.

A row's score is the score of the latest window whose end row is at or before it
(:func:`row_index`): a row never sees a later row. Rows before the first full window have
no score.

Features come from :func:`edge_agent.features.feature_matrix`, the same definitions the
gateway computes; missing samples (NaN) stay missing.

Candidate features (:func:`candidate_features`) are the ones that mean the same at any
sampling rate and window length (statistics of level and spread, shape, the trend per
second); features that grow with the number of samples (``abs_energy``,
``absolute_sum_of_changes``, counts) or with the sample spacing (``mean_abs_change``, the
per-sample slope) would change meaning between training data and a gateway polling at
another rate, so they are not candidates. Known asset types add cross-signal relations of
their physics (:data:`RELATIONS`), where the recording has the signals. Asked to
(``fit --operating-features``), a dataset that says when its machines run (``operating`` in
``dataset.yaml``) adds all of these again over the running samples alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.features import feature_matrix, signals_of
from models.dataset import Recording

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PORTABLE_FEATURES: tuple[str, ...] = (
    "mean",
    "standard_deviation",
    "minimum",
    "maximum",
    "median",
    "quantile__q_0.1",
    "quantile__q_0.9",
    "root_mean_square",
    "skewness",
    "kurtosis",
    "trend_per_s",
)
"""Per-signal candidates: independent of the window's sample count and spacing."""

RELATION_FEATURES: tuple[str, ...] = ("mean", "standard_deviation", "trend_per_s")
"""What is computed of each derived relation signal."""

RELATIONS: dict[str, tuple[str, ...]] = {
    "compressor": (
        "discharge_pressure/suction_pressure",  # pressure ratio
        "active_power/(discharge_pressure/suction_pressure)",  # power per pressure ratio
        "discharge_temp-ambient_temp",  # condenser approach
        "discharge_temp-suction_temp",
        "imbalance(current_l1,current_l2,current_l3)",  # phase current imbalance
        "active_power/voltage",
        "vib_band_2x/vib_band_1x",
    ),
    "fan": (
        "power/speed_rpm",
        "motor_current/speed_rpm",
        "vib_band_bearing/vib_band_1x",
        "vib_band_2x/vib_band_1x",
        "bearing_temp/speed_rpm",
    ),
}
"""Cross-signal relations of known asset types (features.py expressions)."""


def candidate_features(
    asset_type: str, signals: Sequence[str], operating: str | None = None
) -> list[str]:
    """Per-signal portable features of every signal, then the asset type's relations whose
    signals are all present; with an ``operating`` condition (an expression, see
    :mod:`models.dataset`), then the same again over the samples where it holds
    (``when(operating,signal)__mean``)."""
    names = [f"{s}__{f}" for s in signals for f in PORTABLE_FEATURES]
    have = set(signals)
    relations = [r for r in RELATIONS.get(asset_type, ()) if set(signals_of(f"{r}__mean")) <= have]
    names += [f"{rel}__{f}" for rel in relations for f in RELATION_FEATURES]
    if operating is not None:
        names += [f"when({operating},{s})__{f}" for s in signals for f in PORTABLE_FEATURES]
        names += [f"when({operating},{r})__{f}" for r in relations for f in RELATION_FEATURES]
    return names


def needed_signals(names: Sequence[str]) -> list[str]:
    """The raw signals the features are computed from, in first-use order."""
    out: dict[str, None] = {}
    for n in names:
        for s in signals_of(n):
            out.setdefault(s)
    return list(out)


def window_ends(n_rows: int, size: int, hop: int) -> I64:
    """End rows of the trailing windows: ``size - 1``, then every ``hop`` rows, and the last
    row always (so that the last rows get a fresh score)."""
    if size < 2 or hop < 1:
        raise ValueError(f"window size must be ≥ 2 and hop ≥ 1, got {size} and {hop}")
    if n_rows < size:
        return np.empty(0, dtype=np.int64)
    ends = np.arange(size - 1, n_rows, hop, dtype=np.int64)
    if ends[-1] != n_rows - 1:
        ends = np.append(ends, n_rows - 1)
    return ends


@dataclass(frozen=True, slots=True)
class WindowTable:
    """The feature vectors of one recording's windows."""

    ends: I64
    """End row of each window."""
    t_end: F64
    """Time of each window's end row."""
    x: F64
    """(n_windows, n_features), NaN where a feature cannot be computed."""


def window_table(
    rec: Recording, names: Sequence[str], size: int, hop: int, chunk: int = 2048
) -> WindowTable:
    """Features ``names`` over the recording's trailing windows of ``size`` rows every
    ``hop`` rows. Signals the recording lacks give NaN features."""
    ends = window_ends(rec.rows, size, hop)
    x = np.empty((ends.size, len(names)), dtype=np.float64)
    offsets = np.arange(1 - size, 1, dtype=np.int64)
    columns = rec.columns
    wanted = [s for s in needed_signals(names) if s in columns]
    for lo in range(0, ends.size, chunk):
        idx = ends[lo : lo + chunk, None] + offsets
        series = {s: columns[s][idx] for s in wanted}
        x[lo : lo + chunk] = feature_matrix(series, names, rec.t[idx])
    return WindowTable(ends=ends, t_end=rec.t[ends], x=x)


def row_index(n_rows: int, ends: I64) -> I64:
    """For every row, the index of the latest window ending at or before it; -1 before the
    first window."""
    return np.searchsorted(ends, np.arange(n_rows), side="right").astype(np.int64) - 1


def median_interval(t: F64) -> float | None:
    """The median spacing of a recording's samples (seconds), ignoring repeated times."""
    d = np.diff(t)
    d = d[d > 0]
    return float(np.median(d)) if d.size else None


def typical_interval(medians: Sequence[float | None]) -> float:
    """The median of recordings' median sample spacings."""
    known = [m for m in medians if m is not None]
    if not known:
        raise ValueError("no recording has two samples at different times")
    return float(np.median(known))
