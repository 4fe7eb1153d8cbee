"""Benchmark: the edge agent at 10,000 points/s: its CPU, peak RSS and poll → delivered latency.

Runs every part as its own process on loopback, so that the agent's CPU is measured alone:

- the simulator (``edgewatch-sim serve``, speed 1) serving a generated fleet of
  compressors (ew-cc100, 27 points) and fans (ew-fc200, 17 points) behind ``--gateways``
  Modbus TCP endpoints;
- a private Mosquitto and the stand-in cloud (``tests/support/cloud_stub.py``:
  decodes every batch, appends ``gateway seq ts arrival`` per record to a file, acks);
- the agent (``edgewatch-agent run --config ...``) polling every point of every device in
  one poll group (so every poll makes an ``energy`` record), computing features at every
  window end, scoring compressors with a signed z-score ONNX model (window_s = the group's
  window), buffering in SQLite and publishing over MQTT.

After ``--warmup`` seconds it measures for ``--duration`` seconds: the agent's CPU
(utime+stime from /proc/<pid>/stat, all threads) in cores, its peak RSS (VmHWM), the
points/s actually polled (energy records with ts in the window × the device's points),
records/s delivered, and the latency of energy records from the poll's start (their ts) to
their arrival at the stand-in cloud (so it includes the broker hop). A tap subscriber in
this process keeps the raw batches (decoded after the run) to tell energy records apart.

``--profile SECONDS`` then runs the agent once more, in this process under cProfile (every
thread, thread CPU time), and prints where its CPU goes.

Prints the figures and writes ``tests/bench/results/agent.json``. Not a pass/fail test.

    .venv/bin/python tests/bench/bench_agent.py --gateways 5 --devices 10 --period 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import platform
import pstats
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.profiles import builtin_profiles
from edge_agent.protocol import decode_batch, up_topic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results" / "agent.json"
BIN = Path(sys.executable).parent
GW = "gw-bench"
GOAL = {"cpu_cores": 0.25, "peak_rss_mb": 120.0, "latency_p99_ms": 50.0, "points_per_s": 10_000}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _load_stub() -> ModuleType:
    """The stand-in cloud (``tests/support/cloud_stub.py``), as the tests import it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support import cloud_stub  # type: ignore[import-not-found]

    return cloud_stub  # type: ignore[no-any-return]


# ---- /proc -----------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def user_system_s(pid: int) -> tuple[float, float]:
    """utime and stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def thread_cpu_s(pid: int) -> dict[int, float]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def mem_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of a process, in MB (MiB)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) / 1024
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time (already in user)
    return total - idle, total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- the set-up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    id: str
    gateway: str
    unit_id: int
    profile: str
    asset_type: str


def fleet_devices(gateways: int, per_gateway: int) -> list[Device]:
    """Compressors and fans, alternating, ``per_gateway`` behind each gateway."""
    out = []
    for g in range(1, gateways + 1):
        for u in range(1, per_gateway + 1):
            cc = u % 2 == 1
            out.append(
                Device(
                    id=f"{'cc' if cc else 'fan'}-{g}-{u:03d}",
                    gateway=f"sim-gw-{g}",
                    unit_id=u,
                    profile="ew-cc100" if cc else "ew-fc200",
                    asset_type="compressor" if cc else "fan",
                )
            )
    return out


def fleet_document(devices: list[Device]) -> dict[str, Any]:
    gateways: dict[str, list[dict[str, Any]]] = {}
    for d in devices:
        gateways.setdefault(d.gateway, []).append(
            {
                "id": d.id,
                "asset_type": d.asset_type,
                "variant": "split_ac" if d.asset_type == "compressor" else "supply",
                "profile": d.profile,
                "unit_id": d.unit_id,
                "install_date": "2022-01-01",
                "rated_power_kw": 8.0 if d.asset_type == "compressor" else 3.0,
            }
        )
    return {
        "schema_version": 1,
        "name": "bench-agent",
        "seed": 11,
        "start": "2026-07-01T10:00:00Z",
        "clients": [
            {
                "id": "bench",
                "sites": [
                    {
                        "id": "bench-site",
                        "kind": "office",
                        "floor_area_m2": 20000,
                        "location": {"lat": 40.4, "lon": -3.7},
                        "gateways": [
                            {"id": gw, "transport": "tcp", "devices": devs}
                            for gw, devs in gateways.items()
                        ],
                    }
                ],
            }
        ],
    }


def write_model(work: Path, window_s: float) -> tuple[Path, Path, list[str]]:
    """A signed z-score model for compressors over features of the polled group."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.models import FEATURES, Publisher  # type: ignore[import-not-found]

    publisher = Publisher()
    update = publisher.update(1, threshold=1e9, window_s=window_s)
    models = work / "models"
    models.mkdir()
    publisher.write_folder(models / "compressor", update)
    return models, publisher.public_pem(work / "publisher.pem"), list(FEATURES)


def agent_config(
    work: Path,
    args: argparse.Namespace,
    devices: list[Device],
    ports: dict[str, int],
    mqtt_port: int,
    models: Path,
    key: Path,
) -> Path:
    profiles = builtin_profiles()
    config = {
        "schema_version": 1,
        "gateway": {"id": GW},
        "buses": [
            {
                "id": gw,
                "type": "tcp",
                "host": "127.0.0.1",
                "port": port,
                "timeout_s": 0.5,
                "max_in_flight": args.max_in_flight,
            }
            for gw, port in ports.items()
        ],
        "poll_groups": [{"name": "bench", "period_s": args.period, "window_s": args.window}],
        "devices": [
            {
                "id": d.id,
                "bus": d.gateway,
                "unit_id": d.unit_id,
                "profile": d.profile,
                "poll_groups": {p.name: "bench" for p in profiles[d.profile].points},
            }
            for d in devices
        ],
        "models": {"dir": str(models), "trusted_keys": [str(key)]},
        "buffer": {"path": str(work / "state" / "buffer.sqlite")},
        "uplink": {
            "mqtt": {
                "host": "127.0.0.1",
                "port": mqtt_port,
                "tls": None,
                "batch": {
                    "max_records": args.max_records,
                    "max_delay_s": args.max_delay,
                    "compression": args.compression,
                },
            }
        },
    }
    path = work / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    """Terminate (``sig``), then kill after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_simulator(
    fleet: Path, gateways: list[str], args: argparse.Namespace, work: Path
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    proc = subprocess.Popen(
        [
            str(BIN / "edgewatch-sim"),
            "serve",
            "--fleet",
            str(fleet),
            "--speed",
            str(args.sim_speed),
            "--tick",
            str(args.sim_tick),
            "--status-every",
            "0",
            "--ground-truth",
            str(work / "ground_truth.jsonl"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(work / "sim.log").open("wb"),
        text=True,
    )
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def drain() -> None:  # keep reading so the pipe never fills
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True, name="sim-stdout").start()
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        while set(ports) != set(gateways):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("the simulator did not list its endpoints in 60 s") from None
            if line is None:
                log = (work / "sim.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the simulator exited: {log}")
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "tcp":
                ports[parts[0]] = int(parts[2].rsplit(":", 1)[1])
    except BaseException:
        stop_process(proc)
        raise
    return proc, ports


class Tap:
    """Keeps the raw batches the agent publishes (a second subscriber; decoded later)."""

    def __init__(self, host: str, port: int) -> None:
        self.payloads: list[bytes] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-tap", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = lambda c, u, msg: self.payloads.append(bytes(msg.payload))
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.connect(host, port)
        self.client.subscribe(up_topic(GW), qos=1)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("the tap could not subscribe")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def records(self) -> dict[int, tuple[str, str | None, float]]:
        """seq -> (kind, device id, ts)."""
        out = {}
        for payload in self.payloads:
            for r in decode_batch(payload, expected_gateway=GW).records:
                out[r.seq] = (str(r.kind), r.device_id, r.ts)
        return out


# ---- the measured run --------------------------------------------------------------------------


def measure(
    args: argparse.Namespace,
    work: Path,
    agent: subprocess.Popen[bytes],
    others: dict[str, int],
    cloud_out: Path,
) -> dict[str, Any]:
    """Warm up, then sample CPU and memory of every process over the measurement window."""

    def alive() -> None:
        if agent.poll() is not None:
            log = (work / "agent.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the agent exited with {agent.returncode}: {log}")

    deadline = time.monotonic() + 30
    while not (cloud_out.exists() and cloud_out.stat().st_size > 0):
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError("nothing reached the cloud within 30 s of starting the agent")
        time.sleep(0.1)
    print(f"first records delivered; warming up {args.warmup:.0f} s")
    time.sleep(args.warmup)
    alive()

    pids = {"agent": agent.pid, **others}
    t0 = time.time()
    m0 = machine_ticks()
    c0 = {name: cpu_s(pid) for name, pid in pids.items()}
    us0 = user_system_s(agent.pid)
    th0 = thread_cpu_s(agent.pid)
    rss_max = 0.0
    end = time.monotonic() + args.duration
    print(f"measuring {args.duration:.0f} s")
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        alive()
        rss_max = max(rss_max, mem_mb(agent.pid)["VmRSS"])
    t1 = time.time()
    m1 = machine_ticks()
    c1 = {name: cpu_s(pid) for name, pid in pids.items()}
    us1 = user_system_s(agent.pid)
    th1 = thread_cpu_s(agent.pid)
    mem = mem_mb(agent.pid)
    seconds = t1 - t0
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
    cores = {name: (c1[name] - c0[name]) / seconds for name in pids}
    threads = sorted(
        ((tid, (th1[tid] - th0.get(tid, 0.0)) / seconds) for tid in th1), key=lambda x: -x[1]
    )
    return {
        "t0": t0,
        "t1": t1,
        "seconds": seconds,
        "cores": cores,
        "agent_user_system_cores": [(us1[i] - us0[i]) / seconds for i in (0, 1)],
        "load_average": os.getloadavg(),
        "agent_threads": [
            {"tid": tid, "main": tid == agent.pid, "cores": round(c, 4)} for tid, c in threads
        ],
        "machine_busy_cores": busy * (os.cpu_count() or 1),
        "rss_mb": {"peak_VmHWM": mem["VmHWM"], "VmRSS_end": mem["VmRSS"], "VmRSS_max": rss_max},
    }


def analyse(
    m: dict[str, Any],
    records: dict[int, tuple[str, str | None, float]],
    arrivals: list[Any],
    points: dict[str, int],
    status: dict[str, Any],
    window_s: float,
) -> dict[str, Any]:
    t0, t1, seconds = m["t0"], m["t1"], m["seconds"]
    first: dict[int, float] = {}
    for a in arrivals:
        first.setdefault(a.seq, a.arrival)
    in_window = {s: r for s, r in records.items() if t0 <= r[2] < t1}
    kinds = Counter(r[0] for r in in_window.values())
    energy = {s: r for s, r in in_window.items() if r[0] == "energy"}
    polls_by_device = Counter(r[1] for r in energy.values())
    latencies = [first[s] - r[2] for s, r in energy.items() if s in first]
    # polls in the second after a multiple of window_s on the wall clock: where every
    # device's window closed together before windows were staggered per device
    # (edge_agent.windows.window_offset); now a device's windows end at its own offset
    near = [first[s] - r[2] for s, r in energy.items() if s in first and r[2] % window_s < 1.0]
    away = [first[s] - r[2] for s, r in energy.items() if s in first and r[2] % window_s >= 1.0]

    def p99(values: list[float]) -> float | None:
        return round(1000 * pct(values, 0.99), 2) if values else None

    delivered = sum(1 for t in first.values() if t0 <= t < t1)
    devices = status.get("devices", {})
    errors: Counter[str] = Counter()
    for d in devices.values():
        errors.update(d.get("errors", {}))
    return {
        "polls": len(energy),
        "polls_per_s": len(energy) / seconds,
        "points_per_s": sum(points[d] * n for d, n in polls_by_device.items() if d) / seconds,
        "devices_polled": len(polls_by_device),
        "records_in_window_by_kind": dict(sorted(kinds.items())),
        "records_delivered_per_s": delivered / seconds,
        "energy_undelivered": len(energy) - len(latencies),
        "latency_ms": {
            "n": len(latencies),
            "p50": 1000 * statistics.median(latencies) if latencies else None,
            "p90": 1000 * pct(latencies, 0.90) if latencies else None,
            "p99": 1000 * pct(latencies, 0.99) if latencies else None,
            "max": 1000 * max(latencies) if latencies else None,
        },
        "latency_split": {
            "p99_ms_within_1s_after_window_end": p99(near),
            "n_within_1s_after_window_end": len(near),
            "p99_ms_other": p99(away),
            "p50_ms_other": round(1000 * statistics.median(away), 2) if away else None,
            "n_other": len(away),
        },
        "agent_status_whole_run": {
            "requests": sum(d.get("requests", 0) for d in devices.values()),
            "ok": sum(d.get("ok", 0) for d in devices.values()),
            "errors": dict(errors),
            "missed_polls": sum(d.get("missed_polls", 0) for d in devices.values()),
            "states": dict(Counter(d.get("state") for d in devices.values())),
            "counts": status.get("counts", {}),
            "uptime_s": status.get("uptime_s"),
            "buffer_depth_at_stop": status.get("buffer", {}).get("depth"),
        },
    }


# ---- profiling the agent in this process ------------------------------------------------------


@contextlib.contextmanager
def profiled_threads(timer: Callable[[], float]) -> Iterator[list[tuple[str, cProfile.Profile]]]:
    """cProfile (with ``timer``) in this thread and in every thread started inside."""
    profiles: list[tuple[str, cProfile.Profile]] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile(timer)
        profiles.append((self.name, prof))
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    main = cProfile.Profile(timer)
    profiles.append(("main (event loop)", main))
    threading.Thread.run = run  # type: ignore[method-assign]
    main.enable()
    try:
        yield profiles
    finally:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign]


def profile_agent(config: Path, seconds: float, top: int, timer: str) -> dict[str, Any]:
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    agent = Agent(load_config(config))
    wall0, cpu0 = time.monotonic(), time.process_time()

    async def main() -> None:
        asyncio.get_running_loop().call_later(seconds, agent.stop)
        await agent.run()

    clock = time.thread_time if timer == "cpu" else time.perf_counter
    with profiled_threads(clock) as profiles:
        asyncio.run(main())
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    polls = agent.counts["polls"]
    per_thread: dict[str, float] = {}
    stats = None
    for name, prof in profiles:
        s = pstats.Stats(prof)
        per_thread[name] = per_thread.get(name, 0.0) + s.total_tt  # type: ignore[attr-defined]
        stats = s if stats is None else stats.add(prof)
    assert stats is not None
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (file, line, func), (_cc, calls, tt, ct, _callers) in raw.items():
        rows.append((tt, ct, calls, _where(file, line, func)))
    self_top = [
        {
            "function": w,
            "self_pct": round(100 * tt / total, 1),
            "cum_pct": round(100 * ct / total, 1),
            "calls": n,
        }
        for tt, ct, n, w in sorted(rows, key=lambda r: -r[0])[:top]
    ]
    by_module: Counter[str] = Counter()
    for tt, _ct, _n, w in rows:
        by_module[_module(w)] += tt
    module_top = [
        {"module": mod, "self_pct": round(100 * tt / total, 1)}
        for mod, tt in by_module.most_common(top)
    ]
    cum_top = [
        {
            "function": w,
            "cum_pct": round(100 * ct / total, 1),
            "self_pct": round(100 * tt / total, 1),
            "calls": n,
        }
        for tt, ct, n, w in sorted(rows, key=lambda r: -r[1])
        if _ours(w)
    ][:top]
    return {
        "mode": f"in-process, cProfile on every thread, timer {clock.__name__}",
        "seconds": round(wall, 1),
        "polls": polls,
        "polls_per_s": round(polls / wall, 1),
        "process_cpu_cores_under_profiler": round(cpu / wall, 3),
        "profiled_cpu_s_by_thread": {k: round(v, 2) for k, v in per_thread.items()},
        "self_by_module": module_top,
        "top_self": self_top,
        "top_cumulative_edge_agent": cum_top,
    }


class Buckets:
    """Exclusive thread-CPU time of a few wrapped functions, per thread (cheap: two
    ``thread_time`` calls per wrapped call, so the agent runs at its real load)."""

    def __init__(self) -> None:
        self.excl: Counter[tuple[str, str]] = Counter()
        self.calls: Counter[tuple[str, str]] = Counter()
        self._local = threading.local()
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)
        local, excl, calls = self._local, self.excl, self.calls

        def wrapper(*a: Any, **k: Any) -> Any:
            stack = local.__dict__.setdefault("stack", [])
            stack.append(0.0)
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                took = time.thread_time() - t
                child = stack.pop()
                key = (threading.current_thread().name, name)
                excl[key] += took - child
                calls[key] += 1
                if stack:
                    stack[-1] += took

        setattr(owner, attr, wrapper)
        self._undo.append(lambda: setattr(owner, attr, fn))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


class GcTimer:
    """Thread-CPU time spent in the cyclic garbage collector, by generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds[info["generation"]] += time.thread_time() - self._started
            self.runs[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def breakdown_agent(config: Path, seconds: float) -> dict[str, Any]:
    """Run the agent in this process at full load; split its CPU by thread and by part."""
    from edge_agent import agent as agent_mod
    from edge_agent import forwarder as fwd_mod
    from edge_agent import poller as poller_mod
    from edge_agent.alarms import AlarmEngine
    from edge_agent.config import load_config
    from edge_agent.scoring import Scorer
    from edge_agent.store import RecordStore
    from edge_agent.uplink.mqtt import MqttUplink

    b = Buckets()
    for owner, attr, name in (
        (poller_mod, "decode_block", "register decoding (planner.decode_block)"),
        (poller_mod, "unreadable_points", "planner.unreadable_points (per poll)"),
        (agent_mod.Agent, "_on_result", "Agent._on_result (rest: samples, energy body)"),
        (agent_mod.Agent, "_housekeeping", "Agent._housekeeping (rest: health, status file)"),
        (agent_mod.Agent, "_window_records", "Agent._window_records (rest)"),
        (agent_mod, "window_features", "features of closed windows (window_features)"),
        (Scorer, "score_window", "scoring (feature vector + ONNX)"),
        (AlarmEngine, "on_sample", "alarms"),
        (AlarmEngine, "on_poll", "alarms"),
        (AlarmEngine, "tick", "alarms"),
        (RecordStore, "append", "SQLite append (store.append)"),
        (RecordStore, "pending", "SQLite read pending (store.pending)"),
        (RecordStore, "ack", "SQLite delete acked (store.ack)"),
        (RecordStore, "last_seq", "store.last_seq/count/depth"),
        (RecordStore, "count", "store.last_seq/count/depth"),
        (RecordStore, "depth", "store.last_seq/count/depth"),
        (RecordStore, "waiting", "store.waiting (forwarder: is a batch full?)"),
        (fwd_mod, "encode_batch", "encode batch (JSON + zlib)"),
        (MqttUplink, "send", "MQTT publish (MqttUplink.send)"),
        (fwd_mod.Forwarder, "_step", "Forwarder._step (rest)"),
    ):
        b.wrap(owner, attr, name)
    try:
        agent = agent_mod.Agent(load_config(config))
        t_main0 = time.thread_time()
        wall0 = time.monotonic()
        threads: dict[str, float] = {}

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def finish() -> None:
                for th in threading.enumerate():  # other threads' CPU before they stop
                    if th is not threading.current_thread() and th.native_id is not None:
                        with contextlib.suppress(OSError):
                            threads[th.name] = thread_cpu_s(os.getpid())[th.native_id]
                threads[threading.current_thread().name] = time.thread_time() - t_main0
                agent.stop()

            loop.call_later(seconds, finish)
            await agent.run()

        with GcTimer() as gc_timer:
            asyncio.run(main())
        wall = time.monotonic() - wall0
    finally:
        b.restore()
    polls = agent.counts["polls"]
    parts: list[dict[str, Any]] = []
    for thread, total in threads.items():
        mine = {n: v for (t, n), v in b.excl.items() if t == thread}
        if not mine and total < 0.01 * wall:
            continue
        rest = total - sum(mine.values())
        is_main = thread == threading.main_thread().name
        label = "rest: asyncio, pymodbus client, transport, poller" if is_main else "rest"
        rows = sorted([*mine.items(), (label, rest)], key=lambda r: -r[1])
        parts.append(
            {
                "thread": f"{thread} (event loop)" if is_main else thread,
                "cores": round(total / wall, 4),
                "parts": [
                    {
                        "part": n,
                        "cores": round(v / wall, 4),
                        "share_of_agent_pct": None,
                        "calls": b.calls.get((thread, n)),
                    }
                    for n, v in rows
                ],
            }
        )
    agent_total = sum(p["cores"] for p in parts)
    for p in parts:
        for row in p["parts"]:
            row["share_of_agent_pct"] = round(100 * row["cores"] / agent_total, 1)
    return {
        "mode": "in-process, exclusive thread CPU time of wrapped functions (no profiler)",
        "seconds": round(wall, 1),
        "polls_per_s": round(polls / wall, 1),
        "agent_cores": round(agent_total, 4),
        "threads": parts,
        "gc": {
            "cores_by_generation": [round(v / wall, 4) for v in gc_timer.seconds],
            "runs_by_generation": gc_timer.runs,
            "note": "CPU of the cyclic GC (any thread), part of the figures above",
        },
    }


def _where(file: str, line: int, func: str) -> str:
    if file == "~":
        return func
    if "-packages/" in file:
        file = file.split("-packages/", 1)[1]
    elif file.startswith(f"{ROOT}/"):
        file = file[len(str(ROOT)) + 1 :]
    elif (m := re.search(r"python3\.\d+/(.*)", file)) is not None:
        file = m.group(1)
    return f"{file}:{line}({func})"


def _module(where: str) -> str:
    """A profile row's module: ``edge_agent/poller.py``, ``pymodbus``, ``asyncio``, or the
    C function (socket send, sqlite3 execute, ...)."""
    if ":" not in where:
        return f"C: {where.strip('<>')}"
    file = where.split(":", 1)[0]
    if file.startswith("edge_agent/"):
        return file
    return file.split("/", 1)[0].removesuffix(".py")


def _ours(where: str) -> bool:
    return where.startswith(("edge_agent/", "paho/", "pymodbus/", "onnxruntime/")) or (
        "sqlite3" in where or "json" in where
    )


# ---- main --------------------------------------------------------------------------------------


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=5, help="Modbus TCP endpoints (buses)")
    ap.add_argument(
        "--devices",
        type=int,
        default=10,
        help="devices per gateway, compressors and fans alternating",
    )
    ap.add_argument("--period", type=float, default=0.1, help="poll period (s) of every device")
    ap.add_argument(
        "--window",
        type=float,
        default=10.0,
        help="feature window (s); the model's window_s is the same",
    )
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    ap.add_argument(
        "--max-delay",
        type=float,
        default=0.02,
        help="uplink batch max_delay_s (the agent's default is 0.2)",
    )
    ap.add_argument("--max-records", type=int, default=500, help="uplink batch max_records")
    ap.add_argument("--compression", choices=["zlib", "none"], default="zlib")
    ap.add_argument("--sim-speed", type=float, default=1.0, help="simulator --speed")
    ap.add_argument("--sim-tick", type=float, default=0.5, help="simulator --tick (s)")
    ap.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="afterwards, profile the agent in this process for SECONDS (0: no)",
    )
    ap.add_argument(
        "--profile-timer",
        choices=["cpu", "wall"],
        default="cpu",
        help="cProfile timer: thread CPU time (where CPU goes; slow, the agent "
        "falls behind) or wall time (idle waits show as epoll/lock time)",
    )
    ap.add_argument("--top", type=int, default=25, help="profile rows to show")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the buffer and logs go (default: a temporary folder)",
    )
    ap.add_argument(
        "--max-in-flight",
        type=int,
        default=1,
        help="the buses' max_in_flight: above 1, a poll's blocks go out together "
        "(the simulator accepts pipelined requests)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    stub = _load_stub()

    devices = fleet_devices(args.gateways, args.devices)
    profiles = builtin_profiles()
    points = {d.id: len(profiles[d.profile].points) for d in devices}
    nominal = sum(points.values()) / args.period
    print(
        f"fleet: {args.gateways} gateways x {args.devices} devices "
        f"({sum(d.asset_type == 'compressor' for d in devices)} ew-cc100 x 27 points, "
        f"{sum(d.asset_type == 'fan' for d in devices)} ew-fc200 x 17 points), every point "
        f"every {args.period} s: nominal {nominal:,.0f} points/s"
    )

    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            work = Path(args.workdir)
        else:
            work = Path(stack.enter_context(tempfile_dir()))
        fleet = work / "fleet.yaml"
        fleet.write_text(yaml.safe_dump(fleet_document(devices), sort_keys=False))
        gateways = list(dict.fromkeys(d.gateway for d in devices))

        sim, ports = start_simulator(fleet, gateways, args, work)
        stack.callback(stop_process, sim)
        broker = stub.Broker(work)
        broker.start()
        stack.callback(broker.stop)
        cloud = stub.Cloud(work, "mqtt", "--port", str(broker.port))
        cloud.start()
        stack.callback(cloud.stop)
        tap = Tap(broker.host, broker.port)
        stack.callback(tap.close)
        models, key, features = write_model(work, args.window)
        config = agent_config(work, args, devices, ports, broker.port, models, key)

        agent = subprocess.Popen(
            [str(BIN / "edgewatch-agent"), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(work / "agent.log").open("wb"),
        )
        stack.callback(stop_process, agent)
        assert broker.proc is not None and cloud.proc is not None
        others = {
            "simulator": sim.pid,
            "mosquitto": broker.proc.pid,
            "cloud_stub": cloud.proc.pid,
            "bench_and_tap": os.getpid(),
        }
        m = measure(args, work, agent, others, cloud.out)
        time.sleep(2.0)  # the window's last records reach the cloud
        stop_process(agent)
        if agent.returncode != 0:
            print(f"warning: the agent exited with {agent.returncode}", file=sys.stderr)
        status = json.loads((work / "state" / "status.json").read_text())
        agent_log = (work / "agent.log").read_text(errors="replace").splitlines()
        tap.close()
        records = tap.records()
        arrivals = cloud.arrivals()
        profile = breakdown = None
        if args.profile > 0:
            print(f"CPU breakdown of the agent in this process for {args.profile:.0f} s")
            breakdown = breakdown_agent(config, args.profile)
            print(f"cProfile of the agent in this process for {args.profile:.0f} s")
            profile = profile_agent(config, args.profile, args.top, args.profile_timer)

    a = analyse(m, records, arrivals, points, status, args.window)
    cores, lat, rss = m["cores"], a["latency_ms"], m["rss_mb"]
    result: dict[str, Any] = {
        "benchmark": "agent",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "buffer_filesystem": "ext4 (virtio disk), SQLite WAL synchronous=FULL",
        },
        "settings": {
            "gateways": args.gateways,
            "devices_per_gateway": args.devices,
            "max_in_flight": args.max_in_flight,
            "devices": len(devices),
            "compressors": sum(d.asset_type == "compressor" for d in devices),
            "fans": sum(d.asset_type == "fan" for d in devices),
            "poll_groups": [
                {
                    "name": "bench",
                    "period_s": args.period,
                    "window_s": args.window,
                    "points": "every point of every device",
                }
            ],
            "nominal_points_per_s": round(nominal, 1),
            "model": {
                "asset_type": "compressor",
                "kind": "z-score ONNX, signed (trusted key)",
                "window_s": args.window,
                "features": features,
            },
            "uplink_batch": {
                "max_records": args.max_records,
                "max_delay_s": args.max_delay,
                "compression": args.compression,
            },
            "simulator": {"speed": args.sim_speed, "tick_s": args.sim_tick},
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "broker": "mosquitto (private, loopback); cloud stub process acks",
        },
        "agent": {
            "cpu_cores": round(cores["agent"], 4),
            "cpu_user_system_cores": [round(c, 4) for c in m["agent_user_system_cores"]],
            "threads": m["agent_threads"],
            "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        },
        "load": {
            "points_per_s": round(a["points_per_s"], 1),
            "polls_per_s": round(a["polls_per_s"], 1),
            "devices_polled": a["devices_polled"],
            "records_delivered_per_s": round(a["records_delivered_per_s"], 1),
            "records_in_window_by_kind": a["records_in_window_by_kind"],
        },
        "latency_poll_to_cloud_ms": {
            "what": "energy record ts (poll start, wall clock) to its arrival at the stand-in "
            "cloud: Modbus reads, processing, SQLite commit, batching, MQTT via the broker",
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in lat.items()},
            "undelivered": a["energy_undelivered"],
            "split": a["latency_split"],
        },
        "errors": {
            "poll_errors_whole_run": a["agent_status_whole_run"]["errors"],
            "missed_polls_whole_run": a["agent_status_whole_run"]["missed_polls"],
            "agent_log_warnings": sum(
                (" WARNING " in ln or " ERROR " in ln) and "edge_agent.cli: gateway" not in ln
                for ln in agent_log
            ),
        },
        "agent_status_at_stop": a["agent_status_whole_run"],
        "machine_load": {
            "busy_cores": round(m["machine_busy_cores"], 3),
            "load_average_at_end": [round(x, 2) for x in m["load_average"]],
            "by_process_cores": {k: round(v, 3) for k, v in cores.items()},
        },
        "goal": GOAL,
        "met": {
            "points_per_s": a["points_per_s"] >= GOAL["points_per_s"],
            "cpu_cores": cores["agent"] <= GOAL["cpu_cores"],
            "peak_rss_mb": rss["peak_VmHWM"] <= GOAL["peak_rss_mb"],
            "latency_p99_ms": lat["p99"] is not None and lat["p99"] <= GOAL["latency_p99_ms"],
        },
    }
    if breakdown is not None:
        result["cpu_breakdown"] = breakdown
    if profile is not None:
        result["profile"] = profile
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


@contextlib.contextmanager
def tempfile_dir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-agent-") as tmp:
        yield tmp


def print_report(r: dict[str, Any]) -> None:
    s, ag, ld, lat, err = (
        r["settings"],
        r["agent"],
        r["load"],
        r["latency_poll_to_cloud_ms"],
        r["errors"],
    )
    ok: Callable[[str], str] = lambda k: "met" if r["met"][k] else "NOT met"  # noqa: E731
    rows = [
        (
            "fleet",
            f"{s['devices']} devices ({s['compressors']} ew-cc100, {s['fans']} ew-fc200) "
            f"on {s['gateways']} Modbus TCP endpoints",
        ),
        (
            "poll group",
            f"every point every {s['poll_groups'][0]['period_s']} s, window "
            f"{s['poll_groups'][0]['window_s']} s (signed z-score model on compressors)",
        ),
        ("measured", f"{s['duration_s']:.0f} s after {s['warmup_s']:.0f} s warm-up"),
        (
            "points polled/s",
            f"{ld['points_per_s']:,.0f} (nominal {s['nominal_points_per_s']:,.0f};"
            f" {ld['polls_per_s']:.0f} device polls/s)  goal ≥ 10,000: "
            f"{ok('points_per_s')}",
        ),
        (
            "records delivered/s",
            f"{ld['records_delivered_per_s']:,.0f}  {ld['records_in_window_by_kind']}",
        ),
        (
            "agent CPU",
            f"{ag['cpu_cores']:.3f} cores (user {ag['cpu_user_system_cores'][0]:.3f}, system "
            f"{ag['cpu_user_system_cores'][1]:.3f})  goal ≤ 0.25: {ok('cpu_cores')}",
        ),
        (
            "agent threads",
            ", ".join(
                f"{'main' if t['main'] else t['tid']} {t['cores']:.3f}"
                for t in ag["threads"]
                if t["cores"] >= 0.001
            ),
        ),
        (
            "agent RSS",
            f"peak (VmHWM) {ag['rss_mb']['peak_VmHWM']:.1f} MB, now "
            f"{ag['rss_mb']['VmRSS_end']:.1f} MB  goal ≤ 120: {ok('peak_rss_mb')}",
        ),
        (
            "poll → cloud latency",
            f"p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, "
            f"max {lat['max']} ms (n {lat['n']}, undelivered "
            f"{lat['undelivered']})  goal p99 ≤ 50: {ok('latency_p99_ms')}",
        ),
        (
            "latency split",
            f"p99 {lat['split']['p99_ms_within_1s_after_window_end']} ms in the "
            f"second after a wall-clock multiple of window_s (n "
            f"{lat['split']['n_within_1s_after_window_end']}"
            f"), p50 {lat['split']['p50_ms_other']} / p99 {lat['split']['p99_ms_other']}"
            f" ms otherwise (n {lat['split']['n_other']})",
        ),
        (
            "poll errors (run)",
            f"{err['poll_errors_whole_run'] or 0}, missed polls "
            f"{err['missed_polls_whole_run']}, log warnings "
            f"{err['agent_log_warnings']}",
        ),
        (
            "machine load",
            f"{r['machine_load']['busy_cores']:.2f} of {r['machine']['cpus']} cores "
            "busy: "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["machine_load"]["by_process_cores"].items())
            + "; load average "
            + " ".join(f"{x:.2f}" for x in r["machine_load"]["load_average_at_end"]),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    b = r.get("cpu_breakdown")
    if b:
        print(
            f"\nCPU breakdown ({b['mode']}): {b['seconds']} s, {b['polls_per_s']} polls/s, "
            f"agent {b['agent_cores']} cores"
        )
        for t in b["threads"]:
            print(f"  thread {t['thread']}: {t['cores']:.3f} cores")
            for row in t["parts"]:
                print(
                    f"    {row['cores']:.3f} cores  {row['share_of_agent_pct']:5.1f}%  "
                    f"{row['part']}" + (f"  ({row['calls']} calls)" if row["calls"] else "")
                )
        g = b["gc"]
        print(
            "  of which cyclic GC: "
            + ", ".join(
                f"gen{i} {c:.4f} cores ({n} runs)"
                for i, (c, n) in enumerate(
                    zip(g["cores_by_generation"], g["runs_by_generation"], strict=True)
                )
            )
        )
    p = r.get("profile")
    if p:
        print(
            f"\nprofile ({p['mode']}): {p['seconds']} s, {p['polls_per_s']} polls/s, "
            f"process {p['process_cpu_cores_under_profiler']} cores under the profiler"
        )
        print(
            "  CPU by thread (s): "
            + ", ".join(f"{k} {v}" for k, v in p["profiled_cpu_s_by_thread"].items())
        )
        print("  self time by module:")
        for row in p["self_by_module"]:
            print(f"    {row['self_pct']:5.1f}%  {row['module']}")
        print("  self time:")
        for row in p["top_self"]:
            print(
                f"    {row['self_pct']:5.1f}%  (cum {row['cum_pct']:5.1f}%)  {row['calls']:>8}  "
                f"{row['function']}"
            )
        print("  cumulative (agent and its libraries):")
        for row in p["top_cumulative_edge_agent"]:
            print(
                f"    {row['cum_pct']:5.1f}%  (self {row['self_pct']:5.1f}%)  {row['calls']:>8}  "
                f"{row['function']}"
            )


if __name__ == "__main__":
    main()
