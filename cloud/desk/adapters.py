"""The four desk adapters: a Standard Webhooks endpoint, ServiceNow, Jira Service
Management and Zendesk. Build them with :func:`cloud.desk.tickets.make_adapter`.

Request shapes follow the vendors' public API references:

ServiceNow, Table API (``/api/now/table/{table}``), basic auth (user, password)
    create  ``POST /api/now/table/incident?sysparm_fields=sys_id,number`` with
            ``short_description``, ``description``, ``impact``, ``urgency``,
            ``correlation_id`` (our order id), ``correlation_display`` (``EdgeWatch
            <number>``), ``due_date`` (UTC, ``YYYY-MM-DD HH:MM:SS``) and the optional
            ``assignment_group``/``caller_id``; answer ``201 {"result": {sys_id, number}}``
    lookup  ``GET /api/now/table/incident?sysparm_query=correlation_id=<id>^ORDERBYsys_created_on
            &sysparm_limit=1&sysparm_fields=sys_id,number`` (the oldest, should a duplicate
            ever exist) → ``{"result": [...]}``
    update  ``PATCH /api/now/table/incident/<sys_id>?sysparm_fields=sys_id,number`` with
            ``work_notes`` and, unless the event is ``commented``, ``impact``, ``urgency``,
            ``state``; Resolved (6) and Closed (7) also carry ``close_code`` (option
            ``close_code``, default ``Solution provided``) and ``close_notes``, which
            the incident data policy makes mandatory for those states.
    Priority P1..P4 is set through impact/urgency (the incident priority lookup):
    (1,1) critical, (1,2) high, (2,2) moderate, (3,2) low. Our states go out as
    1 New (waiting_approval), 2 In Progress (approved, scheduled, in_progress),
    6 Resolved (complete), 7 Closed (closed), 8 Canceled (cancelled).

Jira Service Management, Cloud REST (``servicedeskapi`` and platform API v2), basic auth
(account email, API token)
    create  ``POST /rest/servicedeskapi/request`` with ``serviceDeskId``,
            ``requestTypeId`` and ``requestFieldValues`` {``summary``, ``description``,
            ``labels``: [``ew-<order id>``]} → ``201 {"issueId", "issueKey", ...}``. The
            request type must offer the Labels field, or Jira answers 400 (permanent).
    lookup  ``GET /rest/api/2/search/jql?jql=labels = "ew-<id>" ORDER BY created ASC
            &maxResults=1&fields=summary`` → ``{"issues": [{"id", "key"}]}``. Atlassian
            removed ``GET /rest/api/2/search`` from Jira Cloud in 2025 (CHANGE-2046; it
            answers 410); Data Center still has only that one: set option ``search_path``.
    update  ``POST /rest/api/2/issue/<key>/comment`` ``{"body": note}`` → 201. Status
            transitions are not made: their ids depend on each project's workflow.
    Jira has no idempotency key for creates, and its search index follows a create by a
    moment: a create whose answer was lost (timeout, 5xx) is retried no sooner than
    ``index_settle_s`` (option, default 30 s), so that the retry's lookup sees the issue.

Zendesk, Support (ticketing) API, basic auth ``{email}/token`` : API token
    create  ``POST /api/v2/tickets.json`` ``{"ticket": {subject, comment: {body},
            priority, type: "task", due_at, external_id: <order id>, tags, group_id}}``
            with ``Idempotency-Key: <delivery id>.<sha256 of the body, 16 hex>``. Zendesk
            replays the first answer to a repeated key with the same body (header
            ``x-idempotency-lookup: hit``) for two hours. → ``201 {"ticket": {"id", ...}}``
    lookup  ``GET /api/v2/tickets.json?external_id=<id>`` → ``{"tickets": [...]}`` (the
            lowest id, should a duplicate ever exist)
    update  ``PUT /api/v2/tickets/<id>.json`` ``{"ticket": {"comment": {"body", "public":
            false}, "priority", "status"}}``; status ``open`` for approved/scheduled/
            in_progress, ``solved`` for complete/closed/cancelled (Zendesk closes solved
            tickets itself; no status is sent for waiting_approval).
    Priorities P1..P4 are urgent, high, normal, low.

Webhook, Standard Webhooks (:mod:`cloud.desk.signing`), no credentials but the signature
    ``POST <url>`` ``{"type": "work_order.<event>", "timestamp": <ISO 8601>, "data":
    <Ticket.payload>}`` with ``webhook-id: <delivery id>`` (the same on every retry, so
    the receiver deduplicates), ``webhook-timestamp`` and ``webhook-signature``. A
    receiver may answer ``{"external_id": ..., "external_ref": ...}`` to name its ticket.

Answers: 2xx is success; 429, 408, 409, 425 and 5xx are retryable, honouring
``Retry-After`` (seconds or an HTTP date); timeouts and connection errors are retryable;
any other 4xx is permanent. A 2xx whose body is not what the vendor documents is
retryable (a hibernating ServiceNow instance answers 200 with an HTML page).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import logging
import math
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Final
from urllib.parse import quote

import httpx

from cloud.desk.signing import SignatureError, secret_key, signed_headers
from cloud.desk.tickets import (
    DESK_KINDS,
    ORDER_ID_RE,
    ORDER_STATES,
    DeskAdapter,
    DeskConfig,
    Outcome,
    Ticket,
)
from cloud.errors import ConfigError

log = logging.getLogger(__name__)

USER_AGENT: Final = "EdgeWatch-Desk/1"
RETRYABLE_STATUSES: Final = frozenset({408, 409, 425, 429})
MAX_DETAIL_CHARS: Final = 200
MAX_TIMEOUT_S: Final = 300.0
MAX_RETRY_AFTER_S: Final = 86_400.0
JIRA_SEARCH_PATH: Final = "/rest/api/2/search/jql"
JIRA_INDEX_SETTLE_S: Final = 30.0
JIRA_LABEL_PREFIX: Final = "ew-"
SERVICENOW_CLOSE_CODE: Final = "Solution provided"

OPTIONS: Final[Mapping[str, frozenset[str]]] = {
    "webhook": frozenset(),
    "servicenow": frozenset({"assignment_group", "caller_id", "close_code"}),
    "jira": frozenset({"service_desk_id", "request_type_id", "search_path", "index_settle_s"}),
    "zendesk": frozenset({"group_id"}),
}
"""The ``DeskConfig.options`` keys each kind understands."""

# ---- answers -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay seconds or an HTTP date, RFC 9110
    §10.2.3), from 0 to a day; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return min(max(0.0, seconds), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_S)


def excerpt(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def refusal(status: int, headers: Mapping[str, str], body: str, what: str, now: float) -> Outcome:
    """The outcome of a non-2xx answer to the request described by ``what``."""
    retryable = status in RETRYABLE_STATUSES or status >= 500
    retry_after = parse_retry_after(headers.get("retry-after"), now) if retryable else None
    detail = f"{what}: HTTP {status}"
    if retry_after is not None:
        detail += f", retry after {retry_after:g} s"
    if body.strip():
        detail += f": {excerpt(body)}"
    return Outcome(
        ok=False,
        status_code=status,
        retry_after_s=retry_after,
        permanent=not retryable,
        detail=excerpt(detail, 2 * MAX_DETAIL_CHARS),
    )


class _Failed(Exception):
    """Ends a delivery early with ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


def _uncertain(outcome: Outcome) -> bool:
    """Whether a failed write may have been carried out (no answer, 5xx, a garbled 2xx)."""
    code = outcome.status_code
    return code is None or code >= 500 or 200 <= code < 300


@dataclass
class _Exchange:
    """The HTTP requests of one ``deliver`` call, and what they taught about the ticket."""

    client: httpx.Client
    auth: httpx.Auth | None
    timeout_s: float
    clock: Callable[[], float]
    kind: str
    count: int = 0
    last_status: int | None = None
    external_id: str | None = None
    external_ref: str | None = None

    def send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The 2xx answer; :class:`_Failed` with the classified outcome otherwise."""
        self.count += 1
        self.last_status = None
        all_headers = {"accept": "application/json", **(headers or {})}
        if body is not None:
            all_headers.setdefault("content-type", "application/json")
        try:
            response = self.client.request(
                method,
                url,
                params=params,
                content=body,
                headers=all_headers,
                auth=self.auth if self.auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=self.timeout_s,
                follow_redirects=False,
            )
        except httpx.TimeoutException as exc:
            raise _Failed(
                Outcome(
                    ok=False,
                    detail=f"{what}: no answer within {self.timeout_s:g} s ({type(exc).__name__})",
                )
            ) from None
        except httpx.RequestError as exc:
            raise _Failed(
                Outcome(ok=False, detail=excerpt(f"{what}: {type(exc).__name__}: {exc}"))
            ) from None
        self.last_status = response.status_code
        log.debug(
            "desk %s: %s %s -> %d", self.kind, method, response.url.path, response.status_code
        )
        if not response.is_success:
            raise _Failed(
                refusal(response.status_code, response.headers, response.text, what, self.clock())
            )
        return response

    def garbled(self, response: httpx.Response, what: str, why: str) -> _Failed:
        return _Failed(
            Outcome(
                ok=False,
                status_code=response.status_code,
                detail=excerpt(f"{what}: HTTP {response.status_code} but {why}: {response.text}"),
            )
        )

    def json_object(self, response: httpx.Response, what: str) -> Mapping[str, Any]:
        try:
            document = response.json()
        except ValueError:
            raise self.garbled(response, what, "the body is not JSON") from None
        if not isinstance(document, dict):
            raise self.garbled(response, what, "the body is not a JSON object")
        return document

    def found(self, external_id: str, external_ref: str | None) -> None:
        self.external_id = external_id
        self.external_ref = external_ref


# ---- what the tickets say ---------------------------------------------------------------------


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _iso(when: datetime) -> str:
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def description_text(ticket: Ticket) -> str:
    """The ticket's body at creation: the description, then where it comes from."""
    footer = (
        f"EdgeWatch work order {ticket.number} ({ticket.order_id}), priority P{ticket.priority}"
    )
    if ticket.due_at is not None:
        footer += f", due {_iso(ticket.due_at)}"
    return f"{ticket.description.rstrip()}\n\n{footer}."


def note_text(ticket: Ticket) -> str:
    """The note a later event adds to the ticket."""
    comment = (ticket.comment or "").strip()
    if ticket.event == "commented":
        return comment or f"EdgeWatch work order {ticket.number}: (empty comment)"
    if ticket.event == "state_changed":
        head = f"EdgeWatch work order {ticket.number} is now {ticket.state}."
    else:
        head = (
            f"EdgeWatch work order {ticket.number} was updated: priority P{ticket.priority}, "
            f"state {ticket.state}"
        )
        head += f", due {_iso(ticket.due_at)}." if ticket.due_at is not None else "."
    return f"{head}\n{comment}" if comment else head


def ticket_problem(ticket: Ticket) -> str | None:
    """Why no desk could accept ``ticket`` (a bug upstream), or None."""
    if not ORDER_ID_RE.fullmatch(ticket.order_id):
        return f"order_id {ticket.order_id[:40]!r} is not a plain id (letters, digits, - _ .)"
    if ticket.priority not in (1, 2, 3, 4):
        return f"priority {ticket.priority!r} is not 1..4"
    if ticket.state not in ORDER_STATES:
        return f"state {ticket.state!r} is not one of {', '.join(ORDER_STATES)}"
    if not ticket.title.strip():
        return "title is empty"
    return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process (loading the CA bundle takes ~25 ms)."""
    return httpx.create_ssl_context()


# ---- the adapters ------------------------------------------------------------------------------


class _HttpAdapter:
    kind: str

    def __init__(
        self, config: DeskConfig, client: httpx.Client | None, clock: Callable[[], float]
    ) -> None:
        self._config = config
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=config.timeout_s, headers={"user-agent": USER_AGENT}, verify=_tls_context()
        )
        self._clock = clock
        self._base = config.url.rstrip("/")

    def _auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth(self._config.username, self._config.token)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def deliver(
        self, ticket: Ticket, *, delivery_id: str, attempt: int, external_id: str | None
    ) -> Outcome:
        problem = ticket_problem(ticket)
        if problem is not None:
            return Outcome(ok=False, permanent=True, detail=f"ticket: {problem}")
        exchange = _Exchange(
            self._client, self._auth(), self._config.timeout_s, self._clock, self.kind
        )
        if external_id is not None:
            exchange.found(external_id, None)
        try:
            outcome = self._deliver(exchange, ticket, delivery_id)
        except _Failed as failed:
            outcome = replace(
                failed.outcome,
                external_id=exchange.external_id,
                external_ref=exchange.external_ref,
            )
        outcome = replace(outcome, request_count=exchange.count)
        if outcome.status_code is None:
            outcome = replace(outcome, status_code=exchange.last_status)
        log.debug(
            "desk %s: %s of %s (delivery %s, attempt %d): ok=%s permanent=%s %s",
            self.kind,
            ticket.event,
            ticket.number,
            delivery_id,
            attempt,
            outcome.ok,
            outcome.permanent,
            outcome.detail,
        )
        return outcome

    def _deliver(self, exchange: _Exchange, ticket: Ticket, delivery_id: str) -> Outcome:
        """Find or create the ticket, then apply a later event to it."""
        created = False
        if exchange.external_id is None:
            self._lookup(exchange, ticket)
            if exchange.external_id is None:
                self._create(exchange, ticket, delivery_id)
                created = True
        if ticket.event != "created":
            self._update(exchange, ticket)
        done = "created" if created else ("found" if ticket.event == "created" else "updated")
        name = exchange.external_ref or exchange.external_id
        return Outcome(
            ok=True,
            external_id=exchange.external_id,
            external_ref=exchange.external_ref,
            status_code=exchange.last_status,
            detail=f"{ticket.event}: ticket {name} {done}",
        )

    def _lookup(self, exchange: _Exchange, ticket: Ticket) -> None:
        raise NotImplementedError

    def _create(self, exchange: _Exchange, ticket: Ticket, delivery_id: str) -> None:
        raise NotImplementedError

    def _update(self, exchange: _Exchange, ticket: Ticket) -> None:
        raise NotImplementedError


class ServiceNowAdapter(_HttpAdapter):
    """Incidents through the Table API; the order id is the incident's ``correlation_id``."""

    kind = "servicenow"
    TABLE: ClassVar[str] = "/api/now/table/incident"
    FIELDS: ClassVar[Mapping[str, str]] = {"sysparm_fields": "sys_id,number"}
    IMPACT_URGENCY: ClassVar[Mapping[int, tuple[str, str]]] = {
        1: ("1", "1"),
        2: ("1", "2"),
        3: ("2", "2"),
        4: ("3", "2"),
    }
    STATES: ClassVar[Mapping[str, str]] = {
        "waiting_approval": "1",
        "approved": "2",
        "scheduled": "2",
        "in_progress": "2",
        "complete": "6",
        "closed": "7",
        "cancelled": "8",
    }
    CLOSING: ClassVar[frozenset[str]] = frozenset({"6", "7"})

    def _record(self, exchange: _Exchange, response: httpx.Response, what: str) -> None:
        result = exchange.json_object(response, what).get("result")
        if not isinstance(result, dict) or not isinstance(result.get("sys_id"), str):
            raise exchange.garbled(response, what, "result.sys_id is missing")
        number = result.get("number")
        exchange.found(result["sys_id"], number if isinstance(number, str) else None)

    def _lookup(self, exchange: _Exchange, ticket: Ticket) -> None:
        what = "look up incident by correlation_id"
        params = {
            "sysparm_query": f"correlation_id={ticket.order_id}^ORDERBYsys_created_on",
            "sysparm_limit": "1",
            **self.FIELDS,
        }
        response = exchange.send("GET", self._base + self.TABLE, what, params=params)
        result = exchange.json_object(response, what).get("result")
        if not isinstance(result, list):
            raise exchange.garbled(response, what, "result is not a list")
        if result:
            first = result[0]
            if not isinstance(first, dict) or not isinstance(first.get("sys_id"), str):
                raise exchange.garbled(response, what, "result[0].sys_id is missing")
            number = first.get("number")
            exchange.found(first["sys_id"], number if isinstance(number, str) else None)

    def _create(self, exchange: _Exchange, ticket: Ticket, delivery_id: str) -> None:
        impact, urgency = self.IMPACT_URGENCY[ticket.priority]
        record: dict[str, str] = {
            "short_description": _clip(ticket.title, 160),
            "description": description_text(ticket),
            "impact": impact,
            "urgency": urgency,
            "correlation_id": ticket.order_id,
            "correlation_display": _clip(f"EdgeWatch {ticket.number}", 100),
        }
        if ticket.due_at is not None:
            record["due_date"] = _utc(ticket.due_at).strftime("%Y-%m-%d %H:%M:%S")
        for option in ("assignment_group", "caller_id"):
            if self._config.options.get(option):
                record[option] = self._config.options[option]
        what = "create incident"
        response = exchange.send(
            "POST", self._base + self.TABLE, what, params=self.FIELDS, body=_json_bytes(record)
        )
        self._record(exchange, response, what)

    def _update(self, exchange: _Exchange, ticket: Ticket) -> None:
        assert exchange.external_id is not None  # noqa: S101 - found or created before
        note = note_text(ticket)
        change: dict[str, str] = {"work_notes": note}
        if ticket.event != "commented":
            change["impact"], change["urgency"] = self.IMPACT_URGENCY[ticket.priority]
            change["state"] = self.STATES[ticket.state]
            if change["state"] in self.CLOSING:
                change["close_code"] = self._config.options.get("close_code", SERVICENOW_CLOSE_CODE)
                change["close_notes"] = note
        what = f"update incident {exchange.external_ref or exchange.external_id}"
        url = f"{self._base}{self.TABLE}/{quote(exchange.external_id, safe='')}"
        response = exchange.send("PATCH", url, what, params=self.FIELDS, body=_json_bytes(change))
        self._record(exchange, response, what)


class JiraAdapter(_HttpAdapter):
    """Customer requests through ``servicedeskapi``; the order is the label ``ew-<id>``."""

    kind = "jira"
    CREATE: ClassVar[str] = "/rest/servicedeskapi/request"

    def _lookup(self, exchange: _Exchange, ticket: Ticket) -> None:
        what = "search issue by label"
        label = JIRA_LABEL_PREFIX + ticket.order_id
        params = {
            "jql": f'labels = "{label}" ORDER BY created ASC',
            "maxResults": "1",
            "fields": "summary",
        }
        path = self._config.options.get("search_path", JIRA_SEARCH_PATH)
        response = exchange.send("GET", self._base + path, what, params=params)
        issues = exchange.json_object(response, what).get("issues")
        if not isinstance(issues, list):
            raise exchange.garbled(response, what, "issues is not a list")
        if issues:
            first = issues[0] if isinstance(issues[0], dict) else {}
            key = first.get("key") or first.get("id")  # /search/jql may answer ids only
            if not isinstance(key, str):
                raise exchange.garbled(response, what, "issues[0] has no key")
            exchange.found(key, key)

    def _create(self, exchange: _Exchange, ticket: Ticket, delivery_id: str) -> None:
        options = self._config.options
        request = {
            "serviceDeskId": options["service_desk_id"],
            "requestTypeId": options["request_type_id"],
            "requestFieldValues": {
                "summary": _clip(ticket.title, 255),
                "description": description_text(ticket),
                "labels": [JIRA_LABEL_PREFIX + ticket.order_id],
            },
        }
        what = "create customer request"
        try:
            response = exchange.send(
                "POST", self._base + self.CREATE, what, body=_json_bytes(request)
            )
            document = exchange.json_object(response, what)
            key = document.get("issueKey")
            if not isinstance(key, str):
                raise exchange.garbled(response, what, "issueKey is missing")
        except _Failed as failed:
            if failed.outcome.retryable and _uncertain(failed.outcome):
                settle = float(options.get("index_settle_s", JIRA_INDEX_SETTLE_S))
                outcome = failed.outcome
                failed.outcome = replace(
                    outcome,
                    retry_after_s=max(outcome.retry_after_s or 0.0, settle),
                    detail=excerpt(
                        f"{outcome.detail} (the request may exist: retry after the search "
                        f"index settles, {settle:g} s)",
                        2 * MAX_DETAIL_CHARS,
                    ),
                )
            raise
        exchange.found(key, key)

    def _update(self, exchange: _Exchange, ticket: Ticket) -> None:
        assert exchange.external_id is not None  # noqa: S101 - found or created before
        what = f"comment on {exchange.external_id}"
        url = f"{self._base}/rest/api/2/issue/{quote(exchange.external_id, safe='')}/comment"
        exchange.send("POST", url, what, body=_json_bytes({"body": note_text(ticket)}))


class ZendeskAdapter(_HttpAdapter):
    """Tickets through the Support API; the order id is the ticket's ``external_id``."""

    kind = "zendesk"
    TICKETS: ClassVar[str] = "/api/v2/tickets"
    PRIORITIES: ClassVar[Mapping[int, str]] = {1: "urgent", 2: "high", 3: "normal", 4: "low"}
    STATUSES: ClassVar[Mapping[str, str]] = {
        "approved": "open",
        "scheduled": "open",
        "in_progress": "open",
        "complete": "solved",
        "closed": "solved",
        "cancelled": "solved",
    }

    def _auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth(f"{self._config.username}/token", self._config.token)

    def _ticket(self, exchange: _Exchange, response: httpx.Response, what: str) -> None:
        ticket = exchange.json_object(response, what).get("ticket")
        ticket_id = ticket.get("id") if isinstance(ticket, dict) else None
        if not isinstance(ticket_id, int):
            raise exchange.garbled(response, what, "ticket.id is missing")
        exchange.found(str(ticket_id), str(ticket_id))

    def _lookup(self, exchange: _Exchange, ticket: Ticket) -> None:
        what = "list tickets by external_id"
        response = exchange.send(
            "GET",
            f"{self._base}{self.TICKETS}.json",
            what,
            params={"external_id": ticket.order_id},
        )
        tickets = exchange.json_object(response, what).get("tickets")
        if not isinstance(tickets, list):
            raise exchange.garbled(response, what, "tickets is not a list")
        ids = [t["id"] for t in tickets if isinstance(t, dict) and isinstance(t.get("id"), int)]
        if len(ids) != len(tickets):
            raise exchange.garbled(response, what, "a ticket has no id")
        if ids:
            oldest = str(min(ids))
            exchange.found(oldest, oldest)

    def _create(self, exchange: _Exchange, ticket: Ticket, delivery_id: str) -> None:
        fields: dict[str, Any] = {
            "subject": _clip(ticket.title, 255),
            "comment": {"body": description_text(ticket)},
            "priority": self.PRIORITIES[ticket.priority],
            "type": "task",
            "external_id": ticket.order_id,
            "tags": ["edgewatch"],
        }
        if ticket.due_at is not None:
            fields["due_at"] = _iso(ticket.due_at)
        if self._config.options.get("group_id"):
            fields["group_id"] = int(self._config.options["group_id"])
        body = _json_bytes({"ticket": fields})
        key = f"{delivery_id[:200]}.{hashlib.sha256(body).hexdigest()[:16]}"
        what = "create ticket"
        response = exchange.send(
            "POST",
            f"{self._base}{self.TICKETS}.json",
            what,
            body=body,
            headers={"idempotency-key": key},
        )
        self._ticket(exchange, response, what)

    def _update(self, exchange: _Exchange, ticket: Ticket) -> None:
        assert exchange.external_id is not None  # noqa: S101 - found or created before
        change: dict[str, Any] = {"comment": {"body": note_text(ticket), "public": False}}
        if ticket.event != "commented":
            change["priority"] = self.PRIORITIES[ticket.priority]
            if ticket.state in self.STATUSES:
                change["status"] = self.STATUSES[ticket.state]
        what = f"update ticket {exchange.external_id}"
        url = f"{self._base}{self.TICKETS}/{quote(exchange.external_id, safe='')}.json"
        response = exchange.send("PUT", url, what, body=_json_bytes({"ticket": change}))
        self._ticket(exchange, response, what)


class WebhookAdapter(_HttpAdapter):
    """Signed POSTs of the order's JSON to one endpoint (Standard Webhooks)."""

    kind = "webhook"

    def _auth(self) -> httpx.Auth | None:
        return None

    def _deliver(self, exchange: _Exchange, ticket: Ticket, delivery_id: str) -> Outcome:
        now = self._clock()
        message = {
            "type": f"work_order.{ticket.event}",
            "timestamp": _iso(datetime.fromtimestamp(int(now), UTC)),
            "data": ticket.payload,
        }
        try:
            body = _json_bytes(message)
        except (TypeError, ValueError) as exc:
            return Outcome(ok=False, permanent=True, detail=f"ticket.payload is not JSON: {exc}")
        headers = signed_headers(self._config.secret, delivery_id, int(now), body)
        what = f"post {ticket.event}"
        response = exchange.send("POST", self._config.url, what, body=body, headers=headers)
        external_id, external_ref = exchange.external_id, exchange.external_ref
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                named_id, named_ref = answer.get("external_id"), answer.get("external_ref")
                if isinstance(named_id, str | int) and not isinstance(named_id, bool):
                    external_id = str(named_id)
                if isinstance(named_ref, str):
                    external_ref = named_ref
        return Outcome(
            ok=True,
            external_id=external_id,
            external_ref=external_ref,
            status_code=response.status_code,
            detail=f"{ticket.event}: delivered as {delivery_id}",
        )


# ---- configuration ------------------------------------------------------------------------------

ADAPTERS: Final[Mapping[str, type[_HttpAdapter]]] = {
    "webhook": WebhookAdapter,
    "servicenow": ServiceNowAdapter,
    "jira": JiraAdapter,
    "zendesk": ZendeskAdapter,
}


def check_config(config: DeskConfig) -> None:
    """:class:`ConfigError` naming the first unusable key of ``config``."""
    if config.kind not in DESK_KINDS:
        raise ConfigError("desk.kind", f"{config.kind!r} is not one of {', '.join(DESK_KINDS)}")
    try:
        url = httpx.URL(config.url)
    except httpx.InvalidURL as exc:
        raise ConfigError("desk.url", f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError("desk.url", "expected an http(s) URL with a host")
    if url.userinfo:
        raise ConfigError("desk.url", "credentials belong in desk.username and desk.token")
    try:
        secret_key(config.secret)
    except SignatureError as exc:
        raise ConfigError("desk.secret", exc.why) from None
    if not 0 < config.timeout_s <= MAX_TIMEOUT_S:
        raise ConfigError("desk.timeout_s", f"expected more than 0 and at most {MAX_TIMEOUT_S:g}")
    known = OPTIONS[config.kind]
    for key in config.options:
        if key not in known:
            raise ConfigError(
                f"desk.options.{key}",
                f"unknown for {config.kind}; known: {', '.join(sorted(known)) or 'none'}",
            )
    if config.kind == "webhook":
        return
    who = {"servicenow": "user", "jira": "account email", "zendesk": "agent email"}[config.kind]
    if not config.username.strip():
        raise ConfigError("desk.username", f"the {config.kind} {who} is required")
    if not config.token:
        raise ConfigError("desk.token", f"the {config.kind} password or API token is required")
    if config.kind == "jira":
        for key in ("service_desk_id", "request_type_id"):
            if not config.options.get(key, "").isdigit():
                raise ConfigError(f"desk.options.{key}", "required: the numeric id from Jira")
        if not config.options.get("search_path", "/").startswith("/"):
            raise ConfigError("desk.options.search_path", "expected a path starting with /")
        _check_seconds(config.options, "index_settle_s")
    if config.kind == "zendesk" and not config.options.get("group_id", "0").isdigit():
        raise ConfigError("desk.options.group_id", "expected the numeric Zendesk group id")


def _check_seconds(options: Mapping[str, str], key: str) -> None:
    if key not in options:
        return
    try:
        seconds = float(options[key])
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise ConfigError(f"desk.options.{key}", "expected seconds from 0 to 3600")


def build_adapter(
    config: DeskConfig, client: httpx.Client | None, *, clock: Callable[[], float]
) -> DeskAdapter:
    """See :func:`cloud.desk.tickets.make_adapter`."""
    check_config(config)
    return ADAPTERS[config.kind](config, client, clock)
