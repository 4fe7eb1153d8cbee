"""Each fault against its healthy twin (same id, same seed, fault removed).

A fault starts 1 day after the fleet start and fails the unit 10 days later; a repair
follows a day after the failure. Late in the progression the signals a technician would
look at move the expected way by a clear margin, in the first day they hardly move; the
unit trips at the scheduled time with the fault's alarm code and stops; the repair clears
the trip and the signals return to the twin's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_sim.engine import FleetSimulation
from firmware_sim.faults import ALARMS, plan_device
from firmware_sim.fleet import FaultType, profiles_of
from firmware_sim.groundtruth import read_ground_truth

from .conftest import fleet_of, run

DAY = 1440  # steps of 60 s
ONSET_D, FAIL_D, REPAIR_D, END_D = 1.0, 11.0, 12.0, 13.5

Metric = Callable[[dict[str, np.ndarray], slice], float]


def _running(out: dict[str, np.ndarray], w: slice) -> np.ndarray:
    return out["run_state"][w] == 1


def mean(signal: str) -> Metric:
    def f(out: dict[str, np.ndarray], w: slice) -> float:
        return float(out[signal][w][_running(out, w)].mean())

    f.__name__ = signal
    return f


def duty(out: dict[str, np.ndarray], w: slice) -> float:
    return float(_running(out, w).mean())


def pressure_ratio(out: dict[str, np.ndarray], w: slice) -> float:
    r = _running(out, w)
    return float(
        ((out["discharge_pressure"][w] + 1.013) / (out["suction_pressure"][w] + 1.013))[r].mean()
    )


def imbalance(out: dict[str, np.ndarray], w: slice) -> float:
    r = _running(out, w)
    i = np.stack([out[f"current_l{k}"][w][r] for k in (1, 2, 3)])
    return float(((i.max(axis=0) - i.min(axis=0)) / i.mean(axis=0)).mean())


def amps_per_kw(currents: tuple[str, ...], power: str) -> Metric:
    def f(out: dict[str, np.ndarray], w: slice) -> float:
        r = _running(out, w)
        amps = np.mean([out[c][w][r].mean() for c in currents])
        return float(amps / out[power][w][r].mean())

    f.__name__ = "amps_per_kw"
    return f


# (asset, variant, fault, [(metric, expected relative change late: sign and least size)])
CASES: list[tuple[str, str, FaultType, list[tuple[Metric, float]]]] = [
    (
        "compressor",
        "split_ac",
        FaultType.BEARING_WEAR,
        [(mean("vib_band_high"), 2.0), (mean("vibration_rms"), 0.2), (mean("current_l1"), 0.01)],
    ),
    (
        "compressor",
        "split_ac",
        FaultType.REFRIGERANT_LEAK,
        [
            (mean("superheat"), 0.5),
            (mean("subcooling"), -0.3),
            (mean("suction_pressure"), -0.08),
            (duty, 0.1),
        ],
    ),
    (
        "compressor",
        "split_ac",
        FaultType.CONDENSER_FOULING,
        [
            (mean("discharge_pressure"), 0.15),
            (mean("discharge_temp"), 0.08),
            (mean("active_power"), 0.1),
            (mean("current_l1"), 0.1),
        ],
    ),
    (
        "compressor",
        "split_ac",
        FaultType.VALVE_WEAR,
        [
            (pressure_ratio, -0.08),
            (mean("suction_pressure"), 0.03),
            (mean("discharge_temp"), 0.05),
            (mean("vib_band_2x"), 0.5),
            (duty, 0.1),
        ],
    ),
    (
        "compressor",
        "split_ac",
        FaultType.ELECTRICAL_DEGRADATION,
        [
            (imbalance, 3.0),
            (amps_per_kw(("current_l1", "current_l2", "current_l3"), "active_power"), 0.1),
            (mean("discharge_temp"), 0.02),
        ],
    ),
    (
        "fan",
        "supply",
        FaultType.BEARING_WEAR,
        [
            (mean("vib_band_bearing"), 2.0),
            (mean("vibration_rms"), 0.1),
            (mean("bearing_temp"), 0.3),
        ],
    ),
    (
        "fan",
        "supply",
        FaultType.FAN_IMBALANCE,
        [(mean("vib_band_1x"), 2.0), (mean("vibration_rms"), 0.5)],
    ),
    (
        "fan",
        "supply",
        FaultType.BELT_WEAR,
        [(mean("speed_rpm"), -0.04), (mean("motor_current"), -0.05), (mean("vib_band_2x"), 0.5)],
    ),
    (
        "fan",
        "exhaust",
        FaultType.ELECTRICAL_DEGRADATION,
        [(amps_per_kw(("motor_current",), "power"), 0.1), (mean("vib_band_2x"), 0.1)],
    ),
]


def _device(asset: str, variant: str, faults: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    dev: dict[str, Any] = {"id": "unit-1", "asset_type": asset, "variant": variant}
    if faults:
        dev["faults"] = faults
        dev["maintenance"] = [
            {"at": f"2026-06-{1 + int(REPAIR_D):02d}T00:00:00Z", "kind": "repair"}
        ]
    return dev


@cache
def _twin(asset: str, variant: str) -> dict[str, np.ndarray]:
    return run(fleet_of(_device(asset, variant)), END_D)[1]


@cache
def _faulty(asset: str, variant: str, fault: FaultType) -> dict[str, np.ndarray]:
    spec = [
        {"type": fault.value, "onset": "2026-06-02T00:00:00Z", "days_to_failure": FAIL_D - ONSET_D}
    ]
    return run(fleet_of(_device(asset, variant, spec)), END_D)[1]


def _w(d0: float, d1: float) -> slice:
    return slice(round(d0 * DAY), round(d1 * DAY))


@pytest.mark.parametrize(
    ("asset", "variant", "fault", "checks"), CASES, ids=[f"{c[0]}-{c[2].value}" for c in CASES]
)
def test_signature_moves_late_not_early(
    asset: str, variant: str, fault: FaultType, checks: list[tuple[Metric, float]]
) -> None:
    twin, bad = _twin(asset, variant), _faulty(asset, variant, fault)
    early, late = _w(ONSET_D, ONSET_D + 1), _w(FAIL_D - 1.5, FAIL_D - 0.01)
    for metric, want in checks:
        m_twin, m_bad = metric(twin, late), metric(bad, late)
        change = (m_bad - m_twin) / abs(m_twin)
        assert np.sign(change) == np.sign(want) and abs(change) >= abs(want), (
            f"{fault.value}: {metric.__name__} late: twin {m_twin:.4g}, faulty {m_bad:.4g} "
            f"({change:+.1%}, expected {want:+.0%} or more)"
        )
        e_twin, e_bad = metric(twin, early), metric(bad, early)
        assert abs(e_bad - e_twin) / abs(e_twin) < 0.06, (
            f"{fault.value}: {metric.__name__} already moved on the first day: "
            f"{e_twin:.4g} -> {e_bad:.4g}"
        )


@pytest.mark.parametrize(
    ("asset", "variant", "fault", "checks"), CASES, ids=[f"{c[0]}-{c[2].value}" for c in CASES]
)
def test_failure_trips_and_repair_restores(
    asset: str, variant: str, fault: FaultType, checks: list[tuple[Metric, float]]
) -> None:
    twin, bad = _twin(asset, variant), _faulty(asset, variant, fault)
    fail_k = round(FAIL_D * DAY)
    tripped = np.flatnonzero(bad["run_state"] == 2)
    assert tripped.size and abs(int(tripped[0]) - fail_k) <= 1, (
        "the unit trips at the scheduled time"
    )
    trip = slice(fail_k + 2, round(REPAIR_D * DAY) - 1)
    assert (bad["run_state"][trip] == 2).all(), "it stays tripped until the repair"
    assert (bad["alarm_code"][trip] == ALARMS[asset][fault]).all()
    power = bad["active_power" if asset == "compressor" else "power"]
    assert (power[trip] == 0).all(), "a tripped unit draws no power"
    if asset == "fan":
        assert (bad["speed_rpm"][fail_k + 5 : trip.stop] < 1).all()
    assert (bad["status_flags.alarm_active"][trip] == 1).all()
    assert (twin["run_state"] != 2).all(), "the twin never trips"
    after = slice(round(REPAIR_D * DAY) + 1, None)
    assert (bad["run_state"][after] != 2).all() and (bad["alarm_code"][after] == 0).all()
    settled = _w(REPAIR_D + 0.5, END_D)
    for metric, _ in checks:
        m_twin, m_bad = metric(twin, settled), metric(bad, settled)
        assert abs(m_bad - m_twin) / abs(m_twin) < 0.06, (
            f"after repair {metric.__name__} is {m_bad:.4g}, the twin's {m_twin:.4g}"
        )


def test_twin_differs_only_after_onset() -> None:
    twin = _twin("compressor", "split_ac")
    bad = _faulty("compressor", "split_ac", FaultType.CONDENSER_FOULING)
    before = _w(0, ONSET_D)
    for name in ("discharge_pressure", "ambient_temp", "voltage", "run_state"):
        np.testing.assert_array_equal(twin[name][before], bad[name][before])


def test_ground_truth_log(tmp_path: Path) -> None:
    spec = [{"type": "refrigerant_leak", "onset": "2026-06-02T00:00:00Z", "days_to_failure": 2.5}]
    dev = {
        **_device("compressor", "split_ac", spec),
        "maintenance": [{"at": "2026-06-05T12:00:00Z", "kind": "repair"}],
    }
    fleet = fleet_of(dev)
    path = tmp_path / "gt.jsonl"
    sim = FleetSimulation(fleet, profiles_of(fleet), step_s=60, ground_truth=path)
    sim.advance_to(fleet.start.replace(day=7))
    sim.reboot("unit-1")
    events = list(read_ground_truth(path))
    assert [e["event"] for e in events] == ["onset", "failure", "maintenance", "reboot"]
    assert events[0] == {
        "time": "2026-06-02T00:00:00Z",
        "device_id": "unit-1",
        "event": "onset",
        "fault_type": "refrigerant_leak",
        "scheduled_failure": "2026-06-04T12:00:00Z",
    }
    assert events[1]["time"] == "2026-06-04T12:00:00Z" and events[1]["alarm_code"] == 12
    assert events[2]["kind"] == "repair" and events[2]["fixes"] == ["refrigerant_leak"]
    assert json.loads(path.read_text().splitlines()[-1])["time"] == "2026-06-07T00:00:00Z"


def test_random_faults_come_from_their_own_stream() -> None:
    dev = {
        "id": "unit-1",
        "asset_type": "fan",
        "variant": "supply",
        "fault_rates": {"belt_wear": 6.0, "fan_imbalance": 4.0},
    }
    fleet = fleet_of(dev)
    plan = plan_device(fleet, fleet.devices()[0])
    kinds = [e.event for e in plan.events]
    assert "onset" in kinds and "failure" in kinds
    # Every trip by a random fault brings an automatic repair within the fleet's delay range.
    repairs = [e for e in plan.events if e.event == "maintenance" and e.automatic]
    assert len(repairs) == len(plan.trips) > 10
    for trip in plan.trips:
        assert 8 * 3600 <= trip.end - trip.start <= 72 * 3600
    again = plan_device(fleet_of(dev, seed=11), fleet.devices()[0])
    assert again.events == plan.events
    other = plan_device(fleet_of(dev, seed=12), fleet_of(dev, seed=12).devices()[0])
    assert other.events != plan.events


def test_anomaly_label_from_a_tenth_of_the_effect_until_repair() -> None:
    spec = [{"type": "bearing_wear", "onset": "2026-06-02T00:00:00Z", "days_to_failure": 10}]
    fleet = fleet_of(_device("compressor", "split_ac", spec))
    (dev,) = fleet.devices()
    plan = plan_device(fleet, dev)
    onset = plan.episodes[0].onset
    days = np.array([-1.0, 0.0, 3.9, 4.1, 9.9, 10.5, 11.5]) * 86400.0 + onset
    # severity (x)^2.5 reaches 0.1 at x = 0.1^0.4 = 0.398 of the 10 days; the repair of a
    # random failure comes later, a scheduled one is repaired by the fleet's maintenance
    assert plan.anomalous(days).tolist()[:6] == [False, False, False, True, True, True]
    assert plan.active_fault(days).tolist()[:2] == ["", "bearing_wear"]
