"""A small simulated fleet with a failing compressor, for the risk runtime and scorer tests.

Fifteen days at the shipped models' 5-minute rows: a healthy compressor (``cc-ok``) and
fan (``fan-ok``), and a compressor (``cc-leak``) whose refrigerant leaks from day 8 until
it fails on day 13, repaired on day 14.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.dataset import write_dataset
from firmware_sim.fleet import parse_fleet, profiles_of
from models.dataset import Dataset, Recording

H = 3600.0
DAY = 86400.0
START = 1_780_272_000.0  # 2026-06-01T00:00:00Z
ONSET_DAY, FAIL_DAY = 8, 13  # the leaking compressor's fault: onset 06-09, failure 06-14

SITE = {
    "id": "s1",
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


def _device(dev_id: str, asset_type: str, unit: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": dev_id,
        "asset_type": asset_type,
        "variant": "split_ac" if asset_type == "compressor" else "condenser",
        "profile": "ew-cc100" if asset_type == "compressor" else "ew-fc200",
        "unit_id": unit,
        "install_date": "2024-01-01",
        "rated_power_kw": 10.0 if asset_type == "compressor" else 1.5,
        **extra,
    }


@dataclass
class Sim:
    ds: Dataset
    recs: dict[str, Recording]


def leak_fleet(out: Path) -> Sim:
    """Write the fleet's dataset into ``out`` and read it back."""
    leak = _device(
        "cc-leak",
        "compressor",
        2,
        faults=[
            {"type": "refrigerant_leak", "onset": "2026-06-09T00:00:00Z", "days_to_failure": 5}
        ],
        maintenance=[{"at": "2026-06-15T00:00:00Z", "kind": "repair"}],
    )
    devices = [_device("cc-ok", "compressor", 1), leak, _device("fan-ok", "fan", 3)]
    data = {
        "schema_version": 1,
        "name": "rt",
        "seed": 11,
        "start": "2026-06-01T00:00:00Z",
        "clients": [
            {"id": "c1", "sites": [{**SITE, "gateways": [{"id": "g", "devices": devices}]}]}
        ],
    }
    fleet = parse_fleet(data, "<risk test fleet>")
    write_dataset(fleet, profiles_of(fleet), out, days=15, resolution_s=300, workers=1)
    ds = Dataset(out)
    return Sim(ds, {r.asset_id: r for r in ds.recordings()})
