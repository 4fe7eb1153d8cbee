"""Benchmark: one client's monthly energy report, step by step.

    .venv/bin/python tests/bench/bench_report.py [--sites 20] [--devices 50] [--days 403]
        [--no-baseline] [--data DIR] [--out FILE]

A client with ``--sites`` sites (time zones from Dubai to Los Angeles, time-of-use and
flat tariffs) of ``--devices`` devices each (two thirds compressors ``ew-cc100``, a third
fans ``ew-fc200``), in a SQLite registry and a SQLite time-series store (the single-site
default backends), holding what the report reads:

- every device's hourly energy points (``energy``, ``runtime_hours``, ``start_count``)
  for ``--days`` days up to the end of the report month (the default, 403 days, is the
  month, the 12 months before it that the baseline is fitted on, and a week: one year of
  readings and the month; a compressor's use follows the outdoor temperature, so the
  baselines fit);
- hourly feature windows of the report month for every device (the means of the signals
  the efficiency figures use), and of the whole span for the first three compressors of
  each site (the outdoor temperature of the baseline: the report reads no more).
  Real gateways send 5-minute windows: 12 times as many rows as here.
- a work order per site on one compressor, open in the month.

Loading is not timed. Then the report of the last month, timed per step: collect (the
store's energy and feature queries timed apart), build (the baselines' eemeter fits and
the equipment section timed apart), HTML, PDF, JSON and the CSV tables. eemeter's
one-off numba compilation is paid before (:func:`cloud.energy.baseline.warm_up`), as the
report worker does at start-up. Prints the figures and writes them to
``tests/bench/results/report_<sites>x<devices>x<days>[_nobaseline].json`` (``--out``). Not
a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: support

from cloud.auth import Principal  # noqa: E402
from cloud.db import make_engine, make_sessionmaker, migrate, session_scope  # noqa: E402
from cloud.energy.baseline import warm_up  # noqa: E402
from cloud.energy.carbon import GridFactors  # noqa: E402
from cloud.registry import services  # noqa: E402
from cloud.reports import build as build_module  # noqa: E402
from cloud.reports.build import build  # noqa: E402
from cloud.reports.collect import Options, collect  # noqa: E402
from cloud.reports.period import Month  # noqa: E402
from cloud.reports.render import csv_zip, to_html, to_json, to_pdf  # noqa: E402
from cloud.tsdb.base import (  # noqa: E402
    AlarmEvent,
    EnergyInterval,
    FeatureRow,
    Latest,
    Point,
    SiteRollup,
    TimeSeriesStore,
    to_ns,
)
from cloud.tsdb.sqlite import SQLiteStore  # noqa: E402
from cloud.workorders.models import Source, WorkOrder  # noqa: E402
from cloud.workorders.policy import State  # noqa: E402

RESULTS = HERE / "results"
MONTH = Month(2026, 10)
ZONES = ("Asia/Dubai", "Europe/Paris", "Europe/London", "America/New_York", "America/Los_Angeles")
TOU = {
    "kind": "tou",
    "currency": "EUR",
    "default_price_per_kwh": 0.22,
    "standing_charge_per_day": 4.0,
    "periods": [
        {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00",
         "end": "20:00", "price_per_kwh": 0.34},
        {"name": "night", "start": "23:00", "end": "06:00", "price_per_kwh": 0.12},
    ],
}  # fmt: skip
FLAT = {"kind": "flat", "currency": "EUR", "price_per_kwh": 0.25, "standing_charge_per_day": 2.0}
COMPRESSOR_SIGNALS = ("suction_pressure", "discharge_pressure", "superheat", "subcooling",
                      "active_power", "current_l1", "vibration_rms")  # fmt: skip
FAN_SIGNALS = ("power", "motor_current", "speed_rpm", "bearing_temp", "vibration_rms")
T = TypeVar("T")


# ---- timing ------------------------------------------------------------------------------------


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed


class TimedStore(TimeSeriesStore):
    """The store with its energy and feature queries timed."""

    def __init__(self, inner: TimeSeriesStore, timer: Timer) -> None:
        self.inner, self.timer = inner, timer

    def write(self, points: Sequence[Point]) -> None:
        self.inner.write(points)

    def ping(self) -> bool:
        return self.inner.ping()

    def feature_history(self, device: str, start: float, end: float, **kw: Any) -> list[FeatureRow]:
        t0 = time.perf_counter()
        rows = self.inner.feature_history(device, start, end, **kw)
        self.timer.seconds["store_features"] += time.perf_counter() - t0
        self.timer.calls["store_features"] += 1
        self.timer.rows["store_features"] += len(rows)
        return rows

    def latest(self, device: str) -> dict[str, Latest]:
        return self.inner.latest(device)

    def alarms(
        self, device: str, start: float, end: float, *, limit: int | None = 200
    ) -> list[AlarmEvent]:
        return self.inner.alarms(device, start, end, limit=limit)

    def energy(
        self, device: str, start: float, end: float, interval_s: int, **kw: Any
    ) -> list[EnergyInterval]:
        t0 = time.perf_counter()
        rows = self.inner.energy(device, start, end, interval_s, **kw)
        self.timer.seconds["store_energy"] += time.perf_counter() - t0
        self.timer.calls["store_energy"] += 1
        self.timer.rows["store_energy"] += len(rows)
        return rows

    def site_rollup(self, site: str, start: float, end: float, interval_s: int) -> list[SiteRollup]:
        return self.inner.site_rollup(site, start, end, interval_s)

    def count(self, measurement: str, *, gateway: str | None = None) -> int:
        return self.inner.count(measurement, gateway=gateway)


# ---- data --------------------------------------------------------------------------------------


def outdoor(hours: np.ndarray, zone: str, rng: np.random.Generator) -> np.ndarray:
    day = (hours / 86400.0) % 365.25
    offset = ZoneInfo(zone).utcoffset(datetime(2026, 1, 1)).total_seconds() / 3600  # type: ignore[union-attr]
    local_hour = (hours / 3600.0 + offset) % 24
    warm = 22.0 if zone == "Asia/Dubai" else 12.0
    seasonal = warm + 9.0 * np.sin(2 * np.pi * (day - 110) / 365.25)
    diurnal = 4.0 * np.sin(2 * np.pi * (local_hour - 9) / 24)
    return seasonal + diurnal + rng.normal(0.0, 1.0, hours.size)


def load(args: argparse.Namespace, work: Path) -> tuple[str, str, Path, dict[str, int]]:
    url = f"sqlite:///{work / 'registry.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    system = Principal.system()
    sites: list[tuple[str, str, list[tuple[str, str]]]] = []
    with session_scope(sessions) as s:
        client = services.create_client(s, system, name="Bench Hotels")
        client_id = client.id
        for i in range(args.sites):
            zone = ZONES[i % len(ZONES)]
            site = services.create_site(
                s, system, client_id=client.id, name=f"Site {i:02d}", kind="hotel",
                timezone=zone, floor_area_m2=2000.0 + 500 * i, tariff=TOU if i % 2 else FLAT,
            )  # fmt: skip
            gateway = f"gw-{i:02d}"
            services.create_gateway(s, system, gateway_id=gateway, site_id=site.id)
            devices = []
            for j in range(args.devices):
                kind, profile = ("fan", "ew-fc200") if j % 3 == 2 else ("compressor", "ew-cc100")
                d = services.create_device(
                    s, system, gateway_id=gateway, name=f"{kind[:3]}-{i:02d}-{j:02d}",
                    asset_type=kind, profile=profile, make="Acme",
                    model="CC-100" if kind == "compressor" else "FC-200",
                )  # fmt: skip
                devices.append((d.id, kind))
            sites.append((site.id, zone, devices))
        s.flush()
        start_, _ = MONTH.bounds("UTC")
        for number, (site_id, _, devices) in enumerate(sites, start=1):
            s.add(
                WorkOrder(
                    number=number, client_id=client_id, site_id=site_id, device_id=devices[0][0],
                    fault="condenser_fouling", source=Source.RISK, state=State.SCHEDULED,
                    open_key=f"{devices[0][0]}|condenser_fouling", priority=3,
                    problem="condenser fouling", cause="dirt", remedy="clean the coil",
                    sla_due_at=datetime.fromtimestamp(start_ + 20 * 86400, UTC),
                    opened_at=datetime.fromtimestamp(start_ + 12 * 86400, UTC),
                    updated_at=datetime.fromtimestamp(start_ + 12 * 86400, UTC),
                )
            )  # fmt: skip
    engine.dispose()

    store_path = work / "ts.db"
    store = SQLiteStore(store_path)
    _, month_end = MONTH.bounds("America/Los_Angeles")
    month_start, _ = MONTH.bounds("Asia/Dubai")
    last = month_end + 7 * 86400
    hours = np.arange(last - args.days * 86400, last, 3600, dtype=np.int64)
    in_month = (hours >= month_start - 86400) & (hours < month_end + 86400)
    rng = np.random.default_rng(1)
    counts = {"energy": 0, "features": 0}
    batch: list[Point] = []

    def flush(force: bool = False) -> None:
        if batch and (force or len(batch) >= 50_000):
            store.write(batch)
            batch.clear()

    t0 = time.perf_counter()
    for site_id, zone, devices in sites:
        temp = outdoor(hours, zone, rng)
        compressors = 0
        for device_id, kind in devices:
            tags = {"client": client_id, "site": site_id, "gateway": "", "device": device_id}
            scale = rng.uniform(0.6, 1.6)
            if kind == "compressor":
                kw = scale * (1.2 + 0.18 * np.maximum(temp - 14.0, 0.0))
                run = np.clip(0.35 + 0.03 * (temp - 14.0), 0.1, 1.0)
            else:
                kw = np.full(hours.size, scale * 0.6)
                run = np.full(hours.size, 0.9)
            kw = kw * rng.normal(1.0, 0.05, hours.size)
            energy = 1000.0 + np.cumsum(kw)
            runtime = 500.0 + np.cumsum(run)
            starts = 100.0 + np.cumsum(rng.poisson(2.0, hours.size))
            stamp = hours + 1800
            for k in range(hours.size):
                batch.append(
                    Point("energy", int(stamp[k]) * 1_000_000_000, tags,
                          {"energy": float(energy[k]), "runtime_hours": float(runtime[k]),
                           "start_count": float(starts[k])})
                )  # fmt: skip
            counts["energy"] += hours.size
            flush()
            sensor = kind == "compressor" and compressors < 3
            compressors += kind == "compressor"
            ftags = {**tags, "group": "default"}
            names = COMPRESSOR_SIGNALS if kind == "compressor" else FAN_SIGNALS
            for k in np.flatnonzero(in_month | sensor):
                fields: dict[str, float] = {"ambient_temp__mean": float(temp[k])}
                if in_month[k]:
                    fields.update({f"{n}__mean": float(kw[k] * (1 + 0.1 * i))
                                   for i, n in enumerate(names)})  # fmt: skip
                batch.append(Point("features", to_ns(float(hours[k]) + 3300.0), ftags, fields))
                counts["features"] += 1
            flush()
        print(f"  loaded site {site_id[:8]}: {counts} in {time.perf_counter() - t0:.0f} s",
              flush=True)  # fmt: skip
    flush(force=True)
    store.close()
    counts["load_s"] = round(time.perf_counter() - t0, 1)  # type: ignore[assignment]
    return url, client_id, store_path, counts


# ---- the report ---------------------------------------------------------------------------------


def run_report(
    args: argparse.Namespace, url: str, client_id: str, store_path: Path
) -> dict[str, Any]:
    timer = Timer()
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    store = TimedStore(SQLiteStore(store_path), timer)
    options = Options(GridFactors(0.3), baseline=not args.no_baseline)
    build_module.fit_baseline = timer.wrap("baseline_fit", build_module.fit_baseline)  # type: ignore[assignment]
    build_module.savings = timer.wrap("baseline_savings", build_module.savings)  # type: ignore[assignment]
    build_module.equipment.assess = timer.wrap("equipment", build_module.equipment.assess)  # type: ignore[assignment]
    now = datetime(2026, 11, 20, tzinfo=UTC)
    try:
        figures: dict[str, float] = {}
        t0 = time.perf_counter()
        with sessions() as session:
            inputs = collect(session, store, client_id, MONTH, options=options, now=now)
        figures["collect_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = build(inputs)
        figures["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        html = to_html(report)
        figures["html_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pdf = to_pdf(html)
        figures["pdf_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = to_json(report)
        figures["json_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        zipped = csv_zip(report)
        figures["csv_s"] = time.perf_counter() - t0
    finally:
        store.inner.close()
        engine.dispose()
    import pypdfium2

    pages = len(pypdfium2.PdfDocument(pdf))
    figures["total_s"] = sum(v for k, v in figures.items() if k.endswith("_s"))
    parts = (
        {f"{k}_s": round(v, 3) for k, v in sorted(timer.seconds.items())}
        | {f"{k}_calls": v for k, v in sorted(timer.calls.items())}
        | {f"{k}_rows": v for k, v in sorted(timer.rows.items())}
    )
    fitted = sum(1 for s in report.sites if s.baseline.status == "fitted")
    return {
        "steps": {k: round(v, 3) for k, v in figures.items()},
        "parts": parts,
        "sizes": {
            "html_bytes": len(html.encode()),
            "pdf_bytes": len(pdf),
            "pdf_pages": pages,
            "json_bytes": len(data),
            "csv_zip_bytes": len(zipped),
        },
        "report": {
            "sites": len(report.sites),
            "devices": report.totals.devices,
            "kwh": round(report.totals.kwh, 1),
            "baselines_fitted": fitted,
            "baseline_statuses": sorted({s.baseline.status for s in report.sites}),
            "equipment": report.equipment.status,
            "recommendations": len(report.equipment.recommendations),
        },
    }


def data(args: argparse.Namespace, tmp: Path) -> tuple[str, str, Path, dict[str, int]]:
    """The loaded data: reused from ``--data`` when it holds this size, else loaded."""
    shape = {"sites": args.sites, "devices": args.devices, "days": args.days}
    folder = args.data or tmp
    meta = folder / "meta.json"
    if args.data is not None and meta.is_file():
        saved = json.loads(meta.read_text())
        if saved["shape"] == shape:
            print(f"reusing the data in {folder}", flush=True)
            return saved["url"], saved["client_id"], Path(saved["store"]), saved["counts"]
        raise SystemExit(f"{folder} holds {saved['shape']}, not {shape}: use another --data")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"loading {args.sites} sites x {args.devices} devices x {args.days} days ...",
          flush=True)  # fmt: skip
    url, client_id, store_path, counts = load(args, folder)
    meta.write_text(json.dumps({"shape": shape, "url": url, "client_id": client_id,
                                "store": str(store_path), "counts": counts}))  # fmt: skip
    return url, client_id, store_path, counts


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sites", type=int, default=20)
    p.add_argument("--devices", type=int, default=50, help="per site")
    p.add_argument("--days", type=int, default=403, help="of hourly readings up to the month")
    p.add_argument("--no-baseline", action="store_true", help="skip the CalTRACK baselines")
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="keep the loaded registry and store in DIR, and reuse them when DIR holds the "
        "same --sites/--devices/--days (default: a temporary directory)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warm = None
    if not args.no_baseline:
        warm = warm_up()
        print(f"eemeter warm-up: import {warm.import_s:.1f} s, first fit {warm.first_fit_s:.1f} s")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        url, client_id, store_path, counts = data(args, Path(tmp))
        size = store_path.stat().st_size
        print(f"data: {counts} ({size / 1e9:.2f} GB store)", flush=True)
        result = run_report(args, url, client_id, store_path)
    steps = result["steps"]
    print("report of", MONTH, "for", result["report"])
    for k, v in steps.items():
        print(f"  {k:10s} {v:8.2f}")
    for k, v in result["parts"].items():
        print(f"    {k:24s} {v}")
    print("  sizes", result["sizes"])
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {**counts, "store_bytes": size},
        "warm_up": None if warm is None else {"import_s": warm.import_s, "fit_s": warm.first_fit_s},
        **result,
    }
    suffix = "_nobaseline" if args.no_baseline else ""
    path = args.out or RESULTS / f"report_{args.sites}x{args.devices}x{args.days}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
