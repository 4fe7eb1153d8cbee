"""Offline feature relevance: which window features tell labelled windows apart.

An *offline* tool for training and analysis, never run on a gateway: it uses pandas and
tsfresh (the ``models`` extra), and tsfresh is imported only when :func:`select_features`
runs, since importing it takes seconds.

Given a table of window features (rows = windows, columns = EdgeWatch feature names, as
:func:`edge_agent.features.feature_matrix` computes them) and a 0/1 label per window (e.g.
1 = the window precedes a known failure), :func:`select_features` tests each feature for
association with the label with tsfresh's
``tsfresh.feature_selection.relevance.calculate_relevance_table`` (a binary target:
Mann-Whitney U for a real-valued feature, Fisher's exact test for a binary one), and keeps
those whose p-values pass the Benjamini-Yekutieli procedure at ``fdr_level`` (the expected
share of irrelevant features among those selected), ordered by p-value.

Before testing, non-finite values count as missing; columns that are all missing or
constant cannot be tested and are dropped (:attr:`SelectionResult.dropped` says which and
why); the remaining missing values are filled with their column's median, so a feature that
is often NaN is tested on what it is when present.

Errors: a call the function cannot make sense of (X not a DataFrame, non-numeric or
duplicate columns, X and y of different lengths or with different indexes, fdr_level or
max_features out of range) is a ``ValueError``; labelled data that cannot give a selection
(labels other than 0/1 or missing, a single class, no testable feature) is a
:class:`models.errors.TrainingError`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.errors import TrainingError


@dataclass(frozen=True)
class SelectionResult:
    """What :func:`select_features` found."""

    selected: tuple[str, ...]
    """Relevant features, smallest p-value first (ties by name), at most max_features."""
    table: pd.DataFrame
    """tsfresh's relevance table of the tested features (index = feature name; columns
    ``feature``, ``type`` (real/binary), ``p_value``, ``relevant``), sorted by p-value."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Columns not tested -> why ("all missing", "constant")."""
    filled: dict[str, int] = field(default_factory=dict)
    """Tested columns that had missing values -> how many were filled with the median."""
    fdr_level: float = 0.05
    n_windows: int = 0
    n_positive: int = 0
    """Windows labelled 1."""


def _labels(y: pd.Series) -> pd.Series:
    """y as 0/1 integers; TrainingError for anything else."""
    values = pd.to_numeric(y, errors="coerce")
    bad = values.isna() | ~values.isin([0, 1])
    if bad.any():
        examples = list(y[bad].head(3))
        raise TrainingError(
            f"labels must be 0 or 1 for every window; {int(bad.sum())} are not (e.g. {examples})"
        )
    out = values.astype(np.int64)
    classes = sorted(set(out.tolist()))
    if len(classes) < 2:
        raise TrainingError(
            f"all {len(out)} windows are labelled {classes[0]}: feature relevance needs "
            "windows of both classes (0 and 1)"
        )
    return out


def _check_call(X: Any, y: Any, fdr_level: float, max_features: int | None) -> None:
    if not isinstance(X, pd.DataFrame):
        raise ValueError(f"X must be a pandas DataFrame (windows x features), not {type(X)}")
    if not isinstance(y, pd.Series):
        raise ValueError(f"y must be a pandas Series (one 0/1 label per window), not {type(y)}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} windows (rows) but y has {len(y)} labels")
    if not X.index.equals(y.index):
        raise ValueError(
            "X and y must have the same index (one label per window, in the same order); "
            "reset both with .reset_index(drop=True) if they are already aligned"
        )
    if X.columns.has_duplicates:
        dup = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
        raise ValueError(f"X has duplicate columns: {dup}")
    non_numeric = [str(c) for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    if non_numeric:
        raise ValueError(f"X has non-numeric columns: {non_numeric}")
    if not (isinstance(fdr_level, int | float) and 0 < fdr_level < 1):
        raise ValueError(f"fdr_level must be between 0 and 1 (exclusive), got {fdr_level!r}")
    if max_features is not None and max_features < 1:
        raise ValueError(f"max_features must be at least 1 (or None), got {max_features!r}")


def prepare(X: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], dict[str, int]]:
    """X ready for the tests: non-finite -> missing, all-missing and constant columns
    dropped, the rest's missing values filled with the column median.

    Returns (prepared X, dropped column -> why, filled column -> how many values).
    """
    x = X.astype(np.float64).replace([np.inf, -np.inf], np.nan)
    dropped: dict[str, str] = {}
    keep = []
    for column in x.columns:
        values = x[column]
        if values.isna().all():
            dropped[str(column)] = "all missing"
        elif values.nunique(dropna=True) < 2:
            dropped[str(column)] = "constant"
        else:
            keep.append(column)
    x = x[keep]
    missing = x.isna().sum()
    filled = {str(c): int(n) for c, n in missing.items() if n > 0}
    if filled:
        x = x.fillna(x.median())
    return x, dropped, filled


def select_features(
    X: pd.DataFrame,
    y: pd.Series,
    *,
    fdr_level: float = 0.05,
    max_features: int | None = None,
) -> SelectionResult:
    """The features of ``X`` relevant to the 0/1 labels ``y`` (see the module docstring).

    ``X``: rows = windows, columns = feature names; ``y``: one 0/1 label per window, with
    X's index. ``fdr_level``: the false discovery rate of the Benjamini-Yekutieli
    procedure. ``max_features``: keep at most this many (the smallest p-values).
    """
    _check_call(X, y, fdr_level, max_features)
    labels = _labels(y)
    x, dropped, filled = prepare(X)
    if x.shape[1] == 0:
        raise TrainingError(
            f"no feature can be tested: all {X.shape[1]} columns are all missing or constant"
        )
    from tsfresh.feature_selection.relevance import (
        calculate_relevance_table,
    )

    x = x.reset_index(drop=True)
    labels = labels.reset_index(drop=True)
    with warnings.catch_warnings():
        # tsfresh warns when nothing is relevant; the empty selection says so already.
        warnings.simplefilter("ignore")
        table = calculate_relevance_table(
            x,
            labels,
            ml_task="classification",
            fdr_level=fdr_level,
            n_jobs=0,
            show_warnings=False,
        )
    # by p-value, ties by name; untestable (NaN p-value) last
    order = np.lexsort((table["feature"].astype(str).to_numpy(), table["p_value"].to_numpy()))
    table = table.iloc[order]
    relevant = table[table["relevant"].astype(bool)]
    selected = tuple(str(f) for f in relevant["feature"])
    if max_features is not None:
        selected = selected[:max_features]
    return SelectionResult(
        selected=selected,
        table=table,
        dropped=dropped,
        filled=filled,
        fdr_level=float(fdr_level),
        n_windows=len(labels),
        n_positive=int(labels.sum()),
    )


def relevance_summary(result: SelectionResult, top: int = 10) -> str:
    """A few lines for a log or a model card: counts, the top features and their p-values."""
    lines = [
        f"{len(result.selected)} of {len(result.table)} tested features relevant at FDR "
        f"{result.fdr_level:g} ({result.n_windows} windows, {result.n_positive} labelled 1; "
        f"{len(result.dropped)} columns not tested)"
    ]
    for name in result.selected[:top]:
        p = float(result.table.loc[name, "p_value"])
        lines.append(f"  {name}: p = {p:.3g}" if math.isfinite(p) else f"  {name}")
    return "\n".join(lines)
