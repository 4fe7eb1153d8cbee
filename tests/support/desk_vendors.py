"""Local stand-ins for the service desks' HTTP APIs, for the desk adapters' tests.

Each fake is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a thread,
used as a context manager::

    with FakeServiceNow() as desk:         # FakeJira(), FakeZendesk(), FakeWebhookReceiver()
        desk.url                           # base URL
        desk.inject(applied_then_timeout(hang_s=0.6, method="POST"))
        ...                                # the adapter's requests
        desk.requests                      # every request received, in order
        desk.incidents_for(order_id)       # what the vendor stores

What they implement, as the vendors document it (only the endpoints the adapters use):

- :class:`FakeServiceNow`: Table API on ``incident`` with basic auth; create, encoded-query
  list (``field=value``, ``ORDERBY``/``ORDERBYDESC``; ``sysparm_limit``,
  ``sysparm_fields``), get, PATCH (work notes kept as a journal) and the incident data
  policy that makes ``close_code``/``close_notes`` mandatory for Resolved and Closed (403).
- :class:`FakeJira`: ``POST /rest/servicedeskapi/request`` (checks the service desk,
  request type and that every field is on the request type), JQL search by label on
  ``/rest/api/2/search/jql`` (and the legacy ``/rest/api/2/search``, which answers 410 like
  Jira Cloud unless ``legacy_search=True``), comments, basic auth email:API token.
- :class:`FakeZendesk`: tickets create/list by ``external_id``/show/update with basic auth
  ``{email}/token:{token}``, and ``Idempotency-Key`` on create: the same key with the same
  body replays the stored answer (``x-idempotency-lookup: hit``) for ``idempotency_ttl_s``;
  the same key with another body is refused (400 ``IdempotentRequestError``).
- :class:`FakeWebhookReceiver`: verifies Standard Webhooks signatures (its own code, not
  :mod:`cloud.desk.signing`, so a shared mistake cannot hide), answers 401 to a bad one,
  records each ``webhook-id`` once and counts duplicates.

Lookups can lag behind creates (``search_lag_s``), as Jira's search index does.

Scripted faults (:meth:`FakeVendor.inject`) apply, in order, to the next requests they
match (``method``, ``path_contains``): answer a status (429 with ``Retry-After``, 5xx),
hang longer than the client's timeout, answer a garbled 200, or carry the request out
first and then hang or fail (``apply=True``: the ticket exists although the client saw no
success, the case that makes naive retries duplicate tickets). :meth:`FakeVendor.flaky`
adds seeded random faults with given probabilities, for long runs. Every request is
recorded before any fault (method, path, query, lower-cased headers, body, parsed JSON).
All state is guarded by one lock per server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.server
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK = "127.0.0.1"
# Test credentials of the fakes (the adapters' tests configure the same ones).
SERVICENOW_USER, SERVICENOW_PASSWORD = "edgewatch", "sn-password"
JIRA_EMAIL, JIRA_TOKEN = "bot@example.com", "jira-token"
ZENDESK_EMAIL, ZENDESK_TOKEN = "agent@example.com", "zd-token"

# ---- requests, answers, faults ---------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: bytes
    json: Any
    """The parsed JSON body, or None."""
    at: float
    """``time.monotonic()`` on arrival."""

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Answer:
    status: int
    body: Any = None
    """JSON-able, or bytes sent as they are."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """What the server does with one request instead of (``apply=False``) or after
    (``apply=True``) carrying it out."""

    status: int | None = None
    """Answer this status (503 when only ``hang_s`` is set and the request is not applied)."""
    retry_after: str | None = None
    hang_s: float = 0.0
    """Wait this long before answering: longer than the client's timeout is a timeout."""
    apply: bool = False
    method: str | None = None
    path_contains: str | None = None
    body: bytes | None = None
    """Send this body with ``status`` (default: a JSON error)."""

    def matches(self, request: Received) -> bool:
        return (self.method is None or request.method == self.method) and (
            self.path_contains is None or self.path_contains in request.path
        )


def rate_limited(retry_after: str = "1", **match: Any) -> Fault:
    return Fault(status=429, retry_after=retry_after, **match)


def server_error(status: int = 503, **match: Any) -> Fault:
    return Fault(status=status, **match)


def timeout(hang_s: float = 1.0, **match: Any) -> Fault:
    """No effect, no answer in time."""
    return Fault(hang_s=hang_s, **match)


def applied_then_timeout(hang_s: float = 1.0, **match: Any) -> Fault:
    """The request takes effect; its answer comes too late."""
    return Fault(hang_s=hang_s, apply=True, **match)


def garbled(body: bytes = b"<html><body>Instance hibernating</body></html>", **match: Any) -> Fault:
    """A 200 whose body is not the vendor's JSON (a hibernating ServiceNow instance)."""
    return Fault(status=200, body=body, **match)


def applied_then_error(status: int = 502, **match: Any) -> Fault:
    """The request takes effect; the client gets a 5xx (a proxy timing out, say)."""
    return Fault(status=status, apply=True, **match)


@dataclass(frozen=True)
class Flaky:
    """Seeded random faults; each probability is per request, checked in this order."""

    seed: int
    rate_limit: float = 0.0
    error: float = 0.0
    applied_error: float = 0.0
    timeout: float = 0.0
    applied_timeout: float = 0.0
    hang_s: float = 1.0
    retry_after: str = "0"

    def roll(self, rng: random.Random) -> Fault | None:
        draw = rng.random()
        for probability, fault in (
            (self.rate_limit, Fault(status=429, retry_after=self.retry_after)),
            (self.error, Fault(status=503)),
            (self.applied_error, Fault(status=502, apply=True)),
            (self.timeout, Fault(hang_s=self.hang_s)),
            (self.applied_timeout, Fault(hang_s=self.hang_s, apply=True)),
        ):
            if draw < probability:
                return fault
            draw -= probability
        return None


def _basic_credentials(request: Received) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


# ---- the server -----------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of connections must not meet a full listen backlog
    vendor: FakeVendor


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _any(self) -> None:
        self.server.vendor._dispatch(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any


class FakeVendor:
    """The common part: lifecycle, recording, faults, dispatch. Subclasses implement
    :meth:`authorized` and :meth:`handle` (called with the lock held)."""

    name: ClassVar[str] = "vendor"

    def __init__(self, *, search_lag_s: float = 0.0) -> None:
        self.search_lag_s = search_lag_s
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._faults: list[Fault] = []
        self._flaky: Flaky | None = None
        self._rng = random.Random(0)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.faults_applied = 0

    # -- lifecycle

    def start(self) -> Self:
        server = _Server((LOOPBACK, 0), _Handler)
        server.vendor = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- scripting

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests it matches."""
        with self._lock:
            self._faults.extend([fault] * times)

    def flaky(self, flaky: Flaky | None) -> None:
        """Random faults from now on (None: off)."""
        with self._lock:
            self._flaky = flaky
            self._rng = random.Random(flaky.seed if flaky else 0)

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- observation

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def requests_for(
        self, method: str | None = None, path_contains: str | None = None
    ) -> list[Received]:
        return [
            r for r in self.requests if Fault(method=method, path_contains=path_contains).matches(r)
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- vendor behaviour

    def authorized(self, request: Received) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Answer:
        return Answer(401, {"error": "unauthorized"})

    def handle(self, request: Received) -> Answer:
        raise NotImplementedError

    def _visible(self, created_at: float) -> bool:
        return time.monotonic() - created_at >= self.search_lag_s

    # -- dispatch

    def _dispatch(self, handler: _Handler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        if len(body) < length:  # the client died mid-request: no HTTP server passes it on
            handler.close_connection = True
            return
        try:
            document = json.loads(body) if body else None
        except ValueError:
            document = None
        parts = urlsplit(handler.path)
        request = Received(
            method=handler.command,
            path=unquote(parts.path),
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
            json=document,
            at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(request)
            fault = next((f for f in self._faults if f.matches(request)), None)
            if fault is not None:
                self._faults.remove(fault)
            elif self._flaky is not None:
                fault = self._flaky.roll(self._rng)
            if fault is not None:
                self.faults_applied += 1
            answer: Answer | None = None
            if fault is None or fault.apply:
                answer = self.handle(request) if self.authorized(request) else self.unauthorized()
        if fault is not None:
            if fault.hang_s:
                self._stopping.wait(fault.hang_s)
            if fault.status is not None or answer is None:
                headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
                content: Any = fault.body if fault.body is not None else {"error": "injected"}
                answer = Answer(fault.status or 503, content, headers)
        assert answer is not None
        self._send(handler, answer)

    @staticmethod
    def _send(handler: _Handler, answer: Answer) -> None:
        payload = (
            answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        )
        try:
            handler.send_response(answer.status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
        except OSError:  # the client gave up (a timeout): nobody is listening
            handler.close_connection = True


def _fields(record: Mapping[str, Any], fields: str | None) -> dict[str, Any]:
    if not fields:
        return dict(record)
    wanted = [name.strip() for name in fields.split(",")]
    return {name: record.get(name, "") for name in wanted}


# ---- ServiceNow ---------------------------------------------------------------------------------


class FakeServiceNow(FakeVendor):
    """The Table API on ``incident``."""

    name = "servicenow"
    TABLE = "/api/now/table/incident"
    JOURNAL_FIELDS = ("work_notes", "comments")
    CLOSING_STATES = ("6", "7")

    def __init__(
        self, user: str = SERVICENOW_USER, password: str = SERVICENOW_PASSWORD, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.user, self.password = user, password
        self._incidents: dict[str, dict[str, Any]] = {}
        self._created_at: dict[str, float] = {}
        self._by_correlation: dict[str, list[str]] = {}

    def authorized(self, request: Received) -> bool:
        return _basic_credentials(request) == (self.user, self.password)

    def unauthorized(self) -> Answer:
        return Answer(
            401,
            {
                "error": {
                    "message": "User Not Authenticated",
                    "detail": "Required to provide Auth information",
                },
                "status": "failure",
            },
        )

    @property
    def incidents(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(record) for record in self._incidents.values()]

    def incidents_for(self, order_id: str) -> list[dict[str, Any]]:
        return [r for r in self.incidents if r.get("correlation_id") == order_id]

    @staticmethod
    def _failure(status: int, message: str, detail: str = "") -> Answer:
        return Answer(
            status, {"error": {"message": message, "detail": detail}, "status": "failure"}
        )

    def handle(self, request: Received) -> Answer:
        fields = request.param("sysparm_fields")
        if request.path == self.TABLE:
            if request.method == "GET":
                return self._list(request, fields)
            if request.method == "POST":
                return self._create(request, fields)
            return self._failure(405, "Method not Supported")
        if request.path.startswith(self.TABLE + "/"):
            sys_id = request.path.removeprefix(self.TABLE + "/")
            record = self._incidents.get(sys_id)
            if record is None:
                return self._failure(
                    404,
                    "No Record found",
                    "Record doesn't exist or ACL restricts the record retrieval",
                )
            if request.method == "GET":
                return Answer(200, {"result": _fields(record, fields)})
            if request.method in ("PATCH", "PUT"):
                return self._update(request, record, fields)
            return self._failure(405, "Method not Supported")
        return self._failure(400, "Invalid table", request.path)

    def _list(self, request: Received, fields: str | None) -> Answer:
        conditions: list[tuple[str, str]] = []
        order: tuple[str, bool] | None = None
        for part in (request.param("sysparm_query") or "").split("^"):
            if not part:
                continue
            if part.startswith("ORDERBYDESC"):
                order = (part.removeprefix("ORDERBYDESC"), True)
            elif part.startswith("ORDERBY"):
                order = (part.removeprefix("ORDERBY"), False)
            elif "=" in part and "!" not in part:
                name, _, value = part.partition("=")
                conditions.append((name, value))
            else:
                return self._failure(400, "Unsupported query in the fake", part)
        correlated = [value for name, value in conditions if name == "correlation_id"]
        candidates = (
            [self._incidents[s] for s in self._by_correlation.get(correlated[0], [])]
            if correlated
            else list(self._incidents.values())
        )
        records = [
            r
            for r in candidates
            if self._visible(self._created_at[r["sys_id"]])
            and all(str(r.get(name, "")) == value for name, value in conditions)
        ]
        if order is not None:
            records.sort(key=lambda r: str(r.get(order[0], "")), reverse=order[1])
        limit = request.param("sysparm_limit")
        if limit is not None:
            records = records[: int(limit)]
        return Answer(200, {"result": [_fields(r, fields) for r in records]})

    def _create(self, request: Received, fields: str | None) -> Answer:
        if not isinstance(request.json, dict):
            return self._failure(
                400, "Exception while reading request", "the body is not a JSON object"
            )
        sys_id = uuid.uuid4().hex
        number = f"INC{10_001 + len(self._incidents):07d}"
        record: dict[str, Any] = {"state": "1", "impact": "3", "urgency": "3"}
        record.update({k: str(v) for k, v in request.json.items() if k not in self.JOURNAL_FIELDS})
        record.update(
            sys_id=sys_id,
            number=number,
            sys_created_on=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            journal=[str(request.json[k]) for k in self.JOURNAL_FIELDS if request.json.get(k)],
        )
        self._incidents[sys_id] = record
        self._created_at[sys_id] = time.monotonic()
        self._by_correlation.setdefault(record.get("correlation_id", ""), []).append(sys_id)
        return Answer(
            201, {"result": _fields(record, fields)}, {"location": f"{self.TABLE}/{sys_id}"}
        )

    def _update(self, request: Received, record: dict[str, Any], fields: str | None) -> Answer:
        if not isinstance(request.json, dict):
            return self._failure(
                400, "Exception while reading request", "the body is not a JSON object"
            )
        change = {k: str(v) for k, v in request.json.items() if k not in self.JOURNAL_FIELDS}
        after = {**record, **change}
        if after.get("state") in self.CLOSING_STATES and not (
            after.get("close_code") and after.get("close_notes")
        ):
            return self._failure(
                403,
                "Operation Failed",
                "Data Policy Exception: The following fields are mandatory: "
                "Resolution code, Resolution notes",
            )
        if change.get("correlation_id", record.get("correlation_id")) != record.get(
            "correlation_id"
        ):
            self._by_correlation[record.get("correlation_id", "")].remove(record["sys_id"])
            self._by_correlation.setdefault(change["correlation_id"], []).append(record["sys_id"])
        record.update(change)
        record["journal"] = record["journal"] + [
            str(request.json[k]) for k in self.JOURNAL_FIELDS if request.json.get(k)
        ]
        return Answer(200, {"result": _fields(record, fields)})


# ---- Jira Service Management --------------------------------------------------------------------


class FakeJira(FakeVendor):
    """JSM customer requests, JQL search by label, comments."""

    name = "jira"
    CREATE = "/rest/servicedeskapi/request"
    SEARCH = "/rest/api/2/search/jql"
    LEGACY_SEARCH = "/rest/api/2/search"
    _JQL = re.compile(r'^\s*labels\s*=\s*"([^"]+)"\s*(?:ORDER BY created (ASC|DESC))?\s*$', re.I)
    _COMMENT = re.compile(r"^/rest/api/2/issue/([^/]+)/comment$")
    _ISSUE = re.compile(r"^/rest/api/2/issue/([^/]+)$")

    def __init__(
        self,
        email: str = JIRA_EMAIL,
        api_token: str = JIRA_TOKEN,
        *,
        service_desk_id: str = "1",
        request_type_id: str = "10",
        project_key: str = "SD",
        request_type_fields: tuple[str, ...] = ("summary", "description", "labels"),
        legacy_search: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.email, self.api_token = email, api_token
        self.service_desk_id, self.request_type_id = service_desk_id, request_type_id
        self.project_key = project_key
        self.request_type_fields = request_type_fields
        self.legacy_search = legacy_search
        self._issues: dict[str, dict[str, Any]] = {}
        self._created_at: dict[str, float] = {}
        self._by_label: dict[str, list[str]] = {}

    def authorized(self, request: Received) -> bool:
        return _basic_credentials(request) == (self.email, self.api_token)

    def unauthorized(self) -> Answer:
        return Answer(401, {"errorMessages": ["You are not authenticated."], "errors": {}})

    @property
    def issues(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(issue) for issue in self._issues.values()]

    def issues_for(self, order_id: str) -> list[dict[str, Any]]:
        return [i for i in self.issues if f"ew-{order_id}" in i["labels"]]

    @staticmethod
    def _errors(status: int, *messages: str) -> Answer:
        return Answer(status, {"errorMessages": list(messages), "errors": {}})

    def handle(self, request: Received) -> Answer:
        path = request.path
        if path == self.CREATE and request.method == "POST":
            return self._create(request)
        if path == self.SEARCH and request.method == "GET":
            return self._search(request, legacy=False)
        if path == self.LEGACY_SEARCH and request.method == "GET":
            if not self.legacy_search:
                return self._errors(
                    410,
                    "The requested API has been removed. "
                    "Please migrate to the /rest/api/3/search/jql API.",
                )
            return self._search(request, legacy=True)
        if (match := self._COMMENT.match(path)) and request.method == "POST":
            return self._comment(request, match.group(1))
        if (match := self._ISSUE.match(path)) and request.method == "GET":
            issue = self._issues.get(match.group(1))
            if issue is None:
                return self._errors(
                    404, "Issue does not exist or you do not have permission to see it."
                )
            return Answer(
                200,
                {
                    "id": issue["id"],
                    "key": issue["key"],
                    "fields": {"labels": issue["labels"], "summary": issue["summary"]},
                },
            )
        return self._errors(404, f"No route for {request.method} {path} in the fake")

    def _create(self, request: Received) -> Answer:
        doc = request.json
        if not isinstance(doc, dict):
            return Answer(400, {"errorMessage": "Invalid request payload", "i18nErrorMessage": {}})
        if str(doc.get("serviceDeskId")) != self.service_desk_id:
            return Answer(404, {"errorMessage": "The service project does not exist."})
        if str(doc.get("requestTypeId")) != self.request_type_id:
            return Answer(
                400, {"errorMessage": "The request type does not exist in this service project."}
            )
        values = doc.get("requestFieldValues")
        if not isinstance(values, dict):
            return Answer(400, {"errorMessage": "requestFieldValues is required"})
        for name in values:
            if name not in self.request_type_fields:
                return Answer(
                    400, {"errorMessage": f"Field '{name}' is not valid for this request type."}
                )
        summary = values.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            return Answer(
                400, {"errorMessage": "Summary: You must specify a summary of the issue."}
            )
        labels = values.get("labels", [])
        if not isinstance(labels, list) or not all(
            isinstance(label, str) and label and " " not in label for label in labels
        ):
            return Answer(400, {"errorMessage": "Labels: a label cannot contain spaces."})
        number = len(self._issues) + 1
        key = f"{self.project_key}-{number}"
        issue = {
            "id": str(10_000 + number),
            "key": key,
            "summary": summary,
            "description": values.get("description", ""),
            "labels": list(labels),
            "status": "Waiting for support",
            "comments": [],
        }
        self._issues[key] = issue
        self._created_at[key] = time.monotonic()
        for label in issue["labels"]:
            self._by_label.setdefault(label, []).append(key)
        return Answer(
            201,
            {
                "issueId": issue["id"],
                "issueKey": key,
                "requestTypeId": self.request_type_id,
                "serviceDeskId": self.service_desk_id,
                "currentStatus": {"status": issue["status"]},
                "_links": {
                    "web": f"{self.url}/servicedesk/customer/portal/{self.service_desk_id}/{key}"
                },
            },
        )

    def _search(self, request: Received, *, legacy: bool) -> Answer:
        match = self._JQL.match(request.param("jql") or "")
        if match is None:
            return self._errors(
                400,
                'Error in the JQL Query (the fake knows labels = "x" only): '
                f"{request.param('jql')!r}",
            )
        label, direction = match.group(1), (match.group(2) or "ASC").upper()
        found = [
            self._issues[key]
            for key in self._by_label.get(label, [])
            if self._visible(self._created_at[key])
        ]
        found.sort(key=lambda i: int(i["id"]), reverse=direction == "DESC")
        limit = int(request.param("maxResults") or 50)
        issues = [
            {"id": i["id"], "key": i["key"], "fields": {"summary": i["summary"]}}
            for i in found[:limit]
        ]
        if legacy:
            return Answer(
                200, {"startAt": 0, "maxResults": limit, "total": len(found), "issues": issues}
            )
        return Answer(200, {"issues": issues, "isLast": len(found) <= limit})

    def _comment(self, request: Received, key: str) -> Answer:
        issue = self._issues.get(key)
        if issue is None:
            return self._errors(
                404, "Issue does not exist or you do not have permission to see it."
            )
        doc = request.json
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("body"), str)
            or not doc["body"].strip()
        ):
            return Answer(
                400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}}
            )
        comment_id = str(100_000 + sum(len(i["comments"]) for i in self._issues.values()))
        issue["comments"].append(doc["body"])
        return Answer(201, {"id": comment_id, "body": doc["body"]})


# ---- Zendesk ------------------------------------------------------------------------------------


class FakeZendesk(FakeVendor):
    """Support API tickets with Idempotency-Key on create."""

    name = "zendesk"
    TICKETS = "/api/v2/tickets.json"
    _TICKET = re.compile(r"^/api/v2/tickets/(\d+)\.json$")
    PRIORITIES = ("urgent", "high", "normal", "low")
    STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
    TYPES = ("problem", "incident", "question", "task")

    def __init__(
        self,
        email: str = ZENDESK_EMAIL,
        api_token: str = ZENDESK_TOKEN,
        *,
        idempotency_ttl_s: float = 7200.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.email, self.api_token = email, api_token
        self.idempotency_ttl_s = idempotency_ttl_s
        self._tickets: dict[int, dict[str, Any]] = {}
        self._created_at: dict[int, float] = {}
        self._by_external_id: dict[str, list[int]] = {}
        self._keys: dict[str, tuple[str, Answer, float]] = {}
        self.replays = 0

    def authorized(self, request: Received) -> bool:
        return _basic_credentials(request) == (f"{self.email}/token", self.api_token)

    def unauthorized(self) -> Answer:
        return Answer(401, {"error": "Couldn't authenticate you"})

    @property
    def tickets(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self._tickets.values()]

    def tickets_for(self, order_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tickets if t.get("external_id") == order_id]

    def _view(self, ticket: Mapping[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in ticket.items() if k != "comments"}
        view["url"] = f"{self.url}/api/v2/tickets/{ticket['id']}.json"
        return view

    @staticmethod
    def _invalid(field_name: str, why: str) -> Answer:
        return Answer(
            422,
            {
                "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": {field_name: [{"description": why}]},
            },
        )

    def handle(self, request: Received) -> Answer:
        if request.path == self.TICKETS:
            if request.method == "GET":
                wanted = request.param("external_id")
                ids = self._tickets if wanted is None else self._by_external_id.get(wanted, [])
                found = [
                    self._view(self._tickets[tid])
                    for tid in sorted(ids)
                    if self._visible(self._created_at[tid])
                ]
                return Answer(
                    200,
                    {
                        "tickets": found,
                        "count": len(found),
                        "next_page": None,
                        "previous_page": None,
                    },
                )
            if request.method == "POST":
                return self._create_once(request)
        if match := self._TICKET.match(request.path):
            ticket = self._tickets.get(int(match.group(1)))
            if ticket is None:
                return Answer(404, {"error": "RecordNotFound", "description": "Not found"})
            if request.method == "GET":
                return Answer(200, {"ticket": self._view(ticket)})
            if request.method == "PUT":
                return self._update(request, ticket)
        return Answer(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def _create_once(self, request: Received) -> Answer:
        key = request.headers.get("idempotency-key")
        digest = hashlib.sha256(request.body).hexdigest()
        now = time.monotonic()
        if key is not None:
            stored = self._keys.get(key)
            if stored is not None and now - stored[2] < self.idempotency_ttl_s:
                if stored[0] != digest:
                    return Answer(
                        400,
                        {
                            "error": "IdempotentRequestError",
                            "description": "Request parameters do not match the original "
                            "request for this idempotency key",
                        },
                    )
                self.replays += 1
                replay = stored[1]
                return Answer(
                    replay.status, replay.body, {**replay.headers, "x-idempotency-lookup": "hit"}
                )
        answer = self._create(request)
        if key is not None and answer.status < 500:
            self._keys[key] = (digest, answer, now)
            answer.headers["x-idempotency-lookup"] = "miss"
        return answer

    def _create(self, request: Received) -> Answer:
        doc = request.json
        fields = doc.get("ticket") if isinstance(doc, dict) else None
        if not isinstance(fields, dict):
            return Answer(400, {"error": "InvalidValue", "description": "ticket is required"})
        comment = fields.get("comment")
        if not isinstance(comment, dict) or not str(comment.get("body", "")).strip():
            return self._invalid("description", "Description: cannot be blank")
        problem = self._check(fields)
        if problem is not None:
            return problem
        ticket_id = len(self._tickets) + 1
        ticket = {
            "id": ticket_id,
            "subject": fields.get("subject", ""),
            "description": comment["body"],
            "priority": fields.get("priority"),
            "status": fields.get("status", "new"),
            "type": fields.get("type"),
            "due_at": fields.get("due_at"),
            "external_id": fields.get("external_id"),
            "tags": fields.get("tags", []),
            "group_id": fields.get("group_id"),
            "comments": [{"body": comment["body"], "public": comment.get("public", True)}],
        }
        self._tickets[ticket_id] = ticket
        self._created_at[ticket_id] = time.monotonic()
        if ticket["external_id"] is not None:
            self._by_external_id.setdefault(str(ticket["external_id"]), []).append(ticket_id)
        return Answer(
            201,
            {"ticket": self._view(ticket)},
            {"location": f"{self.url}/api/v2/tickets/{ticket_id}.json"},
        )

    def _check(self, fields: Mapping[str, Any]) -> Answer | None:
        for name, allowed in (
            ("priority", self.PRIORITIES),
            ("status", self.STATUSES),
            ("type", self.TYPES),
        ):
            if fields.get(name) is not None and fields[name] not in allowed:
                return self._invalid(name, f"{name}: {fields[name]!r} is not valid")
        return None

    def _update(self, request: Received, ticket: dict[str, Any]) -> Answer:
        doc = request.json
        fields = doc.get("ticket") if isinstance(doc, dict) else None
        if not isinstance(fields, dict):
            return Answer(400, {"error": "InvalidValue", "description": "ticket is required"})
        if ticket["status"] == "closed":
            return self._invalid("status", "Status: closed prevents ticket update")
        problem = self._check(fields)
        if problem is not None:
            return problem
        for name in ("priority", "status", "subject"):
            if name in fields:
                ticket[name] = fields[name]
        comment = fields.get("comment")
        if isinstance(comment, dict) and str(comment.get("body", "")).strip():
            ticket["comments"].append(
                {"body": comment["body"], "public": comment.get("public", True)}
            )
        return Answer(200, {"ticket": self._view(ticket), "audit": {"ticket_id": ticket["id"]}})


# ---- a Standard Webhooks receiver ---------------------------------------------------------------


class FakeWebhookReceiver(FakeVendor):
    """Verifies Standard Webhooks signatures; keeps one delivery per ``webhook-id``."""

    name = "webhook"

    def __init__(
        self,
        secret: str,
        *,
        tolerance_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        reply: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        encoded = secret.removeprefix("whsec_")
        self._key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        self.tolerance_s = tolerance_s
        self.clock = clock
        self.reply = dict(reply or {})
        self._deliveries: dict[str, Any] = {}
        self.duplicates = 0
        self.rejected: list[str] = []

    @property
    def deliveries(self) -> dict[str, Any]:
        """``webhook-id`` → the JSON body first received with it."""
        with self._lock:
            return dict(self._deliveries)

    def authorized(self, request: Received) -> bool:
        return True

    def _refusal(self, request: Received) -> str | None:
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "")
        if not (msg_id and stamp and signatures):
            return "missing webhook headers"
        if not stamp.isdigit() or abs(int(stamp) - self.clock()) > self.tolerance_s:
            return "timestamp outside the tolerance"
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + request.body
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        for entry in signatures.split(" "):
            version, _, value = entry.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return None
        return "no matching signature"

    def handle(self, request: Received) -> Answer:
        if request.method != "POST":
            return Answer(405, {"error": "POST only"})
        why = self._refusal(request)
        if why is not None:
            self.rejected.append(why)
            return Answer(401, {"error": why})
        msg_id = request.headers["webhook-id"]
        duplicate = msg_id in self._deliveries
        if duplicate:
            self.duplicates += 1
        else:
            self._deliveries[msg_id] = request.json
        return Answer(200, {"received": msg_id, "duplicate": duplicate, **self.reply})


# ---- a fault mix for long runs ------------------------------------------------------------------

_CORRELATION = re.compile(r"(?:^|\^)correlation_id=([^^]+)")
_JIRA_LABEL = re.compile(r'labels = "ew-([^"]+)"')


def order_of(request: Received) -> str | None:
    """The EdgeWatch order a request is about, if it names one: ServiceNow's
    ``correlation_id``, Zendesk's ``external_id``, Jira's ``ew-<id>`` label, the webhook's
    ``data.id`` (a lookup's query or a create's body; updates name the vendor's id only)."""
    doc = request.json if isinstance(request.json, dict) else {}
    if found := _CORRELATION.search(request.param("sysparm_query") or ""):
        return found.group(1)
    if found := _JIRA_LABEL.search(request.param("jql") or ""):
        return found.group(1)
    if request.param("external_id"):
        return request.param("external_id")
    ticket = doc.get("ticket")
    fields = doc.get("requestFieldValues")
    data = doc.get("data")
    for candidate in (
        doc.get("correlation_id"),
        ticket.get("external_id") if isinstance(ticket, dict) else None,
        next(iter(fields.get("labels") or []), "").removeprefix("ew-")
        if isinstance(fields, dict)
        else None,
        data.get("id") if isinstance(data, dict) else None,
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


@dataclass(frozen=True)
class CappedFlaky(Flaky):
    """:class:`Flaky`'s faults, but at most ``cap`` of them for the requests about any one
    order (:func:`order_of`); requests that name no order are not capped.

    A share of faults per request leaves, over thousands of orders, a few that fail six or
    seven times in a row, and the delivery workers' backoff (5 s doubling) makes those
    wait minutes. The cap keeps a long run's tail to ``cap`` backoffs while every order
    still meets the mix. Bind the vendor first: ``desk.flaky(CappedFlaky(...).bind(desk))``."""

    cap: int = 3
    vendor: FakeVendor | None = field(default=None, compare=False, repr=False)
    counts: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    """Faults so far per order."""

    def bind(self, vendor: FakeVendor) -> CappedFlaky:
        return replace(self, vendor=vendor, counts={})

    def roll(self, rng: random.Random) -> Fault | None:
        assert self.vendor is not None, "bind the vendor first"
        # Called by the vendor's dispatch with its lock held, just after it recorded the
        # request: the newest recorded request is the one a fault is being rolled for.
        order = order_of(self.vendor._requests[-1])
        fault = super().roll(rng)
        if fault is None or order is None:
            return fault
        if self.counts.get(order, 0) >= self.cap:
            return None
        self.counts[order] = self.counts.get(order, 0) + 1
        return fault
