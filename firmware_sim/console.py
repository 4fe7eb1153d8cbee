"""What ``edgewatch-sim serve`` tells the person watching it.

Ground-truth events are printed as simulated time passes them, and a status line
says what the fleet is doing. Events wait in a bounded queue between the simulation
(which produces them on the server's tick) and the printer; when the queue is full
the oldest are dropped and counted, and the next status line says how many.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from firmware_sim.groundtruth import GroundTruthEvent, iso

#: Events held for printing at most; older ones are dropped (and counted) past this.
QUEUE_LIMIT = 1000

RUN_STATES = {0: "off", 1: "running", 2: "tripped", 3: "lockout"}


def format_event(e: GroundTruthEvent) -> str:
    """One line for one ground-truth event."""
    if e.event == "onset":
        detail = f"{e.fault_type} begins"
        if e.scheduled_failure is not None:
            detail += f"; fails {iso(e.scheduled_failure)} unless repaired"
    elif e.event == "failure":
        detail = f"{e.fault_type}: unit trips"
        if e.alarm_code is not None:
            detail += f" with alarm {e.alarm_code}"
    elif e.event == "maintenance":
        detail = e.kind or "visit"
        if e.fixes:
            detail += f", fixes {', '.join(e.fixes)}"
        if e.automatic:
            detail += " (scheduled by the simulator)"
    else:
        detail = "controller restarted, counters reset"
    return f"{iso(e.time)}  {e.event:<11}  {e.device_id:<16}  {detail}"


class LiveReport:
    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._queue: deque[GroundTruthEvent] = deque()
        self._limit = limit
        self.dropped = 0
        self.tally: Counter[str] = Counter()

    def on_event(self, event: GroundTruthEvent) -> None:
        """Queue an event for printing (called by the simulation)."""
        self.tally[event.event] += 1
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)

    def drain(self) -> list[str]:
        """The queued events as lines, oldest first; the queue is empty afterwards."""
        lines = [format_event(e) for e in self._queue]
        self._queue.clear()
        return lines

    def status_line(self, now: datetime, run_states: Iterable[object]) -> str:
        """Simulated time, how many units are in each run state, and the events so far."""
        states = Counter(
            RUN_STATES.get(s, f"state {s}") if isinstance(s, int) else str(s) for s in run_states
        )
        units = "  ".join(f"{name} {states[name]}" for name in ("running", "off", "tripped"))
        others = "".join(
            f"  {name} {n}"
            for name, n in sorted(states.items())
            if name not in ("running", "off", "tripped")
        )
        events = "  ".join(
            f"{label} {self.tally[k]}"
            for k, label in (
                ("onset", "onsets"),
                ("failure", "failures"),
                ("maintenance", "visits"),
                ("reboot", "reboots"),
            )
        )
        line = f"{iso(now)}  status       units: {units}{others}  | events: {events}"
        if self.dropped:
            line += f"  | {self.dropped} event lines dropped (queue limit {self._limit})"
        return line

    def summary(self, now: datetime, ground_truth: Path | None) -> str:
        """The closing line: where simulated time got to and what happened on the way."""
        t = self.tally
        line = (
            f"{iso(now)}  stopped      {t['onset']} fault onsets, {t['failure']} failures, "
            f"{t['maintenance']} maintenance visits, {t['reboot']} reboots"
        )
        if ground_truth is not None:
            line += f"; ground truth in {ground_truth}"
        return line
