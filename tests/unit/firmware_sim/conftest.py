"""Helpers for the simulator tests: one-device fleets and their simulated history."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from firmware_sim.dataset import iter_chunks
from firmware_sim.faults import plan_device
from firmware_sim.fleet import Fleet, parse_fleet

START = "2026-06-01T00:00:00Z"

HOT_HOTEL: dict[str, Any] = {
    "id": "hot-hotel",
    "kind": "hotel",
    "floor_area_m2": 10000,
    "location": {
        "lat": 25.1,
        "lon": 55.1,
        "mean_temp_c": 28.5,
        "annual_swing_c": 8.0,
        "daily_swing_c": 9.0,
    },
    "timezone": "Asia/Dubai",
}


def fleet_of(
    device: dict[str, Any],
    *,
    site: dict[str, Any] | None = None,
    seed: int = 11,
    start: str = START,
) -> Fleet:
    """A fleet with one device on one gateway of one site."""
    dev = {
        "profile": "ew-cc100" if device["asset_type"] == "compressor" else "ew-fc200",
        "unit_id": 1,
        "install_date": "2024-01-01",
        "rated_power_kw": 10.0,
        **device,
    }
    data = {
        "schema_version": 1,
        "name": "test",
        "seed": seed,
        "start": start,
        "clients": [
            {
                "id": "c1",
                "sites": [
                    {
                        **copy.deepcopy(site or HOT_HOTEL),
                        "gateways": [{"id": "gw1", "devices": [dev]}],
                    }
                ],
            }
        ],
    }
    return parse_fleet(data, "<test>")


def run(
    fleet: Fleet, days: float, step_s: float = 60.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Epoch seconds and every signal (1-D arrays) of the fleet's single device."""
    devs = fleet.devices()
    assert len(devs) == 1
    steps = round(days * 86400 / step_s)
    chunks = list(iter_chunks(fleet, devs, [plan_device(fleet, devs[0])], steps, step_s))
    t = np.concatenate([c[0] for c in chunks])
    out = {k: np.concatenate([c[1][k][:, 0] for c in chunks]) for k in chunks[0][1]}
    return t, out


@pytest.fixture
def simulate() -> Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]]:
    return run
