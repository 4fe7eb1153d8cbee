"""Dataset mode: the folder layout, the files' format, labels, and determinism."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from firmware_sim.dataset import write_dataset
from firmware_sim.fleet import Fleet, load_fleet, parse_fleet, profiles_of
from models.dataset import Dataset

DEMO = Path(__file__).resolve().parents[3] / "firmware_sim" / "fleets" / "demo.yaml"


def _small(seed: int = 7) -> Fleet:
    """Four demo devices (two compressors, two fans); one fails on day 2 and is repaired."""
    data: dict[str, Any] = yaml.safe_load(DEMO.read_text())
    data["seed"] = seed
    keep = {"cc-mad-02", "fan-mad-01", "cc-dxb-02", "fan-dxb-02"}
    for c in data["clients"]:
        for s in c["sites"]:
            for g in s["gateways"]:
                g["devices"] = [d for d in g["devices"] if d["id"] in keep]
            s["gateways"] = [g for g in s["gateways"] if g["devices"]]
        c["sites"] = [s for s in c["sites"] if s["gateways"]]
    for c in data["clients"]:
        for s in c["sites"]:
            for g in s["gateways"]:
                for d in g["devices"]:
                    if d["id"] == "cc-mad-02":
                        d["faults"] = [
                            {
                                "type": "refrigerant_leak",
                                "onset": "2026-05-30T00:00:00Z",
                                "days_to_failure": 3,
                            }
                        ]
                        d["maintenance"] = [{"at": "2026-06-02T18:00:00Z", "kind": "repair"}]
    return parse_fleet(data, "<small>")


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Fleet, Path]:
    fleet = _small()
    out = tmp_path_factory.mktemp("ds")
    ticks: list[float] = []
    summary = write_dataset(
        fleet, profiles_of(fleet), out, days=3, progress=ticks.append, workers=1
    )
    assert summary.devices == 4 and summary.rows == 4 * 3 * 1440 and summary.failures == 1
    assert sum(ticks) == pytest.approx(4 * 3)
    return fleet, out


def test_manifest(dataset: tuple[Fleet, Path]) -> None:
    _, out = dataset
    m = yaml.safe_load((out / "dataset.yaml").read_text())
    assert m["files"] == ["data/**/*.csv"] and m["delimiter"] == ","
    assert m["timestamp"] == {"column": "time"}
    assert m["asset"] == {"column": "asset_id"} and m["asset_type"] == {"column": "asset_type"}
    assert m["failures"] == "failures.csv" and m["events"] == "events.csv"
    assert m["split"] == {"train_until": "2026-06-03T02:24:00Z"}  # 70 % of 3 days
    assert "discharge_pressure" in m["signals"] and "speed_rpm" in m["signals"]
    assert "serial_number" not in m["signals"]
    # counters, states and settings are columns, not signals
    for column in ("energy", "run_state", "alarm_code", "status_flags", "setpoint", "enable"):
        assert column not in m["signals"]
    # when each asset type runs: its profile's run state says "running" at 1
    assert m["operating"] == {"compressor": "run_state==1", "fan": "run_state==1"}
    ds = Dataset(out)
    rec = next(r for r in ds.recordings() if r.asset_type == "compressor")
    running = rec.context["run_state"] == 1
    assert 0 < running.mean() < 1  # it cycles
    assert (rec.signals["current_l1"][running] > 0.5).all()  # and draws current when it runs


def test_one_csv_per_device(dataset: tuple[Fleet, Path]) -> None:
    fleet, out = dataset
    files = sorted(out.glob("data/**/*.csv"))
    assert sorted(p.stem for p in files) == sorted(d.id for d in fleet.devices())
    profiles = profiles_of(fleet)
    for path in files:
        with path.open() as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        dev = path.stem
        numeric = [p.name for p in profiles[dev].points if p.name != "serial_number"]
        assert header == ["time", "asset_id", "asset_type", *numeric, "anomaly", "fault"]
        assert len(body) == 3 * 1440
        assert body[0][0] == "2026-06-01T00:00:00Z" and body[1][0] == "2026-06-01T00:01:00Z"
        assert body[-1][0] == "2026-06-03T23:59:00Z"
        assert {r[1] for r in body} == {dev}
        for r in body[:50]:
            for v in r[3:-1]:
                float(v)
        run_state = header.index("run_state")
        assert {r[run_state] for r in body} <= {"0", "1", "2"}


def test_labels_match_ground_truth(dataset: tuple[Fleet, Path]) -> None:
    _, out = dataset
    gt = [json.loads(line) for line in (out / "ground_truth.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("fault_type")) for e in gt] == [
        ("onset", "refrigerant_leak"),
        ("failure", "refrigerant_leak"),
        ("maintenance", None),
    ]
    assert gt[0]["scheduled_failure"] == "2026-06-02T00:00:00Z"
    with (out / "failures.csv").open() as f:
        failures = list(csv.DictReader(f))
    assert failures == [
        {
            "asset_id": "cc-mad-02",
            "timestamp": "2026-06-02T00:00:00Z",
            "fault_type": "refrigerant_leak",
        }
    ]
    with (out / "events.csv").open() as f:
        events = list(csv.DictReader(f))
    assert events == [
        {
            "asset_id": "cc-mad-02",
            "timestamp": "2026-06-02T00:00:00Z",
            "kind": "error",
            "code": "12",
        },
        {
            "asset_id": "cc-mad-02",
            "timestamp": "2026-06-02T18:00:00Z",
            "kind": "maintenance",
            "code": "repair",
        },
    ]
    # The recording shows the trip between failure and repair.
    path = next(out.glob("data/**/cc-mad-02.csv"))
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run_state"] for r in rows[1440 : 1440 + 18 * 60]] == ["2"] * (18 * 60)
    assert rows[1440]["alarm_code"] == "12" and rows[1440 + 18 * 60]["alarm_code"] == "0"
    # Per-row labels: the fault is present from its onset (before the recording starts)
    # until the repair, tripped time included; healthy after.
    repaired = 1440 + 18 * 60
    assert {(r["anomaly"], r["fault"]) for r in rows[:repaired]} == {("1", "refrigerant_leak")}
    assert {(r["anomaly"], r["fault"]) for r in rows[repaired:]} == {("0", "")}
    healthy = next(p for p in out.glob("data/**/*.csv") if p.stem != "cc-mad-02")
    with healthy.open() as f:
        assert {(r["anomaly"], r["fault"]) for r in csv.DictReader(f)} == {("0", "")}


def test_same_seed_same_bytes_any_workers(dataset: tuple[Fleet, Path], tmp_path: Path) -> None:
    fleet, out = dataset
    write_dataset(fleet, profiles_of(fleet), tmp_path / "again", days=3, workers=2)
    assert _digest(tmp_path / "again") == _digest(out)
    other = _small(seed=8)
    write_dataset(other, profiles_of(other), tmp_path / "seed8", days=3, workers=1)
    a, b = _digest(out), _digest(tmp_path / "seed8")
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.startswith("data/"))


def test_demo_fleet_loads_and_has_what_the_demo_needs() -> None:
    fleet = load_fleet(DEMO)
    devs = fleet.devices()
    assert 8 <= len(devs) <= 14 and len(fleet.gateways()) >= 4
    assert {s.kind for c in fleet.clients for s in c.sites} == {"hotel", "mall", "office", "home"}
    assert any(g.transport == "rtu" for g in fleet.gateways())
    assert sum(bool(d.spec.faults) for d in devs) >= 5
    train = load_fleet(DEMO.parent / "train-200.yaml")
    tdevs = train.devices()
    assert len(tdevs) == 200
    assert sum(d.spec.asset_type == "compressor" for d in tdevs) == 120
    assert all(len(g.devices) <= 16 for g in train.gateways())
