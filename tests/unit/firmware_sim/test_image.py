from __future__ import annotations

import logging

import pytest

from edge_agent.profiles import Table, builtin_profiles, parse_profile
from edge_agent.registers import decode_point, encode_point
from firmware_sim.modbus.image import DeviceImage, ImageAccessError

CC = builtin_profiles()["ew-cc100"]
FC = builtin_profiles()["ew-fc200"]


def test_update_encodes_every_point_with_the_codec() -> None:
    image = DeviceImage(CC)
    values = {"suction_pressure": 3.25, "suction_temp": -12.3, "serial_number": "CC100-42",
              "enable": True, "high_pressure_switch": True, "energy": 123456.7}
    image.update(values)
    for name, value in values.items():
        p = CC.point(name)
        words = image.read(p.table, p.address, p.count)
        assert words == encode_point(p, value, saturate=True)
        decoded = decode_point(p, words).value
        assert decoded == pytest.approx(value) if isinstance(value, float) else decoded == value


def test_update_saturates_like_firmware() -> None:
    image = DeviceImage(CC)
    image.update({"suction_temp": 1e9, "current_l1": -5.0})
    p = CC.point("suction_temp")
    assert image.read(Table.INPUT, p.address, 1) == [32767]
    assert image.read(Table.INPUT, CC.point("current_l1").address, 1) == [0]


def test_bad_value_keeps_the_last_one_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    image = DeviceImage(CC)
    image.update({"voltage": 230.0})
    with caplog.at_level(logging.DEBUG, logger="firmware_sim.modbus.image"):
        image.update({"voltage": "n/a"})
        image.update({"voltage": "n/a"})
    assert image.read(Table.INPUT, 11, 1) == [2300]
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.DEBUG]


def test_unmapped_reads_as_zero_or_is_refused() -> None:
    image = DeviceImage(CC)
    image.update({"run_state": 1, "alarm_code": 11, "status_flags": 5})
    assert image.read(Table.HOLDING, 100, 5) == [1, 11, 5, 0, 0]
    assert image.read(Table.HOLDING, 60000, 3) == [0, 0, 0]  # far past the map
    strict = DeviceImage(CC, refuse_unmapped=True)
    strict.update({"run_state": 1})
    assert strict.read(Table.HOLDING, 100, 3) == [1, 0, 0]
    for table, address, count in [(Table.HOLDING, 100, 4), (Table.HOLDING, 0, 1),
                                  (Table.INPUT, 24, 2), (Table.COIL, 0, 2)]:
        with pytest.raises(ImageAccessError) as err:
            strict.read(table, address, count)
        assert err.value.code == 2


@pytest.mark.parametrize(
    ("table", "address", "count", "code"),
    [(Table.HOLDING, 0, 126, 3), (Table.HOLDING, 0, 0, 3), (Table.COIL, 0, 2001, 3),
     (Table.INPUT, 65500, 100, 2)],
)
def test_read_limits(table: Table, address: int, count: int, code: int) -> None:
    with pytest.raises(ImageAccessError) as err:
        DeviceImage(CC).read(table, address, count)
    assert err.value.code == code
    DeviceImage(CC).read(table, 0, 125)  # the limits themselves are fine


def test_writes_whole_writable_points_and_hold_them() -> None:
    image = DeviceImage(CC)
    setpoint = CC.point("setpoint")
    written = image.write(Table.HOLDING, setpoint.address, encode_point(setpoint, 4.5))
    assert written == {"setpoint": pytest.approx(4.5)}
    image.update({"setpoint": 20.0})  # the source does not undo a write
    assert decode_point(setpoint, image.read(Table.HOLDING, 120, 1)).value == pytest.approx(4.5)
    image.clear_held()
    image.update({"setpoint": 20.0})
    assert decode_point(setpoint, image.read(Table.HOLDING, 120, 1)).value == pytest.approx(20.0)
    assert image.write(Table.COIL, 0, [1]) == {"enable": True}


@pytest.mark.parametrize(
    ("table", "address", "values", "code"),
    [
        (Table.HOLDING, 100, [1], 2),  # read-only point
        (Table.HOLDING, 121, [1], 2),  # unmapped
        (Table.HOLDING, 120, [1, 2], 2),  # runs past the point into a gap
        (Table.COIL, 1, [1], 2),
        (Table.COIL, 0, [2], 3),  # not a bit
        (Table.HOLDING, 120, [70000], 3),  # not a register
        (Table.INPUT, 0, [1], 1),  # not a writable table
    ],
)
def test_refused_writes(table: Table, address: int, values: list[int], code: int) -> None:
    image = DeviceImage(CC)
    with pytest.raises(ImageAccessError) as err:
        image.write(table, address, values)
    assert err.value.code == code
    assert image.held == {}


def test_partial_write_of_a_multi_register_point_is_refused() -> None:
    profile = parse_profile({
        "schema_version": 1, "id": "t", "asset_type": "fan",
        "points": [{"name": "limit", "table": "holding", "address": 0, "type": "float32",
                    "writable": True}],
    })
    image = DeviceImage(profile)
    with pytest.raises(ImageAccessError, match="part of point limit"):
        image.write(Table.HOLDING, 1, [0])
    written = image.write(Table.HOLDING, 0, [0x4049, 0x0FDB])
    assert written == {"limit": pytest.approx(3.14159, 1e-6)}


def test_fan_profile_bit_tables() -> None:
    image = DeviceImage(FC)
    image.update({"enable": True})
    assert image.read(Table.COIL, 0, 8) == [1, 0, 0, 0, 0, 0, 0, 0]
    assert image.read(Table.DISCRETE, 0, 2) == [0, 0]
