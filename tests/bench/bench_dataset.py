"""Dataset generation rate: device-days and rows per second, and the time a year of the
200-device training fleet would take on this machine.

    .venv/bin/python tests/bench/bench_dataset.py --devices 20 --days 30

Takes the first ``--devices`` devices of the training fleet (same compressor/fan mix),
writes a dataset to a temporary folder, prints the figures and writes them to
``tests/bench/results/dataset.json``. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from firmware_sim.dataset import write_dataset
from firmware_sim.fleet import load_fleet, parse_fleet, profiles_of

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "firmware_sim" / "fleets" / "train-200.yaml"


def subset(n: int) -> object:
    """The training fleet cut to its first ``n`` compressors and fans in proportion."""
    import yaml

    data = yaml.safe_load(FLEET.read_text(encoding="utf-8"))
    fleet = load_fleet(FLEET)
    devs = fleet.devices()
    comp = [d.id for d in devs if d.spec.asset_type == "compressor"]
    fans = [d.id for d in devs if d.spec.asset_type == "fan"]
    n_comp = round(n * len(comp) / len(devs))
    keep = set(comp[:n_comp]) | set(fans[: n - n_comp])
    for c in data["clients"]:
        for s in c["sites"]:
            for g in s["gateways"]:
                g["devices"] = [d for d in g["devices"] if d["id"] in keep]
            s["gateways"] = [g for g in s["gateways"] if g["devices"]]
        c["sites"] = [s for s in c["sites"] if s["gateways"]]
    data["clients"] = [c for c in data["clients"] if c["sites"]]
    return parse_fleet(data, str(FLEET))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--resolution", type=int, default=60)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "tests" / "bench" / "results" / "dataset.json"
    )
    args = ap.parse_args()

    fleet = subset(args.devices)
    profiles = profiles_of(fleet)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = write_dataset(
            fleet,
            profiles,
            Path(tmp),
            days=args.days,
            resolution_s=args.resolution,  # type: ignore[arg-type]
            workers=args.workers,
        )
        wall = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.csv"))
    device_days = summary.devices * args.days
    rate = device_days / wall
    rows_s = summary.rows / wall
    full = 200 * 365 * (86400 / args.resolution) / rows_s
    result = {
        "devices": summary.devices,
        "days": args.days,
        "resolution_s": args.resolution,
        "workers": args.workers or os.cpu_count(),
        "rows": summary.rows,
        "failures": summary.failures,
        "seconds": round(wall, 2),
        "device_days_per_s": round(rate, 1),
        "rows_per_s": round(rows_s),
        "csv_bytes_per_row": round(size / summary.rows, 1),
        "extrapolated_200_devices_365_days_s": round(full, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    print(
        f"{summary.devices} devices x {args.days:g} days at {args.resolution} s: "
        f"{summary.rows:,} rows in {wall:.1f} s"
    )
    print(
        f"  {rate:,.1f} device-days/s, {rows_s:,.0f} rows/s, "
        f"{result['csv_bytes_per_row']} bytes/row"
    )
    print(f"  extrapolated: 200 devices x 365 days in {full:,.0f} s ({full / 60:.1f} min)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
