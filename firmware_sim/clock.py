"""The simulated clock: wall time mapped to simulated time, at real or accelerated speed.

``SimClock(start, speed)`` starts at ``start`` when created (or when :meth:`SimClock.restart`
is called) and then runs ``speed`` simulated seconds per wall second: speed 1 is real time,
3600 an hour a second. Wall time is the monotonic clock, so a change of the system time
does not make simulated time jump.

A *manual* clock (``SimClock.manual(start)``) never looks at wall time: it moves only when
:meth:`SimClock.advance` or :meth:`SimClock.set` is called, which makes tests and scripted
replays deterministic. Either way, what a source serves is a function of simulated time
only (the engine steps on a fixed grid), so the same fleet, seed and simulated instant give
the same registers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class SimClock:
    """Simulated time as a function of monotonic wall time (or of manual steps)."""

    def __init__(
        self,
        start: datetime,
        speed: float = 1.0,
        *,
        manual: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self._speed = float(speed)
        self._manual = manual
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._origin = _aware(start)
        self._wall0 = monotonic()

    @classmethod
    def manual(cls, start: datetime) -> SimClock:
        """A clock that moves only when told to (:meth:`advance`, :meth:`set`)."""
        return cls(start, manual=True)

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second (irrelevant for a manual clock)."""
        return self._speed

    @property
    def is_manual(self) -> bool:
        return self._manual

    def now(self) -> datetime:
        """The current simulated time (timezone-aware, UTC unless ``start`` said otherwise)."""
        with self._lock:
            if self._manual:
                return self._origin
            elapsed = self._monotonic() - self._wall0
            return self._origin + timedelta(seconds=elapsed * self._speed)

    def restart(self, start: datetime | None = None) -> None:
        """Start counting again from ``start`` (default: the current simulated time) now."""
        with self._lock:
            if start is None:
                start = self._now_unlocked()
            self._origin = _aware(start)
            self._wall0 = self._monotonic()

    def set_speed(self, speed: float) -> None:
        """Change speed without a jump in simulated time."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        with self._lock:
            self._origin = self._now_unlocked()
            self._wall0 = self._monotonic()
            self._speed = float(speed)

    def advance(self, seconds: float | timedelta) -> datetime:
        """Manual clock: move forward by ``seconds``; returns the new time."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._require_manual("advance")
            self._origin += step
            return self._origin

    def set(self, t: datetime) -> None:
        """Manual clock: jump to ``t`` (not earlier than now)."""
        t = _aware(t)
        with self._lock:
            self._require_manual("set")
            if t < self._origin:
                raise ValueError(f"a clock does not go backwards ({t} < {self._origin})")
            self._origin = t

    def wall_seconds(self, simulated: float) -> float:
        """Wall seconds that ``simulated`` seconds take at this clock's speed."""
        return simulated / self._speed

    def _now_unlocked(self) -> datetime:
        if self._manual:
            return self._origin
        return self._origin + timedelta(seconds=(self._monotonic() - self._wall0) * self._speed)

    def _require_manual(self, what: str) -> None:
        if not self._manual:
            raise RuntimeError(
                f"SimClock.{what}() is for manual clocks; this one follows wall time "
                "(create it with SimClock.manual(start))"
            )
