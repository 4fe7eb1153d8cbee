"""What ``serve`` prints: event lines, the status line, and the bounded event queue."""

from __future__ import annotations

from datetime import UTC, datetime

from firmware_sim.console import LiveReport, format_event
from firmware_sim.groundtruth import GroundTruthEvent

T = datetime(2026, 6, 3, tzinfo=UTC)


def _onset(device: str = "cc-1") -> GroundTruthEvent:
    return GroundTruthEvent(
        T,
        device,
        0,
        event="onset",
        fault_type="refrigerant_leak",
        scheduled_failure=datetime(2026, 6, 15, tzinfo=UTC),
    )


def test_event_lines_say_what_happened_to_which_unit_and_when() -> None:
    assert format_event(_onset()) == (
        "2026-06-03T00:00:00Z  onset        cc-1              refrigerant_leak begins; "
        "fails 2026-06-15T00:00:00Z unless repaired"
    )
    failure = GroundTruthEvent(
        T, "fan-2", 1, event="failure", fault_type="belt_wear", alarm_code=33
    )
    assert format_event(failure).endswith("fan-2             belt_wear: unit trips with alarm 33")
    repair = GroundTruthEvent(
        T,
        "cc-1",
        2,
        event="maintenance",
        kind="repair",
        fixes=("refrigerant_leak",),
        automatic=True,
    )
    assert format_event(repair).endswith(
        "repair, fixes refrigerant_leak (scheduled by the simulator)"
    )
    reboot = GroundTruthEvent(T, "cc-1", -1, event="reboot")
    assert format_event(reboot).endswith("controller restarted, counters reset")


def test_status_line_counts_units_by_run_state_and_events_so_far() -> None:
    report = LiveReport()
    report.on_event(_onset())
    line = report.status_line(T, [1, 1, 0, 2, 3])
    assert "units: running 2  off 1  tripped 1  lockout 1" in line
    assert "onsets 1  failures 0  visits 0  reboots 0" in line
    assert line.startswith("2026-06-03T00:00:00Z")


def test_the_event_queue_is_bounded_and_says_how_much_it_dropped() -> None:
    report = LiveReport(limit=3)
    for i in range(5):
        report.on_event(_onset(f"cc-{i}"))
    lines = report.drain()
    assert [ln.split()[2] for ln in lines] == ["cc-2", "cc-3", "cc-4"]  # the newest kept
    assert report.drain() == []
    status = report.status_line(T, [])
    assert "onsets 5" in status  # the tally counts every event, printed or not
    assert "2 event lines dropped (queue limit 3)" in status
