"""The shared semantics in ``cloud.tsdb.base``: point validation, the interval grid, the
counter rule, canonical tags."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cloud.tsdb.base import (
    NS_PER_S,
    EnergyInterval,
    Point,
    consumed,
    energy_intervals,
    feature_values,
    interval_grid,
    is_feature,
    normalise_tags,
    series_key,
    to_ns,
)

TAGS = {"client": "c", "site": "s", "gateway": "g", "device": "d"}


def test_point_accepts_every_field_type() -> None:
    p = Point("score", 1, {**TAGS, "group": ""}, {"f": 1.5, "i": -3, "b": False, "s": "x\ny"})
    assert p.fields["s"] == "x\ny"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"measurement": "nope"}, "measurement"),
        ({"ts_ns": 1.5}, "ts_ns"),
        ({"ts_ns": True}, "ts_ns"),
        ({"tags": {"client": "c"}}, "lacks the tags"),
        ({"fields": {}}, "at least one field"),
        ({"fields": {"x": float("nan")}}, "not finite"),
        ({"fields": {"x": float("inf")}}, "not finite"),
        ({"fields": {"x": 2**63}}, "64-bit"),
        ({"fields": {"x": None}}, "not a float"),
        ({"fields": {"x": [1]}}, "not a float"),
        ({"fields": {"time": 1.0}}, "not allowed"),
        ({"fields": {"": 1.0}}, "not allowed"),
        ({"fields": {"device": 1.0}}, "both a tag and a field"),
        ({"fields": {"a\nb": 1.0}}, "newline"),
        ({"fields": {"a\\": 1.0}}, "backslash"),
        ({"fields": {"a\\ b": 1.0}}, "backslash"),
        ({"fields": {'a\\"b': 1.0}}, "backslash"),
        ({"tags": {**TAGS, "device": "d\\"}}, "backslash"),
        ({"tags": {**TAGS, "device": "d\tx"}}, "tab"),
        ({"tags": {**TAGS, "x\r": "v"}}, "carriage return"),
        ({"tags": {**TAGS, "time": "v"}}, "not allowed"),
        ({"tags": {**TAGS, "device": 7}}, "not a string"),
    ],
)
def test_point_refuses_what_a_backend_cannot_store(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"measurement": "score", "ts_ns": 1, "tags": TAGS, "fields": {"x": 1}}
    with pytest.raises(ValueError, match=message):
        Point(**{**args, **kwargs})  # type: ignore[arg-type]


def test_backslashes_inside_names_are_fine() -> None:
    Point("score", 1, {**TAGS, "device": "a\\ b"}, {"a\\b__mean": 1.0, "x\\\\y": 2.0})


def test_features_are_fields_with_a_double_underscore() -> None:
    assert is_feature("discharge_temp__mean") and is_feature("a/b__max")
    assert not is_feature("n_samples") and not is_feature("start") and not is_feature("a_b")
    fields = {"t__mean": 1, "n_samples": 60, "t__ok": True, "t__s": "x", "t__max": 2.5}
    assert feature_values(fields) == {"t__mean": 1.0, "t__max": 2.5}
    assert feature_values(fields, ["t__max", "n_samples", "gone__x"]) == {"t__max": 2.5}


def test_to_ns_keeps_the_whole_seconds_exact() -> None:
    assert to_ns(1_718_000_000) == 1_718_000_000 * NS_PER_S
    assert to_ns(1_718_000_000.5) == 1_718_000_000 * NS_PER_S + 500_000_000
    assert to_ns(-1.25) == -1_250_000_000
    assert to_ns(0.000000001) == 1


@pytest.mark.parametrize(
    ("start", "end", "interval", "expected"),
    [
        (3600, 7200, 3600, [3600]),
        (3601, 7200, 3600, [3600]),  # start rounds down
        (3600, 7201, 3600, [3600, 7200]),  # end rounds up
        (3599.5, 3600.5, 3600, [0, 3600]),
        (100, 100, 60, []),
        (200, 100, 60, []),
        (86_400 * 3 + 5, 86_400 * 3 + 6, 86_400, [86_400 * 3]),  # UTC days
    ],
)
def test_interval_grid(start: float, end: float, interval: int, expected: list[int]) -> None:
    grid = interval_grid(start, end, interval)
    assert [b // NS_PER_S for b in grid] == expected
    assert grid.step == interval * NS_PER_S


@pytest.mark.parametrize("interval", [0, -5, 1.5, True])
def test_interval_grid_refuses_bad_intervals(interval: object) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        interval_grid(0, 10, interval)  # type: ignore[arg-type]


def test_counter_rule() -> None:
    assert consumed(10.0, 12.5) == 2.5
    assert consumed(10.0, 10.0) == 0.0
    assert consumed(10.0, 3.0) == 3.0  # reset
    assert consumed(None, 3.0) is None
    assert consumed(3.0, None) is None


def test_energy_intervals_from_lasts() -> None:
    grid = interval_grid(10, 30, 10)
    s = NS_PER_S
    lasts = {0: {"e": 1.0, "old": 5.0}, 10 * s: {"e": 4.0}, 20 * s: {"e": 2.0}, 40 * s: {"x": 1.0}}
    assert energy_intervals(grid, lasts) == [
        EnergyInterval(10.0, "e", 4.0, 3.0),
        EnergyInterval(10.0, "old", None, None),
        EnergyInterval(20.0, "e", 2.0, 2.0),
        EnergyInterval(20.0, "old", None, None),
    ]
    assert energy_intervals(range(0), lasts) == []


def test_series_key_is_canonical() -> None:
    a = series_key({"site": "s", "client": "c", "zone": "", "device": "ü"})
    b = series_key({"device": "ü", "client": "c", "site": "s"})
    assert a == b == '{"client":"c","device":"ü","site":"s"}'
    assert normalise_tags({"client": "c", "zone": "", "x": "1"}) == {
        "client": "c",
        "site": "",
        "gateway": "",
        "device": "",
        "x": "1",
    }


def test_the_sqlite_path_does_not_import_influx_libraries(tmp_path: object) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from cloud.settings import Settings
        from cloud.tsdb import open_store
        store = open_store(Settings(tsdb="sqlite", tsdb_sqlite_path={str(tmp_path)!r} + "/x.db"))
        store.close()
        loaded = sorted(m for m in ("httpx", "influxdb_client") if m in sys.modules)
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
