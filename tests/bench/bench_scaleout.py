"""Scale-out on one machine: ingest workers and risk scorers added side by side, killed and
restarted, against one Mosquitto, one InfluxDB and one PostgreSQL.

    .venv/bin/python tests/bench/bench_scaleout.py [--seconds 15] [--run-seconds 60]
        [--workers 3] [--scorers 2] [--gateways 40] [--risk-devices 100]

Servers: a private ``mosquitto`` (password file and ACL generated from the registry by
:mod:`cloud.auth.mosquitto`, ``allow_anonymous false``) and a private ``influxd`` on free
loopback ports, and a fresh database on the machine's PostgreSQL
(:func:`support.postgres.fresh_database`; ``--registry-url`` for another, empty one).
Cloud processes are the real CLIs: ``edgewatch-cloud ingest --workers 1`` per worker (one
process per worker, as the Kubernetes Deployment runs them) and ``edgewatch-cloud scorer
--partition I/N``.

The fleet:

- ``--gateways`` simulated gateways (:mod:`support.gateways`), each with its own
  credential, ``--devices`` devices and the load shape of ``bench_ingest.py``: per device
  and minute-window one features record of 100 features, one score, six energy readings,
  in zlib batches of 50; each keeps at most ``--max-inflight`` batches unacknowledged
  (the agent's 4 live + 4 backlog) and sends a batch again after ``--ack-timeout`` s
  without its ack. ``--shape agent`` sends instead what the agent sends with its default
  poll groups, per device and minute: a features record of the fast group (124 features
  of the shipped profiles' points), every fifth minute one of the default group (382 for
  a compressor, 130 for a fan), every fifteenth one of the slow group, every hour a risk
  window and its score, every minute the counters as an energy record, and per gateway a
  health record a minute (``support.gateways.LoadShape``); ``--batch 1`` is how the agent
  batches at that rate (its 0.2-s batch delay rarely catches two records).
  Their devices are of an asset type without a risk model (``ahu``: the
  features are made up), so the scorer leaves them to their alarms: device 0 of every
  fourth gateway raises ``discharge_temp_high`` (major: a work order) every 40 windows
  and clears it 20 later; device 1 of every eighth raises ``suction_pressure_low``
  (minor: no order); device 2 of the gateways with index 1 mod 4 starts raising
  ``discharge_temp_high`` only in the scale-out run, so orders are opened while it runs.
- ``--risk-devices`` compressors and fans with twelve days of feature windows written to
  InfluxDB beforehand, ending a few minutes before the run: the windows of the simulated
  units of ``bench_risk_scoring.py`` (imported from it: healthy ones, a leaking compressor
  and a fan with a worn bearing, ``--faulty`` of each type copying the faulty one), each
  copy with its own scale and noise; the first ``--baseline-days`` are each device's
  baseline.
  Five devices to a site and sites chosen so that ``shard % --scorers`` splits them evenly
  (with a handful of sites a hash alone would not).

Phases, each figure printed and written to ``tests/bench/results/scaleout.json`` (a
default run takes about four minutes on a 2-core machine):

1. ingest with 1 worker, then with ``--workers``: the gateways publish as fast as their
   acks allow (``--warmup`` s, then ``--seconds`` s measured): records/s acknowledged and
   the ack latency (first publish to the ack) of the batches published in that time
   (at saturation it is the in-flight limit over the rate); then paced at
   ``--latency-share`` of the 1-worker rate, the same offered load for both: the ack
   latency. CPU seconds of every process meanwhile (``/proc/<pid>/stat``): the workers',
   influxd's, mosquitto's, the PostgreSQL backends' and this process's (``bench``: the
   gateways), and from them records per worker CPU-second, the figure that carries over
   to other machines (a killed process's CPU is not counted).
2. the scale-out run (``--run-seconds``): ``--workers`` workers and ``--scorers`` scorers
   (``EDGEWATCH_CLOUD_SCORER_INTERVAL_S=--scorer-interval``), the gateways at full rate.
   A third of the way in one ingest worker is killed with SIGKILL and a new one started;
   scorer 0 is killed with SIGKILL as soon as its partition has a work order (a pass
   opens them one by one and deletes the requests it handled only at its end), and
   started again. Then every published batch is waited for (acks), the scorers are left
   to handle every pending request and the restarted scorer to finish a scheduled pass.
   Checks: every (gateway, seq) acknowledged in the whole benchmark is in InfluxDB, once
   (each record's point identity maps back to its seq), nothing stored that was not sent;
   at most one work order per open key (one risk order per device, one per device and
   alarm), one alarm order per (device, alarm) whose
   major alarm was acknowledged, none for minor alarms.
3. scorer throughput: ``scheduled_pass`` of :class:`cloud.risk.scorer.RiskScorer` in
   ``--scorers`` spawned processes (partitions ``I/N``) and then in one (``0/1``): a cold
   pass (baselines built) and ``--warm-passes`` warm ones, each after one new window per
   device, every pass started in all processes at once (a barrier); devices/s = the
   fleet's devices / the slowest partition's pass. The partitioned configuration runs
   first, so what InfluxDB caches favours the single scorer.

Everything shares this machine's cores. Not a pass/fail test of speed: it exits 1 only if
a check of phase 2 fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: support

import psycopg  # noqa: E402
from bench_risk_scoring import (  # noqa: E402
    CREATED,
    FAULTY,
    HEALTHY,
    FleetDevice,
    Windows,
    device_rows,
    points_of,
    simulate,
)
from sqlalchemy import Engine, func, select  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402
from support import cloud_stub as stub  # noqa: E402
from support.gateways import (  # noqa: E402
    AlarmEvent,
    Completion,
    LoadShape,
    Login,
    RecordStream,
    SimulatedGateways,
)
from support.influx import RestartableInflux  # noqa: E402
from support.postgres import bench_registry, server_version  # noqa: E402
from support.processes import Process, ingest_worker, scrape  # noqa: E402
from support.risk_sim import DAY, START  # noqa: E402
from support.workorder_world import seed  # noqa: E402

from cloud.auth.gateways import issue_credential  # noqa: E402
from cloud.auth.mosquitto import ServiceAccount, mosquitto_files, write_files  # noqa: E402
from cloud.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from cloud.registry.models import Device, Gateway, Site, SiteKind, new_id, site_shard  # noqa: E402
from cloud.risk.models import RiskRequest  # noqa: E402
from cloud.risk.scorer import RiskScorer, config_from, order_policy  # noqa: E402
from cloud.settings import Settings  # noqa: E402
from cloud.tsdb.base import Point  # noqa: E402
from cloud.tsdb.influx import InfluxStore  # noqa: E402
from cloud.workorders.catalogue import ALARM_PREFIX  # noqa: E402
from cloud.workorders.models import Source, WorkOrder, open_key  # noqa: E402
from models.runtime import RiskRuntime  # noqa: E402

RESULTS = HERE / "results" / "scaleout.json"
INFLUX_DB = "scaleout"
INGEST_USER = "_ingest"
MAJOR = "discharge_temp_high"
MINOR = "suction_pressure_low"
ALARM_PERIOD = 40
"""Windows between two raises of one device's alarm (cleared half-way)."""
PER_SITE = 5
"""Risk devices per site (one gateway each)."""
GATEWAYS_PER_SITE = 4


def say(line: str) -> None:
    print(line, flush=True)


# ---- CPU accounting -------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (``/proc/<pid>/stat``), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pg_backends(pg_url: str) -> list[int]:
    """The PostgreSQL backends connected to the benchmark's database."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(r[0]) for r in rows]


class CpuMeter:
    """CPU seconds of named groups of processes between :meth:`start` and :meth:`stop`;
    the group ``bench`` is this process (in phases 1 and 2, the simulated gateways)."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self._self = 0.0
        self._t = 0.0

    def _read(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, pids in self.groups().items():
            out[name] = {p: c for p in pids if (c := cpu_s(p)) is not None}
        return out

    def start(self) -> None:
        self._before = self._read()
        self._self = time.process_time()
        self._t = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._read()
        wall = time.monotonic() - self._t
        used = {
            name: sum(c - self._before.get(name, {}).get(p, 0.0) for p, c in pids.items())
            for name, pids in after.items()
        }
        used["bench"] = time.process_time() - self._self
        return {"wall_s": round(wall, 2)} | {k: round(v, 2) for k, v in used.items()}


# ---- the registry -----------------------------------------------------------------------------


def balanced_site(client_id: str, name: str, i: int, partitions: int) -> Site:
    """A site whose shard falls in partition ``i % partitions``."""
    while True:
        sid = new_id()
        if site_shard(sid) % partitions == i % partitions:
            return Site(id=sid, client_id=client_id, name=name, kind=SiteKind.HOTEL)


@dataclass
class Fleet:
    client_id: str
    logins: list[Login]
    device_ids: dict[str, dict[str, str]]
    """Gateway → device name → registry id (the ``device`` tag)."""
    risk: list[FleetDevice]
    ingest_password: str
    partitions: dict[int, int] = field(default_factory=dict)
    """Risk devices per partition of ``--scorers``."""


def seed_fleet(
    sessions: sessionmaker[Session], args: argparse.Namespace, created: datetime
) -> Fleet:
    """The work-order world's client, the simulated gateways with a credential each and
    their ``ahu`` devices, and the risk devices (see the module docstring)."""
    world = seed(sessions, devices=0)
    logins: list[Login] = []
    device_ids: dict[str, dict[str, str]] = {}
    n = args.scorers
    with sessions.begin() as s:
        site: Site | None = None
        for g in range(args.gateways):
            if g % GATEWAYS_PER_SITE == 0:
                site = balanced_site(world.client_id, f"ingest site {g // 4}", g // 4, n)
                s.add(site)
                s.flush()
            assert site is not None
            gw = Gateway(id=f"gw-{g:04d}", site_id=site.id)
            s.add(gw)
            s.flush()
            ids = {}
            for d in range(args.devices):
                dev = Device(gateway_id=gw.id, name=f"cc-{d}", asset_type="ahu")
                s.add(dev)
                s.flush()
                ids[dev.name] = dev.id
            device_ids[gw.id] = ids
            issued = issue_credential(s, gw, grace_s=0)
            logins.append(Login(gw.id, issued.username, issued.secret))
    rng = np.random.default_rng(args.seed)
    n_fans = round(args.risk_devices * args.fans)
    kinds = ["fan"] * n_fans + ["compressor"] * (args.risk_devices - n_fans)
    rng.shuffle(kinds)
    every = max(1, round(1 / args.faulty)) if args.faulty > 0 else 0
    seen = {"compressor": 0, "fan": 0}
    risk: list[FleetDevice] = []
    parts: Counter[int] = Counter()
    with sessions.begin() as s:
        gateway = ""
        site_id = ""
        for i, kind in enumerate(kinds):
            if i % PER_SITE == 0:
                site = balanced_site(
                    world.client_id, f"risk site {i // PER_SITE}", i // PER_SITE, n
                )
                s.add(site)
                s.flush()
                site_id = site.id
                gateway = f"rk-{i // PER_SITE:04d}"
                s.add(Gateway(id=gateway, site_id=site_id))
                s.flush()
            k = seen[kind]
            seen[kind] += 1
            healthy, faulty = HEALTHY[kind], FAULTY[kind][0]
            source = faulty if every and k % every == every - 1 else healthy[k % len(healthy)]
            dev = Device(
                gateway_id=gateway, name=f"{kind}-{i}", asset_type=kind, created_at=created
            )
            s.add(dev)
            s.flush()
            tags = {
                "client": world.client_id,
                "site": site_id,
                "gateway": gateway,
                "device": dev.id,
                "group": "slow",
            }
            risk.append(FleetDevice(dev.id, kind, source, tags))
            parts[site_shard(site_id) % n] += 1
    # The world's second client has a fan too: it is scored like the others.
    with sessions.begin() as s:
        fan = s.get_one(Device, world.other_device)
        fan.created_at = created
        gw_row = s.get_one(Gateway, fan.gateway_id)
        porto = s.get_one(Site, gw_row.site_id)
        tags = {
            "client": porto.client_id,
            "site": porto.id,
            "gateway": gw_row.id,
            "device": fan.id,
            "group": "slow",
        }
        risk.append(FleetDevice(fan.id, "fan", HEALTHY["fan"][0], tags))
        parts[porto.shard % n] += 1
    return Fleet(
        world.client_id,
        logins,
        device_ids,
        risk,
        secrets.token_urlsafe(24),
        dict(sorted(parts.items())),
    )


class Alarms:
    """The alarm schedule of the simulated gateways (see the module docstring)."""

    def __init__(self) -> None:
        self.late_from: dict[int, int] = {}
        """Gateway index → the window from which the late alarms run (set before the
        scale-out run's records are encoded)."""

    def __call__(self, g: int, d: int, w: int) -> list[AlarmEvent]:
        out = []
        if d == 0 and g % 4 == 0:
            out += self._toggle(w, 5, MAJOR, "major", 112.0)
        if d == 1 and g % 8 == 2:
            out += self._toggle(w, 10, MINOR, "minor", 1.8)
        late = self.late_from.get(g)
        if d == 2 and g % 4 == 1 and late is not None and w >= late:
            out += self._toggle(w - late, 3, MAJOR, "major", 115.0)
        return out

    @staticmethod
    def _toggle(w: int, at: int, name: str, severity: str, value: float) -> list[AlarmEvent]:
        phase = w % ALARM_PERIOD
        if phase == at:
            return [AlarmEvent(name, severity, "raised", value)]
        if phase == (at + ALARM_PERIOD // 2) % ALARM_PERIOD:
            return [AlarmEvent(name, severity, "cleared", value - 10.0)]
        return []


# ---- the risk devices' windows ----------------------------------------------------------------


@dataclass
class RiskData:
    sources: dict[str, Windows]
    """Each simulated unit's windows, moved to the benchmark's time."""
    rows: list[np.ndarray]
    """Per risk device, its copy of its unit's features."""
    cold_end: float
    """The newest window written before the run (epoch s)."""

    def points(self, fleet: list[FleetDevice], lo: float, hi: float) -> list[Point]:
        return [
            p
            for d, x in zip(fleet, self.rows, strict=True)
            for p in points_of(d, self.sources[d.source], x, lo, hi)
        ]


def risk_windows(
    work: Path, args: argparse.Namespace, now: float
) -> tuple[dict[str, Windows], float, float]:
    """The simulated units' windows moved so that the last one before the run ends
    ``now - 600``; the newest such window end, and the shift (s)."""
    at_day = args.baseline_days + 5
    hours = 2 * args.warm_passes + 2
    sim = simulate(work / "sim", at_day + hours / 24 + 0.5, args.baseline_days + 1)
    ends = sim[HEALTHY["compressor"][0]].t
    cold_sim = float(ends[np.searchsorted(ends, START + at_day * DAY)])
    shift = math.floor(now - 600.0 - cold_sim)
    moved = {k: Windows(w.t + shift, w.x, w.names) for k, w in sim.items()}
    return moved, cold_sim + shift, shift


# ---- processes --------------------------------------------------------------------------------


def stored_batches(port: int) -> float:
    text = scrape(port) or ""
    found = re.search(
        r'^edgewatch_ingest_batches_total\{outcome="stored",transport="mqtt"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


@dataclass
class Worker:
    name: str
    port: int
    proc: Process

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid


class Cloud:
    """The cloud processes of the benchmark, started and killed by name."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.workers: list[Worker] = []
        self.scorers: dict[str, Process] = {}
        self._serial = 0

    def add_worker(self) -> Worker:
        self._serial += 1
        name = f"ingest-{self._serial}"
        port = stub.free_port()
        proc = ingest_worker(self.env, self.logs / f"{name}.log", port)
        worker = Worker(name, port, proc)
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> dict[str, float]:
        """SIGTERM every worker; the batches each had stored (its metrics)."""
        counts = {w.name: stored_batches(w.port) for w in self.workers}
        for w in self.workers:
            w.proc.stop()
        self.workers = []
        return counts

    def start_scorer(self, name: str, partition: int, partitions: int) -> Process:
        argv = [
            sys.executable,
            "-m",
            "cloud.cli",
            "-v",
            "scorer",
            "--partition",
            f"{partition}/{partitions}",
        ]
        proc = Process(argv, self.logs / f"{name}.log", self.env)
        proc.start()
        self.scorers[name] = proc
        return proc

    def scorer_log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_scorer_started(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "every" not in self.scorer_log(name):
            proc = self.scorers[name].proc
            assert proc is not None and proc.poll() is None, self.scorer_log(name)[-3000:]
            assert time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.2)

    def stop_all(self) -> None:
        for w in self.workers:
            w.proc.stop()
        for p in self.scorers.values():
            p.stop()


PASS_RE = re.compile(
    r"scheduled pass: (\d+) devices, (\d+) scored, (\d+) without data, "
    r"orders (\{.*?\}), ([0-9.]+) s"
)


def scheduled_passes(log: str) -> list[dict[str, Any]]:
    return [
        {
            "devices": int(m[1]),
            "scored": int(m[2]),
            "no_data": int(m[3]),
            "orders": m[4],
            "seconds": float(m[5]),
        }
        for m in PASS_RE.finditer(log)
    ]


# ---- phase 1: ingest, 1 worker against N ------------------------------------------------------


def top_up(streams: Sequence[RecordStream], gws: SimulatedGateways | None, records: float) -> float:
    """Encode batches so that every gateway has ``records / len(streams)`` unpublished
    records at least; the seconds it took."""
    t0 = time.perf_counter()
    per = math.ceil(records / len(streams))
    nexts = {g.login.gateway: g.next for g in gws.gateways} if gws else {}
    for s in streams:
        left = sum(b.records for b in s.batches[nexts.get(s.gateway, 0) :])
        if left < per:
            s.extend(per - left)
    return time.perf_counter() - t0


def measure_ingest(
    label: str,
    cloud: Cloud,
    gws: SimulatedGateways,
    streams: Sequence[RecordStream],
    meter_groups: Callable[[], dict[str, list[int]]],
    args: argparse.Namespace,
    paced_rate: float | None,
    expect_rate: float,
) -> dict[str, Any]:
    """Saturation, then paced latency, with the workers ``cloud`` runs."""
    top_up(
        streams,
        gws,
        expect_rate * (args.warmup + args.seconds) * 1.3
        + (paced_rate or expect_rate / 2) * (1 + args.seconds) * 1.2,
    )
    gws.run(args.warmup)
    meter = CpuMeter(meter_groups)
    meter.start()
    w = gws.run(args.seconds)
    cpu = meter.stop()
    if not gws.drain(args.ack_timeout * 3 + 30):
        raise RuntimeError(f"{label}: {gws.inflight()} batches still unacknowledged")
    sat = gws.window(w.start, w.end)
    rate = paced_rate if paced_rate is not None else sat["records_per_s"] * args.latency_share
    gws.run(1.0, rate=rate)
    meter.start()
    p = gws.run(args.seconds, rate=rate)
    paced_cpu = meter.stop()
    if not gws.drain(args.ack_timeout * 3 + 30):
        raise RuntimeError(f"{label}: {gws.inflight()} batches still unacknowledged")
    paced = gws.window(p.start, p.end)
    paced["offered_records_per_s"] = rate
    paced["held_ticks"] = p.held
    out = {
        "saturation": sat | {"cpu_s": cpu},
        "paced": paced | {"cpu_s": paced_cpu},
        "exhausted_gateways": len(gws.exhausted()),
    }
    for group, key in (
        ("ingest", "records_per_worker_cpu_s"),
        ("influxd", "records_per_influxd_cpu_s"),
    ):
        if cpu.get(group):
            out[key] = sat["records_acked"] / cpu[group]
    say(
        f"{label}: {sat['records_per_s']:,.0f} records/s acknowledged at saturation "
        f"({sat['batches_per_s']:,.0f} batches/s; ack p50 {sat['p50_ms']:.0f} ms, "
        f"p99 {sat['p99_ms']:.0f} ms); at "
        f"{rate:,.0f} records/s offered: p50 {paced['p50_ms']:.0f} ms, p99 "
        f"{paced['p99_ms']:.0f} ms, max {paced['max_ms']:.0f} ms; CPU s in "
        f"{cpu['wall_s']:.0f} s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if k != "wall_s")
        + f"; {out.get('records_per_worker_cpu_s', 0):,.0f} records per worker CPU-second, "
        f"{out.get('records_per_influxd_cpu_s', 0):,.0f} per influxd CPU-second"
    )
    return out


# ---- phase 2: the scale-out run with kills ----------------------------------------------------


@dataclass
class Chaos:
    """Kills and restarts during the run, on a thread of its own (starting a worker takes
    a few seconds, which must not stall the gateways)."""

    cloud: Cloud
    sessions: sessionmaker[Session]
    args: argparse.Namespace
    events: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    start: float = 0.0
    starting: threading.Thread | None = None

    def note(self, what: str, **extra: Any) -> None:
        t = round(time.monotonic() - self.start, 1)
        self.events.append({"t_s": t, "what": what} | extra)
        say(f"  {t:5.1f} s: {what}")

    def orders_in(self, partition: int) -> int:
        n = self.args.scorers
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count(WorkOrder.id))
                    .join(Site, WorkOrder.site_id == Site.id)
                    .where(Site.shard % n == partition)
                )
                or 0
            )

    def requests_in(self, partition: int) -> int:
        n = self.args.scorers
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count(RiskRequest.id)).where(RiskRequest.shard % n == partition)
                )
                or 0
            )

    def _replace(self) -> None:
        new = self.cloud.add_worker()
        self.note(f"started {new.name}")

    def run(self) -> None:
        run_s = self.args.run_seconds
        worker_at = run_s / 3
        scorer_by = run_s / 2
        worker_done = scorer_done = False
        while not self.stop.wait(0.25) and not (worker_done and scorer_done):
            t = time.monotonic() - self.start
            if not worker_done and t >= worker_at:
                victim = self.cloud.workers[0]
                before = stored_batches(victim.port)
                victim.proc.kill()
                self.note(
                    f"kill -9 {victim.name} (pid {victim.pid}) after it stored "
                    f"{before:.0f} batches",
                    victim=victim.name,
                    stored_batches=before,
                )
                self.cloud.workers.remove(victim)
                # Starting a worker takes seconds (it answers on its metrics port first):
                # not on this thread, which watches the scorer meanwhile.
                self.starting = threading.Thread(target=self._replace, name="replace-worker")
                self.starting.start()
                worker_done = True
            if not scorer_done and t >= 3.0:
                orders = self.orders_in(0)
                if orders > 0 or t >= scorer_by:
                    log = self.cloud.scorer_log("scorer-0")
                    passes = len(scheduled_passes(log))
                    self.cloud.scorers["scorer-0"].kill()
                    pending = self.requests_in(0)
                    self.note(
                        f"kill -9 scorer-0 with {orders} orders in its partition, "
                        f"{passes} scheduled passes finished, {pending} requests pending",
                        orders_in_partition=orders,
                        passes_finished=passes,
                        requests_pending=pending,
                    )
                    self.cloud.start_scorer("scorer-0b", 0, self.args.scorers)
                    self.note("started scorer-0b (partition 0 again)")
                    scorer_done = True


def scaleout_run(
    cloud: Cloud,
    gws: SimulatedGateways,
    engine: Engine,
    pg_url: str,
    meter_groups: Callable[[], dict[str, list[int]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    sessions = make_sessionmaker(engine)
    for i in range(args.scorers):
        cloud.start_scorer(f"scorer-{i}", i, args.scorers)
    for i in range(args.scorers):
        cloud.wait_scorer_started(f"scorer-{i}")
    chaos = Chaos(cloud, sessions, args)
    chaos.start = time.monotonic()
    thread = threading.Thread(target=chaos.run, name="chaos")
    thread.start()
    meter = CpuMeter(meter_groups)
    meter.start()
    try:
        w = gws.run(args.run_seconds)
    finally:
        chaos.stop.set()
        thread.join()
        if chaos.starting is not None:
            chaos.starting.join()
    cpu = meter.stop()
    chaos.note("load stopped; waiting for every published batch's ack")
    drained = gws.drain(args.ack_timeout * 4 + 60)
    chaos.note(f"acks: {'all in' if drained else f'{gws.inflight()} batches missing'}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as s:
            pending = int(s.scalar(select(func.count(RiskRequest.id))) or 0)
        restarted = scheduled_passes(cloud.scorer_log("scorer-0b"))
        if pending == 0 and restarted:
            break
        time.sleep(0.5)
    chaos.note(f"pending risk requests {pending}; scorer-0b passes {len(restarted)}")
    own = engine.pool
    backends = len(pg_backends(pg_url))
    cloud_backends = backends - own.checkedin() - own.checkedout()
    chaos.note(
        f"{cloud_backends} PostgreSQL connections held by {len(cloud.workers)} ingest workers "
        f"and {len(cloud.scorers) - 1} scorers"
    )
    total = gws.window(w.start, w.end)
    say(
        f"scale-out run: {total['records_per_s']:,.0f} records/s acknowledged over "
        f"{total['seconds']:.0f} s (ack p50 {total['p50_ms']:.0f} ms, p99 "
        f"{total['p99_ms']:.0f} ms; {total['batches_resent']} batches sent again after "
        f"{args.ack_timeout:.0f} s without an ack, the others p99 "
        f"{total['not_resent']['p99_ms']:.0f} ms)"
    )
    return {
        "_start": chaos.start,
        "ingest": total | {"cpu_s": cpu},
        "events": chaos.events,
        "drained": drained,
        "pending_requests": pending,
        "resends_total": gws.resends,
        "records_rejected": len(gws.rejected),
        "unexpected_acks": gws.unexpected_acks,
        "scorer_passes": {n: scheduled_passes(cloud.scorer_log(n)) for n in cloud.scorers},
        "postgres_connections": {
            "ingest_workers": len(cloud.workers),
            "scorers": len(cloud.scorers) - 1,
            "held": cloud_backends,
        },
    }


# ---- checks -----------------------------------------------------------------------------------

MEASUREMENT_FIELDS = {
    "features": "n_samples",
    "score": "score",
    "energy": "energy",
    "alarm": "state",
    "health": "body",
}


def stored_series(url: str) -> dict[tuple[str, str, str], list[int]]:
    """``(measurement, gateway, device tag)`` → the timestamps (ns) InfluxDB holds for the
    simulated gateways."""
    out: dict[tuple[str, str, str], list[int]] = {}
    with httpx.Client(timeout=300) as http:
        for measurement, field_ in MEASUREMENT_FIELDS.items():
            q = (  # InfluxQL of constant names
                f'SELECT "{field_}" FROM "{measurement}" WHERE "gateway" =~ /^gw-/ '  # noqa: S608
                'GROUP BY "gateway", "device"'
            )
            params = {
                "db": INFLUX_DB,
                "epoch": "ns",
                "chunked": "true",
                "chunk_size": "50000",
                "q": q,
            }
            with http.stream("POST", f"{url}/query", data=params) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if not line.strip():
                        continue
                    for result in json.loads(line).get("results", []):
                        if "error" in result:
                            raise RuntimeError(f"{measurement}: {result['error']}")
                        for series in result.get("series", []):
                            tags = series.get("tags", {})
                            key = (measurement, tags.get("gateway", ""), tags.get("device", ""))
                            out.setdefault(key, []).extend(int(v[0]) for v in series["values"])
    return out


def _compare(
    series: dict[tuple[str, str, str], list[int]],
    streams: Sequence[RecordStream],
    fleet: Fleet,
    acked: dict[str, set[int]],
) -> dict[str, Any]:
    points = sum(len(v) for v in series.values())
    found: dict[str, set[int]] = {}
    extra = twice = 0
    claimed: set[tuple[str, str, str]] = set()
    for s in streams:
        ids = fleet.device_ids[s.gateway]
        seen = found.setdefault(s.gateway, set())
        for (measurement, device), ts_map in s.identities.items():
            key = (measurement, s.gateway, ids.get(device, device))  # health: no device
            claimed.add(key)
            for t in series.get(key, []):
                seq = ts_map.get(t)
                if seq is None:
                    extra += 1
                elif seq in seen:
                    twice += 1
                else:
                    seen.add(seq)
    extra += sum(len(v) for k, v in series.items() if k not in claimed)
    missing = {g: acked[g] - found.get(g, set()) for g in acked}
    lost = sum(len(v) for v in missing.values())
    detail: Counter[str] = Counter()
    examples = []
    for s in streams:
        gone = missing.get(s.gateway, set())
        if not gone:
            continue
        for (measurement, device), ts_map in s.identities.items():
            for t, seq in ts_map.items():
                if seq in gone:
                    detail[measurement] += 1
                    if len(examples) < 20:
                        examples.append([s.gateway, seq, measurement, device, t])
    kept = 0
    missing_seqs: dict[str, list[int]] = {}
    for g, gone_seqs in missing.items():
        if gone_seqs and kept < MAX_MISSING_KEPT:
            missing_seqs[g] = sorted(gone_seqs)[: MAX_MISSING_KEPT - kept]
            kept += len(missing_seqs[g])
    return {
        "records_acked": sum(len(v) for v in acked.values()),
        "points_stored": points,
        "acked_missing": lost,
        "missing_seqs": missing_seqs,
        "missing_by_measurement": dict(detail),
        "missing_examples": examples,
        "stored_twice": twice,
        "stored_not_sent": extra,
        "stored_not_acked": sum(len(found.get(g, set()) - acked[g]) for g in acked),
    }


MAX_MISSING_KEPT = 5000
"""Missing seqs kept in the JSON (all of them, up to this many)."""


def describe_missing(
    result: dict[str, Any],
    streams: Sequence[RecordStream],
    completions: dict[tuple[str, int], Completion],
    run_start: float,
) -> dict[str, Any]:
    """Where the missing seqs were: their batches (whole or partly missing, sent again or
    not, acknowledged when, relative to the start of the scale-out run), and their
    timestamps (hours after each gateway's first window)."""
    by_stream = {s.gateway: s for s in streams}
    per_batch: Counter[tuple[str, int]] = Counter()
    hours: list[float] = []
    for gateway, seqs in result["missing_seqs"].items():
        stream = by_stream[gateway]
        wanted = set(seqs)
        for ts_map in stream.identities.values():
            for t, seq in ts_map.items():
                if seq in wanted:
                    hours.append((t / 1e9 - stream.t0) / 3600)
        for seq in seqs:
            per_batch[(gateway, stream.batch_of(seq))] += 1
    batches = []
    for (gateway, index), n in sorted(per_batch.items()):
        batch = by_stream[gateway].batches[index]
        done = completions.get((gateway, index))
        batches.append(
            {
                "gateway": gateway,
                "batch": index,
                "seqs": [batch.first, batch.last],
                "missing": n,
                "records": batch.records,
                "resends": done.resends if done else None,
                "first_sent_s": round(done.first_sent - run_start, 2) if done else None,
                "acked_s": round(done.done - run_start, 2) if done else None,
            }
        )
    acked_at = [b["acked_s"] for b in batches if b["acked_s"] is not None]
    return {
        "batches": len(batches),
        "whole_batches": sum(b["missing"] == b["records"] for b in batches),
        "resent_batches": sum(bool(b["resends"]) for b in batches),
        "gateways": len({b["gateway"] for b in batches}),
        "acked_s_range": [min(acked_at), max(acked_at)] if acked_at else None,
        "ts_hours_range": [round(min(hours), 3), round(max(hours), 3)] if hours else None,
        "per_batch": batches[:100],
    }


def look_up(url: str, fleet: Fleet, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The missing examples queried one by one, by series and exact time (whether a
    narrow query finds what the whole-series query did not)."""
    out = []
    with httpx.Client(timeout=60) as http:
        for gateway, seq, measurement, device, ts in result["missing_examples"]:
            device_id = fleet.device_ids[gateway].get(device, device)
            q = (  # InfluxQL of constant names and the benchmark's own ids
                f'SELECT * FROM "{measurement}" WHERE "gateway" = \'{gateway}\' '  # noqa: S608
                f"AND \"device\" = '{device_id}' AND time >= {ts - 1000} AND time <= {ts + 1000}"
            )
            r = http.post(f"{url}/query", data={"db": INFLUX_DB, "epoch": "ns", "q": q})
            series = r.json()["results"][0].get("series", [])
            out.append(
                {
                    "gateway": gateway,
                    "seq": seq,
                    "measurement": measurement,
                    "ts_ns": ts,
                    "found": bool(series),
                }
            )
    return out


def check_store(
    influx_url: str,
    streams: Sequence[RecordStream],
    fleet: Fleet,
    acked: dict[str, set[int]],
    influx: RestartableInflux | None = None,
) -> dict[str, Any]:
    """Every acknowledged (gateway, seq) stored once, nothing stored that was not sent.
    A point found missing is looked for again twice, 15 s apart (a query that misses
    points which a later one finds is InfluxDB's, not a loss); if some still are, influxd
    is restarted (``influx``: it reads its WAL again) and they are looked for once more
    (found then: InfluxDB had them in its WAL but not in what it queried)."""
    attempts = []
    for attempt in range(3):
        if attempt:
            time.sleep(15.0)
        t0 = time.perf_counter()
        series = stored_series(influx_url)
        result = _compare(series, streams, fleet, acked)
        result["query_s"] = round(time.perf_counter() - t0, 1)
        attempts.append(result)
        if not result["acked_missing"]:
            break
    if attempts[-1]["acked_missing"]:
        attempts[-1]["missing_looked_up"] = look_up(influx_url, fleet, attempts[-1])
    if attempts[-1]["acked_missing"] and influx is not None:
        influx.stop()
        influx.start()
        again = _compare(stored_series(influx_url), streams, fleet, acked)
        attempts[-1]["after_influxd_restart"] = {
            k: again[k]
            for k in ("points_stored", "acked_missing", "stored_twice", "stored_not_sent")
        }
    out = attempts[-1] | {
        "queries": [
            {k: a[k] for k in ("points_stored", "acked_missing", "query_s")} for a in attempts
        ]
    }
    out["acked_and_stored"] = out["records_acked"] - out["acked_missing"]
    out["ok"] = not (out["acked_missing"] or out["stored_twice"] or out["stored_not_sent"])
    return out


def check_orders(
    sessions: sessionmaker[Session],
    streams: Sequence[RecordStream],
    fleet: Fleet,
    acked: dict[str, set[int]],
) -> dict[str, Any]:
    """At most one order per open key (a device's risk, whatever fault it names; a
    device's alarm: :func:`cloud.workorders.models.open_key`; nothing closes orders in the
    benchmark); one alarm order per (device, alarm) whose major alarm was acknowledged,
    none for minor alarms."""
    with sessions() as s:
        rows = s.execute(select(WorkOrder.device_id, WorkOrder.fault, WorkOrder.source)).all()
    per_key = Counter((r.device_id, r.fault) for r in rows)
    per_open_key = Counter(open_key(r.device_id, r.fault, Source(r.source)) for r in rows)
    doubled = {k: n for k, n in per_open_key.items() if n > 1}
    expected: set[tuple[str, str]] = set()
    minor: set[tuple[str, str]] = set()
    for st in streams:
        ids = fleet.device_ids[st.gateway]
        for seq, device, event in st.alarm_records:
            if event.state != "raised" or seq not in acked[st.gateway]:
                continue
            key = (ids[device], ALARM_PREFIX + event.name)
            (expected if event.severity == "major" else minor).add(key)
    alarm_orders = {k for k in per_key if k[1].startswith(ALARM_PREFIX)}
    risk_orders = Counter(f for (_, f) in per_key if not f.startswith(ALARM_PREFIX))
    return {
        "orders": len(rows),
        "alarm_orders": len(alarm_orders),
        "alarm_orders_expected": len(expected),
        "alarm_orders_missing": len(expected - alarm_orders),
        "alarm_orders_unexpected": len(alarm_orders - expected),
        "minor_alarm_orders": len(alarm_orders & minor),
        "risk_orders_by_fault": dict(risk_orders),
        "doubled": doubled,
        "ok": not doubled and expected == alarm_orders and not (alarm_orders & minor),
    }


# ---- phase 3: scorer throughput, N partitions against 1 ---------------------------------------


def _scorer_child(
    conf: dict[str, Any],
    partition: int,
    partitions: int,
    clocks: list[float],
    barrier: Any,
    results: Any,
) -> None:
    """One partition's scheduled passes at ``clocks``, each between two barrier waits."""
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(**conf)
    engine = make_engine(settings.database_url)
    store = InfluxStore.from_settings(settings)
    clock = [clocks[0]]
    try:
        scorer = RiskScorer(
            make_sessionmaker(engine),
            store,
            RiskRuntime.load(settings.models_dir),
            order_policy(settings),
            config_from(settings, partition, partitions),
            clock=lambda: clock[0],
        )
        scorer.devices()  # connected before the first pass
        for k, at in enumerate(clocks):
            clock[0] = at
            barrier.wait()
            stats = scorer.scheduled_pass()
            results.put(
                (
                    partition,
                    k,
                    stats.devices,
                    stats.scored,
                    stats.learning,
                    stats.no_data,
                    stats.failed,
                    dict(stats.triggers),
                    stats.seconds,
                )
            )
            barrier.wait()
    finally:
        store.close()
        engine.dispose()


def scorer_throughput(
    partitions: int,
    conf: dict[str, Any],
    data: RiskData,
    fleet: Fleet,
    store: InfluxStore,
    first_window: int,
    pg_url: str,
    influx_pid: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A cold pass and ``--warm-passes`` warm ones in ``partitions`` processes; new
    windows ``first_window + 1 ..`` hours after the cold end before each warm pass."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(partitions + 1)
    results = ctx.Queue()
    base = data.cold_end + first_window * 3600.0
    clocks = [base + k * 3600.0 + 60.0 for k in range(args.warm_passes + 1)]
    procs = [
        ctx.Process(
            target=_scorer_child,
            args=(conf, i, partitions, clocks, barrier, results),
            name=f"scorer-{i}-of-{partitions}",
        )
        for i in range(partitions)
    ]
    for p in procs:
        p.start()
    passes = []
    try:
        for k in range(args.warm_passes + 1):
            if k:
                new = data.points(fleet.risk, base + (k - 1) * 3600.0, base + k * 3600.0)
                store.write(new)
            meter = CpuMeter(
                lambda: {
                    "scorers": [p.pid for p in procs if p.pid is not None],
                    "influxd": [influx_pid],
                    "postgres": pg_backends(pg_url),
                }
            )
            meter.start()
            barrier.wait(timeout=300)
            t0 = time.perf_counter()
            barrier.wait(timeout=600)
            wall = time.perf_counter() - t0
            cpu = meter.stop()
            rows = [results.get(timeout=30) for _ in procs]
            devices = sum(r[2] for r in rows)
            kind = "cold" if k == 0 else "warm"
            triggers: Counter[str] = Counter()
            for r in rows:
                triggers.update(r[7])
            passes.append(
                {
                    "kind": kind,
                    "devices": devices,
                    "seconds": round(wall, 3),
                    "devices_per_s": round(devices / wall, 1),
                    "scored": sum(r[3] for r in rows),
                    "learning": sum(r[4] for r in rows),
                    "no_data": sum(r[5] for r in rows),
                    "failed": sum(r[6] for r in rows),
                    "triggers": dict(triggers),
                    "per_partition": [
                        {"partition": r[0], "devices": r[2], "seconds": round(r[8], 3)}
                        for r in sorted(rows)
                    ],
                    "cpu_s": cpu,
                    "devices_per_scorer_cpu_s": round(devices / max(cpu["scorers"], 1e-9), 1),
                }
            )
            say(
                f"  {partitions} scorer(s), {kind} pass: {devices} devices in {wall:.2f} s = "
                f"{devices / wall:,.1f} devices/s; CPU s: "
                + ", ".join(f"{k2} {v:.1f}" for k2, v in cpu.items() if k2 != "wall_s")
                + f" ({passes[-1]['devices_per_scorer_cpu_s']:,.0f} devices per scorer CPU-second)"
            )
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    return {"partitions": partitions, "passes": passes}


def array_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """The bytes of the numpy arrays ``obj`` holds (dataclasses, objects, containers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(array_bytes(v, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(array_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(array_bytes(v, seen) for v in vars(obj).values())
    if hasattr(obj, "__slots__"):
        return sum(array_bytes(getattr(obj, s, None), seen) for s in obj.__slots__)
    return 0


def baseline_bytes(days: Sequence[float]) -> dict[str, dict[str, int]]:
    """What a scorer caches per device: the numpy arrays of a device's baseline, per asset
    type and baseline length (hourly 12-h windows: the first ends 12 h after the start)."""
    runtime = RiskRuntime.load(Settings().models_dir)
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, int]] = {}
    for asset in runtime.asset_types:
        n = len(runtime.spec(asset).feature_names)
        out[asset] = {
            f"{d:g}d": array_bytes(
                runtime.baseline(asset, rng.normal(size=(round(d * 24 - 11), n)))
            )
            for d in days
        }
    return out


def table_bytes(engine: Engine, table: str) -> dict[str, float]:
    """Rows of a registry table and its size on disk with indexes, per row."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)  # noqa: S608
        size = int(conn.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar() or 0)
    return {"rows": rows, "bytes": size, "bytes_per_row": round(size / rows, 1) if rows else 0.0}


# ---- main -------------------------------------------------------------------------------------


STREAM_START_BACK_S = 7 * 86_400.0
"""How far back the gateways' records begin."""


@dataclass
class Outcome:
    result: dict[str, Any]
    ok: bool


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workers", type=int, default=3, help="ingest workers scaled out to")
    p.add_argument("--scorers", type=int, default=2, help="scorer partitions scaled out to")
    p.add_argument("--gateways", type=int, default=40)
    p.add_argument("--devices", type=int, default=4, help="per gateway")
    p.add_argument(
        "--shape",
        choices=("bench", "agent"),
        default="bench",
        help="the records: bench_ingest.py's (default) or the agent's default poll groups",
    )
    p.add_argument("--batch", type=int, default=50, help="records per MQTT message")
    p.add_argument("--max-inflight", type=int, default=8, help="per gateway")
    p.add_argument("--ack-timeout", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=15.0, help="each measured ingest window")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--latency-share", type=float, default=0.5)
    p.add_argument("--run-seconds", type=float, default=60.0, help="the run with kills")
    p.add_argument("--scorer-interval", type=float, default=30.0)
    p.add_argument("--risk-devices", type=int, default=100)
    p.add_argument("--fans", type=float, default=0.5)
    p.add_argument("--faulty", type=float, default=0.05)
    p.add_argument("--baseline-days", type=float, default=7.0)
    p.add_argument("--warm-passes", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--registry-url", help="an empty PostgreSQL database (default: a fresh one)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--logs", type=Path, help="copy every process's log into this folder")
    return p.parse_args()


def run(args: argparse.Namespace, work: Path, pg_url: str) -> Outcome:
    logs = work / "logs"
    logs.mkdir()
    pg_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with contextlib.ExitStack() as stack:
        t0 = time.perf_counter()
        now = time.time()
        sources, cold_end, shift = risk_windows(work, args, now)
        say(f"simulated the risk units' windows in {time.perf_counter() - t0:.1f} s")

        migrate(pg_url)
        engine = make_engine(pg_url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        version = server_version(sessions)
        fleet = seed_fleet(sessions, args, CREATED + timedelta(seconds=shift))
        with sessions.begin() as s:
            account = ServiceAccount.ingest(INGEST_USER, fleet.ingest_password)
            files = mosquitto_files(s, [account])
        write_files(files, work / "mosquitto.passwd", work / "mosquitto.acl")

        influx = RestartableInflux(work / "influx")
        influx.start()
        stack.callback(influx.stop)
        broker = stub.Broker(
            work, password_file=work / "mosquitto.passwd", acl_file=work / "mosquitto.acl"
        )
        broker.start()
        stack.callback(broker.stop)
        settings = Settings(
            database_url=pg_url,
            tsdb="influxdb",
            influx_url=influx.url,
            influx_database=INFLUX_DB,
            scorer_baseline_days=args.baseline_days,
        )
        store = InfluxStore.from_settings(settings)
        stack.callback(store.close)
        rng = np.random.default_rng(args.seed)
        data = RiskData(
            sources, [device_rows(sources[d.source], rng) for d in fleet.risk], cold_end
        )
        t0 = time.perf_counter()
        points = data.points(fleet.risk, 0.0, cold_end)
        for i in range(0, len(points), 5000):
            store.write(points[i : i + 5000])
        preload_s = time.perf_counter() - t0
        say(
            f"registry: {version}; {args.gateways} gateways × {args.devices} devices with "
            f"credentials, {len(fleet.risk)} risk devices (per partition of {args.scorers}: "
            f"{fleet.partitions}); {len(points):,} feature windows written in {preload_s:.1f} s"
        )

        shape = LoadShape(kind=args.shape, devices=args.devices, batch=args.batch)
        alarms = Alarms()
        # A week back: a fast run produces more than a day of every gateway's windows,
        # and a stream that passes the clock is refused (future_ts).
        streams = [
            RecordStream(f"gw-{g:04d}", g, shape, now - STREAM_START_BACK_S, alarms)
            for g in range(args.gateways)
        ]
        env = os.environ | {
            "EDGEWATCH_CLOUD_DATABASE_URL": pg_url,
            "EDGEWATCH_CLOUD_TSDB": "influxdb",
            "EDGEWATCH_CLOUD_INFLUX_URL": influx.url,
            "EDGEWATCH_CLOUD_INFLUX_DATABASE": INFLUX_DB,
            "EDGEWATCH_CLOUD_MQTT_PORT": str(broker.port),
            "EDGEWATCH_CLOUD_MQTT_USERNAME": INGEST_USER,
            "EDGEWATCH_CLOUD_MQTT_PASSWORD": fleet.ingest_password,
            "EDGEWATCH_CLOUD_SCORER_BASELINE_DAYS": str(args.baseline_days),
            "EDGEWATCH_CLOUD_SCORER_INTERVAL_S": str(args.scorer_interval),
        }
        cloud = Cloud(env, logs)
        stack.callback(cloud.stop_all)
        gws = SimulatedGateways(
            broker.host,
            broker.port,
            fleet.logins,
            streams,
            max_inflight=args.max_inflight,
            ack_timeout_s=args.ack_timeout,
        )
        gws.connect()
        stack.callback(gws.close)

        def groups() -> dict[str, list[int]]:
            assert influx.proc is not None and broker.proc is not None
            return {
                "ingest": [w.pid for w in list(cloud.workers)],
                "scorers": [p.proc.pid for p in list(cloud.scorers.values()) if p.proc],
                "influxd": [influx.proc.pid],
                "mosquitto": [broker.proc.pid],
                "postgres": pg_backends(pg_url),
            }

        say("phase 1: ingest, 1 worker, then more")
        cloud.add_worker()
        one = measure_ingest("1 worker", cloud, gws, streams, groups, args, None, 15_000.0)
        one_rate = one["saturation"]["records_per_s"]
        paced = one["paced"]["offered_records_per_s"]
        while len(cloud.workers) < args.workers:
            cloud.add_worker()
        label = f"{args.workers} workers"
        many = measure_ingest(
            label, cloud, gws, streams, groups, args, paced, max(15_000.0, 2.5 * one_rate)
        )
        many_rate = many["saturation"]["records_per_s"]
        say(f"{args.workers} workers / 1 worker: {many_rate / one_rate:.2f}x records/s")

        say(f"phase 2: {args.workers} ingest workers, {args.scorers} scorers, kills")
        alarms.late_from = {g: s.windows for g, s in enumerate(streams)}
        top_up(streams, gws, many_rate * args.run_seconds * 1.3)
        run_result = scaleout_run(cloud, gws, engine, pg_url, groups, args)
        worker_batches = cloud.stop_workers()
        for proc in cloud.scorers.values():
            proc.stop()
        cloud.scorers = {}
        run_start = run_result.pop("_start")
        acked = gws.acked()
        completions = gws.completion_of()
        gws.close()
        stored = check_store(influx.url, streams, fleet, acked, influx)
        if stored["acked_missing"]:
            stored["missing_where"] = describe_missing(stored, streams, completions, run_start)
        orders = check_orders(sessions, streams, fleet, acked)
        say(
            f"store: {stored['records_acked']:,} records acknowledged, "
            f"{stored['acked_and_stored']:,} of them stored, {stored['acked_missing']} missing, "
            f"{stored['stored_twice']} stored twice, {stored['stored_not_sent']} stored but "
            f"never sent ({stored['points_stored']:,} points of the gateways in InfluxDB); "
            f"{run_result['records_rejected']} records rejected by ingest"
        )
        if stored["acked_missing"]:
            where = stored["missing_where"]
            restart = stored.get("after_influxd_restart", {})
            say(
                f"missing: {stored['missing_by_measurement']} in {where['batches']} batches "
                f"({where['whole_batches']} whole, {where['resent_batches']} sent again) of "
                f"{where['gateways']} gateways, acknowledged {where['acked_s_range']} s into "
                f"the run; per query {[q['acked_missing'] for q in stored['queries']]}; "
                f"after an influxd restart {restart.get('acked_missing', '-')}"
            )
        say(
            f"work orders: {orders['orders']} ({orders['alarm_orders']} on alarms, "
            f"{orders['alarm_orders_expected']} expected; risk {orders['risk_orders_by_fault']}); "
            f"doubled: {orders['doubled'] or 'none'}; on minor alarms: "
            f"{orders['minor_alarm_orders']}"
        )

        say(f"phase 3: scorer throughput, {args.scorers} partitions, then 1")
        conf = {
            "database_url": pg_url,
            "tsdb": "influxdb",
            "influx_url": influx.url,
            "influx_database": INFLUX_DB,
            "scorer_baseline_days": args.baseline_days,
        }
        assert influx.proc is not None
        scoring = [
            scorer_throughput(n, conf, data, fleet, store, first, pg_url, influx.proc.pid, args)
            for n, first in ((args.scorers, 0), (1, args.warm_passes))
        ]
        baselines = baseline_bytes(sorted({args.baseline_days, 14.0}))
        scores_table = table_bytes(engine, "risk_scores")
        say(
            "a cached baseline holds "
            + "; ".join(
                f"{asset} " + ", ".join(f"{n / 1024:,.0f} KiB ({d})" for d, n in sizes.items())
                for asset, sizes in baselines.items()
            )
            + f"; risk_scores: {scores_table['rows']} rows, "
            f"{scores_table['bytes_per_row']:,.0f} bytes a row with its indexes"
        )

    def warm(r: dict[str, Any]) -> float:
        rates = [p["devices_per_s"] for p in r["passes"] if p["kind"] == "warm"]
        return float(np.median(rates)) if rates else 0.0

    def cold(r: dict[str, Any]) -> float:
        return float(r["passes"][0]["devices_per_s"])

    say(
        f"scorers: {args.scorers} partitions {cold(scoring[0]):.1f} devices/s cold, "
        f"{warm(scoring[0]):.1f} warm; 1 partition {cold(scoring[1]):.1f} cold, "
        f"{warm(scoring[1]):.1f} warm ({warm(scoring[0]) / max(warm(scoring[1]), 1e-9):.2f}x warm)"
    )
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "registry": version,
        "risk_devices_per_partition": fleet.partitions,
        "ingest": {
            "1_worker": one,
            f"{args.workers}_workers": many,
            "speedup": many_rate / one_rate if one_rate else 0.0,
        },
        "scaleout_run": run_result
        | {"worker_batches_stored": worker_batches, "store": stored, "orders": orders},
        "scoring": {
            f"{args.scorers}_partitions": scoring[0],
            "1_partition": scoring[1],
            "warm_speedup": warm(scoring[0]) / warm(scoring[1]) if warm(scoring[1]) else 0.0,
            "cold_speedup": cold(scoring[0]) / cold(scoring[1]) if cold(scoring[1]) else 0.0,
            "baseline_bytes_per_device": baselines,
            "risk_scores_table": scores_table,
        },
    }
    # Every record of the simulated gateways is good: a rejection means the streams (which
    # start a week back) outran the clock and ingest refused them as future_ts, and the
    # acknowledged rate above would count records that were never stored.
    if run_result["records_rejected"]:
        say(
            f"{run_result['records_rejected']} records rejected by ingest: the run outran "
            "real time (future_ts); shorten --run-seconds or lower the offered load"
        )
    ok = bool(
        stored["ok"] and orders["ok"] and run_result["drained"]
        and not run_result["records_rejected"]
    )  # fmt: skip
    return Outcome(result, ok)


def keep_logs(work: Path, to: Path) -> None:
    """Copy every process's log (cloud processes, influxd, mosquitto) into ``to``."""
    to.mkdir(parents=True, exist_ok=True)
    for path in [*work.glob("logs/*.log"), *work.glob("influx/*.log"), *work.glob("*.log")]:
        shutil.copy2(path, to / path.name)
    say(f"logs in {to}")


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp,
        bench_registry(args.registry_url, True, Path(tmp)) as pg_url,
    ):
        try:
            outcome = run(args, Path(tmp), pg_url)
        finally:
            if args.logs is not None:
                keep_logs(Path(tmp), args.logs)
    outcome.result["ok"] = outcome.ok
    outcome.result["wall_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(outcome.result, indent=2) + "\n", encoding="utf-8")
    say(
        f"{'checks passed' if outcome.ok else 'CHECKS FAILED'}; {outcome.result['wall_s']:.0f} s "
        f"in all; wrote {args.out}"
    )
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    multiprocessing.freeze_support()
    raise SystemExit(main())
