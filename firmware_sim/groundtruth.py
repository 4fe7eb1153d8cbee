"""Ground truth: every fault onset, failure, maintenance visit and reboot, as JSON lines.

One object per line, in time order::

    {"time": "2026-01-09T06:00:00Z", "device_id": "cc-01", "event": "onset",
     "fault_type": "refrigerant_leak", "scheduled_failure": "2026-01-21T06:00:00Z"}
    {"time": "...", "device_id": "cc-01", "event": "failure", "fault_type": "refrigerant_leak",
     "alarm_code": 12}
    {"time": "...", "device_id": "cc-01", "event": "maintenance", "kind": "repair",
     "fixes": ["refrigerant_leak"]}
    {"time": "...", "device_id": "cc-01", "event": "reboot"}

A model trained on simulated data is scored against this log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

EventKind = Literal["onset", "failure", "maintenance", "reboot"]


def iso(t: datetime) -> str:
    """UTC ISO-8601 with a ``Z``, to the second (fractions only when present)."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


@dataclass(frozen=True, order=True)
class GroundTruthEvent:
    time: datetime
    device_id: str
    seq: int = field(compare=True)
    """Order of the event among the device's events (ties at the same time)."""
    event: EventKind = field(compare=False, default="onset")
    fault_type: str | None = field(compare=False, default=None)
    scheduled_failure: datetime | None = field(compare=False, default=None)
    alarm_code: int | None = field(compare=False, default=None)
    kind: str | None = field(compare=False, default=None)
    fixes: tuple[str, ...] | None = field(compare=False, default=None)
    automatic: bool = field(compare=False, default=False)
    """Maintenance the simulator scheduled itself (the repair after a random fault)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": iso(self.time),
            "device_id": self.device_id,
            "event": self.event,
        }
        if self.fault_type is not None:
            out["fault_type"] = self.fault_type
        if self.scheduled_failure is not None:
            out["scheduled_failure"] = iso(self.scheduled_failure)
        if self.alarm_code is not None:
            out["alarm_code"] = self.alarm_code
        if self.kind is not None:
            out["kind"] = self.kind
        if self.fixes is not None:
            out["fixes"] = list(self.fixes)
        if self.automatic:
            out["automatic"] = True
        return out


class GroundTruthLog:
    """Appends events to a JSON-lines file (created empty on open)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    def write(self, events: Iterable[GroundTruthEvent]) -> None:
        lines = [json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in events]
        if lines:
            with self.path.open("a", encoding="utf-8") as f:
                f.writelines(lines)


def read_ground_truth(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a ground-truth file, as dicts, in file order."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj: dict[str, Any] = json.loads(line)
                yield obj
