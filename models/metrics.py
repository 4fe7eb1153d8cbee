"""Evaluation metrics: pure functions over decisions, labels, alerts and failures.

Anomaly (per-row labels; rows whose label is unknown are left out):

- confusion counts pooled over all rows of all files: TP, FP, TN, FN;
- F1 = TP / (TP + (FP + FN) / 2); false-alarm rate FP / (FP + TN); missed-alarm rate
  FN / (FN + TP); precision and recall;
- detection delay per labelled anomaly segment (a run of label-1 rows): seconds from the
  segment's first row to the first row inside it with a positive decision; a segment with
  none is missed.

Risk (alerts and failures per asset, times in epoch seconds). An alert is an episode,
``(raised, cleared)``: it stands from when the risk crossed the threshold until it cleared
(or the asset failed, or the recording ended). A warning given days ahead and kept up
until the failure is one alert, and counts with its full lead time:

- an alert standing when its asset fails ends there: it warned of that failure, not of
  the next;
- recall@H: share of failures with an alert standing at some time in the H hours before
  them; lead time: hours from the raising of the earliest such alert to the failure;
- ahead@H: share of failures with such an alert raised at least H hours before them (the
  promise "warned ≥ 72 h ahead" is ahead@72h);
- precision@H: share of alerts followed by a failure of the same asset while they stood
  or within H after they cleared;
- false alerts per 100 asset-months: alerts no failure followed, per 100 × 30-day months
  of observed asset time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, decision: B, label: F64) -> None:
        known = np.isfinite(label)
        d = decision[known]
        y = label[known] > 0
        self.tp += int(np.count_nonzero(d & y))
        self.fp += int(np.count_nonzero(d & ~y))
        self.tn += int(np.count_nonzero(~d & ~y))
        self.fn += int(np.count_nonzero(~d & y))

    def summary(self) -> dict[str, float | int | None]:
        def ratio(a: float, b: float) -> float | None:
            return a / b if b else None

        return {
            **asdict(self),
            "f1": ratio(self.tp, self.tp + (self.fp + self.fn) / 2),
            "precision": ratio(self.tp, self.tp + self.fp),
            "recall": ratio(self.tp, self.tp + self.fn),
            "false_alarm_rate": ratio(self.fp, self.fp + self.tn),
            "missed_alarm_rate": ratio(self.fn, self.fn + self.tp),
        }


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    """Time of the segment's last row."""
    delay_s: float | None
    """None: missed."""


def segments(t: F64, label: F64) -> list[tuple[int, int]]:
    """(first, last) row of every run of label-1 rows."""
    y = np.nan_to_num(label, nan=0.0) > 0
    if not y.any():
        return []
    edges = np.diff(np.concatenate([[0], y.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def detection_delays(t: F64, label: F64, decision: B) -> list[Segment]:
    out = []
    for a, b in segments(t, label):
        hits = np.flatnonzero(decision[a : b + 1])
        delay = float(t[a + hits[0]] - t[a]) if hits.size else None
        out.append(Segment(float(t[a]), float(t[b]), delay))
    return out


@dataclass
class AnomalyReport:
    confusion: Confusion = field(default_factory=Confusion)
    segments: list[Segment] = field(default_factory=list)
    per_file: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    by_type: dict[str, tuple[list[Segment], Confusion]] = field(default_factory=dict)
    """Fault type -> its segments and the confusion of their rows (recall only)."""
    running: Confusion | None = None
    """The confusion of the rows where the machine ran (its dataset's operating condition
    held); None when no recording said."""

    def add(
        self,
        name: str,
        t: F64,
        label: F64,
        decision: B,
        failures: Sequence[tuple[float, str]] = (),
        running: B | None = None,
    ) -> None:
        """One recording's test rows. ``failures`` (time, fault type) name the fault of each
        labelled segment: the first failure inside it, or right after it. ``running``: which
        rows the machine ran in, when the dataset says."""
        self.confusion.add(decision, label)
        if running is not None:
            if self.running is None:
                self.running = Confusion()
            self.running.add(decision[running], label[running])
        own = Confusion()
        own.add(decision, label)
        segs = detection_delays(t, label, decision)
        self.segments.extend(segs)
        self.per_file[name] = {**own.summary(), **_segment_summary(segs)}
        for seg, (a, b) in zip(segs, segments(t, label), strict=True):
            kind = next((k for f, k in sorted(failures) if f >= seg.start), "unknown")
            seg_list, conf = self.by_type.setdefault(kind, ([], Confusion()))
            seg_list.append(seg)
            conf.add(decision[a : b + 1], label[a : b + 1])

    def summary(self) -> dict[str, object]:
        per_type = {
            kind: {"rows_recall": conf.summary()["recall"], **_segment_summary(segs)}
            for kind, (segs, conf) in sorted(self.by_type.items())
        }
        return {
            **self.confusion.summary(),
            **_segment_summary(self.segments),
            "per_fault_type": per_type,
            **({"while_running": self.running.summary()} if self.running is not None else {}),
            "per_file": self.per_file,
        }


def _segment_summary(segs: Sequence[Segment]) -> dict[str, float | int | None]:
    delays = [s.delay_s for s in segs if s.delay_s is not None]
    return {
        "segments": len(segs),
        "segments_detected": len(delays),
        "median_delay_s": float(np.median(delays)) if delays else None,
        "max_delay_s": float(max(delays)) if delays else None,
    }


# -- risk ---------------------------------------------------------------------------------
HORIZONS_H = (24, 48, 72)
MONTH_S = 30 * 86400.0


Episode = tuple[float, float]
"""An alert: (raised, cleared), epoch seconds."""


def warning_lead_s(episodes: Sequence[Episode], failure: float, horizon_s: float) -> float | None:
    """Seconds from the raising of the earliest alert standing in the ``horizon_s`` before
    ``failure`` to the failure; None if no alert stood then."""
    leads = [failure - a for a, b in episodes if a < failure and b > failure - horizon_s]
    return max(leads) if leads else None


def alert_was_right(episode: Episode, failures: F64, horizon_s: float) -> bool:
    """A failure followed the alert while it stood or within ``horizon_s`` after it cleared."""
    a, b = episode
    return bool(np.any((failures > a) & (failures <= b + horizon_s)))


def alert_is_censored(
    episode: Episode, failures: F64, horizon_s: float, observed_until: float
) -> bool:
    """No failure followed the alert, but the time in which one would make it right
    (while it stood and ``horizon_s`` after) runs past the end of what was observed: the
    data cannot say whether it was right. A recording ends; its units do not."""
    return not alert_was_right(episode, failures, horizon_s) and (
        episode[1] + horizon_s > observed_until
    )


def end_at_failures(episodes: Sequence[Episode], failures: F64) -> list[Episode]:
    """Each alert ended at the first failure while it stood: it warned of that one, and
    cannot stand in for a warning of the next."""
    out = []
    for a, b in episodes:
        hit = failures[(failures > a) & (failures < b)]
        out.append((a, float(hit.min())) if hit.size else (a, b))
    return out


def risk_metrics(
    alerts: Mapping[str, Sequence[Episode]],
    failures: Mapping[str, Sequence[float]],
    observed_s: Mapping[str, float],
    horizons_h: Sequence[int] = HORIZONS_H,
    observed_until: Mapping[str, float] | None = None,
) -> dict[str, object]:
    """Event metrics of alert episodes against failure times, per asset.

    ``observed_until`` (per asset: the end of its observed time): an alert that no failure
    followed, but whose judging time runs past that end (:func:`alert_is_censored`), is
    *censored* at that horizon: counted in ``censored_alerts@{h}h`` and left out of
    precision and false alerts, which it can neither raise nor lower. Without it every
    such alert counts as false."""
    alerts = {
        a: end_at_failures(e, np.asarray(failures.get(a, ()), dtype=np.float64))
        for a, e in alerts.items()
    }
    out: dict[str, object] = {}
    n_fail = sum(len(v) for v in failures.values())
    n_alert = sum(len(v) for v in alerts.values())
    months = sum(observed_s.values()) / MONTH_S
    for h in horizons_h:
        hs = h * 3600.0
        leads = []
        for asset, fails in failures.items():
            for f in fails:
                lead = warning_lead_s(alerts.get(asset, ()), f, hs)
                if lead is not None:
                    leads.append(lead / 3600.0)
        good = censored = 0
        for asset, episodes in alerts.items():
            fs = np.asarray(failures.get(asset, ()), dtype=np.float64)
            good += sum(alert_was_right(e, fs, hs) for e in episodes)
            if observed_until is not None and asset in observed_until:
                end = observed_until[asset]
                censored += sum(alert_is_censored(e, fs, hs, end) for e in episodes)
        judged = n_alert - censored
        out[f"recall@{h}h"] = len(leads) / n_fail if n_fail else None
        out[f"ahead@{h}h"] = sum(x >= h for x in leads) / n_fail if n_fail else None
        out[f"precision@{h}h"] = good / judged if judged else None
        out[f"median_lead_h@{h}h"] = float(np.median(leads)) if leads else None
        out[f"false_alerts_per_100_asset_months@{h}h"] = (
            100.0 * (judged - good) / months if months else None
        )
        out[f"censored_alerts@{h}h"] = censored
    out["failures"] = n_fail
    out["alerts"] = n_alert
    out["asset_months"] = months
    return out


def pr_auc(scores: F64, labels: B) -> float | None:
    """Area under the precision-recall curve (average precision), None with one class."""
    y = labels.astype(bool)
    if y.all() or not y.any():
        return None
    order = np.argsort(-scores, kind="stable")
    y = y[order]
    tp = np.cumsum(y)
    precision = tp / np.arange(1, y.size + 1)
    return float(np.sum(precision[y]) / y.sum())
