"""The simulation engine: a fleet's physics on a fixed time grid, as a signal source.

Time advances on the grid ``fleet.start + k * step_s``. Devices of one asset type are
simulated together (numpy arrays across devices) in chunks of steps; the same code
serves the Modbus servers (:class:`FleetSimulation`, any step) and dataset mode
(:mod:`firmware_sim.dataset`, 1-minute steps).

Randomness is keyed by names, never by position: each device has a noise stream and a
parameter stream from ``(seed, device id)``, each site a weather stream from
``(seed, site id)``, and random fault onsets come from their own per-device streams
(:mod:`firmware_sim.faults`). A device with a fault and its healthy twin therefore see
the same weather and the same sensor noise; the difference is the fault alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_agent.profiles import DataType, DeviceProfile, Point
from edge_agent.registers import integer_range, pack_bits
from firmware_sim.environment import SiteEnvironment
from firmware_sim.errors import FleetError
from firmware_sim.faults import DevicePlan, plan_device
from firmware_sim.fleet import Fleet, FleetDevice
from firmware_sim.groundtruth import GroundTruthEvent, GroundTruthLog
from firmware_sim.physics import compressor, fan
from firmware_sim.physics.common import NOISE_CHANNELS, Conditions, Counters
from firmware_sim.source import SignalValue
from firmware_sim.streams import rng_stream

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: Steps simulated at once (bounded memory for long advances).
MAX_CHUNK = 1440
#: Share of the time since installation a unit has run (seeds the counters).
_INITIAL_DUTY = 0.45

#: Resolution a controller's firmware gives float points (register floats carry more
#: digits than the sensor has).
_FLOAT_RESOLUTION: dict[str, float] = {
    "suction_pressure": 0.01,
    "discharge_pressure": 0.01,
    "motor_current": 0.01,
    "power": 0.001,
    "vibration_rms": 0.01,
    "vib_band_1x": 0.01,
    "vib_band_2x": 0.01,
    "vib_band_bearing": 0.01,
}

SIGNALS_BY_ASSET: dict[str, tuple[str, ...]] = {
    "compressor": compressor.SIGNALS,
    "fan": fan.SIGNALS,
}


def quantize_array(point: Point, values: F64) -> npt.NDArray[np.generic]:
    """What a reader decodes after ``values`` went through ``point``'s register
    (saturating at the register's limits, as the controller's firmware does).

    Integers with a scale come back as ``raw / (1 / scale)`` (the correctly rounded
    decimal, so ``12.3`` prints as ``12.3``); exact integers, enums and bit fields as
    int64; bools as bool; float32 points as float32 at the sensor's resolution.
    """
    t = point.type
    if t is DataType.BOOL:
        return values > 0.5
    if t.is_float:
        res = _FLOAT_RESOLUTION.get(point.name, 0.001)
        rounded = np.round(values / res) * res
        return rounded.astype(np.float32) if t is DataType.FLOAT32 else rounded
    lo, hi = integer_range(t)
    exact = point.scale == 1 and point.offset == 0
    raw = np.round(values if exact else (values - point.offset) / point.scale)
    raw = np.clip(raw, lo, hi)
    if exact:
        return raw.astype(np.int64)
    inv = 1.0 / point.scale
    if abs(inv - round(inv)) < 1e-9 and point.offset == 0:
        out: F64 = raw / round(inv)
        return out
    out = raw * point.scale + point.offset
    return out


def serial_of(dev: FleetDevice) -> str:
    """The serial number a controller reports: the spec's, or one derived from the id."""
    if dev.spec.serial:
        return dev.spec.serial
    return "EW" + dev.id.upper().replace("-", "").replace("_", "").replace(".", "")[-14:]


def check_profile(dev: FleetDevice, profile: DeviceProfile, source: str) -> None:
    """Every point of the profile must be a signal the simulator produces."""
    known = set(SIGNALS_BY_ASSET[dev.spec.asset_type])
    for p in profile.points:
        if p.type is DataType.STRING:
            continue
        if p.name not in known:
            raise FleetError(
                source,
                f"device {dev.id}.profile",
                f"point {p.name!r} of profile {profile.id} is not a signal the simulator "
                f"produces for a {dev.spec.asset_type} (it produces {', '.join(sorted(known))})",
            )
        if p.bits:
            extra = set(p.bits) - _FLAG_NAMES[dev.spec.asset_type]
            if extra:
                raise FleetError(
                    source,
                    f"device {dev.id}.profile",
                    f"bits {sorted(extra)} of point {p.name!r} are not simulated "
                    f"(simulated: {sorted(_FLAG_NAMES[dev.spec.asset_type])})",
                )


_FLAG_NAMES: dict[str, frozenset[str]] = {
    "compressor": frozenset({"compressor_on", "alarm_active", "lockout", "demand"}),
    "fan": frozenset({"running", "alarm_active", "lockout"}),
}


class _NoiseStream:
    """A device's standard-normal noise, drawn in fixed blocks so the values do not
    depend on how many steps each call asks for."""

    BLOCK = 1440

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: F64 = np.empty((0, NOISE_CHANNELS))

    def take(self, n: int) -> F64:
        while self._buf.shape[0] < n:
            self._buf = np.concatenate(
                [self._buf, self._rng.standard_normal((self.BLOCK, NOISE_CHANNELS))]
            )
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


class DeviceBatch:
    """Devices of one asset type, simulated together over consecutive chunks."""

    def __init__(
        self,
        fleet: Fleet,
        devices: Sequence[FleetDevice],
        plans: Sequence[DevicePlan],
        envs: Mapping[str, SiteEnvironment],
        dt: float,
    ) -> None:
        if not devices:
            raise ValueError("a batch needs at least one device")
        self.asset_type = devices[0].spec.asset_type
        self.devices = list(devices)
        self.plans = list(plans)
        self.envs = envs
        self.dt = dt
        self.index = {d.id: i for i, d in enumerate(devices)}
        seed = fleet.seed
        self._sites = [d.site.id for d in devices]
        self._noise = [_NoiseStream(rng_stream(seed, "device", d.id, "noise")) for d in devices]
        jitter = [
            tuple(float(x) for x in rng_stream(seed, "device", d.id, "params").uniform(-1, 1, 8))
            for d in devices
        ]
        start = fleet.start
        run_h = np.array(
            [
                max(
                    0.0,
                    (
                        start
                        - datetime(
                            d.spec.install_date.year,
                            d.spec.install_date.month,
                            d.spec.install_date.day,
                            tzinfo=UTC,
                        )
                    ).total_seconds(),
                )
                / 3600.0
                * _INITIAL_DUTY
                for d in devices
            ]
        )
        rated = np.array([d.spec.rated_power_kw for d in devices])
        counters = Counters(
            energy_kwh=np.round(run_h * rated * 0.8, 1),
            runtime_s=np.floor(run_h) * 3600.0,
            starts=np.floor(run_h * 2.5),
        )
        self.counters = counters
        self._vnom = np.array([envs[s].voltage_nominal for s in self._sites])
        self.bank: compressor.CompressorBank | fan.FanBank
        if self.asset_type == "compressor":
            self.bank = compressor.CompressorBank(
                [
                    compressor.CompressorConfig(
                        d.spec.variant,
                        d.spec.rated_power_kw,
                        d.spec.refrigerant,
                        d.site.kind,
                        d.spec.setpoint_c,
                        j,
                    )
                    for d, j in zip(devices, jitter, strict=True)
                ],
                dt,
                counters,
            )
        else:
            self.bank = fan.FanBank(
                [
                    fan.FanConfig(
                        d.spec.variant, d.spec.rated_power_kw, d.site.kind, d.spec.setpoint_c, j
                    )
                    for d, j in zip(devices, jitter, strict=True)
                ],
                dt,
                counters,
            )

    def run(
        self, t: F64, sites: Mapping[str, tuple[F64, F64, F64, npt.NDArray[np.bool_]]]
    ) -> dict[str, F64]:
        """Simulate the steps at epoch seconds ``t``; ``sites`` maps a site id to its
        (ambient, occupancy, grid load, open) over ``t``. Returns (steps, devices) arrays."""
        n, d = t.size, len(self.devices)
        noise = np.stack([s.take(n) for s in self._noise], axis=2).transpose(1, 0, 2)
        amb = np.stack([sites[s][0] for s in self._sites], axis=1)
        occ = np.stack([sites[s][1] for s in self._sites], axis=1)
        grid = np.stack([sites[s][2] for s in self._sites], axis=1)
        open_ = np.stack([sites[s][3] for s in self._sites], axis=1)
        volts = self._vnom * (1.01 - 0.03 * grid) + (self._vnom / 400.0) * 0.8 * noise[1]
        tripped = np.empty((n, d), dtype=bool)
        alarm = np.empty((n, d), dtype=np.int64)
        severity: dict[str, F64] = {}
        for i, plan in enumerate(self.plans):
            tripped[:, i], alarm[:, i] = plan.tripped(t)
            for ftype, s in plan.severity(t).items():
                if ftype.value not in severity:
                    severity[ftype.value] = np.zeros((n, d))
                severity[ftype.value][:, i] = s
        cond = Conditions(amb, occ, open_, volts, tripped, alarm, severity, noise)
        return self.bank.run(cond)

    def reset_counters(self, device_id: str) -> None:
        self.counters.reset(self.index[device_id])


def site_conditions(
    envs: Mapping[str, SiteEnvironment], t: F64
) -> dict[str, tuple[F64, F64, F64, npt.NDArray[np.bool_]]]:
    """Each site's (ambient, occupancy, grid load, open) over ``t``."""
    out = {}
    for sid, env in envs.items():
        occ, grid = env.occupancy(t)
        out[sid] = (env.ambient(t), occ, grid, occ >= env.open_threshold)
    return out


def point_values(
    profile: DeviceProfile, row: Mapping[str, float], serial: str
) -> dict[str, SignalValue]:
    """One device's signals at one step, by point name, as a reader decodes them."""
    out: dict[str, SignalValue] = {}
    for p in profile.points:
        if p.type is DataType.STRING:
            out[p.name] = serial[: 2 * p.count]
        elif p.bits:
            flags = {b: row[f"{p.name}.{b}"] > 0.5 for b in p.bits}
            out[p.name] = pack_bits(p, flags)
        else:
            q = quantize_array(p, np.array([row[p.name]]))[0]
            if p.type is DataType.BOOL:
                out[p.name] = bool(q)
            elif isinstance(q, np.integer):
                out[p.name] = int(q)
            else:
                out[p.name] = float(q)
    return out


class FleetSimulation:
    """The physics of a whole fleet, stepped on demand; implements ``SignalSource``."""

    def __init__(
        self,
        fleet: Fleet,
        profiles: Mapping[str, DeviceProfile],
        *,
        step_s: float = 60.0,
        ground_truth: Path | None = None,
        on_event: Callable[[GroundTruthEvent], None] | None = None,
    ) -> None:
        """``on_event`` is called with each ground-truth event as simulated time passes it."""
        if not 0.01 <= step_s <= 3600:
            raise ValueError(f"step_s must be between 0.01 and 3600 s, got {step_s}")
        self.fleet = fleet
        self.step_s = float(step_s)
        self._start = fleet.start.astimezone(UTC)
        self._t0 = self._start.timestamp()
        devices = fleet.devices()
        self._devices = {d.id: d for d in devices}
        self._profiles = dict(profiles)
        for d in devices:
            if d.id not in self._profiles:
                raise FleetError(
                    fleet.name, f"device {d.id}.profile", "no profile was given for it"
                )
            check_profile(d, self._profiles[d.id], fleet.name)
        self._serials = {d.id: serial_of(d) for d in devices}
        plans = {d.id: plan_device(fleet, d) for d in devices}
        self.plans = plans
        envs = {
            s.id: SiteEnvironment(s, fleet.seed, self._start)
            for c in fleet.clients
            for s in c.sites
        }
        self._envs = envs
        self._batches: list[DeviceBatch] = []
        self._where: dict[str, tuple[DeviceBatch, int]] = {}
        for asset in ("compressor", "fan"):
            group = [d for d in devices if d.spec.asset_type == asset]
            if group:
                b = DeviceBatch(fleet, group, [plans[d.id] for d in group], envs, self.step_s)
                self._batches.append(b)
                for i, d in enumerate(group):
                    self._where[d.id] = (b, i)
        self._events = sorted(e for p in plans.values() for e in p.events)
        self._next_event = 0
        self._log = GroundTruthLog(ground_truth) if ground_truth is not None else None
        self._on_event = on_event
        self._rows: dict[str, dict[str, float]] = {}
        self._k = -1
        self._step_until(0)

    @property
    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._k * self.step_s)

    def advance_to(self, t: datetime) -> None:
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        k = math.floor((t.timestamp() - self._t0) / self.step_s + 1e-9)
        if k > self._k:
            self._step_until(k)

    def _step_until(self, k_end: int) -> None:
        while self._k < k_end:
            k0 = self._k + 1
            n = min(MAX_CHUNK, k_end - self._k)
            t = self._t0 + (k0 + np.arange(n, dtype=np.float64)) * self.step_s
            sites = site_conditions(self._envs, t)
            for b in self._batches:
                out = b.run(t, sites)
                for i, d in enumerate(b.devices):
                    self._rows[d.id] = {name: float(v[-1, i]) for name, v in out.items()}
            self._k += n
        self._emit_events()

    def _emit_events(self) -> None:
        now = self.now
        start = self._next_event
        while self._next_event < len(self._events) and self._events[self._next_event].time <= now:
            self._next_event += 1
        self._publish(self._events[start : self._next_event])

    def _publish(self, events: Sequence[GroundTruthEvent]) -> None:
        for e in events:
            detail = e.fault_type or e.kind or ""
            log.info("%s %s %s %s", e.time.isoformat(), e.device_id, e.event, detail)
        if self._log is not None:
            self._log.write(events)
        if self._on_event is not None:
            for e in events:
                self._on_event(e)

    def signals(self, device_id: str) -> Mapping[str, SignalValue]:
        try:
            row = self._rows[device_id]
        except KeyError:
            raise KeyError(f"no device {device_id!r} in fleet {self.fleet.name!r}") from None
        return point_values(self._profiles[device_id], row, self._serials[device_id])

    def reboot(self, device_id: str) -> None:
        batch, _ = self._where[device_id]
        batch.reset_counters(device_id)
        row = self._rows[device_id]
        for name in ("energy", "runtime_hours", "start_count"):
            row[name] = 0.0
        self._publish([GroundTruthEvent(self.now, device_id, -1, event="reboot")])
