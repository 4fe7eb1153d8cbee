"""Ingest: records/s from MQTT into InfluxDB, beside InfluxDB's raw line-protocol write
rate measured in the same run, and ingest-to-ack latency at half that load.

    .venv/bin/python tests/bench/bench_ingest.py [--workers 2] [--gateways 40] [--seconds 20]
        [--influx-data cache-snapshot-memory-size='"6m"' ...]

Starts a private ``influxd`` and ``mosquitto`` on loopback and a SQLite registry of
``--gateways`` gateways × ``--devices`` devices. The records are what a gateway sends:
per device and window one ``features`` record (``--features`` features), one ``score`` and
``--energy`` ``energy`` readings, in batches of ``--batch`` records (zlib, as the agent
sends them).

1. raw: the same records as points, serialised to line protocol beforehand, POSTed to
   ``/write`` in chunks of ``influx_batch_points`` from one client — InfluxDB's own rate;
2. throughput: ``edgewatch-cloud ingest --workers W`` processes; one publisher process keeps
   ``--window`` batches unacknowledged and counts acks for ``--seconds``; records/s =
   records acknowledged / time. Beside it, the phase's CPU time per record of each process
   (as for phase 3) and, from the workers' metrics, their store writes (how many, records
   per write, how many took over 100, 250 and 500 ms) and how many batches took over
   150 ms from arrival at a worker to their ack (and to being decoded, and to being taken
   into a store write: the rest of their time is the write and the ack);
3. latency: the publisher paced at half the measured throughput (or ``--latency-rate``
   records/s, to compare code or settings at one load) for ``--seconds``; for
   every batch, publish → ack received (p50, p99, max). The tail is set beside InfluxDB's
   cache snapshots in the same seconds (from its log): how many of the batches slower than
   150 ms were in flight while one was written, and the p99 of the batches that were not;
   and the CPU seconds each process spent meanwhile: ``influxd`` (snapshots and
   compactions included), ``mosquitto``, the ingest workers (the CLI and its worker
   processes) and the publisher (this process), beside the CPUs there were, and the
   ingest workers' CPU time per record published; and the phase's CPU per record and the
   workers' figures as for phase 2 (at half load the workers write far smaller groups of
   batches, so a record costs more than at full load);
4. the store alone at that load: the same records as points, serialised beforehand, POSTed
   to a fresh database at phase 3's rate in writes of
   ``--raw-latency-points`` (about what a worker writes at a time at that load) from one
   client for ``--seconds``: each write's latency (p50, p99, max), set beside InfluxDB's
   cache snapshots as above. What ingest adds to the store's own tail.

``--influx-data KEY=VALUE`` sets an ``influxd`` ``[data]`` option for the run (TOML value).
``--influx-cpus 1`` runs ``influxd`` on CPU 1 alone and the rest on the other CPUs.

Everything shares this machine's cores (InfluxDB, Mosquitto, workers, publisher).
Prints the figures and writes ``tests/bench/results/ingest.json``. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/support

from support import cloud_stub as stub  # noqa: E402
from support.influx import RestartableInflux  # noqa: E402
from support.processes import Process, ingest_worker, scrape  # noqa: E402

from cloud.db import create_engine_from_settings, make_sessionmaker, migrate  # noqa: E402
from cloud.ingest.records import to_point  # noqa: E402
from cloud.registry.models import Client, Device, Gateway, Site, SiteKind  # noqa: E402
from cloud.registry.refs import DeviceRef, GatewayInfo  # noqa: E402
from cloud.settings import Settings  # noqa: E402
from cloud.tsdb import Point  # noqa: E402
from cloud.tsdb.influx import InfluxStore, line_protocol  # noqa: E402
from edge_agent.protocol import Record, RecordKind, decode_ack, encode_batch  # noqa: E402
from edge_agent.uplink.mqtt import no_delay  # noqa: E402

RESULTS = HERE / "results" / "ingest.json"


def make_batches(
    args: argparse.Namespace, t0: float
) -> list[tuple[str, int, int, bytes, list[Record]]]:
    """``(gateway, first_seq, n_records, payload, records)`` for every batch, round robin
    over the gateways so that the publisher spreads its load."""
    per_gateway: list[list[tuple[str, int, int, bytes, list[Record]]]] = []
    feature_names = [f"s{i // 10}__f{i % 10}" for i in range(args.features)]
    for g in range(args.gateways):
        gw = f"gw-{g:04d}"
        records: list[Record] = []
        seq = 0
        window = 0
        while len(records) < args.records_per_gateway:
            ts = t0 + window * 60.0 + g * 1e-3
            for d in range(args.devices):
                device = f"cc-{d}"
                for e in range(args.energy):
                    seq += 1
                    records.append(
                        Record(
                            seq,
                            ts + e * 10.0,
                            RecordKind.ENERGY,
                            device,
                            {"values": {"energy": 1000.0 + seq * 0.1}},
                        )
                    )
                seq += 1
                records.append(
                    Record(
                        seq,
                        ts,
                        RecordKind.FEATURES,
                        device,
                        {
                            "group": "fast",
                            "start": ts - 60.0,
                            "n_samples": 30,
                            "n_missing": 0,
                            "features": {
                                n: float(seq % 97) + i * 0.01 for i, n in enumerate(feature_names)
                            },
                        },
                    )
                )
                seq += 1
                records.append(
                    Record(
                        seq,
                        ts,
                        RecordKind.SCORE,
                        device,
                        {
                            "model_id": "cc",
                            "model_version": 1,
                            "score": (seq % 13) / 10.0,
                            "threshold": 1.0,
                            "anomalous": False,
                            "top_signals": [["s0", 0.5]],
                            "group": "fast",
                        },
                    )
                )
            window += 1
        batches = []
        for i in range(0, len(records), args.batch):
            chunk = records[i : i + args.batch]
            batches.append((gw, chunk[0].seq, len(chunk), encode_batch(gw, chunk), chunk))
        per_gateway.append(batches)
    out = []
    for k in range(max(len(b) for b in per_gateway)):
        out += [b[k] for b in per_gateway if k < len(b)]
    return out


def seed_registry(settings: Settings, gateways: int, devices: int) -> dict[str, GatewayInfo]:
    migrate(settings)
    sessions = make_sessionmaker(create_engine_from_settings(settings))
    infos: dict[str, GatewayInfo] = {}
    with sessions.begin() as s:
        client = Client(name="bench client")
        s.add(client)
        s.flush()
        site = Site(client_id=client.id, name="bench site", kind=SiteKind.OFFICE)
        s.add(site)
        s.flush()
        for g in range(gateways):
            gw = f"gw-{g:04d}"
            s.add(Gateway(id=gw, site_id=site.id))
            refs = {}
            for d in range(devices):
                dev = Device(gateway_id=gw, name=f"cc-{d}", asset_type="compressor")
                s.add(dev)
                s.flush()
                refs[dev.name] = DeviceRef(dev.id, dev.asset_type)
            infos[gw] = GatewayInfo(gw, client.id, site.id, refs)
    return infos


def as_points(
    batches: list[Any], infos: dict[str, GatewayInfo], limit: int | None = None
) -> list[Point]:
    """The records of ``batches`` as ingest stores them, whole batches up to ``limit``."""
    points: list[Point] = []
    for gw, _first, _n, _payload, records in batches:
        points += [to_point(r, infos[gw], now=r.ts, max_future_s=0) for r in records]
        if limit is not None and len(points) >= limit:
            break
    return points


def raw_rate(
    influx_url: str,
    batches: list[Any],
    infos: dict[str, GatewayInfo],
    chunk: int,
    limit_points: int,
) -> dict[str, float]:
    points = as_points(batches, infos, limit_points)
    started = time.perf_counter()
    bodies = [
        "\n".join(line_protocol(p) for p in points[i : i + chunk])
        for i in range(0, len(points), chunk)
    ]
    serialise_s = time.perf_counter() - started
    fields = sum(len(p.fields) for p in points)
    with httpx.Client(timeout=60) as http:
        http.post(f"{influx_url}/query", params={"q": "CREATE DATABASE raw"}).raise_for_status()
        started = time.perf_counter()
        for body in bodies:
            http.post(
                f"{influx_url}/write", params={"db": "raw", "precision": "ns"}, content=body
            ).raise_for_status()
        write_s = time.perf_counter() - started
    return {
        "points": len(points),
        "fields": fields,
        "write_points_per_s": len(points) / write_s,
        "write_fields_per_s": fields / write_s,
        "serialise_points_per_s": len(points) / serialise_s,
    }


def raw_latency(
    influx_url: str,
    batches: list[Any],
    infos: dict[str, GatewayInfo],
    rate: float,
    seconds: float,
    chunk: int,
) -> tuple[dict[str, float], list[Span]]:
    """Phase 4 (module docstring): the figures and every write's span."""
    lines = [line_protocol(p) for p in as_points(batches, infos)]
    bodies = ["\n".join(lines[i : i + chunk]) for i in range(0, len(lines), chunk)]
    spans: list[Span] = []
    with httpx.Client(timeout=60) as http:
        http.post(f"{influx_url}/query", params={"q": "CREATE DATABASE rawlat"}).raise_for_status()
        started = time.perf_counter()
        for i, body in enumerate(bodies):
            due = started + i * chunk / rate
            if due - started >= seconds:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            sent = time.perf_counter()
            http.post(
                f"{influx_url}/write", params={"db": "rawlat", "precision": "ns"}, content=body
            ).raise_for_status()
            spans.append((sent, time.perf_counter()))
    figures = {"points_per_s": rate, "points_per_write": chunk, "writes": len(spans)}
    return figures | span_figures(spans), spans


def span_figures(spans: list[Span]) -> dict[str, float]:
    """p50, p99 and max of ``spans``' durations, in ms."""
    ms = sorted((end - start) * 1000 for start, end in spans)
    q = statistics.quantiles(ms, n=100)
    return {"p50_ms": q[49], "p99_ms": q[98], "max_ms": ms[-1]}


class Publisher:
    """Publishes pre-encoded batches and notes when each one's ack arrives."""

    def __init__(self, port: int) -> None:
        self.sent: dict[tuple[str, int], float] = {}
        self.acked: dict[tuple[str, int], float] = {}
        self.records_acked = 0
        self.sizes: dict[tuple[str, int], int] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gateways")
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_message = self.on_message
        self.client.on_socket_open = no_delay  # as the agent's uplink does
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edgewatch/v1/+/ack", qos=1)
        self.client.loop_start()
        time.sleep(0.5)

    def on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        ack = decode_ack(msg.payload)
        key = (ack.gateway_id, ack.ranges[0][0])
        with self.cond:
            if key in self.sent and key not in self.acked:
                self.acked[key] = now
                self.records_acked += self.sizes[key]
                self.cond.notify_all()

    def publish(self, gw: str, first: int, n: int, payload: bytes) -> None:
        key = (gw, first)
        with self.cond:
            self.sent[key] = time.perf_counter()
            self.sizes[key] = n
        self.client.publish(f"edgewatch/v1/{gw}/up", payload, qos=1)

    def inflight(self) -> int:
        return len(self.sent) - len(self.acked)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_workers(
    args: argparse.Namespace, env: dict[str, str], log: Path, metrics_port: int
) -> Process:
    """``edgewatch-cloud ingest --workers W`` (:func:`support.processes.ingest_worker`),
    once every worker process serves its metrics (worker i on ``metrics_port`` + i)."""
    workers = ingest_worker(env, log, metrics_port, args.workers)
    deadline = time.monotonic() + 30
    while any(scrape(metrics_port + i) is None for i in range(args.workers)):
        if workers.proc is None or workers.proc.poll() is not None or time.monotonic() > deadline:
            workers.stop()
            raise RuntimeError(f"ingest workers did not start:\n{workers.tail()}")
        time.sleep(0.1)
    time.sleep(0.5)  # connected and subscribed shortly after the metrics port is up
    return workers


STORE_WRITE_BOUNDS_S = (0.1, 0.25, 0.5)
"""Store writes slower than these are counted (bounds of the workers' latency histogram)."""


def worker_metrics(metrics_port: int, workers: int) -> dict[str, float]:
    """What the ingest workers' metrics say so far, summed over the workers: their store
    writes (``edgewatch_ingest_store_seconds``: ``writes``, and ``writes_over_<b>_s`` for
    each bound of :data:`STORE_WRITE_BOUNDS_S`) and their batches
    (``edgewatch_ingest_batch_seconds``: ``batches``, and ``prepared_over_0.15_s``,
    ``taken_over_0.15_s`` and ``acked_over_0.15_s``: how many took longer than 150 ms from
    arrival to being decoded, to being taken into a store write and to their ack)."""
    keys = ["writes", *(f"writes_over_{b:g}_s" for b in STORE_WRITE_BOUNDS_S)]
    stages = ("prepared", "taken", "acked")
    out = dict.fromkeys([*keys, "batches", *(f"{s}_over_0.15_s" for s in stages)], 0.0)
    for i in range(workers):
        text = scrape(metrics_port + i)
        if text is None:
            raise RuntimeError(f"ingest worker {i} serves no metrics on port {metrics_port + i}")
        for family in text_string_to_metric_families(text):
            if family.name == "edgewatch_ingest_store_seconds":
                count = next(s.value for s in family.samples if s.name.endswith("_count"))
                out["writes"] += count
                for b in STORE_WRITE_BOUNDS_S:
                    out[f"writes_over_{b:g}_s"] += count - _bucket(family.samples, b)
            elif family.name == "edgewatch_ingest_batch_seconds":
                for stage in stages:
                    mine = [s for s in family.samples if s.labels.get("stage") == stage]
                    count = next(s.value for s in mine if s.name.endswith("_count"))
                    out[f"{stage}_over_0.15_s"] += count - _bucket(mine, 0.15)
                    out["batches"] += count if stage == "acked" else 0.0
    return out


def _bucket(samples: list[Any], le: float) -> float:
    """The cumulative count of a histogram's bucket ``le``."""
    return next(
        s.value for s in samples if s.name.endswith("_bucket") and float(s.labels["le"]) == le
    )


def metrics_between(
    before: dict[str, float], after: dict[str, float], records: int
) -> dict[str, float]:
    """One phase's :func:`worker_metrics` (``after`` - ``before``) and its records per
    store write."""
    out = {k: after[k] - before[k] for k in after}
    out["records_per_write"] = records / out["writes"] if out["writes"] else 0.0
    return out


def throughput(pub: Publisher, batches: list[Any], seconds: float, window: int) -> dict[str, float]:
    started = time.perf_counter()
    i = published = 0
    deadline = started + seconds
    while time.perf_counter() < deadline and i < len(batches):
        with pub.cond:
            while pub.inflight() >= window:
                pub.cond.wait(0.5)
        gw, first, n, payload, _ = batches[i]
        pub.publish(gw, first, n, payload)
        i += 1
        published += n
    with pub.cond:
        records = pub.records_acked
    elapsed = time.perf_counter() - started
    end = time.perf_counter() + 30
    with pub.cond:
        while pub.inflight() and time.perf_counter() < end:
            pub.cond.wait(0.5)
    return {
        "records_per_s": records / elapsed,
        "batches_published": i,
        "records_published": published,
        "seconds": elapsed,
        "records_acked_in_window": records,
    }


Span = tuple[float, float]
"""A batch's (published, ack received), on ``time.perf_counter``'s clock."""


def latency(
    pub: Publisher, batches: list[Any], rate: float, seconds: float, batch: int
) -> tuple[dict[str, float], list[Span]]:
    """The figures, and every acked batch's span (for :func:`attribute_tail`)."""
    interval = batch / rate
    keys = []
    records = 0
    next_t = time.perf_counter()
    deadline = next_t + seconds
    for gw, first, n, payload, _ in batches:
        if time.perf_counter() >= deadline:
            break
        time.sleep(max(0.0, next_t - time.perf_counter()))
        pub.publish(gw, first, n, payload)
        keys.append((gw, first))
        records += n
        next_t += interval
    end = time.perf_counter() + 30
    with pub.cond:
        while any(k not in pub.acked for k in keys) and time.perf_counter() < end:
            pub.cond.wait(0.5)
    spans = [(pub.sent[k], pub.acked[k]) for k in keys if k in pub.acked]
    figures = {
        "offered_records_per_s": rate,
        "batches": len(keys),
        "records": records,
        "acked": len(spans),
    }
    return figures | span_figures(spans), spans


SLOW_MS = 150.0


def _cpus(text: str) -> set[int]:
    try:
        return {int(c) for c in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of CPU numbers: {text!r}") from None


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(procs: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each of ``procs`` (the ingest CLI with its worker processes)."""
    return {k: tree_cpu_seconds(v) if k == "ingest" else cpu_seconds(v) for k, v in procs.items()}


def tree_cpu_seconds(pid: int | None) -> float:
    """:func:`cpu_seconds` of ``pid`` and every process under it (those alive now)."""
    if pid is None:
        return 0.0
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(children.get(p, ()))
    return total


def phase_costs(cpu_us: dict[str, float], worker: dict[str, float]) -> str:
    """One phase's CPU per record by process, its store writes and the batches slower than
    150 ms in the workers, as printed."""
    slow = ", ".join(
        f"{worker[f'writes_over_{b:g}_s']:.0f} over {b * 1000:.0f} ms" for b in STORE_WRITE_BOUNDS_S
    )
    return (
        "CPU µs per record: "
        + ", ".join(f"{k} {v:.0f}" for k, v in cpu_us.items())
        + f"; {worker['writes']:.0f} store writes of {worker['records_per_write']:.0f} records"
        + f" ({slow}); batches over 150 ms from arrival at a worker to their ack "
        + f"{worker['acked_over_0.15_s']:.0f} of {worker['batches']:.0f} (to being decoded "
        + f"{worker['prepared_over_0.15_s']:.0f}, to being taken into a store write "
        + f"{worker['taken_over_0.15_s']:.0f})"
    )


def snapshots(log: Path) -> list[Span]:
    """The InfluxDB cache snapshots in ``log``: (start, end) on ``time.perf_counter``'s
    clock. A snapshot writes the in-memory cache to a TSM file; on a machine the store
    shares, it takes a core for a few hundred milliseconds."""
    offset = time.time() - time.perf_counter()
    found = []
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(r"^ts=(\S+) .*msg=\"Cache snapshot \(end\)\".*op_elapsed=([0-9.]+)ms", line)
        if m:
            end = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            found.append((end - float(m.group(2)) / 1000 - offset, end - offset))
    return found


def attribute_tail(spans: list[Span], snaps: list[Span]) -> dict[str, Any]:
    """How many batches slower than :data:`SLOW_MS` were in flight while InfluxDB wrote a
    cache snapshot, and the p99 of the batches that were not."""
    first, last = min(a for a, _ in spans), max(b for _, b in spans)
    during = [(s0, s1) for s0, s1 in snaps if s1 >= first and s0 <= last]
    hit: list[float] = []
    clear: list[float] = []
    for a, b in spans:
        overlaps = any(s0 <= b and a <= s1 for s0, s1 in during)
        (hit if overlaps else clear).append((b - a) * 1000)
    clear.sort()
    q = statistics.quantiles(clear, n=100) if len(clear) > 100 else [float("nan")] * 99
    return {
        "influx_snapshots": len(during),
        "influx_snapshot_ms": [round((s1 - s0) * 1000, 1) for s0, s1 in during],
        "slow_batches": sum(ms > SLOW_MS for ms in hit) + sum(ms > SLOW_MS for ms in clear),
        "slow_batches_during_a_snapshot": sum(ms > SLOW_MS for ms in hit),
        "batches_clear_of_snapshots": len(clear),
        "p99_ms_clear_of_snapshots": q[98],
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--gateways", type=int, default=40)
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--features", type=int, default=100)
    p.add_argument("--energy", type=int, default=6)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--window", type=int, default=400, help="unacknowledged batches at most")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--records-per-gateway", type=int, default=12_000)
    p.add_argument("--raw-points", type=int, default=200_000)
    p.add_argument(
        "--raw-latency-points", type=int, default=200, help="points per write in phase 4"
    )
    p.add_argument(
        "--influx-data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an influxd [data] setting, TOML value, e.g. cache-snapshot-memory-size='\"6m\"'",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        metavar="RECORDS_PER_S",
        help="offer phases 3 and 4 this rate instead of half the measured throughput, to "
        "compare code or settings at the same load",
    )
    p.add_argument(
        "--influx-cpus",
        type=_cpus,
        default=None,
        metavar="LIST",
        help="run influxd on these CPUs (e.g. 1) and everything else on the others, as a "
        "deployment that gives the store its own cores would",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    data = dict(kv.split("=", 1) for kv in args.influx_data)
    if args.influx_cpus is not None:
        others = os.sched_getaffinity(0) - args.influx_cpus
        if not others or not args.influx_cpus <= os.sched_getaffinity(0):
            p.error(f"--influx-cpus {sorted(args.influx_cpus)} leaves no CPU for the rest")
        os.sched_setaffinity(0, others)  # the broker, the workers and this publisher

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        influx = RestartableInflux(work / "influx", data=data)
        influx.start()
        if args.influx_cpus is not None and influx.proc is not None:
            pin_process(influx.proc.pid, args.influx_cpus)
        broker = stub.Broker(work)
        broker.start()
        try:
            settings = Settings(
                database_url=f"sqlite:///{work / 'registry.db'}",
                tsdb="influxdb",
                influx_url=influx.url,
                influx_database="bench",
                mqtt_port=broker.port,
            )
            infos = seed_registry(settings, args.gateways, args.devices)
            t0 = time.time() - 86_400 * 30
            print("encoding batches ...", flush=True)
            batches = make_batches(args, t0)
            half = len(batches) // 2
            print(f"{len(batches)} batches of {args.batch} records", flush=True)
            raw = raw_rate(
                influx.url, batches, infos, settings.influx_batch_points, args.raw_points
            )
            print(
                f"raw InfluxDB write: {raw['write_points_per_s']:,.0f} points/s "
                f"({raw['write_fields_per_s']:,.0f} fields/s); line protocol serialisation "
                f"{raw['serialise_points_per_s']:,.0f} points/s",
                flush=True,
            )
            env = os.environ | {
                "EDGEWATCH_CLOUD_DATABASE_URL": settings.database_url,
                "EDGEWATCH_CLOUD_TSDB": "influxdb",
                "EDGEWATCH_CLOUD_INFLUX_URL": influx.url,
                "EDGEWATCH_CLOUD_INFLUX_DATABASE": "bench",
                "EDGEWATCH_CLOUD_MQTT_PORT": str(broker.port),
            }
            metrics_port = stub.free_port()
            workers = run_workers(args, env, work / "workers.log", metrics_port)
            pub = Publisher(broker.port)
            procs = {
                "influxd": influx.proc.pid if influx.proc else None,
                "mosquitto": broker.proc.pid if broker.proc else None,
                "ingest": workers.proc.pid if workers.proc else None,
                "publisher": os.getpid(),
            }
            try:
                cpu0, seen0 = cpu_by_process(procs), worker_metrics(metrics_port, args.workers)
                thr = throughput(pub, batches[:half], args.seconds, args.window)
                cpu1, seen1 = cpu_by_process(procs), worker_metrics(metrics_port, args.workers)
                thr["cpu_us_per_record"] = {
                    k: (cpu1[k] - cpu0[k]) / thr["records_published"] * 1e6 for k in procs
                }
                thr["workers"] = metrics_between(seen0, seen1, thr["records_published"])
                load = args.latency_rate or thr["records_per_s"] / 2
                print(
                    f"ingest: {thr['records_per_s']:,.0f} records/s ({args.workers} workers); "
                    + phase_costs(thr["cpu_us_per_record"], thr["workers"]),
                    flush=True,
                )
                wall0 = time.perf_counter()
                lat, spans = latency(pub, batches[half:], load, args.seconds, args.batch)
                wall = time.perf_counter() - wall0
                cpu2, seen2 = cpu_by_process(procs), worker_metrics(metrics_port, args.workers)
                cpu = {k: cpu2[k] - cpu1[k] for k in procs}
                lat["workers"] = metrics_between(seen1, seen2, lat["records"])
                lat["cpu_us_per_record"] = {k: v / lat["records"] * 1e6 for k, v in cpu.items()}
                lat["influxd_cpu_s"] = cpu["influxd"]
                lat["cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}
                lat["wall_s"] = round(wall, 2)
                lat["ingest_cpu_us_per_record"] = cpu["ingest"] / lat["records"] * 1e6
                print(
                    f"latency at {lat['offered_records_per_s']:,.0f} records/s: "
                    f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
                    f"max {lat['max_ms']:.1f} ms ({lat['acked']}/{lat['batches']} acked)",
                    flush=True,
                )
                print(
                    f"  CPU s over the phase's {wall:.1f} s on {os.cpu_count()} CPUs: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                    + f"; {sum(cpu.values()) / wall:.2f} CPUs busy; ingest "
                    + f"{lat['ingest_cpu_us_per_record']:.0f} µs of CPU per record",
                    flush=True,
                )
                print("  " + phase_costs(lat["cpu_us_per_record"], lat["workers"]), flush=True)
                tail = attribute_tail(spans, snapshots(influx.log_path))
                print(
                    f"  InfluxDB cache snapshots meanwhile: {tail['influx_snapshots']} "
                    f"({', '.join(f'{ms:.0f}' for ms in tail['influx_snapshot_ms'])} ms); "
                    f"batches over {SLOW_MS:.0f} ms: {tail['slow_batches']}, "
                    f"{tail['slow_batches_during_a_snapshot']} of them in flight during one; "
                    f"p99 of the {tail['batches_clear_of_snapshots']} batches clear of "
                    f"snapshots {tail['p99_ms_clear_of_snapshots']:.1f} ms",
                    flush=True,
                )
            finally:
                pub.close()
                workers.stop()
            # Every acknowledged record is in the store, once.
            store = InfluxStore.from_settings(settings)
            stored = sum(store.count(m) for m in ("features", "score", "energy"))
            store.close()
            acked = pub.records_acked
            alone, alone_spans = raw_latency(
                influx.url,
                batches[half:],
                infos,
                load,
                args.seconds,
                args.raw_latency_points,
            )
            alone_tail = attribute_tail(alone_spans, snapshots(influx.log_path))
            print(
                f"InfluxDB alone at {alone['points_per_s']:,.0f} points/s in writes of "
                f"{alone['points_per_write']}: p50 {alone['p50_ms']:.1f} ms, p99 "
                f"{alone['p99_ms']:.1f} ms, max {alone['max_ms']:.1f} ms; cache snapshots "
                f"meanwhile {alone_tail['influx_snapshots']}, writes over {SLOW_MS:.0f} ms "
                f"{alone_tail['slow_batches']}",
                flush=True,
            )
        finally:
            broker.stop()
            influx.stop()
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {
            k: str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v
            for k, v in vars(args).items()
        },
        "raw": raw,
        "ingest": thr,
        "ingest_share_of_raw": thr["records_per_s"] / raw["write_points_per_s"],
        "latency_at_half_load": lat,
        "latency_tail": tail,
        "store_alone_at_half_load": alone,
        "store_alone_tail": alone_tail,
        "records_acked": acked,
        "points_stored": stored,
    }
    print(
        f"ingest / raw = {result['ingest_share_of_raw']:.0%}; acked {acked} records, "
        f"{stored} points stored"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    multiprocessing.freeze_support()
    raise SystemExit(main())
