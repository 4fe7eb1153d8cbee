"""Window features: µs per ``feature_vector`` call (the scorer's, once per window) and
windows/s of ``feature_matrix`` (training's batch API).

    .venv/bin/python tests/bench/bench_features.py

- ``feature_vector`` (the scorer's call): one compressor-like window of ``--signals``
  signals × ``--samples`` samples with ``--features`` requested features (feature set 1
  names only, so that the figure compares with older versions): complete, with
  ``--missing`` of the samples missing independently in every signal (the worst case: many
  different counts of valid samples), and with ``--missing`` of the polls missing (the same
  samples missing in every signal, as when a poll fails); best and median of ``--repeat``
  rounds of ``--calls`` calls;
- the agent's ``features`` record of that window, every per-signal feature of every
  signal: ``signal_features`` once per signal (what ``agent.window_features`` does), and
  one ``feature_vector`` call for all of them;
- ``feature_matrix`` (training's call): ``--windows`` windows × ``--matrix-samples``
  samples × ``--matrix-signals`` signals × feature set 1's per-signal features and × every
  per-signal feature, complete and with ``--missing`` of the samples of one signal missing.
  Without ``feature_matrix`` (older versions) the same work done by ``signal_features``
  per window and signal, over ``--fallback-windows`` windows.

``--features-file path/to/features.py`` measures another version of the module (e.g. the
one before a change, saved outside the work tree) instead of ``edge_agent.features``.

Prints the figures and writes ``tests/bench/results/features.json``. Not a pass/fail test;
the machine is shared, so run it twice.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

V1_SIGNAL = (
    "mean",
    "standard_deviation",
    "variance",
    "minimum",
    "maximum",
    "median",
    "quantile__q_0.1",
    "quantile__q_0.25",
    "quantile__q_0.75",
    "quantile__q_0.9",
    "root_mean_square",
    "abs_energy",
    "skewness",
    "kurtosis",
    'linear_trend__attr_"slope"',
    "mean_change",
    "mean_abs_change",
    "absolute_sum_of_changes",
    "number_crossing_m__m_0",
    "count_above_mean",
    "count_below_mean",
    "trend_per_s",
)


def load(path: Path | None) -> ModuleType:
    if path is None:
        from edge_agent import features

        return features
    spec = importlib.util.spec_from_file_location("features_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def window(
    n_signals: int,
    n_samples: int,
    missing: float,
    rng: np.random.Generator,
    polls: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A window; ``missing`` of the samples (``polls``: of the polls, in every signal) NaN."""
    t = 1_718_000_000.0 + 3.0 * np.arange(n_samples)
    failed = rng.random(n_samples) < missing
    series = {}
    for i in range(n_signals):
        x = 20 + 5 * np.sin(np.arange(n_samples) / (3 + i)) + rng.normal(0, 1, n_samples)
        x[failed if polls else rng.random(n_samples) < missing] = np.nan
        series[f"sig{i:02d}"] = x
    return series, t


def names(n_signals: int, n_features: int) -> list[str]:
    """``n_features`` distinct names spread over the signals, mean/std/rms on most."""
    out: list[str] = []
    k = 0
    while len(out) < n_features:
        name = f"sig{k % n_signals:02d}__{V1_SIGNAL[(k * 7) % len(V1_SIGNAL)]}"
        if name not in out:
            out.append(name)
        k += 1
    return out


def per_call_us(fn: Callable[[], object], calls: int, repeat: int) -> tuple[float, float]:
    rounds = []
    fn()
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t0) / calls * 1e6)
    return min(rounds), statistics.median(rounds)


def matrix_rate(
    F: ModuleType,
    batch: dict[str, np.ndarray],
    ts: np.ndarray,
    features: tuple[str, ...],
    fallback_windows: int,
) -> dict[str, Any]:
    w = next(iter(batch.values())).shape[0]
    names = [f"{sig}__{f}" for sig in batch for f in features]
    if hasattr(F, "feature_matrix"):
        how = "feature_matrix"
        done = w
        t0 = time.perf_counter()
        F.feature_matrix(batch, names, ts)
        wall = time.perf_counter() - t0
    else:
        how = "signal_features per window and signal (no feature_matrix)"
        done = min(w, fallback_windows)
        t0 = time.perf_counter()
        for r in range(done):
            for x in batch.values():
                F.signal_features(x[r], ts[r])
        wall = time.perf_counter() - t0
    return {
        "how": how,
        "windows": done,
        "features": len(names),
        "seconds": round(wall, 3),
        "windows_per_s": round(done / wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signals", type=int, default=27)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--missing", type=float, default=0.05)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--windows", type=int, default=10_000)
    ap.add_argument("--matrix-samples", type=int, default=60)
    ap.add_argument("--matrix-signals", type=int, default=10)
    ap.add_argument("--fallback-windows", type=int, default=500)
    ap.add_argument("--features-file", type=Path, default=None)
    ap.add_argument("--label", default="", help="a note stored with the figures")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "tests" / "bench" / "results" / "features.json"
    )
    args = ap.parse_args()
    F = load(args.features_file)
    rng = np.random.default_rng(1)
    wanted = names(args.signals, args.features)
    result: dict[str, Any] = {
        "label": args.label,
        "module": str(args.features_file or "edge_agent.features"),
        "feature_set_version": F.FEATURE_SET_VERSION,
        "window": {"signals": args.signals, "samples": args.samples, "features": len(wanted)},
    }
    print(f"{result['module']} (feature set {F.FEATURE_SET_VERSION})")

    cases = (("complete", 0.0, False), ("missing_samples", args.missing, False))
    for label, missing, polls in (*cases, ("missing_polls", args.missing, True)):
        series, t = window(args.signals, args.samples, missing, rng, polls)
        best, med = per_call_us(
            lambda s=series, t=t: F.feature_vector(s, wanted, t), args.calls, args.repeat
        )
        result[f"feature_vector_us_{label}"] = {"best": round(best, 1), "median": round(med, 1)}
        print(
            f"feature_vector, {args.signals} signals x {args.samples} samples, "
            f"{len(wanted)} features, {label}: {best:,.1f} µs best, {med:,.1f} µs median"
        )

    series, t = window(args.signals, args.samples, 0.0, rng)
    every = [f"{s}__{f}" for s in series for f in F.SIGNAL_FEATURES]

    def per_signal() -> None:
        for x in series.values():
            F.signal_features(x, t)

    for label, fn in (
        ("signal_features_per_signal", per_signal),
        ("one_feature_vector", lambda: F.feature_vector(series, every, t)),
    ):
        best, med = per_call_us(fn, max(1, args.calls // 10), args.repeat)
        result[f"record_us_{label}"] = {"best": round(best, 1), "median": round(med, 1)}
        print(
            f"features record ({args.signals} signals x {len(F.SIGNAL_FEATURES)} features), "
            f"{label}: {best:,.1f} µs best, {med:,.1f} µs median per window"
        )

    w, s, k = args.windows, args.matrix_samples, args.matrix_signals
    batch = {f"sig{i:02d}": rng.normal(50, 5, size=(w, s)) for i in range(k)}
    ts = 1_718_000_000.0 + 5.0 * np.arange(s) + 300.0 * np.arange(w)[:, None]
    holed = dict(batch)
    holed["sig00"] = np.where(rng.random((w, s)) < args.missing, np.nan, batch["sig00"])
    v1 = tuple(f for f in F.SIGNAL_FEATURES if f in V1_SIGNAL)
    sets = {"set1": v1, "all": tuple(F.SIGNAL_FEATURES)}
    result["matrix"] = {"windows": w, "samples": s, "signals": k}
    for data_label, data in (("complete", batch), ("one_signal_missing", holed)):
        for set_label, features in sets.items():
            if set_label == "all" and features == v1:
                continue
            r = matrix_rate(F, data, ts, features, args.fallback_windows)
            result["matrix"][f"{data_label}_{set_label}"] = r
            print(
                f"{r['how']}, {data_label}: {r['windows']:,} windows x {s} samples x {k} "
                f"signals x {len(features)} features in {r['seconds']:.2f} s: "
                f"{r['windows_per_s']:,} windows/s"
            )
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
