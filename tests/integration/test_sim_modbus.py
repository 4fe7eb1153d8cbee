"""The simulator over real Modbus: TCP sockets and a pty, read with pymodbus clients.

Every point of every shipped profile is served with edge values (negative int16, large
uint32/uint64, float32 with fractions, strings, bits) from an in-test source, read with
the function code of its table, decoded with the agent's codec and compared with what
the codec says a reader must see (``quantize``). Then writes, limits, unknown units,
unmapped addresses, every protocol fault kind as the client observes it, and RTU byte
timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from edge_agent.profiles import DataType, DeviceProfile, Point, Table, builtin_profiles
from edge_agent.registers import (
    PointValue,
    decode_point,
    encode_point,
    integer_range,
    quantize,
)
from firmware_sim.clock import SimClock
from firmware_sim.modbus import EndpointConfig, ServerThread, SimServer, UnitConfig
from firmware_sim.modbus.rtu import char_time
from firmware_sim.source import SignalValue

pytestmark = pytest.mark.integration

T0 = datetime(2024, 6, 1, tzinfo=UTC)
TIMEOUT = 0.3  # client timeout: every fault that means "no answer" costs this much
PROFILES = builtin_profiles()
CC, FC = PROFILES["ew-cc100"], PROFILES["ew-fc200"]
COUNTERS = ("start_count", "runtime_hours", "energy")


# -- a small source with known values -----------------------------------------------------
_RAW_EDGES: dict[DataType, list[int | float]] = {
    DataType.INT16: [-12345, -1, 32767],
    DataType.UINT16: [65535, 40000, 1],
    DataType.INT32: [-2_000_000_000, 123_456_789],
    DataType.UINT32: [4_000_000_000, 70_000],
    DataType.INT64: [-(2**62) - 5, 2**40 + 7],
    DataType.UINT64: [2**64 - 12345, 2**53 + 1],
    DataType.FLOAT32: [-1234.5678, 3.14159, 0.1],
    DataType.FLOAT64: [12345.678901234, -0.000123],
}


def edge_value(point: Point, i: int) -> SignalValue:
    """An awkward but legal value for ``point`` (the i-th of its kind)."""
    t = point.type
    if t is DataType.BOOL:
        return i % 2 == 0
    if t is DataType.STRING:
        return f"EW-{i:03d}-SN-0123456789"[: 2 * point.count - 1]  # odd length on purpose
    raws = _RAW_EDGES[t]
    raw = raws[i % len(raws)]
    if t.is_integer:
        lo, hi = integer_range(t)
        raw = min(max(int(raw), lo), hi)
        if point.scale == 1 and point.offset == 0:
            return raw
    return raw * point.scale + point.offset


def known_values(profile: DeviceProfile) -> dict[str, SignalValue]:
    """Each point's value; the n-th point of a type gets that type's n-th edge value."""
    seen: dict[DataType, int] = {}
    out = {}
    for p in profile.points:
        i = seen.get(p.type, 0)
        seen[p.type] = i + 1
        out[p.name] = edge_value(p, i)
    return out


def expected(point: Point, value: SignalValue) -> SignalValue:
    """What a reader decodes after ``value`` went through the registers."""
    if isinstance(value, (bool, str)):
        return value
    exact = point.type.is_integer and point.scale == 1 and point.offset == 0
    return value if exact else quantize(point, value)


@dataclass
class FixedSource:
    """Values set by the test; reboot restarts the counters; writes are recorded."""

    profiles: Mapping[str, DeviceProfile]
    now: datetime = T0
    values: dict[str, dict[str, SignalValue]] = field(default_factory=dict)
    reboots: list[str] = field(default_factory=list)
    writes: list[tuple[str, str, SignalValue]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.values = {d: known_values(p) for d, p in self.profiles.items()}
        self.reboots.clear()
        self.writes.clear()

    def advance_to(self, t: datetime) -> None:
        self.now = t
        for v in self.values.values():
            v["start_count"] = int((t - T0).total_seconds()) // 60 + 1000

    def signals(self, device_id: str) -> Mapping[str, SignalValue]:
        return self.values[device_id]

    def reboot(self, device_id: str) -> None:
        self.reboots.append(device_id)
        for name in COUNTERS:
            self.values[device_id][name] = 0

    def write(self, device_id: str, name: str, value: SignalValue) -> None:
        if value == 666:
            raise RuntimeError("the source refuses 666")
        self.writes.append((device_id, name, value))


DEVICES = {
    "cc-1": CC, "fc-1": FC, "cc-strict": CC,  # TCP units 1, 2, 3
    "cc-r1": CC, "fc-r1": FC,  # RTU units 1, 2
    "fc-slow": FC,  # RTU with byte timing, unit 5
}
TCP_UNITS = {"ew-cc100": (1, "cc-1"), "ew-fc200": (2, "fc-1")}
RTU_UNITS = {"ew-cc100": (1, "cc-r1"), "ew-fc200": (2, "fc-r1")}
SLOW_BAUD, SLOW_PARITY = 9600, "E"


@dataclass
class Sim:
    thread: ServerThread
    server: SimServer
    source: FixedSource
    clock: SimClock

    @property
    def tcp_port(self) -> int:
        return int(self.server.endpoint("gw-tcp").port)  # type: ignore[attr-defined]

    def refresh(self) -> None:
        self.thread.call(self.server.refresh)


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    source = FixedSource(DEVICES)
    clock = SimClock.manual(T0)
    configs = [
        EndpointConfig("gw-tcp", units=(
            UnitConfig(1, "cc-1", CC), UnitConfig(2, "fc-1", FC),
            UnitConfig(3, "cc-strict", CC, refuse_unmapped=True),
        )),
        EndpointConfig("gw-rtu", transport="rtu", baudrate=115200, parity="N",
                       units=(UnitConfig(1, "cc-r1", CC), UnitConfig(2, "fc-r1", FC))),
        EndpointConfig("gw-slow", transport="rtu", baudrate=SLOW_BAUD, parity=SLOW_PARITY,
                       byte_timing=True, units=(UnitConfig(5, "fc-slow", FC),)),
    ]
    server = SimServer(configs, source, clock, tick_s=0.05, seed=7)
    with ServerThread(server) as thread:
        yield Sim(thread, server, source, clock)


@pytest.fixture(autouse=True)
def _clean(sim: Sim) -> Iterator[None]:
    yield
    for ep in sim.server.endpoints.values():
        ep.faults.clear()
        for unit in ep.units.values():
            unit.down_until = None
            unit.image.clear_held()
    sim.source.reset()
    sim.refresh()


class Trace:
    """Bytes a pymodbus client sent and received (its ``trace_packet`` hook)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def __call__(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self.received.append(bytes(data))
        return data

    def clear(self) -> None:
        self.received.clear()


@pytest.fixture(scope="module")
def tcp_trace() -> Trace:
    return Trace()


@pytest.fixture(scope="module")
def tcp(sim: Sim, tcp_trace: Trace) -> Iterator[ModbusTcpClient]:
    client = ModbusTcpClient("127.0.0.1", port=sim.tcp_port, timeout=TIMEOUT, retries=0,
                             trace_packet=tcp_trace)
    assert client.connect()
    yield client
    client.close()


@pytest.fixture(scope="module")
def rtu_trace() -> Trace:
    return Trace()


def serial_client(path: str, baudrate: int, trace: Trace | None = None) -> ModbusSerialClient:
    # A pty carries no parity bit (Linux refuses PARENB on some kernels): the client
    # opens it with parity N; the endpoint's parity still sets its character time.
    return ModbusSerialClient(path, baudrate=baudrate, parity="N", timeout=TIMEOUT, retries=0,
                              trace_packet=trace)


@pytest.fixture(scope="module")
def rtu(sim: Sim, rtu_trace: Trace) -> Iterator[ModbusSerialClient]:
    client = serial_client(sim.server.endpoint("gw-rtu").address, 115200, rtu_trace)
    assert client.connect()
    yield client
    client.close()


def read_words(client: Any, unit: int, table: Table, address: int, count: int) -> list[int]:
    r = read_raw(client, unit, table, address, count)
    assert not r.isError(), f"unit {unit} {table.value} {address}+{count}: {r}"
    if table.is_bit_table:
        return [int(b) for b in r.bits[:count]]
    return list(r.registers)


def read_raw(client: Any, unit: int, table: Table, address: int, count: int) -> Any:
    fn = {
        Table.COIL: client.read_coils,
        Table.DISCRETE: client.read_discrete_inputs,
        Table.HOLDING: client.read_holding_registers,
        Table.INPUT: client.read_input_registers,
    }[table]
    return fn(address, count=count, device_id=unit)


def read_point(client: Any, unit: int, point: Point) -> PointValue:
    return decode_point(point, read_words(client, unit, point.table, point.address, point.count))


ALL_POINTS = [(pid, p.name) for pid, prof in PROFILES.items() for p in prof.points]
POINT_IDS = [f"{a}.{b}" for a, b in ALL_POINTS]


# -- every point, every profile, TCP and RTU ---------------------------------------------
@pytest.mark.parametrize(("profile_id", "name"), ALL_POINTS, ids=POINT_IDS)
def test_every_point_round_trips_over_tcp(
    sim: Sim, tcp: ModbusTcpClient, profile_id: str, name: str
) -> None:
    unit, device = TCP_UNITS[profile_id]
    point = PROFILES[profile_id].point(name)
    value = sim.source.values[device][name]
    assert read_point(tcp, unit, point).value == expected(point, value)


@pytest.mark.parametrize(("profile_id", "name"), ALL_POINTS, ids=POINT_IDS)
def test_every_point_round_trips_over_the_pty(
    sim: Sim, rtu: ModbusSerialClient, profile_id: str, name: str
) -> None:
    unit, device = RTU_UNITS[profile_id]
    point = PROFILES[profile_id].point(name)
    value = sim.source.values[device][name]
    assert read_point(rtu, unit, point).value == expected(point, value)


def test_edge_values_are_really_edges() -> None:
    """The values above do exercise what they claim to."""
    cc = known_values(CC)
    fc = known_values(FC)
    assert any(isinstance(v, float) and v < 0 for v in cc.values())
    assert fc["energy"] > 2**40 * 0.001  # uint64 far beyond 32 bits
    assert cc["energy"] > 2**31 * 0.1  # uint32 beyond int32
    assert cc["serial_number"] and fc["serial_number"]
    assert {cc["enable"], cc["high_pressure_switch"], cc["low_pressure_switch"]} == {True, False}
    assert any(p.type is DataType.FLOAT32 and not float(fc[p.name]).is_integer() for p in FC.points)


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_block_reads_span_many_points(sim: Sim, tcp: ModbusTcpClient, rtu: ModbusSerialClient,
                                      transport: str) -> None:
    client, units = (tcp, TCP_UNITS) if transport == "tcp" else (rtu, RTU_UNITS)
    for profile_id, (unit, device) in units.items():
        profile = PROFILES[profile_id]
        for table in Table:
            points = list(profile.in_table(table))
            if not points:
                continue
            start, end = min(p.address for p in points), max(p.end for p in points)
            words = read_words(client, unit, table, start, end - start)
            mapped = set()
            for p in points:
                got = decode_point(p, words[p.address - start : p.end - start]).value
                assert got == expected(p, sim.source.values[device][p.name]), p.name
                mapped.update(range(p.address, p.end))
            gaps = [words[a - start] for a in range(start, end) if a not in mapped]
            assert gaps == [0] * len(gaps)  # unmapped addresses read as 0


def test_values_follow_simulated_time(sim: Sim, tcp: ModbusTcpClient) -> None:
    point = CC.point("start_count")
    sim.clock.advance(timedelta(minutes=90))
    sim.thread.call(sim.server.tick)
    assert read_point(tcp, 1, point).value == 1090


# -- writes -------------------------------------------------------------------------------
def test_writes_reach_the_image_and_the_source(sim: Sim, tcp: ModbusTcpClient) -> None:
    setpoint = CC.point("setpoint")
    words = encode_point(setpoint, -18.5)
    r = tcp.write_register(setpoint.address, words[0], device_id=1)
    assert not r.isError(), r
    assert read_point(tcp, 1, setpoint).value == pytest.approx(-18.5)

    enable = CC.point("enable")
    assert not tcp.write_coil(enable.address, False, device_id=1).isError()
    assert read_point(tcp, 1, enable).value is False
    assert not tcp.write_coils(enable.address, [True], device_id=1).isError()
    assert read_point(tcp, 1, enable).value is True

    speed = FC.point("speed_command")
    assert not tcp.write_registers(speed.address, [73], device_id=2).isError()
    assert read_point(tcp, 2, speed).value == 73

    assert ("cc-1", "setpoint", pytest.approx(-18.5)) in sim.source.writes
    assert ("cc-1", "enable", True) in sim.source.writes
    assert ("fc-1", "speed_command", 73) in sim.source.writes
    # A written value holds over the next update from the source.
    sim.refresh()
    assert read_point(tcp, 1, setpoint).value == pytest.approx(-18.5)


@pytest.mark.parametrize(
    ("unit", "call", "code"),
    [
        (1, lambda c: c.write_register(100, 1, device_id=1), 2),  # read-only run_state
        (1, lambda c: c.write_register(105, 1, device_id=1), 2),  # unmapped
        (2, lambda c: c.write_registers(0, [1, 2, 3], device_id=2), 2),  # read-only speed_rpm
        (2, lambda c: c.write_registers(40, [1, 2], device_id=2), 2),  # runs past speed_command
        (1, lambda c: c.write_coil(5, True, device_id=1), 2),  # unmapped coil
    ],
    ids=["read-only", "unmapped", "read-only-block", "past-the-point", "unmapped-coil"],
)
def test_refused_writes(sim: Sim, tcp: ModbusTcpClient, unit: int, call: Any, code: int) -> None:
    before = sim.server.endpoint("gw-tcp").units[unit].image.snapshot(Table.HOLDING)
    r = call(tcp)
    assert r.isError() and r.exception_code == code, r
    assert sim.server.endpoint("gw-tcp").units[unit].image.snapshot(Table.HOLDING) == before
    assert sim.source.writes == []


def test_failure_inside_the_simulator_answers_04(
    sim: Sim, tcp: ModbusTcpClient, caplog: pytest.LogCaptureFixture
) -> None:
    r = tcp.write_register(FC.point("speed_command").address, 666, device_id=2)
    assert r.isError() and r.exception_code == 4
    assert "serving a request failed" in caplog.text
    assert not tcp.read_holding_registers(0, count=1, device_id=2).isError()


# -- limits, unknown units, unmapped addresses ----------------------------------------------
def raw_tcp(port: int, unit: int, pdu: bytes, tid: int = 7) -> bytes:
    """Send one MBAP frame on a fresh socket, return the reply's PDU."""
    adu = struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(adu)
        head = s.recv(7)
        length = struct.unpack(">H", head[4:6])[0]
        body = b""
        while len(body) < length - 1:
            body += s.recv(length - 1 - len(body))
    assert struct.unpack(">H", head[:2])[0] == tid
    return body


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (struct.pack(">BHH", 3, 0, 126), 3),  # more than 125 registers
        (struct.pack(">BHH", 4, 0, 0), 3),  # zero registers
        (struct.pack(">BHH", 1, 0, 2001), 3),  # more than 2000 coils
        (struct.pack(">BHH", 3, 65500, 100), 2),  # past address 65535
        (struct.pack(">BHH", 5, 0, 0x1234), 3),  # coil value neither ff00 nor 0000
        (struct.pack(">BHH", 0x2B, 0x0E01, 0), 1),  # unsupported function
    ],
    ids=["126-registers", "0-registers", "2001-coils", "past-65535", "bad-coil-value", "fc43"],
)
def test_limits(sim: Sim, pdu: bytes, code: int) -> None:
    reply = raw_tcp(sim.tcp_port, 1, pdu)
    assert reply == bytes([pdu[0] | 0x80, code])


def test_unknown_unit_gets_gateway_exception(sim: Sim, tcp: ModbusTcpClient) -> None:
    r = tcp.read_holding_registers(0, count=1, device_id=42)
    assert r.isError() and r.exception_code == 0x0B


def test_unknown_unit_on_rtu_is_silent(sim: Sim, rtu: ModbusSerialClient) -> None:
    with pytest.raises(ModbusIOException):
        rtu.read_holding_registers(0, count=1, device_id=42)


def test_refuse_unmapped(sim: Sim, tcp: ModbusTcpClient) -> None:
    assert len(read_words(tcp, 3, Table.INPUT, 0, 25)) == 25  # fully mapped
    assert len(read_words(tcp, 3, Table.HOLDING, 100, 3)) == 3
    for table, address, count in [(Table.INPUT, 0, 26), (Table.HOLDING, 100, 4),
                                  (Table.HOLDING, 0, 1), (Table.DISCRETE, 0, 3)]:
        r = read_raw(tcp, 3, table, address, count)
        assert r.isError() and r.exception_code == 2, (table, address, count, r)
    # The same profile without the option reads the gap as 0.
    assert read_words(tcp, 1, Table.HOLDING, 100, 4)[3] == 0


# -- protocol faults, as the client sees them ------------------------------------------------
def pick(transport: str, tcp: Any, rtu: Any, tcp_trace: Trace,
         rtu_trace: Trace) -> tuple[Any, str, Trace]:
    return (tcp, "gw-tcp", tcp_trace) if transport == "tcp" else (rtu, "gw-rtu", rtu_trace)


def faults(sim: Sim, gateway: str) -> Any:
    return sim.server.faults(gateway)


@pytest.mark.parametrize("code", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_fault_exception(sim: Sim, tcp: ModbusTcpClient, rtu: ModbusSerialClient,
                         transport: str, code: int) -> None:
    client, gw = (tcp, "gw-tcp") if transport == "tcp" else (rtu, "gw-rtu")
    faults(sim, gw).add(1, "exception", code, count=1)
    r = client.read_input_registers(0, count=2, device_id=1)
    assert r.isError() and r.exception_code == code
    assert not client.read_input_registers(0, count=2, device_id=1).isError()


def timed_failure(fn: Any) -> float:
    t0 = time.monotonic()
    with pytest.raises(ModbusException):
        r = fn()
        assert r.isError(), r  # pymodbus raises; an error response would fail here too
    return time.monotonic() - t0


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_fault_timeout(sim: Sim, tcp: ModbusTcpClient, rtu: ModbusSerialClient,
                       tcp_trace: Trace, rtu_trace: Trace, transport: str) -> None:
    client, gw, trace = pick(transport, tcp, rtu, tcp_trace, rtu_trace)
    faults(sim, gw).add(1, "timeout", count=1)
    trace.clear()
    took = timed_failure(lambda: client.read_input_registers(0, count=2, device_id=1))
    assert took >= TIMEOUT * 0.9
    assert not any(trace.received)  # not a byte came back
    assert not client.read_input_registers(0, count=2, device_id=1).isError()


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_fault_garbage(sim: Sim, tcp: ModbusTcpClient, rtu: ModbusSerialClient,
                       tcp_trace: Trace, rtu_trace: Trace, transport: str) -> None:
    client, gw, trace = pick(transport, tcp, rtu, tcp_trace, rtu_trace)
    faults(sim, gw).add(1, "garbage", count=1)
    trace.clear()
    timed_failure(lambda: client.read_input_registers(0, count=4, device_id=1))
    assert any(trace.received)  # bytes came back, and the client could not make a reply of them
    assert not client.read_input_registers(0, count=4, device_id=1).isError()


def test_fault_truncated_tcp(sim: Sim, tcp: ModbusTcpClient, tcp_trace: Trace) -> None:
    faults(sim, "gw-tcp").add(1, "truncated", count=1)
    tcp_trace.clear()
    took = timed_failure(lambda: tcp.read_input_registers(0, count=10, device_id=1))
    assert took < TIMEOUT  # a broken reply, not a missing one
    full = 7 + 2 + 20
    assert 7 < len(tcp_trace.received[-1]) < full
    assert not tcp.read_input_registers(0, count=10, device_id=1).isError()


def test_fault_truncated_rtu(sim: Sim, rtu: ModbusSerialClient, rtu_trace: Trace) -> None:
    faults(sim, "gw-rtu").add(1, "truncated", count=1)
    rtu_trace.clear()
    timed_failure(lambda: rtu.read_input_registers(0, count=10, device_id=1))
    full = 1 + 2 + 20 + 2
    assert rtu_trace.received and 0 < len(rtu_trace.received[-1]) < full
    assert not rtu.read_input_registers(0, count=10, device_id=1).isError()


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_fault_wrong_unit(sim: Sim, tcp: ModbusTcpClient, rtu: ModbusSerialClient,
                          tcp_trace: Trace, rtu_trace: Trace, transport: str) -> None:
    client, gw, trace = pick(transport, tcp, rtu, tcp_trace, rtu_trace)
    faults(sim, gw).add(1, "wrong_unit", 9, count=1)
    trace.clear()
    timed_failure(lambda: client.read_input_registers(0, count=2, device_id=1))
    unit_byte = 6 if transport == "tcp" else 0
    assert trace.received and trace.received[-1][unit_byte] == 9  # the reply came, from unit 9
    assert not client.read_input_registers(0, count=2, device_id=1).isError()


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_fault_reboot(sim: Sim, tcp: ModbusTcpClient, rtu: ModbusSerialClient,
                      transport: str) -> None:
    client, gw, device = (tcp, "gw-tcp", "cc-1") if transport == "tcp" else (rtu, "gw-rtu", "cc-r1")
    starts = CC.point("start_count")
    before = read_point(client, 1, starts).value
    assert before > 1000
    faults(sim, gw).add(1, "reboot", 0.8)
    t0 = time.monotonic()
    timed_failure(lambda: read_point(client, 1, starts))
    timed_failure(lambda: read_point(client, 1, starts))  # still down
    assert sim.source.reboots == []
    time.sleep(max(0.0, t0 + 0.85 - time.monotonic()))
    assert read_point(client, 1, starts).value == 0  # back, counters restarted
    assert sim.source.reboots == [device]
    assert read_point(client, 2, FC.point("start_count")).value > 0  # the neighbour did not reboot


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_fault_offline_until_removed(sim: Sim, tcp: ModbusTcpClient, rtu: ModbusSerialClient,
                                     transport: str) -> None:
    client, gw = (tcp, "gw-tcp") if transport == "tcp" else (rtu, "gw-rtu")
    rule = faults(sim, gw).add(1, "offline")
    for _ in range(2):
        timed_failure(lambda: client.read_input_registers(0, count=1, device_id=1))
    assert not client.read_input_registers(0, count=1, device_id=2).isError()
    faults(sim, gw).remove(rule)
    assert not client.read_input_registers(0, count=1, device_id=1).isError()


def test_fault_count_probability_duration(sim: Sim, tcp: ModbusTcpClient) -> None:
    inj = faults(sim, "gw-tcp")
    inj.add(1, "exception", 6, count=2)
    codes = [getattr(tcp.read_input_registers(0, count=1, device_id=1), "exception_code", 0)
             for _ in range(3)]
    assert codes == [6, 6, 0]
    inj.add(1, "exception", 4, probability=0.5)
    codes = [getattr(tcp.read_input_registers(0, count=1, device_id=1), "exception_code", 0)
             for _ in range(40)]
    assert 5 < codes.count(4) < 35 and set(codes) == {0, 4}
    inj.clear()
    inj.add(None, "exception", 4, duration_s=0.2)  # every unit, for 0.2 s
    assert tcp.read_input_registers(0, count=1, device_id=2).exception_code == 4
    time.sleep(0.25)
    assert not tcp.read_input_registers(0, count=1, device_id=2).isError()


def test_faulty_unit_does_not_hold_up_its_neighbour(sim: Sim) -> None:
    faults(sim, "gw-tcp").add(1, "offline")

    async def scenario() -> tuple[float, float]:
        stuck = AsyncModbusTcpClient("127.0.0.1", port=sim.tcp_port, timeout=1.0, retries=0)
        fine = AsyncModbusTcpClient("127.0.0.1", port=sim.tcp_port, timeout=1.0, retries=0)
        await stuck.connect()
        await fine.connect()
        try:
            t0 = time.monotonic()
            pending = asyncio.ensure_future(stuck.read_input_registers(0, count=1, device_id=1))
            await asyncio.sleep(0.05)
            r = await fine.read_holding_registers(0, count=10, device_id=2)
            neighbour = time.monotonic() - t0
            assert not r.isError()
            with pytest.raises(ModbusException):
                await pending
            return neighbour, time.monotonic() - t0
        finally:
            stuck.close()
            fine.close()

    neighbour, stuck = asyncio.run(scenario())
    assert neighbour < 0.5 and stuck >= 0.9

    # On one connection too: a request to the silent unit holds up no later request.
    adu = b"".join(struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, 0, 1)
                   for tid, unit in ((1, 1), (2, 2)))
    with socket.create_connection(("127.0.0.1", sim.tcp_port), timeout=1) as s:
        t0 = time.monotonic()
        s.sendall(adu)
        reply = s.recv(64)
        assert time.monotonic() - t0 < 0.5
    assert struct.unpack(">H", reply[:2])[0] == 2 and reply[6] == 2


def test_concurrent_connections(sim: Sim) -> None:
    async def scenario() -> list[int]:
        clients = [AsyncModbusTcpClient("127.0.0.1", port=sim.tcp_port, timeout=2, retries=0)
                   for _ in range(8)]
        for c in clients:
            await c.connect()

        async def work(c: AsyncModbusTcpClient, unit: int) -> int:
            ok = 0
            for _ in range(25):
                r = await c.read_holding_registers(0, count=24, device_id=unit)
                ok += not r.isError()
            return ok

        try:
            return list(await asyncio.gather(*(work(c, 1 + i % 2) for i, c in enumerate(clients))))
        finally:
            for c in clients:
                c.close()

    assert asyncio.run(scenario()) == [25] * 8


# -- RTU byte timing ------------------------------------------------------------------------
def test_rtu_byte_timing_takes_the_wire_time(sim: Sim) -> None:
    client = serial_client(sim.server.endpoint("gw-slow").address, SLOW_BAUD)
    client.comm_params.timeout_connect = 2.0
    assert client.connect()
    try:
        char = char_time(SLOW_BAUD, SLOW_PARITY, 1)
        assert char == pytest.approx(11 / 9600)
        n = 100
        wire = (8 + 3.5 + 5 + 2 * n) * char  # request, silence, response
        t0 = time.monotonic()
        words = read_words(client, 5, Table.HOLDING, 0, n)
        took = time.monotonic() - t0
        assert len(words) == n
        assert took >= wire, f"{took:.3f} s < wire time {wire:.3f} s"
        # Not much longer either (a loaded test machine adds scheduling delay, not wire time).
        assert took < wire * 3 + 0.5, f"{took:.3f} s for a wire time of {wire:.3f} s"
        point = FC.point("power")
        value = decode_point(point, words[point.address : point.end]).value
        assert value == expected(point, sim.source.values["fc-slow"]["power"])
    finally:
        client.close()


# -- Controllers that take one connection ---------------------------------------------------
def test_a_single_connection_controller_closes_a_second_connection() -> None:
    source = FixedSource({"cc-1": CC})
    config = EndpointConfig("gw-one", units=(UnitConfig(1, "cc-1", CC),), max_connections=1)
    server = SimServer([config], source, SimClock.manual(T0), tick_s=0.05, seed=1)
    with ServerThread(server):
        port = int(server.endpoint("gw-one").port)  # type: ignore[attr-defined]
        first = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        assert first.connect()
        try:
            assert not first.read_input_registers(0, count=2, device_id=1).isError()
            with socket.create_connection(("127.0.0.1", port), timeout=2) as second:
                second.sendall(struct.pack(">HHHBBHH", 1, 0, 6, 1, 4, 0, 2))
                # Closed without an answer: an orderly close, or a reset when the request
                # was already in the server's receive buffer as it closed.
                with contextlib.suppress(ConnectionResetError):
                    assert second.recv(64) == b""
            # the first connection is unaffected
            assert not first.read_input_registers(0, count=2, device_id=1).isError()
        finally:
            first.close()
        assert server.endpoint("gw-one").refused_connections == 1  # type: ignore[attr-defined]
        again = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        # Once the first is gone a new one is served; the server notices the close a moment
        # after the client makes it, so a connection in that moment may still be refused.
        assert again.connect()
        try:
            deadline = time.monotonic() + 2
            while True:
                r = again.read_input_registers(0, count=2, device_id=1)
                if not r.isError() or time.monotonic() > deadline:
                    break
                again.close()
                time.sleep(0.05)
                again.connect()
            assert not r.isError()
        finally:
            again.close()
