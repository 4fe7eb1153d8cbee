"""How late this machine wakes a sleeper of the test process.

Scheduling tests time polls to a few hundredths of a second. On a loaded machine (a CI
runner with other jobs, two cores shared with servers) the process may not get a CPU for
longer than that, and any timed step starts late by as much. :class:`LagWatch` measures
that starvation while a test runs, so its timing assertions can allow for it and still
fail when the code under test is late by itself.

The watcher is a thread, not a task on the event loop under test: code that blocks its own
loop does not widen the allowance, since the thread still gets the interpreter every
switch interval (5 ms).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType


class LagWatch:
    """``with LagWatch() as lag: ...`` then ``lag.max``: the longest oversleep seen."""

    def __init__(self, tick_s: float = 0.005) -> None:
        self.tick_s = tick_s
        self.lags: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lag-watch", daemon=True)

    @property
    def max(self) -> float:
        return max(self.lags, default=0.0)

    def over(self, seconds: float) -> list[float]:
        """The stalls longer than ``seconds``."""
        return [x for x in self.lags if x > seconds]

    def _watch(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            time.sleep(self.tick_s)
            self.lags.append(time.monotonic() - t - self.tick_s)

    def __enter__(self) -> LagWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
