"""Failure risk: from a device's anomaly history, P(failure ≤ 24 h), P(failure ≤ 72 h), the
likely fault type and the signals behind it.

Built on the asset type's anomaly detector (:mod:`models.anomaly`). At every window end
``t`` of a recording (the detector's windows and hop), causally:

1. the detector's per-feature residual contributions are summed per signal (the part of
   the feature name before its feature), giving each signal's share of the anomaly score;
2. *risk features*: ``log1p`` of each signal's share and of the score, averaged over the
   trailing :data:`SHORT_H` and :data:`LONG_H` hours, and the least-squares trend of
   ``log1p(score)`` per day over the trailing :data:`LONG_H` hours;
3. two logistic regressions (standardised inputs) give P(failure within 24 h) and within
   the horizon (72 h by default); a multinomial one, fitted on the windows that preceded a
   failure, gives the fault type.

Labels come from the dataset's failures: a window is positive for H when the asset's next
failure is at most H hours after its end. Windows while the asset is down (from a failure
to the next maintenance event, or :data:`DOWN_AFTER_FAILURE_S` without one) are neither
trained on nor alerted on: the failure has already happened.

An *alert* is raised when P(horizon) rises above the threshold and cleared once it has
stayed below :data:`CLEAR_RATIO` × the threshold for :data:`CLEAR_AFTER_S`
(:func:`alert_episodes`); the threshold is the lowest whose alerts on the training part reach
:data:`TARGET_PRECISION` (the precision of alert episodes at the horizon, as
:mod:`models.metrics` defines it), else the one with the best precision.

Exported to ONNX (:func:`build_risk_onnx`): input ``features`` [batch, n]; outputs ``p24``,
``p_horizon`` [batch], ``fault_probs`` [batch, k] and ``contributions`` [batch, n] (each
input's share of the horizon logit), for the cloud's scorer.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.features import signal_of
from models.errors import ArtifactError, TrainingError
from models.metrics import Episode, alert_was_right, warning_lead_s

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
SHORT_H = 24.0
LONG_H = 72.0
DOWN_AFTER_FAILURE_S = 7 * 86400.0
TARGET_PRECISION = 0.9
CLEAR_RATIO = 0.6
CLEAR_AFTER_S = 24 * 3600.0
QUIET_AFTER_REPAIR_S = LONG_H * 3600.0
RISK_DIR = "risk"
RISK_ONNX = "risk.onnx"
RISK_JSON = "risk.json"


def down_mask(t: F64, failures: Sequence[float], repairs: Sequence[float]) -> B:
    """Window ends at which the asset is down: from a failure to its repair."""
    down = np.zeros(t.shape, dtype=bool)
    rep = np.sort(np.asarray(repairs, dtype=np.float64))
    for f in failures:
        after = rep[rep >= f]
        end = float(after[0]) if after.size else f + DOWN_AFTER_FAILURE_S
        down |= (t >= f) & (t < end)
    return down


def time_to_failure(t: F64, failures: Sequence[float]) -> F64:
    """Seconds from each window end to the asset's next failure (inf without one)."""
    f = np.sort(np.asarray(failures, dtype=np.float64))
    idx = np.searchsorted(f, t, side="left")
    out = np.full(t.shape, np.inf)
    has = idx < f.size
    out[has] = f[idx[has]] - t[has]
    return out


@lru_cache(maxsize=32)
def _signal_matrix(feature_names: tuple[str, ...]) -> tuple[tuple[str, ...], F64]:
    """The signals of ``feature_names`` (in order of first appearance) and the 0/1 matrix
    (features × signals) that sums feature columns per signal. Read-only: it is cached."""
    of = [signal_of(n) for n in feature_names]
    signals = tuple(dict.fromkeys(of))
    col = {s: i for i, s in enumerate(signals)}
    m = np.zeros((len(feature_names), len(signals)))
    m[np.arange(len(of)), [col[s] for s in of]] = 1.0
    m.setflags(write=False)
    return signals, m


def signal_shares(feature_names: Sequence[str], contributions: F64) -> tuple[F64, list[str]]:
    """Each signal's share of the anomaly score (step 1 of the module docstring): the
    detector's per-feature contributions (windows × features, in ``feature_names`` order)
    summed per signal (:func:`edge_agent.features.signal_of`, so a derived signal such as
    ``discharge_temp-ambient_temp`` is one signal). Returns the shares (windows × signals)
    and the signals, in order of first appearance in ``feature_names``."""
    signals, m = _signal_matrix(tuple(feature_names))
    if contributions.ndim != 2 or contributions.shape[1] != len(feature_names):
        raise ValueError(
            f"contributions of shape {contributions.shape} for {len(feature_names)} features"
        )
    return np.asarray(contributions @ m, dtype=np.float64), list(signals)


def _trailing_mean(t: F64, v: F64, span_s: float) -> F64:
    """Mean of ``v`` (rows × k) over the rows with time in (t_i - span, t_i]."""
    c = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
    lo = np.searchsorted(t, t - span_s, side="right")
    hi = np.arange(1, t.size + 1)
    n = (hi - lo)[:, None]
    return np.asarray((c[hi] - c[lo]) / np.maximum(n, 1), dtype=np.float64)


def _trailing_slope_per_day(t: F64, y: F64, span_s: float) -> F64:
    """Least-squares slope of ``y`` against time (per day) over the trailing span."""
    td = (t - t[0]) / 86400.0
    parts = (np.ones_like(y), td, y, td * y, td * td)
    sums = [np.concatenate([[0.0], np.cumsum(a)]) for a in parts]
    lo = np.searchsorted(t, t - span_s, side="right")
    hi = np.arange(1, t.size + 1)
    n, sx, sy, sxy, sxx = (s[hi] - s[lo] for s in sums)
    den = n * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * sxy - sx * sy) / den
    return np.where(np.isfinite(slope) & (n >= 3), slope, 0.0)


def risk_features(
    t: F64, score: F64, signal_shares: F64, signals: Sequence[str]
) -> tuple[F64, list[str]]:
    """The risk model's inputs at every window end (see the module docstring)."""
    ls = np.log1p(np.clip(np.nan_to_num(score), 0, None))[:, None]
    lc = np.log1p(np.clip(np.nan_to_num(signal_shares), 0, None))
    both = np.hstack([ls, lc])
    short = _trailing_mean(t, both, SHORT_H * 3600)
    long = _trailing_mean(t, both, LONG_H * 3600)
    trend = _trailing_slope_per_day(t, ls[:, 0], LONG_H * 3600)[:, None]
    names = (
        [f"score__mean_{SHORT_H:g}h"]
        + [f"{s}__share_mean_{SHORT_H:g}h" for s in signals]
        + [f"score__mean_{LONG_H:g}h"]
        + [f"{s}__share_mean_{LONG_H:g}h" for s in signals]
        + [f"score__trend_per_day_{LONG_H:g}h"]
    )
    return np.hstack([short, long, trend]), names


@dataclass
class RiskModel:
    asset_type: str
    horizon_h: float
    feature_names: list[str]
    mu: F64
    sd: F64
    w24: F64
    b24: float
    wh: F64
    bh: float
    fault_types: list[str]
    wf: F64
    """(n, k) multinomial weights."""
    bf: F64
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: F64) -> tuple[F64, F64, F64]:
        z = (x - self.mu) / self.sd
        p24 = 1 / (1 + np.exp(-(z @ self.w24 + self.b24)))
        ph = 1 / (1 + np.exp(-(z @ self.wh + self.bh)))
        logits = z @ self.wf + self.bf
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p24, ph, np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def alert_episodes(t: F64, p: F64, threshold: float, down: B | None = None) -> list[Episode]:
    """Alerts as ``(raised, cleared)``, with hysteresis: an alert is raised when ``p`` rises
    above ``threshold`` and cleared only after ``p`` stayed below ``threshold × CLEAR_RATIO``
    for :data:`CLEAR_AFTER_S`, so a risk hovering around the threshold raises one alert, not
    one per wobble. An alert standing when the asset goes down ends there (no alert while
    it is down); one standing at the end of ``t`` ends at its last time.

    After the asset is back, no alert is raised for :data:`QUIET_AFTER_REPAIR_S`: the risk
    features' trailing :data:`LONG_H` still hold the failure that was repaired, and the
    cloud does not reopen a repaired fault within its work-order cool-down (72 h)."""
    out: list[Episode] = []
    raised: float | None = None
    below_since: float | None = None
    quiet_until = -np.inf
    low = threshold * CLEAR_RATIO
    for i in range(t.size):
        now = float(t[i])
        if down is not None and down[i]:
            if raised is not None:
                out.append((raised, now))
            raised, below_since = None, None
            quiet_until = now + QUIET_AFTER_REPAIR_S
            continue
        if raised is None:
            if p[i] > threshold and now >= quiet_until:
                raised, below_since = now, None
        elif p[i] < low:
            below_since = now if below_since is None else below_since
            if now - below_since >= CLEAR_AFTER_S:
                out.append((raised, now))
                raised = None
        else:
            below_since = None
    if raised is not None:
        out.append((raised, float(t[-1])))
    return out


def choose_threshold(
    per_asset: Sequence[tuple[F64, F64, Sequence[float], B]], horizon_s: float
) -> tuple[float, dict[str, float]]:
    """The lowest threshold whose alerts on ``per_asset`` (t, p, failures, down) reach
    :data:`TARGET_PRECISION` at the horizon (:func:`models.metrics.alert_was_right`); else
    the most precise one. Recall is the share of failures an alert stood before."""
    best: tuple[float, float, float] = (-1.0, 0.0, 0.5)  # precision, recall, threshold
    for thr in np.round(np.arange(0.05, 0.99, 0.01), 2):
        good = total = warned = n_fail = 0
        for t, p, fails, down in per_asset:
            episodes = alert_episodes(t, p, thr, down)
            fs = np.asarray(fails, dtype=np.float64)
            total += len(episodes)
            good += sum(alert_was_right(e, fs, horizon_s) for e in episodes)
            for f in fs:
                if f < t[0] or f > t[-1] + horizon_s:
                    continue
                n_fail += 1
                warned += warning_lead_s(episodes, float(f), horizon_s) is not None
        if total == 0:
            continue
        prec = good / total
        rec = warned / n_fail if n_fail else 0.0
        if prec >= TARGET_PRECISION:
            return float(thr), {"train_precision": prec, "train_recall": rec}
        if prec > best[0]:
            best = (prec, rec, float(thr))
    return best[2], {"train_precision": best[0], "train_recall": best[1]}


def fit_risk(
    asset_type: str,
    horizon_h: float,
    rows: Sequence[dict[str, Any]],
) -> RiskModel:
    """Fit from per-recording tables: dicts with t, x (risk features), names, ttf, fault
    (type of the next failure), down, train, failures."""
    from sklearn.linear_model import LogisticRegression

    names = rows[0]["names"]
    sel = [(r, r["train"] & ~r["down"]) for r in rows]
    x = np.vstack([r["x"][m] for r, m in sel])
    ttf = np.concatenate([r["ttf"][m] for r, m in sel])
    fault = np.concatenate([r["fault"][m] for r, m in sel])
    if x.shape[0] < 50:
        raise TrainingError(f"{asset_type}: {x.shape[0]} training windows for risk; need 50")
    hs = horizon_h * 3600
    y24, yh = ttf <= 24 * 3600, ttf <= hs
    if yh.sum() < 5 or (~yh).sum() < 5:
        raise TrainingError(
            f"{asset_type}: {int(yh.sum())} windows within {horizon_h:g} h of a failure in the "
            "training part; a risk model needs failures to learn from (failures: in "
            "dataset.yaml)"
        )
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    z = (x - mu) / sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on separable data
        lr_h = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced").fit(z, yh)
        lr_24 = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced").fit(
            z, y24 if y24.any() and (~y24).any() else yh
        )
    types = sorted({str(f) for f in fault[yh] if f})
    k = len(types)
    if k >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lr_f = LogisticRegression(C=1.0, max_iter=2000).fit(z[yh], fault[yh])
        order = [list(lr_f.classes_).index(c) for c in types]
        wf = lr_f.coef_[order].T
        bf = lr_f.intercept_[order]
    else:
        wf = np.zeros((z.shape[1], max(k, 1)))
        bf = np.zeros(max(k, 1))
        types = types or ["unknown"]
    model = RiskModel(
        asset_type=asset_type,
        horizon_h=horizon_h,
        feature_names=list(names),
        mu=mu,
        sd=sd,
        w24=lr_24.coef_[0].copy(),
        b24=float(lr_24.intercept_[0]),
        wh=lr_h.coef_[0].copy(),
        bh=float(lr_h.intercept_[0]),
        fault_types=types,
        wf=np.asarray(wf, dtype=np.float64),
        bf=np.asarray(bf, dtype=np.float64),
        threshold=0.5,
    )
    per_asset = []
    for r, _ in sel:
        m = r["train"]
        _, ph, _ = model.predict(r["x"][m])
        per_asset.append((r["t"][m], ph, r["failures"], r["down"][m]))
    model.threshold, info = choose_threshold(per_asset, hs)
    model.info = {**info, "train_windows": int(x.shape[0]), "positive_windows": int(yh.sum())}
    return model


def build_risk_onnx(m: RiskModel) -> bytes:
    n, k = len(m.feature_names), len(m.fault_types)
    f32 = np.float32
    inits = [
        numpy_helper.from_array(m.mu.astype(f32), "mu"),
        numpy_helper.from_array(m.sd.astype(f32), "sd"),
        numpy_helper.from_array(m.w24.astype(f32).reshape(n, 1), "w24"),
        numpy_helper.from_array(np.asarray([m.b24], f32), "b24"),
        numpy_helper.from_array(m.wh.astype(f32).reshape(n, 1), "wh"),
        numpy_helper.from_array(m.wh.astype(f32), "wh_row"),
        numpy_helper.from_array(np.asarray([m.bh], f32), "bh"),
        numpy_helper.from_array(m.wf.astype(f32), "wf"),
        numpy_helper.from_array(m.bf.astype(f32), "bf"),
        numpy_helper.from_array(np.asarray([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mu"], ["d"]),
        helper.make_node("Div", ["d", "sd"], ["z"]),
        helper.make_node("MatMul", ["z", "w24"], ["l24m"]),
        helper.make_node("Add", ["l24m", "b24"], ["l24"]),
        helper.make_node("Sigmoid", ["l24"], ["p24m"]),
        helper.make_node("Squeeze", ["p24m", "axis1"], ["p24"]),
        helper.make_node("MatMul", ["z", "wh"], ["lhm"]),
        helper.make_node("Add", ["lhm", "bh"], ["lh"]),
        helper.make_node("Sigmoid", ["lh"], ["phm"]),
        helper.make_node("Squeeze", ["phm", "axis1"], ["p_horizon"]),
        helper.make_node("MatMul", ["z", "wf"], ["lfm"]),
        helper.make_node("Add", ["lfm", "bf"], ["lf"]),
        helper.make_node("Softmax", ["lf"], ["fault_probs"], axis=1),
        helper.make_node("Mul", ["z", "wh_row"], ["contributions"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"{m.asset_type}-risk",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        [
            helper.make_tensor_value_info("p24", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("p_horizon", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("fault_probs", TensorProto.FLOAT, ["batch", k]),
            helper.make_tensor_value_info("contributions", TensorProto.FLOAT, ["batch", n]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.producer_name = "edgewatch-models"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def write_risk(m: RiskModel, folder: Path) -> Path:
    out = folder / RISK_DIR
    out.mkdir(parents=True, exist_ok=True)
    graph = build_risk_onnx(m)
    (out / RISK_ONNX).write_bytes(graph)
    meta = {
        "asset_type": m.asset_type,
        "sha256": hashlib.sha256(graph).hexdigest(),
        "horizon_h": m.horizon_h,
        "feature_names": m.feature_names,
        "fault_types": m.fault_types,
        "threshold": m.threshold,
        "short_h": SHORT_H,
        "long_h": LONG_H,
        "info": m.info,
    }
    (out / RISK_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


@dataclass
class LoadedRisk:
    meta: dict[str, Any]
    session: Any

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def horizon_h(self) -> float:
        return float(self.meta["horizon_h"])

    def run(self, x: F64) -> tuple[F64, F64, F64]:
        """P(failure ≤ 24 h), P(failure ≤ horizon) and the fault type probabilities."""
        p24, ph, fp, _ = self.run_with_contributions(x)
        return p24, ph, fp

    def run_with_contributions(self, x: F64) -> tuple[F64, F64, F64, F64]:
        """:meth:`run` and each input's share of the horizon logit (the graph's
        ``contributions``), in one inference."""
        if x.shape[0] == 0:
            k = len(self.meta["fault_types"])
            return np.empty(0), np.empty(0), np.empty((0, k)), np.empty((0, x.shape[1]))
        p24, ph, fp, contrib = self.session.run(None, {"features": x.astype(np.float32)})
        return (
            np.asarray(p24, np.float64),
            np.asarray(ph, np.float64),
            np.asarray(fp, np.float64),
            np.asarray(contrib, np.float64),
        )


def load_risk(folder: Path) -> LoadedRisk | None:
    """The risk model beside an anomaly detector's folder, if it has one."""
    path = folder / RISK_DIR
    if not (path / RISK_JSON).is_file():
        return None
    from models.export import cpu_session

    try:
        meta = json.loads((path / RISK_JSON).read_text(encoding="utf-8"))
        data = (path / RISK_ONNX).read_bytes()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read the risk model ({exc})") from None
    expected = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(expected, str):
        raise ArtifactError(f"{path / RISK_JSON}: names no sha256 of {RISK_ONNX}")
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{path / RISK_ONNX}: sha256 differs from {RISK_JSON}")
    return LoadedRisk(meta=meta, session=cpu_session(data))
