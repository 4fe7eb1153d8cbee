"""Feature windows: one :class:`WindowBuffer` per device and poll group.

Windows are aligned to wall time, staggered per device. A group's windows are
``window_s`` long and one ends every ``hop_s`` (default ``window_s``: back-to-back
windows; a shorter hop gives overlapping, sliding windows, e.g. 12-hour windows every
hour, as the cloud's risk models were trained on). Window k of a device's group ends at
``k·hop_s + offset`` in epoch seconds and covers the ``window_s`` before it, where
``offset`` (:func:`window_offset`) is a fixed fraction of ``hop_s`` in ``[0, hop_s)``
derived from a stable hash of the device id (BLAKE2b of its UTF-8 bytes, in whole
milliseconds). A restart does not shift the windows (the same id gives the same offset in
every process and on every gateway), but different devices' windows end at different
instants: their features and scores are not all computed at once at the same wall-clock
instant. Samples ``(ts, {point: value})`` are appended as polls complete; the first
sample at or after the end of the open window closes it and yields a :class:`Window`;
:meth:`WindowBuffer.close_due` closes it on time when samples stop coming (a device that
went silent). When samples resume after a gap, the windows that ended inside the gap are
not yielded; the next one is the window that ends after the new sample.

Memory is bounded: a buffer holds at most ``max_samples = ceil(window_s / period_s) · 2``
samples; the excess is dropped and counted. A sample older than the open window's start
(late, e.g. a slow poll that finished after the boundary) is dropped and counted, also
when :meth:`WindowBuffer.close_due` closed its window before it came: a window is yielded
once. A step of the wall clock back by more than a whole window (a clock set back)
discards the held samples (counted) and starts again at the new time.

A window with no samples is never yielded; nor are the empty windows of a gap.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_agent.config import PollGroup

log = logging.getLogger(__name__)

SampleValue = float | int | bool | None
"""A numeric point value; ``None`` or NaN means the point was not read."""


@dataclass(frozen=True, slots=True)
class Window:
    """A closed window of one device and poll group."""

    device_id: str
    group: str
    start: float
    """Epoch seconds: end - window_s."""
    end: float
    """Epoch seconds (exclusive): k·hop_s + the device's offset (see :func:`window_offset`)."""
    series: dict[str, npt.NDArray[np.float64]]
    """Point name -> samples in time order, NaN where the point was not read."""
    ts: npt.NDArray[np.float64]
    """Sample times (epoch seconds), ascending, one per sample."""
    n_samples: int
    n_missing: int
    """Polls expected in the window (window_s / period_s) that gave no sample, ≥ 0."""
    n_excess: int = 0
    """Samples dropped because the window was full."""
    missing_by_point: dict[str, int] = field(default_factory=dict)
    """Point name -> samples in which that point has no value."""

    @property
    def duration_s(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class WindowCounters:
    """What a buffer dropped since it was created."""

    late: int = 0
    excess: int = 0
    clock_steps: int = 0
    discarded_samples: int = 0
    """Samples of open windows discarded by a clock step."""
    windows: int = 0


def window_offset(device_id: str, window_s: float) -> float:
    """Where in ``[0, window_s)`` the windows of ``device_id`` end, past the multiples of
    ``window_s`` (the group's hop): a stable hash of the id (not Python's ``hash``, which
    changes from one process to the next), in whole milliseconds."""
    steps = max(1, int(window_s * 1000))
    digest = hashlib.blake2b(device_id.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % steps) / 1000.0


class WindowBuffer:
    """Collects the samples of one device and poll group into aligned windows.

    ``offset_s`` shifts the window ends off the multiples of the group's hop; by default
    the device's own :func:`window_offset`.
    """

    def __init__(self, device_id: str, group: PollGroup, *, offset_s: float | None = None) -> None:
        self.device_id = device_id
        self.group = group.name
        self.window_s = float(group.window_s)
        self.hop_s = float(group.hop)
        self.period_s = float(group.period_s)
        if offset_s is None:
            offset_s = window_offset(device_id, self.hop_s)
        if not 0 <= offset_s < self.hop_s:
            raise ValueError(f"offset_s {offset_s!r} is not in [0, {self.hop_s})")
        self.offset_s = float(offset_s)
        self.expected = math.ceil(self.window_s / self.period_s - 1e-9)
        self.max_samples = self.expected * 2
        self.counters = WindowCounters()
        self._start = 0.0
        self._end: float | None = None
        self._closed_end: float | None = None
        """End of the last window :meth:`close_due` closed."""
        self._ts: list[float] = []
        self._rows: list[dict[str, SampleValue]] = []
        self._excess = 0

    def window_end(self, ts: float) -> float:
        """End of the first window that ends after ``ts`` (the one ``ts`` is closed in)."""
        return self._last_end(ts) + self.hop_s

    def window_start(self, ts: float) -> float:
        """Start of the first window that ends after ``ts``."""
        return self._last_end(ts) + (self.hop_s - self.window_s)

    def _last_end(self, ts: float) -> float:
        """The last window end at or before ``ts``."""
        h, off = self.hop_s, self.offset_s
        return math.floor((ts - off) / h) * h + off

    @property
    def open_window(self) -> tuple[float, float] | None:
        """(start, end) of the next window to close, if any."""
        if self._end is None:
            return None
        return self._start, self._end

    @property
    def pending(self) -> int:
        """Samples held (for a sliding window, some of them also in the last one closed)."""
        return len(self._ts)

    def append(self, ts: float, values: Mapping[str, SampleValue]) -> Window | None:
        """Add one sample; returns the window it closed, if it closed one.

        ``values`` holds the numbers read in one poll (bools count as 0/1); a point not in
        ``values``, ``None`` or NaN is a missing value of that point.
        """
        if not math.isfinite(ts):
            raise ValueError(f"sample time {ts!r} is not a finite epoch time")
        for name, value in values.items():
            if value is not None and not isinstance(value, (int, float, bool)):
                raise TypeError(f"point {name!r}: {value!r} is not a number")
        closed: Window | None = None
        if self._end is None:
            last = self._closed_end
            if last is not None and last - self.window_s <= ts < last:
                # A sample of a window close_due has closed already (a poll that began
                # before the window's end and finished after it): it may go only into the
                # next window, and is late if that one does not cover it. Reopening the
                # closed window would yield it a second time.
                self._open(last + self.hop_s / 2)
                if ts < self._start:
                    self._end = None
                    self.counters.late += 1
                    log.debug("%s/%s: late sample at %.3f dropped", self.device_id, self.group, ts)
                    return None
            else:
                self._open(ts)
        elif ts < self._start - self.window_s:
            self.counters.clock_steps += 1
            self.counters.discarded_samples += len(self._ts)
            log.warning(
                "%s/%s: clock stepped back to %.3f, before the open window at %.3f; "
                "discarding its %d samples",
                self.device_id,
                self.group,
                ts,
                self._start,
                len(self._ts),
            )
            self._ts, self._rows = [], []
            self._excess = 0
            self._open(ts)
        elif ts < self._start:
            self.counters.late += 1
            log.debug("%s/%s: late sample at %.3f dropped", self.device_id, self.group, ts)
            return None
        elif ts >= self._end:
            closed = self._close()
            self._advance(ts)
        if len(self._ts) >= self.max_samples:
            self._excess += 1
            self.counters.excess += 1
            return closed
        self._ts.append(float(ts))
        self._rows.append(dict(values))
        return closed

    def close_due(self, now: float) -> Window | None:
        """Close the open window if ``now`` is at or past its end (samples stopped coming)."""
        if self._end is None or now < self._end:
            return None
        self._closed_end = self._end
        closed = self._close()
        self._advance(now)
        if not self._ts:
            self._end = None
        return closed

    def _open(self, ts: float) -> None:
        self._start = self.window_start(ts)
        self._end = self.window_end(ts)

    def _advance(self, ts: float) -> None:
        """Move on to the window that ends after ``ts``; keep the samples it covers."""
        self._open(ts)
        self._excess = 0
        start = self._start
        if self._ts and min(self._ts) < start:
            keep = [i for i, t in enumerate(self._ts) if t >= start]
            self._ts = [self._ts[i] for i in keep]
            self._rows = [self._rows[i] for i in keep]

    def _close(self) -> Window | None:
        if self._end is None or not self._ts:
            return None
        ts = np.asarray(self._ts, dtype=np.float64)
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        names: dict[str, None] = {}
        for row in self._rows:
            names.update(dict.fromkeys(row))
        series: dict[str, npt.NDArray[np.float64]] = {}
        missing: dict[str, int] = {}
        for name in names:
            # None (and a point missing from a row) becomes NaN, a bool 0/1.
            column = np.array([row.get(name) for row in self._rows], dtype=np.float64)
            column = column[order]
            series[name] = column
            missing[name] = int(np.count_nonzero(np.isnan(column)))
        n = int(ts.size)
        self.counters.windows += 1
        return Window(
            device_id=self.device_id,
            group=self.group,
            start=self._start,
            end=self._end,
            series=series,
            ts=ts,
            n_samples=n,
            n_missing=max(self.expected - n, 0),
            n_excess=self._excess,
            missing_by_point=missing,
        )


def make_buffers(device_id: str, groups: Sequence[PollGroup]) -> dict[str, WindowBuffer]:
    """One buffer per poll group of a device, by group name."""
    return {g.name: WindowBuffer(device_id, g) for g in groups}
