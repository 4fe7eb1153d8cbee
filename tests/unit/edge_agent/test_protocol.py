"""The wire contract: topics, batch/ack/status/downlink round trips, every reject reason."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    BATCH_REASONS,
    FORMAT_JSON,
    FORMAT_ZLIB,
    INGEST_SHARED_FILTER,
    MAX_DOCUMENT_BYTES,
    RECORD_REASONS,
    SCHEMA_VERSION,
    SEQ_MAX,
    Ack,
    ConfigChange,
    DownlinkKind,
    ModelUpdate,
    PollNow,
    Record,
    RecordKind,
    ack_topic,
    check_body,
    coalesce,
    decode_ack,
    decode_batch,
    decode_downlink,
    decode_status,
    down_topic,
    encode_ack,
    encode_batch,
    encode_downlink,
    encode_status,
    parse_topic,
    status_topic,
    up_topic,
)

TS = 1_718_000_000.25


def rec(seq: int, **kw: Any) -> Record:
    args: dict[str, Any] = {
        "ts": TS,
        "kind": RecordKind.FEATURES,
        "device_id": "cc-1",
        "body": {"rms": 1.5, "n": 3, "tags": ["a"], "ok": True, "none": None},
    }
    args.update(kw)
    return Record(seq, args["ts"], args["kind"], args["device_id"], args["body"])


def wire(doc: Any, fmt: int = FORMAT_JSON) -> bytes:
    raw = json.dumps(doc).encode()
    return bytes((fmt,)) + (zlib.compress(raw) if fmt == FORMAT_ZLIB else raw)


def good_item(seq: int) -> dict[str, Any]:
    return {"seq": seq, "ts": TS, "kind": "score", "device_id": "cc-1", "body": {"s": 0.1}}


def doc(records: list[Any], **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"schema_version": 1, "gateway_id": "gw-1", "records": records}
    d.update(kw)
    return d


# ---- topics ----------------------------------------------------------------------------------


def test_topics() -> None:
    assert up_topic("gw-1") == "edgewatch/v1/gw-1/up"
    assert ack_topic("gw-1") == "edgewatch/v1/gw-1/ack"
    assert status_topic("gw-1") == "edgewatch/v1/gw-1/status"
    assert [down_topic("gw-1", k) for k in ("config", "model", "command")] == [
        "edgewatch/v1/gw-1/down/config",
        "edgewatch/v1/gw-1/down/model",
        "edgewatch/v1/gw-1/down/command",
    ]
    assert INGEST_SHARED_FILTER == "$share/ingest/edgewatch/v1/+/up"
    assert parse_topic("edgewatch/v1/gw-1/down/config") == ("gw-1", "down/config")


@pytest.mark.parametrize("bad", ["", "gw/1", "+", "#", "a" * 65, "-x"])
def test_topic_builders_refuse_bad_gateway_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid id"):
        up_topic(bad)


def test_down_topic_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError, match="config, model, command"):
        down_topic("gw-1", "firmware")


@pytest.mark.parametrize("topic", ["edgewatch/v2/gw-1/up", "x/v1/gw-1/up", "edgewatch/v1/+/up"])
def test_parse_topic_rejects(topic: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_topic(topic)
    assert err.value.reason == "bad_topic"


# ---- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"seq": 0}, "bad_seq"),
        ({"seq": -1}, "bad_seq"),
        ({"seq": True}, "bad_seq"),
        ({"seq": 1.0}, "bad_seq"),
        ({"seq": 1 << 63}, "bad_seq"),
        ({"ts": float("nan")}, "bad_ts"),
        ({"ts": float("inf")}, "bad_ts"),
        ({"ts": 0.0}, "bad_ts"),
        ({"ts": 5e9}, "bad_ts"),
        ({"ts": "1718000000"}, "bad_ts"),
        ({"kind": "telemetry"}, "bad_kind"),
        ({"device_id": ""}, "bad_device"),
        ({"device_id": "a/b"}, "bad_device"),
        ({"device_id": 7}, "bad_device"),
        ({"body": [1, 2]}, "bad_body"),
    ],
)
def test_record_validation(kw: dict[str, Any], reason: str) -> None:
    seq = kw.pop("seq", 1)
    with pytest.raises(ProtocolError) as err:
        rec(seq, **kw)
    assert err.value.reason == reason


def test_record_kind_from_string_and_device_none() -> None:
    r = Record(1, TS, "health", None, {})  # type: ignore[arg-type]
    assert r.kind is RecordKind.HEALTH
    assert {k.value for k in RecordKind} == {"features", "score", "alarm", "energy", "health"}


@pytest.mark.parametrize("body", [{"x": float("nan")}, {"x": [float("inf")]}, {"x": object()}])
def test_check_body_rejects_non_finite_or_non_json(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as err:
        check_body(body)
    assert err.value.reason == "bad_body"


def test_encode_batch_rejects_non_finite_body() -> None:
    with pytest.raises(ProtocolError) as err:
        encode_batch("gw-1", [rec(1, body={"x": float("nan")})])
    assert err.value.reason == "bad_body"


# ---- batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_batch_round_trip(compression: Any) -> None:
    records = [
        rec(i, kind=k, device_id=None if k == "health" else "cc-1")
        for i, k in enumerate(["features", "score", "alarm", "energy", "health"], start=10)
    ]
    data = encode_batch("gw-1", records, compression)
    assert data[0] == (FORMAT_ZLIB if compression == "zlib" else FORMAT_JSON)
    batch = decode_batch(data, expected_gateway="gw-1")
    assert batch.gateway_id == "gw-1"
    assert batch.schema_version == SCHEMA_VERSION
    assert batch.records == records


def test_zlib_batches_are_smaller() -> None:
    records = [rec(i) for i in range(1, 501)]
    assert len(encode_batch("gw-1", records, "zlib")) * 4 < len(
        encode_batch("gw-1", records, "none")
    )


finite = st.floats(allow_nan=False, allow_infinity=False)
bodies = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=5,
)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=946_684_800, max_value=4_102_444_800),
            st.sampled_from(list(RecordKind)),
            st.none() | st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z"),
            bodies,
        ),
        max_size=20,
    ),
    st.sampled_from(["zlib", "none"]),
)
def test_batch_round_trip_property(items: list[Any], compression: Any) -> None:
    records = [Record(i, ts, k, d, b) for i, (ts, k, d, b) in enumerate(items, start=1)]
    assert decode_batch(encode_batch("gw-1", records, compression)).records == records


def test_a_batch_with_a_nan_keeps_every_value_of_its_other_records() -> None:
    """A NaN makes the fast reader refuse the document; it is read again, and only the
    record holding the NaN is left out, the others' numbers read to the last bit."""
    values = {"a": 0.1, "b": 1e-7, "c": 2.0**-1074, "d": 1.7976931348623157e308, "e": 10**18}
    items = [
        {**good_item(1), "body": values},
        {**good_item(2), "body": {"x": float("nan")}},
        {**good_item(3), "body": values},
    ]
    for data in (wire(doc(items)), wire(doc([items[0], items[2]]))):
        decoded = decode_batch(data, strict=False)
        assert [r.body for r in decoded.batch.records] == [values, values]
        assert type(decoded.batch.records[0].body["e"]) is int
    assert decode_batch(wire(doc(items)), strict=False).rejects == [(1, "bad_body")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\x07{}", "malformed"),
        (b"\x02not zlib", "malformed"),
        (bytes((FORMAT_ZLIB,)) + zlib.compress(b'{"a":1}')[:-3], "malformed"),
        (b"\x01not json", "malformed"),
        (b"\x01\xff\xfe", "malformed"),
        (wire([1, 2]), "malformed"),
        (wire({"gateway_id": "gw-1", "records": []}), "malformed"),
        (wire(doc([], schema_version="1")), "malformed"),
        (wire(doc([], schema_version=2)), "bad_version"),
        (wire(doc([], gateway_id="gw/1")), "bad_gateway"),
        (wire(doc([], gateway_id=None)), "bad_gateway"),
        (wire(doc([], gateway_id="gw-2")), "bad_gateway"),
        (wire(doc({"seq": 1})), "malformed"),
        (wire(doc([], extra=1)), "malformed"),
        (bytes((FORMAT_ZLIB,)) + zlib.compress(b" " * (MAX_DOCUMENT_BYTES + 10)), "too_large"),
        (wire(doc(list(range(100_001)))), "too_large"),
    ],
)
def test_batch_level_rejects(data: bytes, reason: str) -> None:
    assert reason in BATCH_REASONS
    for strict in (True, False):
        with pytest.raises(ProtocolError) as err:
            decode_batch(data, strict=strict, expected_gateway="gw-1")  # type: ignore[call-overload]
        assert err.value.reason == reason


def test_uncompressed_too_large() -> None:
    data = bytes((FORMAT_JSON,)) + b" " * (MAX_DOCUMENT_BYTES + 1)
    with pytest.raises(ProtocolError) as err:
        decode_batch(data)
    assert err.value.reason == "too_large"


BAD_ITEMS: list[tuple[Any, str]] = [
    ([1], "bad_record"),
    ({**good_item(5), "extra": 1}, "bad_record"),
    ({k: v for k, v in good_item(5).items() if k != "body"}, "bad_record"),
    ({**good_item(5), "seq": 0}, "bad_seq"),
    ({**good_item(5), "seq": "5"}, "bad_seq"),
    ({**good_item(5), "seq": SEQ_MAX + 1}, "bad_seq"),
    ({**good_item(5), "seq": 10**30}, "bad_seq"),  # beyond 64 bits: read as a float
    ({**good_item(5), "ts": None}, "bad_ts"),
    ({**good_item(5), "ts": 12.0}, "bad_ts"),
    ({**good_item(5), "kind": "log"}, "bad_kind"),
    ({**good_item(5), "device_id": "bad id"}, "bad_device"),
    ({**good_item(5), "body": "x"}, "bad_body"),
    ({**good_item(5), "body": {"x": float("nan")}}, "bad_body"),
    ({**good_item(5), "body": {"x": [1, {"y": float("-inf")}]}}, "bad_body"),
    ({**good_item(5), "ts": float("inf")}, "bad_ts"),
    (good_item(1), "duplicate_seq"),
]


@pytest.mark.parametrize(("item", "reason"), BAD_ITEMS)
def test_record_level_rejects_keep_the_good_records(item: Any, reason: str) -> None:
    assert reason in RECORD_REASONS
    data = wire(doc([good_item(1), item, good_item(2)]))
    with pytest.raises(ProtocolError) as err:
        decode_batch(data)
    assert err.value.reason == reason
    lenient = decode_batch(data, strict=False)
    assert [r.seq for r in lenient.batch.records] == [1, 2]
    assert lenient.rejects == [(1, reason)]
    seq = item.get("seq") if isinstance(item, dict) else None
    expect_seq = type(seq) is int and 1 <= seq <= SEQ_MAX and reason != "duplicate_seq"
    assert lenient.rejected_seqs == ([(seq, reason)] if expect_seq else [])


def test_every_reason_is_tested() -> None:
    tested = {r for _, r in BAD_ITEMS}
    assert tested == set(RECORD_REASONS)


# ---- acks, status, downlink -------------------------------------------------------------------


def test_ack_round_trip() -> None:
    ack = Ack("gw-1", [(1, 500), (731, 740)], [(512, "bad_body")])
    assert decode_ack(encode_ack(ack), expected_gateway="gw-1") == ack
    assert ack.seqs() == 511
    assert decode_ack(b'{"schema_version":1,"gateway_id":"gw-1","ranges":[]}').rejected == []


def test_coalesce() -> None:
    assert coalesce([7, 1, 2, 3, 3, 9, 8]) == [(1, 3), (7, 9)]
    assert coalesce([]) == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"nope", "malformed"),
        (b"[]", "malformed"),
        (b'{"schema_version":2,"gateway_id":"gw-1","ranges":[]}', "bad_version"),
        (b'{"schema_version":1,"gateway_id":"gw-2","ranges":[]}', "bad_gateway"),
        (b'{"schema_version":1,"gateway_id":"gw-1"}', "malformed"),
        (b'{"schema_version":1,"gateway_id":"gw-1","ranges":[[5,4]]}', "bad_range"),
        (b'{"schema_version":1,"gateway_id":"gw-1","ranges":[[0,4]]}', "bad_range"),
        (b'{"schema_version":1,"gateway_id":"gw-1","ranges":[[1]]}', "bad_range"),
        (b'{"schema_version":1,"gateway_id":"gw-1","ranges":[],"rejected":[[1]]}', "bad_range"),
        (b" " * (1 << 20) + b"{}", "too_large"),
    ],
)
def test_ack_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_ack(payload, expected_gateway="gw-1")
    assert err.value.reason == reason


def test_encode_ack_refuses_bad_range() -> None:
    with pytest.raises(ValueError, match="first <= last"):
        encode_ack(Ack("gw-1", [(3, 2)]))


def test_status_round_trip() -> None:
    online = decode_status(encode_status("gw-1", True, TS))
    assert (online.gateway_id, online.online, online.ts) == ("gw-1", True, TS)
    will = decode_status(encode_status("gw-1", False))
    assert (will.online, will.ts) == (False, None)
    with pytest.raises(ProtocolError):
        decode_status(b'{"schema_version":1,"gateway_id":"gw-1","state":"away","ts":null}')


@pytest.mark.parametrize(
    "message",
    [
        ConfigChange(3, b"schema_version: 1\n", b"\x01" * 64),
        ModelUpdate(12, b'{"files": []}', b"\x02" * 64, b"\x08\x07onnx-bytes"),
        PollNow("req-1"),
        PollNow("req-2", ["cc-1", "fan-2"]),
    ],
)
def test_downlink_round_trip(message: Any) -> None:
    kind = {ConfigChange: "config", ModelUpdate: "model", PollNow: "command"}[type(message)]
    assert decode_downlink(DownlinkKind(kind), encode_downlink(message)) == message


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        ("config", encode_downlink(PollNow("r")), "malformed"),
        (
            "config",
            b'{"schema_version":1,"kind":"config","version":1,"document":"!","signature":""}',
            "malformed",
        ),
        (
            "model",
            b'{"schema_version":1,"kind":"model","version":-1,"manifest":"","signature":""}',
            "malformed",
        ),
        ("command", b'{"schema_version":1,"kind":"command","command":"reboot"}', "bad_command"),
        (
            "command",
            b'{"schema_version":1,"kind":"command","command":"poll_now",'
            b'"request_id":"r","devices":["a b"]}',
            "malformed",
        ),
        ("command", b'{"schema_version":9,"kind":"command"}', "bad_version"),
    ],
)
def test_downlink_rejects(kind: str, payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_downlink(kind, payload)
    assert err.value.reason == reason
