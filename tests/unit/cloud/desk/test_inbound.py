"""Status updates that desks post back: each vendor's body and state names onto our order
and work-order state, and every refusal naming what was wrong and where."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cloud.desk.inbound import (
    JIRA_STATUSES,
    SERVICENOW_STATES,
    ZENDESK_STATUSES,
    StatusUpdate,
    parse_status_update,
    verify_and_parse,
)
from cloud.desk.signing import SignatureError, new_secret, sign, signed_headers
from cloud.desk.tickets import ORDER_STATES, DeskConfig
from cloud.errors import InvalidInput

ORDER = "0b8f8c1e-1111-4222-8333-444455556666"
SYS_ID = "6816f79cc0a8016401c5a33be04be441"
NOW = 1_780_000_000


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        (
            "webhook",
            {"order_id": ORDER, "state": "scheduled", "note": "Visit on Tuesday"},
            StatusUpdate(ORDER, None, "scheduled", "Visit on Tuesday", "webhook", "scheduled"),
        ),
        (
            "webhook",
            {"type": "ticket.updated", "data": {"external_id": "FM-1", "state": "closed"}},
            StatusUpdate(None, "FM-1", "closed", "", "webhook", "closed"),
        ),
        (
            "servicenow",
            {
                "correlation_id": ORDER,
                "sys_id": SYS_ID,
                "number": "INC0010001",
                "state": "6",
                "close_notes": "Compressor replaced",
                "work_notes": "",
            },
            StatusUpdate(ORDER, SYS_ID, "complete", "Compressor replaced", "servicenow", "6"),
        ),
        (
            "servicenow",
            {"result": {"sys_id": SYS_ID, "correlation_id": "", "state": 2}},
            StatusUpdate(None, SYS_ID, "in_progress", "", "servicenow", "2"),
        ),
        (
            "servicenow",
            {"correlation_id": ORDER, "state": "On Hold", "work_notes": "Awaiting parts"},
            StatusUpdate(ORDER, None, "scheduled", "Awaiting parts", "servicenow", "On Hold"),
        ),
        (
            "servicenow",
            {"correlation_id": ORDER, "state": {"value": "8", "display_value": "Canceled"}},
            StatusUpdate(ORDER, None, "cancelled", "", "servicenow", "8"),
        ),
        (
            "jira",
            {
                "webhookEvent": "jira:issue_updated",
                "issue": {
                    "id": "10001",
                    "key": "SD-12",
                    "fields": {"status": {"name": "Resolved"}, "labels": ["fm", f"ew-{ORDER}"]},
                },
                "comment": {"body": "Fixed on site"},
            },
            StatusUpdate(ORDER, "SD-12", "complete", "Fixed on site", "jira", "Resolved"),
        ),
        (
            "jira",
            {"issue": {"key": "SD-13", "fields": {"status": {"name": "waiting for SUPPORT"}}}},
            StatusUpdate(None, "SD-13", "waiting_approval", "", "jira", "waiting for SUPPORT"),
        ),
        (
            "zendesk",
            {"ticket": {"id": 35436, "external_id": ORDER, "status": "Solved"}, "comment": "ok"},
            StatusUpdate(ORDER, "35436", "complete", "ok", "zendesk", "Solved"),
        ),
        (
            "zendesk",
            {
                "type": "zen:event-type:ticket.status_changed",
                "detail": {"id": "35436", "external_id": ORDER, "status": "OPEN"},
                "event": {"current": "HOLD", "previous": "OPEN"},
            },
            StatusUpdate(ORDER, "35436", "scheduled", "", "zendesk", "HOLD"),
        ),
        (
            "zendesk",
            {
                "type": "zen:event-type:ticket.created",
                "detail": {"id": "35437", "external_id": "", "status": "Open"},
                "event": {"current": {"status": "Open"}},
                "note": "created by an agent",
            },
            StatusUpdate(None, "35437", "in_progress", "created by an agent", "zendesk", "Open"),
        ),
    ],
)
def test_bodies_by_kind(kind: str, body: dict[str, Any], expected: StatusUpdate) -> None:
    assert parse_status_update(kind, body) == expected


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("1", "waiting_approval"),
        ("2", "in_progress"),
        ("3", "scheduled"),
        ("6", "complete"),
        ("7", "closed"),
        ("8", "cancelled"),
    ],
)
def test_servicenow_incident_states(code: str, state: str) -> None:
    assert parse_status_update("servicenow", {"sys_id": SYS_ID, "state": code}).state == state


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("new", "waiting_approval"),
        ("pending", "waiting_approval"),
        ("open", "in_progress"),
        ("hold", "scheduled"),
        ("solved", "complete"),
        ("closed", "closed"),
    ],
)
def test_zendesk_statuses(status: str, state: str) -> None:
    body = {"ticket": {"id": 1, "status": status}}
    assert parse_status_update("zendesk", body).state == state


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("Waiting for support", "waiting_approval"),
        ("Awaiting approval", "waiting_approval"),
        ("Awaiting implementation", "approved"),
        ("In Progress", "in_progress"),
        ("Resolved", "complete"),
        ("Done", "complete"),
        ("Closed", "closed"),
        ("Canceled", "cancelled"),
        ("Declined", "cancelled"),
    ],
)
def test_jira_statuses(name: str, state: str) -> None:
    body = {"issue": {"key": "SD-1", "fields": {"status": {"name": name}}}}
    assert parse_status_update("jira", body).state == state


def test_every_mapping_lands_on_a_work_order_state() -> None:
    for table in (SERVICENOW_STATES, JIRA_STATUSES, ZENDESK_STATUSES):
        assert set(table.values()) <= set(ORDER_STATES)
    assert all(name == name.lower() for name in (*JIRA_STATUSES, *ZENDESK_STATUSES))


@pytest.mark.parametrize(
    ("kind", "body", "where", "why"),
    [
        (
            "servicenow",
            {"sys_id": SYS_ID, "state": "4"},
            "body.state",
            "unknown ServiceNow incident state '4'",
        ),
        ("servicenow", {"sys_id": SYS_ID}, "body.state", "missing"),
        ("servicenow", {"sys_id": SYS_ID, "state": 6.0}, "body.state", "expected a string"),
        ("servicenow", {"state": "6", "number": "INC1"}, "body", "names no order"),
        (
            "servicenow",
            {"correlation_id": "x^ORDERBYnumber", "state": "6"},
            "body.correlation_id",
            "not an order id",
        ),
        (
            "jira",
            {"issue": {"key": "SD-1", "fields": {"status": {"name": "Triage"}}}},
            "body.issue.fields.status.name",
            "unknown Jira status 'Triage'",
        ),
        ("jira", {"issue": "SD-1"}, "body.issue", "JSON object"),
        ("jira", {}, "body.issue", "JSON object"),
        (
            "jira",
            {
                "issue": {
                    "key": "SD-1",
                    "fields": {"status": {"name": "Done"}, "labels": ["ew-a", "ew-b"]},
                }
            },
            "body.issue.fields.labels",
            "more than one",
        ),
        (
            "zendesk",
            {"ticket": {"id": 1, "status": "archived"}},
            "body.ticket.status",
            "unknown Zendesk ticket status 'archived'",
        ),
        ("zendesk", {"ticket": {"status": "open"}}, "body", "names no order"),
        ("zendesk", {"detail": [], "event": {}}, "body.detail", "JSON object"),
        ("webhook", {"order_id": ORDER, "state": "done"}, "body.state", "unknown state 'done'"),
        ("webhook", {"order_id": ORDER}, "body.state", "missing"),
        ("webhook", {"data": {"state": "closed"}}, "body", "names no order"),
        ("webhook", [1, 2], "body", "JSON object"),
        ("email", {}, "desk kind", "'email' is not one of"),
    ],
)
def test_refusals_name_the_place(kind: str, body: Any, where: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_status_update(kind, body)
    assert caught.value.where == where
    assert why in caught.value.why


def test_long_notes_are_cut() -> None:
    body = {"order_id": ORDER, "state": "closed", "note": "x" * 10_000}
    assert len(parse_status_update("webhook", body).note) == 4000


# ---- verify, then parse ------------------------------------------------------------------------


SECRET = new_secret()
CONFIG = DeskConfig("servicenow", "https://acme.service-now.com", SECRET, "u", "p")
BODY = json.dumps({"correlation_id": ORDER, "sys_id": SYS_ID, "state": "7"}).encode()


def test_a_signed_post_is_verified_and_parsed() -> None:
    headers = signed_headers(SECRET, "msg_1", NOW, BODY)
    update = verify_and_parse(CONFIG, headers, BODY, NOW + 60)
    assert update == StatusUpdate(ORDER, SYS_ID, "closed", "", "servicenow", "7", "msg_1")
    at = datetime.fromtimestamp(NOW, UTC)
    assert verify_and_parse(CONFIG, headers, BODY, at).message_id == "msg_1"


def test_a_post_signed_during_a_secret_rotation() -> None:
    old = new_secret()
    header = f"{sign(old, 'msg_2', NOW, BODY)} {sign(SECRET, 'msg_2', NOW, BODY)}"
    headers = {"Webhook-Id": "msg_2", "Webhook-Timestamp": str(NOW), "Webhook-Signature": header}
    assert verify_and_parse(CONFIG, headers, BODY, NOW).state == "closed"


@pytest.mark.parametrize(
    ("headers", "body", "now", "where"),
    [
        (signed_headers(new_secret(), "m", NOW, BODY), BODY, NOW, "webhook-signature"),
        (signed_headers(SECRET, "m", NOW, BODY), BODY + b" ", NOW, "webhook-signature"),
        (signed_headers(SECRET, "m", NOW, BODY), BODY, NOW + 301, "webhook-timestamp"),
        ({"webhook-id": "m", "webhook-timestamp": str(NOW)}, BODY, NOW, "webhook-signature"),
    ],
)
def test_a_bad_signature_is_refused_before_the_body_is_read(
    headers: dict[str, str], body: bytes, now: int, where: str
) -> None:
    with pytest.raises(SignatureError) as caught:
        verify_and_parse(CONFIG, headers, body, now)
    assert caught.value.where == where


@pytest.mark.parametrize(
    ("body", "where", "why"),
    [
        (b"state=7", "body", "not JSON"),
        (b'{"sys_id": "x", "state": "4"}', "body.state", "unknown ServiceNow incident state '4'"),
    ],
)
def test_a_signed_body_that_is_no_status_update(body: bytes, where: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        verify_and_parse(CONFIG, signed_headers(SECRET, "m", NOW, body), body, NOW)
    assert not isinstance(caught.value, SignatureError)
    assert caught.value.where == where and why in caught.value.why
