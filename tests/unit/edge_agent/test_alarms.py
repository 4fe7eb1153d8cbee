"""Local alarms: hysteresis, minimum duration, each transition reported exactly once."""

from __future__ import annotations

import math
from typing import Any

import pytest

from edge_agent.alarms import (
    ANOMALY,
    OFFLINE,
    AlarmEngine,
    AlarmEvent,
    AnomalySustained,
    OfflineAlarm,
    ThresholdAlarmState,
)
from edge_agent.config import AlarmSettings, ThresholdAlarm
from edge_agent.errors import ConfigError
from edge_agent.profiles import builtin_profiles

NAN = math.nan
HIGH = ThresholdAlarm(
    name="discharge_temp_high", point="discharge_temp", above=120, clear_below=115,
    min_duration_s=60, severity="critical",
)  # fmt: skip


def run(alarm: ThresholdAlarmState, samples: list[tuple[float, Any]]) -> list[tuple[float, str]]:
    out = []
    for ts, value in samples:
        change = alarm.update(ts, value)
        if change is not None:
            out.append((ts, change))
    return out


def every_10s(*values: Any, start: float = 0.0) -> list[tuple[float, Any]]:
    return [(start + 10.0 * i, v) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # beyond from t=0: raised when the run has lasted 60 s, once
        ([121] * 12, [(60, "raised")]),
        # a run broken at t=50 starts again at t=60: raised at t=120
        ([121] * 5 + [119] + [121] * 7, [(120, "raised")]),
        # 120 is not above 120
        ([120] * 20, []),
        # raised at 60; the hysteresis band (115..120] keeps it raised; clears 60 s below 115
        ([121] * 7 + [118] * 5 + [115] * 7, [(60, "raised"), (180, "cleared")]),
        # a return into the band breaks the clearing run
        ([121] * 7 + [114] * 5 + [116] + [114] * 7, [(60, "raised"), (190, "cleared")]),
        # missing samples neither break a run nor clear
        ([121, None, NAN, 121, None, None, 121], [(60, "raised")]),
        ([121] * 7 + [None] * 30, [(60, "raised")]),
        # noise around the threshold never lasts 60 s on one side
        ([119.5, 120.5] * 30, []),
    ],
)
def test_threshold_sequences(values: list[Any], expected: list[tuple[float, str]]) -> None:
    assert run(ThresholdAlarmState(HIGH), every_10s(*values)) == expected


def test_noise_inside_the_hysteresis_band_does_not_flap() -> None:
    spec = HIGH.model_copy(update={"min_duration_s": 0.0})
    noisy = [120.5, 119.0, 121.0, 116.0, 120.2, 117.5] * 10
    assert run(ThresholdAlarmState(spec), every_10s(*noisy)) == [(0, "raised")]
    # without hysteresis the same noise would flap on every crossing
    bare = ThresholdAlarm(name="t", point="p", above=120, min_duration_s=0)
    assert len(run(ThresholdAlarmState(bare), every_10s(*noisy))) > 10


def test_a_low_alarm_mirrors_a_high_one() -> None:
    low = ThresholdAlarm(
        name="suction_low", point="suction_pressure", below=0.5, clear_above=1.0, min_duration_s=20
    )
    # below 0.5 from t=10 to 30: raised; 0.8 is in the band; back at ≥ 1.0 from 60, broken at
    # 80 by 0.9, again from 90: cleared at 110
    values = [2.0, 0.4, 0.3, 0.45, 0.8, 0.2, 1.0, 1.2, 0.9, 1.1]
    assert run(ThresholdAlarmState(low), every_10s(*values)) == [(30, "raised")]
    values += [1.5, 1.5]
    assert run(ThresholdAlarmState(low), every_10s(*values)) == [(30, "raised"), (110, "cleared")]


def test_offline_alarm() -> None:
    alarm = OfflineAlarm(offline_after_s=60)
    outcomes = [(0, True)] + [(t, False) for t in range(10, 130, 10)] + [(130, True), (140, True)]
    changes = [(t, c) for t, ok in outcomes if (c := alarm.poll(t, ok)) is not None]
    assert changes == [(60, "raised"), (130, "cleared")]


def test_a_device_that_never_answered_goes_offline_from_its_first_attempt() -> None:
    alarm = OfflineAlarm(offline_after_s=30)
    assert alarm.poll(100, False) is None
    assert alarm.check(129) is None
    assert alarm.check(130) == "raised"
    assert alarm.check(200) is None


def test_anomaly_sustained() -> None:
    alarm = AnomalySustained(min_windows=3)
    seq = [False, True, True, False, True, True, True, True, True, False, False]
    assert [(i, c) for i, a in enumerate(seq) if (c := alarm.update(a))] == [
        (6, "raised"),
        (9, "cleared"),
    ]


# ---- the engine ----------------------------------------------------------------------------


@pytest.fixture
def profiles() -> dict[str, Any]:
    shipped = builtin_profiles()
    return {"cc-1": shipped["ew-cc100"], "cc-2": shipped["ew-cc100"], "fan-1": shipped["ew-fc200"]}


def test_engine_applies_thresholds_to_devices_with_the_point(profiles: dict[str, Any]) -> None:
    engine = AlarmEngine(AlarmSettings(thresholds=[HIGH]), profiles)
    events: list[AlarmEvent] = []
    for ts, v in every_10s(*([125.0] * 8 + [110.0] * 8)):
        events += engine.on_sample("cc-1", ts, {"discharge_temp": v, "suction_temp": 3.0})
        events += engine.on_sample("fan-1", ts, {"discharge_temp": v})  # fans have none
    assert events == [
        AlarmEvent(
            "cc-1", "discharge_temp_high", "raised", 60, 125.0, "critical",
            "discharge_temp 125 > 120 for 60 s",
        ),
        AlarmEvent(
            "cc-1", "discharge_temp_high", "cleared", 140, 110.0, "critical",
            "discharge_temp 110 <= 115 for 60 s",
        ),
    ]  # fmt: skip
    assert engine.active() == []


def test_engine_keeps_devices_apart(profiles: dict[str, Any]) -> None:
    engine = AlarmEngine(AlarmSettings(thresholds=[HIGH]), profiles)
    raised = []
    for ts, v in every_10s(*([125.0] * 7)):
        raised += engine.on_sample("cc-1", ts, {"discharge_temp": v})
        raised += engine.on_sample("cc-2", ts, {"discharge_temp": 100.0})
    assert [(e.device_id, e.state) for e in raised] == [("cc-1", "raised")]
    assert [(e.device_id, e.name) for e in engine.active()] == [("cc-1", "discharge_temp_high")]


def test_engine_limits_a_threshold_to_its_devices(profiles: dict[str, Any]) -> None:
    only_cc2 = HIGH.model_copy(update={"devices": ["cc-2"], "min_duration_s": 0.0})
    engine = AlarmEngine(AlarmSettings(thresholds=[only_cc2]), profiles)
    assert engine.on_sample("cc-1", 0, {"discharge_temp": 130.0}) == []
    assert len(engine.on_sample("cc-2", 0, {"discharge_temp": 130.0})) == 1


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"devices": ["cc-9"]}, "not a configured device"),
        ({"devices": ["fan-1"]}, "has no point"),
        ({"point": "no_such_point"}, "no device's profile"),
        ({"point": "serial_number"}, "not a number"),
    ],
)
def test_engine_refuses_thresholds_that_cannot_apply(
    profiles: dict[str, Any], update: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        AlarmEngine(AlarmSettings(thresholds=[HIGH.model_copy(update=update)]), profiles)


def test_engine_offline_from_polls_and_ticks(profiles: dict[str, Any]) -> None:
    engine = AlarmEngine(AlarmSettings(offline_after_s=60), profiles)
    assert engine.on_poll("cc-1", 0, True) == []
    assert engine.on_poll("fan-1", 0, True) == []
    assert engine.on_poll("cc-1", 30, False) == []
    assert engine.tick(59) == []
    events = engine.tick(60)
    # cc-2 was never polled: no poll outcome, no offline alarm
    assert sorted((e.device_id, e.name, e.state, e.value) for e in events) == [
        ("cc-1", OFFLINE, "raised", 60.0),
        ("fan-1", OFFLINE, "raised", 60.0),
    ]
    assert engine.tick(120) == [] and engine.on_poll("cc-1", 130, False) == []
    cleared = engine.on_poll("cc-1", 140, True)
    assert [(e.state, e.value, e.severity) for e in cleared] == [("cleared", 140.0, "major")]
    assert [e.device_id for e in engine.active()] == ["fan-1"]


def test_engine_anomaly_sustained(profiles: dict[str, Any]) -> None:
    engine = AlarmEngine(AlarmSettings(anomaly_min_windows=2), profiles)
    events = []
    for i, (anomalous, score) in enumerate([(True, 5.0), (True, 6.0), (True, 7.0), (False, 1.0)]):
        events += engine.on_score("fan-1", 300.0 * (i + 1), anomalous, score)
    assert [(e.name, e.state, e.ts, e.value, e.severity) for e in events] == [
        (ANOMALY, "raised", 600.0, 6.0, "minor"),
        (ANOMALY, "cleared", 1200.0, 1.0, "minor"),
    ]


def test_engine_unknown_device_is_a_key_error(profiles: dict[str, Any]) -> None:
    engine = AlarmEngine(AlarmSettings(), profiles)
    with pytest.raises(KeyError, match="cc-77"):
        engine.on_poll("cc-77", 0, True)
