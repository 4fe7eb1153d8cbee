"""Work-order rules as pure functions: states, priority, SLA, lead time, technician choice.

No I/O here: the service layer (:mod:`cloud.workorders.service`) reads the database and
calls these; the tests drive them with tables.

States follow the usual CMMS life cycle::

    waiting_approval → approved → scheduled → in_progress → complete → closed
          └──────────────┴───────────┴────────────┴─→ cancelled

plus the steps back a desk really takes (a scheduled visit unscheduled, a visit that
needs a second trip, a repair reopened before it is closed). ``closed`` and ``cancelled``
are final. An order is *open* until it is closed or cancelled: while it is open, no
second risk order is opened for the device (whatever fault the model names), nor a
second order for the same device and alarm.

Priority (1 = most urgent … 4) adds points for the risk, the asset's criticality and
its occupants (:func:`priority`); the SLA due time is the priority's response time, but
never later than the predicted failure (:func:`sla_due`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cloud.errors import Conflict


class State(enum.StrEnum):
    WAITING_APPROVAL = "waiting_approval"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    CLOSED = "closed"
    CANCELLED = "cancelled"


FINAL: Final = frozenset({State.CLOSED, State.CANCELLED})
OPEN: Final = frozenset(State) - FINAL

TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    State.WAITING_APPROVAL: frozenset({State.APPROVED, State.CANCELLED}),
    State.APPROVED: frozenset({State.SCHEDULED, State.CANCELLED}),
    State.SCHEDULED: frozenset({State.IN_PROGRESS, State.APPROVED, State.CANCELLED}),
    State.IN_PROGRESS: frozenset({State.COMPLETE, State.SCHEDULED, State.CANCELLED}),
    State.COMPLETE: frozenset({State.CLOSED, State.IN_PROGRESS}),
    State.CLOSED: frozenset(),
    State.CANCELLED: frozenset(),
}
"""Allowed moves; anything else is refused (:func:`check_transition`)."""


def check_transition(current: State, target: State) -> None:
    """Raise :class:`~cloud.errors.Conflict` naming the allowed moves when ``current →
    target`` is not one of them (including staying in the same state)."""
    allowed = TRANSITIONS[current]
    if target not in allowed:
        options = ", ".join(sorted(allowed)) or "none: the order is final"
        raise Conflict(f"a work order cannot go from {current} to {target} (allowed: {options})")


# -- priority and SLA ---------------------------------------------------------------------
CRITICALITY_POINTS: Final = {"low": 0, "medium": 1, "high": 2, "critical": 3}
VULNERABLE_FLAGS: Final = frozenset(
    {"vulnerable_occupant", "medical_equipment", "elderly", "infant"}
)
"""Occupant flags that make a failure dangerous, not only uncomfortable (2 points; any
other flag 1 point)."""
SLA: Final = {
    1: timedelta(hours=4),
    2: timedelta(hours=24),
    3: timedelta(hours=72),
    4: timedelta(days=7),
}
"""Response time by priority."""


def risk_points(p24: float, p72: float, threshold: float, p_open: float) -> int:
    """0-3: imminent (P24 ≥ 0.5 or P72 ≥ 0.8) 3, likely (P72 ≥ 0.5) 2, ``p_open`` over
    the opening threshold 1, below it 0. ``p_open`` is the probability the threshold
    applies to: the risk within the model's alert horizon, or P72 for a model without one
    (:attr:`cloud.workorders.service.Trigger.p_open`)."""
    if p24 >= 0.5 or p72 >= 0.8:
        return 3
    if p72 >= 0.5:
        return 2
    return 1 if p_open >= threshold else 0


def priority(points_risk: int, criticality: str, occupant_flags: Iterable[str]) -> int:
    """1 (urgent) … 4 (low) from risk points (:func:`risk_points`, or 2 for a local alarm
    that needs a visit), the asset's criticality and its occupants' flags.

    Total points: ≥ 6 → 1, ≥ 4 → 2, ≥ 2 → 3, else 4. An imminent failure of a critical
    asset, or one next to a vulnerable occupant, is urgent; a low-risk fan in a store
    room is not."""
    flags = set(occupant_flags)
    occupants = 2 if flags & VULNERABLE_FLAGS else (1 if flags else 0)
    total = points_risk + CRITICALITY_POINTS.get(criticality, 1) + occupants
    if total >= 6:
        return 1
    if total >= 4:
        return 2
    return 3 if total >= 2 else 4


def lead_time_h(
    p24: float,
    p72: float,
    horizon_h: float = 72.0,
    p_alert: float | None = None,
    alert_horizon_h: float | None = None,
) -> float | None:
    """Expected hours to failure the risk says: 24 when P24 ≥ 0.5, the horizon when P72
    ≥ 0.5, the alert horizon when P(alert horizon) ≥ 0.5, else None (no failure expected
    within any of them)."""
    if p24 >= 0.5:
        return 24.0
    if p72 >= 0.5:
        return horizon_h
    if p_alert is not None and alert_horizon_h is not None and p_alert >= 0.5:
        return alert_horizon_h
    return None


def sla_due(opened: datetime, prio: int, lead_h: float | None) -> datetime:
    """The priority's response time, but never after the predicted failure."""
    due = opened + SLA[prio]
    if lead_h is not None:
        due = min(due, opened + timedelta(hours=lead_h))
    return due


def significant_rise(
    old_p72: float | None, new_p72: float, old_prio: int, new_prio: int, step: float = 0.05
) -> bool:
    """Whether a new risk reading is worth updating an open order: its priority rises,
    or P72 rose by at least ``step``. Smaller moves (and falls) leave it as it is, so
    that an hourly scorer does not flood the desk with updates."""
    if new_prio < old_prio:
        return True
    return old_p72 is None or new_p72 >= old_p72 + step


# -- technicians --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Candidate:
    """A technician as the suggestion sees them."""

    id: str
    skills: frozenset[str]
    latitude: float | None
    longitude: float | None
    open_orders: int


@dataclass(frozen=True, slots=True)
class Suggestion:
    technician_id: str
    distance_km: float | None
    open_orders: int
    missing_skills: tuple[str, ...]
    cost: float
    """Hours-equivalent used to rank: travel at :data:`TRAVEL_KMH`, plus
    :data:`HOURS_PER_OPEN_ORDER` for each order already on their list, plus
    :data:`HOURS_PER_MISSING_SKILL` for each skill they lack."""


TRAVEL_KMH: Final = 50.0
HOURS_PER_OPEN_ORDER: Final = 2.0
HOURS_PER_MISSING_SKILL: Final = 24.0
UNKNOWN_DISTANCE_KM: Final = 100.0
"""Assumed when the site or the technician has no location."""


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine, mean Earth radius 6,371 km)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))


def suggest_technician(
    candidates: Sequence[Candidate],
    skills: Iterable[str],
    site: tuple[float, float] | None,
) -> Suggestion | None:
    """The technician with the lowest cost (ties: fewer open orders, then id), or None
    when there is nobody. A technician lacking a skill can still be suggested (a small
    depot may have nobody better), at a cost of a day per missing skill."""
    needed = frozenset(skills)
    best: Suggestion | None = None
    for c in candidates:
        missing = tuple(sorted(needed - c.skills))
        if site is None or c.latitude is None or c.longitude is None:
            dist = None
            travel_km = UNKNOWN_DISTANCE_KM
        else:
            dist = distance_km(site[0], site[1], c.latitude, c.longitude)
            travel_km = dist
        cost = (
            travel_km / TRAVEL_KMH
            + HOURS_PER_OPEN_ORDER * c.open_orders
            + HOURS_PER_MISSING_SKILL * len(missing)
        )
        s = Suggestion(
            c.id, None if dist is None else round(dist, 1), c.open_orders, missing, round(cost, 3)
        )
        if best is None or (s.cost, s.open_orders, s.technician_id) < (
            best.cost,
            best.open_orders,
            best.technician_id,
        ):
            best = s
    return best
