"""Work orders: opened or raised by triggers, moved through their states, commented,
assigned, with parts reserved; every change writes its outbox messages in the same
transaction (:mod:`cloud.workorders.models`).

- :func:`trigger` is what the risk scorer and the alarm path call. It opens an order,
  updates the open one (when the risk rose enough or the priority went up), or does
  nothing (in the cool-down after the last order for the device and fault closed). The
  database's unique ``open_key`` makes "one open order per device and fault" hold under
  any number of concurrent callers: a caller that loses the race to open retries and
  finds the winner's order to update.
- :func:`transition`, :func:`comment`, :func:`assign` are the desk's and the users'
  moves, checked against :data:`~cloud.workorders.policy.TRANSITIONS` and the caller's
  role and tenant.
- Each change is logged as a :class:`WorkOrderEvent`; opening and closing are also
  written to the device's life-cycle file (:class:`~cloud.registry.models.DeviceEvent`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth.principal import Principal
from cloud.db import translate_errors
from cloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from cloud.registry.models import (
    Device,
    DeviceEvent,
    EventKind,
    Gateway,
    Role,
    Site,
)
from cloud.workorders import policy
from cloud.workorders.catalogue import Catalogue
from cloud.workorders.models import (
    DeliveryState,
    Desk,
    OutboxMessage,
    Part,
    Reservation,
    Source,
    Stock,
    Technician,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderNumber,
    open_key,
)
from cloud.workorders.policy import State

log = logging.getLogger(__name__)

Outcome = Literal["opened", "updated", "unchanged", "cooldown", "below_threshold"]
DESK_ROLES: Final = frozenset({Role.ADMIN, Role.SERVICE_DESK})
TRIGGER_ATTEMPTS: Final = 8


def _now() -> datetime:
    return datetime.now(UTC)


def order_number(number: int) -> str:
    return f"WO-{number:06d}"


@dataclass(frozen=True, slots=True)
class OrderPolicy:
    """The operator's settings for opening and updating orders."""

    catalogue: Catalogue = field(default_factory=Catalogue)
    cooldown: timedelta = timedelta(hours=72)
    """After an order for a device and fault is closed or cancelled, no new one for them
    opens before this has passed."""
    rise_step: float = 0.05
    """An open order is updated when P72 rose at least this much (or its priority rose)."""
    public_url: str = ""
    """Base URL of the web service, for the links in an order's evidence."""
    crew_refresh_s: float = 5.0
    """How old the technicians and their open-order counts that a new order's suggestion
    weighs may be (seconds; 0: read them for every order). Orders this process opens
    count at once; orders closed, cancelled or reassigned, and technicians added or
    deactivated, count after at most this long. Reading them costs a count over every
    open order, which a burst of triggers would otherwise pay for each order."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """A reason to open (or raise) an order for a device and fault."""

    device_id: str
    fault: str
    source: Source
    at: datetime
    """The window end of the risk reading, or the time the alarm was raised."""
    p24: float | None = None
    p72: float | None = None
    threshold: float = 0.5
    """The asset type's opening threshold on P72 (risk triggers only)."""
    horizon_h: float = 72.0
    health: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, slots=True)
class TriggerResult:
    outcome: Outcome
    order_id: str | None = None
    number: int | None = None
    priority: int | None = None


# -- trigger ----------------------------------------------------------------------------
def trigger(
    sessions: sessionmaker[Session], t: Trigger, pol: OrderPolicy, now: datetime | None = None
) -> TriggerResult:
    """Open, update or leave the order for ``t.device_id`` and ``t.fault`` (see the
    module docstring); one transaction, retried when it lost a race to another caller
    (the unique ``open_key``, or SQLite's single writer)."""
    if t.source is Source.RISK and (t.p72 is None or t.p72 < t.threshold):
        return TriggerResult("below_threshold")
    delay = 0.005
    crew = _crew(sessions)
    for attempt in range(TRIGGER_ATTEMPTS):
        session = sessions()
        try:
            result, suggested = _trigger_once(session, t, pol, now or _now(), crew)
            session.commit()
            if suggested is not None:
                crew.took(suggested)
            return result
        except (IntegrityError, OperationalError) as exc:
            session.rollback()
            if attempt == TRIGGER_ATTEMPTS - 1 or not _transient(exc):
                with translate_errors():
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
    raise AssertionError("unreachable")


def _transient(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return "open_key" in str(exc.orig)
    text = str(getattr(exc, "orig", exc)).lower()
    return "locked" in text or "deadlock" in text or "could not serialize" in text


@dataclass(frozen=True, slots=True)
class _Ctx:
    device: Device
    site: Site


def _context(session: Session, device_id: str) -> _Ctx:
    row = session.execute(
        select(Device, Site)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
        .where(Device.id == device_id)
    ).first()
    if row is None:
        raise NotFound(f"device {device_id} not found")
    return _Ctx(row[0], row[1])


def _open_order(session: Session, key: str) -> WorkOrder | None:
    return session.scalars(
        select(WorkOrder).where(WorkOrder.open_key == key).with_for_update()
    ).first()


def _priority(t: Trigger, device: Device) -> int:
    points = (
        2
        if t.source is not Source.RISK
        else policy.risk_points(t.p24 or 0.0, t.p72 or 0.0, t.threshold)
    )
    return policy.priority(points, str(device.criticality), device.occupant_flags or [])


def _trigger_once(
    session: Session, t: Trigger, pol: OrderPolicy, now: datetime, crew: _Crew
) -> tuple[TriggerResult, str | None]:
    """The trigger's outcome, and the technician suggested for an order it opened."""
    ctx = _context(session, t.device_id)
    key = open_key(t.device_id, t.fault)
    prio = _priority(t, ctx.device)
    lead = (
        policy.lead_time_h(t.p24 or 0.0, t.p72 or 0.0, t.horizon_h)
        if t.source is Source.RISK
        else None
    )
    existing = _open_order(session, key)
    if existing is not None:
        return _raise_open(session, existing, t, prio, lead, now, pol), None
    # Read only now, after the open order's row lock: a close that committed while this
    # trigger waited for it is seen here (read before the lock, it would not be).
    recent = session.scalar(
        select(func.max(WorkOrder.closed_at)).where(
            WorkOrder.device_id == t.device_id,
            WorkOrder.fault == t.fault,
            WorkOrder.closed_at.is_not(None),
        )
    )
    if recent is not None and recent > now - pol.cooldown:
        return TriggerResult("cooldown"), None
    info = pol.catalogue[t.fault]
    number_row = WorkOrderNumber()
    session.add(number_row)
    session.flush()
    suggestion = crew.suggest(session, info.skills, ctx.site, pol.crew_refresh_s)
    order = WorkOrder(
        number=number_row.number,
        client_id=ctx.site.client_id,
        site_id=ctx.site.id,
        device_id=t.device_id,
        fault=t.fault,
        source=t.source,
        state=State.WAITING_APPROVAL,
        open_key=key,
        priority=prio,
        p24=t.p24,
        p72=t.p72,
        health=t.health,
        lead_time_h=lead,
        risk_at=t.at,
        problem=info.problem,
        cause=info.cause,
        remedy=info.remedy,
        evidence=_evidence(t, pol, now),
        skills=list(info.skills),
        parts=dict(info.parts),
        suggested_technician_id=None if suggestion is None else suggestion.technician_id,
        suggestion=None if suggestion is None else _suggestion_json(suggestion),
        sla_due_at=policy.sla_due(now, prio, lead),
        opened_at=now,
        updated_at=now,
    )
    session.add(order)
    session.flush()  # IntegrityError on open_key: another caller opened it first
    _reserve(session, order, None if suggestion is None else crew.depot(suggestion))
    _log(
        session,
        order,
        "opened",
        "scorer" if t.source is Source.RISK else "alarm",
        note=t.note or None,
        detail={"p24": t.p24, "p72": t.p72, "priority": prio},
        seq=1,
    )
    session.add(
        DeviceEvent(
            device_id=t.device_id,
            at=now,
            kind=EventKind.WORK_ORDER_OPENED,
            summary=f"{order_number(order.number)} opened: {info.problem} ({t.fault})",
            detail={"work_order_id": order.id, "priority": prio, "p72": t.p72},
        )
    )
    _enqueue(session, order, "created", None)
    tech = None if suggestion is None else suggestion.technician_id
    return TriggerResult("opened", order.id, order.number, prio), tech


def _raise_open(
    session: Session,
    order: WorkOrder,
    t: Trigger,
    prio: int,
    lead: float | None,
    now: datetime,
    pol: OrderPolicy,
) -> TriggerResult:
    if (
        t.source is not Source.RISK
        or t.p72 is None
        or not policy.significant_rise(order.p72, t.p72, order.priority, prio, pol.rise_step)
    ):
        return TriggerResult("unchanged", order.id, order.number, order.priority)
    before = {"p72": order.p72, "priority": order.priority}
    new_prio = min(order.priority, prio)
    order.p24, order.p72, order.health, order.risk_at = t.p24, t.p72, t.health, t.at
    order.priority = new_prio
    order.lead_time_h = lead if lead is not None else order.lead_time_h
    order.sla_due_at = min(order.sla_due_at, policy.sla_due(now, new_prio, lead))
    order.evidence = _evidence(t, pol, now)
    order.updated_at = now
    note = f"risk rose: P72 {before['p72'] or 0:.2f} → {t.p72:.2f}, priority {new_prio}"
    _log(
        session,
        order,
        "updated",
        "scorer",
        note=note,
        detail={"before": before, "p24": t.p24, "p72": t.p72, "priority": new_prio},
    )
    _enqueue(session, order, "updated", note)
    return TriggerResult("updated", order.id, order.number, new_prio)


def _evidence(t: Trigger, pol: OrderPolicy, now: datetime) -> dict[str, Any]:
    start = int((t.at - timedelta(days=7)).timestamp())
    end = int(t.at.timestamp())
    base = pol.public_url.rstrip("/")
    return {
        **dict(t.evidence),
        "risk": {"p24": t.p24, "p72": t.p72, "health": t.health, "at": t.at.isoformat()},
        "charts": f"{base}/dashboard/devices/{t.device_id}?start={start}&end={end}",
        "api": f"{base}/v1/devices/{t.device_id}/risk",
        "recorded_at": now.isoformat(),
    }


# -- technicians and parts ---------------------------------------------------------------
class _Crew:
    """The active technicians and their open orders as a new order's suggestion weighs
    them: read at most :attr:`OrderPolicy.crew_refresh_s` ago, plus the orders this
    process opened since. One per sessionmaker (so per database), shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._candidates: dict[str, policy.Candidate] = {}
        self._depots: dict[str, str] = {}
        self._read_at = -math.inf

    def suggest(
        self, session: Session, skills: Sequence[str], site: Site, max_age_s: float
    ) -> policy.Suggestion | None:
        with self._lock:
            fresh = time.monotonic() - self._read_at < max_age_s
            candidates = list(self._candidates.values()) if fresh else None
        if candidates is None:
            candidates, depots = _read_crew(session)
            with self._lock:
                self._candidates = {c.id: c for c in candidates}
                self._depots = depots
                self._read_at = time.monotonic()
        where = (
            None
            if site.latitude is None or site.longitude is None
            else (site.latitude, site.longitude)
        )
        return policy.suggest_technician(candidates, skills, where)

    def depot(self, suggestion: policy.Suggestion) -> str | None:
        with self._lock:
            return self._depots.get(suggestion.technician_id)

    def took(self, technician_id: str) -> None:
        """A committed order now counts on ``technician_id``'s list."""
        with self._lock:
            c = self._candidates.get(technician_id)
            if c is not None:
                self._candidates[technician_id] = replace(
                    c, open_orders=c.open_orders + 1
                )


_CREWS: weakref.WeakKeyDictionary[sessionmaker[Session], _Crew] = weakref.WeakKeyDictionary()
_CREWS_LOCK = threading.Lock()


def _crew(sessions: sessionmaker[Session]) -> _Crew:
    with _CREWS_LOCK:
        crew = _CREWS.get(sessions)
        if crew is None:
            crew = _CREWS[sessions] = _Crew()
        return crew


def _read_crew(session: Session) -> tuple[list[policy.Candidate], dict[str, str]]:
    """Active technicians with their open orders (assigned, else suggested), and depots."""
    load = (
        select(
            func.coalesce(
                WorkOrder.assigned_technician_id, WorkOrder.suggested_technician_id
            ).label("tech"),
            func.count().label("n"),
        )
        .where(WorkOrder.open_key.is_not(None))
        .group_by("tech")
        .subquery()
    )
    rows = session.execute(
        select(Technician, func.coalesce(load.c.n, 0))
        .outerjoin(load, load.c.tech == Technician.id)
        .where(Technician.active.is_(True))
    ).all()
    candidates = [
        policy.Candidate(
            tech.id, frozenset(tech.skills or ()), tech.latitude, tech.longitude, int(n)
        )
        for tech, n in rows
    ]
    return candidates, {tech.id: tech.depot_id for tech, _ in rows}


def _suggestion_json(s: policy.Suggestion) -> dict[str, Any]:
    return {
        "technician_id": s.technician_id,
        "distance_km": s.distance_km,
        "open_orders": s.open_orders,
        "missing_skills": list(s.missing_skills),
        "cost_h": s.cost,
    }


def _reserve(session: Session, order: WorkOrder, home: str | None) -> None:
    """Hold the parts the fault needs at one depot per part: ``home`` (the suggested
    technician's depot) when it has any free, else the depot with the most free; what it
    lacks is recorded as ``short``. Parts not in the catalogue stay listed on the order
    only. Two statements whatever the number of parts."""
    if not order.parts:
        return
    numbers = sorted(order.parts)
    known = set(session.scalars(select(Part.number).where(Part.number.in_(numbers))))
    stocks_of: dict[str, list[Stock]] = {}
    if known:
        for stock in session.scalars(
            select(Stock)
            .where(Stock.part_number.in_(sorted(known)))
            .order_by(Stock.part_number, Stock.depot_id)
            .with_for_update()
        ):
            stocks_of.setdefault(stock.part_number, []).append(stock)
    for number in numbers:
        if number not in known:
            continue
        need = order.parts[number]
        free = [s for s in stocks_of.get(number, []) if s.on_hand - s.reserved > 0]
        best = min(
            free,
            key=lambda s: (s.depot_id != home, -(s.on_hand - s.reserved), s.depot_id),
            default=None,
        )
        take = 0 if best is None else min(need, best.on_hand - best.reserved)
        if best is not None:
            best.reserved += take
        session.add(
            Reservation(
                work_order_id=order.id,
                part_number=number,
                depot_id=None if best is None else best.depot_id,
                quantity=need,
                reserved=take,
                short=need - take,
            )
        )


def _release(session: Session, order: WorkOrder, *, used: bool) -> None:
    """Give the held parts back (cancelled), or take them out of stock (closed)."""
    for r in session.scalars(
        select(Reservation).where(
            Reservation.work_order_id == order.id, Reservation.released.is_(False)
        )
    ):
        if r.depot_id is not None and r.reserved:
            stock = session.get(Stock, (r.depot_id, r.part_number), with_for_update=True)
            if stock is not None:
                stock.reserved = max(0, stock.reserved - r.reserved)
                if used:
                    stock.on_hand = max(0, stock.on_hand - r.reserved)
        r.released = True


# -- history and outbox ------------------------------------------------------------------
def _log(
    session: Session,
    order: WorkOrder,
    kind: str,
    actor: str,
    *,
    note: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict[str, Any] | None = None,
    seq: int | None = None,
) -> None:
    """Append an event to the order's history (``seq``: its number when the caller knows
    it, as for the first event of a new order; else the next one is looked up)."""
    if seq is None:
        last = session.scalar(
            select(func.coalesce(func.max(WorkOrderEvent.seq), 0)).where(
                WorkOrderEvent.work_order_id == order.id
            )
        )
        seq = int(last or 0) + 1
    session.add(
        WorkOrderEvent(
            work_order_id=order.id,
            seq=seq,
            at=order.updated_at,
            kind=kind,
            actor=actor,
            note=note,
            from_state=from_state,
            to_state=to_state,
            detail=detail,
        )
    )


def _enqueue(
    session: Session,
    order: WorkOrder,
    event: str,
    comment: str | None,
    *,
    skip_desk: str | None = None,
) -> int:
    """One outbox message per enabled desk of the order's client (except the desk the
    change came from), due at the change's time (``order.updated_at``); in the caller's
    transaction."""
    desks = session.scalars(
        select(Desk.id).where(Desk.client_id == order.client_id, Desk.enabled.is_(True))
    ).all()
    n = 0
    for desk_id in desks:
        if desk_id == skip_desk:
            continue
        session.add(
            OutboxMessage(
                work_order_id=order.id,
                desk_id=desk_id,
                event=event,
                comment=comment,
                state=DeliveryState.PENDING,
                created_at=order.updated_at,
                next_attempt_at=order.updated_at,
            )
        )
        n += 1
    return n


# -- the desk's and users' moves ---------------------------------------------------------
def _orders(p: Principal) -> Select[WorkOrder]:
    stmt = select(WorkOrder)
    if p.tenant is not None:
        stmt = stmt.where(WorkOrder.client_id == p.tenant)
    return stmt


def get_order(session: Session, p: Principal, order_id: str, *, lock: bool = False) -> WorkOrder:
    stmt = _orders(p).where(WorkOrder.id == order_id)
    if lock:
        stmt = stmt.with_for_update()
    order = session.scalars(stmt).first()
    if order is None:
        raise NotFound(f"work order {order_id} not found")
    return order


@dataclass(frozen=True, slots=True)
class OrderFilter:
    state: Sequence[State] = ()
    open: bool | None = None
    site_id: str | None = None
    device_id: str | None = None
    fault: str | None = None
    priority_max: int | None = None
    limit: int = 100
    offset: int = 0


def list_orders(session: Session, p: Principal, f: OrderFilter) -> list[WorkOrder]:
    """Newest first; a facility manager sees their client's orders only."""
    if not 1 <= f.limit <= 1000 or f.offset < 0:
        raise InvalidInput("limit", "limit must be 1-1000 and offset ≥ 0")
    stmt = _orders(p)
    if f.state:
        stmt = stmt.where(WorkOrder.state.in_(list(f.state)))
    if f.open is not None:
        stmt = stmt.where(
            WorkOrder.open_key.is_not(None) if f.open else WorkOrder.open_key.is_(None)
        )
    if f.site_id:
        stmt = stmt.where(WorkOrder.site_id == f.site_id)
    if f.device_id:
        stmt = stmt.where(WorkOrder.device_id == f.device_id)
    if f.fault:
        stmt = stmt.where(WorkOrder.fault == f.fault)
    if f.priority_max is not None:
        stmt = stmt.where(WorkOrder.priority <= f.priority_max)
    stmt = stmt.order_by(WorkOrder.number.desc()).limit(f.limit).offset(f.offset)
    return list(session.scalars(stmt))


CLIENT_MOVES: Final[Mapping[State, frozenset[State]]] = {
    State.WAITING_APPROVAL: frozenset({State.APPROVED, State.CANCELLED}),
}
"""The moves a facility manager may make on their own client's orders: approve or decline
an order that waits for approval. Admins and the service desk may make every move of the
life cycle."""


def may_move(p: Principal, current: State, target: State) -> bool:
    """Whether the caller's role allows moving an order from ``current`` to ``target``
    (whether the life cycle allows it is :func:`policy.check_transition`'s question)."""
    return p.role in DESK_ROLES or target in CLIENT_MOVES.get(current, frozenset())


def _may_move(p: Principal, current: State, target: State) -> None:
    if not may_move(p, current, target):
        raise Forbidden(f"only admin or service_desk may move a work order to {target}")


def transition(
    session: Session,
    p: Principal,
    order_id: str,
    target: State | str,
    *,
    note: str | None = None,
    failure_prevented: bool | None = None,
    actor: str | None = None,
    from_desk: str | None = None,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> WorkOrder:
    """Move the order to ``target``; :class:`Conflict` for a move the life cycle does not
    allow. Closing or cancelling frees the device and fault for a new order (after the
    cool-down), uses or returns the held parts and writes the life-cycle file;
    ``failure_prevented`` (on complete or close) is the model's feedback. ``detail`` goes
    into the history event (e.g. the state as a desk named it)."""
    try:
        target = State(target)
    except ValueError:
        raise InvalidInput(
            "state", f"unknown state {target!r}; one of {', '.join(s.value for s in State)}"
        ) from None
    order = get_order(session, p, order_id, lock=True)
    current = State(order.state)
    policy.check_transition(current, target)
    _may_move(p, current, target)
    if failure_prevented is not None and target not in (State.COMPLETE, State.CLOSED):
        raise InvalidInput("failure_prevented", "is recorded on complete or closed only")
    when = now or _now()
    order.state = target
    order.updated_at = when
    if failure_prevented is not None:
        order.failure_prevented = failure_prevented
    if note and target in (State.COMPLETE, State.CLOSED):
        order.outcome_note = note
    who = actor or _actor(p)
    if target in policy.FINAL:
        order.open_key = None
        order.closed_at = when
        _release(session, order, used=target is State.CLOSED)
        session.add(
            DeviceEvent(
                device_id=order.device_id,
                at=when,
                kind=EventKind.WORK_ORDER_CLOSED,
                summary=f"{order_number(order.number)} {target}: {order.fault}",
                detail={
                    "work_order_id": order.id,
                    "failure_prevented": order.failure_prevented,
                    "note": note,
                },
            )
        )
    event_detail = dict(detail or {})
    if failure_prevented is not None:
        event_detail["failure_prevented"] = failure_prevented
    _log(
        session,
        order,
        "state_changed",
        who,
        note=note,
        from_state=current,
        to_state=target,
        detail=event_detail or None,
    )
    _enqueue(
        session, order, "state_changed", note or f"state: {current} → {target}", skip_desk=from_desk
    )
    with translate_errors():
        session.flush()
    return order


def comment(
    session: Session,
    p: Principal,
    order_id: str,
    text: str,
    *,
    actor: str | None = None,
    from_desk: str | None = None,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> WorkOrder:
    text = (text or "").strip()
    if not text or len(text) > 10_000:
        raise InvalidInput("text", "must be 1-10,000 characters")
    order = get_order(session, p, order_id, lock=True)
    order.updated_at = now or _now()
    _log(
        session,
        order,
        "commented",
        actor or _actor(p),
        note=text,
        detail=dict(detail or {}) or None,
    )
    _enqueue(session, order, "commented", text, skip_desk=from_desk)
    with translate_errors():
        session.flush()
    return order


def assign(session: Session, p: Principal, order_id: str, technician_id: str | None) -> WorkOrder:
    """The desk's choice of technician (overrides the suggestion; None clears it)."""
    order = get_order(session, p, order_id, lock=True)  # visibility (404) before role (403)
    if p.role not in DESK_ROLES:
        raise Forbidden("only admin or service_desk may assign technicians")
    if order.open_key is None:
        raise Conflict(f"work order {order_number(order.number)} is {order.state}")
    if technician_id is not None and session.get(Technician, technician_id) is None:
        raise InvalidInput("technician_id", f"no technician {technician_id}")
    order.assigned_technician_id = technician_id
    order.updated_at = _now()
    _log(session, order, "assigned", _actor(p), detail={"technician_id": technician_id})
    _enqueue(
        session,
        order,
        "updated",
        f"assigned to technician {technician_id}" if technician_id else "assignment cleared",
    )
    with translate_errors():
        session.flush()
    return order


def _actor(p: Principal) -> str:
    return f"user:{p.user_id}" if p.user_id else "system"


def reservations(session: Session, order_id: str) -> list[Reservation]:
    return list(
        session.scalars(
            select(Reservation)
            .where(Reservation.work_order_id == order_id)
            .order_by(Reservation.part_number)
        )
    )
