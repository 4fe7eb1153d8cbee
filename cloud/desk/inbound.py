"""Status changes that a service desk posts back: verify, then parse into a
:class:`StatusUpdate` naming our order and our target work-order state.

Every post is signed the Standard Webhooks way with the desk's ``DeskConfig.secret``
(:mod:`cloud.desk.signing`; 5 minutes of tolerance, several ``v1,`` signatures allowed).
ServiceNow signs from the business rule that sends the post; Zendesk and Jira sign their
native webhooks differently (``X-Zendesk-Webhook-Signature``, ``X-Hub-Signature``), so for
them a relay (or an automation that can compute an HMAC) adds the Standard Webhooks headers.

The bodies, by ``DeskConfig.kind`` (a top-level ``note`` string is taken by every kind):

webhook
    ``{"order_id", "external_id"?, "state": <our state>, "note"?}``, bare or as the ``data``
    of a Standard Webhooks envelope ``{"type", "timestamp", "data"}``.
servicenow
    The incident's fields, as a business rule sends them: ``{"correlation_id", "sys_id",
    "number", "state", "work_notes"|"close_notes"?}``, bare or as the Table API's
    ``{"result": {...}}``; ``state`` is the code (``"6"`` or ``6``), its label
    (``"Resolved"``), or ``{"value", "display_value"}``. Codes: 1 New → waiting_approval,
    2 In Progress → in_progress, 3 On Hold → scheduled, 6 Resolved → complete,
    7 Closed → closed, 8 Canceled → cancelled.
jira
    Jira's issue JSON (a webhook or an automation's "Issue data"): ``{"issue": {"key",
    "fields": {"status": {"name"}, "labels": ["ew-<order id>", ...]}}, "comment"?:
    {"body"}}``; the order is the ``ew-`` label, the external id the issue key. Status
    names are matched without regard to case; see :data:`JIRA_STATUSES`.
zendesk
    A trigger's JSON ``{"ticket": {"id", "external_id", "status"}, "comment"?}`` or an
    event webhook's ``{"type": "zen:event-type:ticket.…", "detail": {"id",
    "external_id", "status"}, "event": {"current": ...}}``. Statuses: new and pending →
    waiting_approval, open → in_progress, hold → scheduled, solved → complete,
    closed → closed (Zendesk has no cancelled status).

A body that names no order, an unknown state, or a bad signature raises
:class:`~cloud.errors.InvalidInput` (:class:`~cloud.desk.signing.SignatureError` for the
signature) whose ``where`` points into the body or at the header.

A post to a desk that does not exist, or is disabled, goes through
:func:`refuse_unknown_desk`: it is checked against a secret no desk has, so it fails
exactly as a post signed with the wrong secret does (same error, same work), and
unsigned posts cannot tell which desk ids exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, NoReturn

from cloud.desk.signing import SIGNATURE_HEADER, TOLERANCE_S, SignatureError, new_secret, verify
from cloud.desk.tickets import DESK_KINDS, ORDER_ID_RE, ORDER_STATES, DeskConfig
from cloud.errors import InvalidInput

MAX_NOTE_CHARS: Final = 4000
MAX_TEXT_CHARS: Final = 200
"""Ids, keys and state names: longer ones are refused (a ticket id is stored in 200)."""

SERVICENOW_STATES: Final[Mapping[str, str]] = {
    "1": "waiting_approval",
    "2": "in_progress",
    "3": "scheduled",
    "6": "complete",
    "7": "closed",
    "8": "cancelled",
}
SERVICENOW_LABELS: Final[Mapping[str, str]] = {
    "new": "1",
    "in progress": "2",
    "on hold": "3",
    "resolved": "6",
    "closed": "7",
    "canceled": "8",
    "cancelled": "8",
}
JIRA_STATUSES: Final[Mapping[str, str]] = {
    "open": "waiting_approval",
    "new": "waiting_approval",
    "to do": "waiting_approval",
    "waiting for support": "waiting_approval",
    "waiting for customer": "waiting_approval",
    "waiting for approval": "waiting_approval",
    "awaiting approval": "waiting_approval",
    "pending": "waiting_approval",
    "approved": "approved",
    "awaiting implementation": "approved",
    "scheduled": "scheduled",
    "in progress": "in_progress",
    "work in progress": "in_progress",
    "escalated": "in_progress",
    "implementing": "in_progress",
    "resolved": "complete",
    "done": "complete",
    "completed": "complete",
    "closed": "closed",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "declined": "cancelled",
    "rejected": "cancelled",
    "won't do": "cancelled",
}
ZENDESK_STATUSES: Final[Mapping[str, str]] = {
    "new": "waiting_approval",
    "pending": "waiting_approval",
    "open": "in_progress",
    "hold": "scheduled",
    "on-hold": "scheduled",
    "solved": "complete",
    "closed": "closed",
}


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One status change from a desk: which order, and the state it asks for."""

    order_id: str | None
    """Our order id, when the desk sent it (correlation_id, label, external_id)."""
    external_id: str | None
    """The desk's ticket id or key, when it sent one."""
    state: str
    """Our target work-order state (one of :data:`~cloud.desk.tickets.ORDER_STATES`)."""
    note: str
    desk_kind: str
    vendor_state: str = ""
    """The state as the desk named it, for the audit trail."""
    message_id: str | None = None
    """The ``webhook-id`` (deduplicate replays within the tolerance by it)."""


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(where, "expected a JSON object")
    return value


def _optional_object(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return {} if value is None else _object(value, f"{where}.{key}")


def _text(value: Any, where: str) -> str | None:
    """A string or integer value as text; None for absent or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(where, f"expected a string, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(where, f"at most {MAX_TEXT_CHARS} characters")
    return text or None


def _order_id(value: Any, where: str) -> str | None:
    order_id = _text(value, where)
    if order_id is not None and not ORDER_ID_RE.fullmatch(order_id):
        raise InvalidInput(where, f"{order_id[:40]!r} is not an order id")
    return order_id


def _note(*candidates: Any) -> str:
    for candidate in candidates:
        if isinstance(candidate, dict):
            candidate = candidate.get("body")
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()[:MAX_NOTE_CHARS]
    return ""


def _mapped(table: Mapping[str, str], name: str | None, where: str, desk: str) -> str:
    if name is None:
        raise InvalidInput(where, "missing")
    state = table.get(name.lower())
    if state is None:
        raise InvalidInput(where, f"unknown {desk} {name[:60]!r}")
    return state


def _parse_webhook(doc: Mapping[str, Any]) -> StatusUpdate:
    where = "body"
    if isinstance(doc.get("data"), dict):
        doc, where = doc["data"], "body.data"
    state = _text(doc.get("state"), f"{where}.state")
    if state is None:
        raise InvalidInput(f"{where}.state", "missing")
    if state not in ORDER_STATES:
        raise InvalidInput(
            f"{where}.state",
            f"unknown state {state[:60]!r}; expected one of {', '.join(ORDER_STATES)}",
        )
    return StatusUpdate(
        order_id=_order_id(doc.get("order_id"), f"{where}.order_id"),
        external_id=_text(doc.get("external_id"), f"{where}.external_id"),
        state=state,
        note=_note(doc.get("note")),
        desk_kind="webhook",
        vendor_state=state,
    )


def _parse_servicenow(doc: Mapping[str, Any]) -> StatusUpdate:
    where = "body"
    if isinstance(doc.get("result"), dict):
        doc, where = doc["result"], "body.result"
    raw = doc.get("state")
    if isinstance(raw, dict):
        raw = raw.get("value") or raw.get("display_value")
    name = _text(raw, f"{where}.state")
    code = SERVICENOW_LABELS.get(name.lower(), name) if name is not None else None
    state = _mapped(SERVICENOW_STATES, code, f"{where}.state", "ServiceNow incident state")
    return StatusUpdate(
        order_id=_order_id(doc.get("correlation_id"), f"{where}.correlation_id"),
        external_id=_text(doc.get("sys_id"), f"{where}.sys_id"),
        state=state,
        note=_note(doc.get("note"), doc.get("close_notes"), doc.get("work_notes")),
        desk_kind="servicenow",
        vendor_state=name or "",
    )


def _parse_jira(doc: Mapping[str, Any]) -> StatusUpdate:
    issue = _object(doc.get("issue"), "body.issue")
    fields = _optional_object(issue, "fields", "body.issue")
    status = _optional_object(fields, "status", "body.issue.fields")
    name = _text(status.get("name"), "body.issue.fields.status.name")
    state = _mapped(JIRA_STATUSES, name, "body.issue.fields.status.name", "Jira status")
    labels = fields.get("labels") or []
    if not isinstance(labels, list):
        raise InvalidInput("body.issue.fields.labels", "expected a list")
    ours = [label[3:] for label in labels if isinstance(label, str) and label.startswith("ew-")]
    if len(set(ours)) > 1:
        raise InvalidInput("body.issue.fields.labels", "more than one ew- label")
    return StatusUpdate(
        order_id=_order_id(ours[0], "body.issue.fields.labels") if ours else None,
        external_id=_text(issue.get("key"), "body.issue.key"),
        state=state,
        note=_note(doc.get("note"), doc.get("comment")),
        desk_kind="jira",
        vendor_state=name or "",
    )


def _parse_zendesk(doc: Mapping[str, Any]) -> StatusUpdate:
    if "detail" in doc:
        where = "body.detail"
        ticket = _object(doc["detail"], where)
        event = _optional_object(doc, "event", "body")
        current = event.get("current")
        if isinstance(current, dict):
            current = current.get("status")
        raw_status = current if isinstance(current, str) else ticket.get("status")
    else:
        where = "body.ticket"
        ticket = _object(doc.get("ticket"), where)
        raw_status = ticket.get("status")
    name = _text(raw_status, f"{where}.status")
    state = _mapped(ZENDESK_STATUSES, name, f"{where}.status", "Zendesk ticket status")
    return StatusUpdate(
        order_id=_order_id(ticket.get("external_id"), f"{where}.external_id"),
        external_id=_text(ticket.get("id"), f"{where}.id"),
        state=state,
        note=_note(doc.get("note"), doc.get("comment")),
        desk_kind="zendesk",
        vendor_state=name or "",
    )


_PARSERS: Final = {
    "webhook": _parse_webhook,
    "servicenow": _parse_servicenow,
    "jira": _parse_jira,
    "zendesk": _parse_zendesk,
}


def parse_status_update(kind: str, body_json: Any) -> StatusUpdate:
    """The status update in a parsed JSON body from a desk of ``kind``.

    Raises :class:`InvalidInput` naming the place in the body that is wrong.
    """
    parser = _PARSERS.get(kind)
    if parser is None:
        raise InvalidInput("desk kind", f"{kind!r} is not one of {', '.join(DESK_KINDS)}")
    update = parser(_object(body_json, "body"))
    if update.order_id is None and update.external_id is None:
        raise InvalidInput("body", f"names no order: neither our order id nor the {kind} ticket id")
    return update


def verify_and_parse(
    config: DeskConfig,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | float,
    tolerance_s: float = TOLERANCE_S,
) -> StatusUpdate:
    """Verify the signature of a desk's post with ``config.secret``, then parse it.

    Raises :class:`~cloud.desk.signing.SignatureError` for a bad signature or timestamp
    and :class:`InvalidInput` for a body that is not a status update.
    """
    message_id = verify(config.secret, headers, body, now, tolerance_s)
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("body", f"not JSON: {exc}") from None
    return replace(parse_status_update(config.kind, document), message_id=message_id)


_NO_DESK_SECRET: Final = new_secret()
"""A secret no desk has (random per process): what posts to unknown desks are checked with."""


def refuse_unknown_desk(
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | float,
    tolerance_s: float = TOLERANCE_S,
) -> NoReturn:
    """Refuse a post to a desk that does not exist or is disabled with the
    :class:`~cloud.desk.signing.SignatureError` a wrong secret gets (see the module
    docstring)."""
    verify(_NO_DESK_SECRET, headers, body, now, tolerance_s)
    # Reached only if the post was signed with a random 32-byte key nobody knows.
    raise SignatureError(SIGNATURE_HEADER, "no desk has this secret")  # pragma: no cover
