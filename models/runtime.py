"""Failure risk at run time: the shipped models on one device's recent feature history.

What the cloud's risk scorer calls. The cloud holds, per device, the feature vectors its
gateway computed over consecutive windows (rows = window ends, columns = the asset type's
detector features, missing values NaN). :meth:`RiskRuntime.assess` runs them through the
same steps as offline evaluation (:func:`models.pipeline.score_windows`,
:func:`models.pipeline.risk_table`), so the numbers are the offline ones:

1. every row is standardised against the device's own reference windows
   (:func:`models.anomaly.asset_baseline`; ``baseline=None``: the fleet baseline) and run
   through the detector's ONNX graph: anomaly score and per-feature contributions;
2. contributions summed per signal (:func:`models.risk.signal_shares`), then the risk
   features (:func:`models.risk.risk_features`: trailing 24 h / 72 h means, the 72 h
   score trend and, for a model fitted with them, the 72-h means of the standardised
   features of step 1);
3. the risk graph on the rows asked for: P(failure ≤ 24 h), P(failure ≤ horizon),
   P(failure ≤ alert horizon), the fault type probabilities and each risk input's share of
   the alert logit.

**Pass a baseline.** The shipped detectors were fitted with per-asset baselines (mode
``asset``): every training asset was standardised against its own healthy windows, and the
risk models learnt from those scores. Against the fleet baseline a healthy simulated unit
alerts most of the time. Give each device's reference windows (at least
:data:`models.anomaly.MIN_ASSET_WINDOWS` rows; fewer fall back to the fleet's), and build
the baseline once per reference with :meth:`RiskRuntime.baseline` when scoring often
(building one costs milliseconds). Which windows matters over months: a unit drifts with
the seasons away from its first weeks in service, and on the simulated test fleet a
baseline of the first 14 days gave eleven times the false alerts of one rebuilt weekly
from the windows 14-44 days back: 10.9 against 0.97 per 100 asset-months
(``tests/bench/bench_risk_baselines.py``; figures in ``models/artifacts/README.md``).
:class:`BaselinePolicy` says which windows, when: the cloud's scorer and that bench both
follow it.

An :class:`Assessment` adds, for the user:

- ``health = round(100 · (1 − p72) · min(1, anomaly_threshold / anomaly_score))``: the
  chance of lasting the horizon, tempered by how far the current window is past the
  detector's threshold (a window at twice the threshold halves it); 100 at no risk and a
  score at or below the threshold, 0 at p72 = 1 (:func:`health_index`);
- ``alert``: ``p_alert ≥`` the risk model's threshold, per window (``p_alert``: P(failure
  within the alert horizon), 336 h for the shipped models, so that an alert can come days
  before the 72-h risk rises; see :mod:`models.risk`). Offline alerting adds
  hysteresis (:func:`models.risk.alert_episodes`); a caller that keeps state applies it;
- ``top_signals``: the (at most 3) signals with the largest share of the *positive*
  contributions to the alert logit (the risk graph's ``contributions``: each input's
  ``(x − μ) / σ · w``). Contributions are netted per group first: a signal's risk inputs
  (its 24-h and 72-h share means, whose weights often have opposite signs) form one group,
  the score inputs another. A signal's share is its group's net contribution, if positive,
  over the sum of the positive group nets (the score group included, so shares sum to
  ≤ 1); signals whose net lowers the risk are left out. Each carries the least-squares
  trend per day, over the trailing :data:`models.risk.LONG_H` hours, of the signal's
  anomaly share (its summed detector contributions, in score units: the score is about 1
  when healthy) (:func:`top_signals`). With the ``spe`` detectors a feature that is
  missing (z = 0) still has a residual when the others predict otherwise, so a missing
  sensor's signal can show up here.

Only the rows whose window end lies within :data:`models.risk.LONG_H` hours of the oldest
row asked for are run, so a caller may hand over more history than needed;
:attr:`InputSpec.history_s` says how much is enough.

Imports numpy, onnxruntime and :mod:`models.anomaly`, :mod:`models.export` and
:mod:`models.risk` (which bring scipy.special, onnx, pydantic and cryptography, but no
pandas, scikit-learn or tsfresh), so a web service can load it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime.capi.onnxruntime_pybind11_state as _ort_state

from edge_agent.features import signal_of
from models import risk
from models.anomaly import MIN_ASSET_WINDOWS, Baseline, QuantileBaseline, Standardizer
from models.anomaly import asset_baseline as _asset_baseline
from models.errors import ArtifactError
from models.export import LoadedDetector, load_detectors

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
TOP_SIGNALS = 3
_LONG_S = risk.LONG_H * 3600.0

# Everything onnxruntime raises (its pybind11 exceptions derive straight from Exception).
_ORT_ERRORS: tuple[type[BaseException], ...] = (
    *(v for v in vars(_ort_state).values() if isinstance(v, type) and issubclass(v, Exception)),
    RuntimeError,
    ValueError,
    TypeError,
)


DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class BaselinePolicy:
    """Which of a device's windows (by window end) make its baseline at a given time.

    A device starts at ``origin`` (in service, or back from a repair). Time from the origin
    is cut into blocks of ``refresh_days``; for the block holding a time, the reference is
    the windows from ``lag_days + span_days`` to ``lag_days`` before the block starts
    (never before the origin), once it holds at least ``min_fill`` of the windows such a
    span holds at the device's rate (:meth:`enough`). Until then it is the windows of the
    first ``first_days`` after the origin.

    The lag keeps a fault that grows over days out of the reference that is to reveal it;
    the span is long enough for a robust baseline and short enough to follow the seasons.
    All spans are half-open, ``[start, end)``, in epoch seconds."""

    first_days: float = 14.0
    lag_days: float = 14.0
    span_days: float = 30.0
    refresh_days: float = 7.0
    min_fill: float = 0.5
    max_windows: int = 360
    """Most reference windows a baseline is built from: more (a long span, a gateway that
    sends windows often) are thinned evenly to at most this many (:meth:`thinned`), which
    bounds what a cached baseline holds (about 0.5 MiB for the shipped compressor
    detector's 94 features)."""

    def __post_init__(self) -> None:
        for name in ("first_days", "span_days", "refresh_days"):
            if not getattr(self, name) > 0:
                raise ValueError(f"baseline {name} must be > 0, not {getattr(self, name)!r}")
        if not self.lag_days >= 0:
            raise ValueError(f"baseline lag_days must be >= 0, not {self.lag_days!r}")
        if not 0 < self.min_fill <= 1:
            raise ValueError(f"baseline min_fill must be in (0, 1], not {self.min_fill!r}")
        if self.max_windows < MIN_ASSET_WINDOWS:
            raise ValueError(
                f"baseline max_windows must be at least {MIN_ASSET_WINDOWS}, "
                f"not {self.max_windows!r}"
            )

    def block(self, origin: float, now: float) -> float:
        """Start of the refresh block holding ``now`` (``origin`` before it)."""
        if now <= origin:
            return origin
        step = self.refresh_days * DAY_S
        return origin + math.floor((now - origin) / step) * step

    def first(self, origin: float) -> tuple[float, float]:
        """The span of the first days after ``origin``."""
        return origin, origin + self.first_days * DAY_S

    def rolling(self, origin: float, block: float) -> tuple[float, float]:
        """The lagged span for the block starting at ``block`` (clipped to the origin;
        empty, start = end, while the lag reaches back before it)."""
        end = max(origin, block - self.lag_days * DAY_S)
        return max(origin, end - self.span_days * DAY_S), end

    def thinned(self, rows: int) -> slice:
        """Which of ``rows`` reference windows (in time order) the baseline is built from:
        every k-th, the fewest k that keeps at most :attr:`max_windows`, ending on the
        newest."""
        step = max(1, math.ceil(rows / self.max_windows))
        return slice((rows - 1) % step, rows, step)

    def enough(self, rows: int, hop_s: float) -> bool:
        """Whether ``rows`` windows, one per ``hop_s``, fill enough of a rolling span."""
        return rows >= max(MIN_ASSET_WINDOWS, self.min_fill * self.span_days * DAY_S / hop_s)


@dataclass(frozen=True, slots=True)
class SignalTrend:
    signal: str
    """A signal as the feature names spell it: ``discharge_temp``, or a derived one such as
    ``discharge_temp-ambient_temp``."""
    share: float
    """Its share (0..1) of the alert risk's positive contributions at the window."""
    trend_per_day: float
    """Least-squares slope per day of its anomaly share over the trailing 72 h (> 0:
    rising), in score units per day."""


@dataclass(frozen=True, slots=True)
class Assessment:
    ts: float
    """Window end (epoch s) this assessment is for."""
    p24: float
    """P(failure ≤ 24 h)."""
    p72: float
    """P(failure ≤ horizon_h) (72 h for the shipped models)."""
    horizon_h: float
    p_alert: float
    """P(failure ≤ alert_horizon_h): what alerts (and work orders) are raised on."""
    alert_horizon_h: float
    fault_type: str
    """The most likely fault type (argmax of ``fault_probs``)."""
    fault_probs: dict[str, float]
    health: int
    """0..100 (:func:`health_index`)."""
    anomaly_score: float
    anomaly_threshold: float
    alert: bool
    """``p_alert ≥`` the risk model's threshold."""
    top_signals: tuple[SignalTrend, ...]
    """At most 3, largest share first; only signals with a positive share."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    asset_type: str
    feature_names: tuple[str, ...]
    """The detector's features: the columns :meth:`RiskRuntime.assess` expects, in order."""
    window_s: float
    """Span of the window each feature row summarises."""
    hop_s: float
    """Spacing of the window ends the models were trained on (one row per ``hop_s``)."""
    history_s: float
    """Trailing history the latest assessment needs: window ends within
    :data:`models.risk.LONG_H` of it, whose windows reach ``window_s`` further back."""
    baseline_windows: int
    """Fewest reference rows for a device's own baseline (fewer: the fleet baseline)."""


@dataclass(frozen=True, slots=True)
class DeviceHistory:
    """One device's feature rows for :meth:`RiskRuntime.assess_many`."""

    t: npt.ArrayLike
    """Window ends (epoch s), ascending, shape (n,)."""
    x: npt.ArrayLike
    """Raw feature values, shape (n, features); NaN where missing."""
    baseline: npt.ArrayLike | Standardizer | None = None
    """The device's reference windows (raw, (m, features)), a baseline built from them
    (:meth:`RiskRuntime.baseline`, to reuse across calls), or None for the fleet's."""


def health_index(p_horizon: float, score: float, threshold: float) -> int:
    """``round(100 · (1 − p_horizon) · min(1, threshold / score))``, in 0..100.

    The anomaly factor is 1 while the score is at or below the threshold (or is not a
    positive number)."""
    factor = threshold / score if score > threshold > 0 else 1.0
    value = 100.0 * (1.0 - p_horizon) * factor
    if not math.isfinite(value):
        return 0
    return int(min(100, max(0, round(value))))


def input_signals(input_names: Sequence[str], signals: Sequence[str]) -> F64:
    """The 0/1 matrix (risk inputs × signals) of which signal each risk input belongs to
    (``{signal}__share_mean_…``, and ``{feature}__z_mean_…`` and
    ``{feature}__z_present_mean_…`` to its feature's signal); score inputs belong to none."""
    col = {s: i for i, s in enumerate(signals)}
    m = np.zeros((len(input_names), len(signals)))
    for i, name in enumerate(input_names):
        head = name.rsplit("__", 1)[0]
        j = col.get(head)
        if j is None and name.endswith((risk.Z_SUFFIX, risk.Z_PRESENT_SUFFIX)):
            j = col.get(signal_of(head))
        if j is not None:
            m[i, j] = 1.0
    return m


def top_signals(
    risk_contributions: F64,
    input_signal: F64,
    signals: Sequence[str],
    t: F64,
    anomaly_shares: F64,
    row: int,
    k: int = TOP_SIGNALS,
) -> tuple[SignalTrend, ...]:
    """The ``k`` signals with the largest share of the positive contributions to the
    alert logit (``risk_contributions``, one row of the risk graph's output; see the
    module docstring), with the trend of their anomaly share (``anomaly_shares``: windows
    × signals, at window ends ``t``) over the trailing :data:`models.risk.LONG_H` hours at
    ``row``."""
    net = risk_contributions @ input_signal
    other = float(risk_contributions @ (1.0 - input_signal.sum(axis=1)))
    pos = np.clip(net, 0.0, None)
    total = float(pos.sum()) + max(other, 0.0)
    if not total > 0:
        return ()
    share = pos / total
    order = [int(j) for j in np.argsort(-share, kind="stable")[:k] if share[j] > 0]
    lo = int(np.searchsorted(t, t[row] - _LONG_S, side="right"))  # the trailing span only
    out = []
    for j in order:
        slope = risk._trailing_slope_per_day(
            t[lo : row + 1], anomaly_shares[lo : row + 1, j], _LONG_S
        )
        out.append(SignalTrend(signals[j], float(share[j]), float(slope[-1])))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _AssetModels:
    detector: LoadedDetector
    risk: risk.LoadedRisk
    spec: InputSpec
    signals: tuple[str, ...]
    input_signal: F64
    fault_types: tuple[str, ...]
    threshold: float
    horizon_h: float
    z_inputs: bool
    """The risk model also takes the trailing means of the standardised features (fitted
    since they exist; see :func:`models.risk.risk_features`)."""
    z_present: bool
    """It also takes their means over the windows with a value (``present``)."""


class RiskRuntime:
    """The detector and risk model of every asset type in a model folder, sessions built
    once. Thread-safe for concurrent :meth:`assess` calls (onnxruntime sessions are)."""

    def __init__(self, models: dict[str, _AssetModels]) -> None:
        self._models = models

    @classmethod
    def load(cls, model_dir: Path) -> RiskRuntime:
        """Every asset type of ``model_dir`` that has a detector (``<asset>/``, its ONNX
        checked against the manifest's sha256) and a risk model (``<asset>/risk/``).

        :class:`ArtifactError` naming the folder or file when one cannot be read, does not
        match its manifest (the risk graph: the sha256 in ``risk.json``), is incomplete (a
        ``risk/`` folder without ``risk.json`` or ``risk.onnx``) or does not fit its
        detector; and when no asset type has both."""
        detectors = load_detectors(model_dir)
        models: dict[str, _AssetModels] = {}
        for asset_type, det in detectors.items():
            if not (det.folder / risk.RISK_DIR).is_dir():
                log.info("%s: no risk model in %s; not served", asset_type, det.folder)
                continue
            models[asset_type] = _load_asset(det)
        if not models:
            raise ArtifactError(
                f"{model_dir}: no asset type has both a detector and a risk model "
                f"(<asset>/{risk.RISK_DIR}/{risk.RISK_JSON})"
            )
        return cls(models)

    @property
    def asset_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._models))

    def _get(self, asset_type: str) -> _AssetModels:
        m = self._models.get(asset_type)
        if m is None:
            raise ArtifactError(
                f"no risk model for asset type {asset_type!r} (loaded: {list(self.asset_types)})"
            )
        return m

    def spec(self, asset_type: str) -> InputSpec:
        """What :meth:`assess` expects for ``asset_type``."""
        return self._get(asset_type).spec

    def threshold(self, asset_type: str) -> float:
        """The risk model's alert threshold on P(failure within the alert horizon)."""
        return self._get(asset_type).threshold

    def baseline(self, asset_type: str, reference_x: npt.ArrayLike) -> Standardizer:
        """A device's own baseline from its reference windows (raw rows, e.g. its first
        weeks when it was known to be healthy), to pass as ``baseline`` repeatedly; the
        fleet baseline with fewer than :data:`models.anomaly.MIN_ASSET_WINDOWS` rows."""
        m = self._get(asset_type)
        ref = _matrix(reference_x, len(m.spec.feature_names), "baseline")
        det = m.detector
        return _asset_baseline(det.fleet, det.baseline_mode, ref, det.scale_floor)

    def assess(
        self,
        asset_type: str,
        t: npt.ArrayLike,
        x: npt.ArrayLike,
        *,
        baseline: npt.ArrayLike | Standardizer | None = None,
        last: int = 1,
    ) -> list[Assessment]:
        """The assessments of the last ``last`` rows (oldest first; all of them when there
        are fewer), from one device's window ends ``t`` (ascending, shape (n,)) and raw
        feature rows ``x`` (shape (n, features), columns as :meth:`spec` lists; NaN
        allowed). ``baseline``: see :class:`DeviceHistory`. [] for n == 0; ValueError
        naming the shapes when they do not match."""
        return self.assess_many(asset_type, [DeviceHistory(t, x, baseline)], last=last)[0]

    def assess_many(
        self, asset_type: str, devices: Sequence[DeviceHistory], *, last: int = 1
    ) -> list[list[Assessment]]:
        """:meth:`assess` for several devices of one asset type, with one detector and one
        risk inference for all of them; one list per device, in order."""
        if last < 1:
            raise ValueError(f"last must be at least 1, got {last}")
        m = self._get(asset_type)
        det = m.detector
        f = len(m.spec.feature_names)
        prepared: list[tuple[F64, F64, B | None]] = []  # window ends, standardised, had a value
        for i, dev in enumerate(devices):
            t, x = _history(dev.t, dev.x, f, i if len(devices) > 1 else None)
            if t.size:
                lo = np.searchsorted(t, t[max(t.size - last, 0)] - _LONG_S, side="right")
                t, x = t[lo:], x[lo:]
            ok = np.isfinite(x) if m.z_present else None
            prepared.append((t, self._standardizer(m, dev.baseline).z(x) if t.size else x, ok))
        rows = [t.size for t, _, _ in prepared]
        if sum(rows) == 0:
            return [[] for _ in devices]
        z_all = np.vstack([z for _, z, _ in prepared])
        score, contrib = det.run(det.fleet.to_raw(z_all))
        bounds = np.cumsum([0, *rows])
        inputs: list[F64] = []
        scored: list[tuple[F64, F64, F64, int]] = []  # t, score, anomaly shares, rows asked
        for (t, z, ok), a, b in zip(prepared, bounds[:-1], bounds[1:], strict=True):
            shares, signals = risk.signal_shares(det.feature_names, contrib[a:b])
            k = min(last, t.size)
            if k:
                rx, _ = risk.risk_features(
                    t,
                    score[a:b],
                    shares,
                    signals,
                    z if m.z_inputs else None,
                    det.feature_names,
                    ok,
                )
                inputs.append(rx[-k:])
            scored.append((t, score[a:b], shares, k))
        ro = m.risk.run(np.vstack(inputs))
        out: list[list[Assessment]] = []
        r = 0
        for t, sc, shares, k in scored:
            out.append(
                [
                    _assessment(m, t, sc, shares, row, ro, i)
                    for i, row in zip(range(r, r + k), range(t.size - k, t.size), strict=True)
                ]
            )
            r += k
        return out

    @staticmethod
    def _standardizer(
        m: _AssetModels, baseline: npt.ArrayLike | Standardizer | None
    ) -> Standardizer:
        det = m.detector
        if baseline is None:
            return det.fleet
        if isinstance(baseline, Baseline | QuantileBaseline):
            size = (baseline.center if isinstance(baseline, Baseline) else baseline.scale).size
            if size != len(m.spec.feature_names):
                raise ValueError(
                    f"baseline built for {size} features; {m.spec.asset_type} has "
                    f"{len(m.spec.feature_names)}"
                )
            return baseline
        ref = _matrix(baseline, len(m.spec.feature_names), "baseline")
        return _asset_baseline(det.fleet, det.baseline_mode, ref, det.scale_floor)


def _assessment(
    m: _AssetModels,
    t: F64,
    score: F64,
    shares: F64,
    row: int,
    ro: risk.RiskOutput,
    i: int,
) -> Assessment:
    """Window ``row`` of one device (``t``, ``score``, ``shares``), whose risk is row ``i``
    of ``ro``."""
    threshold = m.detector.threshold
    ph, pa, fp = float(ro.p_horizon[i]), float(ro.p_alert[i]), ro.fault_probs[i]
    return Assessment(
        ts=float(t[row]),
        p24=float(ro.p24[i]),
        p72=ph,
        horizon_h=m.horizon_h,
        p_alert=pa,
        alert_horizon_h=m.risk.alert_horizon_h,
        fault_type=m.fault_types[int(np.argmax(fp))],
        fault_probs={k: float(v) for k, v in zip(m.fault_types, fp, strict=True)},
        health=health_index(ph, float(score[row]), threshold),
        anomaly_score=float(score[row]),
        anomaly_threshold=threshold,
        alert=pa >= m.threshold,
        top_signals=top_signals(ro.contributions[i], m.input_signal, m.signals, t, shares, row),
    )


def _matrix(a: npt.ArrayLike, f: int, what: str) -> F64:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != f:
        raise ValueError(f"{what} has shape {x.shape}; expected (rows, {f}) for {f} features")
    return x


def _history(
    t_in: npt.ArrayLike, x_in: npt.ArrayLike, f: int, device: int | None
) -> tuple[F64, F64]:
    where = "" if device is None else f" (device {device})"
    t = np.asarray(t_in, dtype=np.float64)
    x = np.asarray(x_in, dtype=np.float64)
    if t.ndim != 1 or x.ndim != 2 or x.shape != (t.size, f):
        raise ValueError(
            f"t has shape {t.shape} and x {x.shape}{where}; expected t (n,) and x (n, {f}) "
            f"for {f} features"
        )
    if not np.all(np.isfinite(t)):
        raise ValueError(f"t has a missing or infinite window end{where}")
    if t.size > 1 and np.any(np.diff(t) < 0):
        raise ValueError(f"t is not in ascending order{where}")
    return t, x


def _load_asset(det: LoadedDetector) -> _AssetModels:
    folder = det.folder / risk.RISK_DIR
    meta_path = folder / risk.RISK_JSON
    for path in (meta_path, folder / risk.RISK_ONNX):
        if not path.is_file():
            raise ArtifactError(
                f"{path}: missing (a risk model is {risk.RISK_JSON} and {risk.RISK_ONNX})"
            )
    try:
        loaded = risk.load_risk(det.folder)
    except _ORT_ERRORS as exc:
        raise ArtifactError(f"{folder / risk.RISK_ONNX}: not a valid ONNX model ({exc})") from None
    if loaded is None:  # pragma: no cover - checked above
        raise ArtifactError(f"{meta_path}: missing")
    meta = loaded.meta
    try:
        names = [str(n) for n in meta["feature_names"]]
        fault_types = tuple(str(k) for k in meta["fault_types"])
        threshold = float(meta["threshold"])
        horizon_h = float(meta["horizon_h"])
        alert_horizon_h = float(meta.get("alert_horizon_h", horizon_h))
        spans = (float(meta.get("short_h", risk.SHORT_H)), float(meta.get("long_h", risk.LONG_H)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{meta_path}: missing or malformed key ({exc!r})") from None
    if str(meta.get("asset_type", det.asset_type)) != det.asset_type:
        raise ArtifactError(
            f"{meta_path}: asset_type {meta['asset_type']!r}, but the detector is "
            f"{det.asset_type!r}"
        )
    if spans != (risk.SHORT_H, risk.LONG_H):
        raise ArtifactError(
            f"{meta_path}: fitted with spans {spans[0]:g} h / {spans[1]:g} h; this code "
            f"computes {risk.SHORT_H:g} h / {risk.LONG_H:g} h"
        )
    if not fault_types or not 0 <= threshold <= 1 or not horizon_h > 0:
        raise ArtifactError(
            f"{meta_path}: needs fault_types, a threshold in [0, 1] and a positive horizon_h"
        )
    if not alert_horizon_h >= horizon_h:
        raise ArtifactError(
            f"{meta_path}: alert_horizon_h {alert_horizon_h:g} is shorter than horizon_h "
            f"{horizon_h:g}"
        )
    f = len(det.feature_names)
    _, signals = risk.signal_shares(det.feature_names, np.zeros((1, f)))
    z_inputs = any(n.endswith(risk.Z_SUFFIX) for n in names)
    z_present = z_inputs and any(n.endswith(risk.Z_PRESENT_SUFFIX) for n in names)
    _, expected = risk.risk_features(
        np.zeros(1),
        np.zeros(1),
        np.zeros((1, len(signals))),
        signals,
        np.zeros((1, f)) if z_inputs else None,
        det.feature_names,
        np.ones((1, f), dtype=bool) if z_present else None,
    )
    if names != expected:
        raise ArtifactError(
            f"{meta_path}: feature_names are not the risk features of the detector's "
            f"signals in {det.folder} (fitted on another detector?)"
        )
    _check_risk_graph(loaded, folder / risk.RISK_ONNX, len(names), len(fault_types))
    w = det.windows
    spec = InputSpec(
        asset_type=det.asset_type,
        feature_names=tuple(det.feature_names),
        window_s=float(det.manifest.window_s),
        hop_s=w.hop * w.interval_s,
        history_s=_LONG_S + float(det.manifest.window_s),
        baseline_windows=MIN_ASSET_WINDOWS,
    )
    return _AssetModels(
        detector=det,
        risk=loaded,
        spec=spec,
        signals=tuple(signals),
        input_signal=input_signals(names, signals),
        fault_types=fault_types,
        threshold=threshold,
        horizon_h=horizon_h,
        z_inputs=z_inputs,
        z_present=z_present,
    )


def _check_risk_graph(loaded: risk.LoadedRisk, path: Path, n: int, k: int) -> None:
    """The graph's input and outputs are those :func:`models.risk.build_risk_onnx` makes."""
    session = loaded.session
    inputs = [(i.name, list(i.shape)) for i in session.get_inputs()]
    outputs = {o.name: list(o.shape) for o in session.get_outputs()}
    ok = (
        len(inputs) == 1
        and inputs[0][0] == "features"
        and inputs[0][1][-1] == n
        and tuple(outputs) in (risk.OUTPUTS, risk.LEGACY_OUTPUTS)
        and outputs["fault_probs"][-1] == k
    )
    if not ok:
        raise ArtifactError(
            f"{path}: expected input features [batch, {n}] and outputs {list(risk.OUTPUTS)} "
            f"(fault_probs [batch, {k}]); the graph has inputs {inputs}, outputs {outputs}"
        )
