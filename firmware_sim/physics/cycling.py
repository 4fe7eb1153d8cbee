"""On/off cycling: a thermostat with hysteresis over a controlled space, and lagged states.

The controlled space (a room, a cold room) relaxes towards its free-running temperature
``t_free`` (outdoor air, occupancy gains) while the unit is off, and towards
``t_free - capacity`` while it runs; the thermostat starts the unit above
``upper`` and stops it below ``lower``, with minimum on and off times (anti-short-cycle).
Units that are not thermostatic (supply and exhaust fans) follow a schedule instead.

The same loop carries any number of first-order lags (pressures, temperatures, speed)
whose targets differ between running and stopped; every update is exact for a constant
target over the step (``y += (target - y) * (1 - exp(-dt / tau))``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

MIN_ON_S = 120.0
MIN_OFF_S = 180.0


@dataclass
class CycleState:
    """Per-device state carried between chunks (arrays of shape (devices,), lags (V, devices))."""

    t_space: F64
    on: B
    on_time: F64
    off_time: F64
    lags: F64


@dataclass
class CycleResult:
    on: B
    """(steps, devices): running at the end of each step."""
    t_space: F64
    lags: F64
    """(steps, V, devices)."""
    starts: B
    """(steps, devices): the unit started during the step."""


def run_cycles(
    state: CycleState,
    *,
    dt: float,
    alpha_space: F64,
    t_free: F64,
    capacity: F64,
    upper: F64,
    lower: F64,
    available: B,
    thermostatic: B,
    schedule: B,
    disturbance: F64,
    lag_run: F64,
    lag_off: F64,
    alpha_run: F64,
    alpha_off: F64,
) -> CycleResult:
    """Advance ``state`` over ``t_free.shape[0]`` steps; arrays are (steps, devices) and
    lag targets (steps, V, devices), lag factors ``exp(-dt/tau)`` (V, devices)."""
    n, d = t_free.shape
    nv = lag_run.shape[1]
    out_on = np.empty((n, d), dtype=bool)
    out_t = np.empty((n, d))
    out_y = np.empty((n, nv, d))
    t = state.t_space.copy()
    on = state.on.copy()
    ont = state.on_time.copy()
    offt = state.off_time.copy()
    y = state.lags.copy()
    for k in range(n):
        target = t_free[k] - capacity[k] * on
        t = target + (t - target) * alpha_space + disturbance[k]
        want = np.where(thermostatic, np.where(on, t > lower[k], t > upper[k]), schedule[k])
        avail = available[k]
        on = np.where(on, (want | (ont < MIN_ON_S)) & avail, want & avail & (offt >= MIN_OFF_S))
        ont = np.where(on, ont + dt, 0.0)
        offt = np.where(on, 0.0, offt + dt)
        lag_target = np.where(on, lag_run[k], lag_off[k])
        y = lag_target + (y - lag_target) * np.where(on, alpha_run, alpha_off)
        out_on[k] = on
        out_t[k] = t
        out_y[k] = y
    prev = np.concatenate([state.on[None, :], out_on[:-1]], axis=0) if n else out_on
    starts = out_on & ~prev
    state.t_space, state.on, state.on_time, state.off_time, state.lags = t, on, ont, offt, y
    return CycleResult(out_on, out_t, out_y, starts)
