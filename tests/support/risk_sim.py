"""A small simulated fleet with a failing compressor, for the risk runtime and scorer tests.

Fifteen days at the shipped models' 5-minute rows: a healthy compressor (``cc-ok``) and
fan (``fan-ok``), and a compressor (``cc-leak``) whose refrigerant leaks from day 8 until
it fails on day 13, repaired on day 14. And :func:`season_fleet`: a healthy compressor and
fan through a Central European spring, from February into July.
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


def _fleet(name: str, start: str, site: dict[str, Any], devices: list[dict[str, Any]]) -> Any:
    data = {
        "schema_version": 1,
        "name": name,
        "seed": 11,
        "start": start,
        "clients": [
            {"id": "c1", "sites": [{**site, "gateways": [{"id": "g", "devices": devices}]}]}
        ],
    }
    return parse_fleet(data, f"<{name} test fleet>")


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
    fleet = _fleet("rt", "2026-06-01T00:00:00Z", SITE, devices)
    write_dataset(fleet, profiles_of(fleet), out, days=15, resolution_s=300, workers=1)
    ds = Dataset(out)
    return Sim(ds, {r.asset_id: r for r in ds.recordings()})


SEASON_START = 1_769_904_000.0  # 2026-02-01T00:00:00Z
SEASON_SITE = {
    **SITE,
    "id": "s2",
    "kind": "office",
    "location": {"lat": 48.1, "lon": 11.6, "mean_temp_c": 15.0, "annual_swing_c": 12.0},
    "timezone": "Europe/Berlin",
}


def season_fleet(out: Path, days: int = 150) -> Sim:
    """A healthy compressor (``cc-ok``) and fan (``fan-ok``) from 1 February for ``days``:
    the afternoons warm by about 20 K over the months."""
    devices = [_device("cc-ok", "compressor", 1), _device("fan-ok", "fan", 3)]
    fleet = _fleet("season", "2026-02-01T00:00:00Z", SEASON_SITE, devices)
    write_dataset(fleet, profiles_of(fleet), out, days=days, resolution_s=300, workers=1)
    ds = Dataset(out)
    return Sim(ds, {r.asset_id: r for r in ds.recordings()})


def store_windows(store: Any, sim: Sim, ids: dict[str, str], tags: dict[str, str]) -> None:
    """Write each simulated asset's feature windows (the shipped detector's features, as a
    gateway sends them) into the time-series ``store`` as device ``ids[asset]``."""
    import math

    from cloud.settings import DEFAULT_MODELS_DIR
    from cloud.tsdb.base import Point
    from models.export import load_detectors
    from models.pipeline import score_windows

    detectors = load_detectors(DEFAULT_MODELS_DIR)
    for asset, device_id in ids.items():
        rec = sim.recs[asset]
        det = detectors[rec.asset_type]
        w = score_windows(sim.ds, rec, det).windows
        points = []
        for end, row in zip(rec.t[w.ends], w.x, strict=True):
            fields = {
                n: float(v) for n, v in zip(det.feature_names, row, strict=True) if math.isfinite(v)
            }
            point_tags = tags | {"device": device_id, "group": "slow"}
            points.append(Point("features", int(end * 1e9), point_tags, fields))
        store.write(points)
