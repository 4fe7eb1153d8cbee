"""Status posts from the service desks on a real (SQLite) registry: every desk kind's body
moves its order, a post is applied once, refusals are recorded, the order is found by our
id or the desk's ticket id and only among the desk's client's orders, and the change goes
to the client's other desks but never back to the desk that posted it."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support.workorder_world import DESK_SECRET, NOW, Business

from cloud.auth.principal import Principal
from cloud.desk.signing import SignatureError, new_secret, signed_headers
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.workorders import inbound, service
from cloud.workorders.inbound import Received
from cloud.workorders.models import (
    Desk,
    DeskInbound,
    InboundOutcome,
    OutboxMessage,
    Source,
    TicketRef,
    WorkOrder,
    WorkOrderEvent,
)
from cloud.workorders.service import OrderPolicy, Trigger

ADMIN = Principal.system()
AT = NOW + timedelta(hours=2)
"""When the desks post (the orders are opened at NOW)."""


def open_order(
    sessions: sessionmaker[Session], device: str, fault: str = "refrigerant_leak"
) -> str:
    result = service.trigger(
        sessions,
        Trigger(device_id=device, fault=fault, source=Source.RISK, at=NOW, p24=0.2, p72=0.8),
        OrderPolicy(),
        now=NOW,
    )
    assert result.order_id is not None, result
    return result.order_id


def add_desk(
    sessions: sessionmaker[Session],
    client_id: str,
    kind: str,
    *,
    secret: str = DESK_SECRET,
    enabled: bool = True,
) -> str:
    with sessions.begin() as s:
        desk = Desk(
            client_id=client_id,
            kind=kind,
            url=f"https://{kind}.example",
            secret=secret,
            options={},
            enabled=enabled,
        )
        s.add(desk)
        s.flush()
        return desk.id


def move(sessions: sessionmaker[Session], order_id: str, *states: str) -> None:
    for state in states:
        with sessions.begin() as s:
            service.transition(s, ADMIN, order_id, state, now=NOW + timedelta(minutes=5))


def post(
    sessions: sessionmaker[Session],
    desk_id: str,
    body: Any,
    *,
    msg_id: str | None = None,
    secret: str = DESK_SECRET,
    now: datetime = AT,
    signed_at: datetime | None = None,
) -> Received:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    headers = signed_headers(
        secret, msg_id or f"msg_{uuid.uuid4().hex}", int((signed_at or now).timestamp()), raw
    )
    return inbound.receive(sessions, desk_id, headers, raw, now=now)


def state_of(sessions: sessionmaker[Session], order_id: str) -> str:
    with sessions() as s:
        order = s.get(WorkOrder, order_id)
        assert order is not None
        return str(order.state)


def events(sessions: sessionmaker[Session], order_id: str) -> list[WorkOrderEvent]:
    with sessions() as s:
        return list(
            s.scalars(
                select(WorkOrderEvent)
                .where(WorkOrderEvent.work_order_id == order_id)
                .order_by(WorkOrderEvent.seq)
            )
        )


def outbox(sessions: sessionmaker[Session], order_id: str) -> list[tuple[str, str, str | None]]:
    """(desk id, event, comment) of the order's messages, oldest first."""
    with sessions() as s:
        return [
            (m.desk_id, m.event, m.comment)
            for m in s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.work_order_id == order_id)
                .order_by(OutboxMessage.id)
            )
        ]


def count(sessions: sessionmaker[Session], model: type, **where: object) -> int:
    with sessions() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.scalar(stmt) or 0)


def completed(kind: str, order_id: str) -> tuple[dict[str, Any], str | None, str]:
    """A body of ``kind`` saying the repair is done: (body, the desk's ticket id, the
    desk's name for the state)."""
    if kind == "webhook":
        return {"order_id": order_id, "state": "complete", "note": "fixed"}, None, "complete"
    if kind == "servicenow":
        body = {
            "correlation_id": order_id,
            "sys_id": "6816f79cc0a8016401c5a33be04be441",
            "number": "INC0010001",
            "state": "6",
            "close_notes": "fixed",
        }
        return body, "6816f79cc0a8016401c5a33be04be441", "6"
    if kind == "jira":
        body = {
            "webhookEvent": "jira:issue_updated",
            "issue": {
                "key": "SD-7",
                "fields": {"status": {"name": "Resolved"}, "labels": ["hvac", f"ew-{order_id}"]},
            },
            "comment": {"body": "fixed"},
        }
        return body, "SD-7", "Resolved"
    assert kind == "zendesk"
    body = {
        "ticket": {"id": 4242, "external_id": order_id, "status": "solved"},
        "comment": "fixed",
    }
    return body, "4242", "solved"


# ---- every kind ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["webhook", "servicenow", "jira", "zendesk"])
def test_each_kind_of_desk_moves_its_order(
    wo_sessions: sessionmaker[Session], biz: Business, kind: str
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    move(wo_sessions, order_id, "approved", "scheduled", "in_progress")
    desk = add_desk(wo_sessions, biz.client_id, kind)
    body, external_id, vendor_state = completed(kind, order_id)

    r = post(wo_sessions, desk, body, msg_id="msg_1")

    assert (r.order_id, r.state_before, r.state_after, r.outcome, r.duplicate) == (
        order_id,
        "in_progress",
        "complete",
        InboundOutcome.MOVED,
        False,
    )
    assert r.number.startswith("WO-") and r.message_id == "msg_1"
    assert state_of(wo_sessions, order_id) == "complete"
    last = events(wo_sessions, order_id)[-1]
    assert (last.kind, last.actor, last.from_state, last.to_state, last.note) == (
        "state_changed",
        f"desk:{desk}",
        "in_progress",
        "complete",
        "fixed",
    )
    assert last.detail == {"desk_kind": kind, "vendor_state": vendor_state, "webhook_id": "msg_1"}
    with wo_sessions() as s:
        tickets = s.scalars(select(TicketRef.external_id).where(TicketRef.desk_id == desk)).all()
        order = s.get(WorkOrder, order_id)
        assert order is not None and order.outcome_note == "fixed"
    assert tickets == ([] if external_id is None else [external_id])


# ---- once ---------------------------------------------------------------------------------


def test_a_replay_is_answered_as_the_first_copy_and_moves_nothing(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    desk = biz.desks[0]
    body = {"order_id": order_id, "state": "approved", "note": "go ahead"}
    first = post(wo_sessions, desk, body, msg_id="msg_once")
    history, messages = events(wo_sessions, order_id), outbox(wo_sessions, order_id)
    move(wo_sessions, order_id, "scheduled")  # the order moves on meanwhile

    again = post(wo_sessions, desk, body, msg_id="msg_once", now=AT + timedelta(hours=1))

    assert first.duplicate is False and again.duplicate is True
    assert (again.state_before, again.state_after, again.outcome) == (
        "waiting_approval",
        "approved",
        InboundOutcome.MOVED,
    )
    assert state_of(wo_sessions, order_id) == "scheduled"  # not back to approved
    assert len(events(wo_sessions, order_id)) == len(history) + 1  # the admin's move only
    assert len(outbox(wo_sessions, order_id)) == len(messages) + 1
    assert count(wo_sessions, DeskInbound, desk_id=desk) == 1
    # another message of the same desk is a new post
    later = {**body, "state": "scheduled"}
    assert post(wo_sessions, desk, later, msg_id="msg_other").outcome is InboundOutcome.COMMENTED


def test_concurrent_copies_of_one_post_apply_once(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    body = {"order_id": order_id, "state": "approved", "note": "go ahead"}
    results: list[Received] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def go() -> None:
        start.wait()
        try:
            r = post(wo_sessions, biz.desks[0], body, msg_id="msg_race")
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(r)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sorted(r.duplicate for r in results) == [False] + [True] * 5
    assert {(r.state_before, r.state_after) for r in results} == {("waiting_approval", "approved")}
    changes = [e for e in events(wo_sessions, order_id) if e.kind == "state_changed"]
    assert len(changes) == 1


# ---- refusals -----------------------------------------------------------------------------


def test_a_move_the_life_cycle_refuses_is_recorded_and_refused_again_on_replay(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    desk = biz.desks[0]
    body = {"order_id": order_id, "state": "complete", "note": "done"}
    history = events(wo_sessions, order_id)

    with pytest.raises(Conflict, match="from waiting_approval to complete") as first:
        post(wo_sessions, desk, body, msg_id="msg_early")
    move(wo_sessions, order_id, "approved", "scheduled", "in_progress")  # now it would be allowed
    with pytest.raises(Conflict) as again:
        post(wo_sessions, desk, body, msg_id="msg_early")

    assert str(again.value) == str(first.value)
    assert state_of(wo_sessions, order_id) == "in_progress"
    assert len(events(wo_sessions, order_id)) == len(history) + 3  # the admin's three moves
    with wo_sessions() as s:
        record = s.scalars(select(DeskInbound).where(DeskInbound.message_id == "msg_early")).one()
    assert (record.outcome, record.from_state, record.to_state, record.requested_state) == (
        InboundOutcome.REJECTED,
        "waiting_approval",
        "waiting_approval",
        "complete",
    )
    # a new message with the same change is judged afresh
    assert post(wo_sessions, desk, body, msg_id="msg_later").state_after == "complete"


def test_an_order_of_another_client_is_not_found(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    theirs = open_order(wo_sessions, biz.other_device, "bearing_wear")
    desk = biz.desks[0]  # Harbour Hotels'
    with pytest.raises(NotFound) as exc:
        post(wo_sessions, desk, {"order_id": theirs, "state": "approved"})
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound) as exc_missing:
        post(wo_sessions, desk, {"order_id": missing, "state": "approved"})
    assert str(exc.value) == f"work order {theirs} not found"
    assert str(exc_missing.value) == f"work order {missing} not found"
    # their own desk may
    mall_desk = add_desk(wo_sessions, biz.other_client_id, "webhook")
    assert post(wo_sessions, mall_desk, {"order_id": theirs, "state": "approved"}).state_after == (
        "approved"
    )
    assert count(wo_sessions, DeskInbound, desk_id=desk) == 0


# ---- finding the order --------------------------------------------------------------------


def test_the_order_is_found_by_the_desks_ticket_id(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    desk = add_desk(wo_sessions, biz.client_id, "jira")
    with wo_sessions.begin() as s:  # as the delivery worker records it
        s.add(TicketRef(work_order_id=order_id, desk_id=desk, external_id="SD-9"))
    body = {"issue": {"key": "SD-9", "fields": {"status": {"name": "Approved"}, "labels": []}}}

    r = post(wo_sessions, desk, body)

    assert (r.order_id, r.state_after) == (order_id, "approved")
    unknown = {"issue": {"key": "SD-404", "fields": {"status": {"name": "Approved"}}}}
    with pytest.raises(NotFound, match="no work order has ticket SD-404 at this desk"):
        post(wo_sessions, desk, unknown)
    # the same ticket id at another desk names nothing
    other = add_desk(wo_sessions, biz.client_id, "jira")
    with pytest.raises(NotFound):
        post(wo_sessions, other, body)


def test_a_new_ticket_id_is_recorded_and_must_agree_afterwards(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    second = open_order(wo_sessions, biz.devices[2])
    desk = add_desk(wo_sessions, biz.client_id, "zendesk")

    def ticket(order: str, ticket_id: int, status: str = "new") -> dict[str, Any]:
        return {"ticket": {"id": ticket_id, "external_id": order, "status": status}}

    assert post(wo_sessions, desk, ticket(order_id, 77)).outcome is InboundOutcome.UNCHANGED
    with wo_sessions() as s:
        refs = s.scalars(select(TicketRef).where(TicketRef.desk_id == desk)).all()
        assert [(t.work_order_id, t.external_id) for t in refs] == [(order_id, "77")]
    # now known: found by the ticket id alone
    assert post(wo_sessions, desk, ticket("", 77)).order_id == order_id
    with pytest.raises(Conflict, match="the order's ticket at this desk is 77"):
        post(wo_sessions, desk, ticket(order_id, 78))
    with pytest.raises(Conflict, match=f"that ticket is work order {order_id}'s"):
        post(wo_sessions, desk, ticket(second, 77))
    assert count(wo_sessions, TicketRef, desk_id=desk) == 1


# ---- notes and echoes ---------------------------------------------------------------------


def test_a_note_in_the_same_state_becomes_a_comment(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    desk, other = biz.desks[0], add_desk(wo_sessions, biz.client_id, "servicenow")
    before = outbox(wo_sessions, order_id)
    body = {"correlation_id": order_id, "state": "New", "work_notes": "waiting for the owner"}

    r = post(wo_sessions, other, body)

    assert (r.outcome, r.state_before, r.state_after) == (
        InboundOutcome.COMMENTED,
        "waiting_approval",
        "waiting_approval",
    )
    last = events(wo_sessions, order_id)[-1]
    assert (last.kind, last.actor, last.note) == (
        "commented",
        f"desk:{other}",
        "waiting for the owner",
    )
    assert last.detail is not None and last.detail["vendor_state"] == "New"
    assert outbox(wo_sessions, order_id)[len(before) :] == [
        (desk, "commented", "waiting for the owner")
    ]
    # no note: nothing at all happens to the order
    n = len(events(wo_sessions, order_id))
    assert post(wo_sessions, other, {"correlation_id": order_id, "state": "1"}).outcome is (
        InboundOutcome.UNCHANGED
    )
    assert len(events(wo_sessions, order_id)) == n


def test_a_change_goes_to_the_clients_other_desks_but_not_back(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    posting, second = biz.desks[0], add_desk(wo_sessions, biz.client_id, "jira")
    before = outbox(wo_sessions, order_id)

    post(wo_sessions, posting, {"order_id": order_id, "state": "approved", "note": "ok"})

    assert outbox(wo_sessions, order_id)[len(before) :] == [(second, "state_changed", "ok")]


# ---- who may post -------------------------------------------------------------------------


def test_an_unknown_or_disabled_desk_is_refused_as_a_wrong_signature_is(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    body = {"order_id": order_id, "state": "approved"}
    disabled = add_desk(wo_sessions, biz.client_id, "webhook", enabled=False)

    def refusal(desk_id: str, **kwargs: Any) -> str:
        with pytest.raises(SignatureError) as exc:
            post(wo_sessions, desk_id, body, **kwargs)
        return str(exc.value)

    wrong = refusal(biz.desks[0], secret=new_secret())
    assert wrong.startswith("webhook-signature: none of 1 v1 signature(s) matches")
    assert refusal(str(uuid.uuid4())) == wrong
    assert refusal(disabled) == wrong
    stale = refusal(biz.desks[0], signed_at=AT - timedelta(minutes=6))
    assert stale.startswith("webhook-timestamp: 360 s behind")
    assert refusal(str(uuid.uuid4()), signed_at=AT - timedelta(minutes=6)) == stale
    assert state_of(wo_sessions, order_id) == "waiting_approval"


def test_a_desk_whose_secret_is_unusable_is_refused_and_reported_once(
    wo_sessions: sessionmaker[Session], biz: Business, caplog: pytest.LogCaptureFixture
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    unusable = "not-a-whsec-secret"
    broken = add_desk(wo_sessions, biz.client_id, "webhook", secret=unusable)
    body = {"order_id": order_id, "state": "approved"}
    with caplog.at_level(logging.DEBUG, logger="cloud.workorders.inbound"):
        for _ in range(2):
            with pytest.raises(SignatureError, match=r"^webhook-signature: none of"):
                post(wo_sessions, broken, body, secret=DESK_SECRET)
    reports = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert [r.levelno for r in reports] == [logging.ERROR, logging.DEBUG]
    assert unusable not in caplog.text


def test_an_overlong_webhook_id_is_refused(
    wo_sessions: sessionmaker[Session], biz: Business
) -> None:
    order_id = open_order(wo_sessions, biz.devices[1])
    with pytest.raises(InvalidInput) as exc:
        post(
            wo_sessions, biz.desks[0], {"order_id": order_id, "state": "approved"}, msg_id="m" * 201
        )
    assert exc.value.where == "webhook-id"
