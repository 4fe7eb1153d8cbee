"""The fleet generator: a valid fleet file, reproducible from its seed, named as asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.fleet import load_fleet
from firmware_sim.fleetgen import main


def test_writes_a_valid_fleet_named_as_asked(tmp_path: Path) -> None:
    assert main([str(tmp_path / "a.yaml"), "--devices", "40", "--seed", "7",
                 "--name", "eval-40"]) == 0
    assert main([str(tmp_path / "b.yaml"), "--devices", "40", "--seed", "7"]) == 0
    assert main([str(tmp_path / "c.yaml"), "--devices", "40", "--seed", "8"]) == 0
    a, b, c = (load_fleet(tmp_path / f"{x}.yaml") for x in "abc")
    assert a.name == "eval-40" and b.name == c.name == "train-40"
    assert len(a.devices()) == 40
    # the same seed gives the same fleet, another seed another one
    assert [d.id for d in a.devices()] == [d.id for d in b.devices()]
    text = [(tmp_path / f"{x}.yaml").read_text().split("\n", 5)[-1] for x in "bc"]
    assert text[0] != text[1]


@pytest.mark.parametrize("devices", [1, 3, 14, 15, 16])
def test_a_fleet_smaller_than_the_site_list_leaves_the_empty_sites_out(
    tmp_path: Path, devices: int
) -> None:
    out = tmp_path / "small.yaml"
    assert main([str(out), "--devices", str(devices), "--seed", "3"]) == 0
    fleet = load_fleet(out)
    assert len(fleet.devices()) == devices
    assert all(g.devices for c in fleet.clients for s in c.sites for g in s.gateways)


def test_no_devices_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path / "none.yaml"), "--devices", "0"])
    assert "--devices must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "none.yaml").exists()
