"""Uplink records → points: every kind, every reason a record is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloud.ingest.records import Rejected, to_point, ts_ns
from cloud.registry.refs import DeviceRef, GatewayInfo
from edge_agent.protocol import Record, RecordKind

GW = GatewayInfo(
    gateway_id="gw-1",
    client_id="client-a",
    site_id="site-1",
    devices={"cc-1": DeviceRef("dev-uuid-1", "compressor")},
)
NOW = 1_750_000_000.0
BASE = {"client": "client-a", "site": "site-1", "gateway": "gw-1", "device": "dev-uuid-1"}


def rec(
    kind: RecordKind, body: dict[str, Any], device: str | None = "cc-1", ts: float = NOW
) -> Record:
    return Record(7, ts, kind, device, body)


@pytest.mark.parametrize(
    ("record", "tags", "fields"),
    [
        (
            rec(
                RecordKind.FEATURES,
                {
                    "group": "fast",
                    "start": NOW - 60,
                    "n_samples": 30,
                    "n_missing": 1,
                    "features": {"p__mean": 1.5, "p__std": None, "t__max": 3},
                },
            ),
            BASE | {"group": "fast"},
            {"p__mean": 1.5, "t__max": 3.0, "n_samples": 30, "n_missing": 1, "start": NOW - 60},
        ),
        (
            rec(
                RecordKind.SCORE,
                {
                    "model_id": "cc-v3",
                    "model_version": 3,
                    "score": 2.5,
                    "threshold": 1.0,
                    "anomalous": True,
                    "group": "fast",
                    "top_signals": [["p", 0.7]],
                },
            ),
            BASE | {"group": "fast", "model_id": "cc-v3"},
            {
                "score": 2.5,
                "anomalous": True,
                "threshold": 1.0,
                "model_version": 3,
                "top_signals": '[["p",0.7]]',
            },
        ),
        (
            rec(
                RecordKind.ALARM,
                {
                    "name": "discharge_temp_high",
                    "state": "raised",
                    "severity": "major",
                    "value": 121.5,
                    "detail": "above 120",
                },
            ),
            BASE | {"name": "discharge_temp_high"},
            {"state": "raised", "severity": "major", "value": 121.5, "detail": "above 120"},
        ),
        (
            rec(
                RecordKind.ALARM,
                {
                    "name": "offline",
                    "state": "cleared",
                    "severity": "minor",
                    "value": None,
                    "detail": None,
                },
            ),
            BASE | {"name": "offline"},
            {"state": "cleared", "severity": "minor"},
        ),
        (
            rec(
                RecordKind.ENERGY,
                {
                    "values": {"energy": 1234.5, "start_count": 17},
                    "units": {"energy": "kWh", "start_count": ""},
                },
            ),
            BASE,
            {"energy": 1234.5, "start_count": 17.0},
        ),
    ],
    ids=["features", "score", "alarm", "alarm-cleared", "energy"],
)
def test_each_kind_maps_to_its_point(
    record: Record, tags: dict[str, str], fields: dict[str, Any]
) -> None:
    point = to_point(record, GW, now=NOW, max_future_s=300)
    assert point.measurement == record.kind.value
    assert dict(point.tags) == tags
    assert dict(point.fields) == fields
    assert point.ts_ns == ts_ns(NOW)


def test_health_keeps_numbers_of_two_levels_and_the_whole_body() -> None:
    body = {
        "uptime_s": 12.5,
        "buffer": {"depth": 3, "oldest_ts": None},
        "agent_version": "0.1",
        "devices": {"cc-1": {"ok": 5}},
        "uplink": {"connected": True},
    }
    point = to_point(rec(RecordKind.HEALTH, body, device=None), GW, now=NOW, max_future_s=300)
    assert point.tags["device"] == ""
    assert point.fields["uptime_s"] == 12.5
    assert point.fields["buffer.depth"] == 3.0
    assert point.fields["uplink.connected"] is True
    assert "devices.cc-1" not in point.fields and "buffer.oldest_ts" not in point.fields
    assert json.loads(str(point.fields["body"])) == body


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (rec(RecordKind.ENERGY, {"values": {"energy": 1.0}}, device="cc-9"), "unknown_device"),
        (rec(RecordKind.FEATURES, {"features": {"a__mean": 1.0}}, device=None), "missing_device"),
        (rec(RecordKind.ENERGY, {"values": {"energy": 1.0}}, ts=NOW + 301), "future_ts"),
        (rec(RecordKind.FEATURES, {"features": [1, 2]}), "bad_body"),
        (rec(RecordKind.FEATURES, {"nothing": 1}), "bad_body"),
        (rec(RecordKind.FEATURES, {"features": {"a__mean": "high"}}), "bad_body"),
        (rec(RecordKind.FEATURES, {"features": {"a__mean": None}}), "bad_body"),
        (rec(RecordKind.SCORE, {"score": True, "anomalous": False}), "bad_body"),
        (rec(RecordKind.ALARM, {"state": "raised"}), "bad_body"),
        (rec(RecordKind.ENERGY, {"values": {}}), "bad_body"),
    ],
    ids=[
        "unknown-device",
        "missing-device",
        "future",
        "features-not-object",
        "no-features",
        "feature-text",
        "all-missing",
        "bool-score",
        "alarm-no-name",
        "energy-empty",
    ],
)
def test_refused_records_name_their_reason(record: Record, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        to_point(record, GW, now=NOW, max_future_s=300)
    assert info.value.reason == reason
    assert str(record.seq) in str(info.value)


def test_a_little_clock_skew_is_accepted() -> None:
    record = rec(RecordKind.ENERGY, {"values": {"energy": 1.0}}, ts=NOW + 299)
    assert to_point(record, GW, now=NOW, max_future_s=300).fields == {"energy": 1.0}


@pytest.mark.parametrize("ts", [NOW, NOW + 0.1, NOW + 0.123456, 1_718_000_000.25, 946_684_800.0])
def test_timestamps_are_stable_to_the_microsecond(ts: float) -> None:
    assert ts_ns(ts) % 1000 == 0
    assert abs(ts_ns(ts) / 1e9 - ts) < 1e-6
    assert ts_ns(float(repr(ts))) == ts_ns(ts)  # a JSON round trip gives the same point
