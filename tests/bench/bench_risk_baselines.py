"""Risk alerts under the baselines a deployment gives a device, on a labelled dataset.

    .venv/bin/python tests/bench/bench_risk_baselines.py --dataset /tmp/sim/eval200 \
        [--model models/artifacts] [--compare OTHER_MODEL_DIR]

``edgewatch-models evaluate`` standardises every asset against its own healthy training
windows (labels used to leave faults out), as the detectors were fitted. The cloud's
scorer cannot know which windows were healthy: it follows
:class:`models.runtime.BaselinePolicy`. This scores the test part of ``--dataset`` with
each device's baseline built each of the ways of :func:`models.pipeline.standardised` (as
``edgewatch-models evaluate --reference`` does, one at a time) and prints the risk metrics
of each (:class:`models.pipeline.RiskReport`):

- ``training``: the healthy training windows (``evaluate``'s default);
- ``first``: the first ``--first-days`` (14) of the recording's windows, for good (what
  the scorer did before it followed :class:`models.runtime.BaselinePolicy`);
- ``rolling``: the policy from the recording's start: for every block of
  ``--refresh-days`` (7), the windows from ``--lag-days`` + ``--span-days`` (14 + 30) to
  ``--lag-days`` back once half of such a span exists, the first days' before;
- ``deployed``: as ``rolling``, starting again at every maintenance event of the
  recording (the scorer starts again when a work order is completed).

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

from models import REFERENCES
from models.dataset import Dataset
from models.export import load_detectors
from models.pipeline import RiskReport, ScoredWindows, risk_table, standardised, windowed
from models.risk import LoadedRisk, load_risk
from models.runtime import BaselinePolicy

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
    p.add_argument("--max-windows", type=int, default=BaselinePolicy().max_windows)
    p.add_argument(
        "--ways",
        default="training,first,rolling,deployed",
        help="which baselines, comma-separated (default: all four)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    folders = {"model": args.model} | ({"compare": args.compare} if args.compare else {})
    detectors = {k: load_detectors(f) for k, f in folders.items()}
    risks: dict[str, dict[str, LoadedRisk | None]] = {
        k: {a: load_risk(d.folder) for a, d in dets.items()} for k, dets in detectors.items()
    }
    ways = tuple(w.strip() for w in args.ways.split(",") if w.strip())
    unknown = set(ways) - set(REFERENCES)
    if unknown or not ways:
        p.error(f"--ways: unknown {sorted(unknown)}; use {', '.join(REFERENCES)}")
    policy = BaselinePolicy(
        first_days=args.first_days,
        lag_days=args.lag_days,
        span_days=args.span_days,
        refresh_days=args.refresh_days,
        max_windows=args.max_windows,
    )
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
                restarts = np.asarray(
                    [e.time for e in ds.events_of(rec.asset_id) if e.kind == "maintenance"]
                )
                for how in ways:
                    z = standardised(det, w.x, t, how, w.healthy_train, restarts, policy)
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
