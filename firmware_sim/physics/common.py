"""What the compressor and fan models share: conditions in, counters, noise channels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]

SQRT3 = float(np.sqrt(3.0))

#: Standard-normal noise channels every device draws per step (same count for all, so
#: the per-device stream does not depend on the asset type's needs).
NOISE_CHANNELS = 16


@dataclass
class Conditions:
    """What the site and the fault plan impose, arrays of shape (steps, devices)."""

    ambient: F64
    occupancy: F64
    open: B
    """The building is open (HVAC out of setback, supply/exhaust fans scheduled on)."""
    voltage: F64
    tripped: B
    alarm: I64
    severity: dict[str, F64]
    noise: F64
    """(NOISE_CHANNELS, steps, devices), standard normal."""

    def sev(self, fault: str) -> F64:
        s = self.severity.get(fault)
        return s if s is not None else np.zeros_like(self.ambient)


@dataclass
class Counters:
    """Controller counters (arrays of shape (devices,)): reset by a reboot."""

    energy_kwh: F64
    runtime_s: F64
    starts: F64

    def advance(self, power_kw: F64, on: B, starts: B, dt: float) -> tuple[F64, F64, F64]:
        """Counter values after each step of a chunk: energy, runtime hours, starts."""
        energy = self.energy_kwh + np.cumsum(power_kw, axis=0) * (dt / 3600.0)
        runtime = self.runtime_s + np.cumsum(on, axis=0) * dt
        count = self.starts + np.cumsum(starts, axis=0)
        if power_kw.shape[0]:
            self.energy_kwh, self.runtime_s, self.starts = energy[-1], runtime[-1], count[-1]
        return energy, np.floor(runtime / 3600.0), count

    def reset(self, i: int) -> None:
        self.energy_kwh[i] = 0.0
        self.runtime_s[i] = 0.0
        self.starts[i] = 0.0


def lag_factor(dt: float, tau_s: F64 | float) -> F64:
    """``exp(-dt/tau)``: the exact first-order lag over one step."""
    out: F64 = np.exp(-dt / np.asarray(tau_s, dtype=np.float64))
    return out
