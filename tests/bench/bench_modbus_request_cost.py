"""Benchmark: the agent's CPU per Modbus TCP request, beside what asyncio itself costs.

A child process serves fixed answers to read requests over Modbus TCP (MBAP framing, no
simulation: its cost is not measured). This process then reads ``--count`` blocks of
``--registers`` input registers, one request at a time, three ways, and reports the CPU
time (``time.process_time``) and wall time per request:

1. ``agent``: :class:`edge_agent.transport.ModbusLink`, the agent's path (its own MBAP
   client, :mod:`edge_agent.mbap`, with the response checks and error translation);
2. ``pymodbus``: pymodbus's ``AsyncModbusTcpClient.read_input_registers`` alone;
3. ``asyncio floor``: a bare ``asyncio.Protocol`` that frames MBAP by hand and awaits a
   future per request: what any asyncio Modbus client pays at least.

The gap between (1) and (3), times the requests per second the agent makes, bounds what a
leaner Modbus client could still save on the agent's CPU; (2) is what pymodbus's client,
which the agent used before, costs. Prints the figures and writes
``tests/bench/results/modbus_request_cost.json``. Not a pass/fail test.

    .venv/bin/python tests/bench/bench_modbus_request_cost.py [--count 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import platform
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from edge_agent.config import TcpBus
from edge_agent.profiles import Table
from edge_agent.transport import ModbusLink

RESULTS = Path(__file__).parent / "results" / "modbus_request_cost.json"


def _serve(port: int) -> None:
    """Answer every read request with ``count`` registers of 1."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, _pid, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                fc, _addr, count = struct.unpack(">BHH", await reader.readexactly(length - 1))
                body = struct.pack(">BB", fc, 2 * count) + b"\x00\x01" * count
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


async def _timed(n: int, read: Callable[[], Awaitable[list[int]]]) -> dict[str, float]:
    for _ in range(200):  # warm up
        await read()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await read()
    return {
        "cpu_us_per_request": (time.process_time() - cpu) / n * 1e6,
        "wall_us_per_request": (time.perf_counter() - wall) / n * 1e6,
    }


async def agent_link(port: int, n: int, registers: int) -> dict[str, float]:
    link = ModbusLink.for_bus(TcpBus(id="bench", type="tcp", host="127.0.0.1", port=port))
    try:
        return await _timed(n, lambda: link.read(1, Table.INPUT, 0, registers))
    finally:
        await link.close()


async def bare_pymodbus(port: int, n: int, registers: int) -> dict[str, float]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await client.connect()

    async def read() -> list[int]:
        rr = await client.read_input_registers(0, count=registers, device_id=1)
        return list(rr.registers)

    try:
        return await _timed(n, read)
    finally:
        client.close()


class _Mbap(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 7:
            tid, _pid, length = struct.unpack_from(">HHH", self.buffer)
            if len(self.buffer) < 6 + length:
                return
            pdu = bytes(self.buffer[7 : 6 + length])
            del self.buffer[: 6 + length]
            future = self.waiting.pop(tid, None)
            if future is not None and not future.done():
                future.set_result(pdu)


async def asyncio_floor(port: int, n: int, registers: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Mbap, "127.0.0.1", port)
    tid = 0

    async def read() -> list[int]:
        nonlocal tid
        tid = (tid + 1) & 0xFFFF
        future: asyncio.Future[bytes] = loop.create_future()
        proto.waiting[tid] = future
        transport.write(struct.pack(">HHHBBHH", tid, 0, 6, 1, 4, 0, registers))
        async with asyncio.timeout(1.5):
            pdu = await future
        return list(struct.unpack_from(f">{registers}H", pdu, 2))

    try:
        return await _timed(n, read)
    finally:
        transport.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20_000)
    p.add_argument("--registers", type=int, default=25)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = mp.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    time.sleep(1.0)
    results = {}
    try:
        for name, fn in (
            ("agent", agent_link),
            ("pymodbus", bare_pymodbus),
            ("asyncio floor", asyncio_floor),
        ):
            results[name] = asyncio.run(fn(port, args.count, args.registers))
            r = results[name]
            print(
                f"{name:14s} {r['cpu_us_per_request']:6.1f} µs CPU per request "
                f"({r['wall_us_per_request']:6.1f} µs wall)",
                flush=True,
            )
    finally:
        server.terminate()
    gap = results["agent"]["cpu_us_per_request"] - results["asyncio floor"]["cpu_us_per_request"]
    print(f"agent above the floor: {gap:.1f} µs per request")
    out = {
        "machine": {"cpus": mp.cpu_count(), "python": platform.python_version()},
        "args": {"count": args.count, "registers": args.registers},
        "results": results,
        "agent_above_floor_us": gap,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
