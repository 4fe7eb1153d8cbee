"""Physical relations between signals, thermostat cycling, counters, and the engine."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from edge_agent.registers import encode_point
from firmware_sim.engine import FleetSimulation
from firmware_sim.environment import SiteEnvironment
from firmware_sim.fleet import load_fleet, profiles_of
from firmware_sim.groundtruth import read_ground_truth
from firmware_sim.physics.compressor import POWER_FACTOR

from .conftest import fleet_of, run

DEMO = Path(__file__).resolve().parents[3] / "firmware_sim" / "fleets" / "demo.yaml"


@pytest.fixture(scope="module")
def ac() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A healthy split AC at a hot hotel, 5 days."""
    return run(fleet_of({"id": "ac-1", "asset_type": "compressor", "variant": "split_ac"}), 5)


def test_discharge_pressure_follows_ambient(ac: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    _, o = ac
    on = o["run_state"] == 1
    # Skip the start-up transient of each cycle: compare steps that ran the step before too.
    steady = on & np.roll(on, 1) & np.roll(on, 2)
    r = np.corrcoef(o["ambient_temp"][steady], o["discharge_pressure"][steady])[0, 1]
    assert r > 0.8


def test_power_rises_with_pressure_ratio(ac: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    _, o = ac
    on = (o["run_state"] == 1) & np.roll(o["run_state"] == 1, 2)
    pr = (o["discharge_pressure"] + 1.013) / (o["suction_pressure"] + 1.013)
    assert np.corrcoef(pr[on], o["active_power"][on])[0, 1] > 0.8


def test_current_is_power_over_voltage(ac: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    _, o = ac
    on = o["run_state"] == 1
    expected = o["active_power"][on] * 1000 / (np.sqrt(3) * o["voltage"][on] * POWER_FACTOR)
    mean_i = (o["current_l1"] + o["current_l2"] + o["current_l3"])[on] / 3
    assert np.abs(mean_i / expected - 1).max() < 0.03
    assert (o["current_l1"][~on] == 0).all() and (o["active_power"][~on] == 0).all()


def test_energy_counts_integrated_power(ac: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    _, o = ac
    e = o["energy"]
    assert (np.diff(e) >= 0).all()
    integrated = o["active_power"].sum() / 60.0
    assert e[-1] - e[0] == pytest.approx(integrated, rel=0.01)
    assert (np.diff(o["runtime_hours"]) >= 0).all() and (np.diff(o["start_count"]) >= 0).all()
    starts = np.sum(np.diff((o["run_state"] == 1).astype(int)) == 1)
    assert o["start_count"][-1] - o["start_count"][0] == starts


def test_cycles_last_minutes(ac: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    _, o = ac
    on = (o["run_state"] == 1).astype(int)
    edges = np.flatnonzero(np.diff(on)) + 1
    runs = np.diff(edges)  # alternating on and off durations, minutes
    assert len(runs) > 50
    assert 3 <= np.median(runs) <= 60
    assert runs.min() >= 2  # anti-short-cycle timers


def test_duty_higher_on_hot_afternoons_than_cold_nights() -> None:
    # A temperate office: cold nights, warm afternoons (local 13-17 h vs 1-5 h, UTC+4).
    t, o = run(fleet_of({"id": "ac-1", "asset_type": "compressor", "variant": "split_ac"}), 6)
    hour = ((t / 3600) + 4) % 24
    on = o["run_state"] == 1
    afternoon = on[(hour >= 13) & (hour < 17)].mean()
    night = on[(hour >= 1) & (hour < 5)].mean()
    assert afternoon > night + 0.1


def test_fan_power_follows_fan_law() -> None:
    _, o = run(
        fleet_of({"id": "f-1", "asset_type": "fan", "variant": "supply", "rated_power_kw": 8.0}), 3
    )
    on = (o["run_state"] == 1) & (o["speed_rpm"] > 300)
    ratio = o["speed_rpm"][on] / o["speed_rpm"][on].max()
    p = o["power"][on]
    slope = np.polyfit(np.log(ratio), np.log(p - 0.03 * 8.0), 1)[0]
    assert 2.7 < slope < 3.3


def test_hemispheres_and_daily_cycle() -> None:
    north = fleet_of({"id": "a", "asset_type": "fan", "variant": "supply"})
    south_site = {
        "id": "s",
        "kind": "office",
        "floor_area_m2": 100,
        "timezone": "Australia/Sydney",
        "location": {"lat": -33.9, "lon": 151.2},
    }
    south = fleet_of({"id": "a", "asset_type": "fan", "variant": "supply"}, site=south_site)
    year = north.start.timestamp() + np.arange(0, 365 * 86400, 3600.0)
    jan, jul = slice(214 * 24, 244 * 24), slice(30 * 24, 60 * 24)  # the year starts in June
    for fleet, warmer in ((north, jul), (south, jan)):
        site = fleet.clients[0].sites[0]
        amb = SiteEnvironment(site, fleet.seed, fleet.start).ambient(year)
        colder = jan if warmer is jul else jul
        assert amb[warmer].mean() > amb[colder].mean() + 5
    env = SiteEnvironment(north.clients[0].sites[0], north.seed, north.start)
    days = north.start.timestamp() + np.arange(0, 30 * 86400, 600.0)
    solar = ((days / 3600) + 55.1 / 15) % 24
    amb = env.ambient(days)
    assert amb[(solar > 13) & (solar < 17)].mean() > amb[(solar > 2) & (solar < 6)].mean() + 4
    occ, _ = SiteEnvironment(south.clients[0].sites[0], 1, south.start).occupancy(days)
    local = ((days / 3600) + 10) % 24
    assert occ[(local > 10) & (local < 15)].mean() > 3 * occ[(local > 0) & (local < 5)].mean()


def test_signals_encode_without_saturation_for_a_month() -> None:
    fleet = load_fleet(DEMO)
    profiles = profiles_of(fleet, DEMO.parent)
    sim = FleetSimulation(fleet, profiles, step_s=60)
    for hour in range(0, 30 * 24, 2):
        sim.advance_to(fleet.start + timedelta(hours=hour, minutes=7 * (hour % 8)))
        for dev in fleet.devices():
            values = sim.signals(dev.id)
            profile = profiles[dev.id]
            assert set(values) == set(profile.names)
            for p in profile.points:
                encode_point(p, values[p.name], saturate=False)


@pytest.mark.parametrize("step_s", [1.0, 600.0])
def test_engine_is_stable_for_small_and_large_steps(step_s: float, tmp_path: Path) -> None:
    fleet = fleet_of({"id": "ac-1", "asset_type": "compressor", "variant": "split_ac"})
    sim = FleetSimulation(
        fleet, profiles_of(fleet), step_s=step_s, ground_truth=tmp_path / "gt.jsonl"
    )
    duration = timedelta(hours=3) if step_s == 1.0 else timedelta(days=5)
    states, pressures = [], []
    t = fleet.start
    while t < fleet.start + duration:
        t += timedelta(seconds=step_s * 7)
        sim.advance_to(t)
        s = sim.signals("ac-1")
        states.append(s["run_state"])
        pressures.append(s["discharge_pressure"])
        assert sim.now <= t
    assert set(states) == {0, 1}, "it cycles"
    assert min(pressures) > 5 and max(pressures) < 40


def test_advance_is_chunking_independent() -> None:
    fleet = fleet_of({"id": "ac-1", "asset_type": "compressor", "variant": "split_ac"})
    a = FleetSimulation(fleet, profiles_of(fleet), step_s=60)
    b = FleetSimulation(fleet, profiles_of(fleet), step_s=60)
    a.advance_to(fleet.start + timedelta(hours=30))
    for minutes in range(0, 30 * 60 + 1, 13):
        b.advance_to(fleet.start + timedelta(minutes=minutes))
    b.advance_to(fleet.start + timedelta(hours=30))
    assert a.now == b.now
    assert a.signals("ac-1") == b.signals("ac-1")
    b.advance_to(fleet.start)  # earlier: no-op
    assert b.now == a.now


def test_reboot_resets_counters(tmp_path: Path) -> None:
    fleet = fleet_of({"id": "ac-1", "asset_type": "compressor", "variant": "split_ac"})
    sim = FleetSimulation(fleet, profiles_of(fleet), step_s=60, ground_truth=tmp_path / "gt.jsonl")
    sim.advance_to(fleet.start + timedelta(hours=5))
    before = sim.signals("ac-1")
    assert before["energy"] > 1000 and before["runtime_hours"] > 100
    sim.reboot("ac-1")
    after = sim.signals("ac-1")
    assert after["energy"] == 0 and after["runtime_hours"] == 0 and after["start_count"] == 0
    sim.advance_to(fleet.start + timedelta(hours=10))
    later = sim.signals("ac-1")
    assert 0 < later["energy"] < 200 and later["start_count"] > 0
    events = list(read_ground_truth(tmp_path / "gt.jsonl"))
    assert events == [{"time": "2026-06-01T05:00:00Z", "device_id": "ac-1", "event": "reboot"}]
