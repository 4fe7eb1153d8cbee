"""Report months: parsing, local bounds (DST, half-hour zones), arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud.errors import InvalidInput
from cloud.reports.period import Month, local_iso, parse_month


def test_parse_and_arithmetic() -> None:
    month = parse_month(" 2026-10 ")
    assert month == Month(2026, 10) and str(month) == "2026-10"
    assert month.plus(3) == Month(2027, 1) and month.plus(-10) == Month(2025, 12)
    assert month.plus(-12) == Month(2025, 10)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2026-13", "month 13 is not 01 to 12"),
        ("2026-00", "month 0 is not 01 to 12"),
        ("26-10", "is not a month YYYY-MM"),
        ("2026/10", "is not a month YYYY-MM"),
        ("1999-12", "year 1999 is not 2000 to 2999"),
        (202610, "is not a month YYYY-MM"),
    ],
)
def test_bad_months_say_why(text: object, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as err:
        parse_month(text, "--month")
    assert err.value.where == "--month"


def test_bounds_are_local_midnights_with_dst() -> None:
    paris_oct = Month(2026, 10).bounds("Europe/Paris")
    assert (paris_oct[1] - paris_oct[0]) // 3600 == 745
    assert paris_oct[0] == datetime(2026, 9, 30, 22, tzinfo=UTC).timestamp()
    paris_mar = Month(2026, 3).bounds("Europe/Paris")
    assert (paris_mar[1] - paris_mar[0]) // 3600 == 743
    dubai = Month(2026, 10).bounds("Asia/Dubai")
    assert dubai[0] == datetime(2026, 9, 30, 20, tzinfo=UTC).timestamp()
    # consecutive months tile time
    assert Month(2026, 9).bounds("Europe/Paris")[1] == paris_oct[0]


def test_half_hour_zones_round_down_to_whole_utc_hours() -> None:
    start, end = Month(2026, 10).bounds("Asia/Kolkata")  # +05:30: midnight is 18:30 UTC
    assert start == datetime(2026, 9, 30, 18, tzinfo=UTC).timestamp()
    assert (end - start) // 3600 == 744
    assert Month(2026, 9).bounds("Asia/Kolkata")[1] == start


def test_the_month_of_a_moment_is_local() -> None:
    moment = datetime(2026, 10, 31, 22, 30, tzinfo=UTC)
    assert Month.of(moment, "UTC") == Month(2026, 10)
    assert Month.of(moment, "Asia/Dubai") == Month(2026, 11)
    assert local_iso(moment.timestamp(), "Asia/Dubai") == "2026-11-01T02:30:00+04:00"
    with pytest.raises(InvalidInput, match="not an IANA time zone"):
        Month(2026, 10).bounds("Mars/Olympus")
