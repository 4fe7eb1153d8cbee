"""Scoring: known inputs give known scores, decisions at the threshold, top signals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.config import ModelSettings, PollGroup
from edge_agent.errors import ModelError
from edge_agent.features import feature_vector
from edge_agent.models import ModelStore
from edge_agent.scoring import Scorer, top_signals
from edge_agent.windows import WindowBuffer

# Model (conftest): mu 70 1 2 10, sd 5 0.5 0.5 2, score = mean(z²), contributions = z² / 4.
X = [80.0, 1.5, 2.0, 12.0]  # z = 2 1 0 1 -> contributions 1 .25 0 .25, score 1.5


def make_scorer(tmp_path: Path, publisher: Any, now: Any, **update: Any) -> tuple[Scorer, Any]:
    pem = publisher.public_pem(tmp_path / "publisher.pem")
    store = ModelStore(
        ModelSettings(dir=tmp_path / "models", trusted_keys=[pem]), clock=lambda: now.timestamp()
    )
    store.install_update(*publisher.update(1, **update).args())
    model = store.model_for(update.get("asset_type", "compressor"))
    assert model is not None
    return Scorer(store), model


@pytest.mark.parametrize(
    ("threshold", "anomalous"), [(1.0, True), (1.49, True), (1.5, False), (2.0, False)]
)
def test_known_input_gives_known_score_and_decision(
    tmp_path: Path, publisher: Any, now: Any, threshold: float, anomalous: bool
) -> None:
    scorer, model = make_scorer(tmp_path, publisher, now, threshold=threshold)
    s = scorer.score(np.array(X), model)
    assert (s.model_id, s.version, s.threshold) == ("cc-zscore", 1, threshold)
    assert s.score == pytest.approx(1.5)
    assert s.anomalous is anomalous
    assert s.n_filled == 0
    names = [n for n, _ in s.top_signals]
    assert names == ["discharge_temp", "current_l1", "vibration_rms"]
    assert [v for _, v in s.top_signals] == pytest.approx([1.25, 0.25, 0.0])


def test_nan_features_take_the_training_means(tmp_path: Path, publisher: Any, now: Any) -> None:
    scorer, model = make_scorer(tmp_path, publisher, now)
    s = scorer.score([math.nan, 1.5, 2.0, 12.0], model)  # discharge_temp__mean -> 70, z = 0
    assert s.score == pytest.approx(0.5)
    assert s.n_filled == 1
    assert scorer.filled == 1 and scorer.scored == 1


def test_nan_features_take_zero_without_fill_values(
    tmp_path: Path, publisher: Any, now: Any
) -> None:
    scorer, model = make_scorer(tmp_path, publisher, now, fill_values=None)
    s = scorer.score([80.0, 1.5, math.nan, 12.0], model)  # vibration 0 -> z = -4, z² / 4 = 4
    assert s.score == pytest.approx(5.5)
    assert s.top_signals[0] == ("vibration_rms", pytest.approx(4.0))


def test_a_model_without_contributions_has_no_top_signals(
    tmp_path: Path, publisher: Any, now: Any, build_zscore_onnx: Any
) -> None:
    onnx_bytes = build_zscore_onnx(
        [70.0, 1.0, 2.0, 10.0], [5.0, 0.5, 0.5, 2.0], contributions=False
    )
    scorer, model = make_scorer(tmp_path, publisher, now, onnx_bytes=onnx_bytes)
    s = scorer.score(X, model)
    assert s.score == pytest.approx(1.5) and s.top_signals == []


def test_a_vector_of_the_wrong_length_is_a_model_error(
    tmp_path: Path, publisher: Any, now: Any
) -> None:
    scorer, model = make_scorer(tmp_path, publisher, now)
    with pytest.raises(ModelError, match="takes 4 features, got 3"):
        scorer.score([1.0, 2.0, 3.0], model)


def test_a_non_finite_score_is_a_model_error(tmp_path: Path, publisher: Any, now: Any) -> None:
    scorer, model = make_scorer(tmp_path, publisher, now)

    class Broken:
        def __getattr__(self, name: str) -> Any:
            return getattr(model, name)

        def run(self, x: Any) -> tuple[float, None]:
            return math.nan, None

    with pytest.raises(ModelError, match="nan"):
        scorer.score(X, Broken())  # type: ignore[arg-type]


def test_a_window_is_scored_by_its_asset_types_model(
    tmp_path: Path, publisher: Any, now: Any
) -> None:
    scorer, model = make_scorer(tmp_path, publisher, now)
    buf = WindowBuffer("cc-1", PollGroup(name="default", period_s=10.0, window_s=300.0))
    for ts, temp in ((0.0, 78.5), (10.0, 81.5)):
        buf.append(ts, {"discharge_temp": temp, "vibration_rms": 2.0, "current_l1": 12.0})
    window = buf.close_due(300.0)
    assert window is not None
    s = scorer.score_window(window, "compressor")
    assert s is not None and s.score == pytest.approx(1.5) and s.n_filled == 0
    # the features the model took travel with the score, as computed from the window
    assert list(s.features) == list(model.feature_names)
    assert s.features["discharge_temp__mean"] == pytest.approx(80.0)
    assert s.features["current_l1__mean"] == pytest.approx(12.0)
    assert scorer.score_window(window, "fan") is None  # no model for fans

    short = WindowBuffer("cc-1", PollGroup(name="fast", period_s=1.0, window_s=60.0))
    short.append(0.0, {"discharge_temp": 80.0})
    short_window = short.close_due(60.0)
    assert short_window is not None
    assert scorer.score_window(short_window, "compressor") is None  # trained on 300-s windows


def test_top_signals_sum_per_signal_and_break_ties_by_name() -> None:
    names = ["b__mean", "a__mean", "c__mean", "b__maximum", "d__mean"]
    assert top_signals(names, [1.0, 2.0, 2.0, 1.0, 0.5]) == [
        ("a", 2.0),
        ("b", 2.0),
        ("c", 2.0),
    ]
    assert top_signals(names, [0.0, -1.0, 3.0, 0.0, 0.0], k=2) == [("c", 3.0), ("b", 0.0)]


def test_features_computed_with_the_windows_own_are_scored_as_if_computed_alone(
    tmp_path: Path, publisher: Any, now: Any
) -> None:
    """The agent computes the model's features in the same feature_vector call as the
    window's per-point ones; the score must not change by it."""
    scorer, model = make_scorer(tmp_path, publisher, now)
    buf = WindowBuffer("cc-1", PollGroup(name="default", period_s=10.0, window_s=300.0))
    end = buf.window_end(0.0)
    for i in range(30):
        buf.append(
            end - 300.0 + 10.0 * i,
            {"discharge_temp": 78.0 + 0.37 * i, "vibration_rms": 2.0 + (i % 3), "current_l1": 12.0},
        )
    window = buf.close_due(end)
    assert window is not None
    names = scorer.feature_names(window, "compressor")
    assert names == tuple(model.feature_names)
    own = ["discharge_temp__standard_deviation", "vibration_rms__maximum", "current_l1__mean"]
    union = own + [n for n in names if n not in own]
    values = feature_vector(window.series, union, window.ts).tolist()
    computed = dict(zip(union, values, strict=True))
    alone = scorer.score_window(window, "compressor")
    shared = scorer.score_window(window, "compressor", computed)
    assert alone is not None and shared is not None
    assert shared.score == alone.score and shared.features == alone.features
    # values that are not the window's are not used: a missing name means computing afresh
    partial = {k: 0.0 for k in union[:-1]}
    assert scorer.score_window(window, "compressor", partial) == alone
