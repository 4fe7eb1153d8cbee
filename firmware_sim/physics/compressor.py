"""Vapour-compression circuit with an on/off compressor, vectorised over devices.

While running: the evaporator sits ``evap_dt`` below the setpoint and the condenser an
``approach`` above the outdoor air; pressures are the refrigerant's saturation pressures
there (gauge bar). Power follows the pressure ratio (isentropic work) and the mass flow
(suction density, volumetric efficiency); current per phase is
``P / (sqrt(3) * V * PF)`` with a small imbalance; discharge temperature follows the
pressure ratio from the suction gas temperature. When the unit stops, the pressures
equalise, power and current drop to zero and vibration to the noise floor.

Fault signatures (``s`` = severity 0..1):

- condenser_fouling: approach +16 K·s: discharge pressure, discharge temperature, power
  and current rise; a little more subcooling.
- refrigerant_leak: evaporating temperature falls, superheat rises, subcooling falls,
  suction pressure falls; capacity falls, so the unit runs longer.
- valve_wear: suction up, discharge down a little (lower pressure ratio), capacity falls,
  discharge temperature rises (re-compression), vibration at 2x rises.
- bearing_wear: high-band vibration rises strongly, rms and 1x a little, current a little.
- electrical_degradation: phase imbalance grows, power factor falls (more current for
  the same power), the winding heat shows in the discharge temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim.physics.common import F64, SQRT3, Conditions, Counters, lag_factor
from firmware_sim.physics.cycling import CycleState, run_cycles
from firmware_sim.physics.refrigerant import (
    ATMOSPHERE_BAR,
    curve_coefficients,
    sat_pressure,
    sat_temperature,
)

#: Nominal power factor of a healthy compressor motor.
POWER_FACTOR = 0.86
DESIGN_AMBIENT_C = 35.0


@dataclass(frozen=True)
class _Variant:
    setpoint: float
    band: float
    tau_space_s: float
    capacity_k: float
    amb_weight: float
    indoor_ref: float
    evap_dt: float
    approach: float
    superheat: float
    subcool: float
    setback: float
    hp_limit: float
    lp_limit: float


VARIANTS: dict[str, _Variant] = {
    "refrigeration": _Variant(
        3.0, 2.0, 3600.0, 42.0, 0.15, 22.0, 11.0, 10.0, 6.0, 4.0, 0.0, 41.0, 1.0
    ),
    "split_ac": _Variant(23.0, 1.0, 5400.0, 24.0, 0.6, 24.0, 15.0, 12.0, 5.5, 5.0, 5.0, 41.0, 2.5),
    "rooftop": _Variant(22.0, 1.2, 4800.0, 26.0, 0.65, 24.0, 14.0, 13.0, 6.0, 5.5, 5.0, 41.0, 2.5),
}

#: Heat gains of the controlled space by site kind: (base, at full occupancy), kelvin.
GAINS: dict[str, tuple[float, float]] = {
    "office": (2.0, 7.0),
    "mall": (4.0, 8.0),
    "hotel": (2.0, 5.0),
    "home": (1.0, 4.0),
}

#: Which signals the compressor model produces (every point of ew-cc100).
SIGNALS = (
    "suction_pressure",
    "discharge_pressure",
    "suction_temp",
    "discharge_temp",
    "superheat",
    "subcooling",
    "current_l1",
    "current_l2",
    "current_l3",
    "voltage",
    "active_power",
    "energy",
    "vibration_rms",
    "vib_band_1x",
    "vib_band_2x",
    "vib_band_high",
    "ambient_temp",
    "runtime_hours",
    "start_count",
    "run_state",
    "alarm_code",
    "status_flags",
    "setpoint",
    "enable",
    "high_pressure_switch",
    "low_pressure_switch",
)


@dataclass(frozen=True)
class CompressorConfig:
    variant: str
    rated_kw: float
    refrigerant: str
    site_kind: str
    setpoint_c: float | None
    jitter: tuple[float, ...]
    """Eight uniform(-1, 1) numbers from the device's parameter stream (unit-to-unit spread)."""


class CompressorBank:
    """Compressors simulated together; state arrays have one entry per device."""

    N_LAGS = 5  # suction p, discharge p, suction temp, discharge temp, subcooling

    def __init__(self, configs: list[CompressorConfig], dt: float, counters: Counters) -> None:
        self.dt = dt
        self.counters = counters
        n = len(configs)
        var = [VARIANTS[c.variant] for c in configs]
        j = np.array([c.jitter for c in configs]).reshape(n, 8).T if n else np.zeros((8, 0))

        def col(attr: str) -> F64:
            return np.array([getattr(v, attr) for v in var], dtype=np.float64)

        self.rated = np.array([c.rated_kw for c in configs], dtype=np.float64)
        self.setpoint = np.array(
            [
                c.setpoint_c if c.setpoint_c is not None else v.setpoint
                for c, v in zip(configs, var, strict=True)
            ],
            dtype=np.float64,
        )
        self.setback = col("setback")
        self.band = col("band") * (1 + 0.15 * j[0])
        self.alpha_space = lag_factor(dt, col("tau_space_s") * (1 + 0.2 * j[1]))
        self.capacity = col("capacity_k") * (1 + 0.08 * j[2])
        self.amb_weight = col("amb_weight")
        self.indoor_ref = col("indoor_ref")
        gains = (
            np.array([GAINS[c.site_kind] for c in configs]).reshape(n, 2).T
            if n
            else np.zeros((2, 0))
        )
        self.gain_base, self.gain_occ = gains[0], gains[1]
        self.evap_dt = col("evap_dt") + 0.8 * j[3]
        self.approach = col("approach") + 1.0 * j[4]
        self.superheat = col("superheat") + 0.8 * j[5]
        self.subcool = col("subcool") + 0.6 * j[6]
        self.hp_limit = col("hp_limit")
        self.lp_limit = col("lp_limit")
        self.fwd, self.inv = curve_coefficients([c.refrigerant for c in configs])
        theta = np.pi * (j[7] + 1.0)
        self.imb_dir = np.stack([np.cos(theta + k * 2 * np.pi / 3) for k in range(3)])
        self.imb0 = 0.008 + 0.004 * (j[0] + 1.0)
        self.vib = np.stack([1.0 + 0.15 * j[1], 0.45 + 0.05 * j[2], 0.35 + 0.05 * j[3]])
        self.amb_offset = np.where(col("amb_weight") > 0.6, 1.0, 0.3)
        # Nominal operating point: design ambient, setpoint, healthy.
        t_evap = self.setpoint - self.evap_dt
        self.ps_nom = sat_pressure(self.fwd, t_evap)
        self.pr_nom = sat_pressure(self.fwd, DESIGN_AMBIENT_C + self.approach) / self.ps_nom
        self.work_nom = self.pr_nom**0.286 - 1.0
        # Lags: on (start-up) and off (equalisation) time constants, seconds.
        tau_on = np.array([40.0, 60.0, 90.0, 240.0, 120.0])[:, None] * np.ones((1, n))
        tau_off = np.array([240.0, 240.0, 900.0, 1200.0, 300.0])[:, None] * np.ones((1, n))
        self.alpha_on = lag_factor(dt, tau_on)
        self.alpha_off = lag_factor(dt, tau_off)
        t_mix = 0.5 * (self.setpoint + 25.0)
        p_eq = sat_pressure(self.fwd, t_mix) - ATMOSPHERE_BAR
        self.state = CycleState(
            t_space=self.setpoint.copy(),
            on=np.zeros(n, dtype=bool),
            on_time=np.zeros(n),
            off_time=np.full(n, 3600.0),
            lags=np.stack([p_eq, p_eq, self.setpoint, np.full(n, 25.0), np.full(n, 0.3)]),
        )

    def run(self, c: Conditions) -> dict[str, F64]:
        """Simulate one chunk; returns every signal as (steps, devices) in engineering units."""
        dt = self.dt
        amb = c.ambient
        s_foul = c.sev("condenser_fouling")
        s_leak = c.sev("refrigerant_leak")
        s_valve = c.sev("valve_wear")
        s_bear = c.sev("bearing_wear")
        s_el = c.sev("electrical_degradation")
        noise = c.noise

        sp = self.setpoint + self.setback * ~c.open
        t_free = (
            self.amb_weight * amb
            + (1 - self.amb_weight) * self.indoor_ref
            + self.gain_base
            + self.gain_occ * c.occupancy
        )
        capacity = (
            self.capacity
            * (1 - 0.5 * s_leak)
            * (1 - 0.4 * s_valve)
            * (1 - 0.1 * s_foul)
            * np.clip(1 - 0.008 * (amb - DESIGN_AMBIENT_C), 0.7, 1.2)
        )
        # Running targets.
        t_evap = sp - self.evap_dt - 9.0 * s_leak + 4.0 * s_valve
        t_cond = (
            np.maximum(amb, 15.0) + self.approach + 16.0 * s_foul - 3.0 * s_leak - 3.0 * s_valve
        )
        ps_run = sat_pressure(self.fwd, t_evap)
        pd_run = sat_pressure(self.fwd, t_cond)
        sh_run = self.superheat + 14.0 * s_leak - 1.0 * s_valve
        t_suc_run = t_evap + sh_run
        pr_run = pd_run / ps_run
        t_dis_run = (
            (t_suc_run + 273.15) * pr_run**0.22
            - 273.15
            + 14.0 * s_valve
            + 6.0 * s_el
            + 2.0 * s_bear
        )
        sc_run = self.subcool * (1 - 0.9 * s_leak) + 1.5 * s_foul
        # Stopped targets: pressures equalise at the saturation pressure of the mean of
        # the two heat exchangers' air temperatures (lower when charge is missing).
        p_eq = sat_pressure(self.fwd, 0.5 * (amb + sp)) * (1 - 0.25 * s_leak)
        lag_run = np.stack(
            [ps_run - ATMOSPHERE_BAR, pd_run - ATMOSPHERE_BAR, t_suc_run, t_dis_run, sc_run], axis=1
        )
        lag_off = np.stack(
            [
                p_eq - ATMOSPHERE_BAR,
                p_eq - ATMOSPHERE_BAR,
                0.5 * (amb + sp),
                amb + 3.0,
                np.full_like(amb, 0.3),
            ],
            axis=1,
        )
        disturbance = 0.02 * np.sqrt(dt / 60.0) * noise[2]
        cyc = run_cycles(
            self.state,
            dt=dt,
            alpha_space=self.alpha_space,
            t_free=t_free,
            capacity=capacity,
            upper=sp + 0.5 * self.band,
            lower=sp - 0.5 * self.band,
            available=~c.tripped,
            thermostatic=np.ones(amb.shape[1], dtype=bool),
            schedule=np.zeros(amb.shape, dtype=bool),
            disturbance=disturbance,
            lag_run=lag_run,
            lag_off=lag_off,
            alpha_run=self.alpha_on,
            alpha_off=self.alpha_off,
        )
        on = cyc.on
        onf = on.astype(np.float64)
        ps = cyc.lags[:, 0]
        pd = np.maximum(cyc.lags[:, 1], ps)
        t_suc = cyc.lags[:, 2]
        t_dis = cyc.lags[:, 3]
        sc = cyc.lags[:, 4]
        ps_meas = ps + 0.02 * noise[3]
        pd_meas = pd + 0.05 * noise[4]
        t_suc_meas = t_suc + 0.1 * noise[5]
        superheat = t_suc_meas - sat_temperature(self.inv, ps_meas + ATMOSPHERE_BAR)

        # Power from the (lagged) pressure ratio and the mass flow.
        ps_abs = ps + ATMOSPHERE_BAR
        pr = (pd + ATMOSPHERE_BAR) / ps_abs
        work = np.maximum(pr**0.286 - 1.0, 0.0) / self.work_nom
        flow = (ps_abs / self.ps_nom) * (1 - 0.04 * (pr - self.pr_nom)) * (1 - 0.12 * s_valve)
        power = self.rated * (0.2 + 0.8 * flow * work) * (1 + 0.06 * s_el + 0.04 * s_bear) * onf
        power_meas = power * (1 + 0.006 * noise[8])
        volts = c.voltage
        pf = POWER_FACTOR - 0.12 * s_el
        i_avg = power * 1000.0 / (SQRT3 * volts * pf)
        imb = self.imb0 + 0.15 * s_el
        currents = [
            np.maximum(i_avg * (1 + imb * self.imb_dir[k]) * (1 + 0.004 * noise[9 + k]), 0.0)
            for k in range(3)
        ]
        energy, runtime_h, starts = self.counters.advance(power, on, cyc.starts, dt)

        # Vibration: bands scale with the running state; a floor of sensor noise when off.
        floor = 0.02 + 0.005 * np.abs(noise[15])
        v1 = np.where(
            on, self.vib[0] * (1 + 0.6 * s_bear + 0.3 * s_valve) * (1 + 0.04 * noise[12]), floor
        )
        v2 = np.where(
            on, self.vib[1] * (1 + 3.0 * s_valve + 0.5 * s_el) * (1 + 0.05 * noise[13]), floor
        )
        vh = np.where(
            on, self.vib[2] * (1 + 12.0 * s_bear + 1.5 * s_valve) * (1 + 0.05 * noise[14]), floor
        )
        bb = np.where(on, 0.5 * (1 + 0.03 * noise[15]), 0.0)
        rms = np.sqrt(v1**2 + v2**2 + vh**2 + bb**2)

        tripped = c.tripped
        run_state = np.where(tripped, 2.0, onf)
        alarm = np.where(tripped, c.alarm, 0).astype(np.float64)
        demand = (cyc.t_space > sp) & ~tripped
        hp = (pd_meas > self.hp_limit) | (tripped & (c.alarm == 11))
        lp = (on & (ps_meas < self.lp_limit)) | (tripped & (c.alarm == 12))
        return {
            "suction_pressure": ps_meas,
            "discharge_pressure": pd_meas,
            "suction_temp": t_suc_meas,
            "discharge_temp": t_dis + 0.2 * noise[6],
            "superheat": superheat,
            "subcooling": np.maximum(sc + 0.1 * noise[7], 0.0),
            "current_l1": currents[0],
            "current_l2": currents[1],
            "current_l3": currents[2],
            "voltage": volts,
            "active_power": power_meas,
            "energy": energy,
            "vibration_rms": rms,
            "vib_band_1x": v1,
            "vib_band_2x": v2,
            "vib_band_high": vh,
            "ambient_temp": amb + self.amb_offset + 0.1 * noise[0],
            "runtime_hours": runtime_h,
            "start_count": starts,
            "run_state": run_state,
            "alarm_code": alarm,
            "status_flags.compressor_on": onf,
            "status_flags.alarm_active": tripped.astype(np.float64),
            "status_flags.lockout": np.zeros_like(amb),
            "status_flags.demand": demand.astype(np.float64),
            "setpoint": np.broadcast_to(sp, amb.shape).astype(np.float64),
            "enable": np.ones_like(amb),
            "high_pressure_switch": hp.astype(np.float64),
            "low_pressure_switch": lp.astype(np.float64),
            "_space_temp": cyc.t_space,
            "_power_factor": pf,
        }
