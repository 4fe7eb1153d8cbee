"""Query parameters shared by several routers: paging, search, time ranges, intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from fastapi import Query

from cloud.errors import InvalidInput

MAX_POINTS: Final = 10_000
"""Intervals one energy or rollup request may ask for at most."""
MAX_SPAN: Final = timedelta(days=800)

Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many items")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="skip this many items")]
Search = Annotated[
    str | None, Query(max_length=200, description="case-insensitive substring search")
]
Start = Annotated[
    datetime | None,
    Query(description="ISO 8601 (UTC when no offset is given) or seconds since the epoch"),
]
End = Annotated[datetime | None, Query(description="exclusive; default now")]
Interval = Annotated[int, Query(ge=60, le=31 * 86_400, description="interval length in seconds")]


def _utc(value: datetime, where: str) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(where, "out of range") from None


def time_range(
    start: datetime | None, end: datetime | None, default_span: timedelta
) -> tuple[float, float]:
    """``[start, end)`` in seconds since the epoch; end defaults to now, start to
    ``default_span`` before end. :class:`InvalidInput` for an empty or too long range."""
    stop = _utc(end, "end") if end is not None else datetime.now(UTC)
    try:
        begin = _utc(start, "start") if start is not None else stop - default_span
    except OverflowError:
        raise InvalidInput("end", "out of range") from None
    if begin >= stop:
        raise InvalidInput("start", "must be before end")
    if stop - begin > MAX_SPAN:
        raise InvalidInput("start", f"the range may span at most {MAX_SPAN.days} days")
    return begin.timestamp(), stop.timestamp()


def check_intervals(start: float, end: float, interval_s: int) -> None:
    if (end - start) / interval_s > MAX_POINTS:
        raise InvalidInput(
            "interval", f"the range holds more than {MAX_POINTS} intervals; use a longer one"
        )
