"""Device profiles: the shipped register maps load, and bad ones are refused clearly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.errors import ProfileError
from edge_agent.profiles import DataType, Table, builtin_profiles, load_profile, parse_profile

SIGNALS = {
    "compressor": {
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
        "run_state",
        "start_count",
        "runtime_hours",
        "alarm_code",
        "vibration_rms",
        "vib_band_1x",
        "vib_band_2x",
        "vib_band_high",
    },
    "fan": {
        "speed_rpm",
        "motor_current",
        "power",
        "vibration_rms",
        "vib_band_1x",
        "vib_band_2x",
        "vib_band_bearing",
        "bearing_temp",
        "energy",
    },
}


def test_shipped_profiles_cover_the_signals_each_asset_type_needs() -> None:
    profiles = builtin_profiles()
    by_type = {p.asset_type: p for p in profiles.values()}
    assert set(by_type) == {"compressor", "fan"}
    for asset_type, needed in SIGNALS.items():
        missing = needed - set(by_type[asset_type].names)
        assert not missing, f"{asset_type} profile lacks {missing}"


def test_shipped_profiles_use_several_types_and_both_word_orders_like_real_vendors() -> None:
    points = [p for prof in builtin_profiles().values() for p in prof.points]
    multiword = [p for p in points if p.count > 1 and p.type is not DataType.STRING]
    assert {p.word_order for p in multiword} == {"big", "little"}
    assert len({p.type for p in points}) >= 3
    assert {t for p in points if (t := p.table)} == set(Table)
    compressor = next(p for p in builtin_profiles().values() if p.asset_type == "compressor")
    energy = compressor.point("energy")
    assert energy.type in (DataType.UINT32, DataType.INT32)  # a 32-bit energy counter


def test_enum_labels_survive_yaml_booleans() -> None:
    # YAML 1.1 reads a bare `off` as false; the shipped maps must label state 0 "off".
    for prof in builtin_profiles().values():
        assert prof.point("run_state").enum == {0: "off", 1: "running", 2: "tripped", 3: "lockout"}


def _base() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "id": "t-1",
        "asset_type": "fan",
        "points": [
            {"name": "speed", "table": "holding", "address": 0, "type": "uint16"},
            {"name": "power", "table": "holding", "address": 1, "type": "float32"},
        ],
    }


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "key", "why"),
    [
        (lambda d: d.update(schema_version=2), "schema_version", "expected 1, got 2"),
        (
            lambda d: d["points"][1].update(address=0),
            "",
            r"points\[1\] \(power\) at holding address 0 overlaps points\[0\]",
        ),
        (lambda d: d["points"][1].update(type="float33"), r"points\[1\]\.type", "Input should be"),
        (
            lambda d: d["points"][0].update(word_order="middle"),
            r"points\[0\]\.word_order",
            "'big' or 'little'",
        ),
        (lambda d: d["points"][0].update(table="coil"), r"points\[0\]", "does not fit table coil"),
        (
            lambda d: d["points"][1].update(name="speed"),
            "",
            "name 'speed' is already used by points",
        ),
        (
            lambda d: d["points"][0].update(bits={"x": 16}),
            r"points\[0\]",
            "do not fit a 16-bit uint16",
        ),
        (lambda d: d["points"][1].update(enum={0: "a"}), r"points\[1\]", "need an integer type"),
        (lambda d: d["points"][0].update(colour="red"), r"points\[0\]\.colour", "Extra inputs"),
        (
            lambda d: d["points"][0].update(address=65535, type="uint32"),
            r"points\[0\]",
            "passes 65535",
        ),
    ],
)
def test_bad_profiles_name_the_file_the_key_and_why(
    tmp_path: Path, change: Any, key: str, why: str
) -> None:
    data = _base()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError, match=why) as err:
        load_profile(path)
    assert str(path) in str(err.value)
    assert err.value.source == str(path)
    if key:
        assert re.search(key, err.value.key)


def test_defaults_set_the_order_of_points_that_name_none(tmp_path: Path) -> None:
    data = _base()
    data["defaults"] = {"word_order": "little"}
    data["points"][0]["word_order"] = "big"
    prof = load_profile(_write(tmp_path, data))
    assert prof.point("speed").word_order == "big"
    assert prof.point("power").word_order == "little"


def test_unreadable_and_non_yaml_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read the file"):
        load_profile(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("points: [\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="expected a mapping"):
        parse_profile([1, 2], "x.yaml")


def test_points_say_what_they_mean_so_downstream_code_treats_them_right() -> None:
    for prof in builtin_profiles().values():
        kinds = {p.name: p.kind.value for p in prof.points}
        assert kinds["energy"] == kinds["runtime_hours"] == kinds["start_count"] == "counter"
        assert kinds["run_state"] == kinds["alarm_code"] == kinds["status_flags"] == "state"
        assert kinds["serial_number"] == "identity"
        assert kinds["enable"] == "setting"
        assert kinds["vibration_rms"] == "measurement"


@pytest.mark.parametrize(
    ("point", "kind"),
    [
        ({"type": "uint16"}, "measurement"),
        ({"type": "uint16", "enum": {0: "a"}}, "state"),
        ({"type": "uint16", "bits": {"a": 0}}, "state"),
        ({"type": "uint16", "writable": True}, "setting"),
        ({"type": "string", "length": 2}, "identity"),
        ({"type": "uint32", "kind": "counter"}, "counter"),
    ],
)
def test_point_kind_defaults_from_its_type(point: dict[str, Any], kind: str) -> None:
    data = _base()
    data["points"][0] = {"name": "x", "table": "holding", "address": 0, **point}
    data["points"][1]["address"] = 10
    assert parse_profile(data).point("x").kind.value == kind
