"""Benchmark: the anomaly models' cost on a gateway, and training time.

``inference``: the gateway's per-window work for each asset type of a model folder — the
window's feature vector (``edge_agent.features.feature_vector``, the model's features)
plus one ONNX inference through the agent's own ``ModelStore`` and ``Scorer`` — timed over
``--windows`` windows of ``--samples`` polls of every profile point, with the model file
size. ``train``: ``edgewatch-models fit`` on a dataset folder (e.g. the simulator's
``dataset`` mode output), wall time and rows per second.

Prints the figures and writes ``tests/bench/results/models.json``. Not a pass/fail test.

    .venv/bin/python tests/bench/bench_models.py inference --model models/artifacts/anomaly
    .venv/bin/python tests/bench/bench_models.py train --dataset DIR --window-rows 144 \\
        --hop-rows 12
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "models.json"


def inference(model_dir: Path, windows: int, samples: int) -> dict[str, Any]:
    from edge_agent.config import ModelSettings
    from edge_agent.features import feature_vector
    from edge_agent.models import ModelStore
    from edge_agent.profiles import builtin_profiles
    from edge_agent.scoring import Scorer

    store = ModelStore(ModelSettings(dir=model_dir, allow_unsigned=True))
    scorer = Scorer(store)
    profiles = {p.asset_type: p for p in builtin_profiles().values()}
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {}
    for asset, model in store.models().items():
        points = [p.name for p in profiles[asset].points] if asset in profiles else []
        names = model.feature_names
        ts = 1.7e9 + np.arange(samples) * model.manifest.window_s / samples
        series = {p: 20 + rng.normal(0, 1, samples) for p in points}
        feat_us, total_us = [], []
        for _ in range(windows):
            t0 = time.perf_counter()
            x = feature_vector(series, names, ts)
            t1 = time.perf_counter()
            scorer.score(x, model)
            t2 = time.perf_counter()
            feat_us.append((t1 - t0) * 1e6)
            total_us.append((t2 - t0) * 1e6)
        folder = model_dir / asset
        size = (folder / model.manifest.file).stat().st_size
        out[asset] = {
            "features": len(names),
            "signals_in_window": len(points),
            "samples_per_window": samples,
            "feature_us_median": statistics.median(feat_us),
            "window_us_median": statistics.median(total_us),
            "window_us_p99": float(np.percentile(total_us, 99)),
            "onnx_bytes": size,
        }
        print(
            f"{asset}: {len(names)} features over {len(points)} signals × {samples} samples: "
            f"features {out[asset]['feature_us_median']:.0f} µs + ONNX = "
            f"{out[asset]['window_us_median']:.0f} µs per window (p99 "
            f"{out[asset]['window_us_p99']:.0f} µs); model file {size / 1024:.1f} KiB"
        )
    return out


def train(dataset: Path, window_rows: int, hop_rows: int, keep: Path | None) -> dict[str, Any]:
    from models.cli import main

    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(keep) if keep else scratch
        t0 = time.perf_counter()
        code = main(
            [
                "fit",
                "--task",
                "anomaly",
                "--dataset",
                str(dataset),
                "--out",
                tmp,
                "--window-rows",
                str(window_rows),
                "--hop-rows",
                str(hop_rows),
                "--no-progress",
            ]
        )
        seconds = time.perf_counter() - t0
        card = json.loads((Path(tmp) / "card.json").read_text())
    rows = card["dataset"]["rows"]
    print(
        f"fit: exit {code}, {card['dataset']['recordings']} recordings, {rows:,} rows in "
        f"{seconds:.1f} s ({rows / seconds:,.0f} rows/s)"
    )
    return {
        "exit": code,
        "seconds": seconds,
        "rows": rows,
        "recordings": card["dataset"]["recordings"],
        "window_rows": window_rows,
        "hop_rows": hop_rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    inf = sub.add_parser("inference")
    inf.add_argument("--model", type=Path, default=Path("models/artifacts/anomaly"))
    inf.add_argument("--windows", type=int, default=2000)
    inf.add_argument("--samples", type=int, default=30)
    tr = sub.add_parser("train")
    tr.add_argument("--dataset", type=Path, required=True)
    tr.add_argument("--window-rows", type=int, default=144)
    tr.add_argument("--hop-rows", type=int, default=12)
    tr.add_argument("--keep", type=Path, help="write the fitted models here (default: a temp dir)")
    args = p.parse_args()
    if args.what == "inference":
        figures = inference(args.model, args.windows, args.samples)
    else:
        figures = train(args.dataset, args.window_rows, args.hop_rows, args.keep)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    doc[args.what] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "figures": figures,
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
