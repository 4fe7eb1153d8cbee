"""Report months: ``YYYY-MM`` text, local calendar months in a site's time zone.

A report month is a local calendar month at each site: from local midnight on the 1st to
local midnight on the 1st of the next month, in the site's IANA time zone (DST
included: a March in Europe has 743 hours). The figures are hourly and hours are UTC
hours, so both bounds are rounded *down* to a whole UTC hour; in the few zones with a
half-hour offset (Asia/Kolkata) a month therefore starts and ends 30 minutes early,
and consecutive months still tile time without a gap or an overlap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

from cloud.energy.tariff import zone_of
from cloud.errors import InvalidInput

HOUR_S: Final = 3600
_MONTH_RE: Final = re.compile(r"([0-9]{4})-([0-9]{2})")
FIRST_YEAR: Final = 2000
LAST_YEAR: Final = 2999


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """A calendar month (``Month(2026, 10)`` is October 2026; ``str()`` gives ``2026-10``)."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (FIRST_YEAR <= self.year <= LAST_YEAR and 1 <= self.month <= 12):
            raise InvalidInput("month", f"{self.year:04d}-{self.month:02d} is not a month")

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def plus(self, months: int) -> Month:
        """The month ``months`` after this one (before it when negative)."""
        index = self.year * 12 + (self.month - 1) + months
        return Month(index // 12, index % 12 + 1)

    def first_day(self, zone: ZoneInfo) -> datetime:
        """Local midnight of the 1st, aware in ``zone``."""
        return datetime(self.year, self.month, 1, tzinfo=zone)

    def bounds(self, timezone: str) -> tuple[int, int]:
        """``[start, end)`` in seconds since the epoch: the local month in ``timezone``,
        each bound rounded down to a whole UTC hour (see the module docstring)."""
        zone = zone_of(timezone)
        start = self.first_day(zone).timestamp()
        end = self.plus(1).first_day(zone).timestamp()
        return math.floor(start / HOUR_S) * HOUR_S, math.floor(end / HOUR_S) * HOUR_S

    @classmethod
    def of(cls, moment: datetime, timezone: str) -> Month:
        """The local month ``moment`` (aware) falls in, in ``timezone``."""
        local = moment.astimezone(zone_of(timezone))
        return cls(local.year, local.month)


def parse_month(value: object, where: str = "month") -> Month:
    """``"2026-10"`` → ``Month(2026, 10)``; :class:`~cloud.errors.InvalidInput` naming
    ``where`` for anything else."""
    if not isinstance(value, str):
        raise InvalidInput(where, f"{value!r} is not a month YYYY-MM")
    match = _MONTH_RE.fullmatch(value.strip())
    if match is None:
        raise InvalidInput(where, f"{value!r} is not a month YYYY-MM (e.g. 2026-10)")
    year, month = int(match[1]), int(match[2])
    if not 1 <= month <= 12:
        raise InvalidInput(where, f"{value!r}: month {month} is not 01 to 12")
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInput(where, f"{value!r}: year {year} is not {FIRST_YEAR} to {LAST_YEAR}")
    return Month(year, month)


def local_iso(epoch_s: float, timezone: str) -> str:
    """``epoch_s`` as local ISO 8601 with its offset (``2026-10-01T00:00:00+04:00``)."""
    return datetime.fromtimestamp(epoch_s, UTC).astimezone(zone_of(timezone)).isoformat()
