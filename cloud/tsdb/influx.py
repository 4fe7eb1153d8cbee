"""The production time-series store: InfluxDB through its v1-compatible HTTP API.

InfluxDB 1.x, 2.x (with DBRP mappings) and 3.x all serve the same two endpoints, and
this module uses nothing else (no Flux, no client-library HTTP):

- ``POST /write?db=&rp=&precision=ns``: line protocol made by ``influxdb-client``'s
  serializer (:func:`line_protocol`), one request per ``batch_points`` points, on a
  kept-alive ``http.client`` connection per thread (:mod:`cloud.tsdb.influx_writes`);
- ``GET|POST /query?db=&rp=&epoch=ns&chunked=true``: InfluxQL, several statements per
  request where a query needs several; identifiers and string literals go through
  :func:`quote_ident` and :func:`quote_literal` (device ids come from users).

Authentication is a token (``Authorization: Token <token>``: 2.x, 3.x) or a username
and password (HTTP basic auth: 1.x; 2.x and 3.x take a token as the password).

Errors are translated here: no answer, a timeout, HTTP 5xx and 429 raise
:class:`~cloud.errors.StoreUnavailable` (retry later), and so do refused credentials and
an unknown database or bucket (a deployment fault: ingest holds its acks until it is
fixed); a refusal of the points (bad line protocol, a partial write) raises
:class:`~cloud.errors.StoreError` with InfluxDB's message.

Schema (``manage_schema``, InfluxDB 1.x only)
    Before its first request the store runs ``CREATE DATABASE`` and creates or alters
    two retention policies: :data:`RAW_RP` (the default; ``retention``) for the points
    written, and :data:`ROLLUP_RP` (``rollup_retention``) for the aggregates
    :meth:`InfluxStore.rollup` writes. Writes and queries name :data:`RAW_RP`
    explicitly. InfluxDB 2.x and 3.x refuse these statements on the v1 API: there, turn
    ``manage_schema`` off, create the bucket(s) and map ``<database>/raw`` (default) and
    ``<database>/rollup`` to them; the store then uses the database's default retention
    policy for raw points.

Rollups (instead of continuous queries, which only 1.x has)
    :meth:`InfluxStore.rollup` reads hourly aggregates per device from the raw points
    and writes them into :data:`ROLLUP_RP` as ``activity_1h``, ``energy_1h``,
    ``score_1h`` and ``alarm_1h``; it is idempotent (same tags and times: the points are
    overwritten) and meant to be run by a scheduler shortly after each hour, over the
    last few hours so late records are picked up. :meth:`InfluxStore.site_rollup` reads
    the intervals that start before the raw retention horizon (now − ``retention``)
    from these aggregates when ``interval_s`` is a multiple of an hour; shorter
    intervals are always read from raw points (and are empty once those expired).
    ``retention`` decides this even when the schema is not managed: set it to what the
    raw bucket or retention policy really keeps (``INF``: never read rollups).
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import operator
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx
import orjson
from influxdb_client.client.write.point import _ESCAPE_MEASUREMENT as _LP_ESCAPE_MEASUREMENT
from influxdb_client.client.write.point import _ESCAPE_STRING as _LP_ESCAPE_STRING
from influxdb_client.client.write.point import Point as LinePoint
from influxdb_client.client.write.point import _append_tags as _lp_append_tags
from influxdb_client.client.write.point import _escape_key as _lp_escape_key

from cloud.errors import ConfigError, StoreError, StoreUnavailable
from cloud.tsdb.base import (
    ENERGY_COUNTER,
    FEATURE_MARK,
    MEASUREMENTS,
    NS_PER_S,
    TENANT_TAGS,
    AlarmEvent,
    DeviceKey,
    EnergyInterval,
    FeatureRow,
    FieldValue,
    Latest,
    Point,
    ScoreTotals,
    SiteRollup,
    StoreStats,
    TimeSeriesStore,
    alarm_event,
    check_device,
    check_limit,
    energy_intervals,
    feature_values,
    interval_grid,
    is_feature,
    normalise_tags,
    numeric,
    series_key,
    site_rollups,
    to_ns,
)
from cloud.tsdb.influx_writes import WRITE_HEADERS, auth_headers, direct_writes

if TYPE_CHECKING:
    from cloud.settings import Settings

log = logging.getLogger(__name__)

RAW_RP: Final = "raw"
"""The retention policy of the points written (the database's default when managed)."""
ROLLUP_RP: Final = "rollup"
"""The retention policy of :meth:`InfluxStore.rollup`'s aggregates."""
ROLLUP_INTERVAL_S: Final = 3600
"""The interval of the scheduled rollup, and the one :meth:`InfluxStore.site_rollup` reads."""

MAX_GET_QUERY_CHARS: Final = 4096
"""Longer InfluxQL travels in a POST form body (URLs have length limits)."""
CHUNK_POINTS: Final = 10_000
"""``chunk_size`` of chunked query answers (servers cap unchunked answers at max-row-limit)."""
MAX_ERROR_CHARS: Final = 500
"""InfluxDB quotes the offending line in errors; keep messages (and logs) short."""

FILL: Final = "fill(none)"
"""Intervals without points are left out of ``GROUP BY time()`` answers."""

_DURATION_UNITS: Final = {"h": 3600, "d": 86_400, "w": 604_800}


# ---- InfluxQL and line protocol -------------------------------------------------------------


def quote_ident(name: str) -> str:
    """An InfluxQL identifier (measurement, tag or field key, database, retention policy)
    in double quotes, whatever characters ``name`` holds."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def quote_literal(value: str) -> str:
    """An InfluxQL string literal (a tag or string field value) in single quotes."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def select(
    columns: str,
    source: str,
    where: Iterable[str] = (),
    *,
    group_by: str = "",
    tail: str = "",
) -> str:
    """One InfluxQL ``SELECT`` from parts that are quoted already (:func:`quote_ident`,
    :func:`quote_literal`, integer times); ``where`` conditions are joined with ``AND``."""
    parts = ["SELECT", columns, "FROM", source]
    conditions = [c for c in where if c]
    if conditions:
        parts += ["WHERE", " AND ".join(conditions)]
    if group_by:
        parts += ["GROUP BY", group_by]
    if tail:
        parts.append(tail)
    return " ".join(parts)


def time_range(start_ns: int, stop_ns: int) -> str:
    """The condition ``start_ns <= time < stop_ns`` (integer literals are nanoseconds)."""
    return f"time >= {int(start_ns)} AND time < {int(stop_ns)}"


def tag_is(key: str, value: str) -> str:
    """The condition ``key = 'value'`` on a tag (``''`` matches points without the tag)."""
    return f"{quote_ident(key)} = {quote_literal(value)}"


def make_line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], ts_ns: int
) -> str:
    """A line of line protocol, by ``influxdb-client``'s serializer.

    Timestamps are integer nanoseconds (``precision=ns``); ints become Influx integers
    (``1i``), bools ``true``/``false``, strings quoted; empty tag values are left out."""
    line = LinePoint(measurement)  # type: ignore[no-untyped-call]
    for key, value in tags.items():
        line.tag(key, value)  # type: ignore[no-untyped-call]
    for name, field_value in fields.items():
        line.field(name, field_value)  # type: ignore[no-untyped-call]
    line.time(ts_ns)  # type: ignore[no-untyped-call]
    text: str = line.to_line_protocol()  # type: ignore[no-untyped-call]
    return text


@functools.lru_cache(maxsize=1 << 16)
def _series_prefix(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """``measurement,tag=value,... `` as influxdb-client writes it (sorted tags, empty
    values left out, its escape table), once per series."""
    escaped: str = _lp_escape_key(measurement, _LP_ESCAPE_MEASUREMENT)
    return escaped + _lp_append_tags(dict(tags))  # type: ignore[no-untyped-call,no-any-return]


@functools.lru_cache(maxsize=1 << 16)
def _field_key(name: str) -> str:
    escaped: str = _lp_escape_key(name)
    return escaped


@functools.lru_cache(maxsize=1 << 12)
def _field_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    """``key=`` for each of ``names``, escaped: a features point's ~100 names, once per
    set of names (one per feature list)."""
    return tuple(_field_key(name) + "=" for name in names)


_WRITE_HEADERS: Final = httpx.Headers(WRITE_HEADERS)

_NUMBER_TYPES: Final = frozenset({float, int, bool})
_MANY_FIELDS: Final = 8
"""From how many fields :func:`line_protocol` formats the numbers in one call."""


def line_protocol(point: Point) -> str:
    """One :class:`~cloud.tsdb.base.Point` as a line of line protocol.

    The same bytes as influxdb-client's builder (:func:`make_line`; a property test holds
    the two equal): the library's escape tables and tag formatting, its field order
    (sorted) and value formats (``2.0`` as ``2``, ``1i``, ``true``, escaped strings).
    What it does not do is escape every key of every point again: a features point
    carries ~100 fields whose names repeat on every point, and the builder made line
    protocol the largest cost of ingest (3,400 features points/s on one core, about a
    sixth of this path's rate). Series prefixes and field keys are memoised here.

    A point of many numeric fields has its numbers written by one ``orjson.dumps`` of the
    list, whose text is Python's (the shortest text that reads back the same double, as
    ``repr``) but for exponents: it writes ``1e-7`` and ``0.00001`` where Python writes
    ``1e-07`` and ``1e-05``. A point whose numbers hold an exponent or four zeros after
    the point is written field by field, so the bytes stay the library's."""
    fields = point.fields
    if len(fields) >= _MANY_FIELDS:
        line = _numbers_line(point)
        if line is not None:
            return line
    parts = []
    for name, value in sorted(fields.items()):
        kind = type(value)
        if kind is float:
            text = repr(value)
            if text.endswith(".0"):
                text = text[:-2]
        elif kind is int:
            text = f"{value}i"
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is str:
            text = '"' + str(value).translate(_LP_ESCAPE_STRING) + '"'
        else:  # a subclass: let the library decide
            return make_line(point.measurement, point.tags, point.fields, point.ts_ns)
        parts.append(f"{_field_key(name)}={text}")
    prefix = _series_prefix(point.measurement, tuple(point.tags.items()))
    return f"{prefix}{','.join(parts)} {point.ts_ns}"


def _numbers_line(point: Point) -> str | None:
    """:func:`line_protocol` of a point whose fields are all floats, ints and bools, the
    numbers formatted in one call; None for any other point, and for one whose numbers
    hold an exponent or four zeros after a point (where Python's text and orjson's may
    differ)."""
    fields = point.fields
    names = tuple(sorted(fields))
    values = list(map(fields.__getitem__, names))
    kinds = list(map(type, values))
    if not _NUMBER_TYPES.issuperset(kinds):
        return None
    numbers = orjson.dumps(values)  # a Point's ints fit 64 bits, as orjson's do
    if b"e" in numbers or b"0.0000" in numbers:
        return None
    texts = numbers[1:-1].decode("ascii").split(",")
    at = -1
    for _ in range(kinds.count(int)):
        at = kinds.index(int, at + 1)
        texts[at] += "i"
    # A float's ".0" is dropped, as the library does; an escaped key holds no bare comma.
    text = ",".join(map(operator.add, _field_keys(names), texts)).replace(".0,", ",")
    if text.endswith(".0"):
        text = text[:-2]
    prefix = _series_prefix(point.measurement, tuple(point.tags.items()))
    return f"{prefix}{text} {point.ts_ns}"


def parse_duration_s(duration: str) -> int | None:
    """``"400d"`` → seconds; ``"INF"`` → ``None`` (kept forever)."""
    if duration == "INF":
        return None
    try:
        return int(duration[:-1]) * _DURATION_UNITS[duration[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"duration {duration!r} is not INF or <n>h, <n>d, <n>w") from None


def interval_name(interval_s: int) -> str:
    """``3600`` → ``"1h"``: the suffix of the rollup measurements of that interval."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if interval_s % size == 0:
            return f"{interval_s // size}{unit}"
    return f"{interval_s}s"


@dataclass(slots=True)
class Series:
    """One series of a statement's answer (merged over the chunks of a chunked answer)."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def records(self) -> Iterator[dict[str, Any]]:
        """``{column: value}`` per row (for answers without a time column, e.g. SHOW)."""
        for row in self.values:
            yield dict(zip(self.columns, row, strict=True))

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(time ns, {column: value})`` per row, ``None`` values and tag columns left out."""
        names = self.columns[1:]
        for row in self.values:
            yield (
                int(row[0]),
                {c: v for c, v in zip(names, row[1:], strict=True) if v is not None},
            )


Results = dict[int, list[Series]]


def parse_answer(text: str) -> Results:
    """The series of each statement of a ``/query`` answer (one JSON document, or one per
    line when chunked); a statement's error raises :class:`StoreError`."""
    merged: dict[int, dict[tuple[str, str], Series]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise StoreError(f"InfluxDB answered a query with no JSON: {line[:80]!r}") from None
        if not isinstance(doc, dict):
            raise StoreError(f"InfluxDB answered a query with {type(doc).__name__} JSON")
        if doc.get("error"):
            raise StoreError(f"InfluxDB refused the query: {_short(str(doc['error']))}")
        for result in doc.get("results") or []:
            sid = int(result.get("statement_id", 0))
            if result.get("error"):
                raise StoreError(
                    f"InfluxDB refused query statement {sid}: {_short(str(result['error']))}"
                )
            statement = merged.setdefault(sid, {})
            for raw in result.get("series") or []:
                tags = {str(k): str(v) for k, v in (raw.get("tags") or {}).items()}
                key = (str(raw.get("name", "")), json.dumps(tags, sort_keys=True))
                values = list(raw.get("values") or [])
                if key in statement:
                    statement[key].values.extend(values)
                else:
                    statement[key] = Series(key[0], tags, list(raw.get("columns") or []), values)
    return {sid: list(series.values()) for sid, series in merged.items()}


def _short(message: str) -> str:
    message = " ".join(message.split())
    if len(message) > MAX_ERROR_CHARS:
        return message[:MAX_ERROR_CHARS] + f"... ({len(message)} characters)"
    return message


def _error_message(resp: httpx.Response) -> str:
    """InfluxDB's own words: ``{"error": ...}`` (1.x), ``{"message": ...}`` (2.x, 3.x),
    the ``X-Influxdb-Error`` header, or the body."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if doc.get(key):
                return _short(str(doc[key]))
    header = resp.headers.get("X-Influxdb-Error")
    if header:
        return _short(header)
    return _short(resp.text) or resp.reason_phrase


def _status_error(resp: httpx.Response, what: str) -> StoreError:
    """The exception for a refused request: retry-later for 5xx/429 and for what is wrong
    with the deployment rather than the points (credentials, a database or bucket that does
    not exist: fixed by an operator, after which the same write succeeds); refusal
    otherwise. Ingest rejects the points of a refused write for good, so only a refusal of
    the points themselves may be one."""
    status, message = resp.status_code, _error_message(resp)
    if status >= 500 or status == 429:
        return StoreUnavailable(f"InfluxDB could not take {what} now (HTTP {status}): {message}")
    if status in (401, 403):
        return StoreUnavailable(
            f"InfluxDB refused the credentials for {what} (HTTP {status}): {message}; "
            "check EDGEWATCH_CLOUD_INFLUX_TOKEN / _USERNAME / _PASSWORD"
        )
    if status == 404:
        return StoreUnavailable(
            f"InfluxDB has no such database or bucket for {what} (HTTP 404): {message}; "
            "create it (or its DBRP mapping) or fix EDGEWATCH_CLOUD_INFLUX_DATABASE"
        )
    if status == 422 or "partial write" in message:
        return StoreError(
            f"InfluxDB stored only part of {what} (HTTP {status}, partial write): {message}"
        )
    return StoreError(f"InfluxDB refused {what} (HTTP {status}): {message}")


def _series_max_count(series: Series) -> dict[int, int]:
    """Row time → the largest per-field count of a ``count(*)`` series (its points, when
    they share a field)."""
    out: dict[int, int] = {}
    for ts, counts in series.rows():
        out[ts] = max((int(v) for v in counts.values()), default=0)
    return out


# ---- the store ------------------------------------------------------------------------------


class InfluxStore(TimeSeriesStore):
    """:class:`~cloud.tsdb.base.TimeSeriesStore` on InfluxDB's v1 HTTP API (see the module).

    Safe to share between threads: each thread writes on its own keep-alive connection
    (:mod:`cloud.tsdb.influx_writes`), ``httpx.Client`` pools the connections of queries,
    and the schema is set up once under a lock."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        retention: str = "400d",
        rollup_retention: str = "INF",
        batch_points: int = 5000,
        timeout_s: float = 10.0,
        manage_schema: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if token and (username or password):
            raise ConfigError(
                "EDGEWATCH_CLOUD_INFLUX_TOKEN",
                "set a token or a username and password for InfluxDB, not both",
            )
        if bool(username) != bool(password):
            raise ConfigError(
                "EDGEWATCH_CLOUD_INFLUX_USERNAME",
                "an InfluxDB username needs a password and a password a username",
            )
        if batch_points < 1:
            raise ConfigError("EDGEWATCH_CLOUD_INFLUX_BATCH_POINTS", "must be at least 1")
        for key, duration in (("RETENTION", retention), ("ROLLUP_RETENTION", rollup_retention)):
            try:
                parse_duration_s(duration)
            except ValueError as exc:
                raise ConfigError(f"EDGEWATCH_CLOUD_INFLUX_{key}", str(exc)) from None
        self.url = url.rstrip("/")
        self.database = database
        self.retention = retention
        self.rollup_retention = rollup_retention
        self.batch_points = batch_points
        self.timeout_s = timeout_s
        self.manage_schema = manage_schema
        self._rp: str | None = RAW_RP if manage_schema else None
        headers = auth_headers(token, username, password)
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )
        # Writes on plain keep-alive connections (see cloud.tsdb.influx_writes); through
        # httpx when a transport is injected or a proxy from the environment applies.
        self._direct = (
            None if transport is not None else direct_writes(self.url, headers, timeout_s)
        )
        self._write_urls: dict[str | None, tuple[httpx.URL, str]] = {}
        self._schema_ready = not manage_schema
        self._schema_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = {"points_written": 0, "write_batches": 0, "write_errors": 0}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.BaseTransport | None = None
    ) -> InfluxStore:
        """The store the ``influx_*`` settings describe (no request is made yet)."""
        token = settings.influx_token.get_secret_value() if settings.influx_token else None
        password = settings.influx_password.get_secret_value() if settings.influx_password else None
        return cls(
            settings.influx_url,
            settings.influx_database,
            token=token,
            username=settings.influx_username,
            password=password,
            retention=settings.influx_retention,
            rollup_retention=settings.influx_rollup_retention,
            batch_points=settings.influx_batch_points,
            timeout_s=settings.influx_timeout_s,
            manage_schema=settings.influx_manage_schema,
            transport=transport,
        )

    # ---- HTTP -----------------------------------------------------------------------------

    def _request(
        self, method: str, path: str | httpx.URL, what: str, **kwargs: Any
    ) -> httpx.Response:
        with self._translated(what):
            resp = self._client.request(method, path, **kwargs)
        if resp.status_code >= 300:
            raise _status_error(resp, what)
        return resp

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Transport errors as the store's, httpx's and those of the direct writes
        (:mod:`cloud.tsdb.influx_writes`): a timeout or no connection is
        :class:`StoreUnavailable`, a URL that is not http(s) :class:`StoreError`."""
        try:
            yield
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise StoreUnavailable(
                f"InfluxDB at {self.url} did not answer {what} within {self.timeout_s:g} s"
                f" ({type(exc).__name__})"
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise StoreError(f"InfluxDB URL {self.url!r} is not http(s): {exc}") from exc
        except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
            raise StoreUnavailable(
                f"InfluxDB at {self.url} cannot be reached for {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def query(self, influxql: str, *, what: str = "a query", modify: bool = False) -> Results:
        """Run InfluxQL (one or several ``;``-separated statements) on the database.

        ``modify``: the statements change the schema (sent as POST, which 1.x requires)."""
        params = {"db": self.database, "epoch": "ns", "chunked": "true"}
        params["chunk_size"] = str(CHUNK_POINTS)
        if self._rp is not None:
            params["rp"] = self._rp
        if modify or len(influxql) > MAX_GET_QUERY_CHARS:
            resp = self._request("POST", "/query", what, params=params, data={"q": influxql})
        else:
            resp = self._request("GET", "/query", what, params={**params, "q": influxql})
        return parse_answer(resp.text)

    def ensure_schema(self) -> None:
        """Create the database and retention policies once, when ``manage_schema`` is on
        (every public call does this first; a failure is retried on the next call)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            db = quote_ident(self.database)
            try:
                self.query(f"CREATE DATABASE {db}", what="CREATE DATABASE", modify=True)
                shown = self.query(f"SHOW RETENTION POLICIES ON {db}", what="SHOW RETENTION")
                existing = {
                    str(record.get("name"))
                    for series in shown.get(0, [])
                    for record in series.records()
                }
                statements = []
                for rp, duration, default in (
                    (RAW_RP, self.retention, True),
                    (ROLLUP_RP, self.rollup_retention, False),
                ):
                    verb = "ALTER" if rp in existing else "CREATE"
                    statement = f"{verb} RETENTION POLICY {quote_ident(rp)} ON {db}"
                    statement += f" DURATION {duration}"
                    statement += "" if rp in existing else " REPLICATION 1"
                    statements.append(statement + (" DEFAULT" if default else ""))
                self.query("; ".join(statements), what="retention policies", modify=True)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                raise StoreError(
                    f"setting up InfluxDB database {self.database!r} failed: {exc}. "
                    "InfluxDB 2.x and 3.x do not take CREATE DATABASE or RETENTION POLICY "
                    f"statements on the v1 API: map {self.database}/{RAW_RP} (default) and "
                    f"{self.database}/{ROLLUP_RP} to buckets there and set "
                    "EDGEWATCH_CLOUD_INFLUX_MANAGE_SCHEMA=false"
                ) from exc
            log.info(
                "InfluxDB database %s ready: retention %s (%s), %s (%s)",
                self.database,
                RAW_RP,
                self.retention,
                ROLLUP_RP,
                self.rollup_retention,
            )
            self._schema_ready = True

    # ---- writes ---------------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        self.ensure_schema()
        self._write_lines(
            [line_protocol(p) for p in points], self.batch_points, self._rp, what="points"
        )

    def _write_url(self, rp: str | None) -> tuple[httpx.URL, str]:
        """The URL of a write to ``rp`` and its path and query (the direct writes' target),
        built once: httpx parses a path and its query again on every request, a sixth of a
        write's CPU time (measured on a 40 kB body)."""
        cached = self._write_urls.get(rp)
        if cached is None:
            params = {"db": self.database, "precision": "ns"}
            if rp is not None:
                params["rp"] = rp
            url = self._client.build_request("POST", "/write", params=params).url
            cached = self._write_urls[rp] = (url, url.raw_path.decode("ascii"))
        return cached

    def _write_lines(self, lines: Sequence[str], batch: int, rp: str | None, what: str) -> None:
        """POST ``lines`` in chunks of ``batch``; the first failure raises, naming how many
        lines earlier chunks had stored."""
        for first in range(0, len(lines), batch):
            chunk = lines[first : first + batch]
            body = "\n".join(chunk).encode("utf-8")
            try:
                self._post_write(rp, body, f"a write of {len(chunk)} {what}")
            except StoreError as exc:
                with self._stats_lock:
                    self._stats["write_errors"] += 1
                if first:
                    raise type(exc)(
                        f"{exc} (the first {first} of {len(lines)} {what} were stored)"
                    ) from exc
                raise
            with self._stats_lock:
                self._stats["points_written"] += len(chunk)
                self._stats["write_batches"] += 1

    def _post_write(self, rp: str | None, body: bytes, what: str) -> None:
        url, target = self._write_url(rp)
        if self._direct is None:
            self._request("POST", url, what, content=body, headers=_WRITE_HEADERS)
            return
        with self._translated(what):
            answer = self._direct.post(target, body)
        if answer.status >= 300:
            resp = httpx.Response(answer.status, headers=answer.headers, content=answer.body)
            raise _status_error(resp, what)

    def ping(self) -> bool:
        try:
            resp = self._client.get("/ping")
        except httpx.HTTPError as exc:
            log.debug("InfluxDB ping failed: %s", exc)
            return False
        return resp.is_success

    # ---- queries --------------------------------------------------------------------------

    def feature_history(
        self,
        device: str,
        start: float,
        end: float,
        *,
        group: str | None = None,
        names: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[FeatureRow]:
        check_device(device)
        check_limit(limit)
        wanted: list[str] | None = None
        if names is not None:
            wanted = [n for n in dict.fromkeys(names) if is_feature(n)]
        if limit == 0 or wanted == []:
            return []
        self.ensure_schema()
        # A regular expression selects the feature fields only; InfluxDB leaves out rows in
        # which all selected fields are null, so LIMIT counts windows with features.
        columns = f"/{FEATURE_MARK}/" if wanted is None else ", ".join(map(quote_ident, wanted))
        where = [tag_is("device", device), time_range(to_ns(start), to_ns(end))]
        if group is not None:
            where.append(tag_is("group", group))
        # With a limit, each series gives its newest rows: these hold the newest overall.
        tail = "" if limit is None else f"ORDER BY time DESC LIMIT {int(limit)}"
        influxql = select(columns, '"features"', where, group_by="*", tail=tail)
        rows: list[tuple[int, str, FeatureRow]] = []
        for series in self.query(influxql, what="feature history").get(0, []):
            key, row_group = series_key(series.tags), series.tags.get("group", "")
            for ts, values in series.rows():
                features = feature_values(values, wanted)
                if features:
                    rows.append((ts, key, FeatureRow(ts / NS_PER_S, row_group, features)))
        rows.sort(key=lambda r: (r[0], r[1]))
        if limit is not None:
            rows = rows[-limit:]
        return [row for _, _, row in rows]

    def latest(self, device: str) -> dict[str, Latest]:
        check_device(device)
        self.ensure_schema()
        statements = [
            select(
                "*",
                quote_ident(m),
                [tag_is("device", device)],
                group_by="*",
                tail="ORDER BY time DESC LIMIT 1",
            )
            for m in MEASUREMENTS
        ]
        # JSON answers print a float such as 2.0 as 2: the field types say which are floats.
        statements.append("SHOW FIELD KEYS")
        results = self.query("; ".join(statements), what="latest points")
        floats = _float_fields(results.get(len(MEASUREMENTS), []))
        out: dict[str, Latest] = {}
        for sid, measurement in enumerate(MEASUREMENTS):
            best: tuple[int, str, Series, dict[str, Any]] | None = None
            for series in results.get(sid, []):
                key = series_key(series.tags)
                for ts, values in series.rows():
                    if values and (best is None or (ts, key) > best[:2]):
                        best = (ts, key, series, values)
            if best is not None:
                ts, _, series, values = best
                typed = floats.get(measurement, set())
                fields: dict[str, FieldValue] = {
                    name: float(v) if name in typed and type(v) is int else v
                    for name, v in values.items()
                }
                out[measurement] = Latest(ts / NS_PER_S, normalise_tags(series.tags), fields)
        return out

    def alarms(
        self, device: str, start: float, end: float, *, limit: int | None = 200
    ) -> list[AlarmEvent]:
        check_device(device)
        check_limit(limit)
        if limit == 0:
            return []
        self.ensure_schema()
        where = [tag_is("device", device), time_range(to_ns(start), to_ns(end))]
        # With a limit, each series (alarm name) gives its newest rows: these hold the
        # newest overall.
        tail = "ORDER BY time DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
        influxql = select("*", '"alarm"', where, group_by="*", tail=tail)
        rows: list[tuple[int, str, AlarmEvent]] = []
        for series in self.query(influxql, what="alarms").get(0, []):
            key = series_key(series.tags)
            for ts, values in series.rows():
                if values:
                    rows.append((ts, key, alarm_event(ts, series.tags, values)))
        rows.sort(key=lambda r: (-r[0], r[1]))
        return [event for _, _, event in rows[:limit]]

    def energy(
        self,
        device: str,
        start: float,
        end: float,
        interval_s: int,
        *,
        counters: Sequence[str] | None = None,
    ) -> list[EnergyInterval]:
        check_device(device)
        grid = interval_grid(start, end, interval_s)
        if not grid or (counters is not None and not counters):
            return []
        self.ensure_schema()
        # last(*) names its columns last_<field>; named counters get the same names.
        columns = (
            "last(*)"
            if counters is None
            else ", ".join(
                f"last({quote_ident(c)}) AS {quote_ident('last_' + c)}"
                for c in dict.fromkeys(counters)
            )
        )
        influxql = select(
            columns,
            '"energy"',
            [tag_is("device", device), time_range(grid.start - grid.step, grid.stop)],
            group_by=f"time({interval_s}s)",
            tail="fill(none)",
        )
        lasts: dict[int, dict[str, float]] = defaultdict(dict)
        for series in self.query(influxql, what="energy counters").get(0, []):
            for ts, values in series.rows():
                for column, value in values.items():
                    reading = numeric(value)
                    if reading is not None and column.startswith("last_"):
                        lasts[ts][column.removeprefix("last_")] = reading
        return energy_intervals(grid, lasts)

    def site_rollup(self, site: str, start: float, end: float, interval_s: int) -> list[SiteRollup]:
        grid = interval_grid(start, end, interval_s)
        if not grid:
            return []
        self.ensure_schema()
        retention_s = parse_duration_s(self.retention)
        if retention_s is not None and interval_s % ROLLUP_INTERVAL_S == 0:
            horizon = time.time_ns() - retention_s * NS_PER_S
            if grid.start < horizon:
                split = min(grid.stop, -(-horizon // grid.step) * grid.step)
                old = range(grid.start, split, grid.step)
                new = range(split, grid.stop, grid.step)
                log.debug("site %s: %d intervals from rollups, %d raw", site, len(old), len(new))
                return self._site_from_rollups(site, old) + self._site_from_raw(site, new)
        return self._site_from_raw(site, grid)

    def site_rollup_from_rollups(
        self, site: str, start: float, end: float, interval_s: int = ROLLUP_INTERVAL_S
    ) -> list[SiteRollup]:
        """:meth:`site_rollup` computed from :meth:`rollup`'s hourly aggregates only (what
        it does for ranges older than the raw retention); ``interval_s`` must be a
        multiple of :data:`ROLLUP_INTERVAL_S`."""
        if type(interval_s) is not int or interval_s % ROLLUP_INTERVAL_S:
            raise ValueError(f"interval_s {interval_s!r} is not a multiple of {ROLLUP_INTERVAL_S}")
        grid = interval_grid(start, end, interval_s)
        if not grid:
            return []
        self.ensure_schema()
        return self._site_from_rollups(site, grid)

    def _site_from_raw(self, site: str, grid: range) -> list[SiteRollup]:
        if not grid:
            return []
        step, interval_s = grid.step, grid.step // NS_PER_S
        site_is, in_grid = tag_is("site", site), time_range(grid.start, grid.stop)
        by_time = f"time({interval_s}s)"
        by_device = f'{by_time}, "gateway", "device"'
        statements = [
            select("count(*)", quote_ident(m), [site_is, in_grid], group_by=by_device, tail=FILL)
            for m in MEASUREMENTS
        ]
        statements += [
            select(
                f"last({quote_ident(ENERGY_COUNTER)})",
                '"energy"',
                [site_is, time_range(grid.start - step, grid.stop)],
                group_by=by_device,
                tail=FILL,
            ),
            select(
                'count("score") AS "windows", sum("score") AS "total", max("score") AS "maximum"',
                '"score"',
                [site_is, in_grid],
                group_by=by_time,
                tail=FILL,
            ),
            select(
                'count("score") AS "anomalous"',
                '"score"',
                [site_is, '"anomalous" = true', in_grid],
                group_by=by_time,
                tail=FILL,
            ),
            select(
                'count("state") AS "raised"',
                '"alarm"',
                [site_is, f'"state" = {quote_literal("raised")}', in_grid],
                group_by=by_time,
                tail=FILL,
            ),
        ]
        results = self.query("; ".join(statements), what="site totals")
        n = len(MEASUREMENTS)
        active: dict[int, set[DeviceKey]] = defaultdict(set)
        for sid in range(n):
            for series in results.get(sid, []):
                device = _device_key(series.tags)
                for ts, count in _series_max_count(series).items():
                    if count:
                        active[ts].add(device)
        energy: dict[DeviceKey, dict[int, float]] = defaultdict(dict)
        for series in results.get(n, []):
            lasts = energy[_device_key(series.tags)]
            for ts, values in series.rows():
                reading = numeric(values.get("last"))
                if reading is not None:
                    lasts[ts] = reading
        scores: dict[int, ScoreTotals] = {}
        for series in results.get(n + 1, []):
            for ts, values in series.rows():
                scores[ts] = ScoreTotals(
                    windows=int(values.get("windows", 0)),
                    total=float(values.get("total", 0.0)),
                    maximum=numeric(values.get("maximum")),
                )
        for series in results.get(n + 2, []):
            for ts, values in series.rows():
                scores.setdefault(ts, ScoreTotals()).anomalous = int(values.get("anomalous", 0))
        alarms = {
            ts: int(values.get("raised", 0))
            for series in results.get(n + 3, [])
            for ts, values in series.rows()
        }
        return site_rollups(grid, active=active, energy=energy, scores=scores, alarms=alarms)

    def _site_from_rollups(self, site: str, grid: range) -> list[SiteRollup]:
        if not grid:
            return []
        step, interval_s = grid.step, grid.step // NS_PER_S
        suffix = interval_name(ROLLUP_INTERVAL_S)
        rp = quote_ident(ROLLUP_RP)
        site_is, in_grid = tag_is("site", site), time_range(grid.start, grid.stop)
        by_time = f"time({interval_s}s)"
        statements = [
            select(
                '"points"',
                f'{rp}."activity_{suffix}"',
                [site_is, in_grid],
                group_by='"gateway", "device"',
            ),
            select(
                quote_ident(ENERGY_COUNTER),
                f'{rp}."energy_{suffix}"',
                [site_is, time_range(grid.start - step, grid.stop)],
                group_by='"gateway", "device"',
            ),
            select(
                'sum("windows") AS "windows", sum("anomalous_windows") AS "anomalous",'
                ' sum("score_sum") AS "total", max("score_max") AS "maximum"',
                f'{rp}."score_{suffix}"',
                [site_is, in_grid],
                group_by=by_time,
                tail=FILL,
            ),
            select(
                'sum("raised") AS "raised"',
                f'{rp}."alarm_{suffix}"',
                [site_is, in_grid],
                group_by=by_time,
                tail=FILL,
            ),
        ]
        results = self.query("; ".join(statements), what="site totals from rollups")
        active: dict[int, set[DeviceKey]] = defaultdict(set)
        for series in results.get(0, []):
            for ts, values in series.rows():
                if values.get("points"):
                    active[ts - ts % step].add(_device_key(series.tags))
        energy: dict[DeviceKey, dict[int, float]] = defaultdict(dict)
        for series in results.get(1, []):
            lasts = energy[_device_key(series.tags)]
            for ts, values in series.rows():  # oldest first: the hour that ends last wins
                reading = numeric(values.get(ENERGY_COUNTER))
                if reading is not None:
                    lasts[ts - ts % step] = reading
        scores: dict[int, ScoreTotals] = {}
        for series in results.get(2, []):
            for ts, values in series.rows():
                scores[ts] = ScoreTotals(
                    windows=int(values.get("windows", 0)),
                    anomalous=int(values.get("anomalous", 0)),
                    total=float(values.get("total", 0.0)),
                    maximum=numeric(values.get("maximum")),
                )
        alarms = {
            ts: int(values.get("raised", 0))
            for series in results.get(3, [])
            for ts, values in series.rows()
        }
        return site_rollups(grid, active=active, energy=energy, scores=scores, alarms=alarms)

    def rollup(self, start: float, end: float, interval_s: int = ROLLUP_INTERVAL_S) -> int:
        """Aggregate the raw points of ``[start, end)`` (whole intervals, as in
        :meth:`site_rollup`) per device and interval into :data:`ROLLUP_RP`; returns how
        many aggregate points were written. Idempotent: running it again over the same
        range rewrites the same points (with whatever arrived late).

        Measurements (``<suffix>`` = :func:`interval_name`, ``1h`` by default), tagged
        with the tenant tags, stamped with the interval's start:

        - ``activity_<suffix>``: ``points`` (int), the device's points in the interval
          (per measurement, the count of its most frequent field);
        - ``energy_<suffix>``: each numeric counter's last reading;
        - ``score_<suffix>``: ``windows``, ``anomalous_windows`` (int), ``score_sum``,
          ``score_max`` (float);
        - ``alarm_<suffix>``: ``raised`` (int), alarms raised.
        """
        grid = interval_grid(start, end, interval_s)
        if not grid:
            return 0
        self.ensure_schema()
        in_grid = [time_range(grid.start, grid.stop)]
        by = f"time({interval_s}s), {', '.join(map(quote_ident, TENANT_TAGS))}"
        statements = [
            select("count(*)", quote_ident(m), in_grid, group_by=by, tail=FILL)
            for m in MEASUREMENTS
        ]
        statements += [
            select("last(*)", '"energy"', in_grid, group_by=by, tail=FILL),
            select(
                'count("score") AS "windows", sum("score") AS "score_sum",'
                ' max("score") AS "score_max"',
                '"score"',
                in_grid,
                group_by=by,
                tail=FILL,
            ),
            select(
                'count("score") AS "anomalous_windows"',
                '"score"',
                ['"anomalous" = true', *in_grid],
                group_by=by,
                tail=FILL,
            ),
            select(
                'count("state") AS "raised"',
                '"alarm"',
                [f'"state" = {quote_literal("raised")}', *in_grid],
                group_by=by,
                tail=FILL,
            ),
        ]
        results = self.query("; ".join(statements), what="the rollup's aggregates")
        suffix = interval_name(interval_s)
        n = len(MEASUREMENTS)
        out: dict[tuple[str, tuple[str, ...], int], dict[str, FieldValue]] = {}

        def fields(kind: str, series: Series, ts: int) -> dict[str, FieldValue]:
            tags = tuple(series.tags.get(t, "") for t in TENANT_TAGS)
            return out.setdefault((f"{kind}_{suffix}", tags, ts), {})

        for sid in range(n):
            for series in results.get(sid, []):
                for ts, count in _series_max_count(series).items():
                    if count:
                        activity = fields("activity", series, ts)
                        activity["points"] = int(activity.get("points", 0)) + count
        for series in results.get(n, []):
            for ts, values in series.rows():
                counters = {
                    column.removeprefix("last_"): reading
                    for column, value in values.items()
                    if column.startswith("last_") and (reading := numeric(value)) is not None
                }
                if counters:
                    fields("energy", series, ts).update(counters)
        for series in results.get(n + 1, []):
            for ts, values in series.rows():
                fields("score", series, ts).update(
                    windows=int(values.get("windows", 0)),
                    anomalous_windows=0,
                    score_sum=float(values.get("score_sum", 0.0)),
                    score_max=float(values.get("score_max", 0.0)),
                )
        for series in results.get(n + 2, []):
            for ts, values in series.rows():
                score = fields("score", series, ts)
                if "windows" in score:  # anomalous windows without a score are not windows
                    score["anomalous_windows"] = int(values.get("anomalous_windows", 0))
        for series in results.get(n + 3, []):
            for ts, values in series.rows():
                fields("alarm", series, ts)["raised"] = int(values.get("raised", 0))
        lines = list(_rollup_lines(out))
        if lines:
            self._write_lines(lines, self.batch_points, ROLLUP_RP, what="rollup points")
        log.info(
            "rollup of %d intervals of %d s: %d aggregate points", len(grid), interval_s, len(lines)
        )
        return len(lines)

    def count(self, measurement: str, *, gateway: str | None = None) -> int:
        """Points of ``measurement``: per series, the count of its most frequent field
        (InfluxQL counts fields, not points), summed over series. Exact as long as the
        points of one series share a field, as every EdgeWatch record kind does."""
        if measurement not in MEASUREMENTS:
            raise ValueError(f"measurement {measurement!r} is not one of {MEASUREMENTS}")
        self.ensure_schema()
        where = [] if gateway is None else [tag_is("gateway", gateway)]
        influxql = select("count(*)", quote_ident(measurement), where, group_by="*")
        return sum(
            sum(_series_max_count(series).values())
            for series in self.query(influxql, what="a count").get(0, [])
        )

    # ---- export (backups) -----------------------------------------------------------------

    def time_span(self) -> tuple[int, int] | None:
        self.ensure_schema()
        statements = [
            select("*", quote_ident(m), tail=f"ORDER BY time {order} LIMIT 1")
            for m in MEASUREMENTS
            for order in ("ASC", "DESC")
        ]
        results = self.query("; ".join(statements), what="the time span")
        times = [
            ts
            for sid in range(len(statements))
            for series in results.get(sid, [])
            for ts, _ in series.rows()
        ]
        return (min(times), max(times)) if times else None

    def export(self, start_ns: int, stop_ns: int) -> Iterator[Point]:
        """See :meth:`TimeSeriesStore.export`: one chunked query per measurement, read chunk
        by chunk as InfluxDB sends it (at most :data:`CHUNK_POINTS` rows of one series in
        memory)."""
        self.ensure_schema()
        # JSON answers print a float such as 2.0 as 2: the field types say which are floats.
        shown = self.query("SHOW FIELD KEYS", what="the field types").get(0, [])
        floats = _float_fields(shown)
        for measurement in MEASUREMENTS:
            typed = floats.get(measurement, set())
            influxql = select(
                "*", quote_ident(measurement), [time_range(start_ns, stop_ns)], group_by="*"
            )
            for results in self._stream(influxql, what=f"an export of {measurement} points"):
                for series in results.get(0, []):
                    tags = normalise_tags(series.tags)
                    for ts, values in series.rows():
                        if values:
                            fields: dict[str, FieldValue] = {
                                name: float(v) if name in typed and type(v) is int else v
                                for name, v in values.items()
                            }
                            yield Point(measurement, ts, tags, fields)

    def _stream(self, influxql: str, *, what: str) -> Iterator[Results]:
        """One statement's chunked answer, each chunk parsed as it arrives."""
        params = {"db": self.database, "epoch": "ns", "chunked": "true", "q": influxql}
        params["chunk_size"] = str(CHUNK_POINTS)
        if self._rp is not None:
            params["rp"] = self._rp
        with self._translated(what), self._client.stream("GET", "/query", params=params) as resp:
            if resp.status_code >= 300:
                resp.read()
                raise _status_error(resp, what)
            for line in resp.iter_lines():
                if line.strip():
                    yield parse_answer(line)

    # ---- housekeeping ---------------------------------------------------------------------

    def stats(self) -> StoreStats:
        with self._stats_lock:
            return StoreStats(
                points_written=self._stats["points_written"],
                write_batches=self._stats["write_batches"],
                write_errors=self._stats["write_errors"],
            )

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self._client.close()


def _float_fields(shown: Iterable[Series]) -> dict[str, set[str]]:
    """Measurement → its fields of type float only, from ``SHOW FIELD KEYS``."""
    types: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for series in shown:
        for record in series.records():
            types[series.name][str(record.get("fieldKey"))].add(str(record.get("fieldType")))
    return {
        measurement: {name for name, kinds in fields.items() if kinds == {"float"}}
        for measurement, fields in types.items()
    }


def _device_key(tags: Mapping[str, str]) -> DeviceKey:
    return (tags.get("gateway", ""), tags.get("device", ""))


def _rollup_lines(
    points: Mapping[tuple[str, tuple[str, ...], int], Mapping[str, FieldValue]],
) -> Iterable[str]:
    for (measurement, tags, ts), values in points.items():
        if not values:
            continue
        yield make_line(measurement, dict(zip(TENANT_TAGS, tags, strict=True)), values, ts)
