"""The poller: every device's poll groups, on schedule, one request at a time per bus.

Service layer over :mod:`edge_agent.transport` (links) and :mod:`edge_agent.planner`
(read blocks, refusals, decoding). The scheduling decisions are pure functions here
(:func:`backoff_delay`, :func:`stagger_fractions`, :func:`next_due`, :func:`choose`),
table-tested without I/O.

- One *lane* is one link and one queue: an RTU bus, an RTU-over-TCP bus, and a TCP
  endpoint that takes one connection (``max_connections: 1``) each get one lane shared
  by their devices; a TCP endpoint that takes more gets up to ``max_connections`` lanes,
  its devices spread over them. A lane runs one request at a time.
- Every device × poll group is due at ``origin + k * period``; the origins are staggered
  over the shortest period (a low-discrepancy sequence over all device × group pairs),
  so groups and devices are not fired together.
- A device that gives no usable answer (timeout, garbage, wrong unit) is retried on its
  normal schedule ``free_failures`` times, then backed off: exponentially, jittered,
  capped at ``max_s`` (30 s). Its neighbours keep their schedule: a device that may
  cost a timeout (it failed last time) is only polled when the lane has room for that
  timeout before a healthy device's poll is due (or when it has waited a period of its
  own, or half its backoff interval if longer). The first good answer puts it back on
  its schedule at once.
- Exception answers are answers: the device is alive and is not backed off. Exception 02
  teaches the device's :class:`~edge_agent.planner.Refusals` what it refuses, and the
  group is planned again. A lost connection is the link's problem (it reconnects with
  its own backoff) and does not back the devices off.

Output: one :class:`PollResult` per device × group × poll made (a poll skipped while the
device is backed off produces none). Values of a block come all or none: a block that
fails or does not decode puts its points in ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from edge_agent.config import DeviceSettings, LoadedConfig, RtuBus, RtuOverTcpBus, TcpBus
from edge_agent.errors import (
    CodecError,
    ConfigError,
    DeviceTimeout,
    FrameError,
    LinkError,
    ModbusException,
    TransportError,
)
from edge_agent.planner import (
    ReadBlock,
    Refusals,
    decode_block,
    group_points,
    plan_reads,
    unreadable_points,
)
from edge_agent.profiles import DeviceProfile, Point
from edge_agent.registers import PointValue
from edge_agent.transport import Link, ModbusLink

log = logging.getLogger(__name__)

Bus = TcpBus | RtuBus | RtuOverTcpBus

_GOLDEN = (math.sqrt(5) - 1) / 2
_EWMA_ALPHA = 0.2
_PROBE_MARGIN_S = 0.02


def _ewma(average: float | None, sample: float) -> float:
    """``average`` moved :data:`_EWMA_ALPHA` of the way to ``sample`` (the first sample
    starts it)."""
    return sample if average is None else average + _EWMA_ALPHA * (sample - average)


# -- pure scheduling -------------------------------------------------------------------
@dataclass(frozen=True)
class BackoffPolicy:
    """How a device that stops answering is retried."""

    free_failures: int = 3
    """Failed polls retried on the normal schedule before backing off: a transient fault
    (a garbled answer, a reboot of a few poll periods) is over before the backoff grows."""
    base_s: float | None = None
    """First backoff interval; None: the device's shortest poll period."""
    factor: float = 2.0
    max_s: float = 30.0
    """Cap of the interval between two attempts at a dead device."""

    def __post_init__(self) -> None:
        if self.free_failures < 0 or self.factor < 1 or self.max_s <= 0:
            raise ValueError(f"invalid backoff policy {self}")
        if self.base_s is not None and self.base_s <= 0:
            raise ValueError(f"base_s must be > 0, got {self.base_s}")


def backoff_ceiling(policy: BackoffPolicy, failures: int, base_s: float) -> float:
    """The longest wait after ``failures`` consecutive failed polls (0: normal schedule)."""
    if failures <= policy.free_failures:
        return 0.0
    base = policy.base_s if policy.base_s is not None else base_s
    k = failures - policy.free_failures - 1
    return min(policy.max_s, base * policy.factor ** min(k, 64))


def backoff_delay(policy: BackoffPolicy, failures: int, base_s: float, rng: random.Random) -> float:
    """Seconds from a failed poll to the earliest next attempt (0: normal schedule).

    Jittered in the upper half of the exponential ceiling ("equal jitter"): attempts at
    many dead devices spread out, and the interval still doubles on average.
    """
    ceiling = backoff_ceiling(policy, failures, base_s)
    if ceiling <= 0:
        return 0.0
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def stagger_fractions(n: int) -> list[float]:
    """``n`` fractions of a period, spread evenly for any ``n`` (golden-ratio sequence)."""
    return [(i * _GOLDEN) % 1.0 for i in range(n)]


def next_due(origin: float, period: float, after: float, *, inclusive: bool = False) -> float:
    """The first time ``origin + k * period`` (k integer) later than ``after`` (or equal,
    with ``inclusive``)."""
    t = origin + math.ceil((after - origin) / period) * period
    if t < after:  # rounding
        t += period
    if t == after and not inclusive:
        t += period
    return t


@dataclass(frozen=True)
class Slot:
    """A poll as the lane scheduler sees it."""

    key: int
    due: float
    suspect: bool
    """The device failed last time: this poll may cost a timeout."""
    cost_s: float
    """What the poll may cost if the device is still silent."""
    max_wait_s: float
    """How long a suspect poll may wait for room before it runs anyway."""


def choose(slots: Sequence[Slot], now: float) -> tuple[int | None, float]:
    """The poll to run now (its key) or ``None`` and the time to wake up.

    Healthy polls that are due run first, earliest first. A suspect poll that is due runs
    only when the lane is idle for its cost before the next healthy poll, or once it has
    waited ``max_wait_s``.
    """
    if not slots:
        return None, math.inf
    due = sorted((s for s in slots if s.due <= now), key=lambda s: (s.due, s.key))
    for s in due:
        if not s.suspect:
            return s.key, now
    next_healthy = min((s.due for s in slots if not s.suspect), default=math.inf)
    for s in due:
        if next_healthy - now >= s.cost_s or now - s.due >= s.max_wait_s:
            return s.key, now
    wake = min(
        [next_healthy] + [s.due + s.max_wait_s for s in due] + [s.due for s in slots if s.due > now]
    )
    return None, wake


# -- results and stats ---------------------------------------------------------------
@dataclass(frozen=True)
class PollResult:
    """One poll of one device's poll group."""

    device_id: str
    group: str
    ts: float
    """Wall-clock epoch seconds when the poll started."""
    due: float
    """When the poll was scheduled, on the same clock as ``ts``: ``ts - due`` is how late
    it started (waiting for the bus, or for the gateway's CPU)."""
    values: Mapping[str, PointValue]
    """The group's points that were read and decoded this poll."""
    errors: Mapping[str, str]
    """Point name -> why it has no value this poll ("timeout", "exception 0x02", ...)."""
    ok: bool
    """The device answered at least one block with data."""
    rtt_s: float
    """Time the group's requests took."""


@dataclass(frozen=True)
class DeviceStats:
    """A device's polling health, for ``status``."""

    device_id: str
    bus: str
    state: str
    """``unknown`` (not polled yet), ``ok``, ``backing_off`` (failing), or ``offline``
    (no good answer for ``alarms.offline_after_s``)."""
    requests: int
    ok: int
    """Requests answered with data."""
    errors: Mapping[str, int]
    """Failed requests by kind: timeout, exception, frame, link."""
    consecutive_failures: int
    """Polls in a row without a usable answer."""
    rtt_ewma_s: float | None
    late_ewma_s: float | None
    """How late its polls start after their slot, smoothed: time spent waiting for the bus
    (or for the gateway's CPU). Growing lateness means more polls than the bus carries."""
    last_ok_ts: float | None
    polls: int
    missed_polls: int
    """Scheduled polls skipped: backed off, or the lane was too busy."""
    unreadable: tuple[str, ...]
    """Points the device refuses (exception 02), tried again after an hour."""
    next_attempt_in_s: float
    """While backing off: seconds to the next attempt."""


# -- state ---------------------------------------------------------------------------
_KINDS = ("timeout", "exception", "frame", "link")


@dataclass(eq=False)
class _Device:
    settings: DeviceSettings
    profile: DeviceProfile
    bus_id: str
    base_s: float
    refusals: Refusals
    failures: int = 0
    """Consecutive poll periods the device gave no usable answer (drives the backoff)."""
    failed_at: float = 0.0
    failed_polls: int = 0
    """Consecutive polls without data, for any reason."""
    not_before: float = 0.0
    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    rtt_ewma_s: float | None = None
    late_ewma_s: float | None = None
    last_ok_ts: float | None = None
    last_ok_mono: float | None = None
    polls: int = 0
    missed: int = 0
    failing_since: float | None = None
    reported_unreadable: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.settings.id


@dataclass(eq=False)
class _Job:
    key: int
    device: _Device
    group: str
    period: float
    points: tuple[Point, ...]
    offset: float = 0.0
    """Where in the shortest period the job's slots fall (the stagger)."""
    origin: float = 0.0
    """The job's first slot on the monotonic clock: slots are ``origin + k * period``."""
    due: float = 0.0
    scheduled_due: float | None = None
    """Set while a "poll now" brought the job forward: the slot it had on its grid."""
    _plan: list[ReadBlock] | None = None
    _plan_version: int = -1
    _unreadable: list[Point] | None = None
    _unreadable_version: int = -1

    def unreadable(self) -> list[Point]:
        """The job's points the device refuses (cached per refusal version)."""
        r = self.device.refusals
        if self._unreadable is None or self._unreadable_version != r.version:
            self._unreadable = unreadable_points(self.points, r.refused) if r.refused else []
            self._unreadable_version = r.version
        return self._unreadable

    def plan(self) -> list[ReadBlock]:
        r = self.device.refusals
        if self._plan is None or self._plan_version != r.version:
            s = self.device.settings
            self._plan = plan_reads(
                self.device.profile,
                self.points,
                max_gap=s.max_gap,
                max_registers=s.max_registers,
                refused=r.refused,
                isolated=r.isolated,
            )
            self._plan_version = r.version
        return self._plan


@dataclass(eq=False)
class _Lane:
    name: str
    link: Link
    jobs: list[_Job] = field(default_factory=list)
    link_failures: int = 0


class Poller:
    """Polls every device of a gateway config and hands each poll's result to ``on_result``.

    ::

        poller = Poller(load_config("agent.yaml"), queue.put_nowait)
        task = asyncio.create_task(poller.run())
        ...
        await poller.stop()

    ``clock`` stamps results (epoch seconds); ``monotonic`` schedules; ``rng`` jitters
    the backoff. ``link_factory(bus, lane_name)`` opens a bus's link (default:
    :meth:`ModbusLink.for_bus`).
    """

    def __init__(
        self,
        loaded_config: LoadedConfig,
        on_result: Callable[[PollResult], None],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        backoff: BackoffPolicy | None = None,
        link_factory: Callable[[Bus, str], Link] | None = None,
        unreadable_retry_s: float = 3600.0,
    ) -> None:
        cfg = loaded_config.config
        self._on_result = on_result
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng if rng is not None else random.Random(0x5EED)  # noqa: S311 - jitter
        self._backoff = backoff or BackoffPolicy()
        self._offline_after_s = cfg.alarms.offline_after_s
        make_link = link_factory or (lambda bus, _name: ModbusLink.for_bus(bus))
        periods = {g.name: g.period_s for g in cfg.poll_groups}

        self._devices: dict[str, _Device] = {}
        jobs: list[_Job] = []
        for i, d in enumerate(cfg.devices):
            profile = loaded_config.profiles[d.id]
            groups = group_points(profile, d.poll_groups)
            dev = _Device(
                settings=d,
                profile=profile,
                bus_id=d.bus,
                base_s=min(periods[g] for g in groups),
                refusals=Refusals(retry_s=unreadable_retry_s),
            )
            self._devices[d.id] = dev
            for group in sorted(groups, key=lambda g: (periods[g], g)):
                job = _Job(len(jobs), dev, group, periods[group], tuple(groups[group]))
                try:
                    job.plan()
                except ValueError as exc:
                    raise ConfigError(
                        loaded_config.source, f"devices[{i}]({d.id}).max_registers", str(exc)
                    ) from None
                jobs.append(job)
        # Origins spread over the shortest period: with periods that are multiples of
        # it (1 s, 10 s, 60 s), two schedules never fall on the same instant.
        shortest = min((j.period for j in jobs), default=1.0)
        for job, frac in zip(jobs, stagger_fractions(len(jobs)), strict=True):
            job.offset = frac * shortest

        self._lanes: list[_Lane] = []
        for bus in cfg.buses:
            mine = [j for j in jobs if j.device.bus_id == bus.id]
            if not mine:
                continue
            ids = list(dict.fromkeys(j.device.id for j in mine))
            n = bus.max_connections if isinstance(bus, TcpBus) else 1
            n = max(1, min(n, len(ids)))
            for k in range(n):
                name = bus.id if n == 1 else f"{bus.id}#{k + 1}"
                lane_ids = set(ids[k::n])
                lane = _Lane(
                    name, make_link(bus, name), [j for j in mine if j.device.id in lane_ids]
                )
                self._lanes.append(lane)
        self._jobs = jobs
        self._stopping = asyncio.Event()
        self._sleepers: set[asyncio.Future[None]] = set()
        """What sleeping lanes wait on; resolved to wake them (stop, poll now)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._started_mono: float | None = None

    # -- lifecycle --------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until :meth:`stop`; raises what ``on_result`` raises."""
        if self._tasks:
            raise RuntimeError("the poller is already running")
        self._stopping.clear()
        start = self._monotonic()
        self._started_mono = start
        for job in self._jobs:
            job.origin = job.due = start + job.offset
        self._tasks = [
            asyncio.create_task(self._run_lane(lane), name=f"poll-{lane.name}")
            for lane in self._lanes
        ]
        log.info(
            "polling %d devices (%d device x group schedules) on %d lanes",
            len(self._devices),
            len(self._jobs),
            len(self._lanes),
        )
        try:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                exc = None if t.cancelled() else t.exception()
                if exc is not None:
                    raise exc
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            for lane in self._lanes:
                await lane.link.close()

    async def stop(self) -> None:
        """Stop polling; a request in flight is abandoned."""
        self._stopping.set()
        self._wake_lanes()
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- lanes ------------------------------------------------------------------------
    async def _run_lane(self, lane: _Lane) -> None:
        jobs = lane.jobs
        by_key = {j.key: j for j in jobs}
        cost = lane.link.timeout_s + _PROBE_MARGIN_S
        while not self._stopping.is_set():
            now = self._monotonic()
            suspects = False
            for j in jobs:
                dev = j.device
                if dev.not_before > j.due:  # backed off: skip to the first slot after
                    self._push(j, dev.not_before)
                if dev.failures:
                    suspects = True
            job: _Job | None
            if suspects:
                slots = [
                    Slot(j.key, j.due, j.device.failures > 0, cost, self._max_wait(j)) for j in jobs
                ]
                key, wake = choose(slots, now)
                job = None if key is None else by_key[key]
            else:
                # Every device healthy: what choose() decides, without building the slots
                # (the earliest due poll, ties by key; it runs if it is due).
                job = min(jobs, key=_due_order, default=None)
                if job is None or job.due > now:
                    wake = math.inf if job is None else job.due
                    job = None
            if job is None:
                await self._sleep(wake - now)
                continue
            await self._poll(lane, job, now)
            self._reschedule(job, self._monotonic())

    def _max_wait(self, job: _Job) -> float:
        """How long a poll of a failing device may wait for room on the lane: one period,
        or half its current backoff interval, whichever is longer."""
        ceiling = backoff_ceiling(self._backoff, job.device.failures, job.device.base_s)
        return max(job.period, ceiling / 2)

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (at most an hour), or until :meth:`_wake_lanes`.

        A future and a timer, not ``wait_for(event.wait())``: a lane sleeps between most
        of its polls, and ``wait_for`` wraps the wait in a task of its own each time."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(max(0.0, min(seconds, 3600.0)), _resolve, wake)
        self._sleepers.add(wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._sleepers.discard(wake)

    def _wake_lanes(self) -> None:
        for wake in self._sleepers:
            _resolve(wake)

    def poll_now(self, devices: Collection[str] | None = None) -> list[str]:
        """Poll every group of the named devices (all when None) at once, besides their
        schedule, which they then keep. A backed-off device stays backed off. Returns the
        ids of the devices brought forward (unknown ids are left out)."""
        now = self._monotonic()
        wanted = set(self._devices) if devices is None else set(devices) & set(self._devices)
        for job in self._jobs:
            if job.device.id in wanted:
                if job.scheduled_due is None:
                    job.scheduled_due = job.due
                job.due = min(job.due, now)
        self._wake_lanes()
        return sorted(wanted)

    def _reschedule(self, job: _Job, now: float) -> None:
        """After a poll: the next slot on the job's grid (slots already past are missed)."""
        if job.scheduled_due is not None:  # an extra poll: back to the grid, nothing missed
            slot, job.scheduled_due = job.scheduled_due, None
            job.due = slot if slot > now else next_due(job.origin, job.period, now)
            return
        nxt = job.due + job.period
        if nxt <= now:
            nxt = next_due(job.origin, job.period, now)
        job.device.missed += max(0, round((nxt - job.due) / job.period) - 1)
        job.due = nxt

    def _push(self, job: _Job, not_before: float) -> None:
        """Backed off: the first slot on the job's grid at or after ``not_before``."""
        nxt = next_due(job.origin, job.period, not_before, inclusive=True)
        job.device.missed += max(0, round((nxt - job.due) / job.period))
        job.due = nxt

    # -- one poll ---------------------------------------------------------------------
    async def _poll(self, lane: _Lane, job: _Job, now: float) -> None:
        dev = job.device
        for name in dev.refusals.expire(now, dev.profile):
            log.info("device %s: trying point %s again (refused before)", dev.id, name)
        ts = self._clock()
        late = max(0.0, self._monotonic() - job.due)
        dev.late_ewma_s = _ewma(dev.late_ewma_s, late)
        dev.polls += 1
        tally = _Tally()
        for p in job.unreadable():
            tally.errors[p.name] = "refused (exception 0x02)"
        blocks = job.plan()
        link = lane.link
        if link.max_in_flight > 1 and len(blocks) > 1:
            # Pipelined: the blocks go out together; each round trip counts once.
            t0 = self._monotonic()
            dev.requests += len(blocks)
            outcomes = await link.read_many(
                dev.settings.unit_id, [(b.table, b.address, b.count) for b in blocks]
            )
            trips = -(-len(blocks) // link.max_in_flight)
            took = (self._monotonic() - t0) / trips
            tally.rtt = took * trips
            for block, got in zip(blocks, outcomes, strict=True):
                self._take(dev, block, got, 0.0, now, tally)
            if tally.answered:
                dev.rtt_ewma_s = _ewma(dev.rtt_ewma_s, took)
        else:
            for i, block in enumerate(blocks):
                t0 = self._monotonic()
                dev.requests += 1
                outcome: list[int] | TransportError
                try:
                    outcome = await link.read(
                        dev.settings.unit_id, block.table, block.address, block.count
                    )
                except TransportError as exc:
                    outcome = exc
                took = self._monotonic() - t0
                if not self._take(dev, block, outcome, took, now, tally):
                    why = "link down" if isinstance(outcome, LinkError) else "timeout"
                    # A silent device costs one timeout, not one a block.
                    for rest in blocks[i + 1 :]:
                        _put(tally.errors, rest.points, why)
                    break
        self._account(
            lane, dev, tally.answered, tally.silent, tally.link_down, tally.first_error, ts
        )
        self._on_result(
            PollResult(
                device_id=dev.id,
                group=job.group,
                ts=ts,
                due=ts - late,
                values=MappingProxyType(tally.values),
                errors=MappingProxyType(tally.errors),
                ok=tally.answered,
                rtt_s=tally.rtt,
            )
        )

    def _take(
        self,
        dev: _Device,
        block: ReadBlock,
        outcome: list[int] | TransportError,
        took: float,
        now: float,
        tally: _Tally,
    ) -> bool:
        """Count one block's outcome into ``tally`` (``took``: its round trip, 0 if counted
        by the caller); False if the device is silent or its link down."""
        tally.rtt += took
        if not isinstance(outcome, TransportError):
            try:
                decoded = decode_block(block, outcome)
            except CodecError as exc:
                outcome = FrameError(str(exc))
            else:
                if took:
                    dev.rtt_ewma_s = _ewma(dev.rtt_ewma_s, took)
                dev.ok += 1
                tally.values.update(decoded)
                tally.answered = True
                dev.refusals.confirm(block)
                return True
        if isinstance(outcome, ModbusException):
            dev.errors["exception"] += 1
            tally.first_error = tally.first_error or outcome
            if outcome.code == 2:
                self._learn(dev, block, now)
            _put(tally.errors, block.points, f"exception {outcome.code:#04x}")
            return True
        if isinstance(outcome, (DeviceTimeout, LinkError)):
            link_down = isinstance(outcome, LinkError)
            if not tally.cut_off:  # once a poll, however many blocks
                dev.errors["link" if link_down else "timeout"] += 1
                tally.cut_off = True
            tally.first_error = tally.first_error or outcome
            tally.link_down |= link_down
            tally.silent |= not link_down
            _put(tally.errors, block.points, "link down" if link_down else "timeout")
            return False
        dev.errors["frame"] += 1
        tally.first_error = tally.first_error or outcome
        tally.silent = True
        _put(tally.errors, block.points, "frame error")
        return True

    def _learn(self, dev: _Device, block: ReadBlock, now: float) -> None:
        for name in dev.refusals.learn(block, dev.profile, now):
            if name not in dev.reported_unreadable:
                dev.reported_unreadable.add(name)
                log.warning(
                    "device %s refuses point %s (exception 02); not read again for %.0f s",
                    dev.id,
                    name,
                    dev.refusals.retry_s,
                )
        log.debug(
            "device %s refused %s %d+%d; reads re-planned",
            dev.id,
            block.table.value,
            block.address,
            block.count,
        )

    def _account(
        self,
        lane: _Lane,
        dev: _Device,
        answered: bool,
        silent: bool,
        link_down: bool,
        error: TransportError | None,
        ts: float,
    ) -> None:
        now = self._monotonic()
        if answered or (error is not None and not silent and not link_down):
            # Data, or exception answers only: the device is alive.
            if dev.failed_polls and answered:
                log.info(
                    "device %s answers again after %d failed polls (%.1f s)",
                    dev.id,
                    dev.failed_polls,
                    now - (dev.failing_since or now),
                )
            if answered:
                dev.failed_polls = 0
                dev.failing_since = None
                dev.last_ok_ts, dev.last_ok_mono = ts, now
            dev.failures = 0
            dev.not_before = 0.0
        if lane.link_failures and not link_down and (answered or silent):
            log.info("%s: link up again after %d failed requests", lane.name, lane.link_failures)
            lane.link_failures = 0
        if link_down:
            lane.link_failures += 1
            if lane.link_failures == 1:
                log.warning("%s: %s (repeats at DEBUG)", lane.name, error)
            else:
                log.debug("%s: %s (%d times)", lane.name, error, lane.link_failures)
        if answered or error is None:
            return
        if not silent and not link_down:
            return  # answered with exceptions only
        dev.failed_polls += 1
        if dev.failing_since is None:
            dev.failing_since = now
        if silent and (dev.failures == 0 or now - dev.failed_at >= 0.9 * dev.base_s):
            # Counted once a poll period: the groups of one device failing together
            # are one failure, not one a group.
            dev.failures += 1
            dev.failed_at = now
            delay = backoff_delay(self._backoff, dev.failures, dev.base_s, self._rng)
            dev.not_before = now + delay if delay > 0 else 0.0
            if dev.failures == 1:
                log.warning(
                    "device %s: %s; retrying with backoff (repeats at DEBUG)", dev.id, error
                )
            else:
                log.debug(
                    "device %s: %s (%d failed polls, next attempt in %.1f s)",
                    dev.id,
                    error,
                    dev.failures,
                    delay,
                )

    # -- status -----------------------------------------------------------------------
    def stats(self) -> dict[str, DeviceStats]:
        """Every device's polling health, by device id."""
        now = self._monotonic()
        out = {}
        for dev in self._devices.values():
            out[dev.id] = DeviceStats(
                device_id=dev.id,
                bus=dev.bus_id,
                state=self._state(dev, now),
                requests=dev.requests,
                ok=dev.ok,
                errors=dict(dev.errors),
                consecutive_failures=dev.failed_polls,
                rtt_ewma_s=dev.rtt_ewma_s,
                late_ewma_s=dev.late_ewma_s,
                last_ok_ts=dev.last_ok_ts,
                polls=dev.polls,
                missed_polls=dev.missed,
                unreadable=tuple(sorted(dev.refusals.unreadable)),
                next_attempt_in_s=max(0.0, dev.not_before - now),
            )
        return out

    def _state(self, dev: _Device, now: float) -> str:
        if dev.polls == 0:
            return "unknown"
        since = dev.last_ok_mono if dev.last_ok_mono is not None else self._started_mono
        if dev.failed_polls and since is not None and now - since >= self._offline_after_s:
            return "offline"
        return "backing_off" if dev.failed_polls else "ok"


def _due_order(job: _Job) -> tuple[float, int]:
    return job.due, job.key


def _resolve(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


@dataclass(slots=True)
class _Tally:
    """What the blocks of one poll gave, as they come in."""

    values: dict[str, PointValue] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    answered: bool = False
    silent: bool = False
    link_down: bool = False
    cut_off: bool = False
    """A timeout or a lost link was counted (once a poll)."""
    rtt: float = 0.0
    first_error: TransportError | None = None


def _put(errors: dict[str, str], points: Sequence[Point], why: str) -> None:
    for p in points:
        errors[p.name] = why
