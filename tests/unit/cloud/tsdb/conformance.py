"""The one conformance suite every :class:`cloud.tsdb.base.TimeSeriesStore` passes.

A backend's test module subclasses :class:`StoreConformance` (as ``Test...``) and provides
a ``store`` fixture yielding a fresh, empty store; every test here then runs on it:

    class TestSQLiteStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path): ...

What it checks is the contract in ``cloud/tsdb/base.py``: writes and every query,
idempotent rewrites (merge rule), isolation between devices, gateways, sites and tenants,
interval alignment, the energy counter rule (gaps, resets), empty answers, the feature
name filter and limit, alarm events (order, bounds, limit, fields), names and values that
need escaping, field types, counts.

Times are recent (days before now, aligned to a UTC day) so that InfluxDB's retention
policies keep them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import pytest

from cloud.tsdb.base import (
    AlarmEvent,
    EnergyInterval,
    FeatureRow,
    FieldValue,
    Point,
    SiteRollup,
    TimeSeriesStore,
    normalise_tags,
    series_key,
)

DAY = 86_400
HOUR = 3600
T0 = (int(time.time()) // DAY - 10) * DAY
"""A UTC midnight ten days ago: every test's data lies in the days after it."""
NS = 1_000_000_000

TENANT = {"client": "client-1", "site": "site-1", "gateway": "gw-1", "device": "dev-1"}

WEIRD = (
    "a b",
    "c,d",
    'q"uote',
    "it's",
    "e=f",
    "back\\slash",
    "x\\ y",
    "\\\\double",
    "ünï☃ 设备",
    "all of, them=\"'\\x",
)
"""Tag values and names that line protocol and InfluxQL must escape (no trailing
backslash, no control characters: :class:`Point` refuses those)."""


def as_field_name(value: str) -> str:
    """``value`` as a field name: :class:`Point` refuses a backslash before a space, comma,
    ``=`` or ``"`` there (line protocol cannot carry it), so such a backslash becomes ``/``."""
    return re.sub(r'\\(?=[ ,="])', "/", value)


def pt(
    measurement: str,
    ts: float,
    fields: Mapping[str, FieldValue],
    *,
    ts_ns: int | None = None,
    **tags: str,
) -> Point:
    """A point at ``ts`` seconds (or exactly ``ts_ns``) with :data:`TENANT` tags, overridden
    or extended by ``tags``."""
    return Point(
        measurement,
        ts_ns if ts_ns is not None else round(ts * NS),
        {**TENANT, **tags},
        dict(fields),
    )


def feats(
    ts: float,
    values: Mapping[str, float],
    group: str = "fast",
    *,
    ts_ns: int | None = None,
    **tags: str,
) -> Point:
    """A ``features`` point with window metadata (which must never show as features)."""
    return pt(
        "features",
        ts,
        {**values, "n_samples": 60, "n_missing": 0, "start": float(ts - 300)},
        ts_ns=ts_ns,
        group=group,
        **tags,
    )


def score(ts: float, value: float, anomalous: bool, **tags: str) -> Point:
    return pt("score", ts, {"score": value, "anomalous": anomalous, "threshold": 0.8}, **tags)


def alarm(ts: float, state: str, **tags: str) -> Point:
    return pt("alarm", ts, {"name": "high_temp", "state": state, "severity": "major"}, **tags)


def alarm_ev(
    ts: float,
    name: str,
    state: str,
    severity: str = "major",
    *,
    value: FieldValue | None = None,
    detail: str | None = None,
    ts_ns: int | None = None,
    **tags: str,
) -> Point:
    """An ``alarm`` point as ingest writes it: ``name`` a tag, ``value`` and ``detail``
    fields only when given."""
    fields: dict[str, FieldValue] = {"state": state, "severity": severity}
    if value is not None:
        fields["value"] = value
    if detail is not None:
        fields["detail"] = detail
    return pt("alarm", ts, fields, ts_ns=ts_ns, name=name, **tags)


def energy_pt(ts: float, counters: Mapping[str, FieldValue], **tags: str) -> Point:
    return pt("energy", ts, counters, **tags)


def health(ts: float, **tags: str) -> Point:
    return pt("health", ts, {"buffer_depth": 3, "dropped": 0}, **{"device": "", **tags})


class StoreConformance:
    """The contract of ``TimeSeriesStore``; subclasses provide the ``store`` fixture."""

    # ---- empty answers --------------------------------------------------------------------

    def test_empty_store_answers_empty(self, store: TimeSeriesStore) -> None:
        assert store.ping() is True
        assert store.feature_history("dev-1", T0, T0 + DAY) == []
        assert store.latest("dev-1") == {}
        assert store.alarms("dev-1", T0, T0 + DAY) == []
        assert store.energy("dev-1", T0, T0 + DAY, HOUR) == []
        assert store.site_rollup("site-1", T0, T0 + DAY, HOUR) == []
        for measurement in ("features", "score", "alarm", "energy", "health"):
            assert store.count(measurement) == 0
            assert store.count(measurement, gateway="gw-1") == 0

    def test_write_nothing_is_a_no_op(self, store: TimeSeriesStore) -> None:
        store.write([])
        assert store.count("features") == 0

    def test_empty_ranges_and_unknown_ids(self, store: TimeSeriesStore) -> None:
        store.write(
            [
                feats(T0 + 60, {"t__mean": 1.0}),
                score(T0 + 60, 0.1, False),
                alarm_ev(T0 + 60, "high_temp", "raised"),
            ]
        )
        assert store.feature_history("dev-1", T0 + 60, T0 + 60) == []  # end == start
        assert store.feature_history("dev-1", T0 + 120, T0 + 60) == []  # end < start
        assert store.feature_history("nobody", T0, T0 + DAY) == []
        assert store.latest("nobody") == {}
        assert store.alarms("dev-1", T0 + 60, T0 + 60) == []
        assert store.alarms("dev-1", T0 + 120, T0 + 60) == []
        assert store.alarms("nobody", T0, T0 + DAY) == []
        assert store.energy("dev-1", T0, T0 + DAY, HOUR) == []  # no energy points at all
        assert store.site_rollup("nowhere", T0, T0 + DAY, HOUR) == []
        assert store.site_rollup("site-1", T0 + DAY, T0 + 2 * DAY, HOUR) == []

    def test_bad_arguments_raise_value_error(self, store: TimeSeriesStore) -> None:
        with pytest.raises(ValueError, match="interval_s"):
            store.energy("dev-1", T0, T0 + DAY, 0)
        with pytest.raises(ValueError, match="interval_s"):
            store.site_rollup("site-1", T0, T0 + DAY, -60)
        with pytest.raises(ValueError, match="device"):
            store.feature_history("", T0, T0 + DAY)
        with pytest.raises(ValueError, match="device"):
            store.latest("")
        with pytest.raises(ValueError, match="limit"):
            store.feature_history("dev-1", T0, T0 + DAY, limit=-1)
        with pytest.raises(ValueError, match="device"):
            store.alarms("", T0, T0 + DAY)
        with pytest.raises(ValueError, match="device"):
            store.alarms(None, T0, T0 + DAY)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="limit"):
            store.alarms("dev-1", T0, T0 + DAY, limit=-1)
        with pytest.raises(ValueError, match="limit"):
            store.alarms("dev-1", T0, T0 + DAY, limit=2.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="measurement"):
            store.count("nope")

    # ---- features -------------------------------------------------------------------------

    def test_feature_history_oldest_first_without_metadata(self, store: TimeSeriesStore) -> None:
        windows = [
            feats(T0 + 600, {"discharge_temp__mean": 41.5, "a/b__max": 3.0}),
            feats(T0 + 300, {"discharge_temp__mean": 40.0, "a/b__max": 2.0}),
            feats(T0 + 900, {"discharge_temp__mean": 43.25, "a/b__max": -1.0}),
        ]
        store.write(windows)
        rows = store.feature_history("dev-1", T0, T0 + HOUR)
        assert rows == [
            FeatureRow(T0 + 300.0, "fast", {"discharge_temp__mean": 40.0, "a/b__max": 2.0}),
            FeatureRow(T0 + 600.0, "fast", {"discharge_temp__mean": 41.5, "a/b__max": 3.0}),
            FeatureRow(T0 + 900.0, "fast", {"discharge_temp__mean": 43.25, "a/b__max": -1.0}),
        ]
        assert all(isinstance(v, float) for r in rows for v in r.features.values())

    def test_feature_history_start_inclusive_end_exclusive(self, store: TimeSeriesStore) -> None:
        store.write([feats(T0 + k * 300, {"x__mean": float(k)}) for k in range(6)])
        rows = store.feature_history("dev-1", T0 + 300, T0 + 1200)
        assert [r.ts for r in rows] == [T0 + 300.0, T0 + 600.0, T0 + 900.0]
        # Sub-second bounds: a window 1 ns after the start is in, one at the end is out.
        store.write([feats(T0 + 2000, {"x__mean": 9.0}, ts_ns=(T0 + 2000) * NS + 1)])
        rows = store.feature_history("dev-1", T0 + 2000, T0 + 2000.5)
        assert [r.features["x__mean"] for r in rows] == [9.0]
        assert store.feature_history("dev-1", T0 + 2000.5, T0 + 2001) == []

    def test_timestamps_keep_nanoseconds(self, store: TimeSeriesStore) -> None:
        ts_ns = (T0 + 77) * NS + 123_456_789
        store.write([feats(T0 + 77, {"x__mean": 1.0}, ts_ns=ts_ns)])
        (row,) = store.feature_history("dev-1", T0, T0 + HOUR)
        assert row.ts == ts_ns / NS
        assert store.latest("dev-1")["features"].ts == ts_ns / NS

    def test_feature_name_filter(self, store: TimeSeriesStore) -> None:
        store.write(
            [
                feats(T0 + 300, {"t__mean": 1.0, "t__max": 2.0, "p__mean": 3.0}),
                feats(T0 + 600, {"t__mean": 4.0, "p__mean": 6.0}),
                feats(T0 + 900, {"p__mean": 9.0}),
            ]
        )
        rows = store.feature_history("dev-1", T0, T0 + HOUR, names=["t__max", "t__mean"])
        assert [(r.ts, r.features) for r in rows] == [
            (T0 + 300.0, {"t__max": 2.0, "t__mean": 1.0}),
            (T0 + 600.0, {"t__mean": 4.0}),  # a window with only some of them
        ]  # the window with none of them is left out
        # Metadata names are not features; unknown names match nothing.
        assert store.feature_history("dev-1", T0, T0 + HOUR, names=["n_samples"]) == []
        assert store.feature_history("dev-1", T0, T0 + HOUR, names=["nope__mean"]) == []
        assert store.feature_history("dev-1", T0, T0 + HOUR, names=[]) == []
        mixed = store.feature_history("dev-1", T0, T0 + HOUR, names=["n_samples", "p__mean"])
        assert [r.features for r in mixed] == [{"p__mean": 3.0}, {"p__mean": 6.0}, {"p__mean": 9.0}]

    def test_feature_limit_is_newest_n_oldest_first(self, store: TimeSeriesStore) -> None:
        store.write([feats(T0 + k * 60, {"x__mean": float(k)}) for k in range(10)])
        rows = store.feature_history("dev-1", T0, T0 + HOUR, limit=3)
        assert [r.features["x__mean"] for r in rows] == [7.0, 8.0, 9.0]
        assert [r.ts for r in rows] == [T0 + 420.0, T0 + 480.0, T0 + 540.0]
        assert len(store.feature_history("dev-1", T0, T0 + HOUR, limit=100)) == 10
        assert store.feature_history("dev-1", T0, T0 + HOUR, limit=0) == []
        # The limit counts windows that hold a wanted feature, within the range.
        store.write([feats(T0 + 1000, {"other__mean": 1.0})])
        rows = store.feature_history("dev-1", T0, T0 + 500, names=["x__mean"], limit=2)
        assert [r.features["x__mean"] for r in rows] == [7.0, 8.0]

    def test_feature_groups_filter_and_order(self, store: TimeSeriesStore) -> None:
        store.write(
            [
                feats(T0 + 300, {"x__mean": 1.0}, group="slow"),
                feats(T0 + 300, {"x__mean": 2.0}, group="fast"),
                feats(T0 + 600, {"x__mean": 3.0}, group="fast"),
                feats(T0 + 900, {"x__mean": 4.0}, group=""),  # no group tag
            ]
        )
        rows = store.feature_history("dev-1", T0, T0 + HOUR)
        # Same time: ordered by tags, so "fast" before "slow".
        assert [(r.ts, r.group, r.features["x__mean"]) for r in rows] == [
            (T0 + 300.0, "fast", 2.0),
            (T0 + 300.0, "slow", 1.0),
            (T0 + 600.0, "fast", 3.0),
            (T0 + 900.0, "", 4.0),
        ]
        slow = store.feature_history("dev-1", T0, T0 + HOUR, group="slow")
        assert [(r.group, r.features["x__mean"]) for r in slow] == [("slow", 1.0)]
        ungrouped = store.feature_history("dev-1", T0, T0 + HOUR, group="")
        assert [r.features["x__mean"] for r in ungrouped] == [4.0]
        newest = store.feature_history("dev-1", T0, T0 + 400, limit=1)
        assert [(r.group, r.features["x__mean"]) for r in newest] == [("slow", 1.0)]

    # ---- alarms ---------------------------------------------------------------------------

    def test_alarms_newest_first_with_their_fields(self, store: TimeSeriesStore) -> None:
        store.write(
            [
                alarm_ev(T0 + 100, "high_pressure", "raised", value=27.5, detail="HP > 26 bar"),
                alarm_ev(T0 + 400, "high_pressure", "cleared", value=24.0),
                alarm_ev(T0 + 200, "door_open", "raised", "minor", detail="door 2"),
                alarm_ev(T0 + 300, "door_open", "cleared", "minor"),
                alarm_ev(T0 + 300, "compressor_trip", "raised", "critical", value=0.0),
                pt("alarm", T0 + 50, {"severity": "minor"}, name="no_state"),
                score(T0 + 150, 0.9, True),  # not an alarm
            ]
        )
        events = store.alarms("dev-1", T0, T0 + HOUR)
        assert all(isinstance(e, AlarmEvent) for e in events)
        assert events == [
            AlarmEvent(T0 + 400.0, "high_pressure", "cleared", "major", 24.0, None),
            # the same time: ordered by tags, so "compressor_trip" before "door_open"
            AlarmEvent(T0 + 300.0, "compressor_trip", "raised", "critical", 0.0, None),
            AlarmEvent(T0 + 300.0, "door_open", "cleared", "minor", None, None),
            AlarmEvent(T0 + 200.0, "door_open", "raised", "minor", None, "door 2"),
            AlarmEvent(T0 + 100.0, "high_pressure", "raised", "major", 27.5, "HP > 26 bar"),
            AlarmEvent(T0 + 50.0, "no_state", "", "minor", None, None),
        ]
        assert all(type(e.value) is float for e in events if e.value is not None)

    def test_alarms_start_inclusive_end_exclusive(self, store: TimeSeriesStore) -> None:
        store.write([alarm_ev(T0 + k * 300, f"a{k}", "raised") for k in range(6)])
        events = store.alarms("dev-1", T0 + 300, T0 + 1200)
        assert [e.ts for e in events] == [T0 + 900.0, T0 + 600.0, T0 + 300.0]
        # Sub-second bounds: an event 1 ns after the start is in, one at the end is out.
        store.write([alarm_ev(T0 + 2000, "late", "raised", ts_ns=(T0 + 2000) * NS + 1)])
        assert [e.name for e in store.alarms("dev-1", T0 + 2000, T0 + 2000.5)] == ["late"]
        assert store.alarms("dev-1", T0 + 2000.5, T0 + 2001) == []
        assert [e.ts for e in store.alarms("dev-1", T0 + 2000, T0 + 2001)] == [
            ((T0 + 2000) * NS + 1) / NS
        ]

    def test_alarms_limit_is_the_newest_n(self, store: TimeSeriesStore) -> None:
        # Two alarm names (two series) interleaved: the limit is over all of them.
        store.write(
            [alarm_ev(T0 + k * 60, "even" if k % 2 == 0 else "odd", "raised") for k in range(10)]
        )
        events = store.alarms("dev-1", T0, T0 + HOUR, limit=3)
        assert [(e.ts - T0, e.name) for e in events] == [(540, "odd"), (480, "even"), (420, "odd")]
        assert len(store.alarms("dev-1", T0, T0 + HOUR, limit=100)) == 10
        assert len(store.alarms("dev-1", T0, T0 + HOUR, limit=None)) == 10
        assert store.alarms("dev-1", T0, T0 + HOUR, limit=0) == []
        # Within the range: the newest before the end.
        assert [e.ts - T0 for e in store.alarms("dev-1", T0, T0 + 200, limit=2)] == [180, 120]

    def test_alarms_default_to_the_newest_200(self, store: TimeSeriesStore) -> None:
        store.write([alarm_ev(T0 + k, "flapping", "raised") for k in range(205)])
        events = store.alarms("dev-1", T0, T0 + HOUR)
        assert len(events) == 200
        assert (events[0].ts, events[-1].ts) == (T0 + 204.0, T0 + 5.0)
        assert len(store.alarms("dev-1", T0, T0 + HOUR, limit=None)) == 205

    def test_alarms_of_other_devices_never_leak(self, store: TimeSeriesStore) -> None:
        others = [
            alarm_ev(T0 + 300, "high_temp", "raised", "critical", value=99.0, **tags)
            for tags in (
                {"device": "dev-2"},
                {"device": "dev-1x"},
                {"device": "DEV-1"},
                {"device": "dev"},
                {"site": "site-2", "gateway": "gw-9", "device": "dev-9"},
                {"client": "client-2", "site": "site-3", "gateway": "gw-3", "device": "dev-3"},
            )
        ]
        store.write(
            [
                alarm_ev(T0 + 200, "high_temp", "raised", value=50.0),
                *others,
                pt("alarm", T0 + 250, {"state": "raised", "severity": "x"}, device="", name="gw"),
            ]
        )
        events = store.alarms("dev-1", T0, T0 + HOUR)
        assert [(e.ts, e.value) for e in events] == [(T0 + 200.0, 50.0)]
        assert [e.value for e in store.alarms("dev-2", T0, T0 + HOUR)] == [99.0]

    def test_alarm_rewrites_merge_and_names_need_no_care(self, store: TimeSeriesStore) -> None:
        store.write([alarm_ev(T0 + 60, "high_temp", "raised", value=30.0)])
        store.write([alarm_ev(T0 + 60, "high_temp", "raised", detail="sensor 2")])
        (merged,) = store.alarms("dev-1", T0, T0 + HOUR)
        assert (merged.value, merged.detail) == (30.0, "sensor 2")
        store.write([alarm_ev(T0 + 120 + i, name, "raised") for i, name in enumerate(WEIRD)])
        names = [e.name for e in store.alarms("dev-1", T0 + 120, T0 + HOUR)]
        assert names == list(reversed(WEIRD))

    # ---- idempotency ----------------------------------------------------------------------

    def test_same_point_twice_is_stored_once(self, store: TimeSeriesStore) -> None:
        p = feats(T0 + 300, {"x__mean": 1.0})
        store.write([p])
        store.write([p])
        store.write([p, p])
        assert store.count("features") == 1
        assert len(store.feature_history("dev-1", T0, T0 + HOUR)) == 1

    def test_replaying_a_batch_changes_nothing(self, store: TimeSeriesStore) -> None:
        batch = [
            feats(T0 + 300, {"x__mean": 1.0}),
            score(T0 + 300, 0.3, False),
            alarm(T0 + 310, "raised"),
            energy_pt(T0 + 320, {"energy": 10.0}),
            energy_pt(T0 + HOUR + 5, {"energy": 12.0}),
            health(T0 + 330),
        ]
        store.write(batch)

        def snapshot() -> tuple[object, ...]:
            return (
                [store.count(m) for m in ("features", "score", "alarm", "energy", "health")],
                store.feature_history("dev-1", T0, T0 + DAY),
                store.latest("dev-1"),
                store.alarms("dev-1", T0, T0 + DAY),
                store.energy("dev-1", T0, T0 + DAY, HOUR),
                store.site_rollup("site-1", T0, T0 + DAY, HOUR),
            )

        before = snapshot()
        assert before[0] == [1, 1, 1, 2, 1]
        store.write(batch)
        store.write(list(reversed(batch)))
        assert snapshot() == before

    def test_rewrite_merges_fields_new_values_win(self, store: TimeSeriesStore) -> None:
        store.write([feats(T0 + 300, {"x__mean": 1.0, "y__mean": 2.0})])
        store.write([pt("features", T0 + 300, {"x__mean": 5.0, "z__mean": 7.0}, group="fast")])
        assert store.count("features") == 1
        (row,) = store.feature_history("dev-1", T0, T0 + HOUR)
        assert row.features == {"x__mean": 5.0, "y__mean": 2.0, "z__mean": 7.0}
        assert store.latest("dev-1")["features"].fields["n_samples"] == 60

    def test_empty_tag_is_no_tag(self, store: TimeSeriesStore) -> None:
        store.write([pt("health", T0 + 60, {"dropped": 1}, device="", zone="")])
        store.write([pt("health", T0 + 60, {"dropped": 2}, device="")])
        assert store.count("health") == 1
        store.write([pt("score", T0 + 60, {"score": 0.5}, zone="")])
        latest = store.latest("dev-1")["score"]
        assert latest.tags == TENANT

    # ---- isolation ------------------------------------------------------------------------

    def test_other_devices_sites_and_tenants_never_leak(self, store: TimeSeriesStore) -> None:
        mine = [
            feats(T0 + 300, {"x__mean": 1.0}),
            score(T0 + 300, 0.25, False),
            energy_pt(T0 + 10, {"energy": 1.0}),
            energy_pt(T0 + HOUR + 10, {"energy": 2.0}),
        ]
        others = []
        for tags in (
            {"device": "dev-2"},  # another device on my gateway
            {"device": "dev-1x"},  # a device whose id extends mine
            {"device": "DEV-1"},  # ids are case-sensitive
            {"site": "site-2", "gateway": "gw-9", "device": "dev-9"},  # another site
            {"client": "client-2", "site": "site-3", "gateway": "gw-3", "device": "dev-3"},
        ):
            others += [
                feats(T0 + 300, {"x__mean": 99.0}, **tags),
                feats(T0 + 400, {"x__mean": 98.0}, **tags),
                score(T0 + 300, 0.99, True, **tags),
                alarm(T0 + 300, "raised", **tags),
                energy_pt(T0 + 10, {"energy": 500.0, "gas": 1.0}, **tags),
                energy_pt(T0 + HOUR + 10, {"energy": 900.0, "gas": 2.0}, **tags),
            ]
        store.write(mine + others)
        rows = store.feature_history("dev-1", T0, T0 + DAY)
        assert [r.features for r in rows] == [{"x__mean": 1.0}]
        latest = store.latest("dev-1")
        assert set(latest) == {"features", "score", "energy"}
        assert latest["score"].fields["score"] == 0.25
        assert latest["energy"].fields == {"energy": 2.0}
        assert {e.counter for e in store.energy("dev-1", T0, T0 + 2 * HOUR, HOUR)} == {"energy"}
        (first, second) = store.site_rollup("site-1", T0, T0 + 2 * HOUR, HOUR)
        # site-1 holds dev-1, dev-2, dev-1x and DEV-1 (all on gw-1), not site-2's or client-2's.
        assert first.devices_reporting == 4
        assert first.windows == 4 and first.anomalous_windows == 3
        assert first.alarms_raised == 3
        assert second.energy_kwh == pytest.approx(1.0 + 3 * 400.0)
        assert store.count("score", gateway="gw-1") == 4
        assert store.count("score", gateway="gw-9") == 1
        assert store.count("score") == 6

    def test_count_per_gateway(self, store: TimeSeriesStore) -> None:
        points = [score(T0 + k, 0.1, False) for k in range(5)]
        points += [score(T0 + k, 0.1, False, gateway="gw-2", device="d") for k in range(3)]
        points += [alarm(T0 + 1, "raised", gateway="gw-2", device="d")]
        points += [health(T0 + k, gateway="gw-3") for k in range(2)]
        store.write(points)
        assert store.count("score") == 8
        assert store.count("score", gateway="gw-1") == 5
        assert store.count("score", gateway="gw-2") == 3
        assert store.count("score", gateway="gw-3") == 0
        assert store.count("alarm", gateway="gw-2") == 1
        assert store.count("health", gateway="gw-3") == 2
        assert store.count("health", gateway="gw-") == 0  # exact match, not a prefix

    # ---- latest and field types -----------------------------------------------------------

    def test_latest_per_measurement(self, store: TimeSeriesStore) -> None:
        store.write(
            [
                score(T0 + 300, 0.1, False),
                score(T0 + 900, 0.7, True),
                score(T0 + 600, 0.4, False),
                alarm(T0 + 100, "raised"),
                alarm(T0 + 200, "cleared"),
                feats(T0 + 900, {"x__mean": 1.0}, group="slow"),
                feats(T0 + 800, {"x__mean": 2.0}, group="fast"),
            ]
        )
        latest = store.latest("dev-1")
        assert set(latest) == {"score", "alarm", "features"}
        assert latest["score"].ts == T0 + 900.0
        assert latest["score"].fields == {"score": 0.7, "anomalous": True, "threshold": 0.8}
        assert latest["alarm"].fields["state"] == "cleared"
        assert latest["features"].tags == {**TENANT, "group": "slow"}
        assert latest["features"].fields["x__mean"] == 1.0

    def test_field_types_round_trip(self, store: TimeSeriesStore) -> None:
        fields: dict[str, FieldValue] = {
            "f_whole": 2.0,
            "f_frac": 0.1,
            "f_tiny": 1e-300,
            "f_huge": 1.7976931348623157e308,
            "f_neg": -273.15,
            "i_small": 3,
            "i_big": 2**62 + 1,
            "i_neg": -(2**40),
            "i_zero": 0,
            "b_true": True,
            "b_false": False,
            "s_plain": "ok",
            "s_empty": "",
            "s_hard": 'quote " backslash \\ newline \n tab \t unicode ☃ comma, eq= end\\',
        }
        store.write([pt("health", T0 + 60, fields)])
        got = store.latest("dev-1")["health"].fields
        assert got == fields
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in fields.items()}

    # ---- escaping -------------------------------------------------------------------------

    @pytest.mark.parametrize("value", WEIRD)
    def test_names_and_values_needing_escaping_round_trip(
        self, store: TimeSeriesStore, value: str
    ) -> None:
        tags = {"client": value, "site": value, "gateway": value, "device": value}
        feature, counter = f"{as_field_name(value)}__mean", as_field_name(value)
        store.write(
            [
                feats(T0 + 300, {feature: 1.5, "plain__mean": 2.5}, group=value, **tags),
                score(T0 + 300, 0.5, True, **tags),
                alarm(T0 + 300, "raised", **tags, kind=value),
                energy_pt(T0 + 10, {"energy": 1.0, counter: 5.0}, **tags),
                energy_pt(T0 + HOUR + 10, {"energy": 3.0, counter: 6.0}, **tags),
                pt("health", T0 + 300, {"note": value}, **tags),
                # Neighbours that naive quoting or escaping would let match.
                feats(T0 + 300, {feature: 9.0}, group="other", device=value + "x"),
                feats(T0 + 300, {feature: 9.0}, group="other", device="a"),
            ]
        )
        (row,) = store.feature_history(value, T0, T0 + HOUR)
        assert row == FeatureRow(T0 + 300.0, value, {feature: 1.5, "plain__mean": 2.5})
        (only,) = store.feature_history(value, T0, T0 + HOUR, group=value, names=[feature])
        assert only.features == {feature: 1.5}
        latest = store.latest(value)
        assert latest["alarm"].tags == {**tags, "kind": value}
        (event,) = store.alarms(value, T0, T0 + HOUR)  # its name is a field here
        assert (event.name, event.state, event.severity) == ("high_temp", "raised", "major")
        assert latest["health"].fields == {"note": value}
        counters = {
            (e.start, e.counter): e.consumed for e in store.energy(value, T0, T0 + 2 * HOUR, HOUR)
        }
        assert counters[(T0 + HOUR, counter)] == 1.0
        assert counters[(T0 + HOUR, "energy")] == 2.0
        first, second = store.site_rollup(value, T0, T0 + 2 * HOUR, HOUR)
        assert (first.devices_reporting, first.windows, first.alarms_raised) == (1, 1, 1)
        assert second.energy_kwh == 2.0
        assert store.count("score", gateway=value) == 1
        assert store.count("alarm", gateway=value) == 1

    # ---- energy ---------------------------------------------------------------------------

    def test_energy_intervals_gap_and_reset(self, store: TimeSeriesStore) -> None:
        readings = [
            (T0 - 1800, {"energy": 100.0, "starts": 7}),  # the interval before the range
            (T0 + 600, {"energy": 101.0}),
            (T0 + 3000, {"energy": 102.5, "starts": 8}),
            (T0 + HOUR + 100, {"energy": 104.0, "starts": 8}),
            # T0 + 2 h: no reading (a gap)
            (T0 + 3 * HOUR + 10, {"energy": 107.0, "starts": 9}),
            (T0 + 4 * HOUR + 5, {"energy": 0.5, "starts": 0}),  # controller reset
            (T0 + 4 * HOUR + 2000, {"energy": 1.5, "starts": 1}),
            (T0 + 5 * HOUR + 100, {"energy": 3.0, "starts": 1}),
            (T0 + 6 * HOUR + 1, {"energy": 50.0}),  # after the range
        ]
        store.write([energy_pt(ts, counters) for ts, counters in readings])
        # Unaligned bounds: start rounds down to T0, end up to T0 + 6 h.
        rows = store.energy("dev-1", T0 + 100, T0 + 5 * HOUR + 200, HOUR)
        assert all(isinstance(r, EnergyInterval) for r in rows)
        got = {(r.start - T0, r.counter): (r.last, r.consumed) for r in rows}
        h = HOUR
        assert got == {
            (0, "energy"): (102.5, 2.5),
            (h, "energy"): (104.0, 1.5),
            (2 * h, "energy"): (None, None),  # no reading
            (3 * h, "energy"): (107.0, None),  # the interval before had none
            (4 * h, "energy"): (1.5, 1.5),  # reset: the new last reading counts whole
            (5 * h, "energy"): (3.0, 1.5),
            (0, "starts"): (8.0, 1.0),
            (h, "starts"): (8.0, 0.0),
            (2 * h, "starts"): (None, None),
            (3 * h, "starts"): (9.0, None),
            (4 * h, "starts"): (1.0, 1.0),
            (5 * h, "starts"): (1.0, 0.0),
        }
        # Sorted by interval, then counter.
        assert [(r.start, r.counter) for r in rows] == sorted((r.start, r.counter) for r in rows)
        assert all(r.start % HOUR == 0 for r in rows)

    def test_energy_interval_alignment_is_to_the_epoch(self, store: TimeSeriesStore) -> None:
        store.write(
            [
                energy_pt(T0 + 13 * 60, {"energy": 1.0}),  # 00:13
                energy_pt(T0 + 16 * 60, {"energy": 2.0}),  # 00:16
                energy_pt(T0 + 29 * 60, {"energy": 4.0}),  # 00:29
                energy_pt(T0 + 31 * 60, {"energy": 8.0}),  # 00:31
            ]
        )
        rows = store.energy("dev-1", T0 + 14 * 60, T0 + 30 * 60, 900)
        # 15-minute intervals: 00:00 (holds the start), 00:15, and 00:30 (holds 00:30 - ε).
        assert [(r.start - T0, r.last, r.consumed) for r in rows] == [
            (0, 1.0, None),
            (900, 4.0, 3.0),
        ]
        rows = store.energy("dev-1", T0, T0 + 40 * 60, 1800)
        assert [(r.start - T0, r.last, r.consumed) for r in rows] == [
            (0, 4.0, None),
            (1800, 8.0, 4.0),
        ]

    def test_energy_skips_non_numeric_fields(self, store: TimeSeriesStore) -> None:
        store.write([energy_pt(T0 + 10, {"energy": 1.0, "unit": "kWh", "ok": True})])
        rows = store.energy("dev-1", T0, T0 + HOUR, HOUR)
        assert [(r.counter, r.last) for r in rows] == [("energy", 1.0)]

    def test_energy_reads_only_the_counters_asked_for(self, store: TimeSeriesStore) -> None:
        store.write(
            [
                energy_pt(T0 - 1800, {"energy": 100.0, "starts": 7, "runtime": 3.5}),
                energy_pt(T0 + 600, {"energy": 101.0, "starts": 8, "ok": True, "unit": "kWh"}),
                energy_pt(T0 + HOUR + 5, {"energy": 103.0, "runtime": 4.0}),
                energy_pt(T0 + HOUR + 7, {'odd name.with "quotes"': 5}),
            ]
        )
        asked = ["starts", "energy", "starts", "no such counter", "ok", "unit"]
        rows = store.energy("dev-1", T0, T0 + 2 * HOUR, HOUR, counters=asked)
        assert {(r.start - T0, r.counter): (r.last, r.consumed) for r in rows} == {
            (0, "energy"): (101.0, 1.0),
            (HOUR, "energy"): (103.0, 2.0),
            (0, "starts"): (8.0, 1.0),
            (HOUR, "starts"): (None, None),
        }
        everything = store.energy("dev-1", T0, T0 + 2 * HOUR, HOUR)
        assert [r for r in everything if r.counter in asked] == rows  # the same rows, in order
        assert {r.counter for r in everything} == {
            "energy", "starts", "runtime", 'odd name.with "quotes"'
        }  # fmt: skip
        odd = store.energy("dev-1", T0, T0 + 2 * HOUR, HOUR, counters=['odd name.with "quotes"'])
        assert [(r.start - T0, r.last) for r in odd] == [(0, None), (HOUR, 5.0)]
        assert store.energy("dev-1", T0, T0 + 2 * HOUR, HOUR, counters=[]) == []

    # ---- site rollup ----------------------------------------------------------------------

    def test_site_rollup(self, store: TimeSeriesStore) -> None:
        d2 = {"gateway": "gw-2", "device": "dev-2"}
        store.write(
            [
                energy_pt(T0 - 1800, {"energy": 100.0}),
                energy_pt(T0 + 3000, {"energy": 102.5}),
                score(T0 + 300, 0.2, False),
                score(T0 + 600, 0.9, True),
                alarm(T0 + 610, "raised"),
                alarm(T0 + 1200, "cleared"),
                score(T0 + 300, 0.4, False, **d2),
                energy_pt(T0 + 10, {"energy": 50.0}, **d2),  # nothing before: no consumption
                health(T0 + 100),
                # T0 + 1 h: nothing at all
                health(T0 + 2 * HOUR + 5),  # only the gateway: present, no device
                feats(T0 + 3 * HOUR + 5, {"x__mean": 1.0}, **d2),
                energy_pt(T0 + 3 * HOUR + 50, {"energy": 55.0}, **d2),
                energy_pt(T0 + 4 * HOUR + 50, {"energy": 2.0}, **d2),  # reset
                score(T0 + 4 * HOUR + 60, 0.5, False, site="site-2"),  # another site
            ]
        )
        rows = store.site_rollup("site-1", T0 + 100, T0 + 5 * HOUR, HOUR)
        assert all(isinstance(r, SiteRollup) for r in rows)
        first = rows[0]
        assert (first.start, first.devices_reporting, first.windows) == (T0, 2, 3)
        assert (first.anomalous_windows, first.max_score, first.alarms_raised) == (1, 0.9, 1)
        assert first.energy_kwh == pytest.approx(2.5)  # dev-1 only: dev-2 had no reading before
        assert first.mean_score == pytest.approx(0.5)
        assert [r.start - T0 for r in rows] == [0, 2 * HOUR, 3 * HOUR, 4 * HOUR]
        gateway_only = rows[1]
        assert (gateway_only.devices_reporting, gateway_only.windows) == (0, 0)
        assert (gateway_only.mean_score, gateway_only.max_score) == (None, None)
        assert (gateway_only.energy_kwh, gateway_only.alarms_raised) == (0.0, 0)
        assert rows[2].devices_reporting == 1
        assert rows[2].energy_kwh == 0.0  # dev-2's interval before had no reading
        assert rows[3].energy_kwh == 2.0  # the reset counts the new reading
        # A day interval holds them all (aligned to UTC midnight).
        (day,) = store.site_rollup("site-1", T0 + 5, T0 + 6, DAY)
        assert day.start == T0
        assert (day.devices_reporting, day.windows, day.alarms_raised) == (2, 3, 1)
        assert day.max_score == 0.9
        assert day.energy_kwh == pytest.approx(2.5)  # dev-1 read 100.0 the day before

    def test_site_rollup_counts_only_raised_alarms_and_true_anomalies(
        self, store: TimeSeriesStore
    ) -> None:
        store.write(
            [
                alarm(T0 + 1, "raised"),
                alarm(T0 + 2, "raised", device="dev-2"),
                alarm(T0 + 3, "cleared"),
                alarm(T0 + 4, "Raised"),
                pt("alarm", T0 + 5, {"name": "x", "severity": "minor"}),  # no state
                score(T0 + 1, 0.9, True),
                score(T0 + 2, 0.1, False),
                pt("score", T0 + 3, {"score": 0.3}, device="dev-3"),  # no anomalous field
                pt("score", T0 + 4, {"threshold": 0.3, "anomalous": True}, device="dev-4"),
            ]
        )
        (row,) = store.site_rollup("site-1", T0, T0 + HOUR, HOUR)
        assert row.alarms_raised == 2
        assert row.windows == 3  # points with a score
        assert row.anomalous_windows == 1
        assert row.max_score == 0.9
        assert row.devices_reporting == 4

    # ---- export (backups) -----------------------------------------------------------------

    @staticmethod
    def exported(store: TimeSeriesStore, start_ns: int, stop_ns: int) -> list[Point]:
        """:meth:`export`'s points (in no promised order) by time, measurement and tags."""
        return sorted(
            store.export(start_ns, stop_ns),
            key=lambda p: (p.ts_ns, p.measurement, series_key(p.tags)),
        )

    def test_export_of_an_empty_store(self, store: TimeSeriesStore) -> None:
        assert store.time_span() is None
        assert list(store.export(0, (T0 + DAY) * NS)) == []

    def test_export_gives_every_point_as_stored(self, store: TimeSeriesStore) -> None:
        typed: dict[str, FieldValue] = {
            "f_whole": 2.0,
            "f_huge": 1.7976931348623157e308,
            "i_big": 2**62 + 1,
            "b": False,
            "s": 'quote " backslash \\ newline \n ☃',
        }
        weird = WEIRD[-1]
        points = [
            feats(T0 + 300, {"x__mean": 1.0}, group="slow"),
            feats(T0 + 300, {"x__mean": 2.0}, group="fast"),
            score(T0 + 300, 0.5, True),
            alarm(T0 + 310, "raised", kind="door"),
            energy_pt(T0 + HOUR, {"energy": 10.0, "starts": 3}),
            health(T0 + 5),  # gateway-level: device ""
            pt("health", T0 + 6, typed, device="dev-9", zone=""),  # an empty tag is no tag
            pt("score", T0 + 7, {"score": 0.1}, client=weird, site=weird, gateway=weird),
            pt("energy", T0 + 2 * HOUR, {"energy": 11.0}, ts_ns=(T0 + 2 * HOUR) * NS + 1),
        ]
        store.write(points)
        # A rewrite merges into the stored point: it is exported once, merged.
        store.write([pt("score", T0 + 300, {"score": 0.75, "note": "again"})])
        merged = pt("score", T0 + 300, {"score": 0.75, "anomalous": True, "threshold": 0.8,
                                        "note": "again"})  # fmt: skip
        expected = [p for p in points if p.measurement != "score" or p.ts_ns != (T0 + 300) * NS]
        expected.append(merged)
        expected = [
            Point(p.measurement, p.ts_ns, normalise_tags(p.tags), p.fields) for p in expected
        ]
        expected.sort(key=lambda p: (p.ts_ns, p.measurement, series_key(p.tags)))

        first, last = (T0 + 5) * NS, (T0 + 2 * HOUR) * NS + 1
        assert store.time_span() == (first, last)
        got = self.exported(store, first, last + 1)
        assert got == expected
        for mine, theirs in zip(got, expected, strict=True):
            assert dict(mine.tags) == dict(theirs.tags)
            assert {k: type(v) for k, v in mine.fields.items()} == {
                k: type(v) for k, v in theirs.fields.items()
            }
        # Start inclusive, stop exclusive; windows put together give the same points.
        assert self.exported(store, first, last) == expected[:-1]
        assert self.exported(store, last, last + 1) == expected[-1:]
        windows = [self.exported(store, t, t + 600 * NS) for t in range(first, last + 1, 600 * NS)]
        assert [p for window in windows for p in window] == expected
        assert list(store.export(last + 1, last + DAY * NS)) == []
        # Written again, the exported points change nothing.
        kinds = ("features", "score", "alarm", "energy", "health")
        counts = [store.count(m) for m in kinds]
        store.write(got)
        assert [store.count(m) for m in kinds] == counts
        assert self.exported(store, first, last + 1) == expected
        # Streamed: a write between two points read is not blocked (nor promised to be seen).
        stream = store.export(first, last + 1)
        assert next(stream) in expected
        store.write([health(T0 + 1)])
        assert len(list(stream)) in (len(expected) - 1, len(expected))

    # ---- bookkeeping ----------------------------------------------------------------------

    def test_stats_count_writes(self, store: TimeSeriesStore) -> None:
        before = store.stats()
        store.write([score(T0 + k, 0.1, False) for k in range(7)])
        after = store.stats()
        assert after.points_written - before.points_written == 7
        assert after.write_batches > before.write_batches
        assert after.write_errors == before.write_errors
