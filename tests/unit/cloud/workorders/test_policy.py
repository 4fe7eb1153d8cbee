"""The pure work-order rules: life cycle, priority, SLA, lead time, technician choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud.errors import ConfigError, Conflict
from cloud.workorders import policy
from cloud.workorders.catalogue import GENERIC, load_catalogue
from cloud.workorders.policy import Candidate, State

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# The CMMS path forward, the steps back a desk takes, and the final states.
ALLOWED = [
    ("waiting_approval", "approved"),
    ("approved", "scheduled"),
    ("scheduled", "in_progress"),
    ("in_progress", "complete"),
    ("complete", "closed"),
    ("scheduled", "approved"),
    ("in_progress", "scheduled"),
    ("complete", "in_progress"),
    ("waiting_approval", "cancelled"),
    ("in_progress", "cancelled"),
]
REFUSED = [
    ("waiting_approval", "scheduled"),  # skips approval
    ("waiting_approval", "closed"),
    ("approved", "complete"),
    ("complete", "cancelled"),  # the work was done
    ("closed", "in_progress"),  # final
    ("cancelled", "approved"),  # final
    ("approved", "approved"),  # not a move
]


@pytest.mark.parametrize(("a", "b"), ALLOWED)
def test_allowed_moves(a: str, b: str) -> None:
    policy.check_transition(State(a), State(b))


@pytest.mark.parametrize(("a", "b"), REFUSED)
def test_refused_moves_name_the_allowed_ones(a: str, b: str) -> None:
    with pytest.raises(Conflict, match=f"from {a} to {b}") as err:
        policy.check_transition(State(a), State(b))
    if State(a) in policy.FINAL:
        assert "final" in str(err.value)
    else:
        for allowed in policy.TRANSITIONS[State(a)]:
            assert allowed.value in str(err.value)


def test_every_open_state_can_reach_an_end() -> None:
    for start in policy.OPEN:
        seen, todo = {start}, [start]
        while todo:
            for nxt in policy.TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert State.CLOSED in seen or State.CANCELLED in seen


@pytest.mark.parametrize(
    ("p24", "p72", "threshold", "points"),
    [
        (0.6, 0.7, 0.3, 3),  # failure within a day likely
        (0.1, 0.85, 0.3, 3),
        (0.1, 0.6, 0.3, 2),
        (0.1, 0.35, 0.3, 1),
        (0.1, 0.25, 0.3, 0),
    ],
)
def test_risk_points(p24: float, p72: float, threshold: float, points: int) -> None:
    assert policy.risk_points(p24, p72, threshold, p72) == points  # a model alerting on P72


@pytest.mark.parametrize(
    ("p72", "p_alert", "points"),
    [
        (0.1, 0.35, 1),  # the threshold judges the alert horizon's risk
        (0.35, 0.25, 0),  # ... not P72
        (0.6, 0.1, 2),  # a likely failure within 72 h still ranks by P72
    ],
)
def test_risk_points_with_an_alert_horizon(p72: float, p_alert: float, points: int) -> None:
    assert policy.risk_points(0.1, p72, 0.3, p_alert) == points


@pytest.mark.parametrize(
    ("risk", "criticality", "flags", "prio"),
    [
        (3, "critical", [], 1),
        (3, "medium", ["vulnerable_occupant"], 1),  # 3 + 1 + 2
        (3, "low", [], 3),
        (2, "high", [], 2),
        (1, "medium", ["pets"], 3),  # 1 + 1 + 1
        (1, "low", [], 4),
        (0, "critical", ["medical_equipment"], 2),  # 0 + 3 + 2
        (2, "unknown-level", [], 3),  # an unknown criticality counts as medium
    ],
)
def test_priority_weighs_risk_criticality_and_occupants(
    risk: int, criticality: str, flags: list[str], prio: int
) -> None:
    assert policy.priority(risk, criticality, flags) == prio


@pytest.mark.parametrize(
    ("p24", "p72", "lead"), [(0.7, 0.9, 24.0), (0.2, 0.6, 72.0), (0.1, 0.3, None)]
)
def test_lead_time(p24: float, p72: float, lead: float | None) -> None:
    assert policy.lead_time_h(p24, p72) == lead
    # a likely failure within the alert horizon says so when no shorter horizon does
    assert policy.lead_time_h(p24, p72, 72.0, 0.8, 168.0) == (lead or 168.0)
    assert policy.lead_time_h(p24, p72, 72.0, 0.4, 168.0) == lead


@pytest.mark.parametrize(
    ("prio", "lead", "hours"),
    [
        (1, None, 4),
        (2, None, 24),
        (3, None, 72),
        (4, None, 168),
        (4, 72.0, 72),
        (3, 24.0, 24),
        (1, 24.0, 4),
    ],
)
def test_sla_due_is_the_response_time_but_never_after_the_failure(
    prio: int, lead: float | None, hours: int
) -> None:
    assert policy.sla_due(T0, prio, lead) == T0 + timedelta(hours=hours)


@pytest.mark.parametrize(
    ("old_p72", "new_p72", "old_prio", "new_prio", "rise"),
    [
        (0.5, 0.56, 3, 3, True),
        (0.5, 0.53, 3, 3, False),
        (0.5, 0.4, 3, 3, False),
        (0.5, 0.51, 3, 2, True),
        (None, 0.4, 3, 3, True),
    ],
)
def test_significant_rise(
    old_p72: float | None, new_p72: float, old_prio: int, new_prio: int, rise: bool
) -> None:
    assert policy.significant_rise(old_p72, new_p72, old_prio, new_prio) is rise


def test_distance_is_the_great_circle() -> None:
    # Lisbon to Porto: about 274 km as the crow flies
    assert policy.distance_km(38.7223, -9.1393, 41.1579, -8.6291) == pytest.approx(274, abs=3)
    assert policy.distance_km(10, 10, 10, 10) == 0


def test_technician_suggestion_weighs_skills_distance_and_load() -> None:
    site = (38.70, -9.13)
    near_busy = Candidate("near-busy", frozenset({"refrigeration"}), 38.71, -9.13, open_orders=3)
    far_free = Candidate("far-free", frozenset({"refrigeration"}), 41.15, -8.61, open_orders=0)
    near_unskilled = Candidate("near-unskilled", frozenset(), 38.70, -9.13, open_orders=0)
    near_free = Candidate("near-free", frozenset({"refrigeration"}), 38.75, -9.10, open_orders=0)
    pick = policy.suggest_technician(
        [near_busy, far_free, near_unskilled, near_free], ["refrigeration"], site
    )
    assert pick is not None and pick.technician_id == "near-free"
    assert pick.missing_skills == () and pick.distance_km is not None and pick.distance_km < 10
    # Without the idle one nearby: three open orders (6 h) cost more than driving 274 km
    # (5.5 h), so the idle technician in Porto is suggested.
    pick = policy.suggest_technician([near_busy, far_free, near_unskilled], ["refrigeration"], site)
    assert pick is not None and pick.technician_id == "far-free"
    # A missing skill costs a day: the unskilled one is chosen only when alone.
    pick = policy.suggest_technician([near_unskilled], ["refrigeration"], site)
    assert pick is not None and pick.missing_skills == ("refrigeration",)
    assert policy.suggest_technician([], ["refrigeration"], site) is None


def test_catalogue_defaults_overrides_and_errors(tmp_path: Path) -> None:
    cat = load_catalogue(None)
    assert cat["refrigerant_leak"].parts["RFG-R410A-5KG"] == 1
    assert cat["no-such-fault"] is GENERIC
    good = tmp_path / "faults.yaml"
    good.write_text(
        "faults:\n  refrigerant_leak:\n    problem: p\n    cause: c\n    remedy: r\n"
        "    skills: [f-gas]\n    parts: {X-1: 2}\n",
        encoding="utf-8",
    )
    cat = load_catalogue(good)
    assert cat["refrigerant_leak"].parts == {"X-1": 2}
    assert cat["bearing_wear"].skills == ("mechanical",)  # defaults kept
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "faults:\n  belt_wear:\n    problem: p\n    cause: c\n    remedy: r\n    parts: {X-1: 0}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"faults\.belt_wear\.parts"):
        load_catalogue(bad)
