"""The demo's calendar: a simulated period inside one ended month at every site."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from edgewatch_demo.fleet import SITES, failing_units, fleet_document, plan
from firmware_sim.fleet import parse_fleet, profiles_of

T = partial(datetime, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "days", "month", "end"),
    [
        # October has ended everywhere; it ends first in Sydney (UTC+11 under daylight time).
        (T(2026, 11, 24, 9, 0), 14, "2026-10", T(2026, 10, 31, 13)),
        # 23:00 UTC on 31 October is midnight in Madrid: October has just ended there too.
        (T(2026, 10, 31, 23, 0), 14, "2026-10", T(2026, 10, 31, 13)),
        # An hour earlier it has not, so the demo plays September (Sydney at UTC+10 then).
        (T(2026, 10, 31, 22, 0), 14, "2026-09", T(2026, 9, 30, 14)),
        # Across a year.
        (T(2027, 1, 2, 0, 0), 14, "2026-12", T(2026, 12, 31, 13)),
        # The longest period in the shortest month still starts in it at every site.
        (T(2027, 3, 2, 0, 0), 27, "2027-02", T(2027, 2, 28, 13)),
    ],
)  # fmt: skip
def test_the_period_is_the_end_of_the_last_month_ended_at_every_site(
    now: datetime, days: float, month: str, end: datetime
) -> None:
    p = plan(now, days)
    assert (str(p.month), p.end, p.days) == (month, end, days)
    assert p.end <= now
    for site in SITES:
        zone = ZoneInfo(site.timezone)
        # every simulated instant is in the report month at every site
        assert p.start.astimezone(zone).strftime("%Y-%m") == month
        assert (p.end - timedelta(seconds=1)).astimezone(zone).strftime("%Y-%m") == month


def test_too_many_or_too_few_days_are_refused() -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    with pytest.raises(ValueError, match="days must be between 1 and 27"):
        plan(now, 28)
    with pytest.raises(ValueError, match="days must be between 1 and 27"):
        plan(now, 0.5)


def test_each_fault_begins_after_the_baseline_and_fails_within_the_period() -> None:
    p = plan(datetime(2026, 11, 24, tzinfo=UTC))
    fleet = parse_fleet(fleet_document(p), "<demo>")
    profiles_of(fleet)  # every device's profile resolves
    devices = {d.id: d.spec for d in fleet.devices()}
    assert len(devices) == sum(len(s.units) for s in SITES)
    transports = {g.id: g.transport for g in fleet.gateways()}
    assert sorted(transports.values()) == ["rtu", "tcp", "tcp"]
    failing = failing_units()
    assert {u.asset_type for _, u in failing} == {"compressor", "fan"}
    for _, unit in failing:
        (fault,) = devices[unit.id].faults
        assert fault.onset == p.at(unit.onset_day)
        assert fault.onset >= p.at(6.0)  # the scorer's baseline week is healthy
        assert unit.failure_day is not None and unit.failure_day <= p.days
    healthy = [u for s in SITES for u in s.units if u.fault is None]
    assert len(healthy) >= 3
