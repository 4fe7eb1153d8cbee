"""The poller against the simulator over real sockets and a real pty.

Every protocol fault the simulator injects, on TCP and on RTU: the poller does not crash,
never publishes a value the simulator does not serve, and reads good values again within
two poll periods after the fault ends. Then: learning what a device refuses (exception
02), a dead device on a shared byte-timed RTU bus, a controller that takes one TCP
connection, RTU frames over TCP, and staggered starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from support.lag import LagWatch

from edge_agent.config import LoadedConfig, parse_config
from edge_agent.poller import BackoffPolicy, Poller, PollResult, backoff_ceiling
from edge_agent.profiles import DataType, DeviceProfile, Point, builtin_profiles
from edge_agent.registers import quantize
from firmware_sim.clock import SimClock
from firmware_sim.modbus import EndpointConfig, ServerThread, SimServer, UnitConfig
from firmware_sim.source import SignalValue

pytestmark = pytest.mark.integration

T0 = datetime(2024, 6, 1, tzinfo=UTC)
PROFILES = builtin_profiles()
CC, FC = PROFILES["ew-cc100"], PROFILES["ew-fc200"]
COUNTERS = ("start_count", "runtime_hours", "energy")
FAST = 0.2  # the fast group's period in these tests
TIMEOUT = 0.1


@pytest.fixture(autouse=True)
def quiet_collector() -> Iterator[None]:
    """These tests time polls to a tenth of a second with the agent in the test process.
    Late in a full run that process holds every earlier test's objects, and one full
    collection of them can stall the event loop for longer than that (the agent's own
    process is small); so the objects alive now are set aside for the test's length."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def value_for(point: Point, i: int) -> SignalValue:
    if point.type is DataType.BOOL:
        return i % 2 == 0
    if point.type is DataType.STRING:
        return f"SN-{i:04d}"
    if point.type.is_integer and point.scale == 1 and point.offset == 0:
        return 1000 + 7 * i
    return (i + 1) * 1.25


def served(point: Point, value: SignalValue) -> SignalValue:
    """What a reader decodes after ``value`` went through the registers."""
    if isinstance(value, (bool, str)):
        return value
    exact = point.type.is_integer and point.scale == 1 and point.offset == 0
    return value if exact else quantize(point, value)


@dataclass
class Source:
    """Known values; a reboot zeroes the counters. ``allowed`` holds every value a point
    has served, so a poll result can be checked against it."""

    profiles: Mapping[str, DeviceProfile]
    now: datetime = T0
    values: dict[str, dict[str, SignalValue]] = field(default_factory=dict)
    allowed: dict[tuple[str, str], set[SignalValue]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for dev, prof in self.profiles.items():
            self.values[dev] = {p.name: value_for(p, i) for i, p in enumerate(prof.points)}
            for p in prof.points:
                self.allowed[(dev, p.name)] = {served(p, self.values[dev][p.name])}

    def advance_to(self, t: datetime) -> None:
        self.now = t

    def signals(self, device_id: str) -> Mapping[str, SignalValue]:
        return self.values[device_id]

    def reboot(self, device_id: str) -> None:
        for name in COUNTERS:
            self.values[device_id][name] = 0
            self.allowed[(device_id, name)].add(0)


TCP_DEVS = {"cc-1": (1, CC), "fc-1": (2, FC), "cc-strict": (3, CC)}
RTU_DEVS = {"cc-r1": (1, CC), "fc-r1": (2, FC)}
ONE_DEVS = {"cc-o1": (1, CC), "fc-o2": (2, FC), "cc-o3": (3, CC)}
SLOW_DEVS = {"cc-s1": (1, CC), "fc-s2": (2, FC), "cc-s3": (3, CC)}
ALL = {**TCP_DEVS, **RTU_DEVS, **ONE_DEVS, **SLOW_DEVS}


@dataclass
class Sim:
    thread: ServerThread
    server: SimServer
    source: Source

    def tcp_port(self, gw: str) -> int:
        return int(self.server.endpoint(gw).port)  # type: ignore[attr-defined]

    def pty(self, gw: str) -> str:
        return str(self.server.endpoint(gw).address)


def units(devs: Mapping[str, tuple[int, DeviceProfile]], strict: str = "") -> tuple[
        UnitConfig, ...]:
    return tuple(UnitConfig(u, d, p, refuse_unmapped=d == strict) for d, (u, p) in devs.items())


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    source = Source({d: p for d, (_, p) in ALL.items()})
    configs = [
        EndpointConfig("gw-tcp", units=units(TCP_DEVS, strict="cc-strict")),
        EndpointConfig("gw-rtu", transport="rtu", baudrate=115200, parity="N",
                       units=units(RTU_DEVS)),
        EndpointConfig("gw-one", units=units(ONE_DEVS), max_connections=1),
        EndpointConfig("gw-slow", transport="rtu", baudrate=19200, parity="N",
                       byte_timing=True, units=units(SLOW_DEVS)),
    ]
    server = SimServer(configs, source, SimClock.manual(T0), tick_s=0.05, seed=11)
    with ServerThread(server) as thread:
        yield Sim(thread, server, source)


@pytest.fixture(autouse=True)
def _clean(sim: Sim) -> Iterator[None]:
    yield
    for ep in sim.server.endpoints.values():
        ep.faults.clear()
        for unit in ep.units.values():
            unit.down_until = None
    for dev, prof in sim.source.profiles.items():  # counters a reboot zeroed count again
        for i, p in enumerate(prof.points):
            if p.name in COUNTERS:
                sim.source.values[dev][p.name] = value_for(p, i)
    for ep in sim.server.endpoints.values():
        ep.refresh()


def gateway_config(buses: list[dict[str, Any]], devices: list[dict[str, Any]],
                   fast: float = FAST) -> LoadedConfig:
    return parse_config({
        "schema_version": 1,
        "gateway": {"id": "gw-test"},
        "buses": buses,
        "poll_groups": [
            {"name": "fast", "period_s": fast, "window_s": 10},
            {"name": "default", "period_s": 2 * fast, "window_s": 10},
            {"name": "slow", "period_s": 4 * fast, "window_s": 10},
        ],
        "devices": devices,
        "uplink": {"https": {"url": "https://example.invalid"}},
    })


def tcp_bus(sim: Sim, gw: str, **kw: Any) -> dict[str, Any]:
    return {"id": gw, "type": "tcp", "host": "127.0.0.1", "port": sim.tcp_port(gw),
            "timeout_s": TIMEOUT, **kw}


def rtu_bus(sim: Sim, gw: str, baudrate: int, **kw: Any) -> dict[str, Any]:
    return {"id": gw, "type": "rtu", "port": sim.pty(gw), "baudrate": baudrate, "parity": "N",
            "timeout_s": TIMEOUT, **kw}


def devices(bus: str, devs: Mapping[str, tuple[int, DeviceProfile]]) -> list[dict[str, Any]]:
    return [{"id": d, "bus": bus, "unit_id": u, "profile": p.id} for d, (u, p) in devs.items()]


class Running:
    """A poller on its own event loop in this thread's asyncio.run, driven by a scenario,
    while :class:`LagWatch` measures how late the machine wakes this process (``lag``):
    the timing assertions allow for that starvation on top of what the agent may take."""

    def __init__(self, config: LoadedConfig, **kw: Any) -> None:
        self.results: list[PollResult] = []
        self.watch = LagWatch()
        self.poller = Poller(config, self.results.append, clock=time.monotonic,
                             rng=random.Random(5), **kw)

    @property
    def lag(self) -> float:
        return self.watch.max

    def run(self, scenario: Callable[[Running], Any]) -> None:
        async def main() -> None:
            task = asyncio.create_task(self.poller.run())
            try:
                await scenario(self)
                assert not task.done(), "the poller stopped on its own"
            finally:
                await self.poller.stop()
                await task

        with self.watch:
            asyncio.run(main())

    def of(self, device: str, group: str | None = None) -> list[PollResult]:
        return [r for r in self.results
                if r.device_id == device and (group is None or r.group == group)]


def assert_no_bad_values(sim: Sim, results: list[PollResult]) -> None:
    for r in results:
        for name, v in r.values.items():
            assert v.value in sim.source.allowed[(r.device_id, name)], (r.device_id, name, v)


def good(r: PollResult) -> bool:
    return r.ok and not r.errors


# -- every fault kind ------------------------------------------------------------------
FAULTS: list[tuple[str, float | None, dict[str, Any], str]] = [
    *[("exception", float(c), {"count": 3}, "exception") for c in (1, 2, 3, 4, 6)],
    ("timeout", None, {"count": 2}, "timeout"),
    ("garbage", None, {"count": 2}, "frame"),
    ("truncated", None, {"count": 2}, "frame"),
    ("wrong_unit", 9.0, {"count": 2}, "frame"),
    ("reboot", 0.7, {}, "timeout"),
    ("offline", None, {}, "timeout"),
]


@pytest.mark.parametrize("transport", ["tcp", "tcp_pipelined", "rtu"])
@pytest.mark.parametrize(("kind", "arg", "opts", "error_kind"), FAULTS,
                         ids=[f"{k}{'' if a is None else int(a)}" for k, a, _, _ in FAULTS])
def test_fault_no_crash_no_bad_value_recovery(sim: Sim, transport: str, kind: str,
                                              arg: float | None, opts: dict[str, Any],
                                              error_kind: str) -> None:
    if transport.startswith("tcp"):
        # Pipelined: the blocks of a poll go out together, answers paired by transaction id.
        opts_bus = {"max_in_flight": 4} if transport == "tcp_pipelined" else {}
        gw, devs, bus = "gw-tcp", {"cc-1": TCP_DEVS["cc-1"], "fc-1": TCP_DEVS["fc-1"]}, \
            tcp_bus(sim, "gw-tcp", **opts_bus)
        device, neighbour = "cc-1", "fc-1"
    else:
        gw, devs, bus = "gw-rtu", RTU_DEVS, rtu_bus(sim, "gw-rtu", 115200)
        device, neighbour = "cc-r1", "fc-r1"
    run = Running(gateway_config([bus], devices(gw, devs)))
    inj = sim.server.faults(gw)
    unit = sim.server.endpoint(gw).units[1]
    ended: list[float] = []

    async def scenario(r: Running) -> None:
        await asyncio.sleep(2 * FAST)
        assert any(good(x) for x in r.of(device, "fast"))
        rule = inj.add(1, kind, arg, **opts)
        if kind == "offline":
            await asyncio.sleep(4 * FAST)
            inj.remove(rule)
        else:
            deadline = time.monotonic() + 10 * FAST
            while rule in inj.rules() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert rule not in inj.rules(), "the fault never fired"
        end = time.monotonic()
        if kind == "reboot":
            assert unit.down_until is not None
            end = max(end, unit.down_until)
        ended.append(end)
        slow = 4 * FAST if kind == "reboot" else 0.0  # the counters are in the slow group
        # An outage of 4 periods backs the device off by up to 4 periods (jittered): the
        # next try may come that long after the device is back, plus a timeout.
        backoff = 4 * FAST if kind == "offline" else 0.0
        await asyncio.sleep(max(0.0, end - time.monotonic()) + 2.5 * FAST + slow + backoff)

    run.run(scenario)
    assert_no_bad_values(sim, run.results)
    end = ended[0]
    after = [x for x in run.of(device, "fast") if x.ts >= end and good(x)]
    assert after, "no good poll after the fault"
    # Read again as soon as the backoff in force allows: the first attempt after the device
    # is back succeeds, and its slot is the first on the grid after the backoff that
    # followed the last failure (or after the device came back). The backoff grows with
    # the device's failures, counted as the poller counts them: a failed poll of any group,
    # once a period. A poll of a device that failed last time then waits for room on the
    # bus, at most one period or half its backoff, plus the timeout of a poll under way.
    before = [x for x in run.of(device) if x.ts < after[0].ts]
    assert not [x for x in before if x.errors and x.ts > end + 0.05], "failed after recovery"
    failed_run = list(itertools.takewhile(lambda x: bool(x.errors), reversed(before)))[::-1]
    failures, counted_at = 0, end
    for x in failed_run:
        done = x.ts + x.rtt_s
        if failures == 0 or done - counted_at >= 0.9 * FAST:
            failures, counted_at = failures + 1, done
    ceiling = backoff_ceiling(BackoffPolicy(), failures, FAST)
    retry_at = counted_at + ceiling
    first = after[0]
    slack = 0.02 + run.lag
    assert first.due <= max(end, retry_at) + FAST + slack, (first.due - end, failures, run.lag)
    wait = max(FAST, ceiling / 2)
    assert first.ts - first.due <= wait + TIMEOUT + slack, (first.ts - first.due, run.lag)
    failed = [x for x in run.of(device) if x.errors]
    assert failed, "the fault was not seen"
    assert all(not x.values.keys() & x.errors.keys() for x in run.results)
    stats = run.poller.stats()
    assert stats[device].errors[error_kind] > 0, stats[device]
    assert stats[device].state == "ok"
    assert all(good(x) for x in run.of(neighbour)[-4:])
    if kind == "reboot":
        counters = [x.values["start_count"].value for x in run.of(device)
                    if "start_count" in x.values]
        assert counters[0] != 0 and counters[-1] == 0  # read after the restart


# -- exception 02 learning -------------------------------------------------------------
def test_refused_addresses_are_learned_then_every_point_reads(sim: Sim) -> None:
    strict = devices("gw-tcp", {"cc-strict": TCP_DEVS["cc-strict"]})
    strict[0]["max_gap"] = 30  # reads holding 100..120 through the unmapped 103..119
    run = Running(gateway_config([tcp_bus(sim, "gw-tcp")], strict))

    async def scenario(r: Running) -> None:
        await asyncio.sleep(10 * FAST)

    run.run(scenario)
    res = run.of("cc-strict")
    assert_no_bad_values(sim, res)
    first = [x for x in res if x.errors]
    assert any("exception 0x02" in x.errors.values() for x in first)  # planned with gaps
    last = {g: [x for x in res if x.group == g][-2:] for g in ("fast", "default", "slow")}
    for group, polls in last.items():
        assert polls and all(good(x) for x in polls), group
    names = {n for x in res[-12:] for n in x.values}
    assert names == set(CC.names)  # every point read, none given up
    assert run.poller.stats()["cc-strict"].unreadable == ()
    # and the learning settled: the last polls of each group all good, in a row
    fast = [good(x) for x in run.of("cc-strict", "fast")]
    assert all(fast[-6:])


# -- a dead device on a shared, byte-timed RTU bus -------------------------------------
def test_dead_device_does_not_delay_its_neighbours(sim: Sim) -> None:
    period = 0.5
    bus = rtu_bus(sim, "gw-slow", 19200, timeout_s=0.1)
    run = Running(gateway_config([bus], devices("gw-slow", SLOW_DEVS), fast=period),
                  backoff=BackoffPolicy(max_s=1.5))
    sim.server.faults("gw-slow").add(2, "offline")

    async def scenario(r: Running) -> None:
        await asyncio.sleep(8.0)

    run.run(scenario)
    assert_no_bad_values(sim, run.results)
    probes = [x.ts for x in run.of("fc-s2")]
    slack = 0.06 + run.lag  # a poll's own jitter, and the machine's
    for dev in ("cc-s1", "cc-s3"):
        polls = run.of(dev, "fast")
        assert all(good(x) for x in run.of(dev))
        assert len(polls) >= 14
        # On schedule: every slot of the grid polled, none skipped (a poll would have to
        # start a period late for the next slot to pass; only a machine that stalled this
        # process that long could make it).
        steps = [round((b.due - a.due) / period, 2) for a, b in itertools.pairwise(polls)]
        stalls = run.watch.over(period - TIMEOUT - slack)
        assert sum(k - 1 for k in steps) <= len(stalls), (steps, stalls)
        assert all(k == round(k) for k in steps), steps
        late = [round(x.ts - x.due, 3) for x in polls]
        assert all(x < TIMEOUT + slack for x in late), (late, run.lag)  # at most a timeout
        # Only while the dead device was not known dead yet (its first, unbacked-off
        # failures) may one of its timeouts delay a neighbour. Its backed-off probes
        # (every 1.5 s) wait for room on the bus, and run anyway after half their
        # interval: on a loaded machine, where polls take longer and the room runs out,
        # such a probe may delay one neighbour's poll. Never more than one per probe.
        delayed = [(i, x) for i, x in enumerate(late) if i >= 7 and x > slack]
        probes_meanwhile = [t for t in probes if t > polls[6].ts]
        assert len(delayed) <= max(1, len(probes_meanwhile)), (delayed, probes_meanwhile)
    assert all(not x.ok and not x.values for x in run.of("fc-s2"))
    intervals = [b - a for a, b in itertools.pairwise(probes)]
    assert len(probes) <= 12  # 16 fast polls and 12 of the other groups were due
    assert max(intervals) <= 1.5 + 1.5 / 2 + 0.1  # capped (+ waiting for room)
    assert max(intervals[-3:]) > 0.9  # backed off
    stats = run.poller.stats()
    assert stats["fc-s2"].state == "backing_off" and stats["fc-s2"].consecutive_failures > 4
    assert stats["cc-s1"].state == "ok"


# -- one connection for every device of a single-connection controller ------------------
def test_single_connection_controller_gets_one_connection(sim: Sim) -> None:
    ep = sim.server.endpoint("gw-one")
    before = ep.refused_connections  # type: ignore[attr-defined]
    run = Running(gateway_config([tcp_bus(sim, "gw-one", max_connections=1)],
                                 devices("gw-one", ONE_DEVS)))

    async def scenario(r: Running) -> None:
        await asyncio.sleep(6 * FAST)

    run.run(scenario)
    assert ep.refused_connections == before  # type: ignore[attr-defined]
    assert_no_bad_values(sim, run.results)
    for dev in ONE_DEVS:
        assert run.of(dev) and all(good(x) for x in run.of(dev)), dev
    # Staggered: no two device x group schedules are due together, and each first poll
    # ran in its slot (one at a time on the single connection).
    firsts: dict[tuple[str, str], PollResult] = {}
    for x in run.results:
        firsts.setdefault((x.device_id, x.group), x)
    dues = sorted(x.due for x in firsts.values())
    assert len(dues) == 9
    assert min(b - a for a, b in itertools.pairwise(dues)) > 0.005
    assert dues[-1] - dues[0] > FAST / 2
    assert max(x.ts - x.due for x in firsts.values()) < 0.05 + run.lag, run.lag


def test_tcp_with_more_connections_spreads_devices(sim: Sim) -> None:
    run = Running(gateway_config([tcp_bus(sim, "gw-tcp", max_connections=4)],
                                 devices("gw-tcp", {"cc-1": TCP_DEVS["cc-1"],
                                                    "fc-1": TCP_DEVS["fc-1"]})))

    async def scenario(r: Running) -> None:
        await asyncio.sleep(3 * FAST)

    run.run(scenario)
    assert {l.name for l in run.poller._lanes} == {"gw-tcp#1", "gw-tcp#2"}  # noqa: E741
    assert_no_bad_values(sim, run.results)
    assert all(good(x) for x in run.results) and len(run.results) >= 6


# -- RTU frames over TCP (a serial-to-Ethernet converter in front of the pty) ------------
@contextlib.asynccontextmanager
async def converter(pty_path: str) -> Any:
    """A TCP server that relays bytes to and from the simulator's RTU pty."""
    fd = os.open(pty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    writers: list[asyncio.StreamWriter] = []

    def from_pty() -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(fd, 1024)
            for w in writers:
                w.write(data)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while data := await reader.read(1024):
                os.write(fd, data)
        finally:
            writers.remove(writer)
            writer.close()

    import tty
    tty.setraw(fd)
    loop.add_reader(fd, from_pty)
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for w in list(writers):
            w.close()
        await server.wait_closed()
        loop.remove_reader(fd)
        os.close(fd)


def test_rtu_over_tcp(sim: Sim) -> None:
    results: list[PollResult] = []
    faults = sim.server.faults("gw-rtu")

    async def main() -> None:
        async with converter(sim.pty("gw-rtu")) as port:
            cfg = gateway_config(
                [{"id": "conv", "type": "rtu_over_tcp", "host": "127.0.0.1", "port": port,
                  "timeout_s": TIMEOUT}], devices("conv", RTU_DEVS))
            poller = Poller(cfg, results.append, clock=time.monotonic)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(3 * FAST)
            faults.add(1, "garbage", count=1)
            await asyncio.sleep(4 * FAST)
            await poller.stop()
            await task

    asyncio.run(main())
    assert_no_bad_values(sim, results)
    for dev in RTU_DEVS:
        mine = [x for x in results if x.device_id == dev]
        assert len(mine) >= 8 and good(mine[-1]), dev
    assert any(x.errors for x in results if x.device_id == "cc-r1")  # the garbage was seen


# -- a link that is down -------------------------------------------------------------------
def test_unreachable_endpoint_fails_fast_and_reconnects_with_backoff() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = gateway_config([{"id": "gone", "type": "tcp", "host": "127.0.0.1", "port": port,
                           "timeout_s": TIMEOUT}], devices("gone", {"cc-x": (1, CC)}))
    run = Running(cfg)

    async def scenario(r: Running) -> None:
        await asyncio.sleep(5 * FAST)

    run.run(scenario)
    assert run.results and all(not x.ok and not x.values for x in run.results)
    assert {v for x in run.results for v in x.errors.values()} == {"link down"}
    stats = run.poller.stats()["cc-x"]
    assert stats.errors["link"] == len(run.results) and stats.errors["timeout"] == 0
    assert stats.state == "backing_off"
