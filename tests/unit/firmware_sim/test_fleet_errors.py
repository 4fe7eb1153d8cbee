"""A wrong fleet file fails with the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from firmware_sim.errors import FleetError
from firmware_sim.fleet import load_fleet

DEMO = Path(__file__).resolve().parents[3] / "firmware_sim" / "fleets" / "demo.yaml"


def _write(tmp_path: Path, edit: Any) -> Path:
    data = yaml.safe_load(DEMO.read_text())
    edit(data)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _first_gateway(data: dict[str, Any]) -> dict[str, Any]:
    gw: dict[str, Any] = data["clients"][0]["sites"][0]["gateways"][0]
    return gw


def test_fault_the_asset_cannot_have(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        _first_gateway(d)["devices"][0]["faults"] = [{"type": "belt_wear", "onset": "2026-06-02"}]

    path = _write(tmp_path, edit)
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    msg = str(info.value)
    assert str(path) in msg
    assert (
        "clients[0](acme-hotels).sites[0](dubai-marina).gateways[0](gw-dxb-1).devices[0](cc-dxb-01)"
        in msg
    )
    assert "belt_wear cannot occur on a compressor" in msg


def test_maintenance_fixing_a_fault_the_asset_cannot_have(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        _first_gateway(d)["devices"][0]["maintenance"] = [
            {"at": "2026-06-02", "kind": "repair", "fixes": ["fan_imbalance"]}
        ]

    with pytest.raises(
        FleetError, match=r"maintenance\[0\] fixes fan_imbalance, which a compressor cannot have"
    ):
        load_fleet(_write(tmp_path, edit))


def test_duplicate_unit_id(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        _first_gateway(d)["devices"][1]["unit_id"] = 1

    path = _write(tmp_path, edit)
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    msg = str(info.value)
    assert msg.startswith(
        f"{path}: clients[0](acme-hotels).sites[0](dubai-marina).gateways[0](gw-dxb-1)"
    )
    assert "unit_id 1 is used by both cc-dxb-01 and cc-dxb-02" in msg


def test_wrong_schema_version(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda d: d.update(schema_version=2))
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    assert str(info.value).startswith(f"{path}: schema_version: expected 1, got 2")
    assert info.value.key == "schema_version"


def test_unknown_variant_and_refrigerant(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        _first_gateway(d)["devices"][0]["refrigerant"] = "R22"

    with pytest.raises(
        FleetError,
        match=r"devices\[0\]\(cc-dxb-01\)\.refrigerant: Input should be 'R410A' or 'R32'",
    ):
        load_fleet(_write(tmp_path, edit))
