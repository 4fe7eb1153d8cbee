"""Anomaly detectors: fitted on healthy windows, exported to ONNX, calibrated thresholds.

The detector of one asset type, in the order a window goes through it:

1. **Features** of the window (:mod:`models.featurize`), in the model's feature order.
2. **Baseline**: each feature is standardised. The fleet baseline (the pooled healthy
   windows of the asset type; what the exported ONNX graph holds, and what a gateway
   applies) is linear: ``z = (x - center) / scale`` with the median and a robust scale
   (1.4826 · MAD, falling back to IQR / 1.349 and to a floor of 1e-3 · |center|). With
   ``baseline="asset"`` (the default offline) every asset is standardised against its
   *own* healthy training windows (:class:`QuantileBaseline`: the normal score of a
   value's rank among them), so units, ratings, climates and heavy tails drop out and the
   detector looks for change against the asset's own normal (causal: the baseline comes
   from the training part, before any row scored). Assets with too few training windows
   fall back to the fleet baseline. ``z`` is clipped to ±:data:`Z_CLIP`, so no single
   feature can make an alarm on its own, and a missing feature counts as z = 0.
3. **Score** (``kind``):

   - ``spe`` (the default): principal components of the pooled healthy ``z`` keeping
     :data:`PCA_VARIANCE` of the variance; the score is the squared prediction error Q
     (what the components cannot explain: the features no longer move together the way
     they did when healthy), divided by its median over the healthy training windows;
   - ``pca``: Hotelling's T² in the kept components and Q in the rest, each divided by
     its healthy median and averaged: ``(T²/T²ref + Q/Qref) / 2``;
   - ``zscore``: the mean of z², divided by its healthy median.

   Per-feature contributions sum to the score (T² splits as ``z_i (M z)_i``, Q as
   ``r_i²``), so the signals behind an alert are the features with the largest shares.
4. **Decision**: score > threshold, the threshold being the ``1 - target_far`` quantile
   of the scores of healthy *calibration* windows that the baseline and the components did
   not see (the last :data:`CALIBRATION_SHARE` of every asset's healthy training windows).

Healthy training windows: inside the training part of the split, not overlapping a
labelled anomaly, and not in the :data:`EXCLUDE_BEFORE_FAILURE_S` before a failure up to
the first maintenance event after it (or :data:`EXCLUDE_AFTER_FAILURE_S`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from models.errors import TrainingError

F64 = npt.NDArray[np.float64]
Kind = Literal["spe", "pca", "zscore"]
BaselineMode = Literal["asset", "fleet"]

Z_CLIP = 4.0
PCA_VARIANCE = 0.9
CALIBRATION_SHARE = 1 / 3
MIN_ASSET_WINDOWS = 20
"""An asset with fewer healthy training windows is standardised with the fleet baseline."""
EXCLUDE_BEFORE_FAILURE_S = 60 * 86400.0
EXCLUDE_AFTER_FAILURE_S = 7 * 86400.0
_MAD = 1.4826


@dataclass(frozen=True, slots=True)
class Baseline:
    center: F64
    scale: F64

    def z(self, x: F64) -> F64:
        """Standardised, clipped, missing -> 0."""
        with np.errstate(invalid="ignore"):
            z = (x - self.center) / self.scale
        z = np.clip(z, -Z_CLIP, Z_CLIP)
        return np.where(np.isfinite(z), z, 0.0)

    def to_raw(self, z: F64) -> F64:
        """The raw feature values that this baseline standardises to ``z``."""
        return self.center + self.scale * z


def robust_baseline(x: F64) -> Baseline:
    """Median and robust scale per column of ``x`` (windows × features), NaN ignored.

    A column with no finite value gets center 0 and scale 1 (its z is always 0, since
    its values are missing)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        center = np.nanmedian(x, axis=0)
        mad = np.nanmedian(np.abs(x - center), axis=0) * _MAD
        scale = np.array(mad, dtype=np.float64)
        need = ~(np.isfinite(mad) & (mad > 0))
        if need.any():  # the IQR only where the MAD is no use (nanpercentile is slow)
            q75, q25 = np.nanpercentile(x[:, need], [75, 25], axis=0)
            scale[need] = (q75 - q25) / 1.349
    floor = np.maximum(1e-3 * np.abs(np.nan_to_num(center)), 1e-9)
    scale = np.where(np.isfinite(scale) & (scale > floor), scale, floor)
    center = np.where(np.isfinite(center), center, 0.0)
    return Baseline(center=center.astype(np.float64), scale=scale.astype(np.float64))


@dataclass(frozen=True, slots=True)
class Scorer:
    """The score as matrices: contributions = a · z ∘ (z M) + b · (z R)²."""

    m: F64
    """(f, f) quadratic form of the T² part (or the identity / f for zscore)."""
    r: F64
    """(f, f) projection onto the residual space (zero for zscore)."""
    a: float
    b: float

    def contributions(self, z: F64) -> F64:
        zr = z @ self.r
        return self.a * z * (z @ self.m) + self.b * zr * zr

    def score(self, z: F64) -> F64:
        return np.asarray(self.contributions(z).sum(axis=1), dtype=np.float64)


def fit_scorer(z: F64, kind: Kind) -> tuple[Scorer, dict[str, float]]:
    """The score's matrices from healthy standardised windows ``z`` (n × f)."""
    n, f = z.shape
    if n < 2:
        raise TrainingError(f"{n} healthy training windows; need at least 2")
    if kind == "zscore":
        m = np.eye(f) / f
        r = np.zeros((f, f))
        ref = float(np.median((z * z).mean(axis=1)))
        ref = ref if ref > 1e-12 else 1.0
        return Scorer(m=m, r=r, a=1.0 / ref, b=0.0), {"components": float(f), "ref": ref}
    cov = (z.T @ z) / n
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    vals = np.clip(vals, 0.0, None)
    total = float(vals.sum())
    if total <= 0:
        raise TrainingError("every feature is constant in the healthy training windows")
    k = int(np.searchsorted(np.cumsum(vals) / total, PCA_VARIANCE) + 1)
    k = min(k, f - 1) if f > 1 else 1
    p = vecs[:, :k]
    lam = np.maximum(vals[:k], 1e-6 * vals[0])
    m = (p / lam) @ p.T
    r = np.eye(f) - p @ p.T if f > 1 else np.zeros((f, f))
    t2 = np.einsum("ij,ij->i", z, z @ m)
    zr = z @ r
    q = np.einsum("ij,ij->i", zr, zr)
    t_ref = float(np.median(t2)) or 1.0
    q_ref = float(np.median(q))
    if kind == "spe" and q_ref > 1e-12:
        zero = np.zeros((f, f))
        return Scorer(m=zero, r=r, a=0.0, b=1.0 / q_ref), {
            "components": float(k),
            "q_ref": q_ref,
        }
    if q_ref <= 1e-12:
        return Scorer(m=m, r=np.zeros((f, f)), a=1.0 / t_ref, b=0.0), {
            "components": float(k),
            "t2_ref": t_ref,
            "q_ref": 0.0,
        }
    return Scorer(m=m, r=r, a=0.5 / t_ref, b=0.5 / q_ref), {
        "components": float(k),
        "t2_ref": t_ref,
        "q_ref": q_ref,
    }


@dataclass
class AssetWindows:
    """One asset's windows for training: its features and which are healthy training ones."""

    asset_id: str
    x: F64
    healthy_train: npt.NDArray[np.bool_]


@dataclass
class FittedDetector:
    asset_type: str
    feature_names: list[str]
    kind: Kind
    baseline_mode: BaselineMode
    fleet: Baseline
    scorer: Scorer
    threshold: float
    target_far: float
    info: dict[str, float] = field(default_factory=dict)
    scale_floor: F64 | None = None
    calibration_scores: F64 = field(default_factory=lambda: np.empty(0))

    def asset_baseline(self, healthy_train_x: F64) -> Standardizer:
        """The baseline an asset is scored against, from its healthy training windows."""
        return asset_baseline(self.fleet, self.baseline_mode, healthy_train_x, self.scale_floor)


@dataclass(frozen=True, slots=True)
class QuantileBaseline:
    """An asset's own healthy distribution per feature: a value's z is the normal score of
    its rank among the asset's healthy training values (mid-rank, ``(r + ½) / (n + 1)``),
    continued linearly beyond the healthy range with the robust scale. Heavy-tailed and
    skewed features then weigh like well-behaved ones; a feature with fewer than
    :data:`MIN_ASSET_WINDOWS` healthy values uses ``fallback``.

    ``sorted_values`` holds each feature's finite healthy values, ascending. They are kept
    as the rows of one read-only table (:class:`_SortedColumns`; ``sorted_values`` become
    views of its rows), so that :meth:`z` ranks every feature's values at once."""

    sorted_values: list[F64]
    scale: F64
    fallback: Baseline
    _table: _SortedColumns = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = _SortedColumns.of(self.sorted_values)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "sorted_values", table.views())

    def z(self, x: F64) -> F64:
        out = self.fallback.z(x)
        tab = self._table
        if tab.used.size == 0:
            return out
        col = x[:, tab.used]
        # How many of each feature's values are < x and ≤ x (np.searchsorted's "left"
        # and "right"): "≤ x" is "< the next float above x".
        left, right = tab.count_below(np.stack([col, np.nextafter(col, np.inf)]))
        n = tab.counts[tab.used]
        rank = (left + right) / 2
        z = _norm_ppf((rank + 0.5) / (n + 1))
        scale = self.scale[tab.used]
        with np.errstate(invalid="ignore"):
            z = np.where(col > tab.last, tab.hi_z + (col - tab.last) / scale, z)
            z = np.where(col < tab.first, tab.lo_z - (tab.first - col) / scale, z)
        z = np.clip(z, -Z_CLIP, Z_CLIP)
        out[:, tab.used] = np.where(np.isfinite(col), z, 0.0)
        return out


@dataclass(frozen=True, slots=True)
class _SortedColumns:
    """The features' sorted values as the rows of one table, padded with +inf to the
    longest, and what :meth:`QuantileBaseline.z` needs of the features it ranks (``used``:
    those with at least :data:`MIN_ASSET_WINDOWS` values)."""

    values: F64
    """(features, width): row j is feature j's values, ascending, then +inf."""
    counts: npt.NDArray[np.intp]
    """How many values each feature has."""
    used: npt.NDArray[np.intp]
    first: F64
    """The used features' lowest values."""
    last: F64
    """Their highest."""
    lo_z: F64
    """``ndtri(½ / (n + 1))`` per used feature: z at the low end of its range (below it,
    z falls on linearly with the robust scale)."""
    hi_z: F64
    """``ndtri((n + ½) / (n + 1))``: z at the high end."""

    @classmethod
    def of(cls, sorted_values: Sequence[F64]) -> _SortedColumns:
        counts = np.array([c.size for c in sorted_values], dtype=np.intp)
        width = int(counts.max(initial=0))
        values = np.full((len(sorted_values), width), np.inf)
        for j, c in enumerate(sorted_values):
            values[j, : c.size] = c
        values.flags.writeable = False
        used = np.flatnonzero(counts >= MIN_ASSET_WINDOWS)
        n = counts[used]
        return cls(
            values=values,
            counts=counts,
            used=used,
            first=values[used, 0],
            last=values[used, n - 1],
            lo_z=_norm_ppf(0.5 / (n + 1)),
            hi_z=_norm_ppf((n + 0.5) / (n + 1)),
        )

    def views(self) -> list[F64]:
        """Each feature's values (read-only views of the table)."""
        return [self.values[j, :n] for j, n in enumerate(self.counts)]

    def count_below(self, q: F64) -> npt.NDArray[np.intp]:
        """How many values of each used feature are below ``q`` (shape (..., used)):
        ``np.searchsorted(values_j, q[..., c], "left")`` for the c-th used feature j, as a
        branchless binary search over the padded rows, all elements in step (a NaN in
        ``q`` counts 0)."""
        width = self.values.shape[1]
        flat = self.values.ravel()
        row = self.used * width
        pos = np.zeros(q.shape, dtype=np.intp)
        # The first position whose value is not below q lies in [pos, pos + n].
        n = width
        while n > 1:
            half = n // 2
            pos += (flat.take(row + pos + half) < q) * half
            n -= half
        return np.asarray(pos + (flat.take(row + pos) < q), dtype=np.intp)


def _norm_ppf(p: F64) -> F64:
    """The standard normal quantile function."""
    return np.asarray(ndtri(p), dtype=np.float64)


Standardizer = Baseline | QuantileBaseline


def asset_baseline(
    fleet: Baseline, mode: str, healthy_train_x: F64, scale_floor: F64 | None = None
) -> Standardizer:
    """An asset's own baseline from its healthy training windows (``mode == "asset"`` and
    at least :data:`MIN_ASSET_WINDOWS` of them; a :class:`QuantileBaseline`), else the
    fleet's linear one.

    ``scale_floor`` (per feature; the fleet's typical per-asset scale) keeps an asset
    whose feature barely moved in training (a quantised signal, a unit that always ran
    the same way) from turning every later wiggle beyond its range into a huge z."""
    if mode != "asset" or healthy_train_x.shape[0] < MIN_ASSET_WINDOWS:
        return fleet
    own = robust_baseline(healthy_train_x)
    scale = own.scale if scale_floor is None else np.maximum(own.scale, scale_floor)
    columns = [np.sort(c[np.isfinite(c)]) for c in healthy_train_x.T]
    return QuantileBaseline(sorted_values=columns, scale=scale, fallback=fleet)


def typical_asset_scale(per_asset_x: Sequence[F64]) -> F64 | None:
    """The median over assets (with enough windows) of each feature's own robust scale."""
    scales = [robust_baseline(x).scale for x in per_asset_x if x.shape[0] >= MIN_ASSET_WINDOWS]
    if not scales:
        return None
    return np.asarray(np.median(np.vstack(scales), axis=0), dtype=np.float64)


def _split_calibration(
    mask: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Split an asset's healthy windows (in time order) into fit and calibration parts."""
    idx = np.flatnonzero(mask)
    n_cal = round(idx.size * CALIBRATION_SHARE)
    fit = np.zeros_like(mask)
    cal = np.zeros_like(mask)
    fit[idx[: idx.size - n_cal]] = True
    cal[idx[idx.size - n_cal :]] = True
    return fit, cal


def fit_detector(
    asset_type: str,
    feature_names: Sequence[str],
    assets: Sequence[AssetWindows],
    *,
    kind: Kind = "spe",
    baseline: BaselineMode = "asset",
    target_far: float = 0.01,
) -> FittedDetector:
    """Fit one asset type's detector from its assets' windows."""
    if not 0 < target_far < 1:
        raise ValueError(f"target_far must be in (0, 1), got {target_far}")
    parts = [(a, *_split_calibration(a.healthy_train)) for a in assets]
    fit_x = [a.x[f] for a, f, _ in parts if f.any()]
    if not fit_x:
        raise TrainingError(f"{asset_type}: no healthy training windows")
    fleet = robust_baseline(np.vstack(fit_x))
    det = FittedDetector(
        scale_floor=typical_asset_scale(fit_x) if baseline == "asset" else None,
        asset_type=asset_type,
        feature_names=list(feature_names),
        kind=kind,
        baseline_mode=baseline,
        fleet=fleet,
        scorer=Scorer(np.eye(1), np.eye(1), 0.0, 0.0),
        threshold=float("inf"),
        target_far=target_far,
    )
    z_fit, z_cal = [], []
    for a, f, c in parts:
        b = det.asset_baseline(a.x[f])
        z_fit.append(b.z(a.x[f]))
        z_cal.append(b.z(a.x[c]))
    scorer, info = fit_scorer(np.vstack(z_fit), kind)
    det.scorer = scorer
    det.info = info
    cal = np.vstack(z_cal)
    if cal.shape[0] < 10:
        raise TrainingError(
            f"{asset_type}: {cal.shape[0]} healthy calibration windows; need at least 10 "
            "(more training data, or a smaller hop)"
        )
    scores = scorer.score(cal)
    det.calibration_scores = scores
    det.threshold = float(np.quantile(scores, 1 - target_far))
    det.info.update(
        {
            "fit_windows": float(sum(z.shape[0] for z in z_fit)),
            "calibration_windows": float(cal.shape[0]),
        }
    )
    return det


def healthy_mask(
    t_end: F64,
    window_start: F64,
    labelled_rows: F64 | None,
    train_end: npt.NDArray[np.bool_],
    failures: Sequence[float],
    maintenance: Sequence[float],
) -> npt.NDArray[np.bool_]:
    """Windows fit to learn "healthy" from: in training, unlabelled, away from failures."""
    ok = train_end.copy()
    if labelled_rows is not None:
        ok &= ~(labelled_rows > 0)
    repairs = np.sort(np.asarray(maintenance, dtype=np.float64))
    for f in failures:
        after = repairs[repairs >= f]
        end = float(after[0]) if after.size else f + EXCLUDE_AFTER_FAILURE_S
        ok &= ~((t_end >= f - EXCLUDE_BEFORE_FAILURE_S) & (window_start <= end))
    return ok
