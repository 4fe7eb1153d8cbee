"""Fit, score and evaluate anomaly detectors on a dataset, one recording at a time.

- :func:`fit_anomaly`: candidate features of every recording's windows, healthy training
  windows kept (:func:`models.anomaly.healthy_mask`), unsupervised feature screening
  (:func:`screen_features`), one detector per asset type (:func:`models.anomaly.fit_detector`).
- :func:`score_recordings`: every row of every recording scored causally by its asset
  type's detector (the ONNX graph, as the gateway runs it).
- :func:`evaluate_anomaly`: the test part of the split against the per-row labels
  (:mod:`models.metrics`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.features import signal_of
from models import REFERENCES, anomaly, risk
from models.anomaly import AssetWindows, FittedDetector, asset_baseline, healthy_mask
from models.dataset import Dataset, Recording
from models.errors import ArtifactError, DatasetError, TrainingError
from models.export import LoadedDetector, WindowSpec
from models.featurize import (
    candidate_features,
    median_interval,
    row_index,
    typical_interval,
    window_table,
)
from models.metrics import HORIZONS_H, Episode, alert_was_right
from models.runtime import BaselinePolicy

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
Progress = Callable[[Recording], None]

MAX_NAN_SHARE = 0.5
"""A candidate missing in more than this share of healthy windows is screened out."""
MAX_ABS_CORR = 0.98
"""Of two candidates more correlated than this (in z), the later one is screened out."""


@dataclass
class WindowedRecording:
    """A recording's windows with what fitting and evaluation need to know about them."""

    rec: Recording
    names: list[str]
    x: F64
    ends: npt.NDArray[np.int64]
    healthy_train: npt.NDArray[np.bool_]


def windowed(
    ds: Dataset, rec: Recording, names: Sequence[str], size: int, hop: int
) -> WindowedRecording:
    """Features over the recording's windows, and which windows are healthy training ones."""
    table = window_table(rec, names, size, hop)
    starts = rec.t[np.maximum(table.ends - size + 1, 0)]
    labelled = None
    if rec.label is not None:
        lab = np.nan_to_num(rec.label, nan=0.0)
        # labelled rows in each window: differences of the running count
        csum = np.concatenate([[0.0], np.cumsum(lab)])
        labelled = csum[table.ends + 1] - csum[np.maximum(table.ends + 1 - size, 0)]
    failures = [f.time for f in ds.failures_of(rec.asset_id)]
    repairs = [e.time for e in ds.events_of(rec.asset_id) if e.kind == "maintenance"]
    ok = healthy_mask(table.t_end, starts, labelled, rec.train[table.ends], failures, repairs)
    return WindowedRecording(rec, list(names), table.x, table.ends, ok)


@dataclass
class FitResult:
    detectors: list[FittedDetector]
    windows: WindowSpec
    screened: dict[str, dict[str, str]] = field(default_factory=dict)
    """Asset type -> candidate -> why it was screened out."""
    assets: dict[str, int] = field(default_factory=dict)
    """Asset type -> assets trained on."""
    selection: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Asset type -> what the relevance test on labelled training windows kept."""
    recordings: int = 0
    rows: int = 0


def screen_features(
    names: Sequence[str], per_asset: Sequence[F64], mode: str
) -> tuple[list[str], dict[str, str]]:
    """Keep candidates that are present, move, and are not near-copies of another."""
    pooled = np.vstack(per_asset)
    why: dict[str, str] = {}
    nan_share = np.mean(~np.isfinite(pooled), axis=0)
    keep = []
    for i, n in enumerate(names):
        if nan_share[i] > MAX_NAN_SHARE:
            why[n] = f"missing in {nan_share[i]:.0%} of healthy windows"
        else:
            keep.append(i)
    fleet = anomaly.robust_baseline(pooled)
    floor = anomaly.typical_asset_scale(per_asset)
    z = np.vstack([asset_baseline(fleet, mode, x, floor).z(x) for x in per_asset])
    sd = z.std(axis=0)
    kept: list[int] = []
    for i in keep:
        if sd[i] < 1e-9:
            why[names[i]] = "constant in the healthy windows"
            continue
        twin = None
        for j in kept:
            c = np.corrcoef(z[:, i], z[:, j])[0, 1]
            if abs(c) > MAX_ABS_CORR:
                twin = j
                break
        if twin is not None:
            why[names[i]] = f"a near-copy of {names[twin]} (|r| > {MAX_ABS_CORR})"
            continue
        kept.append(i)
    return [names[i] for i in kept], why


def _align(x: npt.NDArray[Any], names: Sequence[str], all_names: Sequence[str]) -> F64:
    col = {n: i for i, n in enumerate(names)}
    full = np.full((x.shape[0], len(all_names)), np.nan)
    for j, n in enumerate(all_names):
        if n in col:
            full[:, j] = x[:, col[n]]
    return full


MIN_LABELLED = 50
"""Labelled windows of each class the relevance test needs."""


def relevant_features(
    names: list[str],
    per_asset: Sequence[tuple[F64, F64 | None]],
    mode: str,
    why: dict[str, str],
) -> tuple[list[str], dict[str, Any]]:
    """Of ``names``, those that tell labelled-anomalous training windows from healthy ones
    (:func:`models.selection.select_features`, tsfresh's relevance test), each asset's
    windows standardised against its own healthy ones first so that assets compare.
    Without enough labelled windows of both kinds every name is kept (and the card says so)."""
    healthy = [h for h, _ in per_asset]
    bad = [(h, b) for h, b in per_asset if b is not None and b.shape[0]]
    n_bad = sum(b.shape[0] for _, b in bad)
    if n_bad < MIN_LABELLED:
        return names, {"tested": False, "why": f"{n_bad} labelled anomalous training windows"}
    import pandas as pd

    from models.selection import select_features

    fleet = anomaly.robust_baseline(np.vstack(healthy))
    floor = anomaly.typical_asset_scale(healthy)
    zs, ys = [], []
    for h, b in per_asset:
        base = asset_baseline(fleet, mode, h, floor)
        step = max(1, h.shape[0] // 500)
        zs.append(base.z(h[::step]))
        ys.append(np.zeros(zs[-1].shape[0], dtype=int))
        if b is not None and b.shape[0]:
            zs.append(base.z(b))
            ys.append(np.ones(b.shape[0], dtype=int))
    X = pd.DataFrame(np.vstack(zs), columns=names)
    y = pd.Series(np.concatenate(ys))
    try:
        sel = select_features(X, y)
    except TrainingError as exc:
        return names, {"tested": False, "why": str(exc)}
    relevant = set(sel.selected)
    kept = [n for n in names if n in relevant]
    if not kept:
        return names, {"tested": True, "relevant": 0, "why": "none relevant: all kept"}
    for n in names:
        if n not in relevant:
            why[n] = "not relevant to the labelled anomalies (tsfresh relevance test)"
    top = sel.table.head(10)
    return kept, {
        "tested": True,
        "windows": len(y),
        "anomalous": int(y.sum()),
        "relevant": len(kept),
        "top": {str(k): float(p) for k, p in zip(top.index, top["p_value"], strict=True)},
    }


def fit_anomaly(
    ds: Dataset,
    *,
    window_rows: int = 24,
    hop_rows: int | None = None,
    kind: anomaly.Kind = "spe",
    baseline: anomaly.BaselineMode = "asset",
    target_far: float = 0.01,
    operating_features: bool = False,
    progress: Progress | None = None,
) -> FitResult:
    """One detector per asset type from the dataset's healthy training windows.

    ``operating_features``: also offer each candidate over the samples where the dataset's
    ``operating`` condition holds (:func:`~models.featurize.candidate_features`); a
    TrainingError when the dataset has none."""
    if operating_features and ds.spec.operating is None:
        raise TrainingError(
            f"{ds.folder / 'dataset.yaml'}: operating features need the dataset to say when "
            "its machines run (operating: an expression over its columns, e.g. run_state == 1)"
        )
    hop = hop_rows or max(1, window_rows // 4)
    by_type: dict[str, list[tuple[str, list[str], npt.NDArray[np.float32]]]] = {}
    anomalous: dict[str, npt.NDArray[np.float32]] = {}
    """Asset -> its labelled-anomalous training windows (for the relevance test)."""
    intervals = []
    result_rows = 0
    n_rec = 0
    for rec in ds.recordings():
        n_rec += 1
        result_rows += rec.rows
        intervals.append(median_interval(rec.t))
        operating = ds.spec.operating_for(rec.asset_type) if operating_features else None
        names = candidate_features(rec.asset_type, list(rec.signals), operating)
        w = windowed(ds, rec, names, window_rows, hop)
        healthy = w.x[w.healthy_train].astype(np.float32)
        by_type.setdefault(rec.asset_type, []).append((rec.asset_id, names, healthy))
        if rec.label is not None:
            lab = np.nan_to_num(rec.label[w.ends], nan=0.0) > 0
            bad = w.x[lab & rec.train[w.ends]]
            if bad.size:
                anomalous[rec.asset_id] = bad[:: max(1, bad.shape[0] // 200)].astype(np.float32)
        if progress is not None:
            progress(rec)
    if not by_type:
        raise DatasetError(str(ds.folder), "files", "no recordings")
    interval = typical_interval(intervals)
    spec = WindowSpec(size=window_rows, hop=hop, interval_s=interval)
    result = FitResult(detectors=[], windows=spec, recordings=n_rec, rows=result_rows)
    for asset_type, parts in sorted(by_type.items()):
        union: dict[str, None] = {}
        for _, names, _ in parts:
            union.update(dict.fromkeys(names))
        all_names = list(union)
        aligned = []
        bad_aligned: dict[str, F64] = {}
        for asset_id, names, x in parts:
            aligned.append((asset_id, _align(x, names, all_names)))
            if asset_id in anomalous:
                bad_aligned[asset_id] = _align(anomalous[asset_id], names, all_names)
        usable = [(a, x) for a, x in aligned if x.shape[0] > 0]
        if not usable:
            raise TrainingError(f"asset type {asset_type}: no healthy training windows")
        kept, why = screen_features(all_names, [x for _, x in usable], baseline)
        if not kept:
            raise TrainingError(f"asset type {asset_type}: every candidate feature screened out")
        cols = [all_names.index(n) for n in kept]
        labelled = [
            (x[:, cols], bad_aligned[a][:, cols] if a in bad_aligned else None) for a, x in usable
        ]
        kept, result.selection[asset_type] = relevant_features(kept, labelled, baseline, why)
        idx = [all_names.index(n) for n in kept]
        assets = [AssetWindows(a, x[:, idx], np.ones(x.shape[0], dtype=bool)) for a, x in usable]
        det = anomaly.fit_detector(
            asset_type, kept, assets, kind=kind, baseline=baseline, target_far=target_far
        )
        result.detectors.append(det)
        result.screened[asset_type] = why
        result.assets[asset_type] = len(usable)
        log.info(
            "%s: %d features of %d candidates, %d assets, threshold %.3f",
            asset_type,
            len(kept),
            len(all_names),
            len(usable),
            det.threshold,
        )
    return result


@dataclass
class RowScores:
    """One recording's rows scored."""

    rec: Recording
    score: F64
    """Per row; NaN before the first full window."""
    decision: npt.NDArray[np.bool_]
    top_signal: list[str]
    """Per row, the signal (feature's signal part) with the largest contribution."""


def score_recordings(
    ds: Dataset, detectors: dict[str, LoadedDetector], progress: Progress | None = None
) -> Iterator[RowScores]:
    """Every row of every recording, scored causally."""
    for rec in ds.recordings():
        det = detectors.get(rec.asset_type)
        if det is None:
            raise DatasetError(
                rec.file,
                "asset_type",
                f"no model for asset type {rec.asset_type!r} (the model has {sorted(detectors)})",
            )
        yield score_recording(ds, rec, det)
        if progress is not None:
            progress(rec)


@dataclass
class ScoredWindows:
    """A recording's windows run through its detector (what scoring and risk both need)."""

    windows: WindowedRecording
    score: F64
    contributions: F64
    z: F64
    """The detector's inputs standardised against the asset's baseline (windows ×
    features)."""


def standardised(
    det: LoadedDetector,
    x: F64,
    t: F64,
    how: str,
    healthy: npt.NDArray[np.bool_],
    restarts: npt.ArrayLike = (),
    policy: BaselinePolicy | None = None,
) -> F64:
    """The windows ``x`` (ending at ``t``) of one asset, standardised against:

    - ``training``: its healthy training windows (labels used to leave faults out; what the
      detectors were fitted with);
    - ``first``: the first ``policy.first_days`` of its windows, for good;
    - ``rolling``: ``policy`` (:class:`models.runtime.BaselinePolicy`) from its first
      window, as the cloud's scorer follows it at each window end: the lagged span of the
      refresh block once it is full enough, else the first days once they are over, else
      the baseline it had. In its first days the asset is new: each window is standardised
      against the windows so far, itself included, as the scorer rebuilds a new device's
      baseline at every pass; before :data:`models.anomaly.MIN_ASSET_WINDOWS` of them it
      is *learning* (not scored by the cloud) and its z is 0, and so it stays after first
      days that held fewer, until the lagged span is full enough;
    - ``deployed``: as ``rolling``, starting again at each of ``restarts`` (its
      maintenance; the scorer starts again when a work order is completed), the old
      baseline serving until the first days after it are over. Not emulated: the
      scorer's keeping a baseline while a risk order is open.
    """
    policy = policy or BaselinePolicy()

    def base(ref: npt.NDArray[np.bool_]) -> anomaly.Standardizer:
        rows = np.flatnonzero(ref)
        if how != "training":
            rows = rows[policy.thinned(rows.size)]
        return asset_baseline(det.fleet, det.baseline_mode, x[rows], det.scale_floor)

    def span(lo: float, hi: float) -> npt.NDArray[np.bool_]:
        return np.asarray((t >= lo) & (t < hi))

    if how == "training":
        return np.asarray(base(healthy).z(x), dtype=np.float64)
    if how not in REFERENCES:
        raise ValueError(f"unknown reference {how!r}; one of {', '.join(REFERENCES)}")
    if t.size == 0:
        return np.zeros_like(x)
    start = float(t[0])
    if how == "first":
        return np.asarray(base(span(*policy.first(start))).z(x), dtype=np.float64)
    hop = float(np.median(np.diff(t))) if t.size > 1 else 3600.0
    since = np.sort(np.asarray(restarts, dtype=np.float64))
    since = since[(since > start) & (since <= t[-1])] if how == "deployed" else since[:0]
    origins = np.concatenate([[start], since])
    origin_of = origins[np.searchsorted(origins, t, side="right") - 1]
    # Each row's (origin, refresh block, first days over): the baseline changes only where
    # that changes, and the rows of one run share it.
    keys = [
        (o, policy.block(o, ti), ti >= policy.first(o)[1])
        for o, ti in zip(origin_of.tolist(), t.tolist(), strict=True)
    ]
    z = np.zeros_like(x)
    current: anomaly.Standardizer | None = None
    i = 0
    for (origin, block, first_over), run in itertools.groupby(keys):
        j = i + sum(1 for _ in run)
        ref = span(*policy.rolling(origin, block))
        first = span(*policy.first(origin))
        if policy.enough(int(ref.sum()), hop):
            current = base(ref)
        elif first_over and first.sum() >= anomaly.MIN_ASSET_WINDOWS:
            current = base(first)
        elif origin == start and not first_over:
            # New: each window against the windows so far (rows 0..k), once there are enough.
            for k in range(max(i, anomaly.MIN_ASSET_WINDOWS - 1), j):
                current = base(span(start, float(t[k]) + 1.0))
                z[k] = current.z(x[k : k + 1])[0]
            i = j
            continue
        elif origin == start:
            current = None  # too few windows in its first days: learning until the span fills
        if current is not None:
            z[i:j] = current.z(x[i:j])
        i = j
    return z


def score_windows(
    ds: Dataset,
    rec: Recording,
    det: LoadedDetector,
    baseline: str = "training",
    policy: BaselinePolicy | None = None,
) -> ScoredWindows:
    """The detector's score and per-feature contributions at each of the recording's window
    ends, the asset standardised as ``baseline`` says (:func:`standardised`; ``deployed``
    starts again at the recording's maintenance events)."""
    w = windowed(ds, rec, det.feature_names, det.windows.size, det.windows.hop)
    restarts = [e.time for e in ds.events_of(rec.asset_id) if e.kind == "maintenance"]
    z = standardised(det, w.x, rec.t[w.ends], baseline, w.healthy_train, restarts, policy)
    score, contrib = det.run(det.fleet.to_raw(z))
    return ScoredWindows(w, score, contrib, z)


def score_recording(
    ds: Dataset, rec: Recording, det: LoadedDetector, sw: ScoredWindows | None = None
) -> RowScores:
    """Every row's score: that of the latest window ending at or before it."""
    names = det.feature_names
    sw = sw or score_windows(ds, rec, det)
    scores, contrib = sw.score, sw.contributions
    idx = row_index(rec.rows, sw.windows.ends)
    has = idx >= 0
    score = np.full(rec.rows, np.nan)
    score[has] = scores[idx[has]]
    decision = np.zeros(rec.rows, dtype=bool)
    decision[has] = scores[idx[has]] > det.threshold
    signals = [signal_of(n) for n in names]
    top_w = [signals[int(i)] for i in np.argmax(contrib, axis=1)] if contrib.size else []
    top = ["" if i < 0 else top_w[i] for i in idx]
    return RowScores(rec, score, decision, top)


# -- risk ---------------------------------------------------------------------------------
def risk_table(
    ds: Dataset, rec: Recording, det: LoadedDetector, sw: ScoredWindows | None = None
) -> dict[str, Any]:
    """The risk model's inputs and labels at each of the recording's window ends."""
    sw = sw or score_windows(ds, rec, det)
    w, score, contrib = sw.windows, sw.score, sw.contributions
    shares, signals = risk.signal_shares(det.feature_names, contrib)
    t = rec.t[w.ends]
    x, names = risk.risk_features(
        t, score, shares, signals, sw.z, det.feature_names, present=np.isfinite(w.x)
    )
    fails = ds.failures_of(rec.asset_id)
    times = [f.time for f in fails]
    repairs = [e.time for e in ds.events_of(rec.asset_id) if e.kind == "maintenance"]
    ttf = risk.time_to_failure(t, times)
    order = np.argsort(times)
    kinds = np.asarray([fails[i].fault_type for i in order] + [""], dtype=object)
    nxt = np.searchsorted(np.sort(np.asarray(times, dtype=np.float64)), t, side="left")
    return {
        "asset_id": rec.asset_id,
        "t": t,
        "x": x,
        "names": names,
        "ttf": ttf,
        "fault": kinds[nxt],
        "down": risk.down_mask(t, times, repairs),
        "train": rec.train[w.ends],
        "failures": times,
        "failure_types": [f.fault_type for f in fails],
    }


def model_inputs(table: dict[str, Any], model: risk.LoadedRisk) -> F64:
    """The columns of ``table["x"]`` that ``model`` takes, in its order (a model fitted
    before either kind of z mean takes only the others)."""
    names = [str(n) for n in model.meta["feature_names"]]
    if names == table["names"]:
        return np.asarray(table["x"])
    col = {n: i for i, n in enumerate(table["names"])}
    missing = [n for n in names if n not in col]
    if missing:
        raise ArtifactError(
            f"risk model of {table['asset_id']}: inputs {missing[:3]} are not risk features "
            "of its detector (fitted on another detector?)"
        )
    return np.asarray(table["x"][:, [col[n] for n in names]])


def fit_risk_models(
    ds: Dataset,
    detectors: dict[str, LoadedDetector],
    horizon_h: float,
    progress: Progress | None = None,
    alert_horizon_h: float | None = None,
    baseline: str = "training",
) -> dict[str, risk.RiskModel]:
    """One risk model per asset type (:func:`models.risk.fit_risk`), from the detectors'
    scores with each asset standardised as ``baseline`` says (:func:`standardised`)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for rec in ds.recordings():
        det = detectors.get(rec.asset_type)
        if det is not None:
            sw = score_windows(ds, rec, det, baseline)
            tables.setdefault(rec.asset_type, []).append(risk_table(ds, rec, det, sw))
        if progress is not None:
            progress(rec)
    return {
        a: risk.fit_risk(a, horizon_h, rows, alert_horizon_h) for a, rows in sorted(tables.items())
    }


@dataclass
class RiskReport:
    """Alerts and failures of the test part, per asset, for :func:`models.metrics`."""

    alerts: dict[str, list[Episode]] = field(default_factory=dict)
    failures: dict[str, list[float]] = field(default_factory=dict)
    failure_types: dict[str, list[str]] = field(default_factory=dict)
    observed_s: dict[str, float] = field(default_factory=dict)
    observed_until: dict[str, float] = field(default_factory=dict)
    """Per asset, the end of its test part (alerts judged past it are censored)."""
    p: list[F64] = field(default_factory=list)
    y: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    typed: list[tuple[str, str]] = field(default_factory=list)
    """Per alert a failure followed (:func:`models.metrics.alert_was_right` at 72 h): the
    fault type the model named when the alert was raised, and the type of that failure."""
    curves: dict[str, tuple[str, F64, F64, npt.NDArray[np.bool_]]] = field(default_factory=dict)
    """Per asset: its asset type, and the window ends, P(alert) and down windows of its
    test part (what :meth:`sweep` raises alerts from at other thresholds)."""

    def add(self, table: dict[str, Any], model: risk.LoadedRisk) -> None:
        test = ~table["train"] & ~table["down"]
        if not test.any():
            return
        t = table["t"][test]
        out = model.run(model_inputs(table, model)[test])
        a = table["asset_id"]
        # alerts over the whole test part, down windows included (not scored), so that an
        # alert ends when its asset fails, and the quiet time after a repair is kept as
        # fitting keeps it
        part = ~table["train"]
        down = table["down"][part]
        p_part = np.zeros(down.shape)
        p_part[~down] = out.p_alert
        self.alerts[a] = risk.alert_episodes(table["t"][part], p_part, model.threshold, down)
        asset_type = str(model.meta.get("asset_type", ""))
        self.curves[a] = (asset_type, table["t"][part], p_part, down)
        fails = np.asarray(table["failures"], dtype=np.float64)
        for episode in self.alerts[a]:
            if alert_was_right(episode, fails, 3600.0 * max(HORIZONS_H)):
                # the first failure after the raising is the one it warned of
                later = np.flatnonzero(fails > episode[0])
                first = later[np.argmin(fails[later])]
                row = min(int(np.searchsorted(t, episode[0])), t.size - 1)
                named = model.fault_types[int(np.argmax(out.fault_probs[row]))]
                self.typed.append((named, str(table["failure_types"][first])))
        # the failures the @H metrics can judge: the same set whatever the model's horizon
        pairs = [
            (f, k)
            for f, k in zip(table["failures"], table["failure_types"], strict=True)
            if t[0] < f <= t[-1] + 3600 * max(HORIZONS_H)
        ]
        self.failures[a] = [f for f, _ in pairs]
        self.failure_types[a] = [k for _, k in pairs]
        spacing = float(np.median(np.diff(t))) if t.size > 1 else 0.0
        self.observed_s[a] = spacing * t.size
        self.observed_until[a] = float(table["t"][-1])
        self.p.append(out.p_horizon)
        self.y.append(table["ttf"][test] <= 3600 * model.horizon_h)

    def sweep(self, thresholds: Sequence[float]) -> dict[str, list[dict[str, Any]]]:
        """Per asset type, the event metrics at 72 h of the alerts each of ``thresholds``
        would have raised on the same P(alert) (one row per threshold, ascending), so a
        threshold can be chosen on a validation fleet (:func:`models.risk.suggest_threshold`)."""
        from models.metrics import risk_metrics

        keys = (
            "ahead@72h",
            "recall@72h",
            "precision@72h",
            "false_alerts_per_100_asset_months@72h",
            "censored_alerts@72h",
            "median_lead_h@72h",
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for asset_type in sorted({c[0] for c in self.curves.values()}):
            assets = [a for a, c in self.curves.items() if c[0] == asset_type]
            rows = []
            for thr in sorted(thresholds):
                alerts = {}
                for a in assets:
                    _, t, p, down = self.curves[a]
                    alerts[a] = risk.alert_episodes(t, p, thr, down)
                m = risk_metrics(
                    alerts,
                    {a: self.failures[a] for a in assets},
                    {a: self.observed_s[a] for a in assets},
                    (72,),
                    {a: self.observed_until[a] for a in assets},
                )
                rows.append(
                    {"threshold": float(thr), "failures": m["failures"], "alerts": m["alerts"]}
                    | {k: m[k] for k in keys}
                )
            out[asset_type] = rows
        return out

    def summary(self) -> dict[str, object]:
        from models.metrics import pr_auc, risk_metrics

        out = risk_metrics(
            self.alerts, self.failures, self.observed_s, HORIZONS_H, self.observed_until
        )
        if self.p:
            out["pr_auc_asset_windows"] = pr_auc(np.concatenate(self.p), np.concatenate(self.y))
        per_type: dict[str, dict[str, object]] = {}
        for ftype in sorted({k for ks in self.failure_types.values() for k in ks}):
            fails = {
                a: [f for f, k in zip(fs, self.failure_types[a], strict=True) if k == ftype]
                for a, fs in self.failures.items()
            }
            m = risk_metrics(self.alerts, fails, self.observed_s, HORIZONS_H, self.observed_until)
            per_type[ftype] = {
                k: m[k]
                for k in ("failures", "recall@24h", "recall@72h", "ahead@72h", "median_lead_h@72h")
            }
        out["per_fault_type"] = per_type
        out["fault_type_accuracy_at_alert"] = (
            sum(named == actual for named, actual in self.typed) / len(self.typed)
            if self.typed
            else None
        )
        return out
