"""Benchmark: holding-register reads per second served over Modbus TCP.

Starts one TCP endpoint with N simulated devices in a child process (its own core and
GIL), drives it from this process with K concurrent pymodbus async clients for a fixed
time per read size, prints the figures and writes them to
``tests/bench/results/register_reads.json``. Not a pass/fail test.

    .venv/bin/python tests/bench/bench_register_reads.py --devices 10 --clients 4 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import platform
import statistics
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

RESULTS = Path(__file__).parent / "results" / "register_reads.json"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class BenchSource:
    """Every point at a fixed value; time moves, values do not (the serving is measured)."""

    def __init__(self, devices: Mapping[str, str]) -> None:
        from edge_agent.profiles import DataType, builtin_profiles

        profiles = builtin_profiles()
        self.now = T0
        self._values = {}
        for device, pid in devices.items():
            vals: dict[str, int | float | str | bool] = {}
            for i, p in enumerate(profiles[pid].points):
                if p.type is DataType.BOOL:
                    vals[p.name] = i % 2 == 0
                elif p.type is DataType.STRING:
                    vals[p.name] = device
                else:
                    vals[p.name] = i
            self._values[device] = vals

    def advance_to(self, t: datetime) -> None:
        self.now = t

    def signals(self, device_id: str) -> Mapping[str, int | float | str | bool]:
        return self._values[device_id]

    def reboot(self, device_id: str) -> None:
        pass


def serve(n_devices: int, conn: Connection) -> None:
    from edge_agent.profiles import builtin_profiles
    from firmware_sim.clock import SimClock
    from firmware_sim.modbus import EndpointConfig, SimServer, UnitConfig

    profiles = builtin_profiles()
    devices = {f"dev-{i + 1}": ("ew-fc200" if i % 2 else "ew-cc100") for i in range(n_devices)}
    units = tuple(
        UnitConfig(i + 1, d, profiles[pid]) for i, (d, pid) in enumerate(devices.items())
    )
    server = SimServer([EndpointConfig("bench", units)], BenchSource(devices),
                       SimClock(T0, 60.0), tick_s=0.2)

    async def run() -> None:
        await server.start()
        conn.send(server.endpoint("bench").port)  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # until the parent says stop
        await server.stop()

    asyncio.run(run())


async def drive(
    port: int, clients: int, devices: int, count: int, duration: float
) -> dict[str, float]:
    conns = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
             for _ in range(clients)]
    for c in conns:
        if not await c.connect():
            raise SystemExit(f"cannot connect to 127.0.0.1:{port}")
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    async def worker(k: int, c: AsyncModbusTcpClient) -> int:
        nonlocal errors
        done, unit = 0, k % devices
        while time.monotonic() < deadline:
            unit = unit % devices + 1
            t = time.perf_counter()
            r = await c.read_holding_registers(0, count=count, device_id=unit)
            latencies.append(time.perf_counter() - t)
            if r.isError():
                errors += 1
            else:
                done += 1
        return done

    t0 = time.monotonic()
    done = sum(await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns))))
    elapsed = time.monotonic() - t0
    for c in conns:
        c.close()
    latencies.sort()
    return {
        "registers_per_read": count,
        "requests": done,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 1),
        "registers_per_s": round(done * count / elapsed, 1),
        "latency_ms_p50": round(1000 * statistics.median(latencies), 3),
        "latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4, help="concurrent TCP connections")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per read size")
    ap.add_argument("--sizes", default="1,125", help="registers per read, comma-separated")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(args.devices, child), daemon=True)
    proc.start()
    port = parent.recv()
    try:
        runs = []
        for size in (int(s) for s in args.sizes.split(",")):
            result = asyncio.run(drive(port, args.clients, args.devices, size, args.duration))
            runs.append(result)
            print(
                f"{size:4d} registers/read, {args.clients} clients, {args.devices} devices: "
                f"{result['requests_per_s']:9.1f} requests/s {result['registers_per_s']:11.1f} "
                f"registers/s  p50 {result['latency_ms_p50']:.2f} ms  p99 "
                f"{result['latency_ms_p99']:.2f} ms  errors {result['errors']}"
            )
    finally:
        parent.send("stop")
        proc.join(timeout=10)
    report = {
        "benchmark": "register_reads_tcp",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count(),
                    "platform": platform.platform()},
        "devices": args.devices,
        "clients": args.clients,
        "duration_s": args.duration,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
