"""What the Modbus servers serve: a source of signal values that advances in time.

Two sources implement it: the physics simulation (:mod:`firmware_sim.engine`) and the
replay of recorded telemetry (:mod:`firmware_sim.replay`). The servers know only this
interface, so serving never depends on where the numbers come from.

Signal names are the point names of the device's profile; a source gives a value for
every point of the profile (numbers in engineering units, strings, bools, and the raw
integer of bit-field points).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

SignalValue = int | float | str | bool


class SignalSource(Protocol):
    @property
    def now(self) -> datetime:
        """Simulated time of the values :meth:`signals` returns."""
        ...

    def advance_to(self, t: datetime) -> None:
        """Move simulated time forward to ``t`` (never backwards)."""
        ...

    def signals(self, device_id: str) -> Mapping[str, SignalValue]:
        """Every point of the device's profile, by point name, at :attr:`now`."""
        ...

    def reboot(self, device_id: str) -> None:
        """The controller restarts: its volatile counters start again from zero."""
        ...
