"""Belt or direct-driven fans on a drive, vectorised over devices.

Speed follows the speed command through a short lag; power follows the fan law
(``P ~ n^3``, scaled to the rated power, plus the motor's no-load loss); current is
``P / (sqrt(3) * V * PF)``; bearing temperature is the air-stream temperature plus
load and friction heating, with a lag of tens of minutes. What commands the fan depends
on its variant: a condenser fan runs with the cooling demand of the circuit it serves
(the same thermostat model as a split AC at the site, speed from head-pressure control
on the outdoor air); supply and exhaust fans follow the building's occupancy schedule.

Fault signatures (``s`` = severity 0..1):

- bearing_wear: bearing-band vibration rises strongly, rms rises, bearing temperature
  rises, current a little.
- fan_imbalance: vibration at 1x rises strongly, rms rises.
- belt_wear: the belt slips (intermittently, more as it wears): speed falls below the
  command, power and current fall slightly, vibration at 2x rises.
- electrical_degradation: power factor and efficiency fall: more current for the same
  work; a little 2x vibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim.physics.common import F64, SQRT3, Conditions, Counters, lag_factor
from firmware_sim.physics.compressor import GAINS, VARIANTS
from firmware_sim.physics.cycling import CycleState, run_cycles

POWER_FACTOR = 0.82

RATED_RPM: dict[str, float] = {"condenser": 900.0, "supply": 1450.0, "exhaust": 1200.0}

SIGNALS = (
    "speed_rpm",
    "motor_current",
    "power",
    "vibration_rms",
    "vib_band_1x",
    "vib_band_2x",
    "vib_band_bearing",
    "bearing_temp",
    "energy",
    "run_state",
    "alarm_code",
    "status_flags",
    "runtime_hours",
    "start_count",
    "speed_command",
    "enable",
)


@dataclass(frozen=True)
class FanConfig:
    variant: str
    rated_kw: float
    site_kind: str
    setpoint_c: float | None
    jitter: tuple[float, ...]
    """Eight uniform(-1, 1) numbers from the device's parameter stream."""


class FanBank:
    """Fans simulated together; state arrays have one entry per device."""

    def __init__(self, configs: list[FanConfig], dt: float, counters: Counters) -> None:
        self.dt = dt
        self.counters = counters
        n = len(configs)
        j = np.array([c.jitter for c in configs]).reshape(n, 8).T if n else np.zeros((8, 0))
        ac = VARIANTS["split_ac"]
        variants = [c.variant for c in configs]
        self.condenser = np.array([v == "condenser" for v in variants], dtype=bool)
        self.supply = np.array([v == "supply" for v in variants], dtype=bool)
        self.rated = np.array([c.rated_kw for c in configs], dtype=np.float64)
        self.rpm = np.array([RATED_RPM[v] for v in variants], dtype=np.float64) * (1 + 0.03 * j[0])
        self.setpoint = np.array(
            [c.setpoint_c if c.setpoint_c is not None else ac.setpoint for c in configs],
            dtype=np.float64,
        )
        gains = (
            np.array([GAINS[c.site_kind] for c in configs]).reshape(n, 2).T
            if n
            else np.zeros((2, 0))
        )
        self.gain_base, self.gain_occ = gains[0], gains[1]
        self.band = ac.band * (1 + 0.15 * j[1])
        self.alpha_space = lag_factor(dt, ac.tau_space_s * (1 + 0.2 * j[2]))
        self.capacity = ac.capacity_k * (1 + 0.08 * j[3])
        self.vib = np.stack([0.9 + 0.12 * j[4], 0.35 + 0.05 * j[5], 0.15 + 0.03 * j[6]])
        self.friction_k = 8.0 + 1.5 * j[7]
        tau_on = np.array([20.0, 900.0])[:, None] * np.ones((1, n))
        tau_off = np.array([40.0, 1500.0])[:, None] * np.ones((1, n))
        self.alpha_on = lag_factor(dt, tau_on)
        self.alpha_off = lag_factor(dt, tau_off)
        self.state = CycleState(
            t_space=self.setpoint.copy(),
            on=np.zeros(n, dtype=bool),
            on_time=np.zeros(n),
            off_time=np.full(n, 3600.0),
            lags=np.stack([np.zeros(n), np.full(n, 22.0)]),
        )

    def run(self, c: Conditions) -> dict[str, F64]:
        """Simulate one chunk; returns every signal as (steps, devices) in engineering units."""
        dt = self.dt
        amb = c.ambient
        noise = c.noise
        s_bear = c.sev("bearing_wear")
        s_imb = c.sev("fan_imbalance")
        s_belt = c.sev("belt_wear")
        s_el = c.sev("electrical_degradation")

        cond_cmd = np.clip(30.0 + 3.5 * (amb - 10.0), 30.0, 100.0)
        sched_cmd = np.where(self.supply, 35.0 + 65.0 * c.occupancy, 30.0 + 60.0 * c.occupancy)
        cmd = np.where(self.condenser, cond_cmd, sched_cmd)
        sp = self.setpoint + 5.0 * ~c.open
        t_free = 0.6 * amb + 0.4 * 24.0 + self.gain_base + self.gain_occ * c.occupancy
        air = np.where(
            self.condenser,
            amb,
            np.where(self.supply, 0.3 * amb + 0.7 * 21.0, 23.0 + 0.1 * (amb - 20.0)),
        )
        burst = noise[11] > 1.0
        slip = s_belt * (0.04 + 0.3 * burst)
        speed_run = cmd / 100.0 * self.rpm * (1 - slip)
        bt_run = air + self.friction_k * (cmd / 100.0) ** 2 + 4.0 + 35.0 * s_bear
        lag_run = np.stack([speed_run, bt_run], axis=1)
        lag_off = np.stack([np.zeros_like(amb), air], axis=1)
        cyc = run_cycles(
            self.state,
            dt=dt,
            alpha_space=self.alpha_space,
            t_free=t_free,
            capacity=self.capacity * np.clip(1 - 0.008 * (amb - 35.0), 0.7, 1.2),
            upper=sp + 0.5 * self.band,
            lower=sp - 0.5 * self.band,
            available=~c.tripped,
            thermostatic=self.condenser,
            schedule=c.open,
            disturbance=0.02 * np.sqrt(dt / 60.0) * noise[2],
            lag_run=lag_run,
            lag_off=lag_off,
            alpha_run=self.alpha_on,
            alpha_off=self.alpha_off,
        )
        on = cyc.on
        onf = on.astype(np.float64)
        speed = cyc.lags[:, 0]
        ratio = speed / self.rpm
        power = (
            self.rated
            * (ratio**3 * (1 + 0.1 * s_bear + 0.05 * s_imb) + 0.03 * onf)
            * (1 + 0.08 * s_el)
        )
        power = power * onf
        pf = POWER_FACTOR - 0.12 * s_el
        current = power * 1000.0 / (SQRT3 * c.voltage * pf)
        energy, runtime_h, starts = self.counters.advance(power, on, cyc.starts, dt)

        floor = 0.02 + 0.005 * np.abs(noise[9])
        r2 = ratio**2
        v1 = self.vib[0] * r2 * (1 + 7.0 * s_imb + 0.5 * s_bear) * (1 + 0.04 * noise[6]) + floor
        v2 = self.vib[1] * r2 * (1 + 2.5 * s_belt + 0.6 * s_el) * (1 + 0.05 * noise[7]) + floor
        vb = self.vib[2] * ratio * (1 + 12.0 * s_bear) * (1 + 0.05 * noise[8]) + floor
        bb = 0.3 * ratio * (1 + 0.03 * noise[9])
        rms = np.sqrt(v1**2 + v2**2 + vb**2 + bb**2)

        tripped = c.tripped
        demand = (cyc.t_space > sp) & ~tripped
        commanded = np.where(self.condenser, on | (tripped & (cyc.t_space > sp)), c.open)
        return {
            "speed_rpm": np.maximum(speed + 2.0 * noise[3] * (speed > 1.0), 0.0),
            "motor_current": current * (1 + 0.005 * noise[4]),
            "power": power * (1 + 0.005 * noise[5]),
            "vibration_rms": rms,
            "vib_band_1x": v1,
            "vib_band_2x": v2,
            "vib_band_bearing": vb,
            "bearing_temp": cyc.lags[:, 1] + 0.1 * noise[10],
            "energy": energy,
            "run_state": np.where(tripped, 2.0, onf),
            "alarm_code": np.where(tripped, c.alarm, 0).astype(np.float64),
            "status_flags.running": onf,
            "status_flags.alarm_active": tripped.astype(np.float64),
            "status_flags.lockout": np.zeros_like(amb),
            "runtime_hours": runtime_h,
            "start_count": starts,
            "speed_command": np.where(commanded, np.round(cmd), 0.0),
            "enable": np.ones_like(amb),
            "_demand": demand.astype(np.float64),
            "_power_factor": pf,
        }
