"""The EdgeWatch wire contract between a gateway and the cloud (public API, versioned).

Everything a gateway and the cloud exchange is defined here, once; the cloud imports this
module and nobody re-declares it. Changing anything below is a protocol change: bump
:data:`SCHEMA_VERSION`, keep decoding the previous version, and write a migration note.

Schema version 1.

Topics (MQTT; ``{gw}`` is the gateway id, the broker ACL confines a gateway to
``edgewatch/v1/{gw}/#``)
    ``edgewatch/v1/{gw}/up``              gateway → cloud, QoS 1: record batches
    ``edgewatch/v1/{gw}/ack``             cloud → gateway, QoS 1: :class:`Ack`
    ``edgewatch/v1/{gw}/status``          gateway → cloud, QoS 1, retained: ``online`` /
                                          ``offline`` (the last will)
    ``edgewatch/v1/{gw}/down/config``     cloud → gateway, QoS 1: :class:`ConfigChange`
    ``edgewatch/v1/{gw}/down/model``      cloud → gateway, QoS 1: :class:`ModelUpdate`
    ``edgewatch/v1/{gw}/down/command``    cloud → gateway, QoS 1: :class:`PollNow`
    ``$share/ingest/edgewatch/v1/+/up``   the ingest workers' shared subscription

HTTPS uplink (for sites where MQTT is blocked): ``POST {url}/v1/gateways/{gw}/batches``
with the batch bytes as the body, ``Content-Type: application/vnd.edgewatch.batch`` and
``Authorization: Bearer <token>``; a ``200`` response's body is the :class:`Ack`.

Batch (``up`` payload, and the HTTPS request body)
    One format byte, then the document:

    * ``0x01`` (:data:`FORMAT_JSON`): UTF-8 JSON;
    * ``0x02`` (:data:`FORMAT_ZLIB`): zlib-compressed (RFC 1950) UTF-8 JSON.

    The JSON document::

        {"schema_version": 1, "gateway_id": "gw-dxb-1",
         "records": [{"seq": 17, "ts": 1718000000.25, "kind": "features",
                      "device_id": "cc-dxb-01", "body": {...}}, ...]}

    ``seq`` is the gateway's sequence number (an integer from 1, unique per gateway, never
    reused); ``ts`` is seconds since the Unix epoch (UTC) when the record was made;
    ``kind`` is one of :class:`RecordKind`; ``device_id`` is null for gateway-level
    records (health); ``body`` is a JSON object whose numbers are all finite.
    ``(gateway_id, seq, ts)`` identifies a record: the cloud stores idempotently by it.
    A batch carries at most :data:`MAX_RECORDS` records and decodes to at most
    :data:`MAX_DOCUMENT_BYTES` bytes of JSON.

Ack (``ack`` payload, and the HTTPS response body): UTF-8 JSON::

    {"schema_version": 1, "gateway_id": "gw-dxb-1",
     "ranges": [[1, 500], [731, 740]], "rejected": [[512, "bad_body"]]}

    ``ranges`` are the inclusive seq ranges the cloud has *stored* (durably). They are not
    cumulative: backlog and live records flow at the same time, so "everything up to N"
    would acknowledge backlog that was never sent. ``rejected`` lists seqs the cloud will
    never store, with the reason; the gateway deletes them too and counts them. A gateway
    deletes a record only when an ack names it.

Status (``status`` payload): ``{"schema_version": 1, "gateway_id": ..., "state":
"online"|"offline", "ts": <float|null>}``; the last will carries ``ts: null``.

Downlink payloads: UTF-8 JSON objects with ``schema_version`` and ``kind``
(``config``, ``model``, ``command``); binary fields are base64 (standard alphabet).
Signatures are verified by the agent's update code, not here: to this module the manifest
and the signature are opaque bytes.

Errors: every decoder raises :class:`edge_agent.errors.ProtocolError` with a stable
``reason`` (see :data:`BATCH_REASONS`, :data:`RECORD_REASONS`); :func:`decode_batch` with
``strict=False`` keeps the good records of a batch and lists the bad ones with their
reasons, so that a receiver never drops good records because of a bad neighbour.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, overload

import orjson

from edge_agent.errors import ProtocolError

SCHEMA_VERSION: Final = 1
"""The version of every payload defined here."""

TOPIC_ROOT: Final = "edgewatch/v1"
INGEST_SHARED_FILTER: Final = "$share/ingest/edgewatch/v1/+/up"
"""The shared subscription the cloud's ingest workers use (load-balanced between them)."""

BATCH_CONTENT_TYPE: Final = "application/vnd.edgewatch.batch"
ACK_CONTENT_TYPE: Final = "application/json"

FORMAT_JSON: Final = 0x01
FORMAT_ZLIB: Final = 0x02

MAX_RECORDS: Final = 100_000
"""Records in one batch at most."""
MAX_DOCUMENT_BYTES: Final = 32 << 20
"""Bytes of (decompressed) JSON in one batch at most; guards receivers against zlib bombs."""
MAX_ACK_BYTES: Final = 1 << 20
MAX_DOWNLINK_BYTES: Final = 16 << 20

TS_MIN: Final = 946_684_800.0
"""2000-01-01T00:00:00Z: a record older than this has a broken clock behind it."""
TS_MAX: Final = 4_102_444_800.0
"""2100-01-01T00:00:00Z."""
SEQ_MAX: Final = (1 << 63) - 1
"""Sequence numbers are SQLite integers on both sides."""

IDENT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Gateway and device ids (as in the gateway config)."""

BATCH_REASONS: Final = (
    "malformed",  # not a batch at all: empty, unknown format byte, bad zlib, bad JSON, bad shape
    "bad_version",  # schema_version this module does not decode
    "too_large",  # more than MAX_DOCUMENT_BYTES or MAX_RECORDS
    "bad_gateway",  # gateway_id missing, invalid, or not the expected gateway
)
RECORD_REASONS: Final = (
    "bad_record",  # not an object, or unknown/missing keys
    "bad_seq",  # not an integer in 1..SEQ_MAX
    "duplicate_seq",  # the same seq twice in one batch (the first one is kept)
    "bad_ts",  # not a finite number between TS_MIN and TS_MAX
    "bad_kind",  # not a RecordKind
    "bad_device",  # device_id neither null nor a valid id
    "bad_body",  # not an object, or a number that is not finite
)
OTHER_REASONS: Final = (
    "bad_range",  # an ack range that is not [first, last] with 1 <= first <= last
    "bad_topic",  # a topic outside edgewatch/v1/{gw}/...
    "bad_command",  # a downlink command this version does not know
)

Compression = Literal["zlib", "none"]


class RecordKind(enum.StrEnum):
    """What an uplink record carries."""

    FEATURES = "features"
    """The feature vector of one window of one device."""
    SCORE = "score"
    """An anomaly score of one window."""
    ALARM = "alarm"
    """A local alarm raised or cleared."""
    ENERGY = "energy"
    """An energy counter reading."""
    HEALTH = "health"
    """Gateway or device health (buffer depth, drops, poll errors)."""


_KINDS: Final = {k.value: k for k in RecordKind}


# ---- topics ---------------------------------------------------------------------------------


def _check_gateway(gateway_id: str) -> str:
    if not isinstance(gateway_id, str) or not IDENT_RE.match(gateway_id):
        raise ValueError(f"gateway id {gateway_id!r} is not a valid id ({IDENT_RE.pattern})")
    return gateway_id


def up_topic(gateway_id: str) -> str:
    """Record batches, gateway → cloud."""
    return f"{TOPIC_ROOT}/{_check_gateway(gateway_id)}/up"


def ack_topic(gateway_id: str) -> str:
    """Acks, cloud → gateway."""
    return f"{TOPIC_ROOT}/{_check_gateway(gateway_id)}/ack"


def status_topic(gateway_id: str) -> str:
    """Retained online/offline status; the gateway's last will."""
    return f"{TOPIC_ROOT}/{_check_gateway(gateway_id)}/status"


class DownlinkKind(enum.StrEnum):
    CONFIG = "config"
    MODEL = "model"
    COMMAND = "command"


def down_topic(gateway_id: str, kind: DownlinkKind | str) -> str:
    """Downlink, cloud → gateway, for one of :class:`DownlinkKind`."""
    try:
        k = DownlinkKind(kind)
    except ValueError:
        raise ValueError(f"downlink kind {kind!r} is not one of config, model, command") from None
    return f"{TOPIC_ROOT}/{_check_gateway(gateway_id)}/down/{k.value}"


def parse_topic(topic: str) -> tuple[str, str]:
    """``(gateway_id, rest)`` of an EdgeWatch topic, e.g. ``("gw-1", "down/config")``."""
    parts = topic.split("/", 3)
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or not IDENT_RE.match(parts[2]):
        raise ProtocolError("bad_topic", f"{topic!r} is not an EdgeWatch v1 topic")
    return parts[2], parts[3]


# ---- records and batches --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One uplink record. Construction validates everything except the body's contents
    (finite numbers, JSON-serialisable), which :func:`encode_batch` and
    :func:`check_body` check while serialising."""

    seq: int
    ts: float
    kind: RecordKind
    device_id: str | None
    body: dict[str, Any]

    def __post_init__(self) -> None:
        reason = _record_fault(self.seq, self.ts, self.kind, self.device_id, self.body)
        if reason is not None:
            raise ProtocolError(reason, f"record seq={self.seq!r}: {reason}")
        if not isinstance(self.kind, RecordKind):
            object.__setattr__(self, "kind", RecordKind(self.kind))

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind.value,
            "device_id": self.device_id,
            "body": self.body,
        }


def _record_fault(
    seq: object, ts: object, kind: object, device: object, body: object
) -> str | None:
    if type(seq) is not int or not 1 <= seq <= SEQ_MAX:
        return "bad_seq"
    if (
        type(ts) not in (float, int)
        or not math.isfinite(ts)  # type: ignore[arg-type]
        or not TS_MIN <= ts <= TS_MAX  # type: ignore[operator]
    ):
        return "bad_ts"
    if not isinstance(kind, str) or kind not in _KINDS:
        return "bad_kind"
    if device is not None and (not isinstance(device, str) or not IDENT_RE.match(device)):
        return "bad_device"
    if not isinstance(body, dict):
        return "bad_body"
    return None


def check_body(body: dict[str, Any]) -> str:
    """The body as compact JSON; :class:`ProtocolError` ``bad_body`` if it is not a JSON
    object of finite numbers, strings, booleans, nulls, lists and objects."""
    if not isinstance(body, dict):
        raise ProtocolError("bad_body", f"body is a {type(body).__name__}, not an object")
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("bad_body", f"body is not finite JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Batch:
    gateway_id: str
    records: list[Record]
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """What a lenient :func:`decode_batch` (``strict=False``) returns."""

    batch: Batch
    rejects: list[tuple[int, str]] = field(default_factory=list)
    """``(index in the batch's record list, reason)`` of every record that was left out."""
    rejected_seqs: list[tuple[int, str]] = field(default_factory=list)
    """``(seq, reason)`` of the rejected records whose seq could be read (for the ack)."""


def encode_batch(
    gateway_id: str, records: Sequence[Record], compression: Compression = "zlib"
) -> bytes:
    """The wire bytes of a batch. Raises :class:`ProtocolError` (``bad_body``,
    ``too_large``) if a record cannot be carried, and ``ValueError`` for a bad gateway id."""
    _check_gateway(gateway_id)
    if len(records) > MAX_RECORDS:
        raise ProtocolError("too_large", f"{len(records)} records, at most {MAX_RECORDS}")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "gateway_id": gateway_id,
        "records": [r.to_json() for r in records],
    }
    try:
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("bad_body", f"a record body is not finite JSON: {exc}") from None
    raw = text.encode("utf-8")
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ProtocolError("too_large", f"{len(raw)} bytes, at most {MAX_DOCUMENT_BYTES}")
    if compression == "zlib":
        return bytes((FORMAT_ZLIB,)) + zlib.compress(raw, 6)
    if compression == "none":
        return bytes((FORMAT_JSON,)) + raw
    raise ValueError(f"compression {compression!r} is not one of zlib, none")


class _NonFinite:
    """Stands in for NaN/Infinity while parsing, so that only the record holding it fails."""

    __slots__ = ()


_NON_FINITE: Final = _NonFinite()


def _parse_constant(_name: str) -> _NonFinite:
    return _NON_FINITE


_PLAIN: Final = frozenset({float, int, str, bool, type(None)})


def _finite(value: object) -> bool:
    """No NaN or infinity anywhere in a parsed JSON value (dicts and lists as json makes
    them; the plain scalars are skipped without a call, bodies hold hundreds of them)."""
    if type(value) is dict:
        items: Iterable[object] = value.values()
    elif type(value) is list:
        items = value
    else:
        return value is not _NON_FINITE
    plain = _PLAIN
    return all(type(v) in plain or _finite(v) for v in items)


def _parse(raw: bytes) -> tuple[Any, bool]:
    """The JSON document ``raw``, and whether it may hold NaN or Infinity (as
    :data:`_NON_FINITE`). orjson reads what gateways send (RFC 8259 JSON) three to six times
    faster than :mod:`json` (100 feature values: 8 µs against 25-45 µs here), and the text
    of hundreds of feature values per window is most of a receiver's cost
    (``tests/bench/bench_ingest.py``). What orjson refuses is read again by :mod:`json`: NaN
    and Infinity, which a lenient decode turns into the rejection of the record holding
    them, and text that is not JSON at all, whose error then names where. One difference is
    left: an integer beyond 64 bits reads as a float where json reads an int. As a value in
    a body it is the same number either way, and a seq or schema version that large is
    refused either way."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_parse_constant), True
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("malformed", f"not UTF-8 JSON: {exc}") from None


def _document(data: bytes, max_bytes: int) -> bytes:
    if not data:
        raise ProtocolError("malformed", "empty payload")
    fmt, body = data[0], data[1:]
    if fmt == FORMAT_JSON:
        if len(body) > max_bytes:
            raise ProtocolError("too_large", f"{len(body)} bytes, at most {max_bytes}")
        return body
    if fmt == FORMAT_ZLIB:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            raise ProtocolError("malformed", f"bad zlib data: {exc}") from None
        if len(raw) > max_bytes or inflater.unconsumed_tail:
            raise ProtocolError("too_large", f"decompresses to more than {max_bytes} bytes")
        if not inflater.eof:
            raise ProtocolError("malformed", "truncated zlib data")
        return raw
    raise ProtocolError("malformed", f"unknown format byte {fmt:#04x}")


_RECORD_KEYS: Final = frozenset({"seq", "ts", "kind", "device_id", "body"})


@overload
def decode_batch(
    data: bytes, *, strict: Literal[True] = True, expected_gateway: str | None = None
) -> Batch: ...


@overload
def decode_batch(
    data: bytes, *, strict: Literal[False], expected_gateway: str | None = None
) -> DecodedBatch: ...


def decode_batch(
    data: bytes, *, strict: bool = True, expected_gateway: str | None = None
) -> Batch | DecodedBatch:
    """Decode the wire bytes of a batch.

    With ``strict=True`` (the default) a bad record fails the whole batch and a
    :class:`Batch` is returned. With ``strict=False`` a :class:`DecodedBatch` holds the
    good records and the rejects; only batch-level faults (:data:`BATCH_REASONS`) raise.
    ``expected_gateway`` (the gateway the topic or the URL names) must match the batch's.
    """
    doc, non_finite = _parse(_document(data, MAX_DOCUMENT_BYTES))
    if not isinstance(doc, dict):
        raise ProtocolError("malformed", "the document is not a JSON object")
    version = doc.get("schema_version")
    if type(version) is not int:
        raise ProtocolError("malformed", "schema_version is missing or not an integer")
    if version != SCHEMA_VERSION:
        raise ProtocolError("bad_version", f"schema_version {version}, expected {SCHEMA_VERSION}")
    gateway = doc.get("gateway_id")
    if not isinstance(gateway, str) or not IDENT_RE.match(gateway):
        raise ProtocolError("bad_gateway", f"gateway_id {gateway!r} is not a valid id")
    if expected_gateway is not None and gateway != expected_gateway:
        raise ProtocolError("bad_gateway", f"batch of {gateway!r} sent as {expected_gateway!r}")
    items = doc.get("records")
    if not isinstance(items, list) or set(doc) != {"schema_version", "gateway_id", "records"}:
        raise ProtocolError("malformed", "expected exactly schema_version, gateway_id, records")
    if len(items) > MAX_RECORDS:
        raise ProtocolError("too_large", f"{len(items)} records, at most {MAX_RECORDS}")
    records: list[Record] = []
    rejects: list[tuple[int, str]] = []
    rejected_seqs: list[tuple[int, str]] = []
    seen: set[int] = set()
    for i, item in enumerate(items):
        reason = _item_fault(item, seen, non_finite)
        if reason is None:
            records.append(
                _checked_record(
                    item["seq"], item["ts"], _KINDS[item["kind"]], item["device_id"], item["body"]
                )
            )
            seen.add(item["seq"])
            continue
        if strict:
            raise ProtocolError(reason, f"record {i}: {reason}")
        rejects.append((i, reason))
        seq = item.get("seq") if isinstance(item, dict) else None
        if type(seq) is int and 1 <= seq <= SEQ_MAX and reason != "duplicate_seq":
            rejected_seqs.append((seq, reason))
    batch = Batch(gateway, records, version)
    if strict:
        return batch
    return DecodedBatch(batch, rejects, rejected_seqs)


def _checked_record(
    seq: int, ts: float, kind: RecordKind, device_id: str | None, body: dict[str, Any]
) -> Record:
    """A :class:`Record` of values :func:`_item_fault` has just passed, without checking
    them a second time in ``Record.__post_init__`` (the receiver's per-record cost)."""
    record = object.__new__(Record)
    for name, value in (
        ("seq", seq),
        ("ts", ts),
        ("kind", kind),
        ("device_id", device_id),
        ("body", body),
    ):
        object.__setattr__(record, name, value)
    return record


def _item_fault(item: object, seen: set[int], non_finite: bool) -> str | None:
    """Why ``item`` is not a record, or None. ``non_finite``: the document may hold NaN or
    Infinity (only then are the bodies walked for one)."""
    if not isinstance(item, dict) or set(item) != _RECORD_KEYS:
        return "bad_record"
    reason = _record_fault(item["seq"], item["ts"], item["kind"], item["device_id"], item["body"])
    if reason is not None:
        return reason
    if item["seq"] in seen:
        return "duplicate_seq"
    if non_finite and not _finite(item["body"]):
        return "bad_body"
    return None


# ---- acks -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """The cloud's application-level acknowledgement (see the module docstring)."""

    gateway_id: str
    ranges: list[tuple[int, int]]
    """Inclusive ``(first, last)`` seq ranges the cloud has stored."""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """``(seq, reason)`` of records the cloud will never store."""

    def seqs(self) -> int:
        """How many seqs the ack names (stored and rejected)."""
        return sum(b - a + 1 for a, b in self.ranges) + len(self.rejected)


def coalesce(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted inclusive ranges covering exactly ``seqs``: ``[1, 2, 3, 7] -> [(1, 3), (7, 7)]``."""
    ranges: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


def encode_ack(ack: Ack) -> bytes:
    _check_gateway(ack.gateway_id)
    for a, b in ack.ranges:
        if type(a) is not int or type(b) is not int or not 1 <= a <= b <= SEQ_MAX:
            raise ValueError(f"ack range {(a, b)!r} is not 1 <= first <= last")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "gateway_id": ack.gateway_id,
        "ranges": [[a, b] for a, b in ack.ranges],
        "rejected": [[s, r] for s, r in ack.rejected],
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode_ack(data: bytes, *, expected_gateway: str | None = None) -> Ack:
    doc = _json_object(data, MAX_ACK_BYTES, "ack")
    _version(doc)
    gateway = _gateway(doc, expected_gateway)
    ranges_in, rejected_in = doc.get("ranges"), doc.get("rejected", [])
    if not isinstance(ranges_in, list) or not isinstance(rejected_in, list):
        raise ProtocolError("malformed", "ack ranges and rejected must be lists")
    ranges: list[tuple[int, int]] = []
    for r in ranges_in:
        if (
            not isinstance(r, list)
            or len(r) != 2
            or type(r[0]) is not int
            or type(r[1]) is not int
            or not 1 <= r[0] <= r[1] <= SEQ_MAX
        ):
            raise ProtocolError("bad_range", f"ack range {r!r} is not [first, last]")
        ranges.append((r[0], r[1]))
    rejected: list[tuple[int, str]] = []
    for r in rejected_in:
        if (
            not isinstance(r, list)
            or len(r) != 2
            or type(r[0]) is not int
            or not 1 <= r[0] <= SEQ_MAX
            or not isinstance(r[1], str)
        ):
            raise ProtocolError("bad_range", f"ack rejected entry {r!r} is not [seq, reason]")
        rejected.append((r[0], r[1]))
    return Ack(gateway, ranges, rejected)


# ---- status ---------------------------------------------------------------------------------


def encode_status(gateway_id: str, online: bool, ts: float | None = None) -> bytes:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "gateway_id": _check_gateway(gateway_id),
        "state": "online" if online else "offline",
        "ts": ts,
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Status:
    gateway_id: str
    online: bool
    ts: float | None


def decode_status(data: bytes) -> Status:
    doc = _json_object(data, MAX_ACK_BYTES, "status")
    _version(doc)
    gateway = _gateway(doc, None)
    state, ts = doc.get("state"), doc.get("ts")
    if state not in ("online", "offline"):
        raise ProtocolError("malformed", f"status state {state!r} is not online or offline")
    if ts is not None and (type(ts) not in (int, float) or not math.isfinite(ts)):
        raise ProtocolError("malformed", f"status ts {ts!r} is not a number")
    return Status(gateway, state == "online", None if ts is None else float(ts))


# ---- downlink -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A new gateway config: the config document and its Ed25519 signature (opaque here)."""

    version: int
    """Monotonic; the agent refuses a version not newer than the running one."""
    document: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """A model: its manifest as signed (bytes), the detached signature (the JSON of
    :class:`edge_agent.models.ManifestSignature`) and the ONNX file the manifest's sha256
    names. Verified by :class:`edge_agent.models.ModelStore`, not here."""

    version: int
    manifest: bytes
    signature: bytes
    onnx: bytes


@dataclass(frozen=True, slots=True)
class PollNow:
    """Poll the named devices (all when ``devices`` is None) now and send their features."""

    request_id: str
    devices: list[str] | None = None


Downlink = ConfigChange | ModelUpdate | PollNow


def encode_downlink(message: Downlink) -> bytes:
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    if isinstance(message, ConfigChange):
        doc |= {
            "kind": DownlinkKind.CONFIG.value,
            "version": message.version,
            "document": base64.b64encode(message.document).decode("ascii"),
            "signature": base64.b64encode(message.signature).decode("ascii"),
        }
    elif isinstance(message, ModelUpdate):
        doc |= {
            "kind": DownlinkKind.MODEL.value,
            "version": message.version,
            "manifest": base64.b64encode(message.manifest).decode("ascii"),
            "signature": base64.b64encode(message.signature).decode("ascii"),
            "onnx": base64.b64encode(message.onnx).decode("ascii"),
        }
    else:
        doc |= {
            "kind": DownlinkKind.COMMAND.value,
            "command": "poll_now",
            "request_id": message.request_id,
            "devices": message.devices,
        }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode_downlink(kind: DownlinkKind | str, data: bytes) -> Downlink:
    """Decode a downlink payload that arrived on ``down_topic(gw, kind)``."""
    doc = _json_object(data, MAX_DOWNLINK_BYTES, "downlink")
    _version(doc)
    if doc.get("kind") != kind:
        raise ProtocolError("malformed", f"downlink kind {doc.get('kind')!r} on the {kind} topic")
    if kind in (DownlinkKind.CONFIG, DownlinkKind.MODEL):
        version = doc.get("version")
        if type(version) is not int or version < 0:
            raise ProtocolError("malformed", f"downlink version {version!r} is not an integer")
        name = "document" if kind == DownlinkKind.CONFIG else "manifest"
        content, signature = _b64(doc, name), _b64(doc, "signature")
        if kind == DownlinkKind.CONFIG:
            return ConfigChange(version, content, signature)
        return ModelUpdate(version, content, signature, _b64(doc, "onnx"))
    if kind == DownlinkKind.COMMAND:
        if doc.get("command") != "poll_now":
            raise ProtocolError("bad_command", f"unknown command {doc.get('command')!r}")
        request_id, devices = doc.get("request_id"), doc.get("devices")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
            raise ProtocolError("malformed", "poll_now request_id must be a short string")
        if devices is not None and (
            not isinstance(devices, list)
            or not all(isinstance(d, str) and IDENT_RE.match(d) for d in devices)
        ):
            raise ProtocolError("malformed", "poll_now devices must be null or a list of ids")
        return PollNow(request_id, devices)
    raise ProtocolError("malformed", f"unknown downlink kind {kind!r}")


# ---- helpers --------------------------------------------------------------------------------


def _json_object(data: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    if len(data) > max_bytes:
        raise ProtocolError("too_large", f"{what} of {len(data)} bytes, at most {max_bytes}")
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("malformed", f"{what} is not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("malformed", f"{what} is not a JSON object")
    return doc


def _version(doc: dict[str, Any]) -> None:
    version = doc.get("schema_version")
    if type(version) is not int:
        raise ProtocolError("malformed", "schema_version is missing or not an integer")
    if version != SCHEMA_VERSION:
        raise ProtocolError("bad_version", f"schema_version {version}, expected {SCHEMA_VERSION}")


def _gateway(doc: dict[str, Any], expected: str | None) -> str:
    gateway = doc.get("gateway_id")
    if not isinstance(gateway, str) or not IDENT_RE.match(gateway):
        raise ProtocolError("bad_gateway", f"gateway_id {gateway!r} is not a valid id")
    if expected is not None and gateway != expected:
        raise ProtocolError("bad_gateway", f"for {gateway!r}, expected {expected!r}")
    return gateway


def _b64(doc: dict[str, Any], key: str) -> bytes:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ProtocolError("malformed", f"{key} is missing or not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("malformed", f"{key} is not valid base64") from None
