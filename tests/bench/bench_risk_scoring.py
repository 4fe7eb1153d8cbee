"""Benchmark: devices scored per second by the cloud's risk scorer, end to end.

    .venv/bin/python tests/bench/bench_risk_scoring.py [--devices 500] [--store influx]
        [--postgres | --registry-url URL]

The real path of :meth:`cloud.risk.scorer.RiskScorer.scheduled_pass`: the devices from the
registry, each device's feature windows from the time-series store (``--store sqlite``,
the default: :class:`cloud.tsdb.sqlite.SQLiteStore`; ``--store influx``: a private
``influxd`` on loopback, as ``bench_ingest.py`` starts it), the shipped models
(:class:`models.runtime.RiskRuntime`), the scores stored and work orders triggered in
the registry (SQLite by default; ``--postgres``: a fresh database on the machine's
PostgreSQL, made as ``tests/conftest.py`` makes the tests' one and dropped at the end;
``--registry-url``: a database of yours, migrated and written to).

Data: a small fleet simulated by ``firmware_sim`` (two healthy compressors, one whose
refrigerant leaks, two healthy fans, one whose bearing wears; faults from the day after
the baseline period, failing five days later), its feature windows computed as the
models compute them (12-hour windows every hour), copied to ``--devices`` devices
(``--fans`` of them fans, ``--faulty`` of each type copying the faulty unit), each copy
with its own scale per feature (±5 %) and 1 % noise per value. The registry holds the
work-order world of ``tests/support/workorder_world.py`` (technicians, depots, parts, a
desk) and the devices, created when the simulation starts; the store holds every window
from then on: the ``--baseline-days`` baseline period (the scorer's default: 14 days,
313 windows: the first ends 12 h after the start) and the days after it up to
``--at-day``.

Passes, the scorer's clock a minute after a window end:

1. cold: no baseline cached; each device's is built from its first days' windows (and
   cached until its next refresh, its first days being over);
2. ``--warm-passes`` warm ones, an hour apart, each after one new window per device (a
   scheduled pass's steady state): baselines cached, one new score per device.

Per pass: the triggers' outcomes (an order opened, updated, unchanged, ...) by the unit the
devices copy (``triggers_by_copy`` in the JSON: an order opened on a copy of a healthy unit,
``cc-a``, ``cc-b``, ``fan-a`` or ``fan-b``, is a false one); devices/s and where the time
went, timed around the scorer's own steps (the
bench subclasses the scorer, the store and the runtime only to time their calls): the
registry's device list; the work orders of the devices whose baseline is due (an open risk
order keeps a baseline, a completed one starts it again); the baseline's store query,
rows → matrix and :meth:`~models.runtime.RiskRuntime.baseline`; the history's store
query (``history_s``, 84 h: 84 windows) and rows → matrix;
:meth:`~models.runtime.RiskRuntime.assess_many`;
storing the scores; the triggers (:func:`cloud.workorders.service.trigger`, one
transaction each).

What scoring a device costs, per stage: ranges over four runs of 500 devices (SQLite
store; SQLite and PostgreSQL registries) on a 2-core machine shared with other work, so
a factor of two between runs is noise; the JSON has every figure:

- cold pass, 45-100 ms a device (10-22 devices/s): the baseline's store query (313
  windows of 94 or 56 features) 25-58 ms, rows → matrix 3-8 ms, building the baseline
  7-14 ms (``np.nanpercentile`` was half of it; 2.1 ms since the robust scale takes the
  IQR only where the MAD is zero: one run, 2026-11-25), then what a warm pass does;
- warm pass, 10-27 ms a device (37-100 devices/s): the history's store query (84
  windows) 7-20 ms, 70-75 % of the pass; rows → matrix 0.8-2.2 ms; the models
  (``assess_many``, ~125 devices a call) 1.5-4.9 ms; storing the score 0.1-0.3 ms;
- a trigger that opens an order 15-40 ms (one transaction of a dozen statements), one
  that changes nothing 2-8 ms; paid by the devices at risk only.

Which devices the shipped models put at risk (2026-11-26, the defaults: 501 devices, the
cold pass on day 19): orders opened on all 24 copies of the failing units (12 of
``cc-leak``, 12 of ``fan-bearing``) and on 6 of the 113 copies of ``fan-b``, a healthy
fan that sits near the fan model's threshold (a copy's own ±5 % scale decides which side
it falls); none on the 364 copies of ``cc-a``, ``cc-b`` and ``fan-a``. The warm passes
opened 0 and 1 more (again a copy of ``fan-b``).

With the InfluxDB store the queries take 73-104 ms (baseline) and 21-33 ms (history):
6-9 devices/s cold, 27-42 warm.

Prints the figures and writes
``tests/bench/results/risk_scoring_<store>_<registry>.json`` (``--out``). Not a pass/fail
test.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: support, conftest

from sqlalchemy.orm import Session, sessionmaker  # noqa: E402
from support.influx import RestartableInflux  # noqa: E402
from support.postgres import bench_registry, server_version  # noqa: E402
from support.risk_sim import DAY, SITE, START  # noqa: E402
from support.workorder_world import seed  # noqa: E402

from cloud.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from cloud.registry.models import Device, Gateway, Site, SiteKind  # noqa: E402
from cloud.risk.scorer import (  # noqa: E402
    DeviceRow,
    PassStats,
    RiskScorer,
    config_from,
    order_policy,
)
from cloud.settings import DEFAULT_MODELS_DIR, Settings  # noqa: E402
from cloud.tsdb.base import (  # noqa: E402
    AlarmEvent,
    EnergyInterval,
    FeatureRow,
    Latest,
    Point,
    SiteRollup,
    StoreStats,
    TimeSeriesStore,
    to_ns,
)
from cloud.tsdb.influx import InfluxStore  # noqa: E402
from cloud.tsdb.sqlite import SQLiteStore  # noqa: E402
from firmware_sim.dataset import write_dataset  # noqa: E402
from firmware_sim.fleet import parse_fleet, profiles_of  # noqa: E402
from models.dataset import Dataset  # noqa: E402
from models.export import load_detectors  # noqa: E402
from models.pipeline import windowed  # noqa: E402
from models.runtime import Assessment, DeviceHistory, RiskRuntime  # noqa: E402

RESULTS = HERE / "results"
CREATED = datetime.fromtimestamp(START, UTC)
AFTER_WINDOW_S = 60.0
"""The scorer's clock in a pass: this long after the newest window end."""

# The scorer steps the bench times; they must exist (a renamed one would time nothing).
for _step in ("devices", "_service", "_baseline", "_history", "_store_scores", "_trigger"):
    assert callable(getattr(RiskScorer, _step, None)), f"RiskScorer.{_step} is gone"


# ---- timing ----------------------------------------------------------------------------------


@dataclass
class Stage:
    seconds: float = 0.0
    calls: int = 0
    rows: int = 0


@dataclass
class Stages:
    """Seconds, calls and rows per step of the current pass."""

    by_name: dict[str, Stage] = field(default_factory=dict)

    def add(self, name: str, seconds: float, rows: int = 0) -> None:
        s = self.by_name.setdefault(name, Stage())
        s.seconds += seconds
        s.calls += 1
        s.rows += rows

    def get(self, name: str) -> Stage:
        return self.by_name.get(name, Stage())

    def reset(self) -> None:
        self.by_name.clear()


class TimedStore(TimeSeriesStore):
    """The store, its feature queries timed (as ``store_<phase>``)."""

    def __init__(self, inner: TimeSeriesStore, stages: Stages) -> None:
        self.inner = inner
        self.stages = stages
        self.phase = "history"

    def write(self, points: Sequence[Point]) -> None:
        self.inner.write(points)

    def ping(self) -> bool:
        return self.inner.ping()

    def feature_history(
        self,
        device: str,
        start: float,
        end: float,
        *,
        group: str | None = None,
        names: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[FeatureRow]:
        t0 = time.perf_counter()
        rows = self.inner.feature_history(device, start, end, group=group, names=names, limit=limit)
        self.stages.add(f"store_{self.phase}", time.perf_counter() - t0, len(rows))
        return rows

    def latest(self, device: str) -> dict[str, Latest]:
        return self.inner.latest(device)

    def alarms(
        self, device: str, start: float, end: float, *, limit: int | None = 200
    ) -> list[AlarmEvent]:
        return self.inner.alarms(device, start, end, limit=limit)

    def energy(
        self, device: str, start: float, end: float, interval_s: int
    ) -> list[EnergyInterval]:
        return self.inner.energy(device, start, end, interval_s)

    def site_rollup(self, site: str, start: float, end: float, interval_s: int) -> list[SiteRollup]:
        return self.inner.site_rollup(site, start, end, interval_s)

    def count(self, measurement: str, *, gateway: str | None = None) -> int:
        return self.inner.count(measurement, gateway=gateway)

    def stats(self) -> StoreStats:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


class TimedRuntime(RiskRuntime):
    stages: Stages

    def baseline(self, asset_type: str, reference_x: Any) -> Any:
        t0 = time.perf_counter()
        out = super().baseline(asset_type, reference_x)
        self.stages.add("baseline_build", time.perf_counter() - t0, len(reference_x))
        return out

    def assess_many(
        self, asset_type: str, devices: Sequence[DeviceHistory], *, last: int = 1
    ) -> list[list[Assessment]]:
        t0 = time.perf_counter()
        out = super().assess_many(asset_type, devices, last=last)
        self.stages.add("assess_many", time.perf_counter() - t0, len(devices))
        return out


class TimedScorer(RiskScorer):
    stages: Stages
    timed_store: TimedStore
    source_of: dict[str, str]
    """Device -> the simulated unit it copies."""
    outcomes: dict[str, dict[str, int]]
    """Simulated unit -> outcome of its copies' triggers -> how many, this pass."""

    def devices(self, ids: Any = None) -> list[DeviceRow]:
        t0 = time.perf_counter()
        out = super().devices(ids)
        self.stages.add("registry_devices", time.perf_counter() - t0, len(out))
        return out

    def _service(self, devices: Sequence[DeviceRow], now: float) -> Any:
        t0 = time.perf_counter()
        out = super()._service(devices, now)
        self.stages.add("registry_orders", time.perf_counter() - t0, len(devices))
        return out

    def _baseline(self, dev: DeviceRow, now: float, service: Any) -> Any:
        self.timed_store.phase = "baseline"
        t0 = time.perf_counter()
        try:
            return super()._baseline(dev, now, service)
        finally:
            self.stages.add("baseline_total", time.perf_counter() - t0)
            self.timed_store.phase = "history"

    def _history(self, dev: DeviceRow, now: float, service: Any) -> DeviceHistory | None:
        t0 = time.perf_counter()
        try:
            return super()._history(dev, now, service)
        finally:
            self.stages.add("history_total", time.perf_counter() - t0)

    def _store_scores(
        self, asset_type: str, pairs: Sequence[tuple[DeviceRow, Assessment]]
    ) -> list[tuple[DeviceRow, Assessment]]:
        t0 = time.perf_counter()
        out = super()._store_scores(asset_type, pairs)
        self.stages.add("store_scores", time.perf_counter() - t0, len(out))
        return out

    def _trigger(self, dev: DeviceRow, a: Assessment) -> Any:
        t0 = time.perf_counter()
        out = super()._trigger(dev, a)
        self.stages.add("trigger", time.perf_counter() - t0)
        copies = self.outcomes.setdefault(self.source_of[dev.id], {})
        copies[out.outcome] = copies.get(out.outcome, 0) + 1
        return out


def breakdown(stages: Stages, total_s: float, devices: int) -> dict[str, dict[str, float]]:
    """The pass's time per stage (exclusive: a stage's seconds are not in another's)."""
    g = stages.get
    baseline_matrix = (
        g("baseline_total").seconds - g("store_baseline").seconds - g("baseline_build").seconds
    )
    history_matrix = (
        g("history_total").seconds - g("baseline_total").seconds - g("store_history").seconds
    )
    parts = {
        "registry_devices": (g("registry_devices").seconds, g("registry_devices")),
        "registry_orders": (g("registry_orders").seconds, g("registry_orders")),
        "store_query_baseline": (g("store_baseline").seconds, g("store_baseline")),
        "rows_to_matrix_baseline": (baseline_matrix, g("baseline_build")),
        "build_baseline": (g("baseline_build").seconds, g("baseline_build")),
        "store_query_history": (g("store_history").seconds, g("store_history")),
        "rows_to_matrix_history": (history_matrix, g("store_history")),
        "assess_many": (g("assess_many").seconds, g("assess_many")),
        "store_scores": (g("store_scores").seconds, g("store_scores")),
        "triggers": (g("trigger").seconds, g("trigger")),
    }
    parts["other"] = (total_s - sum(s for s, _ in parts.values()), Stage())
    return {
        name: {
            "seconds": round(s, 4),
            "share": round(s / total_s, 4) if total_s else 0.0,
            "per_device_ms": round(s / devices * 1000, 3) if devices else 0.0,
            "calls": stage.calls,
            "per_call_ms": round(s / stage.calls * 1000, 3) if stage.calls else 0.0,
            "rows_per_call": round(stage.rows / stage.calls, 1) if stage.calls else 0.0,
        }
        for name, (s, stage) in parts.items()
    }


# ---- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetDevice:
    id: str
    asset_type: str
    source: str
    """The simulated unit whose windows it copies."""
    tags: dict[str, str]


def seed_registry(
    sessions: sessionmaker[Session], sources: dict[str, list[str]], args: argparse.Namespace
) -> list[FleetDevice]:
    """The work-order world and ``args.devices`` devices under its first client, 50 to a
    site and 25 to a gateway, created when the simulation starts."""
    world = seed(sessions, devices=0)
    rng = np.random.default_rng(args.seed)
    n_fans = round(args.devices * args.fans)
    kinds = ["fan"] * n_fans + ["compressor"] * (args.devices - n_fans)
    rng.shuffle(kinds)
    every = max(1, round(1 / args.faulty)) if args.faulty > 0 else 0
    seen = {"compressor": 0, "fan": 0}
    out: list[FleetDevice] = []
    with sessions.begin() as s:
        site: Site | None = None
        gateway = ""
        for i, kind in enumerate(kinds):
            if i % 50 == 0:
                site = Site(client_id=world.client_id, name=f"site {i // 50}", kind=SiteKind.HOTEL)
                s.add(site)
                s.flush()
            assert site is not None
            if i % 25 == 0:
                gateway = f"gw-{i // 25:04d}"
                s.add(Gateway(id=gateway, site_id=site.id))
                s.flush()
            k = seen[kind]
            seen[kind] += 1
            healthy, faulty = sources[kind][:-1], sources[kind][-1]
            source = faulty if every and k % every == every - 1 else healthy[k % len(healthy)]
            d = Device(gateway_id=gateway, name=f"{kind}-{i}", asset_type=kind, created_at=CREATED)
            s.add(d)
            s.flush()
            tags = {
                "client": world.client_id,
                "site": site.id,
                "gateway": gateway,
                "device": d.id,
                "group": "slow",
            }
            out.append(FleetDevice(d.id, kind, source, tags))
    # the world's own fan (another client's) is scored too: give it the same start
    with sessions.begin() as s:
        fan = s.get(Device, world.other_device)
        assert fan is not None
        fan.created_at = CREATED
        gw = s.get(Gateway, fan.gateway_id)
        assert gw is not None
        porto = s.get(Site, gw.site_id)
        assert porto is not None
        tags = {
            "client": porto.client_id,
            "site": porto.id,
            "gateway": gw.id,
            "device": fan.id,
            "group": "slow",
        }
        out.append(FleetDevice(fan.id, "fan", sources["fan"][0], tags))
    return out


# ---- the simulated fleet ---------------------------------------------------------------------

HEALTHY = {"compressor": ["cc-a", "cc-b"], "fan": ["fan-a", "fan-b"]}
FAULTY = {"compressor": ("cc-leak", "refrigerant_leak"), "fan": ("fan-bearing", "bearing_wear")}


def _unit(dev_id: str, asset_type: str, unit: int, variant: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": dev_id,
        "asset_type": asset_type,
        "variant": variant,
        "profile": "ew-cc100" if asset_type == "compressor" else "ew-fc200",
        "unit_id": unit,
        "install_date": "2024-01-01",
        "rated_power_kw": 10.0 if asset_type == "compressor" else 1.5,
        **extra,
    }


@dataclass(frozen=True)
class Windows:
    t: np.ndarray
    """Window ends (epoch s)."""
    x: np.ndarray
    """Features (windows × the detector's features), NaN where missing."""
    names: list[str]


def simulate(out: Path, days: float, fault_day: float) -> dict[str, Windows]:
    """The source units' feature windows (see the module docstring)."""
    onset = datetime.fromtimestamp(START + fault_day * DAY, UTC).isoformat()
    units = []
    for asset_type, variant in (("compressor", "split_ac"), ("fan", "condenser")):
        for name in HEALTHY[asset_type]:
            units.append(_unit(name, asset_type, len(units) + 1, variant))
        name, fault = FAULTY[asset_type]
        units.append(
            _unit(
                name,
                asset_type,
                len(units) + 1,
                variant,
                faults=[{"type": fault, "onset": onset, "days_to_failure": 5}],
            )
        )
    data = {
        "schema_version": 1,
        "name": "bench",
        "seed": 5,
        "start": datetime.fromtimestamp(START, UTC).isoformat(),
        "clients": [{"id": "c1", "sites": [{**SITE, "gateways": [{"id": "g", "devices": units}]}]}],
    }
    fleet = parse_fleet(data, "<bench fleet>")
    write_dataset(fleet, profiles_of(fleet), out, days=days, resolution_s=300, workers=1)
    ds = Dataset(out)
    detectors = load_detectors(DEFAULT_MODELS_DIR)
    windows = {}
    for rec in ds.recordings():
        det = detectors[rec.asset_type]
        w = windowed(ds, rec, det.feature_names, det.windows.size, det.windows.hop)
        windows[rec.asset_id] = Windows(rec.t[w.ends], w.x, list(det.feature_names))
    return windows


def device_rows(src: Windows, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``src``'s features: its own scale per feature, and noise per value."""
    scale = np.exp(0.05 * rng.normal(size=src.x.shape[1]))
    return src.x * scale * (1 + 0.01 * rng.normal(size=src.x.shape))


def points_of(dev: FleetDevice, src: Windows, x: np.ndarray, lo: float, hi: float) -> list[Point]:
    """The device's ``features`` points with window ends in ``(lo, hi]``."""
    out = []
    for t, row in zip(src.t, x, strict=True):
        if lo < t <= hi:
            fields = {n: float(v) for n, v in zip(src.names, row, strict=True) if math.isfinite(v)}
            if fields:
                out.append(Point("features", to_ns(float(t)), dev.tags, fields))
    return out


# ---- main ------------------------------------------------------------------------------------


def open_store(args: argparse.Namespace, work: Path) -> tuple[TimeSeriesStore, Any]:
    if args.store == "influx":
        influx = RestartableInflux(work / "influx")
        influx.start()
        settings = Settings(tsdb="influxdb", influx_url=influx.url, influx_database="bench")
        return InfluxStore.from_settings(settings), influx
    return SQLiteStore(work / "ts.db"), None


def report(
    kind: str,
    stats: PassStats,
    seconds: float,
    parts: dict[str, Any],
    outcomes: dict[str, dict[str, int]],
) -> dict[str, Any]:
    n = stats.devices
    line = ", ".join(
        f"{k} {v['per_device_ms']:.2f}" for k, v in parts.items() if v["calls"] or k == "other"
    )
    by_copy = dict(sorted(outcomes.items()))
    print(
        f"{kind:>5} pass: {n} devices in {seconds:.2f} s = {n / seconds:,.1f} devices/s "
        f"({stats.scored} scored, {stats.learning} learning, {stats.no_data} without data, "
        f"{stats.failed} failed; triggers {stats.triggers}, by the unit copied: {by_copy}); "
        f"ms per device: {line}",
        flush=True,
    )
    return {
        "kind": kind,
        "devices": n,
        "seconds": round(seconds, 3),
        "devices_per_s": round(n / seconds, 1),
        "scored": stats.scored,
        "learning": stats.learning,
        "no_data": stats.no_data,
        "failed": stats.failed,
        "triggers": stats.triggers,
        "triggers_by_copy": by_copy,
        "stages": parts,
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--fans", type=float, default=0.5, help="share of fans (the rest compressors)")
    p.add_argument("--faulty", type=float, default=0.05, help="share copying the faulty unit")
    p.add_argument("--store", choices=("sqlite", "influx"), default="sqlite")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--postgres", action="store_true", help="a fresh registry on the local PostgreSQL"
    )
    where.add_argument(
        "--registry-url", help="a database of yours (migrated and written to; use an empty one)"
    )
    p.add_argument("--baseline-days", type=float, default=Settings().scorer_baseline_days)
    p.add_argument(
        "--at-day", type=float, help="the cold pass (default: baseline days + 5, faults rising)"
    )
    p.add_argument("--warm-passes", type=int, default=2)
    p.add_argument("--chunk", type=int, help="devices per database round (the scorer's default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    at_day = args.at_day if args.at_day is not None else args.baseline_days + 5

    with (
        tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp,
        bench_registry(args.registry_url, args.postgres, Path(tmp)) as url,
    ):
        work = Path(tmp)
        t0 = time.perf_counter()
        hours = args.warm_passes + 2
        sources = simulate(work / "sim", at_day + hours / 24 + 0.5, args.baseline_days + 1)
        sim_s = time.perf_counter() - t0
        print(f"simulated {len(sources)} units, {at_day:g}+ days, in {sim_s:.1f} s", flush=True)

        migrate(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        inner, influx = open_store(args, work)
        stages = Stages()
        store = TimedStore(inner, stages)
        try:
            fleet = seed_registry(sessions, {k: HEALTHY[k] + [FAULTY[k][0]] for k in HEALTHY}, args)
            backend = engine.dialect.name
            version = server_version(sessions)
            rng = np.random.default_rng(args.seed)
            xs = [device_rows(sources[d.source], rng) for d in fleet]
            ends = sources[HEALTHY["compressor"][0]].t
            cold_end = float(ends[np.searchsorted(ends, START + at_day * DAY)])
            pass_ends = [cold_end + h * 3600.0 for h in range(args.warm_passes + 1)]

            t0 = time.perf_counter()
            written = 0
            batch: list[Point] = []
            for d, x in zip(fleet, xs, strict=True):
                batch += points_of(d, sources[d.source], x, 0.0, cold_end)
                if len(batch) >= 5000:
                    inner.write(batch)
                    written += len(batch)
                    batch = []
            inner.write(batch)
            written += len(batch)
            seed_s = time.perf_counter() - t0
            print(
                f"registry: {version}; store: {args.store}; {len(fleet)} devices, {written:,} "
                f"feature windows written in {seed_s:.1f} s ({written / seed_s:,.0f}/s)",
                flush=True,
            )

            settings = Settings(scorer_baseline_days=args.baseline_days)
            config = config_from(settings)
            if args.chunk:
                config = replace(config, chunk=args.chunk)
            runtime = TimedRuntime.load(settings.models_dir)
            runtime.stages = stages
            clock = [cold_end + AFTER_WINDOW_S]
            scorer = TimedScorer(
                sessions, store, runtime, order_policy(settings), config, clock=lambda: clock[0]
            )
            scorer.stages = stages
            scorer.timed_store = store
            scorer.source_of = {d.id: d.source for d in fleet}
            copies = dict(sorted(Counter(d.source for d in fleet).items()))
            print(f"devices by the unit they copy: {copies}", flush=True)

            passes = []
            for k, end in enumerate(pass_ends):
                if k:  # one new window per device, as an hour of ingest would bring
                    new = [
                        pt
                        for d, x in zip(fleet, xs, strict=True)
                        for pt in points_of(d, sources[d.source], x, pass_ends[k - 1], end)
                    ]
                    inner.write(new)
                clock[0] = end + AFTER_WINDOW_S
                stages.reset()
                scorer.outcomes = {}
                t0 = time.perf_counter()
                stats = scorer.scheduled_pass()
                seconds = time.perf_counter() - t0
                kind = "cold" if k == 0 else "warm"
                passes.append(
                    report(
                        kind,
                        stats,
                        seconds,
                        breakdown(stages, seconds, stats.devices),
                        scorer.outcomes,
                    )
                )
        finally:
            store.close()
            engine.dispose()
            if influx is not None:
                influx.stop()

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "registry": {"backend": backend, "version": version},
        "store": args.store,
        "copies": copies,
        "seeding": {
            "simulate_s": round(sim_s, 2),
            "windows_written": written,
            "write_s": round(seed_s, 2),
            "windows_per_device": round(written / len(fleet), 1),
        },
        "passes": passes,
    }
    out = args.out or RESULTS / f"risk_scoring_{args.store}_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
