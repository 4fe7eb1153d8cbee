"""A service desk's status post, applied to its work order.

:func:`receive` takes the raw headers and body of ``POST /v1/desks/{desk_id}/status``
(:mod:`cloud.api.desk_inbound`) and, in one transaction:

1. **Who**: the desk must exist and be enabled, and the post must carry a valid Standard
   Webhooks signature made with the desk's secret. A post to an unknown or disabled desk
   is refused exactly as one with a wrong signature
   (:func:`cloud.desk.inbound.refuse_unknown_desk`): both raise
   :class:`~cloud.desk.signing.SignatureError`, so unsigned posts cannot probe desk ids.
2. **What**: the body is parsed by the desk's kind
   (:func:`cloud.desk.inbound.verify_and_parse`; :class:`~cloud.errors.InvalidInput`
   naming the place in the body).
3. **Once**: the post's ``webhook-id`` is recorded per desk
   (:class:`~cloud.workorders.models.DeskInbound`, unique). A replay is answered from the
   record with ``duplicate`` set and moves nothing; a replay of a rejected post gets the
   same :class:`~cloud.errors.Conflict`. Concurrent copies of one post all insert the
   record; every one but the first fails on the unique index, is retried and finds the
   first one's record.
4. **Which order**: ``order_id`` when the desk sent it (it must be an order of the desk's
   client, else :class:`~cloud.errors.NotFound`), else the desk's ticket
   (:class:`~cloud.workorders.models.TicketRef`) with that ``external_id``. An order id
   and a ticket id that name different orders are a :class:`~cloud.errors.Conflict`; a
   ticket id the desk has no ticket recorded for yet is recorded as the order's ticket.
5. **Apply**: an order in the requested state already gets the post's note (if any) as
   a comment; an allowed move is made (:func:`cloud.workorders.service.transition`); a
   move the life cycle refuses is a :class:`~cloud.errors.Conflict` naming both states
   and is recorded as rejected. The actor is ``desk:<id>``, the history event carries the
   desk's kind, its name for the state and the ``webhook-id``, and the change goes to
   the client's other desks, never back to the desk that posted it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth.principal import Principal
from cloud.db import translate_errors
from cloud.desk.inbound import StatusUpdate, refuse_unknown_desk, verify_and_parse
from cloud.desk.signing import ID_HEADER, TOLERANCE_S, SignatureError, secret_key
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.workorders import policy, service
from cloud.workorders.models import Desk, DeskInbound, InboundOutcome, TicketRef, WorkOrder
from cloud.workorders.policy import State

log = logging.getLogger(__name__)

ATTEMPTS: Final = 5
MAX_MESSAGE_ID_CHARS: Final = 200
SYSTEM: Final = Principal.system()
"""The desk acts with the system's rights, confined to its client's orders by
:func:`_resolve`, and is named as the actor of every change it makes."""

POSTS = Counter(
    "edgewatch_desk_posts_total",
    "Status posts from service desks, by what they did (duplicate: answered from the record)",
    ["outcome"],
)

_bad_secrets: dict[str, int] = {}


@dataclass(frozen=True, slots=True)
class Received:
    """What a status post did (or, for a replay, what its first copy did)."""

    order_id: str
    number: str
    """``WO-000042``."""
    state_before: str
    state_after: str
    outcome: InboundOutcome
    duplicate: bool
    message_id: str


@dataclass(frozen=True, slots=True)
class _Answer:
    received: Received
    refusal: str | None = None
    """For a rejected move: the Conflict's message, raised after the commit."""


def receive(
    sessions: sessionmaker[Session],
    desk_id: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> Received:
    """Verify, deduplicate and apply one status post of the desk ``desk_id`` (see the
    module docstring). Raises :class:`~cloud.desk.signing.SignatureError` (not the desk,
    or not its signature), :class:`~cloud.errors.InvalidInput` (not a status update),
    :class:`~cloud.errors.NotFound` (no such order of the desk's client) and
    :class:`~cloud.errors.Conflict` (the life cycle refuses the move, or the post names
    two different orders)."""
    when = now or datetime.now(UTC)
    delay = 0.005
    for attempt in range(ATTEMPTS):
        session = sessions()
        try:
            answer = _receive_once(session, desk_id, headers, body, when, tolerance_s)
            session.commit()
        except (IntegrityError, OperationalError, DataError) as exc:
            session.rollback()
            if attempt == ATTEMPTS - 1 or not _transient(exc):
                with translate_errors():
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        received = answer.received
        POSTS.labels("duplicate" if received.duplicate else received.outcome.value).inc()
        if answer.refusal is not None:
            raise Conflict(answer.refusal)
        return received
    raise AssertionError("unreachable")


def _transient(exc: Exception) -> bool:
    """A lost race: a copy of the post or a ticket recorded meanwhile (unique index), or
    the database's lock (SQLite) or serialization (PostgreSQL)."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, DataError):
        return False
    text = str(getattr(exc, "orig", exc)).lower()
    return "locked" in text or "deadlock" in text or "could not serialize" in text


def _receive_once(
    session: Session,
    desk_id: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    tolerance_s: float,
) -> _Answer:
    desk = session.get(Desk, desk_id)
    if desk is None or not desk.enabled:
        log.debug("status post to desk %s refused: no such enabled desk", desk_id)
        refuse_unknown_desk(headers, body, now, tolerance_s)
    try:
        secret_key(desk.secret)
    except SignatureError as exc:
        _report_bad_secret(desk.id, exc)
        refuse_unknown_desk(headers, body, now, tolerance_s)
    update = verify_and_parse(desk.config(), headers, body, now, tolerance_s)
    message_id = update.message_id or ""
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise InvalidInput(ID_HEADER, f"at most {MAX_MESSAGE_ID_CHARS} characters")

    seen = session.scalars(
        select(DeskInbound).where(
            DeskInbound.desk_id == desk.id, DeskInbound.message_id == message_id
        )
    ).first()
    if seen is not None:
        return _replay(session, seen)

    order_id, new_ticket = _resolve(session, desk, update)
    record = DeskInbound(
        desk_id=desk.id,
        message_id=message_id,
        received_at=now,
        work_order_id=order_id,
        requested_state=update.state,
        vendor_state=update.vendor_state,
        # Placeholders until the order is locked and read, below, in this transaction.
        outcome=InboundOutcome.UNCHANGED,
        from_state=update.state,
        to_state=update.state,
    )
    session.add(record)
    if new_ticket and update.external_id is not None:
        session.add(
            TicketRef(
                work_order_id=order_id,
                desk_id=desk.id,
                external_id=update.external_id,
                created_at=now,
            )
        )
    session.flush()  # a copy of this post, or a ticket recorded meanwhile: retried

    order = service.get_order(session, SYSTEM, order_id, lock=True)
    current, target = State(order.state), State(update.state)
    record.from_state = record.to_state = current
    actor = f"desk:{desk.id}"
    detail = {
        "desk_kind": update.desk_kind,
        "vendor_state": update.vendor_state,
        "webhook_id": message_id,
    }
    refusal: str | None = None
    if target is current:
        if update.note:
            service.comment(
                session,
                SYSTEM,
                order.id,
                update.note,
                actor=actor,
                from_desk=desk.id,
                now=now,
                detail=detail,
            )
            record.outcome = InboundOutcome.COMMENTED
    else:
        try:
            policy.check_transition(current, target)
        except Conflict as exc:
            refusal = str(exc)
            record.outcome, record.detail = InboundOutcome.REJECTED, refusal
        else:
            service.transition(
                session,
                SYSTEM,
                order.id,
                target,
                note=update.note or None,
                actor=actor,
                from_desk=desk.id,
                now=now,
                detail=detail,
            )
            record.outcome, record.to_state = InboundOutcome.MOVED, target
    session.flush()
    log.debug(
        "desk %s post %s: order %s %s, %s → %s",
        desk.id,
        message_id,
        order.id,
        record.outcome,
        record.from_state,
        record.to_state,
    )
    return _Answer(_received(record, order, duplicate=False), refusal)


def _replay(session: Session, seen: DeskInbound) -> _Answer:
    """The answer the first copy of a post got; nothing changes."""
    order = session.get(WorkOrder, seen.work_order_id)
    if order is None:  # pragma: no cover - the record is deleted with its order
        raise NotFound(f"work order {seen.work_order_id} not found")
    log.debug("desk %s post %s: a replay, answered from the record", seen.desk_id, seen.message_id)
    refusal = seen.detail if seen.outcome is InboundOutcome.REJECTED else None
    return _Answer(_received(seen, order, duplicate=True), refusal)


def _received(record: DeskInbound, order: WorkOrder, *, duplicate: bool) -> Received:
    return Received(
        order_id=order.id,
        number=service.order_number(order.number),
        state_before=str(record.from_state),
        state_after=str(record.to_state),
        outcome=InboundOutcome(record.outcome),
        duplicate=duplicate,
        message_id=record.message_id,
    )


def _resolve(session: Session, desk: Desk, update: StatusUpdate) -> tuple[str, bool]:
    """The id of the order the post is about (one of the desk's client's), and whether
    ``update.external_id`` is a ticket to record (the desk has none for the order yet)."""
    by_ticket: list[str] = []
    if update.external_id is not None:
        by_ticket = list(
            session.scalars(
                select(TicketRef.work_order_id)
                .join(WorkOrder, WorkOrder.id == TicketRef.work_order_id)
                .where(
                    TicketRef.desk_id == desk.id,
                    TicketRef.external_id == update.external_id,
                    WorkOrder.client_id == desk.client_id,
                )
                .distinct()
            )
        )
        if len(by_ticket) > 1:
            raise Conflict(
                f"ticket {update.external_id} at this desk is the ticket of "
                f"{len(by_ticket)} work orders; send the order id"
            )
    if update.order_id is None:
        if not by_ticket:
            raise NotFound(f"no work order has ticket {update.external_id} at this desk")
        return by_ticket[0], False
    owner = session.scalar(select(WorkOrder.client_id).where(WorkOrder.id == update.order_id))
    if owner is None or owner != desk.client_id:
        raise NotFound(f"work order {update.order_id} not found")
    if update.external_id is None:
        return update.order_id, False
    if by_ticket and by_ticket[0] != update.order_id:
        raise Conflict(
            f"the body names work order {update.order_id} and ticket {update.external_id}, "
            f"but that ticket is work order {by_ticket[0]}'s at this desk"
        )
    known = session.scalar(
        select(TicketRef.external_id).where(
            TicketRef.work_order_id == update.order_id, TicketRef.desk_id == desk.id
        )
    )
    if known is not None and known != update.external_id:
        raise Conflict(
            f"the body names work order {update.order_id} and ticket {update.external_id}, "
            f"but the order's ticket at this desk is {known}"
        )
    return update.order_id, known is None


def _report_bad_secret(desk_id: str, exc: SignatureError) -> None:
    """The first time at ERROR (the operator must give the desk a new secret), then DEBUG."""
    count = _bad_secrets[desk_id] = _bad_secrets.get(desk_id, 0) + 1
    log.log(
        logging.ERROR if count == 1 else logging.DEBUG,
        "desk %s: its signing secret is unusable (%s); its status posts are refused (%d so far)",
        desk_id,
        exc.why,
        count,
    )
