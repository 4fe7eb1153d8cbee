from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.profiles import builtin_profiles
from firmware_sim.errors import ReplayError
from firmware_sim.replay import ReplaySource, parse_time, parse_value

CC = builtin_profiles()["ew-cc100"]
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def write(tmp_path: Path, text: str, name: str = "rec.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """time,suction_pressure,suction_temp,enable,serial_number,extra
2024-03-01T12:00:00Z,3.5,-4.2,1,SN-1,x
2024-03-01T12:01:00Z,3.6,-4.0,0,SN-1,x
2024-03-01T12:02:00Z,3.7,,true,SN-2,x
"""


def test_sample_and_hold(tmp_path: Path) -> None:
    src = ReplaySource(write(tmp_path, GOOD), CC)
    assert src.now == src.start == T0
    assert src.rows == 3
    s = src.signals("replay")
    assert set(s) == set(CC.names)  # every point, defaults for the absent ones
    assert (s["suction_pressure"], s["enable"], s["serial_number"]) == (3.5, True, "SN-1")
    assert s["discharge_pressure"] == 0 and s["low_pressure_switch"] is False
    src.advance_to(T0 + timedelta(seconds=59))
    assert src.signals("replay")["suction_pressure"] == 3.5
    src.advance_to(T0 + timedelta(seconds=60))
    assert src.signals("replay")["suction_pressure"] == 3.6
    src.advance_to(T0 + timedelta(minutes=2, seconds=30))
    s = src.signals("replay")
    assert s["suction_pressure"] == 3.7
    assert s["suction_temp"] == -4.0  # empty cell: holds the previous value
    src.advance_to(T0 + timedelta(days=1))
    assert src.signals("replay")["suction_pressure"] == 3.7  # after the end: holds
    src.advance_to(T0)  # never backwards
    assert src.now == T0 + timedelta(days=1)
    with pytest.raises(KeyError):
        src.signals("other")


def test_loop(tmp_path: Path) -> None:
    src = ReplaySource(write(tmp_path, GOOD), CC, loop=True)
    assert src.period == timedelta(minutes=3)
    src.advance_to(T0 + timedelta(minutes=3))
    assert src.signals("replay")["suction_pressure"] == 3.5
    src.advance_to(T0 + timedelta(minutes=7, seconds=5))
    assert src.signals("replay")["suction_pressure"] == 3.6


def test_epoch_time_mapped_columns_and_time_column(tmp_path: Path) -> None:
    base = int(T0.timestamp())
    path = write(tmp_path, f"ts,Psuc\n{base},2.0\n{base + 10},2.5\n")
    src = ReplaySource(path, CC, time_column="ts", time_format="epoch",
                       column_map={"Psuc": "suction_pressure"})
    assert src.start == T0
    src.advance_to(T0 + timedelta(seconds=10))
    assert src.signals("replay")["suction_pressure"] == 2.5


def test_bad_values_are_skipped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, """time,suction_pressure,suction_temp,enable
2024-03-01T12:00:00Z,3.5,-4.2,1
2024-03-01T12:01:00Z,abc,-4.0,maybe
yesterday,9,9,1
2024-03-01T11:00:00Z,9,9,1
2024-03-01T12:02:00Z,3.7,99999,0
""")
    with caplog.at_level(logging.DEBUG, logger="firmware_sim.replay"):
        src = ReplaySource(path, CC)
    assert (src.skipped_rows, src.skipped_values) == (2, 3)
    first = next(r for r in caplog.records if r.levelno == logging.WARNING).getMessage()
    assert "line 3, column suction_pressure" in first and "'abc'" in first
    detail = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("line 4, column time" in m for m in detail)
    assert any("goes back" in m for m in detail)
    assert any("line 6, column suction_temp" in m for m in detail)  # does not fit an int16
    src.advance_to(T0 + timedelta(minutes=1))
    s = src.signals("replay")
    assert (s["suction_pressure"], s["suction_temp"], s["enable"]) == (3.5, -4.0, True)
    src.advance_to(T0 + timedelta(minutes=2))
    assert src.signals("replay")["suction_temp"] == -4.0


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        ("", "line 1", "empty"),
        ("when,suction_pressure\n1,2\n", "line 1", "no time column 'time'"),
        ("time,foo,bar\n1,2,3\n", "line 1", "no column names a point"),
        ("time,suction_pressure\n", "column time", "no data rows"),
        ("time,suction_pressure\nnope,1\nnever,2\n", "column time", "none of the 2 data rows"),
        ("time,suction_pressure,suction_pressure\n1,2,3\n", "column suction_pressure",
         "two columns"),
    ],
)
def test_unusable_csv_names_file_place_and_why(
    tmp_path: Path, text: str, where: str, why: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ReplayError) as err:
        ReplaySource(path, CC)
    assert err.value.source == str(path)
    assert err.value.key == where
    assert why in err.value.why


def test_bad_map_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ReplayError, match="--map names column 'nope'"):
        ReplaySource(path, CC, column_map={"nope": "suction_pressure"})
    with pytest.raises(ReplayError, match="--map names point 'nope'"):
        ReplaySource(path, CC, column_map={"extra": "nope"})
    with pytest.raises(ReplayError, match="cannot read"):
        ReplaySource(tmp_path / "missing.csv", CC)


def test_parsers() -> None:
    assert parse_time("2024-03-01T12:00:00Z") == T0
    assert parse_time("2024-03-01 12:00:00") == T0  # naive = UTC
    assert parse_time(str(T0.timestamp())) == T0
    with pytest.raises(ValueError, match="not an ISO-8601 time"):
        parse_time("1709294400", "iso")
    with pytest.raises(ValueError, match="epoch"):
        parse_time("2024-03-01", "epoch")
    assert parse_value(CC.point("start_count"), "42") == 42
    assert parse_value(CC.point("enable"), "ON") is True
    with pytest.raises(ValueError, match="integer"):
        parse_value(CC.point("start_count"), "4.5")
    with pytest.raises(ValueError, match="range"):
        parse_value(CC.point("start_count"), "-1")


NAB = Path(__file__).parents[2] / "fixtures" / "nab" / "machine_temperature_system_failure.csv"


def test_real_recording_replays_with_its_clock_step_back_skipped_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="firmware_sim.replay"):
        src = ReplaySource(
            NAB, CC, time_column="timestamp", column_map={"value": "discharge_temp"}
        )
    # 22,695 rows; the 11 whose time goes back are skipped, every other row is kept.
    assert src.rows == 22_695 - 11
    assert src.skipped_rows == 11 and src.skipped_values == 0
    first = caplog.records[0].getMessage()
    assert "line 10151, column timestamp" in first and "goes back before" in first
    assert "skipped 11 rows and 0 values" in caplog.records[-1].getMessage()
    assert src.start == datetime(2013, 12, 2, 21, 15, tzinfo=UTC)
    assert src.end == datetime(2014, 2, 19, 15, 25, tzinfo=UTC)
    assert src.signals("replay")["discharge_temp"] == 73.96732207
    src.advance_to(datetime(2013, 12, 2, 21, 22, tzinfo=UTC))  # between two rows: hold
    assert src.signals("replay")["discharge_temp"] == 74.93588199999998
    src.advance_to(src.end)
    assert src.signals("replay")["discharge_temp"] == 96.90386085


def test_a_recording_longer_than_the_row_limit_is_refused_with_where(tmp_path: Path) -> None:
    # the 12,001st kept row: file line 12,013 (a header and 11 skipped rows before it)
    with pytest.raises(ReplayError, match=r"line 12013: .*more than 12000 rows"):
        ReplaySource(
            NAB, CC, time_column="timestamp", column_map={"value": "discharge_temp"},
            max_rows=12_000,
        )
