"""InfluxStore's parts that need no server: InfluxQL quoting, line protocol, parsing of
(chunked) answers, and the translation of HTTP answers into the store's errors (httpx's
mock transport stands in for the server; the real one is in tests/integration)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.errors import ConfigError, StoreError, StoreUnavailable
from cloud.ingest.directory import StaticDirectory
from cloud.ingest.service import IngestService
from cloud.registry.refs import DeviceRef, GatewayInfo
from cloud.tsdb.base import Point
from cloud.tsdb.influx import (
    InfluxStore,
    interval_name,
    line_protocol,
    make_line,
    parse_answer,
    parse_duration_s,
    quote_ident,
    quote_literal,
    select,
)
from edge_agent.protocol import Record, RecordKind, encode_batch

TAGS = {"client": "c", "site": "s", "gateway": "g", "device": "d"}


@pytest.mark.parametrize(
    ("raw", "ident", "literal"),
    [
        ("plain", '"plain"', "'plain'"),
        ("group", '"group"', "'group'"),  # a keyword
        ("it's", '"it\'s"', "'it\\'s'"),
        ('say "hi"', '"say \\"hi\\""', "'say \"hi\"'"),
        ("back\\slash", '"back\\\\slash"', "'back\\\\slash'"),
        ("end\\", '"end\\\\"', "'end\\\\'"),
        ("\\'", '"\\\\\'"', "'\\\\\\''"),  # a backslash then a quote: both escaped
        ("two\nlines", '"two\\nlines"', "'two\\nlines'"),
        ("ü ☃", '"ü ☃"', "'ü ☃'"),
        ("", '""', "''"),
    ],
)
def test_quoting(raw: str, ident: str, literal: str) -> None:
    assert quote_ident(raw) == ident
    assert quote_literal(raw) == literal


def test_select_joins_quoted_parts() -> None:
    where = ["\"device\" = 'd'", "", "time >= 1"]
    assert (
        select("*", '"score"', where, group_by="*", tail="LIMIT 1")
        == 'SELECT * FROM "score" WHERE "device" = \'d\' AND time >= 1 GROUP BY * LIMIT 1'
    )
    assert select("count(*)", '"m"') == 'SELECT count(*) FROM "m"'


def test_line_protocol_by_the_library_serializer() -> None:
    p = Point(
        "features",
        1_700_000_000_123_456_789,
        {**TAGS, "device": "a b,c=d", "group": ""},
        {"t__mean": 2.0, "n": 3, "ok": True, "note": 'say "hi" \\ there', "x y": 0.5},
    )
    assert line_protocol(p) == (
        "features,client=c,device=a\\ b\\,c\\=d,gateway=g,site=s "
        'n=3i,note="say \\"hi\\" \\\\ there",ok=true,t__mean=2,x\\ y=0.5 '
        "1700000000123456789"
    )


def test_durations_and_interval_names() -> None:
    assert parse_duration_s("INF") is None
    assert parse_duration_s("400d") == 400 * 86_400
    assert parse_duration_s("2w") == 14 * 86_400
    assert parse_duration_s("36h") == 36 * 3600
    for bad in ("", "d", "5m", "x1d"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration_s(bad)
    assert [interval_name(s) for s in (3600, 86_400, 7200, 900, 45)] == [
        "1h",
        "1d",
        "2h",
        "15m",
        "45s",
    ]


def test_parse_answer_merges_chunks_and_statements() -> None:
    chunks = [
        {
            "results": [
                {
                    "statement_id": 0,
                    "series": [
                        {
                            "name": "m",
                            "tags": {"d": "1"},
                            "columns": ["time", "v"],
                            "values": [[1, 1.5]],
                        }
                    ],
                    "partial": True,
                }
            ]
        },
        {
            "results": [
                {
                    "statement_id": 0,
                    "series": [
                        {
                            "name": "m",
                            "tags": {"d": "1"},
                            "columns": ["time", "v"],
                            "values": [[2, None]],
                        },
                        {
                            "name": "m",
                            "tags": {"d": "2"},
                            "columns": ["time", "v"],
                            "values": [[3, 7]],
                        },
                    ],
                }
            ]
        },
        {"results": [{"statement_id": 1}]},
        {
            "results": [
                {
                    "statement_id": 2,
                    "series": [{"name": "n", "columns": ["time", "c"], "values": [[0, 4]]}],
                }
            ]
        },
    ]
    results = parse_answer("\n".join(json.dumps(c) for c in chunks) + "\n")
    first = results[0]
    assert [(s.tags, s.values) for s in first] == [
        ({"d": "1"}, [[1, 1.5], [2, None]]),
        ({"d": "2"}, [[3, 7]]),
    ]
    assert list(first[0].rows()) == [(1, {"v": 1.5}), (2, {})]
    assert results.get(1, []) == []
    assert list(results[2][0].rows()) == [(0, {"c": 4})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"error": "error parsing query: found SELEC"}', "error parsing query"),
        (
            '{"results": [{"statement_id": 1, "error": "database not found: x"}]}',
            "statement 1: database not found",
        ),
        ("<html>proxy error</html>", "no JSON"),
        ("[1, 2]", "list JSON"),
    ],
)
def test_parse_answer_errors(text: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        parse_answer(text)
    assert not isinstance(info.value, StoreUnavailable)


def store_answering(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: object
) -> InfluxStore:
    return InfluxStore(
        "http://influx.invalid:8086",
        "db",
        manage_schema=False,
        transport=httpx.MockTransport(handler),
        **kwargs,  # type: ignore[arg-type]
    )


POINT = Point("score", 1_700_000_000 * 10**9, TAGS, {"score": 0.5})


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "message"),
    [
        (503, "", {}, StoreUnavailable, r"HTTP 503"),
        (500, '{"error":"timeout"}', {}, StoreUnavailable, r"HTTP 500\): timeout"),
        (
            429,
            '{"code":"too many requests","message":"slow down"}',
            {},
            StoreUnavailable,
            "slow down",
        ),
        (
            400,
            '{"error":"unable to parse \'x\': missing fields"}',
            {},
            StoreError,
            "refused .*missing fields",
        ),
        (
            400,
            '{"error":"partial write: field type conflict dropped=1"}',
            {},
            StoreError,
            "only part of",
        ),
        (
            422,
            '{"code":"unprocessable entity","message":"failure writing points"}',
            {},
            StoreError,
            "partial write",
        ),
        # A deployment fault, not the points': retried, never rejected (ingest would
        # otherwise tell the gateways to delete good records).
        (
            404,
            '{"error":"database not found: \\"db\\""}',
            {},
            StoreUnavailable,
            "no such database.*database not found",
        ),
        (
            401,
            "",
            {"X-Influxdb-Error": "authorization failed"},
            StoreUnavailable,
            "credentials.*authorization failed",
        ),
        (403, '{"message":"insufficient permissions"}', {}, StoreUnavailable, "credentials"),
        (413, "too big", {}, StoreError, "HTTP 413\\): too big"),
    ],
)
def test_http_answers_become_store_errors(
    status: int, body: str, headers: dict[str, str], kind: type[StoreError], message: str
) -> None:
    store = store_answering(lambda request: httpx.Response(status, text=body, headers=headers))
    with pytest.raises(kind, match=message) as info:
        store.write([POINT])
    if kind is StoreError:
        assert not isinstance(info.value, StoreUnavailable)
    with pytest.raises(kind):
        store.count("score")
    assert store.stats().write_errors == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_ingest_holds_its_acks_while_influxdb_refuses_the_deployment(status: int) -> None:
    """Found by the scale-out review: these answers used to make ingest reject every
    point of the batch as ``store_refused``, and the gateways then deleted good records
    (a rotated token, a missing database or DBRP mapping). Now nothing is acked and the
    worker retries until an operator fixes it."""
    answers = {"calls": 0}

    def influx(request: httpx.Request) -> httpx.Response:
        answers["calls"] += 1
        return httpx.Response(status, json={"error": "authorization failed"})

    gw = GatewayInfo("gw-1", "c", "s", {"cc-1": DeviceRef("dev-1", "compressor")})
    service = IngestService(
        store_answering(influx), StaticDirectory({"gw-1": gw}), clock=lambda: 1.8e9
    )
    records = [Record(n, 1.8e9 - n, RecordKind.ENERGY, "cc-1", {"values": {"energy": 1.0}})
               for n in (1, 2, 3)]  # fmt: skip
    prepared = service.prepare(encode_batch("gw-1", records), "gw-1")
    with pytest.raises(StoreUnavailable):
        service.commit([prepared])
    assert answers["calls"] == 1  # not written point by point, not rejected
    assert prepared.rejected == []


def test_long_error_messages_are_cut() -> None:
    long = "unable to parse " + "x" * 5000
    store = store_answering(lambda r: httpx.Response(400, json={"error": long}))
    with pytest.raises(StoreError) as info:
        store.write([POINT])
    assert len(str(info.value)) < 700 and "5016 characters" in str(info.value)


def test_transport_errors_become_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    store = store_answering(refuse)
    with pytest.raises(StoreUnavailable, match=r"cannot be reached.*connection refused"):
        store.write([POINT])
    assert store.ping() is False

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    store = store_answering(slow, timeout_s=1.5)
    with pytest.raises(StoreUnavailable, match=r"within 1\.5 s"):
        store.latest("d")


def test_long_queries_are_posted() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text='{"results":[{"statement_id":0}]}')

    store = store_answering(handler)
    store.feature_history("d", 0, 10, names=["a__mean"])
    store.feature_history("d", 0, 10, names=[f"signal_{i:03d}__mean" for i in range(300)])
    assert [r.method for r in seen] == ["GET", "POST"]
    assert seen[0].url.params["epoch"] == "ns" and seen[0].url.params["chunked"] == "true"
    assert "signal_299__mean" in seen[1].content.decode()


def test_schema_failure_says_how_to_run_on_influxdb_2_and_3() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"code": "invalid", "message": "not implemented"})

    store = InfluxStore("http://influx.invalid:8086", "db", transport=httpx.MockTransport(handler))
    with pytest.raises(StoreError, match="INFLUX_MANAGE_SCHEMA=false") as info:
        store.write([POINT])
    assert "CREATE DATABASE" in str(info.value)


def test_schema_setup_is_retried_after_an_outage() -> None:
    calls: list[str] = []
    up = False

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if not up:
            raise httpx.ConnectError("down", request=request)
        if request.url.path == "/query":
            return httpx.Response(200, text='{"results":[{"statement_id":0}]}')
        return httpx.Response(204)

    store = InfluxStore("http://influx.invalid:8086", "db", transport=httpx.MockTransport(handler))
    with pytest.raises(StoreUnavailable):
        store.write([POINT])
    up = True
    store.write([POINT])
    store.write([POINT])
    # CREATE DATABASE, SHOW, CREATE RPs once after the outage; then only writes.
    assert calls == ["/query", "/query", "/query", "/query", "/write", "/write"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"token": "t", "username": "u", "password": "p"}, "INFLUX_TOKEN"),
        ({"username": "u"}, "INFLUX_USERNAME"),
        ({"password": "p"}, "INFLUX_USERNAME"),
        ({"batch_points": 0}, "INFLUX_BATCH_POINTS"),
        ({"retention": "5m"}, "INFLUX_RETENTION"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        InfluxStore("http://influx.invalid:8086", "db", **kwargs)  # type: ignore[arg-type]


_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\r\n\\"),
    min_size=1,
    max_size=12,
).filter(lambda n: n != "time")
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=20).filter(lambda t: "\x00" not in t),
)


@given(
    measurement=st.sampled_from(["features", "score", "alarm", "energy", "health"]),
    extra=st.dictionaries(_names.map(lambda n: "t" + n), _names | st.just(""), max_size=3),
    fields=st.dictionaries(_names.map(lambda n: "f" + n), _values, min_size=1, max_size=8),
    ts=st.integers(min_value=0, max_value=2**62),
)
@settings(max_examples=300, deadline=None)
def test_the_memoised_serializer_writes_what_the_library_writes(
    measurement: str, extra: dict[str, str], fields: dict[str, object], ts: int
) -> None:
    tags = {**TAGS, "device": "cc 1,=x", **extra}
    point = Point(measurement, ts, tags, fields)  # type: ignore[arg-type]
    assert line_protocol(point) == make_line(measurement, tags, fields, ts)  # type: ignore[arg-type]
    assert line_protocol(point) == make_line(measurement, tags, fields, ts)  # type: ignore[arg-type]  # cached


_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e5, max_value=1e5).map(lambda v: round(v, 3)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
)


@given(
    fields=st.dictionaries(
        _names.map(lambda n: "f" + n) | st.sampled_from(["a.0", "b,.0", "c=.0", "d 0.0"]),
        _numbers,
        min_size=8,
        max_size=40,
    ),
    ts=st.integers(min_value=0, max_value=2**62),
)
@settings(max_examples=500, deadline=None)
def test_a_point_of_many_numbers_is_written_as_the_library_writes_it(
    fields: dict[str, object], ts: int
) -> None:
    """A features point's numbers are formatted in one call (``1e-07``, ``2`` for 2.0,
    ``1i``, ``true`` as the library writes them)."""
    point = Point("features", ts, TAGS, fields)  # type: ignore[arg-type]
    assert line_protocol(point) == make_line("features", TAGS, fields, ts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "values",
    [
        [0.5, 2.0, -0.0, 10.0, 3, True, 100.25, 1e15, 0.0001, 12.0],
        [1e-05, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        [1e16, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        [2**63 - 1, -(2**63), 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    ],
)
def test_numbers_that_python_writes_differently(values: list[object]) -> None:
    fields = {f"f{i}": v for i, v in enumerate(values)}
    point = Point("features", 1, TAGS, fields)  # type: ignore[arg-type]
    assert line_protocol(point) == make_line("features", TAGS, fields, 1)  # type: ignore[arg-type]
