from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.cli import build_parser, main
from firmware_sim.modbus.faults import FaultKind, parse_fault_arg


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["dataset", "--help"],
                                  ["replay", "--help"]])
def test_help_exits_0_with_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: edgewatch-sim" in out
    if argv[0] != "--help":
        assert "examples:" in out
    if argv[0] in ("serve", "replay"):
        assert "GATEWAY:UNIT:KIND[:ARG][@PROB|xCOUNT]" in out


FLEET_OK_BUT_WRONG = """\
schema_version: 1
name: t
start: 2024-01-01
clients:
  - id: c1
    sites:
      - id: s1
        kind: hotel
        floor_area_m2: 1000
        location: {lat: 45, lon: 7}
        gateways:
          - id: gw-1
            devices:
              - {id: d1, asset_type: compressor, variant: walk_in, profile: ew-cc100,
                 unit_id: 1, install_date: 2020-01-01, rated_power_kw: 5}
"""


@pytest.mark.parametrize(
    ("content", "key", "why"),
    [
        (None, "", "cannot read the file"),
        ("schema_version: 1\nname: [\n", "line", "not valid YAML"),
        ("schema_version: 2\n", "schema_version", "expected 1"),
        (FLEET_OK_BUT_WRONG, "clients[0](c1).sites[0](s1).gateways[0](gw-1).devices[0](d1)",
         "variant 'walk_in'"),
    ],
    ids=["missing", "yaml", "version", "variant"],
)
@pytest.mark.parametrize("command", ["serve", "dataset"])
def test_bad_fleet_file_says_file_key_why_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
    content: str | None, key: str, why: str,
) -> None:
    path = tmp_path / "fleet.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    extra = ["--days", "1", "--out", str(tmp_path / "out")] if command == "dataset" else []
    code = main([command, "--fleet", str(path), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"edgewatch-sim: error: {path}: {key}")
    assert why in err
    assert "Traceback" not in err
    assert err.count("\n") == 1 or why == "not valid YAML"  # YAML errors quote the spot


def test_bad_csv_for_replay_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rec.csv"
    path.write_text("when,x\n1,2\n", encoding="utf-8")
    assert main(["replay", "--csv", str(path), "--profile", "ew-cc100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edgewatch-sim: error: {path}: line 1: no time column 'time'")


def test_unknown_profile_for_replay_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rec.csv"
    path.write_text("time,voltage\n1,2\n", encoding="utf-8")
    assert main(["replay", "--csv", str(path), "--profile", "ew-nope"]) == 2
    assert "no shipped profile has this id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("gw-1:3:exception:6@0.05", ("gw-1", 3, FaultKind.EXCEPTION, 6.0, None, 0.05)),
        ("gw-1:*:timeout@0.01", ("gw-1", None, FaultKind.TIMEOUT, None, None, 0.01)),
        ("box:2:garbagex5", ("box", 2, FaultKind.GARBAGE, None, 5, None)),
        ("gw-2:1:reboot:30", ("gw-2", 1, FaultKind.REBOOT, 30.0, None, None)),
        ("gw-2:1:wrong_unit:9x1", ("gw-2", 1, FaultKind.WRONG_UNIT, 9.0, 1, None)),
        ("gw-2:4:offline", ("gw-2", 4, FaultKind.OFFLINE, None, None, None)),
    ],
)
def test_fault_syntax(text: str, parsed: tuple[object, ...]) -> None:
    f = parse_fault_arg(text)
    assert (f.gateway, f.unit_id, f.kind, f.arg, f.count, f.probability) == parsed


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("gw:1", "does not read as"),
        ("gw:x:timeout", "is not a number or *"),
        ("gw:1:melt", "is not one of"),
        ("gw:1:exception:5", "exception code"),
        ("gw:1:timeout@2", "probability"),
        ("gw:1:offline@0.5", "no count or probability"),
        ("gw:1:timeout:3", "takes no argument"),
    ],
)
def test_bad_fault_is_a_usage_error(
    text: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=why):
        parse_fault_arg(text)
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--fleet", "f.yaml", "--fault", text])
    assert exit_.value.code == 2
    assert why in capsys.readouterr().err
