"""Delivery workers: the outbox's messages to the service desks, exactly one ticket per order.

Any number of workers (threads or processes) share the outbox. A worker *claims* due
messages by setting a lease (``locked_until``) in a short transaction, delivers them
outside any transaction, then records the outcome and the attempt. A worker killed
between the two leaves its messages leased; after the lease they are claimed again and
re-sent with the same delivery id, which every adapter makes harmless: the webhook
receiver deduplicates by ``webhook-id``, the vendor adapters look the ticket up by our
order id before creating one (and Zendesk also honours the idempotency key).

A batch to a slow desk can outlast its lease, and another worker may then claim the rest
of it: two workers delivering one message at once could both find no ticket and both
create one. So a worker renews the lease on each message just before delivering it and
skips the messages that are no longer its own; one delivery must fit in the lease.

Order: a message is only claimed when no older message of the same order to the same
desk is still pending, so a desk sees "created" before "updated" and state changes in
the order they happened.

Retries: a retryable failure (timeout, 5xx, 429) is tried again after an exponential,
jittered backoff (or the desk's ``Retry-After`` when longer) until the message is
``max_age`` old (72 h by default); then, or on a permanent refusal (another 4xx), the
message is ``failed``. Every attempt is a :class:`~cloud.workorders.models.DeliveryAttempt`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Counter, Histogram
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased, sessionmaker

from cloud.desk.tickets import DeskAdapter, DeskConfig, Outcome, Ticket, make_adapter
from cloud.errors import CloudError, ConfigError
from cloud.registry.models import Device, Site
from cloud.workorders.models import (
    DeliveryAttempt,
    DeliveryState,
    Desk,
    OutboxMessage,
    TicketRef,
    WorkOrder,
)
from cloud.workorders.service import order_number

log = logging.getLogger(__name__)

DELIVERIES = Counter("edgewatch_deliveries_total", "Delivery attempts", ["kind", "result"])
DELIVERY_SECONDS = Histogram("edgewatch_delivery_seconds", "Duration of one delivery", ["kind"])

BASE_BACKOFF_S = 5.0
MAX_BACKOFF_S = 3600.0


def backoff_s(attempts: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 5 s doubling to an hour,
    jittered in its upper half; at least the desk's ``Retry-After``."""
    ceiling = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2.0 ** min(max(attempts - 1, 0), 20))
    wait = ceiling / 2 + rng.uniform(0, ceiling / 2)
    return max(wait, retry_after_s or 0.0)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    desk_id: str
    work_order_id: str
    event: str
    comment: str | None
    attempts: int
    created_at: datetime


class DeliveryWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        name: str = "delivery",
        max_age: timedelta = timedelta(hours=72),
        lease_s: float = 60.0,
        timeout_s: float = 10.0,
        batch: int = 20,
        clock: Callable[[], float] = time.time,
        adapter_factory: Callable[[DeskConfig, httpx.Client], DeskAdapter] | None = None,
        seed: int | None = None,
    ) -> None:
        self.sessions = sessions
        self.name = name
        self.max_age = max_age
        self.lease = timedelta(seconds=lease_s)
        self.timeout_s = timeout_s
        self.batch = batch
        self.clock = clock
        self._factory = adapter_factory or (
            lambda cfg, client: make_adapter(cfg, client, clock=clock)
        )
        self._client = httpx.Client(timeout=timeout_s)
        self._adapters: dict[str, tuple[Any, DeskAdapter]] = {}
        self._rng = random.Random(seed)  # noqa: S311 - backoff jitter, not a secret

    def close(self) -> None:
        for _, adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()
        self._client.close()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- claim ---------------------------------------------------------------------------
    def claim(self, limit: int | None = None) -> list[Claimed]:
        """Lease up to ``limit`` due messages (oldest first, one at a time per order and
        desk); :data:`SKIP LOCKED` on PostgreSQL, SQLite's single writer elsewhere."""
        now = self._now()
        # Claimable: the oldest pending message of its order and desk, asked of each
        # candidate the scan reaches (a subquery per row on the (order, desk, id) index;
        # a NOT EXISTS may be planned as a join against every pending message).
        older = aliased(OutboxMessage)
        first_pending = (
            select(func.min(older.id))
            .where(
                older.work_order_id == OutboxMessage.work_order_id,
                older.desk_id == OutboxMessage.desk_id,
                older.state == DeliveryState.PENDING,
            )
            .scalar_subquery()
        )
        stmt = (
            select(OutboxMessage)
            .where(
                OutboxMessage.state == DeliveryState.PENDING,
                OutboxMessage.next_attempt_at <= now,
                or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until < now),
                OutboxMessage.id == first_pending,
            )
            .order_by(OutboxMessage.id)
            .limit(limit or self.batch)
            .with_for_update(skip_locked=True)
        )
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Walk the pending messages in id order (the (state, id) index) and stop
                # at the batch. Left to itself the planner may read every due message and
                # sort them: statistics taken before a burst say pending ones are few,
                # and with thousands pending each claim then costs tens of milliseconds.
                session.execute(text("SET LOCAL enable_sort = off"))
            rows = list(session.scalars(stmt))
            for m in rows:
                m.locked_until = now + self.lease
                m.locked_by = self.name
            return [
                Claimed(
                    m.id, m.desk_id, m.work_order_id, m.event, m.comment, m.attempts, m.created_at
                )
                for m in rows
            ]

    def renew(self, msg: Claimed) -> bool:
        """Extend the lease on ``msg`` to a full lease from now; False (and nothing
        changed) when it is no longer this worker's: delivered, or claimed by another
        worker after this one's lease ran out."""
        with self.sessions.begin() as session:
            renewed = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == msg.id,
                    OutboxMessage.locked_by == self.name,
                    OutboxMessage.state == DeliveryState.PENDING,
                )
                .values(locked_until=self._now() + self.lease)
                .returning(OutboxMessage.id)
            ).first()
        return renewed is not None

    # -- deliver -------------------------------------------------------------------------
    def _adapter(self, session: Session, desk_id: str) -> DeskAdapter | None:
        desk = session.get(Desk, desk_id)
        if desk is None or not desk.enabled:
            return None
        key = (
            desk.kind,
            desk.url,
            desk.username,
            desk.token,
            desk.secret,
            tuple(sorted((desk.options or {}).items())),
        )
        cached = self._adapters.get(desk_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        adapter = self._factory(desk.config(timeout_s=self.timeout_s), self._client)
        if cached is not None:
            cached[1].close()
        self._adapters[desk_id] = (key, adapter)
        return adapter

    def deliver(self, msg: Claimed) -> Outcome:
        """One attempt at one claimed message; its outcome recorded."""
        with self.sessions() as session:
            try:
                adapter = self._adapter(session, msg.desk_id)
            except ConfigError as exc:  # the operator can fix the desk: keep retrying
                outcome = Outcome(ok=False, detail=f"the desk is misconfigured: {exc}")
                self._record(msg, outcome, 0.0)
                return outcome
            ticket = build_ticket(session, msg)
            ref = session.scalars(
                select(TicketRef.external_id).where(
                    TicketRef.work_order_id == msg.work_order_id, TicketRef.desk_id == msg.desk_id
                )
            ).first()
        started = time.perf_counter()
        if adapter is None:
            outcome = Outcome(ok=False, permanent=True, detail="the desk is disabled or gone")
            kind = "none"
        else:
            kind = adapter.kind
            outcome = adapter.deliver(
                ticket, delivery_id=f"ew-{msg.id}", attempt=msg.attempts + 1, external_id=ref
            )
        took = time.perf_counter() - started
        DELIVERY_SECONDS.labels(kind).observe(took)
        self._record(msg, outcome, took)
        return outcome

    def _record(self, msg: Claimed, outcome: Outcome, took_s: float) -> None:
        now = self._now()
        attempts = msg.attempts + 1
        if outcome.ok:
            values: dict[str, Any] = {
                "state": DeliveryState.DELIVERED,
                "delivered_at": now,
                "last_error": None,
            }
            result = "delivered"
        elif outcome.permanent or now - msg.created_at >= self.max_age:
            values = {"state": DeliveryState.FAILED, "last_error": outcome.detail[:2000]}
            result = "failed"
            log.error(
                "delivery %d of order %s to desk %s failed for good after %d attempts: %s",
                msg.id,
                msg.work_order_id,
                msg.desk_id,
                attempts,
                outcome.detail,
            )
        else:
            wait = backoff_s(attempts, outcome.retry_after_s, self._rng)
            values = {
                "next_attempt_at": now + timedelta(seconds=wait),
                "last_error": outcome.detail[:2000],
            }
            result = "retry"
        DELIVERIES.labels(outcome.status_code or "none", result).inc()
        with self.sessions.begin() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == msg.id, OutboxMessage.locked_by == self.name)
                .values(attempts=attempts, locked_until=None, locked_by=None, **values)
            )
            session.add(
                DeliveryAttempt(
                    outbox_id=msg.id,
                    attempt=attempts,
                    at=now,
                    worker=self.name,
                    ok=outcome.ok,
                    status_code=outcome.status_code,
                    duration_ms=round(took_s * 1000, 3),
                    detail=outcome.detail[:2000],
                )
            )
            if outcome.external_id:
                have = session.scalars(
                    select(TicketRef).where(
                        TicketRef.work_order_id == msg.work_order_id,
                        TicketRef.desk_id == msg.desk_id,
                    )
                ).first()
                if have is None:
                    session.add(
                        TicketRef(
                            work_order_id=msg.work_order_id,
                            desk_id=msg.desk_id,
                            external_id=outcome.external_id,
                            external_ref=outcome.external_ref,
                        )
                    )

    # -- loops ---------------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim and deliver one batch; how many messages were claimed."""
        claimed = self.claim()
        for msg in claimed:
            if not self.renew(msg):
                log.debug("delivery %d: taken over by another worker, skipped", msg.id)
                continue
            try:
                self.deliver(msg)
            except CloudError as exc:
                log.warning("delivery %d: %s (retried after the lease)", msg.id, exc)
        return len(claimed)

    def run(self, stop: threading.Event, idle_s: float = 0.5) -> None:
        """Rounds until ``stop`` is set; a database outage is logged and retried."""
        while not stop.is_set():
            try:
                n = self.run_once()
            except (CloudError, SQLAlchemyError) as exc:
                log.warning("delivery round failed, retrying: %s", " ".join(str(exc).split())[:300])
                n = 0
            if n == 0:
                stop.wait(idle_s)


# -- what a desk receives ---------------------------------------------------------------
def build_ticket(session: Session, msg: Claimed) -> Ticket:
    """The ticket for one message, from the order as it is now (a retry sends the newest)."""
    row = session.execute(
        select(WorkOrder, Device, Site)
        .join(Device, WorkOrder.device_id == Device.id)
        .join(Site, WorkOrder.site_id == Site.id)
        .where(WorkOrder.id == msg.work_order_id)
    ).first()
    if row is None:
        raise CloudError(f"work order {msg.work_order_id} is gone")
    order, device, site = row
    number = order_number(order.number)
    where = f"{device.name} ({device.asset_type}) at {site.name}"
    title = f"{number} P{order.priority}: {order.problem} — {where}"
    lines = [
        f"Predicted fault: {order.fault}",
        f"Problem: {order.problem}",
        f"Likely cause: {order.cause}",
        f"Remedy: {order.remedy}",
    ]
    risk = order.evidence.get("risk") or {}
    p_alert, alert_h = risk.get("p_alert"), risk.get("alert_horizon_h")
    if order.p72 is not None:
        lines.append(
            f"Risk: P(failure ≤ 24 h) {order.p24 or 0:.0%}, ≤ 72 h {order.p72:.0%}"
            + (
                f", ≤ {alert_h:g} h {p_alert:.0%}"
                if isinstance(p_alert, float) and isinstance(alert_h, float | int)
                else ""
            )
            + (f", expected within {order.lead_time_h:g} h" if order.lead_time_h else "")
        )
    lines += [
        f"Asset: {device.make or ''} {device.model or ''} serial {device.serial or '-'}, "
        f"criticality {device.criticality}, location {device.location or '-'}",
        f"Occupants: {', '.join(device.occupant_flags or []) or '-'}",
        f"Skills: {', '.join(order.skills) or '-'}; parts: "
        + (", ".join(f"{n} × {q}" for n, q in sorted(order.parts.items())) or "-"),
        f"SLA due: {order.sla_due_at.isoformat()}",
        f"Charts: {order.evidence.get('charts', '-')}",
    ]
    payload = {
        "id": order.id,
        "number": number,
        "state": str(order.state),
        "priority": order.priority,
        "fault": order.fault,
        "source": str(order.source),
        "failure_code": {"problem": order.problem, "cause": order.cause, "remedy": order.remedy},
        "risk": {
            "p24": order.p24,
            "p72": order.p72,
            "p_alert": p_alert,
            "alert_horizon_h": alert_h,
            "health": order.health,
            "lead_time_h": order.lead_time_h,
            "at": order.risk_at.isoformat() if order.risk_at else None,
        },
        "device": {
            "id": device.id,
            "name": device.name,
            "asset_type": device.asset_type,
            "make": device.make,
            "model": device.model,
            "serial": device.serial,
            "criticality": str(device.criticality),
            "location": device.location,
            "occupant_flags": list(device.occupant_flags or []),
        },
        "site": {
            "id": site.id,
            "name": site.name,
            "address": site.address,
            "latitude": site.latitude,
            "longitude": site.longitude,
        },
        "skills": list(order.skills),
        "parts": dict(order.parts),
        "suggested_technician_id": order.suggested_technician_id,
        "assigned_technician_id": order.assigned_technician_id,
        "sla_due_at": order.sla_due_at.isoformat(),
        "opened_at": order.opened_at.isoformat(),
        "evidence": order.evidence,
        "event": msg.event,
        "comment": msg.comment,
    }
    return Ticket(
        order_id=order.id,
        number=number,
        event=msg.event,  # type: ignore[arg-type]
        title=title,
        description="\n".join(lines),
        priority=order.priority,
        state=str(order.state),
        due_at=order.sla_due_at,
        comment=msg.comment,
        payload=payload,
    )


def pending(session: Session) -> int:
    """Messages not yet delivered nor failed."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.state == DeliveryState.PENDING)
        )
        or 0
    )
