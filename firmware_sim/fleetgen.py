"""Generate a large training fleet file (``firmware_sim/fleets/train-200.yaml``).

    python -m firmware_sim.fleetgen firmware_sim/fleets/train-200.yaml

The fleet is a pure function of the arguments: sites in several climates (both
hemispheres), about 60 % compressors and 40 % fans, at most 16 devices per gateway,
random fault rates chosen so that a simulated year yields a few dozen failures of
every fault type, and yearly service and cleaning visits.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from firmware_sim.fleet import FLEET_SCHEMA_VERSION, parse_fleet

# (client, site id, kind, floor area, lat, lon, mean, annual swing, daily swing, tz, currency)
# fmt: off
_SITES: list[tuple[str, str, str, float, float, float, float, float, float, str, str]] = [
    ("sunrise-hotels", "hotel-dubai", "hotel", 30000, 25.2, 55.27, 28.0, 8.0, 9.0,
     "Asia/Dubai", "AED"),
    ("sunrise-hotels", "hotel-singapore", "hotel", 22000, 1.29, 103.85, 27.8, 1.0, 6.0,
     "Asia/Singapore", "SGD"),
    ("sunrise-hotels", "hotel-miami", "hotel", 18000, 25.76, -80.19, 25.2, 4.5, 6.0,
     "America/New_York", "USD"),
    ("sunrise-hotels", "hotel-barcelona", "hotel", 15000, 41.39, 2.17, 16.5, 7.5, 7.0,
     "Europe/Madrid", "EUR"),
    ("metro-malls", "mall-madrid", "mall", 90000, 40.42, -3.70, 15.5, 10.0, 12.0,
     "Europe/Madrid", "EUR"),
    ("metro-malls", "mall-phoenix", "mall", 70000, 33.45, -112.07, 24.0, 10.5, 13.0,
     "America/Phoenix", "USD"),
    ("metro-malls", "mall-sydney", "mall", 60000, -33.87, 151.21, 18.0, 5.0, 7.0,
     "Australia/Sydney", "AUD"),
    ("metro-malls", "mall-mumbai", "mall", 55000, 19.08, 72.88, 27.5, 2.5, 7.0,
     "Asia/Kolkata", "INR"),
    ("officeco", "office-london", "office", 20000, 51.51, -0.13, 11.5, 7.0, 7.0,
     "Europe/London", "GBP"),
    ("officeco", "office-houston", "office", 25000, 29.76, -95.37, 21.0, 8.5, 8.0,
     "America/Chicago", "USD"),
    ("officeco", "office-johannesburg", "office", 16000, -26.2, 28.05, 16.0, 5.0, 12.0,
     "Africa/Johannesburg", "ZAR"),
    ("officeco", "office-tokyo", "office", 30000, 35.68, 139.69, 16.0, 10.5, 7.0,
     "Asia/Tokyo", "JPY"),
    ("homecare", "home-rome", "home", 180, 41.9, 12.5, 16.0, 8.5, 10.0,
     "Europe/Rome", "EUR"),
    ("homecare", "home-atlanta", "home", 220, 33.75, -84.39, 17.5, 9.5, 9.0,
     "America/New_York", "USD"),
    ("homecare", "home-brisbane", "home", 200, -27.47, 153.03, 21.0, 4.5, 8.0,
     "Australia/Brisbane", "AUD"),
]

# Devices per site kind: (asset_type, variant, rated kW range), drawn in this mix.
_MIX: dict[str, list[tuple[str, str, tuple[float, float]]]] = {
    "hotel": [("compressor", "split_ac", (7, 14)), ("compressor", "refrigeration", (5, 12)),
              ("fan", "supply", (4, 9)), ("fan", "exhaust", (2, 5)),
              ("fan", "condenser", (1, 2.5))],
    "mall": [("compressor", "rooftop", (25, 45)), ("compressor", "refrigeration", (8, 18)),
             ("fan", "supply", (7, 15)), ("fan", "exhaust", (4, 9)),
             ("fan", "condenser", (1.5, 3))],
    "office": [("compressor", "split_ac", (8, 16)), ("compressor", "rooftop", (20, 40)),
               ("fan", "supply", (5, 11)), ("fan", "exhaust", (3, 6))],
    "home": [("compressor", "split_ac", (3, 7)), ("fan", "condenser", (0.3, 0.8))],
}

# Expected onsets per device-year by asset type, tuned for a few dozen failures of every
# type in a year of 120 compressors and 80 fans.
_RATES: dict[str, dict[str, float]] = {
    "compressor": {"bearing_wear": 0.17, "refrigerant_leak": 0.33, "condenser_fouling": 0.46,
                   "valve_wear": 0.38, "electrical_degradation": 0.14},
    "fan": {"bearing_wear": 0.27, "fan_imbalance": 0.45, "belt_wear": 0.5,
            "electrical_degradation": 0.22},
}

_TOU = {"kind": "time_of_use", "periods": [
    {"start_hour": 8, "end_hour": 12, "price_per_kwh": 0.24, "weekdays_only": True},
    {"start_hour": 17, "end_hour": 21, "price_per_kwh": 0.29, "weekdays_only": True}]}
# fmt: on


def generate(
    devices: int = 200,
    seed: int = 2026,
    name: str | None = None,
    start: date = date(2026, 1, 1),
    compressor_share: float = 0.6,
) -> dict[str, Any]:
    """The fleet as plain data (what the YAML file holds)."""
    rng = np.random.default_rng(seed)
    n_comp = round(devices * compressor_share)
    kinds: list[tuple[str, str, tuple[float, float]]] = []
    # Assign devices to sites round-robin, respecting each site's mix and the overall share.
    site_devs: dict[str, list[tuple[str, str, tuple[float, float]]]] = {s[1]: [] for s in _SITES}
    comp_left, fan_left = n_comp, devices - n_comp
    i = 0
    while comp_left + fan_left > 0:
        site = _SITES[i % len(_SITES)]
        i += 1
        mix = _MIX[site[2]]
        want_comp = comp_left / max(1, comp_left + fan_left) >= rng.uniform()
        choices = [m for m in mix if (m[0] == "compressor") == want_comp] or mix
        pick = choices[int(rng.integers(len(choices)))]
        if (pick[0] == "compressor" and comp_left == 0) or (pick[0] == "fan" and fan_left == 0):
            continue
        site_devs[site[1]].append(pick)
        kinds.append(pick)
        if pick[0] == "compressor":
            comp_left -= 1
        else:
            fan_left -= 1
    clients: dict[str, dict[str, Any]] = {}
    serial = 0
    for client, sid, kind, area, lat, lon, mean, swing, dswing, tz, cur in _SITES:
        devs = site_devs[sid]
        if not devs:  # a small fleet: fewer devices than sites
            continue
        gateways = []
        for g in range(0, len(devs), 16):
            gdevs = []
            for unit, (asset, variant, (lo, hi)) in enumerate(devs[g : g + 16], start=1):
                serial += 1
                prefix = "cc" if asset == "compressor" else "fan"
                dev_id = f"{prefix}-{sid}-{serial:03d}"
                install = start - timedelta(days=int(rng.integers(200, 3000)))
                rates = {
                    f: round(r * float(rng.uniform(0.6, 1.4)), 3) for f, r in _RATES[asset].items()
                }
                visits = [
                    {
                        "at": f"{start + timedelta(days=int(rng.integers(20, 350)))}T09:00:00Z",
                        "kind": "service",
                    }
                ]
                if asset == "compressor":
                    visits.append(
                        {
                            "at": f"{start + timedelta(days=int(rng.integers(60, 300)))}T08:00:00Z",
                            "kind": "cleaning",
                        }
                    )
                dev: dict[str, Any] = {
                    "id": dev_id,
                    "asset_type": asset,
                    "variant": variant,
                    "profile": "ew-cc100" if asset == "compressor" else "ew-fc200",
                    "unit_id": unit,
                    "install_date": str(install),
                    "rated_power_kw": round(float(rng.uniform(lo, hi)), 1),
                    "fault_rates": rates,
                    "maintenance": sorted(visits, key=lambda v: v["at"]),
                }
                if asset == "compressor" and rng.uniform() < 0.3:
                    dev["refrigerant"] = "R32"
                gdevs.append(dev)
            gateways.append(
                {
                    "id": f"gw-{sid}-{g // 16 + 1}",
                    "transport": "rtu" if (g // 16) % 3 == 2 else "tcp",
                    "devices": gdevs,
                }
            )
        tariff: dict[str, Any] = (
            {**_TOU, "currency": cur, "price_per_kwh": 0.15}
            if kind in ("mall", "office")
            else {"kind": "flat", "currency": cur, "price_per_kwh": 0.2}
        )
        site_obj = {
            "id": sid,
            "kind": kind,
            "floor_area_m2": area,
            "location": {
                "lat": lat,
                "lon": lon,
                "mean_temp_c": mean,
                "annual_swing_c": swing,
                "daily_swing_c": dswing,
            },
            "timezone": tz,
            "tariff": tariff,
            "gateways": gateways,
        }
        clients.setdefault(client, {"id": client, "sites": []})["sites"].append(site_obj)
    return {
        "schema_version": FLEET_SCHEMA_VERSION,
        "name": name or f"train-{devices}",
        "seed": seed,
        "start": f"{start}T00:00:00Z",
        "clients": list(clients.values()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--name", help="the fleet's name (default train-DEVICES); datasets and "
                    "model cards name it, so an evaluation fleet should say so")
    args = ap.parse_args(argv)
    if args.devices < 1:
        ap.error(f"--devices must be at least 1, not {args.devices}")
    data = generate(args.devices, args.seed, name=args.name)
    parse_fleet(data, str(args.out))  # refuse to write an invalid fleet
    header = (
        "# EdgeWatch training fleet, generated by `python -m firmware_sim.fleetgen` "
        f"(--devices {args.devices} --seed {args.seed}).\n"
        "# Random faults (fault_rates: expected onsets per year) give a few dozen failures\n"
        "# of every fault type in a simulated year; a repair follows each random failure.\n"
    )
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=200)
    args.out.write_text(header + body, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
