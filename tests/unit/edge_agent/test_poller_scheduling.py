"""The poller's pure scheduling: backoff, stagger, grid slots, and the lane's choice of
what to run next; then the poller itself over a fake link (no sockets)."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from typing import Any

import pytest
from support.lag import LagWatch

from edge_agent.config import LoadedConfig, parse_config
from edge_agent.errors import DeviceTimeout, FrameError, ModbusException
from edge_agent.poller import (
    BackoffPolicy,
    Poller,
    PollResult,
    Slot,
    backoff_ceiling,
    backoff_delay,
    choose,
    next_due,
    stagger_fractions,
)
from edge_agent.profiles import Table


# -- backoff -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "failures", "base", "ceiling"),
    [
        (BackoffPolicy(), 0, 1.0, 0.0),
        (BackoffPolicy(), 1, 1.0, 0.0),  # transient: next poll on schedule
        (BackoffPolicy(), 3, 1.0, 0.0),
        (BackoffPolicy(), 4, 1.0, 1.0),
        (BackoffPolicy(), 5, 1.0, 2.0),
        (BackoffPolicy(), 8, 1.0, 16.0),
        (BackoffPolicy(), 9, 1.0, 30.0),  # capped
        (BackoffPolicy(), 1000, 1.0, 30.0),  # no overflow
        (BackoffPolicy(), 4, 10.0, 10.0),
        (BackoffPolicy(), 5, 10.0, 20.0),
        (BackoffPolicy(), 6, 10.0, 30.0),
        (BackoffPolicy(free_failures=0), 1, 0.5, 0.5),
        (BackoffPolicy(base_s=0.5), 5, 60.0, 1.0),  # base_s overrides the period
        (BackoffPolicy(max_s=2.0, factor=3.0), 5, 0.5, 1.5),
        (BackoffPolicy(max_s=2.0, factor=3.0), 6, 0.5, 2.0),
    ],
)
def test_backoff_ceiling(policy: BackoffPolicy, failures: int, base: float,
                         ceiling: float) -> None:
    assert backoff_ceiling(policy, failures, base) == pytest.approx(ceiling)


def test_backoff_delay_is_jittered_in_the_upper_half() -> None:
    rng = random.Random(1)
    policy = BackoffPolicy()
    for failures in range(0, 30):
        ceiling = backoff_ceiling(policy, failures, 1.0)
        delays = [backoff_delay(policy, failures, 1.0, rng) for _ in range(200)]
        if ceiling == 0:
            assert set(delays) == {0.0}
        else:
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            assert len(set(delays)) > 100  # jittered, not one value
        assert max(delays) <= 30.0


@pytest.mark.parametrize("bad", [dict(free_failures=-1), dict(factor=0.5), dict(max_s=0),
                                 dict(base_s=0)])
def test_backoff_policy_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**bad)


# -- stagger and grid --------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 40])
def test_stagger_fractions_spread(n: int) -> None:
    f = stagger_fractions(n)
    assert len(f) == n and len(set(f)) == n
    assert all(0 <= x < 1 for x in f)
    s = [*sorted(f), 1.0 + min(f)]
    widest = max(b - a for a, b in itertools.pairwise(s))
    assert widest <= 3.0 / n  # no big hole, no pile-up (three-distance theorem)


@pytest.mark.parametrize(
    ("origin", "period", "after", "inclusive", "expected"),
    [
        (0.0, 1.0, 0.0, False, 1.0),
        (0.0, 1.0, 0.0, True, 0.0),
        (0.25, 1.0, 0.3, False, 1.25),
        (0.25, 1.0, 3.25, True, 3.25),
        (0.25, 1.0, 3.25, False, 4.25),
        (10.0, 2.0, 3.0, False, 4.0),  # before the origin
        (100.1, 0.1, 100.35, False, 100.4),
    ],
)
def test_next_due(origin: float, period: float, after: float, inclusive: bool,
                  expected: float) -> None:
    assert next_due(origin, period, after, inclusive=inclusive) == pytest.approx(expected)


# -- the lane's choice ---------------------------------------------------------------
def slot(key: int, due: float, suspect: bool = False, cost: float = 0.5,
         max_wait: float = 1.0) -> Slot:
    return Slot(key, due, suspect, cost, max_wait)


@pytest.mark.parametrize(
    ("slots", "now", "key", "wake"),
    [
        ([], 0.0, None, math.inf),
        ([slot(1, 5.0)], 0.0, None, 5.0),  # nothing due: sleep to the first
        ([slot(1, 5.0), slot(2, 4.0)], 4.0, 2, 4.0),
        ([slot(1, 3.0), slot(2, 2.0)], 4.0, 2, 4.0),  # earliest due first
        ([slot(1, 3.0, suspect=True), slot(2, 3.5)], 4.0, 2, 4.0),  # healthy first
        # a suspect poll runs when its timeout fits before the next healthy one
        ([slot(1, 4.0, suspect=True), slot(2, 4.6)], 4.0, 1, 4.0),
        # ... and waits when it does not (until the healthy one is due)
        ([slot(1, 4.0, suspect=True), slot(2, 4.3)], 4.0, None, 4.3),
        # ... but not longer than max_wait
        ([slot(1, 3.0, suspect=True), slot(2, 4.3)], 4.0, 1, 4.0),
        ([slot(1, 3.5, suspect=True), slot(2, 4.6), slot(3, 5.5)], 4.2, None, 4.5),
        # only suspects: nothing to protect
        ([slot(1, 4.0, suspect=True), slot(2, 4.1, suspect=True)], 4.0, 1, 4.0),
    ],
)
def test_choose(slots: list[Slot], now: float, key: int | None, wake: float) -> None:
    got_key, got_wake = choose(slots, now)
    assert got_key == key
    assert got_wake == pytest.approx(wake)


# -- the poller over a fake link -----------------------------------------------------
class FakeLink:
    """Serves constant registers; units in ``dead`` time out, ``garbage`` frame-error,
    ``refuse`` maps (unit, table) to addresses answered with exception 02."""

    def __init__(self, name: str, timeout_s: float = 0.05) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.max_in_flight = 1
        self.dead: set[int] = set()
        self.garbage: set[int] = set()
        self.calls: list[tuple[float, int]] = []
        self.busy = False
        self.overlaps = 0
        self.answer_s = 0.001

    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        self.overlaps += self.busy
        self.busy = True
        try:
            self.calls.append((asyncio.get_running_loop().time(), unit_id))
            if unit_id in self.dead:
                await asyncio.sleep(self.timeout_s)
                raise DeviceTimeout("silent")
            if unit_id in self.garbage:
                raise FrameError("garbage")
            if unit_id == 99:
                raise ModbusException(4)
            await asyncio.sleep(self.answer_s)
            return [1] * count
        finally:
            self.busy = False

    async def close(self) -> None:
        pass


def config(units: list[int], period: float = 0.1) -> LoadedConfig:
    return parse_config({
        "schema_version": 1,
        "gateway": {"id": "gw"},
        "buses": [{"id": "bus", "type": "rtu", "port": "/dev/null"}],
        "poll_groups": [{"name": "fast", "period_s": period, "window_s": 10},
                        {"name": "default", "period_s": 4 * period, "window_s": 10},
                        {"name": "slow", "period_s": 8 * period, "window_s": 10}],
        "devices": [{"id": f"d{u}", "bus": "bus", "unit_id": u, "profile": "ew-fc200"}
                    for u in units],
        "uplink": {"https": {"url": "https://example.invalid"}},
    })


def run_for(poller: Poller, seconds: float) -> None:
    async def main() -> None:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(seconds)
        await poller.stop()
        await task

    asyncio.run(main())


def test_dead_device_is_backed_off_and_neighbours_keep_time() -> None:
    links: list[FakeLink] = []

    def factory(bus: Any, name: str) -> FakeLink:
        links.append(FakeLink(name))
        return links[-1]

    results: list[PollResult] = []
    poller = Poller(config([1, 2, 3], period=0.2), results.append, link_factory=factory,
                    backoff=BackoffPolicy(max_s=0.6), rng=random.Random(3))
    link = links[0]
    link.dead.add(2)
    with LagWatch() as lag:
        run_for(poller, 4.0)
    assert link.overlaps == 0  # one request at a time on the bus
    slack = 0.02 + lag.max  # a poll's own jitter, and the machine's
    for d in ("d1", "d3"):
        polls = [r for r in results if r.device_id == d and r.group == "fast"]
        assert len(polls) >= 16
        # every slot of the grid polled, none skipped (unless the machine stalled the
        # process for most of a period)
        steps = [round((b.due - a.due) / 0.2, 2) for a, b in itertools.pairwise(polls)]
        assert all(k == round(k) for k in steps), steps
        assert sum(k - 1 for k in steps) <= len(lag.over(0.2 - 0.05 - slack)), steps
        # only the dead device's very first timeout (it was not known to be dead) may
        # delay a neighbour; after that its attempts fit where the bus is idle
        late = [round(r.ts - r.due, 3) for r in polls]
        delayed = [x for x in late if x >= slack]
        assert len(delayed) <= 2 and all(x < 0.05 + slack for x in late), (late, lag.max)
    dead = [t for t, u in link.calls if u == 2]
    gaps = [b - a for a, b in itertools.pairwise(dead)]
    assert 6 <= len(dead) <= 14  # not one per poll (20 fast polls alone, 34 in all)
    assert max(gaps) <= 0.6 + 0.3 + 0.05  # cap + waiting for room (half the cap) + timeout
    assert max(gaps[-3:]) > 0.3  # backed off
    assert all(not r.values and not r.ok for r in results if r.device_id == "d2")
    st = poller.stats()
    assert st["d2"].state == "backing_off" and st["d2"].errors["timeout"] == len(dead)
    assert st["d1"].state == "ok" and st["d1"].consecutive_failures == 0


def test_garbage_and_exceptions_publish_nothing_and_recover() -> None:
    links: list[FakeLink] = []

    def factory(bus: Any, name: str) -> FakeLink:
        links.append(FakeLink(name))
        return links[-1]

    results: list[PollResult] = []
    poller = Poller(config([1, 99]), results.append, link_factory=factory)
    links[0].garbage.add(1)

    async def main() -> None:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.25)
        links[0].garbage.clear()
        await asyncio.sleep(0.3)
        await poller.stop()
        await task

    asyncio.run(main())
    d1 = [r for r in results if r.device_id == "d1"]
    bad = [r for r in d1 if not r.ok]
    assert bad and all(not r.values and set(r.errors.values()) == {"frame error"} for r in bad)
    assert d1[-1].ok and not d1[-1].errors
    d99 = [r for r in results if r.device_id == "d99"]
    assert d99 and all(not r.values and not r.ok for r in d99)
    assert {v for r in d99 for v in r.errors.values()} == {"exception 0x04"}
    st = poller.stats()
    assert st["d99"].consecutive_failures == 0  # it answers: alive, not backed off
    assert st["d99"].errors["exception"] > 0 and st["d1"].errors["frame"] > 0
    assert st["d1"].state == "ok"


def test_staggered_starts() -> None:
    links: list[FakeLink] = []

    def factory(bus: Any, name: str) -> FakeLink:
        links.append(FakeLink(name))
        return links[-1]

    results: list[PollResult] = []
    poller = Poller(config([1, 2, 3, 4], period=0.2), results.append, link_factory=factory)
    with LagWatch() as lag:
        run_for(poller, 0.25)
    # a bus with room: polls start on their slots
    assert all((s.late_ewma_s or 0.0) < 0.01 + lag.max for s in poller.stats().values())
    firsts: dict[tuple[str, str], float] = {}
    for r in results:
        firsts.setdefault((r.device_id, r.group), r.due)
    fast = sorted(t for (d, g), t in firsts.items() if g == "fast")
    assert len(fast) == 4
    assert min(b - a for a, b in itertools.pairwise(fast)) > 0.02


def test_each_result_says_which_slot_it_was_due_in() -> None:
    links: list[FakeLink] = []

    def factory(bus: Any, name: str) -> FakeLink:
        links.append(FakeLink(name))
        links[-1].answer_s = 0.03  # a slow device: three groups cannot all keep time
        return links[-1]

    results: list[PollResult] = []
    poller = Poller(config([1], period=0.05), results.append, link_factory=factory,
                    clock=time.monotonic)
    run_for(poller, 1.0)
    fast = [r for r in results if r.group == "fast"]
    assert len(fast) >= 8
    assert all(r.ts >= r.due for r in results)
    assert max(r.ts - r.due for r in results) > 0.02  # held up behind the other groups
    # every due time is a slot on the group's grid, and a slot that passed is skipped,
    # not run late twice
    steps = [(b.due - a.due) / 0.05 for a, b in itertools.pairwise(fast)]
    assert all(abs(k - round(k)) < 0.01 and round(k) >= 1 for k in steps), steps
    assert any(round(k) >= 2 for k in steps)
    # and the device's status says its polls start late: more than the bus carries
    late = poller.stats()["d1"].late_ewma_s
    assert late is not None and late > 0.005


def test_poll_now_polls_the_named_device_at_once_and_it_keeps_its_schedule() -> None:
    links: list[FakeLink] = []

    def factory(bus: Any, name: str) -> FakeLink:
        links.append(FakeLink(name))
        return links[-1]

    results: list[PollResult] = []
    # periods of 0.5, 2 and 4 s: without "poll now" not all groups would be polled again soon
    poller = Poller(config([1, 2], period=0.5), results.append, link_factory=factory)

    async def main() -> tuple[list[str], float]:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(1.2)  # every group has had its first poll by now
        before = len([r for r in results if r.device_id == "d2"])
        asked = poller.poll_now(["d2", "nope"])
        t0 = asyncio.get_running_loop().time()
        while len([r for r in results if r.device_id == "d2"]) < before + 3:
            await asyncio.sleep(0.005)
        took = asyncio.get_running_loop().time() - t0
        await asyncio.sleep(0.3)
        await poller.stop()
        await task
        return asked, took

    asked, took = asyncio.run(main())
    assert asked == ["d2"]  # unknown ids are left out
    assert took < 0.2  # all three groups of d2 polled at once, not on their 0.5-4 s grid
    d2 = [r for r in results if r.device_id == "d2"]
    assert {r.group for r in d2[-3:]} == {"fast", "default", "slow"}
    assert all(r.ok and r.values for r in d2)
    assert poller.stats()["d2"].missed_polls == 0  # an extra poll misses no slot
