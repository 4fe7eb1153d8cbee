"""Offline feature relevance: the label-carrying feature is found, noise mostly is not, and
bad input is refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("tsfresh")

from models.errors import TrainingError  # noqa: E402
from models.selection import prepare, relevance_summary, select_features  # noqa: E402


def synthetic(n: int = 400, noise: int = 20, seed: int = 5) -> tuple[pd.DataFrame, pd.Series]:
    """One feature shifted by the label, one binary feature that follows it, noise."""
    rng = np.random.default_rng(seed)
    y = pd.Series(rng.integers(0, 2, size=n), name="failure_ahead")
    cols = {
        "discharge_temp__mean": 70 + 1.5 * y.to_numpy() + rng.normal(0, 1, n),
        "run_state__duty": np.where(rng.random(n) < 0.8, y, 1 - y).astype(float),
    }
    for i in range(noise):
        cols[f"noise_{i:02d}__mean"] = rng.normal(0, 1, n)
    return pd.DataFrame(cols), y


def test_the_label_carrying_features_are_selected_first_and_noise_mostly_not() -> None:
    X, y = synthetic()
    result = select_features(X, y)
    assert result.selected[:2] == ("discharge_temp__mean", "run_state__duty") or set(
        result.selected[:2]
    ) == {"discharge_temp__mean", "run_state__duty"}
    noise = [f for f in result.selected if f.startswith("noise_")]
    assert len(noise) <= 1, noise
    assert result.n_windows == 400 and 0 < result.n_positive < 400
    assert list(result.table["p_value"]) == sorted(result.table["p_value"])
    assert result.table.loc["run_state__duty", "type"] == "binary"
    assert result.table.loc["discharge_temp__mean", "type"] == "real"
    assert set(result.table.index) == set(X.columns)
    assert "discharge_temp__mean" in relevance_summary(result)


def test_over_many_seeds_noise_is_rarely_selected() -> None:
    picked = 0
    for seed in range(5):
        X, y = synthetic(n=200, noise=20, seed=100 + seed)
        result = select_features(X, y)
        assert "discharge_temp__mean" in result.selected
        picked += sum(f.startswith("noise_") for f in result.selected)
    assert picked <= 3  # of 100 noise features tested at FDR 0.05


def test_max_features_keeps_the_smallest_p_values() -> None:
    X, y = synthetic()
    full = select_features(X, y)
    one = select_features(X, y, max_features=1)
    assert one.selected == full.selected[:1]
    noise_only = X.drop(columns=["discharge_temp__mean", "run_state__duty"])
    nothing = select_features(noise_only, y, fdr_level=1e-6)
    assert nothing.selected == () and len(nothing.table) == 20
    assert "0 of 20 tested features" in relevance_summary(nothing)


def test_constant_and_missing_columns_are_dropped_or_filled_and_recorded() -> None:
    X, y = synthetic(n=300)
    X["flat__mean"] = 4.2
    X["never__mean"] = np.nan
    X["inf_only__mean"] = np.inf
    holes = X["discharge_temp__mean"].copy()
    holes.iloc[::10] = np.nan
    X["discharge_temp__mean"] = holes
    result = select_features(X, y)
    assert result.dropped == {
        "flat__mean": "constant",
        "never__mean": "all missing",
        "inf_only__mean": "all missing",
    }
    assert result.filled == {"discharge_temp__mean": 30}
    assert "discharge_temp__mean" in result.selected
    prepared, _, _ = prepare(X)
    assert not prepared.isna().any().any()
    assert prepared["discharge_temp__mean"].iloc[0] == pytest.approx(
        X["discharge_temp__mean"].median()
    )


def test_boolean_labels_and_a_shared_non_default_index_are_accepted() -> None:
    X, y = synthetic(n=200)
    X.index = X.index + 1000
    y.index = X.index
    result = select_features(X, y.astype(bool))
    assert "discharge_temp__mean" in result.selected


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda X, y: (X, y.iloc[:-3]), ValueError, "400 windows .* 397 labels"),
        (lambda X, y: (X, y.set_axis(y.index + 1)), ValueError, "same index"),
        (lambda X, y: (X.to_numpy(), y), ValueError, "DataFrame"),
        (lambda X, y: (X, y.to_numpy()), ValueError, "Series"),
        (lambda X, y: (X.assign(site="dxb"), y), ValueError, "non-numeric columns: \\['site'\\]"),
        (
            lambda X, y: (pd.concat([X, X.iloc[:, :1]], axis=1), y),
            ValueError,
            "duplicate columns",
        ),
        (lambda X, y: (X, y * 0), TrainingError, "all 400 windows are labelled 0"),
        (lambda X, y: (X, y * 0 + 1), TrainingError, "both classes"),
        (lambda X, y: (X, y * 2), TrainingError, "must be 0 or 1"),
        (lambda X, y: (X, y.astype(float).where(y.index > 0)), TrainingError, "0 or 1"),
        (lambda X, y: (X * 0 + 1.0, y), TrainingError, "no feature can be tested"),
    ],
)
def test_bad_input_is_refused_clearly(change: object, error: type, match: str) -> None:
    X, y = synthetic()
    X2, y2 = change(X, y)  # type: ignore[operator]
    with pytest.raises(error, match=match):
        select_features(X2, y2)


@pytest.mark.parametrize(
    ("kw", "match"), [({"fdr_level": 0}, "fdr_level"), ({"max_features": 0}, "max_features")]
)
def test_bad_parameters_are_refused(kw: dict[str, float], match: str) -> None:
    X, y = synthetic(n=50)
    with pytest.raises(ValueError, match=match):
        select_features(X, y, **kw)  # type: ignore[arg-type]
