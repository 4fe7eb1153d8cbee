"""Benchmark: devices assessed per second by the cloud's risk scorer (models.runtime).

    .venv/bin/python tests/bench/bench_risk_runtime.py --devices 500

Loads the model folder (default ``models/artifacts``) and, for every asset type with a risk
model, builds ``--devices`` synthetic device histories: ``--hours`` of hourly feature rows
(the models' window spacing) and ``--reference-days`` of reference rows for the device's
own baseline. The values are the detector's fleet baseline, ``center + scale · N(0, 1)``
per feature, with ``--missing`` of them NaN: realistic magnitudes for every feature, though
not a real device's correlations (the cost does not depend on them). Then times the latest
assessment of every device:

- ``assess`` one device at a time: with the fleet baseline (``baseline=None``); with the
  device's reference rows (its baseline built in every call); with a baseline built once
  per device beforehand (:meth:`RiskRuntime.baseline`, what a scorer that caches does);
- ``assess_many``: all devices in one call (one detector and one risk inference), with
  prebuilt baselines and with the fleet baseline;
- building the baselines alone.

Each figure is the best of ``--repeat`` runs. Prints them and writes
``tests/bench/results/risk_runtime.json`` (``--out``). Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.anomaly import Baseline
from models.export import load_detectors
from models.runtime import DeviceHistory, RiskRuntime

ROOT = Path(__file__).resolve().parents[2]
H = 3600.0


def histories(
    rt: RiskRuntime, fleet: Baseline, asset: str, args: argparse.Namespace
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """Per device: window ends, feature rows and reference rows."""
    spec = rt.spec(asset)
    devices, hours, reference_days, missing = (
        args.devices,
        args.hours,
        args.reference_days,
        args.missing,
    )
    rng = np.random.default_rng(1)
    rows = int(hours * H / spec.hop_s) + 1
    ref_rows = int(reference_days * 24 * H / spec.hop_s)
    out = []
    for d in range(devices):
        t = 1.78e9 + d * 37.0 + np.arange(rows) * spec.hop_s
        x = fleet.center + fleet.scale * rng.normal(size=(rows, fleet.center.size))
        ref = fleet.center + fleet.scale * rng.normal(size=(ref_rows, fleet.center.size))
        for a in (x, ref):
            a[rng.random(a.shape) < missing] = np.nan
        out.append((t, x, ref))
    return out, rows


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_asset(
    rt: RiskRuntime, fleet: Baseline, asset: str, args: argparse.Namespace
) -> dict[str, Any]:
    hist, rows = histories(rt, fleet, asset, args)
    n = len(hist)
    spec = rt.spec(asset)
    built: list[Any] = []

    def build() -> None:
        built[:] = [rt.baseline(asset, ref) for _, _, ref in hist]

    cases: dict[str, Callable[[], object]] = {
        "assess_fleet_baseline": lambda: [rt.assess(asset, t, x) for t, x, _ in hist],
        "assess_reference_rows": lambda: [
            rt.assess(asset, t, x, baseline=ref) for t, x, ref in hist
        ],
        "build_baselines": build,
        "assess_prebuilt_baseline": lambda: [
            rt.assess(asset, t, x, baseline=b) for (t, x, _), b in zip(hist, built, strict=True)
        ],
        "assess_many_prebuilt_baseline": lambda: rt.assess_many(
            asset, [DeviceHistory(t, x, b) for (t, x, _), b in zip(hist, built, strict=True)]
        ),
        "assess_many_fleet_baseline": lambda: rt.assess_many(
            asset, [DeviceHistory(t, x) for t, x, _ in hist]
        ),
    }
    result: dict[str, Any] = {
        "devices": n,
        "rows_per_device": rows,
        "reference_rows_per_device": hist[0][2].shape[0],
        "features": len(spec.feature_names),
    }
    for name, fn in cases.items():
        seconds = best_of(args.repeat, fn)
        result[name] = {"seconds": round(seconds, 4), "devices_per_s": round(n / seconds, 1)}
        print(
            f"{asset:>10} {name:<30} {n} devices in {seconds * 1000:8.1f} ms: "
            f"{n / seconds:9,.0f} devices/s ({seconds / n * 1e6:7.0f} µs each)"
        )
    # the figures are of real work: the batch gives the per-device numbers
    one = [rt.assess(asset, t, x, baseline=b)[0] for (t, x, _), b in zip(hist, built, strict=True)]
    many = rt.assess_many(
        asset, [DeviceHistory(t, x, b) for (t, x, _), b in zip(hist, built, strict=True)]
    )
    diff = max(abs(a.p72 - m[0].p72) for a, m in zip(one, many, strict=True))
    result["max_abs_p72_diff_batch_vs_single"] = diff
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "artifacts")
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--hours", type=float, default=84.0, help="history per device")
    ap.add_argument("--reference-days", type=float, default=14.0)
    ap.add_argument("--missing", type=float, default=0.02, help="share of NaN feature values")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "tests" / "bench" / "results" / "risk_runtime.json"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    rt = RiskRuntime.load(args.model)
    load_s = time.perf_counter() - t0
    print(f"loaded {args.model} in {load_s * 1000:.0f} ms: {', '.join(rt.asset_types)}")
    fleets = {a: d.fleet for a, d in load_detectors(args.model).items()}
    result: dict[str, Any] = {
        "model": str(args.model),
        "load_s": round(load_s, 3),
        "args": {k: str(v) for k, v in vars(args).items()},
        "assets": {a: bench_asset(rt, fleets[a], a, args) for a in rt.asset_types},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": ort.__version__,
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
