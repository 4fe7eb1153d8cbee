"""Risk alerts under the baselines a deployment gives a device, on a labelled dataset.

    .venv/bin/python tests/bench/bench_risk_baselines.py --dataset /tmp/sim/eval200 \
        [--model models/artifacts] [--compare OTHER_MODEL_DIR]

``edgewatch-models evaluate`` standardises every asset against its own healthy training
windows (labels used to leave faults out), as the detectors were fitted. The cloud's
scorer cannot know which windows were healthy: it uses a device's first
``baseline_days`` of windows. This scores the test part of ``--dataset`` with each
device's baseline built three ways and prints the risk metrics of each
(:class:`models.pipeline.RiskReport`, as ``evaluate`` computes them):

- ``training``: the healthy training windows (what ``evaluate`` does);
- ``first``: the first ``--first-days`` (14) of the recording's windows (what the scorer
  does today);
- ``rolling``: before every block of ``--refresh-days`` (7), the windows from
  ``--lag-days`` + ``--span-days`` (14 + 30) to ``--lag-days`` back; the first days' baseline
  until half of such a span exists.

The detector's graph, the risk models and the metrics are the shipped code's; only the
reference windows differ. Writes ``tests/bench/results/risk_baselines.json`` (``--out``).
Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.anomaly import asset_baseline
from models.dataset import Dataset
from models.export import LoadedDetector, load_detectors
from models.pipeline import RiskReport, ScoredWindows, risk_table, windowed
from models.risk import LoadedRisk, load_risk

DAY = 86400.0
RESULTS = Path(__file__).parent / "results" / "risk_baselines.json"
KEYS = (
    "ahead@72h",
    "recall@72h",
    "precision@72h",
    "false_alerts_per_100_asset_months@72h",
    "median_lead_h@72h",
    "fault_type_accuracy_at_alert",
    "alerts",
    "failures",
)


def standardised(
    det: LoadedDetector,
    x: npt.NDArray[np.float64],
    t: npt.NDArray[np.float64],
    how: str,
    healthy: npt.NDArray[np.bool_],
    args: argparse.Namespace,
) -> npt.NDArray[np.float64]:
    """The windows ``x`` (ending at ``t``) standardised against the baseline ``how``."""

    def base(ref: npt.NDArray[np.float64]) -> Any:
        return asset_baseline(det.fleet, det.baseline_mode, ref, det.scale_floor)

    if how == "training":
        return np.asarray(base(x[healthy]).z(x), dtype=np.float64)
    first = base(x[t < t[0] + args.first_days * DAY])
    if how == "first":
        return np.asarray(first.z(x), dtype=np.float64)
    z = np.zeros_like(x)
    hop = float(np.median(np.diff(t))) if t.size > 1 else 3600.0
    enough = 0.5 * args.span_days * DAY / hop
    b0 = float(t[0])
    while b0 <= t[-1]:
        block = (t >= b0) & (t < b0 + args.refresh_days * DAY)
        ref = (t >= b0 - (args.lag_days + args.span_days) * DAY) & (t < b0 - args.lag_days * DAY)
        z[block] = (base(x[ref]) if ref.sum() >= enough else first).z(x[block])
        b0 += args.refresh_days * DAY
    return z


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--model", type=Path, default=Path("models/artifacts"))
    p.add_argument("--compare", type=Path, help="another model folder, scored the same way")
    p.add_argument("--first-days", type=float, default=14.0)
    p.add_argument("--lag-days", type=float, default=14.0)
    p.add_argument("--span-days", type=float, default=30.0)
    p.add_argument("--refresh-days", type=float, default=7.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    folders = {"model": args.model} | ({"compare": args.compare} if args.compare else {})
    detectors = {k: load_detectors(f) for k, f in folders.items()}
    risks: dict[str, dict[str, LoadedRisk | None]] = {
        k: {a: load_risk(d.folder) for a, d in dets.items()} for k, dets in detectors.items()
    }
    ways = ("training", "first", "rolling")
    reports = {(k, how): RiskReport() for k in folders for how in ways}
    ds = Dataset(args.dataset)
    started = time.perf_counter()
    for rec in ds.recordings():
        tables: dict[tuple[Any, ...], dict[str, Any]] = {}  # one pass per distinct detector
        for k in folders:
            det = detectors[k][rec.asset_type]
            model = risks[k][rec.asset_type]
            if model is None:
                continue
            key = (
                det.manifest.sha256,
                det.windows.size,
                det.windows.hop,
                det.fleet.center.tobytes(),
                det.fleet.scale.tobytes(),
            )
            if key not in tables:
                w = windowed(ds, rec, det.feature_names, det.windows.size, det.windows.hop)
                t = rec.t[w.ends]
                for how in ways:
                    z = standardised(det, w.x, t, how, w.healthy_train, args)
                    score, contrib = det.run(det.fleet.to_raw(z))
                    sw = ScoredWindows(w, score, contrib, z)
                    tables.setdefault(key, {})[how] = risk_table(ds, rec, det, sw)
            for how in ways:
                reports[(k, how)].add(tables[key][how], model)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for (k, how), report in reports.items():
        summary = report.summary()
        row = {key: summary.get(key) for key in KEYS}
        results.setdefault(str(folders[k]), {})[how] = row
        print(
            f"{folders[k]}  baseline {how:8s}  warned >= 72 h ahead {row['ahead@72h']:.3f}  "
            f"precision@72h {row['precision@72h']:.3f}  false alerts/100 asset-months "
            f"{row['false_alerts_per_100_asset_months@72h']:.2f}  fault type right "
            f"{row['fault_type_accuracy_at_alert']:.2f}  ({row['alerts']} alerts, "
            f"{row['failures']} failures)",
            flush=True,
        )
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - started,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
