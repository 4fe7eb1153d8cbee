from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from firmware_sim.clock import SimClock

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class FakeWall:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_real_time_and_accelerated() -> None:
    wall = FakeWall()
    real = SimClock(T0, 1.0, monotonic=wall)
    fast = SimClock(T0, 3600.0, monotonic=wall)
    assert real.now() == fast.now() == T0
    wall.t += 2.5
    assert real.now() == T0 + timedelta(seconds=2.5)
    assert fast.now() == T0 + timedelta(hours=2.5)
    assert fast.wall_seconds(3600) == pytest.approx(1.0)


def test_set_speed_does_not_jump() -> None:
    wall = FakeWall()
    clock = SimClock(T0, 60.0, monotonic=wall)
    wall.t += 1
    clock.set_speed(3600)
    assert clock.now() == T0 + timedelta(minutes=1)
    wall.t += 1
    assert clock.now() == T0 + timedelta(minutes=61)


def test_restart() -> None:
    wall = FakeWall()
    clock = SimClock(T0, 10.0, monotonic=wall)
    wall.t += 5
    clock.restart(T0 + timedelta(days=1))
    assert clock.now() == T0 + timedelta(days=1)
    wall.t += 1
    assert clock.now() == T0 + timedelta(days=1, seconds=10)


def test_wall_clock_moves_by_itself() -> None:
    clock = SimClock(T0, 1e6)
    a = clock.now()
    b = clock.now()
    assert b >= a >= T0


def test_manual_clock_moves_only_when_told() -> None:
    clock = SimClock.manual(T0)
    assert clock.is_manual
    assert clock.now() == clock.now() == T0
    assert clock.advance(60) == T0 + timedelta(minutes=1)
    clock.advance(timedelta(hours=1))
    assert clock.now() == T0 + timedelta(minutes=61)
    clock.set(T0 + timedelta(days=2))
    assert clock.now() == T0 + timedelta(days=2)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(T0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_naive_start_is_utc_and_bad_speed_refused() -> None:
    assert SimClock.manual(datetime(2024, 1, 1)).now() == T0
    with pytest.raises(ValueError, match="speed"):
        SimClock(T0, 0)
    with pytest.raises(RuntimeError, match="manual"):
        SimClock(T0).advance(1)
