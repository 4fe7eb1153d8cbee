"""Local alarms: pure state machines that report each transition exactly once.

Three kinds, all driven by the caller with timestamps (no clock of their own):

- :class:`ThresholdAlarmState` (``ThresholdAlarm`` in the config): raised when a point's value
  stays beyond ``above`` (``value > above``) or ``below`` (``value < below``) for
  ``min_duration_s``, i.e. every sample from the first beyond one to one at least
  ``min_duration_s`` later is beyond; cleared when the values stay back past the clear level
  (``value <= clear_below``, or ``value >= clear_above``; the clear level defaults to the
  threshold) for ``min_duration_s`` the same way. Between the two levels (the hysteresis
  band) the alarm keeps its state and any run towards a change starts again. A missing value
  (None, NaN) neither raises, clears, nor breaks a run: the offline alarm speaks for gaps.
- :class:`OfflineAlarm`: raised when a device has not answered for ``offline_after_s`` (from
  its last good answer, or from the first attempt if it never answered); cleared by the
  first good answer.
- :class:`AnomalySustained`: raised after ``anomaly_min_windows`` consecutive anomalous
  windows; cleared by the first normal window.

:class:`AlarmEngine` keeps one of each per device (thresholds only where they apply) and
turns transitions into :class:`AlarmEvent`\\ s: one ``raised`` and later one ``cleared``,
never one per sample. ``device_offline`` is ``major``, ``anomaly_sustained`` ``minor``;
threshold alarms carry their configured severity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from edge_agent.config import AlarmSettings, ThresholdAlarm
from edge_agent.errors import ConfigError
from edge_agent.profiles import DeviceProfile, PointKind

Transition = Literal["raised", "cleared"]
Severity = Literal["info", "minor", "major", "critical"]
SampleValue = float | int | bool | None

OFFLINE = "device_offline"
ANOMALY = "anomaly_sustained"
OFFLINE_SEVERITY: Severity = "major"
ANOMALY_SEVERITY: Severity = "minor"


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One alarm transition of one device."""

    device_id: str
    name: str
    state: Transition
    ts: float
    """Epoch seconds of the sample, poll or window that made the transition."""
    value: float
    """Threshold alarms: the point's value; offline: seconds without an answer;
    anomaly: the window's score."""
    severity: Severity
    detail: str


def _number(value: SampleValue) -> float | None:
    """The value as a float, None when it is missing (None or NaN)."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


class ThresholdAlarmState:
    """Hysteresis and minimum duration over the samples of one point of one device."""

    def __init__(self, spec: ThresholdAlarm) -> None:
        self.spec = spec
        self.active = False
        self._run_since: float | None = None
        if spec.above is not None:
            self.high = True
            self.level = spec.above
            self.clear_level = spec.above if spec.clear_below is None else spec.clear_below
        elif spec.below is not None:
            self.high = False
            self.level = spec.below
            self.clear_level = spec.below if spec.clear_above is None else spec.clear_above
        else:  # the config validator requires exactly one side
            raise ValueError(f"threshold alarm {spec.name}: give one of above or below")

    def beyond(self, value: float) -> bool:
        return value > self.level if self.high else value < self.level

    def back(self, value: float) -> bool:
        return value <= self.clear_level if self.high else value >= self.clear_level

    def update(self, ts: float, value: SampleValue) -> Transition | None:
        """Feed one sample; the transition it completes, if any."""
        v = _number(value)
        if v is None:
            return None
        toward = self.back(v) if self.active else self.beyond(v)
        if not toward:
            self._run_since = None
            return None
        if self._run_since is None or ts < self._run_since:
            self._run_since = ts
        if ts - self._run_since < self.spec.min_duration_s:
            return None
        self._run_since = None
        self.active = not self.active
        return "raised" if self.active else "cleared"

    def describe(self, value: float) -> str:
        p, d = self.spec.point, self.spec.min_duration_s
        if self.active:
            op = ">" if self.high else "<"
            return f"{p} {value:g} {op} {self.level:g} for {d:g} s"
        op = "<=" if self.high else ">="
        return f"{p} {value:g} {op} {self.clear_level:g} for {d:g} s"


class OfflineAlarm:
    """A device that has not answered for ``offline_after_s``."""

    def __init__(self, offline_after_s: float) -> None:
        self.offline_after_s = offline_after_s
        self.active = False
        self.last_ok: float | None = None
        self.first_seen: float | None = None

    def silent_for(self, now: float) -> float:
        """Seconds since the last good answer (or the first attempt)."""
        ref = self.last_ok if self.last_ok is not None else self.first_seen
        return 0.0 if ref is None else max(now - ref, 0.0)

    def poll(self, ts: float, ok: bool) -> Transition | None:
        """Feed one poll outcome (ok: the device answered usably)."""
        if self.first_seen is None:
            self.first_seen = ts
        if ok:
            self.last_ok = ts
            if self.active:
                self.active = False
                return "cleared"
            return None
        return self.check(ts)

    def check(self, now: float) -> Transition | None:
        """Raise if the silence has lasted long enough (call it from a timer too)."""
        if self.active or self.first_seen is None:
            return None
        if self.silent_for(now) >= self.offline_after_s:
            self.active = True
            return "raised"
        return None


class AnomalySustained:
    """``min_windows`` consecutive anomalous windows."""

    def __init__(self, min_windows: int) -> None:
        self.min_windows = min_windows
        self.active = False
        self.consecutive = 0

    def update(self, anomalous: bool) -> Transition | None:
        if not anomalous:
            self.consecutive = 0
            if self.active:
                self.active = False
                return "cleared"
            return None
        self.consecutive += 1
        if not self.active and self.consecutive >= self.min_windows:
            self.active = True
            return "raised"
        return None


@dataclass(slots=True)
class _Device:
    thresholds: list[ThresholdAlarmState]
    offline: OfflineAlarm
    anomaly: AnomalySustained


class AlarmEngine:
    """The alarms of every device: feed samples, poll outcomes and scores; get events."""

    def __init__(self, settings: AlarmSettings, profiles: Mapping[str, DeviceProfile]) -> None:
        self.settings = settings
        self._devices = {
            device_id: _Device(
                thresholds=[],
                offline=OfflineAlarm(settings.offline_after_s),
                anomaly=AnomalySustained(settings.anomaly_min_windows),
            )
            for device_id in profiles
        }
        self._active: dict[tuple[str, str], AlarmEvent] = {}
        for i, spec in enumerate(settings.thresholds):
            key = f"alarms.thresholds[{i}]({spec.name})"
            if spec.devices is None:
                targets = [d for d, p in profiles.items() if spec.point in p.names]
                if not targets:
                    raise ConfigError(
                        "<config>", f"{key}.point", f"no device's profile has point {spec.point!r}"
                    )
            else:
                targets = list(spec.devices)
                for d in targets:
                    if d not in profiles:
                        raise ConfigError(
                            "<config>", f"{key}.devices", f"{d!r} is not a configured device"
                        )
                    if spec.point not in profiles[d].names:
                        raise ConfigError(
                            "<config>",
                            f"{key}.point",
                            f"device {d}'s profile {profiles[d].id} has no point {spec.point!r}",
                        )
            for d in targets:
                kind = profiles[d].point(spec.point).kind
                if kind is PointKind.IDENTITY:
                    raise ConfigError("<config>", f"{key}.point", f"{spec.point!r} is not a number")
                self._devices[d].thresholds.append(ThresholdAlarmState(spec))

    def _device(self, device_id: str) -> _Device:
        try:
            return self._devices[device_id]
        except KeyError:
            raise KeyError(f"device {device_id!r} is not configured") from None

    def _event(
        self,
        device_id: str,
        name: str,
        state: Transition,
        ts: float,
        value: float,
        severity: Severity,
        detail: str,
    ) -> AlarmEvent:
        event = AlarmEvent(device_id, name, state, ts, value, severity, detail)
        if state == "raised":
            self._active[(device_id, name)] = event
        else:
            self._active.pop((device_id, name), None)
        return event

    def on_sample(
        self, device_id: str, ts: float, values: Mapping[str, SampleValue]
    ) -> list[AlarmEvent]:
        """One poll's values of a device (a point not in ``values`` is missing)."""
        events = []
        for alarm in self._device(device_id).thresholds:
            v = _number(values.get(alarm.spec.point))
            change = alarm.update(ts, v)
            if v is not None and change is not None:
                events.append(
                    self._event(
                        device_id,
                        alarm.spec.name,
                        change,
                        ts,
                        v,
                        alarm.spec.severity,
                        alarm.describe(v),
                    )
                )
        return events

    def on_poll(self, device_id: str, ts: float, ok: bool) -> list[AlarmEvent]:
        """A poll outcome: ok when the device answered usably."""
        offline = self._device(device_id).offline
        silent = offline.silent_for(ts)
        change = offline.poll(ts, ok)
        if change is None:
            return []
        if change == "raised":
            detail = f"no answer for {silent:g} s"
        else:
            detail = f"answered again after {silent:g} s"
        return [self._event(device_id, OFFLINE, change, ts, silent, OFFLINE_SEVERITY, detail)]

    def on_score(
        self, device_id: str, ts: float, anomalous: bool, score: float, detail: str = ""
    ) -> list[AlarmEvent]:
        """A scored window (``ts``: its end)."""
        anomaly = self._device(device_id).anomaly
        change = anomaly.update(anomalous)
        if change is None:
            return []
        text = detail or (
            f"{anomaly.consecutive} anomalous windows in a row"
            if change == "raised"
            else "a normal window"
        )
        return [self._event(device_id, ANOMALY, change, ts, score, ANOMALY_SEVERITY, text)]

    def tick(self, now: float) -> list[AlarmEvent]:
        """Time passing: raises offline alarms of devices whose polls stopped reporting."""
        events = []
        for device_id, device in self._devices.items():
            silent = device.offline.silent_for(now)
            if device.offline.check(now) == "raised":
                events.append(
                    self._event(
                        device_id,
                        OFFLINE,
                        "raised",
                        now,
                        silent,
                        OFFLINE_SEVERITY,
                        f"no answer for {silent:g} s",
                    )
                )
        return events

    def active(self) -> list[AlarmEvent]:
        """The raising event of every alarm that is raised now."""
        return list(self._active.values())
