"""Uplink records → time-series points (pure functions, table-tested).

Each record of :mod:`edge_agent.protocol` becomes one :class:`cloud.tsdb.Point` whose
measurement is the record kind and whose tags say whose it is (client, site, gateway,
device: the registry ids, so renaming a device keeps its history) plus what tells two
series of one device apart (a window's poll ``group``, a score's ``model_id``, an alarm's
``name``). A record that cannot be stored gets a reason instead (:data:`INGEST_REASONS`);
it never takes a neighbour with it.

Timestamps are kept to the microsecond (``round(ts * 1e6)``): the same record always maps
to the same nanosecond timestamp, so a replay rewrites the same point (idempotent).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from cloud.registry.refs import GatewayInfo
from cloud.tsdb import Point
from cloud.tsdb.base import FieldValue
from edge_agent.protocol import Record, RecordKind

INGEST_REASONS: Final = (
    "unknown_device",  # the gateway's registry entry has no device by that id
    "missing_device",  # a device-level record (features, score, alarm, energy) without one
    "future_ts",  # stamped further ahead of the cloud's clock than ingest_max_future_s
    "bad_body",  # the body lacks what its kind needs (e.g. features without a features object)
    "store_refused",  # the time-series store refuses the point (e.g. a field changed type)
)
"""Why ingest refuses a record that :mod:`edge_agent.protocol` accepted; sent back in the
ack's ``rejected`` list, so the gateway deletes and counts it."""

MAX_HEALTH_FIELDS: Final = 64


class Rejected(Exception):
    """Raised by :func:`to_point` with one of :data:`INGEST_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def ts_ns(ts: float) -> int:
    """A record's timestamp in nanoseconds, rounded to the microsecond."""
    return round(ts * 1e6) * 1000


def to_point(record: Record, gateway: GatewayInfo, *, now: float, max_future_s: float) -> Point:
    """The point storing ``record`` of ``gateway``, or :class:`Rejected`."""
    if record.ts > now + max_future_s:
        raise Rejected(
            "future_ts", f"seq {record.seq} ts {record.ts} is after now + {max_future_s}"
        )
    if record.device_id is None:
        if record.kind is not RecordKind.HEALTH:
            raise Rejected("missing_device", f"seq {record.seq}: a {record.kind} record needs one")
        device = ""
    else:
        ref = gateway.devices.get(record.device_id)
        if ref is None:
            raise Rejected("unknown_device", f"seq {record.seq}: device {record.device_id!r}")
        device = ref.id
    tags = {
        "client": gateway.client_id,
        "site": gateway.site_id,
        "gateway": gateway.gateway_id,
        "device": device,
    }
    body = record.body
    try:
        fields, extra = _MAPPERS[record.kind](body)
    except (KeyError, TypeError, ValueError) as exc:
        raise Rejected("bad_body", f"seq {record.seq} ({record.kind}): {exc}") from None
    if not fields:
        raise Rejected("bad_body", f"seq {record.seq} ({record.kind}): no values to store")
    return Point(record.kind.value, ts_ns(record.ts), tags | extra, fields)


def _number(value: object, what: str) -> float:
    if type(value) is bool or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return float(value)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is {value!r}, not text")
    return value


def _features(body: dict[str, Any]) -> tuple[dict[str, FieldValue], dict[str, str]]:
    features = body["features"]
    if not isinstance(features, dict):
        raise TypeError("features is not an object")
    fields: dict[str, FieldValue] = {}
    for name, v in features.items():
        if type(v) is float and math.isfinite(v):
            fields[name] = v
        elif v is not None:
            fields[name] = _number(v, f"features.{name}")
    for key in ("n_samples", "n_missing"):
        if key in body:
            fields[key] = int(_number(body[key], key))
    if "start" in body:
        fields["start"] = _number(body["start"], "start")
    return fields, {"group": _text(body.get("group", ""), "group")}


def _score(body: dict[str, Any]) -> tuple[dict[str, FieldValue], dict[str, str]]:
    fields: dict[str, FieldValue] = {
        "score": _number(body["score"], "score"),
        "anomalous": bool(body["anomalous"]),
    }
    if body.get("threshold") is not None:
        fields["threshold"] = _number(body["threshold"], "threshold")
    if body.get("model_version") is not None:
        fields["model_version"] = int(_number(body["model_version"], "model_version"))
    if body.get("top_signals"):
        fields["top_signals"] = json.dumps(body["top_signals"], separators=(",", ":"))
    tags = {
        "group": _text(body.get("group", ""), "group"),
        "model_id": _text(body.get("model_id", ""), "model_id"),
    }
    return fields, tags


def _alarm(body: dict[str, Any]) -> tuple[dict[str, FieldValue], dict[str, str]]:
    fields: dict[str, FieldValue] = {
        "state": _text(body["state"], "state"),
        "severity": _text(body.get("severity", ""), "severity"),
    }
    if body.get("value") is not None:
        fields["value"] = _number(body["value"], "value")
    if body.get("detail") is not None:
        fields["detail"] = str(body["detail"])
    return fields, {"name": _text(body["name"], "name")}


def _energy(body: dict[str, Any]) -> tuple[dict[str, FieldValue], dict[str, str]]:
    values = body["values"]
    if not isinstance(values, dict):
        raise TypeError("values is not an object")
    fields: dict[str, FieldValue] = {
        name: _number(v, f"values.{name}") for name, v in values.items() if v is not None
    }
    return fields, {}


def _health(body: dict[str, Any]) -> tuple[dict[str, FieldValue], dict[str, str]]:
    """The numbers of the health record's first two levels (``buffer.depth``,
    ``uplink.sent``, ...) as fields, and the whole body as JSON text in ``body``."""
    fields: dict[str, FieldValue] = {}

    def scalar(name: str, value: object) -> None:
        if len(fields) >= MAX_HEALTH_FIELDS:
            return
        if isinstance(value, bool):
            fields[name] = value
        elif isinstance(value, int | float) and math.isfinite(value):
            fields[name] = float(value)

    for key, value in body.items():
        if isinstance(value, dict) and key != "devices":
            for sub, inner in value.items():
                scalar(f"{key}.{sub}", inner)
        else:
            scalar(key, value)
    fields["body"] = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return fields, {}


_MAPPERS: Final = {
    RecordKind.FEATURES: _features,
    RecordKind.SCORE: _score,
    RecordKind.ALARM: _alarm,
    RecordKind.ENERGY: _energy,
    RecordKind.HEALTH: _health,
}
