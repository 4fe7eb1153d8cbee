"""Failure risk: from a device's anomaly history, P(failure ≤ 24 h), P(failure ≤ 72 h),
P(failure within the alert horizon), the likely fault type and the signals behind it.

Built on the asset type's anomaly detector (:mod:`models.anomaly`). At every window end
``t`` of a recording (the detector's windows and hop), causally:

1. the detector's per-feature residual contributions are summed per signal (the part of
   the feature name before its feature), giving each signal's share of the anomaly score;
2. *risk features*: ``log1p`` of each signal's share and of the score, averaged over the
   trailing :data:`SHORT_H` and :data:`LONG_H` hours, the least-squares trend of
   ``log1p(score)`` per day over the trailing :data:`LONG_H` hours, and each detector
   feature's standardised value ``z`` (against the asset's baseline, as the detector gets
   it) averaged over the trailing :data:`LONG_H` hours. The shares show what the healthy
   correlations no longer explain; the ``z`` means also show a drift along them (a fouled
   condenser looks like a hot day that does not end) and which signals moved which way,
   which tells the fault types apart. Each ``z`` is averaged twice: over all windows of
   the span, a missing value counting as 0, and over the windows where the feature had a
   value. A feature of the running machine (a phase imbalance) has no value while the unit
   stands idle, so the first mean fades over a weekend off while the second keeps what the
   last running windows said; the first damps one odd window of a unit that seldom runs.
   Models fitted before either mean existed are still served (their ``feature_names`` say
   which inputs they take);
3. three L2-regularised logistic regressions (:data:`REGULARISATION_C`, standardised
   inputs, fitted on at most about :data:`FIT_MAX_WINDOWS` windows) give P(failure within
   24 h), within the horizon (72 h by default) and within the *alert horizon* (the
   horizon or one of :data:`ALERT_HORIZONS_H`, chosen on the training part, or as asked);
   a multinomial one, fitted on the windows within the alert horizon of a failure (where
   alerts open work orders), gives the fault type.

Why a third probability: alerts must come at least 72 h before a failure, but a window
72 h or more before one is a negative for "failure within 72 h", so a model of that
probability learns to rise only once the failure is inside its horizon. Alerts are raised
on the longer horizon's probability, judged by whether a failure follows within the
horizon (precision@72h); the 24-h and 72-h ones stay what the service shows and how it
ranks urgency. How far ahead precursors show depends on the machines and faults, so a fit
tries several alert horizons and keeps the one that warns the most training failures early
enough at the target precision. On the simulated fleets, 336 h also won on assets of the
training fleet held out from the fit (``models/artifacts/README.md``): it warned ≥ 72 h
ahead of 75 % of their failures against 52 % when alerting on 72 h, and more precisely.

Labels come from the dataset's failures: a window is positive for H when the asset's next
failure is at most H hours after its end. Windows while the asset is down (from a failure
to the next maintenance event, or :data:`DOWN_AFTER_FAILURE_S` without one) are neither
trained on nor alerted on: the failure has already happened.

An *alert* is raised when P(alert horizon) rises above the threshold and cleared once it has
stayed below :data:`CLEAR_RATIO` × the threshold for :data:`CLEAR_AFTER_S`
(:func:`alert_episodes`); the threshold is the lowest whose alerts on the training part reach
:data:`TARGET_PRECISION` (the precision of alert episodes at the horizon, as
:mod:`models.metrics` defines it) among :data:`THRESHOLDS`, else the one with the best
precision.

Exported to ONNX (:func:`build_risk_onnx`): input ``features`` [batch, n]; outputs ``p24``,
``p_horizon``, ``p_alert`` [batch], ``fault_probs`` [batch, k] and ``contributions``
[batch, n] (each input's share of the alert logit), for the cloud's scorer. A graph
without ``p_alert`` (fitted before it existed) alerts on ``p_horizon``.
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
from models.metrics import Episode, alert_is_censored, alert_was_right, warning_lead_s

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
SHORT_H = 24.0
LONG_H = 72.0
DOWN_AFTER_FAILURE_S = 7 * 86400.0
TARGET_PRECISION = 0.9
CLEAR_RATIO = 0.6
CLEAR_AFTER_S = 24 * 3600.0
QUIET_AFTER_REPAIR_S = LONG_H * 3600.0
ALERT_HORIZONS_H = (168.0, 336.0)
"""The alert horizons a fit tries besides its horizon (:func:`fit_risk`)."""
THRESHOLDS = np.concatenate(
    [np.round(np.arange(0.05, 0.99, 0.01), 2), [0.99, 0.993, 0.995, 0.997, 0.998, 0.999]]
)
"""The alert thresholds :func:`choose_threshold` tries, lowest first: fine at the top,
where class-balanced fits put the precise ones."""
OUTPUTS = ("p24", "p_horizon", "p_alert", "fault_probs", "contributions")
"""The risk graph's outputs, in order (:func:`build_risk_onnx`)."""
LEGACY_OUTPUTS = ("p24", "p_horizon", "fault_probs", "contributions")
"""Those of a graph fitted before ``p_alert`` (whose contributions are of the horizon
logit); still served."""
Z_SUFFIX = f"__z_mean_{LONG_H:g}h"
"""Name suffix of the z-mean risk inputs (:func:`risk_features` with ``z``): missing
values count as 0."""
Z_PRESENT_SUFFIX = f"__z_present_mean_{LONG_H:g}h"
"""Name suffix of the z means over the windows where the feature had a value
(:func:`risk_features` with ``present``)."""
SWEEP_THRESHOLDS = tuple(float(v) for v in THRESHOLDS if v >= 0.8)
"""The thresholds ``edgewatch-models evaluate --risk-sweep`` tries by default."""
MAX_FALSE_ALERTS = 1.0
"""False alerts per 100 asset-months a suggested threshold may make
(:func:`suggest_threshold`): the service's promise."""
REGULARISATION_C = 0.01
"""Inverse L2 strength of the probability regressions (inputs standardised). The inputs
are many and the failures that carry the signal few (windows an hour apart are not
independent), so the weights are kept small."""
FIT_MAX_WINDOWS = 300_000
"""The regressions are fitted on at most about this many windows: beyond it, on every k-th
window of each recording (consecutive windows overlap almost entirely, so little is lost,
and fitting time stays bounded). Every window still counts when choosing the threshold."""
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
    t: F64,
    score: F64,
    signal_shares: F64,
    signals: Sequence[str],
    z: F64 | None = None,
    z_features: Sequence[str] = (),
    present: B | None = None,
) -> tuple[F64, list[str]]:
    """The risk model's inputs at every window end (see the module docstring).

    ``z`` (windows × features, the detector's inputs standardised against the asset's
    baseline, in ``z_features`` order): also the trailing :data:`LONG_H` mean of each,
    named ``{feature}__z_mean_72h``, missing values counting as 0 (as the detector's
    standardisation makes them). With ``present`` (windows × features, True where the
    feature had a value), then also its mean over the windows of that span where the
    feature had a value, named ``{feature}__z_present_mean_72h`` (0 where it had none).
    The first fades while a unit stands idle (a feature of the running machine has no
    value then); the second keeps what the last running windows said."""
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
    parts = [short, long, trend]
    if z is not None:
        if z.ndim != 2 or z.shape != (t.size, len(z_features)):
            raise ValueError(
                f"z of shape {z.shape} for {t.size} windows of {len(z_features)} features"
            )
        z0 = np.nan_to_num(z)
        names += [f"{f}{Z_SUFFIX}" for f in z_features]
        if present is None:
            parts.append(_trailing_mean(t, z0, LONG_H * 3600))
        else:
            if present.shape != z.shape:
                raise ValueError(f"present of shape {present.shape} for z of shape {z.shape}")
            # one pass over the span: the mean of z, of z where present, and the share present
            means = _trailing_mean(
                t, np.hstack([z0, np.where(present, z0, 0.0), present]), LONG_H * 3600
            )
            mean, sums, shares = np.hsplit(means, 3)
            with np.errstate(invalid="ignore", divide="ignore"):
                parts += [mean, np.where(shares > 0, sums / shares, 0.0)]
            names += [f"{f}{Z_PRESENT_SUFFIX}" for f in z_features]
    elif present is not None:
        raise ValueError("present z means need z")
    return np.hstack(parts), names


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
    alert_horizon_h: float
    wa: F64
    ba: float
    fault_types: list[str]
    wf: F64
    """(n, k) multinomial weights."""
    bf: F64
    threshold: float
    """Alerts: ``p_alert`` above it (:func:`alert_episodes`)."""
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: F64) -> RiskOutput:
        z = (x - self.mu) / self.sd
        logits = z @ self.wf + self.bf
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return RiskOutput(
            p24=_sigmoid(z @ self.w24 + self.b24),
            p_horizon=_sigmoid(z @ self.wh + self.bh),
            p_alert=_sigmoid(z @ self.wa + self.ba),
            fault_probs=np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64),
            contributions=np.asarray(z * self.wa, dtype=np.float64),
        )


@dataclass(frozen=True, slots=True)
class RiskOutput:
    """What a risk model says for a batch of windows (the ONNX graph's outputs)."""

    p24: F64
    """P(failure ≤ 24 h), (batch,)."""
    p_horizon: F64
    """P(failure ≤ the horizon, 72 h for the shipped models), (batch,)."""
    p_alert: F64
    """P(failure ≤ the alert horizon), (batch,): what alerts are raised on."""
    fault_probs: F64
    """(batch, fault types)."""
    contributions: F64
    """Each input's share of the alert logit, (batch, inputs)."""


def _sigmoid(v: F64) -> F64:
    return np.asarray(1 / (1 + np.exp(-v)), dtype=np.float64)


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


def suggest_threshold(
    rows: Sequence[dict[str, Any]],
    min_precision: float = TARGET_PRECISION,
    max_false_alerts: float = MAX_FALSE_ALERTS,
) -> float | None:
    """The threshold to ship from a sweep on a validation fleet (``rows``: one dict per
    threshold with ``threshold``, ``ahead@72h``, ``precision@72h`` and
    ``false_alerts_per_100_asset_months@72h``): of those whose precision is at least
    ``min_precision`` and whose false alerts are at most ``max_false_alerts``, the ones
    that warned the most failures at least 72 h ahead; of those, the fewest false alerts,
    then the lowest threshold. None when no threshold meets both."""
    fa = "false_alerts_per_100_asset_months@72h"
    ok = [
        r
        for r in rows
        if r["precision@72h"] is not None
        and r["precision@72h"] >= min_precision
        and r[fa] is not None
        and r[fa] <= max_false_alerts
        and r["ahead@72h"] is not None
    ]
    if not ok:
        return None
    best = min(ok, key=lambda r: (-r["ahead@72h"], r[fa], r["threshold"]))
    return float(best["threshold"])


def choose_threshold(
    per_asset: Sequence[tuple[F64, F64, Sequence[float], B]], horizon_s: float
) -> tuple[float, dict[str, float]]:
    """The lowest threshold whose alerts on ``per_asset`` (t, p, failures, down) reach
    :data:`TARGET_PRECISION` at the horizon (:func:`models.metrics.alert_was_right`; an
    alert the end of its recording leaves unjudged, :func:`models.metrics.alert_is_censored`,
    is left out, as evaluation leaves it out); else the most precise one. Recall is the
    share of failures an alert stood before in the horizon, ahead the share it was raised
    at least the horizon before."""
    best: tuple[float, dict[str, float]] = (0.5, {"train_precision": -1.0})
    for thr in THRESHOLDS:
        good = total = warned = early = n_fail = 0
        for t, p, fails, down in per_asset:
            episodes = alert_episodes(t, p, thr, down)
            fs = np.asarray(fails, dtype=np.float64)
            end = float(t[-1]) if t.size else 0.0
            total += sum(not alert_is_censored(e, fs, horizon_s, end) for e in episodes)
            good += sum(alert_was_right(e, fs, horizon_s) for e in episodes)
            for f in fs:
                if f < t[0] or f > t[-1] + horizon_s:
                    continue
                n_fail += 1
                lead = warning_lead_s(episodes, float(f), horizon_s)
                warned += lead is not None
                early += lead is not None and lead >= horizon_s
        if total == 0:
            continue
        info = {
            "train_precision": good / total,
            "train_recall": warned / n_fail if n_fail else 0.0,
            "train_ahead": early / n_fail if n_fail else 0.0,
        }
        if info["train_precision"] >= TARGET_PRECISION:
            return float(thr), info
        if info["train_precision"] > best[1]["train_precision"]:
            best = (float(thr), info)
    return best


def fit_risk(
    asset_type: str,
    horizon_h: float,
    rows: Sequence[dict[str, Any]],
    alert_horizon_h: float | None = None,
) -> RiskModel:
    """Fit from per-recording tables: dicts with t, x (risk features), names, ttf, fault
    (type of the next failure), down, train, failures. Alerts are raised on P(failure
    within ``alert_horizon_h``), their threshold chosen for precision at ``horizon_h``
    (:func:`choose_threshold`). ``alert_horizon_h`` None: the one of ``horizon_h`` and
    :data:`ALERT_HORIZONS_H` whose alerts on the training part reach
    :data:`TARGET_PRECISION` and warn the most failures at least ``horizon_h`` ahead (on
    ties the more precise, then the shorter; if none reaches it, the most precise);
    ``info["alert_horizons"]``
    records each one's training figures."""
    if alert_horizon_h is None:
        candidates = sorted({horizon_h, *(h for h in ALERT_HORIZONS_H if h > horizon_h)})
    elif alert_horizon_h < horizon_h:
        raise TrainingError(
            f"{asset_type}: alert horizon {alert_horizon_h:g} h is shorter than the horizon "
            f"{horizon_h:g} h; an alert must be able to come before the horizon's warnings"
        )
    else:
        candidates = [alert_horizon_h]
    names = rows[0]["names"]
    usable = [r["train"] & ~r["down"] for r in rows]
    sel = list(zip(rows, _thinned(usable), strict=True))
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
        lr_h = _logistic().fit(z, yh)
        lr_24 = _logistic().fit(z, y24 if y24.any() and (~y24).any() else yh)
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
        alert_horizon_h=horizon_h,
        wa=lr_h.coef_[0].copy(),
        ba=float(lr_h.intercept_[0]),
        fault_types=["unknown"],  # fitted below, for the alert horizon chosen
        wf=np.zeros((z.shape[1], 1)),
        bf=np.zeros(1),
        threshold=0.5,
    )
    tried: dict[str, dict[str, float]] = {}
    fits: list[tuple[tuple[bool, float, float], float, F64, float]] = []
    for alert_h in candidates:
        if alert_h == horizon_h:
            wa, ba = model.wh, model.bh
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lr_a = _logistic().fit(z, ttf <= alert_h * 3600)
            wa, ba = lr_a.coef_[0].copy(), float(lr_a.intercept_[0])
        model.wa, model.ba = wa, ba
        per_asset = [
            (
                r["t"][r["train"]],
                model.predict(r["x"][r["train"]]).p_alert,
                r["failures"],
                r["down"][r["train"]],
            )
            for r in rows
        ]
        threshold, info = choose_threshold(per_asset, hs)
        tried[f"{alert_h:g}"] = {**info, "threshold": threshold}
        precise = info["train_precision"] >= TARGET_PRECISION
        rank = (precise, info["train_ahead"] if precise else 0.0, info["train_precision"])
        fits.append((rank, alert_h, wa, ba))
    # the best rank; max keeps the first, so the shortest horizon of equals
    _, model.alert_horizon_h, model.wa, model.ba = max(fits, key=lambda f: f[0])
    # the fault type where orders open: on the windows within the alert horizon
    model.fault_types, model.wf, model.bf = _fault_types(
        z, fault, ttf <= model.alert_horizon_h * 3600
    )
    chosen = tried[f"{model.alert_horizon_h:g}"]
    model.threshold = chosen["threshold"]
    model.info = {
        **{k: v for k, v in chosen.items() if k != "threshold"},
        "train_windows": int(sum(m.sum() for m in usable)),
        "fit_windows": int(x.shape[0]),
        "positive_windows": int(yh.sum()),
        "alert_horizons": tried,
    }
    return model


def _thinned(masks: Sequence[B]) -> list[B]:
    """Each mask keeping every k-th of its windows, k the smallest that leaves at most
    :data:`FIT_MAX_WINDOWS` in all."""
    k = max(1, -(-sum(int(m.sum()) for m in masks) // FIT_MAX_WINDOWS))
    if k == 1:
        return list(masks)
    out = []
    for m in masks:
        thin = np.zeros_like(m)
        thin[np.flatnonzero(m)[::k]] = True
        out.append(thin)
    return out


def _fault_types(z: F64, fault: npt.NDArray[Any], rows: B) -> tuple[list[str], F64, F64]:
    """The fault types of ``rows`` and a multinomial regression of them (weights (n, k),
    biases (k,)); a single type (or none: ``unknown``) gets zero weights."""
    from sklearn.linear_model import LogisticRegression

    types = sorted({str(f) for f in fault[rows] if f})
    if len(types) < 2:
        return types or ["unknown"], np.zeros((z.shape[1], 1)), np.zeros(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr_f = LogisticRegression(C=1.0, max_iter=2000).fit(z[rows], fault[rows])
    order = [list(lr_f.classes_).index(c) for c in types]
    return (
        types,
        np.asarray(lr_f.coef_[order].T, dtype=np.float64),
        np.asarray(lr_f.intercept_[order], dtype=np.float64),
    )


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=REGULARISATION_C, max_iter=2000, class_weight="balanced")


def build_risk_onnx(m: RiskModel) -> bytes:
    n, k = len(m.feature_names), len(m.fault_types)
    f32 = np.float32
    inits = [
        numpy_helper.from_array(m.mu.astype(f32), "mu"),
        numpy_helper.from_array(m.sd.astype(f32), "sd"),
        numpy_helper.from_array(m.w24.astype(f32).reshape(n, 1), "w24"),
        numpy_helper.from_array(np.asarray([m.b24], f32), "b24"),
        numpy_helper.from_array(m.wh.astype(f32).reshape(n, 1), "wh"),
        numpy_helper.from_array(np.asarray([m.bh], f32), "bh"),
        numpy_helper.from_array(m.wa.astype(f32).reshape(n, 1), "wa"),
        numpy_helper.from_array(m.wa.astype(f32), "wa_row"),
        numpy_helper.from_array(np.asarray([m.ba], f32), "ba"),
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
        helper.make_node("MatMul", ["z", "wa"], ["lam"]),
        helper.make_node("Add", ["lam", "ba"], ["la"]),
        helper.make_node("Sigmoid", ["la"], ["pam"]),
        helper.make_node("Squeeze", ["pam", "axis1"], ["p_alert"]),
        helper.make_node("MatMul", ["z", "wf"], ["lfm"]),
        helper.make_node("Add", ["lfm", "bf"], ["lf"]),
        helper.make_node("Softmax", ["lf"], ["fault_probs"], axis=1),
        helper.make_node("Mul", ["z", "wa_row"], ["contributions"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"{m.asset_type}-risk",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        [
            helper.make_tensor_value_info("p24", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("p_horizon", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("p_alert", TensorProto.FLOAT, ["batch"]),
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
        "alert_horizon_h": m.alert_horizon_h,
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
        """Alerts: ``p_alert`` above it."""
        return float(self.meta["threshold"])

    @property
    def horizon_h(self) -> float:
        return float(self.meta["horizon_h"])

    @property
    def fault_types(self) -> list[str]:
        return [str(k) for k in self.meta["fault_types"]]

    @property
    def alert_horizon_h(self) -> float:
        """The horizon of ``p_alert``; a model fitted before it existed alerts on its
        horizon."""
        return float(self.meta.get("alert_horizon_h", self.meta["horizon_h"]))

    def run(self, x: F64) -> RiskOutput:
        """The graph's outputs for the rows of ``x`` (risk features), in one inference."""
        k = len(self.meta["fault_types"])
        if x.shape[0] == 0:
            empty = np.empty(0)
            return RiskOutput(empty, empty, empty, np.empty((0, k)), np.empty((0, x.shape[1])))
        out = self.session.run(None, {"features": x.astype(np.float32)})
        f64 = [np.asarray(a, np.float64) for a in out]
        if len(f64) == len(LEGACY_OUTPUTS):  # no p_alert: alerts on p_horizon
            p24, ph, fp, contrib = f64
            return RiskOutput(p24, ph, ph, fp, contrib)
        p24, ph, pa, fp, contrib = f64
        return RiskOutput(p24, ph, pa, fp, contrib)


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
