"""Scoring a window's features with its asset type's ONNX model.

Model I/O convention (every EdgeWatch anomaly model is exported to it; the store refuses
a model that does not follow it):

- input ``features``: float32, shape ``[1, n_features]`` (the batch dimension may be
  symbolic), in the manifest's ``feature_names`` order, with no NaN;
- output ``score``: float32, shape ``[1]`` (``[1, 1]`` is accepted): the anomaly score,
  higher is more anomalous; a score above the manifest's calibrated ``threshold`` is
  anomalous (equal to it is not);
- output ``contributions`` (optional): float32, shape ``[1, n_features]``: each feature's
  share of the score (e.g. squared z-score / n for a standardized-distance model, so that
  they sum to the score). Without it a score has no top signals.

A NaN feature (a signal that was not read, too few samples) is replaced by the manifest's
``fill_values`` entry (its training mean), or 0 without them, and counted in
:attr:`Score.n_filled`. The top signals are the contributions summed per signal (the part of
the feature name before its feature, see :func:`edge_agent.features.parse_feature_name`),
largest first, at most :data:`TOP_SIGNALS`; ties go by signal name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from edge_agent.errors import ModelError
from edge_agent.features import feature_vector, signal_of
from edge_agent.models import LoadedModel, ModelStore
from edge_agent.windows import Window

log = logging.getLogger(__name__)

TOP_SIGNALS = 3


@dataclass(frozen=True, slots=True)
class Score:
    """One window's anomaly score."""

    model_id: str
    version: int
    score: float
    threshold: float
    anomalous: bool
    """score > threshold."""
    top_signals: list[tuple[str, float]]
    """(signal, summed contribution), largest first, at most TOP_SIGNALS."""
    n_filled: int = 0
    """Features that were NaN and replaced by fill values."""
    features: dict[str, float] = field(default_factory=dict)
    """The window's features the model took, by name, as computed (NaN where missing,
    before fill values): shipped with the window's other features, so the cloud has the
    ones the model needs (derived signals such as pressure ratios included)."""


def top_signals(
    names: list[str], contributions: npt.ArrayLike, k: int = TOP_SIGNALS
) -> list[tuple[str, float]]:
    """Contributions summed per signal, the ``k`` largest (ties by signal name)."""
    sums: dict[str, float] = {}
    for name, c in zip(names, np.asarray(contributions, dtype=np.float64), strict=True):
        signal = signal_of(name)
        sums[signal] = sums.get(signal, 0.0) + float(c)
    ranked = sorted(sums.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:k]


class Scorer:
    """Scores feature vectors (or whole windows) with the store's running models."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self.filled = 0
        """Features filled since start."""
        self.scored = 0

    def score(self, window_features: npt.ArrayLike, model: LoadedModel) -> Score:
        """Score one feature vector in ``model.feature_names`` order.

        Raises ModelError if the vector has the wrong length or the model gives a
        non-finite score.
        """
        x = np.array(window_features, dtype=np.float64).reshape(-1)
        n = len(model.feature_names)
        if x.size != n:
            raise ModelError(
                f"model {model.model_id} v{model.version} takes {n} features, got {x.size}"
            )
        missing = ~np.isfinite(x)
        n_filled = int(np.count_nonzero(missing))
        if n_filled:
            x[missing] = model.fill_values[missing]
        value, contributions = model.run(x)
        if not math.isfinite(value):
            raise ModelError(f"model {model.model_id} v{model.version} scored {value}")
        top: list[tuple[str, float]] = []
        if contributions is not None:
            top = top_signals(model.feature_names, contributions)
        self.filled += n_filled
        self.scored += 1
        return Score(
            model_id=model.model_id,
            version=model.version,
            score=value,
            threshold=model.threshold,
            anomalous=value > model.threshold,
            top_signals=top,
            n_filled=n_filled,
        )

    def _model_for(self, window: Window, asset_type: str) -> LoadedModel | None:
        """The asset type's running model when it scores ``window``: None when the type
        has no model, or when the window's length is not the model's ``window_s`` (its
        features would not mean what they meant in training)."""
        model = self.store.model_for(asset_type)
        if model is None:
            return None
        if not math.isclose(window.duration_s, model.manifest.window_s):
            log.debug(
                "%s: %s-s window of %s not scored by %s (trained on %s-s windows)",
                window.device_id,
                window.duration_s,
                window.group,
                model.model_id,
                model.manifest.window_s,
            )
            return None
        return model

    def feature_names(self, window: Window, asset_type: str) -> tuple[str, ...]:
        """The features :meth:`score_window` takes from ``window`` (none when it will not
        score it), so that a caller computing other features of the window can compute
        these in the same pass and hand them in."""
        model = self._model_for(window, asset_type)
        return () if model is None else tuple(model.feature_names)

    def score_window(
        self, window: Window, asset_type: str, computed: Mapping[str, float] | None = None
    ) -> Score | None:
        """Features of ``window`` scored by the asset type's running model; None when it
        does not score the window (see :meth:`feature_names`).

        ``computed``: feature values of this window already computed by
        :func:`~edge_agent.features.feature_vector` (NaN where undefined), used when they
        hold every feature the model takes; otherwise the features are computed here.
        """
        model = self._model_for(window, asset_type)
        if model is None:
            return None
        names = model.feature_names
        if computed is not None and all(n in computed for n in names):
            x = np.fromiter((computed[n] for n in names), dtype=np.float64, count=len(names))
        else:
            x = feature_vector(window.series, names, window.ts)
        score = self.score(x, model)
        return replace(score, features=dict(zip(model.feature_names, x.tolist(), strict=True)))
