"""Work orders: opened or raised by triggers, moved through their states, commented,
assigned, with parts reserved; every change writes its outbox messages in the same
transaction (:mod:`cloud.workorders.models`).

- :func:`trigger` is what the risk scorer and the alarm path call. It opens an order,
  updates the open one (when the risk rose enough or the priority went up), or does
  nothing (in the cool-down after the device's last risk order, or its last order for the
  alarm, closed). The database's unique ``open_key`` makes "one open risk order per
  device, one open order per device and alarm" hold under any number of concurrent
  callers (:func:`~cloud.workorders.models.open_key`): a caller that loses the race to
  open retries and finds the winner's order to update. :func:`trigger_many` decides many
  triggers as that many calls would, sharing their round trips (a pass over many
  alarms). Both run on the tables (SQLAlchemy Core, a statement per kind of read or
  write), not the unit of work: an order opened costs a dozen statements and no ORM
  bookkeeping.
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
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, cast

from sqlalchemy import (
    Connection,
    Select,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
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
    new_id,
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
    """After a device's risk order (or its order for an alarm) is closed or cancelled, no
    new one opens before this has passed."""
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
    """The asset type's opening threshold on :attr:`p_open` (risk triggers only)."""
    horizon_h: float = 72.0
    p_alert: float | None = None
    """P(failure within ``alert_horizon_h``), which the threshold applies to; None: a
    model without its own alert horizon, whose alerts are on P72."""
    alert_horizon_h: float | None = None
    health: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def p_open(self) -> float | None:
        """The probability the opening threshold applies to."""
        return self.p72 if self.p_alert is None else self.p_alert


@dataclass(frozen=True, slots=True)
class TriggerResult:
    outcome: Outcome
    order_id: str | None = None
    number: int | None = None
    priority: int | None = None


# -- trigger ----------------------------------------------------------------------------
TRIGGER_CHUNK: Final = 200
"""Triggers :func:`trigger_many` decides in one transaction (a lost race retries them all)."""


def trigger(
    sessions: sessionmaker[Session], t: Trigger, pol: OrderPolicy, now: datetime | None = None
) -> TriggerResult:
    """Open, update or leave the order ``t`` goes to: ``t.device_id``'s risk order, or its
    order for the alarm ``t.fault`` (see the module docstring); one transaction, retried
    when it lost a race to another caller (the unique ``open_key``, or SQLite's single
    writer). :class:`NotFound` when the
    device is not in the registry."""
    (result,) = _trigger_chunk(sessions, [t], pol, now)
    if isinstance(result, NotFound):
        raise result
    return result


def trigger_many(
    sessions: sessionmaker[Session],
    triggers: Sequence[Trigger],
    pol: OrderPolicy,
    now: datetime | None = None,
) -> list[TriggerResult | NotFound]:
    """What :func:`trigger` answers for each of ``triggers``, called one after the other
    in this order, with the reads and writes they need shared: up to
    :data:`TRIGGER_CHUNK` triggers per transaction, each kind of statement once per
    transaction. Several triggers for one order (a device's risk, or a device and alarm)
    act in their order (the first opens the order, the next ones may raise it, as separate
    calls would).

    A trigger whose device is not in the registry has its :class:`NotFound` in its
    place (:func:`trigger` raises it); a database error raises, after the chunks before
    the failing one were committed."""
    results: list[TriggerResult | NotFound] = []
    for start in range(0, len(triggers), TRIGGER_CHUNK):
        results += _trigger_chunk(sessions, triggers[start : start + TRIGGER_CHUNK], pol, now)
    return results


def _trigger_chunk(
    sessions: sessionmaker[Session],
    triggers: Sequence[Trigger],
    pol: OrderPolicy,
    now: datetime | None,
) -> list[TriggerResult | NotFound]:
    """One transaction for ``triggers``, retried when it lost a race."""
    results: dict[int, TriggerResult | NotFound] = {}
    todo: list[tuple[int, Trigger]] = []
    for i, t in enumerate(triggers):
        p = t.p_open
        if t.source is Source.RISK and (p is None or p < t.threshold):
            results[i] = TriggerResult("below_threshold")
        else:
            todo.append((i, t))
    if todo:
        results.update(_decide(sessions, todo, pol, now))
    return [results[i] for i in range(len(triggers))]


def _decide(
    sessions: sessionmaker[Session],
    todo: Sequence[tuple[int, Trigger]],
    pol: OrderPolicy,
    now: datetime | None,
) -> dict[int, TriggerResult | NotFound]:
    delay = 0.005
    crew = _crew(sessions)
    for attempt in range(TRIGGER_ATTEMPTS):
        session = sessions()
        try:
            chunk = _Chunk(session.connection(), pol, now or _now(), crew)
            results = chunk.run(todo)
            session.commit()
            crew.took(chunk.suggested)
            return results
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


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


_DEVICES: Final = _table(Device)
_GATEWAYS: Final = _table(Gateway)
_SITES: Final = _table(Site)
_DESKS: Final = _table(Desk)
_ORDERS: Final = _table(WorkOrder)
_NUMBERS: Final = _table(WorkOrderNumber)
_EVENTS: Final = _table(WorkOrderEvent)
_DEVICE_EVENTS: Final = _table(DeviceEvent)
_OUTBOX: Final = _table(OutboxMessage)
_PARTS: Final = _table(Part)
_STOCK: Final = _table(Stock)
_RESERVATIONS: Final = _table(Reservation)
_TECHNICIANS: Final = _table(Technician)

# The trigger path's statements, built once (Core, on the tables: no unit of work).
_CONTEXT_SQL: Final = (
    select(
        _DEVICES.c.id,
        _DEVICES.c.criticality,
        _DEVICES.c.occupant_flags,
        _SITES.c.id.label("site_id"),
        _SITES.c.client_id,
        _SITES.c.latitude,
        _SITES.c.longitude,
        _DESKS.c.id.label("desk_id"),
    )
    .select_from(
        _DEVICES.join(_GATEWAYS, _DEVICES.c.gateway_id == _GATEWAYS.c.id)
        .join(_SITES, _GATEWAYS.c.site_id == _SITES.c.id)
        .outerjoin(
            _DESKS, and_(_DESKS.c.client_id == _SITES.c.client_id, _DESKS.c.enabled.is_(True))
        )
    )
    .where(_DEVICES.c.id.in_(bindparam("devices", expanding=True)))
    .order_by(_DEVICES.c.id, _DESKS.c.created_at, _DESKS.c.id)
)
"""Each device with its site, client and the client's enabled desks (a row per desk)."""
_DESKS_SQL: Final = (
    select(_DESKS.c.client_id, _DESKS.c.id)
    .where(_DESKS.c.client_id.in_(bindparam("clients", expanding=True)), _DESKS.c.enabled.is_(True))
    .order_by(_DESKS.c.client_id, _DESKS.c.created_at, _DESKS.c.id)
)
_OPEN_SQL: Final = (
    select(
        _ORDERS.c.id,
        _ORDERS.c.number,
        _ORDERS.c.open_key,
        _ORDERS.c.client_id,
        _ORDERS.c.priority,
        _ORDERS.c.p72,
        _ORDERS.c.lead_time_h,
        _ORDERS.c.sla_due_at,
        _ORDERS.c.fault,
    )
    .where(_ORDERS.c.open_key.in_(bindparam("keys", expanding=True)))
    .order_by(_ORDERS.c.open_key)  # rows are locked in this order: no deadlock between callers
    .with_for_update()
)
_CLOSED_SQL: Final = (
    select(_ORDERS.c.device_id, _ORDERS.c.fault, _ORDERS.c.source, func.max(_ORDERS.c.closed_at))
    .where(
        _ORDERS.c.device_id.in_(bindparam("devices", expanding=True)),
        or_(
            _ORDERS.c.fault.in_(bindparam("faults", expanding=True)),
            _ORDERS.c.source == Source.RISK,
        ),
        _ORDERS.c.closed_at.is_not(None),
    )
    .group_by(_ORDERS.c.device_id, _ORDERS.c.fault, _ORDERS.c.source)
)
"""The last close of the devices' orders for the faults, and of their risk orders."""
_LAST_SEQ_SQL: Final = (
    select(_EVENTS.c.work_order_id, func.max(_EVENTS.c.seq))
    .where(_EVENTS.c.work_order_id.in_(bindparam("orders", expanding=True)))
    .group_by(_EVENTS.c.work_order_id)
)
_NUMBER_SQL: Final = insert(_NUMBERS).returning(_NUMBERS.c.number)
_NUMBERS_PG_SQL: Final = (
    insert(_NUMBERS)
    .from_select(
        [_NUMBERS.c.number],
        select(
            func.nextval(func.pg_get_serial_sequence(_NUMBERS.name, _NUMBERS.c.number.name))
        ).select_from(func.generate_series(1, bindparam("n"))),
    )
    .returning(_NUMBERS.c.number)
)
"""``n`` numbers in one statement (PostgreSQL: the serial column's sequence)."""
_UPDATE_SQL: Final = (
    update(_ORDERS)
    .where(_ORDERS.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(f"b_{name}")
            for name in (
                "p24",
                "p72",
                "health",
                "risk_at",
                "priority",
                "lead_time_h",
                "sla_due_at",
                "evidence",
                "updated_at",
            )
        }
    )
)
_PARTS_SQL: Final = (
    select(_PARTS.c.number, _STOCK.c.depot_id, _STOCK.c.on_hand, _STOCK.c.reserved)
    .select_from(_PARTS.outerjoin(_STOCK, _STOCK.c.part_number == _PARTS.c.number))
    .where(_PARTS.c.number.in_(bindparam("parts", expanding=True)))
)
"""The catalogued parts among those asked for, with their stock as last committed."""
_STOCK_SQL: Final = (
    select(_STOCK.c.depot_id, _STOCK.c.part_number, _STOCK.c.on_hand, _STOCK.c.reserved)
    .where(_STOCK.c.part_number.in_(bindparam("parts", expanding=True)))
    .order_by(_STOCK.c.part_number, _STOCK.c.depot_id)
    .with_for_update()
)
"""The stock of parts about to be held, locked (in this order: no deadlock between callers)."""
_STOCK_UPDATE_SQL: Final = (
    update(_STOCK)
    .where(_STOCK.c.depot_id == bindparam("b_depot"), _STOCK.c.part_number == bindparam("b_part"))
    .values(reserved=bindparam("b_reserved"))
)


@dataclass(frozen=True, slots=True)
class _Device:
    """What a trigger needs of its device: priority, place, client and desks."""

    criticality: str
    occupant_flags: tuple[str, ...]
    site_id: str
    client_id: str
    where: tuple[float, float] | None


@dataclass(slots=True)
class _Order:
    """An open order as a chunk sees it and changes it (a new one is inserted at the end
    with what the chunk made of it, an existing one updated)."""

    id: str
    number: int
    client_id: str
    key: str
    priority: int
    p72: float | None
    lead_time_h: float | None
    sla_due_at: datetime
    fault: str
    """The fault the order was opened for (a risk trigger may name another since)."""
    values: dict[str, Any] = field(default_factory=dict)
    """New: the row to insert. Existing: the columns to update (empty: unchanged)."""
    new: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    """The history events this chunk adds, ``seq`` numbered at the end."""
    parts: Mapping[str, int] = field(default_factory=dict)
    home: str | None = None
    """The suggested technician's depot: parts are held there first."""
    opened: dict[str, Any] = field(default_factory=dict)
    """The life-cycle file entry of a new order (its summary waits for the number)."""


@dataclass(slots=True)
class _StockRow:
    depot_id: str
    part_number: str
    on_hand: int
    reserved: int
    changed: bool = False


_Pending = tuple[Outcome, _Order, int]
"""A decision whose answer waits for the order's number: outcome, order, priority."""


class _Chunk:
    """One transaction of triggers: decided one after the other as separate transactions
    would decide them, with each read and each kind of write made once for all.

    Reads, in this order: the devices (with site, client and desks); the open orders of
    the devices and faults, locked (``FOR UPDATE``, in ``open_key`` order); only then the
    last close of those without one (a close that committed while this waited for a lock
    is seen). Writes: the new orders' numbers and rows (a concurrent caller that opened
    one of them first makes the insert fail on ``open_key``: the caller retries the
    chunk and finds that order), the raised orders' updates, the history events, the
    life-cycle file entries, the outbox messages and, last, the parts held (stock rows
    stay locked from there to the commit only)."""

    def __init__(self, conn: Connection, pol: OrderPolicy, now: datetime, crew: _Crew) -> None:
        self.conn = conn
        self.pol = pol
        self.now = now
        self.crew = crew
        self.desks: dict[str, list[str]] = {}
        self.orders: dict[str, _Order] = {}
        self.new: list[_Order] = []
        self.outbox: list[dict[str, Any]] = []
        self.suggested: list[str] = []
        """Technicians suggested for the new orders (they count once committed)."""

    def run(self, todo: Sequence[tuple[int, Trigger]]) -> dict[int, TriggerResult | NotFound]:
        devices = self._devices(sorted({t.device_id for _, t in todo}))
        keyed = {
            open_key(t.device_id, t.fault, t.source): t for _, t in todo if t.device_id in devices
        }
        for row in self.conn.execute(_OPEN_SQL, {"keys": sorted(keyed)}) if keyed else ():
            self.orders[row.open_key] = _Order(
                id=row.id,
                number=row.number,
                client_id=row.client_id,
                key=row.open_key,
                priority=row.priority,
                p72=row.p72,
                lead_time_h=row.lead_time_h,
                sla_due_at=row.sla_due_at,
                fault=row.fault,
            )
        unopened = [t for key, t in keyed.items() if key not in self.orders]
        closed: dict[str, datetime] = {}
        if unopened:
            params = {
                "devices": sorted({t.device_id for t in unopened}),
                "faults": sorted({t.fault for t in unopened}),
            }
            for d, f, source, at in self.conn.execute(_CLOSED_SQL, params):
                key = open_key(d, f, Source(source))
                closed[key] = max(at, closed.get(key, at))
        decided: dict[int, TriggerResult | NotFound] = {}
        pending: dict[int, _Pending] = {}
        for i, t in todo:
            device = devices.get(t.device_id)
            if device is None:
                decided[i] = NotFound(f"device {t.device_id} not found")
                continue
            key = open_key(t.device_id, t.fault, t.source)
            prio = _priority(t, device)
            lead = (
                policy.lead_time_h(
                    t.p24 or 0.0, t.p72 or 0.0, t.horizon_h, t.p_alert, t.alert_horizon_h
                )
                if t.source is Source.RISK
                else None
            )
            order = self.orders.get(key)
            if order is not None:
                pending[i] = self._raise(order, t, prio, lead)
                continue
            last = closed.get(key)
            if last is not None and last > self.now - self.pol.cooldown:
                decided[i] = TriggerResult("cooldown")
                continue
            pending[i] = ("opened", self._open(t, key, device, prio, lead), prio)
        self._write()
        for i, (outcome, order, prio) in pending.items():
            decided[i] = TriggerResult(outcome, order.id, order.number, prio)
        return decided

    def _devices(self, ids: Sequence[str]) -> dict[str, _Device]:
        found: dict[str, _Device] = {}
        for row in self.conn.execute(_CONTEXT_SQL, {"devices": list(ids)}):
            if row.id not in found:
                lat, lon = row.latitude, row.longitude
                found[row.id] = _Device(
                    criticality=str(row.criticality),
                    occupant_flags=tuple(row.occupant_flags or ()),
                    site_id=row.site_id,
                    client_id=row.client_id,
                    where=None if lat is None or lon is None else (lat, lon),
                )
            desks = self.desks.setdefault(row.client_id, [])
            if row.desk_id is not None and row.desk_id not in desks:
                desks.append(row.desk_id)
        return found

    def _desks_of(self, client_id: str) -> list[str]:
        """The client's enabled desks (an order's client is its device's, unless the
        device has moved to another client's site since the order opened)."""
        if client_id not in self.desks:
            self.desks[client_id] = [
                desk for _, desk in self.conn.execute(_DESKS_SQL, {"clients": [client_id]})
            ]
        return self.desks[client_id]

    def _enqueue(self, order: _Order, event: str, comment: str | None) -> None:
        for desk_id in self._desks_of(order.client_id):
            self.outbox.append(
                {
                    "work_order_id": order.id,
                    "desk_id": desk_id,
                    "event": event,
                    "comment": comment,
                    "state": DeliveryState.PENDING,
                    "created_at": self.now,
                    "next_attempt_at": self.now,
                }
            )

    def _event(
        self, order: _Order, kind: str, actor: str, note: str | None, detail: dict[str, Any]
    ) -> None:
        order.events.append(
            {
                "work_order_id": order.id,
                "at": self.now,
                "kind": kind,
                "actor": actor,
                "note": note,
                "from_state": None,
                "to_state": None,
                "detail": detail,
            }
        )

    def _open(self, t: Trigger, key: str, device: _Device, prio: int, lead: float | None) -> _Order:
        now, pol = self.now, self.pol
        info = pol.catalogue[t.fault]
        extra = Counter(self.suggested)
        suggestion = self.crew.suggest(
            self.conn, info.skills, device.where, pol.crew_refresh_s, extra
        )
        sla_due = policy.sla_due(now, prio, lead)
        order = _Order(
            id=new_id(),
            number=0,
            client_id=device.client_id,
            key=key,
            priority=prio,
            p72=t.p72,
            lead_time_h=lead,
            sla_due_at=sla_due,
            fault=t.fault,
            new=True,
            parts=dict(info.parts),
            home=None if suggestion is None else self.crew.depot(suggestion),
        )
        order.values = {
            "id": order.id,
            "number": 0,
            "client_id": device.client_id,
            "site_id": device.site_id,
            "device_id": t.device_id,
            "fault": t.fault,
            "source": t.source,
            "state": State.WAITING_APPROVAL,
            "open_key": key,
            "priority": prio,
            "p24": t.p24,
            "p72": t.p72,
            "health": t.health,
            "lead_time_h": lead,
            "risk_at": t.at,
            "problem": info.problem,
            "cause": info.cause,
            "remedy": info.remedy,
            "evidence": _evidence(t, pol, now),
            "skills": list(info.skills),
            "parts": dict(info.parts),
            "suggested_technician_id": None if suggestion is None else suggestion.technician_id,
            "suggestion": None if suggestion is None else _suggestion_json(suggestion),
            "sla_due_at": sla_due,
            "opened_at": now,
            "updated_at": now,
        }
        order.opened = {
            "device_id": t.device_id,
            "at": now,
            "kind": EventKind.WORK_ORDER_OPENED,
            "summary": f"opened: {info.problem} ({t.fault})",
            "detail": {"work_order_id": order.id, "priority": prio, "p72": t.p72},
        }
        self._event(
            order,
            "opened",
            "scorer" if t.source is Source.RISK else "alarm",
            t.note or None,
            {"p24": t.p24, "p72": t.p72, "priority": prio},
        )
        self._enqueue(order, "created", None)
        if suggestion is not None:
            self.suggested.append(suggestion.technician_id)
        self.orders[key] = order
        self.new.append(order)
        return order

    def _raise(self, order: _Order, t: Trigger, prio: int, lead: float | None) -> _Pending:
        if (
            t.source is not Source.RISK
            or t.p72 is None
            or not policy.significant_rise(
                order.p72, t.p72, order.priority, prio, self.pol.rise_step
            )
        ):
            return "unchanged", order, order.priority
        now = self.now
        before = {"p72": order.p72, "priority": order.priority}
        new_prio = min(order.priority, prio)
        order.p72, order.priority = t.p72, new_prio
        order.lead_time_h = lead if lead is not None else order.lead_time_h
        order.sla_due_at = min(order.sla_due_at, policy.sla_due(now, new_prio, lead))
        order.values.update(
            p24=t.p24,
            p72=t.p72,
            health=t.health,
            risk_at=t.at,
            priority=new_prio,
            lead_time_h=order.lead_time_h,
            sla_due_at=order.sla_due_at,
            evidence=_evidence(t, self.pol, now),
            updated_at=now,
        )
        note = f"risk rose: P72 {before['p72'] or 0:.2f} → {t.p72:.2f}, priority {new_prio}"
        if t.fault != order.fault:
            note += f"; the model now names {t.fault}"
        self._event(
            order,
            "updated",
            "scorer",
            note,
            {
                "before": before,
                "p24": t.p24,
                "p72": t.p72,
                "priority": new_prio,
                "fault": t.fault,
            },
        )
        self._enqueue(order, "updated", note)
        return "updated", order, new_prio

    def _write(self) -> None:
        conn = self.conn
        numbers = _numbers(conn, len(self.new))
        for order, number in zip(self.new, numbers, strict=True):
            order.number = order.values["number"] = number
            order.opened["summary"] = f"{order_number(number)} {order.opened['summary']}"
        if self.new:  # in key order, as the locks were taken
            conn.execute(insert(_ORDERS), [o.values for o in sorted(self.new, key=_by_key)])
        raised = [o for o in self.orders.values() if not o.new and o.values]
        last_seq: dict[str, int] = {}
        if raised:
            conn.execute(
                _UPDATE_SQL,
                [
                    {"b_id": o.id, **{f"b_{k}": v for k, v in o.values.items()}}
                    for o in sorted(raised, key=_by_key)
                ],
            )
            params = {"orders": sorted(o.id for o in raised)}
            last_seq = {oid: int(seq) for oid, seq in conn.execute(_LAST_SEQ_SQL, params)}
        events = []
        for order in self.orders.values():
            seq = last_seq.get(order.id, 0)
            for event in order.events:
                seq += 1
                events.append({**event, "seq": seq})
        if events:
            conn.execute(insert(_EVENTS), events)
        if self.new:
            conn.execute(insert(_DEVICE_EVENTS), [o.opened for o in self.new])
        if self.outbox:  # one after the other: an order's messages get growing ids
            conn.execute(insert(_OUTBOX), self.outbox)
        if self.new:  # last: the stock it locks is held until the commit only
            self._reserve()

    def _reserve(self) -> None:
        """Hold the parts the new orders need, one order after the other, each at one
        depot per part: the suggested technician's depot when it has any free, else the
        depot with the most free; what it lacks is recorded as ``short``. Parts not in
        the catalogue stay listed on the order only."""
        wanted = sorted({number for o in self.new for number in o.parts})
        if not wanted:
            return
        known: set[str] = set()
        stocks: dict[str, list[_StockRow]] = {}
        for row in self.conn.execute(_PARTS_SQL, {"parts": wanted}):
            known.add(row.number)
            if row.depot_id is not None:
                stocks.setdefault(row.number, []).append(
                    _StockRow(row.depot_id, row.number, row.on_hand, row.reserved)
                )
        # Only stock that had some free is locked and read again: a part out of stock
        # everywhere is short, and its rows are left to the callers that give parts back
        # (no queue of openers behind a lock on stock they cannot take anything from).
        free = sorted(n for n, rows in stocks.items() if any(s.on_hand > s.reserved for s in rows))
        if free:
            locked: dict[str, list[_StockRow]] = {n: [] for n in free}
            for row in self.conn.execute(_STOCK_SQL, {"parts": free}):
                locked[row.part_number].append(
                    _StockRow(row.depot_id, row.part_number, row.on_hand, row.reserved)
                )
            stocks.update(locked)
        held = []
        for order in self.new:
            for number in sorted(order.parts):
                if number not in known:
                    continue
                need = order.parts[number]
                best = _best_stock(stocks.get(number, []), order.home)
                take = 0 if best is None else min(need, best.on_hand - best.reserved)
                if best is not None:
                    best.reserved += take
                    best.changed = True
                held.append(
                    {
                        "work_order_id": order.id,
                        "part_number": number,
                        "depot_id": None if best is None else best.depot_id,
                        "quantity": need,
                        "reserved": take,
                        "short": need - take,
                        "released": False,
                    }
                )
        changed = [s for rows in stocks.values() for s in rows if s.changed]
        if changed:
            self.conn.execute(
                _STOCK_UPDATE_SQL,
                [
                    {"b_depot": s.depot_id, "b_part": s.part_number, "b_reserved": s.reserved}
                    for s in changed
                ],
            )
        if held:
            self.conn.execute(insert(_RESERVATIONS), held)


def _by_key(order: _Order) -> str:
    return order.key


def _best_stock(rows: Sequence[_StockRow], home: str | None) -> _StockRow | None:
    """``home`` when it has any free, else the depot with the most free (ties: by id)."""
    free = [s for s in rows if s.on_hand - s.reserved > 0]
    return min(
        free,
        key=lambda s: (s.depot_id != home, -(s.on_hand - s.reserved), s.depot_id),
        default=None,
    )


def _numbers(conn: Connection, n: int) -> list[int]:
    """``n`` new order numbers, ascending."""
    if n > 1 and conn.dialect.name == "postgresql":
        return sorted(conn.scalars(_NUMBERS_PG_SQL, {"n": n}))
    return [int(conn.execute(_NUMBER_SQL).scalar_one()) for _ in range(n)]


def _priority(t: Trigger, device: _Device) -> int:
    points = (
        2
        if t.source is not Source.RISK
        else policy.risk_points(t.p24 or 0.0, t.p72 or 0.0, t.threshold, t.p_open or 0.0)
    )
    return policy.priority(points, device.criticality, device.occupant_flags)


def _evidence(t: Trigger, pol: OrderPolicy, now: datetime) -> dict[str, Any]:
    start = int((t.at - timedelta(days=7)).timestamp())
    end = int(t.at.timestamp())
    base = pol.public_url.rstrip("/")
    return {
        **dict(t.evidence),
        "risk": {
            "p24": t.p24,
            "p72": t.p72,
            "p_alert": t.p_alert,
            "alert_horizon_h": t.alert_horizon_h,
            "health": t.health,
            "fault": t.fault,
            "at": t.at.isoformat(),
        },
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
        self._depots: dict[str, str | None] = {}
        self._read_at = -math.inf

    def suggest(
        self,
        conn: Connection,
        skills: Sequence[str],
        where: tuple[float, float] | None,
        max_age_s: float,
        uncommitted: Mapping[str, int],
    ) -> policy.Suggestion | None:
        """The suggestion for a new order at ``where``; ``uncommitted``: orders the
        caller's transaction has suggested to each technician so far."""
        with self._lock:
            fresh = time.monotonic() - self._read_at < max_age_s
            candidates = list(self._candidates.values()) if fresh else None
        if candidates is None:
            candidates, depots = _read_crew(conn)
            with self._lock:
                self._candidates = {c.id: c for c in candidates}
                self._depots = depots
                self._read_at = time.monotonic()
        if uncommitted:
            candidates = [
                replace(c, open_orders=c.open_orders + uncommitted.get(c.id, 0)) for c in candidates
            ]
        return policy.suggest_technician(candidates, skills, where)

    def depot(self, suggestion: policy.Suggestion) -> str | None:
        with self._lock:
            return self._depots.get(suggestion.technician_id)

    def took(self, technician_ids: Iterable[str]) -> None:
        """Committed orders now count on these technicians' lists (once per id given)."""
        with self._lock:
            for technician_id in technician_ids:
                c = self._candidates.get(technician_id)
                if c is not None:
                    self._candidates[technician_id] = replace(c, open_orders=c.open_orders + 1)


_CREWS: weakref.WeakKeyDictionary[sessionmaker[Session], _Crew] = weakref.WeakKeyDictionary()
_CREWS_LOCK = threading.Lock()


def _crew(sessions: sessionmaker[Session]) -> _Crew:
    with _CREWS_LOCK:
        crew = _CREWS.get(sessions)
        if crew is None:
            crew = _CREWS[sessions] = _Crew()
        return crew


def _read_crew(conn: Connection) -> tuple[list[policy.Candidate], dict[str, str | None]]:
    """Active technicians with their open orders (assigned, else suggested), and depots."""
    tech = func.coalesce(_ORDERS.c.assigned_technician_id, _ORDERS.c.suggested_technician_id)
    load = (
        select(tech.label("tech"), func.count().label("n"))
        .where(_ORDERS.c.open_key.is_not(None))
        .group_by(tech)
        .subquery()
    )
    t = _TECHNICIANS
    rows = conn.execute(
        select(
            t.c.id,
            t.c.skills,
            t.c.latitude,
            t.c.longitude,
            t.c.depot_id,
            func.coalesce(load.c.n, 0),
        )
        .select_from(t.outerjoin(load, load.c.tech == t.c.id))
        .where(t.c.active.is_(True))
    ).all()
    candidates = [
        policy.Candidate(tid, frozenset(skills or ()), lat, lon, int(n))
        for tid, skills, lat, lon, _, n in rows
    ]
    return candidates, {row[0]: row[4] for row in rows}


def _suggestion_json(s: policy.Suggestion) -> dict[str, Any]:
    return {
        "technician_id": s.technician_id,
        "distance_km": s.distance_km,
        "open_orders": s.open_orders,
        "missing_skills": list(s.missing_skills),
        "cost_h": s.cost,
    }


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
    allow. Closing or cancelling frees the device's risk (or alarm) for a new order (after
    the cool-down), uses or returns the held parts and writes the life-cycle file;
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
