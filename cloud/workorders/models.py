"""Work orders, parts, technicians, service desks and the delivery outbox (SQLAlchemy 2).

Same conventions as :mod:`cloud.registry.models` (one ``Base``, named constraints,
:class:`UtcDateTime` times, migrations in ``cloud/migrations``).

*One open risk order per device, and one per device and alarm* is a database rule, not a
check in Python: an open order has ``open_key = "<device id>|risk"`` (the risk model gives
one failure probability per device; the fault it names may change while the order is
open) or ``"<device id>|<alarm fault>"``, a closed or cancelled one has ``open_key =
NULL``, and ``open_key`` is unique (NULLs never collide, on SQLite and on PostgreSQL).
Two scorer processes that race to open the same order both insert; one insert fails on
the index and that caller updates the winner's order instead.

The outbox is written in the transaction that changes the order: a delivery exists if
and only if the change was committed. Delivery workers claim due messages with a lease
(``locked_until``), so a killed worker's messages are picked up again after the lease.

A desk's status posts are remembered by their ``webhook-id`` (:class:`DeskInbound`, unique
per desk): the first post of a message is applied, a replay or a concurrent copy of it
fails on the unique index and is answered from the stored outcome
(:mod:`cloud.workorders.inbound`).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.desk.tickets import DeskConfig, DeskKind
from cloud.registry.models import Base, Device, _enum, new_id, utcnow
from cloud.workorders.policy import State

RISK_KEY = "risk"
"""What stands for the fault in the ``open_key`` of a risk order."""


def open_key(device_id: str, fault: str, source: Source) -> str:
    """The key of the open order a trigger for ``device_id`` and ``fault`` goes to."""
    return f"{device_id}|{RISK_KEY if source is Source.RISK else fault}"


class Source(enum.StrEnum):
    RISK = "risk"
    ALARM = "alarm"
    MANUAL = "manual"


class WorkOrder(Base):
    __tablename__ = "work_orders"
    __table_args__ = (
        Index(None, "client_id", "state"),
        Index(None, "device_id", "fault", "closed_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    """Shown as ``WO-000042``; allocated from ``work_order_numbers``."""
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="RESTRICT"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="RESTRICT"))
    fault: Mapped[str] = mapped_column(String(96))
    """The predicted fault type, or ``alarm:<name>`` for an order opened on a local alarm."""
    source: Mapped[Source] = mapped_column(_enum(Source, "work_order_source"))
    state: Mapped[State] = mapped_column(_enum(State, "work_order_state"))
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    priority: Mapped[int] = mapped_column(Integer)
    p24: Mapped[float | None] = mapped_column(Float)
    p72: Mapped[float | None] = mapped_column(Float)
    health: Mapped[int | None] = mapped_column(Integer)
    lead_time_h: Mapped[float | None] = mapped_column(Float)
    risk_at: Mapped[datetime | None] = mapped_column()
    """When the risk that opened or last raised the order was computed (window end)."""
    problem: Mapped[str] = mapped_column(Text)
    cause: Mapped[str] = mapped_column(Text)
    remedy: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Top signals with their share and trend, the alarm that opened it, chart links."""
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    parts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    suggested_technician_id: Mapped[str | None] = mapped_column(
        ForeignKey("technicians.id", ondelete="SET NULL")
    )
    suggestion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    assigned_technician_id: Mapped[str | None] = mapped_column(
        ForeignKey("technicians.id", ondelete="SET NULL"), index=True
    )
    """The desk's choice; it overrides the suggestion."""
    sla_due_at: Mapped[datetime] = mapped_column()
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()
    """When it was closed or cancelled (starts the cool-down)."""
    failure_prevented: Mapped[bool | None] = mapped_column(Boolean)
    """Recorded after the repair: did the visit prevent the failure (model feedback)."""
    outcome_note: Mapped[str | None] = mapped_column(Text)

    device: Mapped[Device] = relationship()
    events: Mapped[list[WorkOrderEvent]] = relationship(
        back_populates="order", order_by="WorkOrderEvent.seq", passive_deletes=True
    )


class WorkOrderNumber(Base):
    """One row per allocated number: the portable sequence (SQLite has no SEQUENCE)."""

    __tablename__ = "work_order_numbers"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)


class WorkOrderEvent(Base):
    """The order's history: opened, risk raised, state changes, comments, assignment."""

    __tablename__ = "work_order_events"
    __table_args__ = (UniqueConstraint("work_order_id", "seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    """opened | updated | state_changed | commented | assigned | parts_reserved"""
    actor: Mapped[str] = mapped_column(String(200))
    """``scorer``, ``desk:<id>`` or ``user:<id>``."""
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    order: Mapped[WorkOrder] = relationship(back_populates="events")


class Depot(Base):
    __tablename__ = "depots"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)


class Part(Base):
    __tablename__ = "parts"

    number: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    unit_cost: Mapped[float | None] = mapped_column(Float)


class Stock(Base):
    __tablename__ = "stock"

    depot_id: Mapped[str] = mapped_column(
        ForeignKey("depots.id", ondelete="CASCADE"), primary_key=True
    )
    part_number: Mapped[str] = mapped_column(
        ForeignKey("parts.number", ondelete="CASCADE"), primary_key=True
    )
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)


class Reservation(Base):
    """Parts held for an order at one depot; ``short`` is what the depot could not give."""

    __tablename__ = "reservations"
    __table_args__ = (UniqueConstraint("work_order_id", "part_number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"))
    part_number: Mapped[str] = mapped_column(ForeignKey("parts.number", ondelete="RESTRICT"))
    depot_id: Mapped[str | None] = mapped_column(ForeignKey("depots.id", ondelete="SET NULL"))
    quantity: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer)
    short: Mapped[int] = mapped_column(Integer)
    released: Mapped[bool] = mapped_column(Boolean, default=False)


class Technician(Base):
    __tablename__ = "technicians"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    depot_id: Mapped[str | None] = mapped_column(ForeignKey("depots.id", ondelete="SET NULL"))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Desk(Base):
    """A client's service desk: where its orders become tickets."""

    __tablename__ = "desks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    """webhook | servicenow | jira | zendesk"""
    url: Mapped[str] = mapped_column(Text)
    username: Mapped[str] = mapped_column(String(320), default="")
    token: Mapped[str] = mapped_column(Text, default="")
    secret: Mapped[str] = mapped_column(Text)
    """Signs outbound webhooks and verifies the desk's inbound status posts."""
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    def config(self, *, timeout_s: float = 10.0) -> DeskConfig:
        """What the delivery adapter sends with and what the desk's posts are verified
        with (the one place a :class:`~cloud.desk.tickets.DeskConfig` is made of a row)."""
        return DeskConfig(
            kind=cast(DeskKind, self.kind),  # one of DESK_KINDS (checked by create_desk)
            url=self.url,
            secret=self.secret,
            username=self.username,
            token=self.token,
            options=dict(self.options or {}),
            timeout_s=timeout_s,
        )


class TicketRef(Base):
    """The vendor's ticket for an order at a desk, once known (never two per pair)."""

    __tablename__ = "tickets"
    __table_args__ = (UniqueConstraint("work_order_id", "desk_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"))
    desk_id: Mapped[str] = mapped_column(ForeignKey("desks.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200), index=True)
    external_ref: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundOutcome(enum.StrEnum):
    """What a desk's status post did to its order."""

    MOVED = "moved"
    """The order went to the state the desk asked for."""
    COMMENTED = "commented"
    """The order was in that state already; the post's note became a comment."""
    UNCHANGED = "unchanged"
    """The order was in that state already and the post had no note."""
    REJECTED = "rejected"
    """The life cycle does not allow the move; ``detail`` is the answer the desk got."""


class DeskInbound(Base):
    """One status post a desk sent, by its ``webhook-id``: a replay of it moves nothing and
    is answered from here (a rejected one with the same 409)."""

    __tablename__ = "desk_inbound"
    __table_args__ = (UniqueConstraint("desk_id", "message_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    desk_id: Mapped[str] = mapped_column(ForeignKey("desks.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(200))
    """The post's ``webhook-id``."""
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"))
    requested_state: Mapped[str] = mapped_column(String(32))
    vendor_state: Mapped[str] = mapped_column(String(200))
    """The state as the desk named it (``Resolved``, ``6``, ``solved``)."""
    outcome: Mapped[InboundOutcome] = mapped_column(_enum(InboundOutcome, "inbound_outcome"))
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    """The order's state after the post (``from_state`` unless it moved)."""
    detail: Mapped[str | None] = mapped_column(Text)


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up: a permanent refusal, or still failing after the retry window."""


class OutboxMessage(Base):
    """One work-order change to deliver to one desk. The id grows with every message: an
    order's messages to one desk go out in id order."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(None, "state", "next_attempt_at"),
        Index(None, "state", "id"),
        Index(None, "work_order_id", "desk_id", "id"),
    )
    """``(state, id)``: a delivery worker's claim walks the pending messages in id order
    (without it, past every delivered one, or all pending ones sorted, each time)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"))
    desk_id: Mapped[str] = mapped_column(ForeignKey("desks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState, "delivery_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column()
    locked_by: Mapped[str | None] = mapped_column(String(120))
    delivered_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    worker: Mapped[str] = mapped_column(String(120))
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="")
