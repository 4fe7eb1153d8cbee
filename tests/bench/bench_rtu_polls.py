"""Benchmark: complete polls per second of a 10-register block over Modbus RTU.

The simulator serves one device on a pty at 19,200 baud with byte timing (each byte
takes its character time, answers start 3.5 characters after the request), in a child
process (its own core and GIL). This process polls it through the poller's own request
path: the planned read block, ``ModbusLink.read`` on pymodbus's async serial client
(parity N on the pty, inter-frame gap kept), and ``decode_block``. A poll counts only
when all 10 registers decoded. Prints the figures and writes
``tests/bench/results/rtu_polls.json``. Not a pass/fail test; the goal is >= 25/s.

    .venv/bin/python tests/bench/bench_rtu_polls.py --duration 10
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

RESULTS = Path(__file__).parent / "results" / "rtu_polls.json"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
BAUD = 19200
REGISTERS = 10


def bench_profile() -> object:
    from edge_agent.profiles import parse_profile

    return parse_profile({
        "schema_version": 1, "id": "bench-10", "asset_type": "fan",
        "points": [{"name": f"r{i}", "table": "holding", "address": i, "type": "uint16"}
                   for i in range(REGISTERS)],
    })


class BenchSource:
    def __init__(self) -> None:
        self.now = T0

    def advance_to(self, t: datetime) -> None:
        self.now = t

    def signals(self, device_id: str) -> Mapping[str, int]:
        return {f"r{i}": 100 + i for i in range(REGISTERS)}

    def reboot(self, device_id: str) -> None:
        pass


def serve(conn: Connection) -> None:
    from firmware_sim.clock import SimClock
    from firmware_sim.modbus import EndpointConfig, SimServer, UnitConfig

    profile = bench_profile()
    server = SimServer(
        [EndpointConfig("bench", (UnitConfig(1, "dev-1", profile),),  # type: ignore[arg-type]
                        transport="rtu", baudrate=BAUD, parity="N", byte_timing=True)],
        BenchSource(), SimClock(T0, 1.0), tick_s=1.0)

    async def run() -> None:
        await server.start()
        conn.send(server.endpoint("bench").address)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)
        await server.stop()

    asyncio.run(run())


async def poll_loop(path: str, duration: float) -> dict[str, float | int]:
    from edge_agent.config import RtuBus
    from edge_agent.errors import TransportError
    from edge_agent.planner import decode_block, plan_reads
    from edge_agent.transport import ModbusLink, char_time, inter_frame_gap

    profile = bench_profile()
    blocks = plan_reads(profile, profile.points, max_gap=16,  # type: ignore[arg-type]
                        max_registers=125)
    assert len(blocks) == 1 and blocks[0].count == REGISTERS
    block = blocks[0]
    bus = RtuBus(id="bench", type="rtu", port=path, baudrate=BAUD, parity="N", timeout_s=0.5)
    link = ModbusLink.for_bus(bus)
    latencies: list[float] = []
    failures = 0
    try:
        for _ in range(5):  # warm up: open the port, first frames
            decode_block(block, await link.read(1, block.table, block.address, block.count))
        t_end = time.perf_counter() + duration
        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            s = time.perf_counter()
            try:
                values = decode_block(
                    block, await link.read(1, block.table, block.address, block.count))
            except TransportError:
                failures += 1
                continue
            assert values["r9"].value == 109
            latencies.append(time.perf_counter() - s)
        took = time.perf_counter() - t0
    finally:
        await link.close()
    char = char_time(BAUD, "N", 1)
    wire = (8 + 3.5 + (5 + 2 * REGISTERS)) * char + inter_frame_gap(bus)
    return {
        "polls": len(latencies),
        "failures": failures,
        "seconds": round(took, 3),
        "polls_per_s": round(len(latencies) / took, 2),
        "latency_ms_median": round(1000 * statistics.median(latencies), 2),
        "latency_ms_p99": round(1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2),
        "wire_ms_per_poll": round(1000 * wire, 2),
        "wire_bound_polls_per_s": round(1 / wire, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    proc.start()
    try:
        path = parent.recv()
        figures = asyncio.run(poll_loop(path, args.duration))
    finally:
        parent.send("stop")
        proc.join(timeout=10)
    out = {
        "benchmark": "rtu_polls",
        "what": f"complete polls of {REGISTERS} holding registers over RTU at {BAUD} baud, "
                "byte-timed simulator on a pty, poller request path",
        "goal_polls_per_s": 25,
        **figures,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(out, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
