"""``edgewatch-sim`` as a process: endpoints printed, served, stopped cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from edge_agent.profiles import builtin_profiles
from edge_agent.registers import decode_point

pytestmark = pytest.mark.integration

CC = builtin_profiles()["ew-cc100"]

FLEET = """\
schema_version: 1
name: cli-test
seed: 3
start: 2024-06-01T00:00:00Z
clients:
  - id: c1
    sites:
      - id: s1
        kind: office
        floor_area_m2: 2000
        location: {lat: 48.1, lon: 11.6}
        gateways:
          - id: gw-tcp
            transport: tcp
            port: 0
            devices:
              - {id: cc-1, asset_type: compressor, variant: split_ac, profile: ew-cc100,
                 unit_id: 1, install_date: 2021-05-01, rated_power_kw: 7.5}
              - {id: fan-1, asset_type: fan, variant: supply, profile: ew-fc200,
                 unit_id: 2, install_date: 2021-05-01, rated_power_kw: 2.2}
          - id: gw-rtu
            transport: rtu
            parity: N
            devices:
              - {id: cc-2, asset_type: compressor, variant: rooftop, profile: ew-cc100,
                 unit_id: 7, install_date: 2019-03-01, rated_power_kw: 15}
"""


@contextmanager
def sim_process(args: list[str], cwd: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, []
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def endpoint_lines(proc: subprocess.Popen[str], n: int) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for _ in range(n):
        line = proc.stdout.readline()
        if not line:
            assert proc.stderr is not None
            pytest.fail(f"exited early ({proc.wait()}): {proc.stderr.read()}")
        lines.append(line.split())
    return lines  # type: ignore[return-value]


def test_serve_prints_endpoints_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET, encoding="utf-8")
    args = ["serve", "--fleet", str(fleet), "--speed", "3600", "--fault", "gw-tcp:2:exception:6"]
    with sim_process(args, tmp_path) as (proc, _):
        tcp_line, rtu_line = endpoint_lines(proc, 2)
        assert tcp_line[:2] == ["gw-tcp", "tcp"] and tcp_line[-2:] == ["units", "1,2"]
        assert rtu_line[:2] == ["gw-rtu", "rtu"] and rtu_line[2].startswith("/dev/")
        host, port = tcp_line[2].rsplit(":", 1)
        client = ModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        assert client.connect()
        try:
            r = client.read_holding_registers(110, count=8, device_id=1)
            assert not r.isError(), r
            assert decode_point(CC.point("serial_number"), r.registers).value  # a serial
            r = client.read_input_registers(0, count=25, device_id=1)
            assert not r.isError() and len(r.registers) == 25
            r = client.read_holding_registers(0, count=1, device_id=2)
            assert r.isError() and r.exception_code == 6  # the --fault
        finally:
            client.close()
        serial = ModbusSerialClient(rtu_line[2], baudrate=19200, parity="N", timeout=2, retries=0)
        assert serial.connect()
        try:
            r = serial.read_input_registers(0, count=25, device_id=7)
            assert not r.isError() and len(r.registers) == 25
        finally:
            serial.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert (tmp_path / "ground_truth.jsonl").exists()


def test_replay_serves_a_csv(tmp_path: Path) -> None:
    csv = tmp_path / "rec.csv"
    csv.write_text(
        "time,suction_pressure,Tsuc\n"
        "2024-03-01T12:00:00Z,3.5,-4.2\n"
        "2024-03-01T12:00:01Z,3.75,-4.0\n",
        encoding="utf-8",
    )
    args = [
        "replay",
        "--csv",
        str(csv),
        "--profile",
        "ew-cc100",
        "--port",
        "0",
        "--unit-id",
        "4",
        "--map",
        "Tsuc=suction_temp",
        "--duration",
        "20",
    ]
    with sim_process(args, tmp_path) as (proc, _):
        (line,) = endpoint_lines(proc, 1)
        assert line[:2] == ["replay", "tcp"] and line[-1] == "4"
        host, port = line[2].rsplit(":", 1)
        client = ModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        assert client.connect()
        try:
            seen = set()
            deadline = time.monotonic() + 5
            while len(seen) < 2 and time.monotonic() < deadline:
                r = client.read_input_registers(0, count=5, device_id=4)
                assert not r.isError(), r
                pressure = decode_point(CC.point("suction_pressure"), r.registers[0:2]).value
                temp = decode_point(CC.point("suction_temp"), r.registers[4:5]).value
                seen.add((pressure, round(float(temp), 3)))
                time.sleep(0.1)
        finally:
            client.close()
        assert seen == {(3.5, -4.2), (3.75, -4.0)}  # 1 s of recording per wall second
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_serve_with_a_bad_fault_gateway_exits_2(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware_sim.cli",
            "serve",
            "--fleet",
            str(fleet),
            "--fault",
            "gw-x:1:timeout",
            "--duration",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "no gateway 'gw-x'" in done.stderr and "Traceback" not in done.stderr


def test_dataset_writes_the_documented_folder_and_a_summary(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET, encoding="utf-8")
    out = tmp_path / "ds"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware_sim.cli",
            "dataset",
            "--fleet",
            str(fleet),
            "--days",
            "2",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3 devices" in done.stdout and "8640 rows" in done.stdout
    assert "6.0/6.0" in done.stderr and "device-day" in done.stderr  # the progress bar
    for name in ("dataset.yaml", "failures.csv", "events.csv", "ground_truth.jsonl"):
        assert (out / name).is_file(), name
    csvs = sorted(p.stem for p in out.glob("data/**/*.csv"))
    assert csvs == ["cc-1", "cc-2", "fan-1"]
    lines = (out / "data" / "s1" / "cc-1.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 2 * 1440
    assert lines[0].startswith("time,asset_id,asset_type,suction_pressure,")


def test_a_fleet_can_declare_a_strict_controller_that_refuses_gaps(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    strict = FLEET.replace(
        "unit_id: 1, install_date", "unit_id: 1, refuse_unmapped: true, install_date"
    )
    fleet.write_text(strict, encoding="utf-8")
    with sim_process(["serve", "--fleet", str(fleet), "--duration", "30"], tmp_path) as (proc, _):
        tcp_line, _rtu = endpoint_lines(proc, 2)
        host, port = tcp_line[2].rsplit(":", 1)
        client = ModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        assert client.connect()
        try:
            gap = client.read_holding_registers(100, count=11, device_id=1)  # 103..109 unmapped
            assert gap.isError() and gap.exception_code == 2
            mapped = client.read_holding_registers(100, count=3, device_id=1)
            assert not mapped.isError()
            lenient = client.read_holding_registers(0, count=30, device_id=2)  # fan: gaps read 0
            assert not lenient.isError()
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_serve_reports_faults_as_they_happen_and_the_state_of_the_fleet(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    failing = FLEET.replace(
        "unit_id: 1, install_date: 2021-05-01, rated_power_kw: 7.5}",
        "unit_id: 1, install_date: 2021-05-01, rated_power_kw: 7.5,\n"
        "                 faults: [{type: valve_wear, onset: 2024-06-01T01:00:00Z,"
        " days_to_failure: 0.5}]}",
    )
    fleet.write_text(failing, encoding="utf-8")
    args = ["serve", "--fleet", str(fleet), "--speed", "36000", "--status-every", "0.5"]
    with sim_process(args, tmp_path) as (proc, _):
        endpoint_lines(proc, 2)
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "status" in line and "tripped 1" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    text = "".join(seen)
    assert "2024-06-01T01:00:00Z  onset        cc-1" in text
    assert "valve_wear begins; fails 2024-06-01T13:00:00Z unless repaired" in text
    assert "2024-06-01T13:00:00Z  failure      cc-1              valve_wear: unit trips" in text
    assert "tripped 1" in seen[-1] and "failures 1" in seen[-1]
    truth = (tmp_path / "ground_truth.jsonl").read_text(encoding="utf-8")
    assert '"event":"failure"' in truth and '"device_id":"cc-1"' in truth


def test_serve_for_a_number_of_simulated_days_stops_by_itself_with_a_summary(
    tmp_path: Path,
) -> None:
    fleet = tmp_path / "fleet.yaml"
    failing = FLEET.replace(
        "unit_id: 1, install_date: 2021-05-01, rated_power_kw: 7.5}",
        "unit_id: 1, install_date: 2021-05-01, rated_power_kw: 7.5,\n"
        "                 faults: [{type: refrigerant_leak, onset: 2024-06-01T02:00:00Z,"
        " days_to_failure: 0.25}]}",
    )
    fleet.write_text(failing, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware_sim.cli",
            "serve",
            "--fleet",
            str(fleet),
            "--speed",
            "86400",
            "--days",
            "0.5",
            "--status-every",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == (
        "2024-06-01T12:00:00Z  stopped      1 fault onsets, 1 failures, 0 maintenance visits, "
        "0 reboots; ground truth in ground_truth.jsonl"
    )
    assert "tripped 1" in lines[-2] and lines[-2].startswith("2024-06-01T12:00:00Z  status")
    assert any("refrigerant_leak: unit trips with alarm 12" in ln for ln in lines)
