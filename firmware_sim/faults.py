"""Faults: when they start, how they progress, when the unit fails, and what repairs them.

A device's fault history is planned up front from its fleet entry and the seed (it does
not depend on the physics): scheduled faults and maintenance from the file, and random
onsets drawn as a Poisson process per fault type from the device's own fault stream
(separate from its noise stream, so removing a fault leaves the noise unchanged).

A fault's severity grows from 0 at onset to 1 at the scheduled failure along a convex
curve, ``s = x ** SEVERITY_EXPONENT`` with ``x`` the elapsed fraction: the first days
are at noise level, the last days unmistakable. At failure the unit trips with the
fault's alarm code and stays tripped until a repair (or, for fouling, a cleaning).
A random fault that trips a unit brings a repair visit after a random delay.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from firmware_sim.fleet import FAULTS_BY_ASSET, FaultType, Fleet, FleetDevice, MaintenanceKind
from firmware_sim.groundtruth import GroundTruthEvent
from firmware_sim.streams import rng_stream

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

SEVERITY_EXPONENT = 2.5
#: A fault is labelled anomalous (dataset mode's ``anomaly`` column) from when its effect
#: reaches this share of its effect at failure (40 % of the way from onset to failure).
ANOMALY_SEVERITY = 0.1
#: How far ahead random onsets are drawn (the horizon of any simulation).
RANDOM_HORIZON = timedelta(days=366 * 20)

#: Alarm code a fault trips the unit with, by asset type.
ALARMS: dict[str, dict[FaultType, int]] = {
    "compressor": {
        FaultType.BEARING_WEAR: 31,
        FaultType.REFRIGERANT_LEAK: 12,
        FaultType.CONDENSER_FOULING: 11,
        FaultType.VALVE_WEAR: 41,
        FaultType.ELECTRICAL_DEGRADATION: 22,
    },
    "fan": {
        FaultType.BEARING_WEAR: 31,
        FaultType.FAN_IMBALANCE: 31,
        FaultType.BELT_WEAR: 33,
        FaultType.ELECTRICAL_DEGRADATION: 21,
    },
}

#: Days from onset to failure of a random fault (uniform in the range).
RANDOM_DAYS_TO_FAILURE: dict[FaultType, tuple[float, float]] = {
    FaultType.BEARING_WEAR: (14.0, 45.0),
    FaultType.REFRIGERANT_LEAK: (7.0, 30.0),
    FaultType.CONDENSER_FOULING: (21.0, 60.0),
    FaultType.VALVE_WEAR: (14.0, 40.0),
    FaultType.ELECTRICAL_DEGRADATION: (5.0, 21.0),
    FaultType.FAN_IMBALANCE: (10.0, 30.0),
    FaultType.BELT_WEAR: (7.0, 21.0),
}


@dataclass
class Episode:
    """One fault from onset to its end (repaired) or to the end of time."""

    fault_type: FaultType
    onset: float
    """Epoch seconds."""
    failure: float
    """Scheduled failure, epoch seconds."""
    random: bool
    end: float = np.inf
    """When a repair removed it."""
    failed: bool = False


@dataclass
class Trip:
    start: float
    alarm_code: int
    fault_type: FaultType
    end: float = np.inf


@dataclass
class DevicePlan:
    """A device's whole fault history, and its ground-truth events."""

    device_id: str
    asset_type: str
    episodes: list[Episode] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    events: list[GroundTruthEvent] = field(default_factory=list)

    def severity(self, t: F64) -> dict[FaultType, F64]:
        """Severity 0..1 of each fault type this device can have, at times ``t``."""
        out: dict[FaultType, F64] = {}
        for ftype in FAULTS_BY_ASSET[self.asset_type]:
            out[ftype] = np.zeros_like(t)
        lo, hi = (float(t[0]), float(t[-1])) if t.size else (0.0, -1.0)
        for ep in self.episodes:
            if ep.onset > hi or ep.end <= lo:
                continue
            x = np.clip((t - ep.onset) / (ep.failure - ep.onset), 0.0, 1.0) ** SEVERITY_EXPONENT
            live = (t >= ep.onset) & (t < ep.end)
            out[ep.fault_type] = np.maximum(out[ep.fault_type], np.where(live, x, 0.0))
        return out

    def active_fault(self, t: F64) -> npt.NDArray[np.str_]:
        """The fault present at ``t`` (from onset until repaired, tripped time included),
        the latest-onset one where faults overlap; "" when healthy."""
        out = np.full(t.shape, "", dtype=object)
        for ep in sorted(self.episodes, key=lambda e: e.onset):
            live = (t >= ep.onset) & (t < ep.end)
            out[live] = ep.fault_type.value
        return out.astype(str)

    def anomalous(self, t: F64) -> npt.NDArray[np.bool_]:
        """Whether a fault's effect is at least :data:`ANOMALY_SEVERITY` at ``t`` (until its
        repair; tripped time included)."""
        out = np.zeros(t.shape, dtype=bool)
        for sev in self.severity(t).values():
            out |= sev >= ANOMALY_SEVERITY
        return out

    def tripped(self, t: F64) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Whether the unit is tripped at ``t``, and the alarm code shown."""
        mask = np.zeros(t.shape, dtype=bool)
        code = np.zeros(t.shape, dtype=np.int64)
        for tr in self.trips:
            live = (t >= tr.start) & (t < tr.end)
            mask |= live
            code = np.where(live, tr.alarm_code, code)
        return mask, code


def _ts(t: datetime) -> float:
    return t.timestamp()


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(round(t, 6), UTC)


def plan_device(fleet: Fleet, dev: FleetDevice) -> DevicePlan:
    """Plan one device's faults, failures and maintenance from the fleet file and seed."""
    spec = dev.spec
    asset = spec.asset_type
    plan = DevicePlan(spec.id, asset)
    start = _ts(fleet.start)
    horizon = start + RANDOM_HORIZON.total_seconds()
    # Heap items: (time, priority, order, kind, payload index). Priority: maintenance
    # before failures before onsets at the same instant.
    heap: list[tuple[float, int, int, str, int]] = []
    order = 0

    def push(t: float, prio: int, kind: str, idx: int) -> None:
        nonlocal order
        heapq.heappush(heap, (t, prio, order, kind, idx))
        order += 1

    pending: list[Episode] = []
    for f in spec.faults:
        onset = _ts(f.onset)
        pending.append(Episode(f.type, onset, onset + f.days_to_failure * 86400.0, random=False))
        push(onset, 2, "onset", len(pending) - 1)
    for ftype in sorted(spec.fault_rates, key=lambda f: f.value):
        rate = spec.fault_rates[ftype]
        if rate <= 0:
            continue
        rng = rng_stream(fleet.seed, "faults", spec.id, ftype.value)
        lo, hi = RANDOM_DAYS_TO_FAILURE[ftype]
        t = start
        while True:
            t += float(rng.exponential(365.25 * 86400.0 / rate))
            days = float(rng.uniform(lo, hi))
            if t > horizon:
                break
            onset = float(round(t))
            pending.append(Episode(ftype, onset, onset + round(days * 86400.0), random=True))
            push(onset, 2, "onset", len(pending) - 1)
    visits = [(_ts(m.at), m.kind, m.fixes) for m in spec.maintenance]
    for i, (t_m, _, _) in enumerate(visits):
        push(t_m, 0, "maintenance", i)
    repair_rng = rng_stream(fleet.seed, "repairs", spec.id)
    repair_lo, repair_hi = fleet.auto_repair_hours

    active: dict[FaultType, Episode] = {}
    trip: Trip | None = None
    seq = 0

    def emit(t: float, **kw: object) -> None:
        nonlocal seq
        plan.events.append(GroundTruthEvent(_dt(t), spec.id, seq, **kw))  # type: ignore[arg-type]
        seq += 1

    while heap:
        t, _, _, kind, idx = heapq.heappop(heap)
        if kind == "onset":
            ep = pending[idx]
            if ep.fault_type in active:
                if not ep.random:
                    log.warning(
                        "%s: %s is already active at %s; onset ignored",
                        spec.id,
                        ep.fault_type.value,
                        _dt(t),
                    )
                continue
            if ep.random and trip is not None:
                continue  # a stopped unit does not wear
            active[ep.fault_type] = ep
            plan.episodes.append(ep)
            emit(
                t, event="onset", fault_type=ep.fault_type.value, scheduled_failure=_dt(ep.failure)
            )
            push(ep.failure, 1, "failure", idx)
        elif kind == "failure":
            ep = pending[idx]
            if active.get(ep.fault_type) is not ep:
                continue  # repaired before it failed
            ep.failed = True
            code = ALARMS[asset][ep.fault_type]
            emit(t, event="failure", fault_type=ep.fault_type.value, alarm_code=code)
            if trip is None:
                trip = Trip(t, code, ep.fault_type)
                plan.trips.append(trip)
                if ep.random:
                    delay = float(repair_rng.uniform(repair_lo, repair_hi)) * 3600.0
                    visits.append((float(round(t + delay)), MaintenanceKind.REPAIR, None))
                    push(visits[-1][0], 0, "auto_repair", len(visits) - 1)
        else:  # maintenance or auto_repair
            _, mkind, named = visits[idx]
            if mkind is MaintenanceKind.REPAIR:
                fixing = list(named) if named is not None else list(active)
            elif mkind is MaintenanceKind.CLEANING:
                fixing = list(named) if named is not None else [FaultType.CONDENSER_FOULING]
            else:
                fixing = []
            fixed = sorted((f for f in fixing if f in active), key=lambda f: f.value)
            for ft in fixed:
                active.pop(ft).end = t
            if trip is not None and (mkind is MaintenanceKind.REPAIR or trip.fault_type in fixed):
                trip.end = t
                trip = None
            emit(
                t,
                event="maintenance",
                kind=mkind.value,
                fixes=tuple(f.value for f in fixed),
                automatic=kind == "auto_repair",
            )
    return plan
