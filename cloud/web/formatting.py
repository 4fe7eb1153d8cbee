"""How the dashboard writes times, numbers and names (the templates' filters).

Times are shown in the site's time zone (``Site.timezone``), never the server's or UTC;
a page that shows one site says which zone once, a page of many sites names the zone's
abbreviation with each time.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UNITS = {"degC": "°C", "degF": "°F", "K": "K", "%": "%"}


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` (UTC when it is empty or unknown: a site's zone is checked
    when it is saved, so this only guards against old rows)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def to_local(value: datetime | float | None, tz: str | ZoneInfo) -> datetime | None:
    """An aware datetime or epoch seconds, in the zone ``tz``."""
    if value is None:
        return None
    z = tz if isinstance(tz, ZoneInfo) else zone(tz)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(z)
    return datetime.fromtimestamp(float(value), z)


def fmt_datetime(
    value: datetime | float | None, tz: str | ZoneInfo, *, zone_name: bool = False
) -> str:
    """``24 Nov 2026, 14:05`` in the zone (``… 14:05 +04`` with ``zone_name``); ``–`` for None."""
    local = to_local(value, tz)
    if local is None:
        return "–"
    text = f"{local.day} {local:%b %Y}, {local:%H:%M}"
    return f"{text} {local.tzname()}" if zone_name else text


def fmt_short(value: datetime | float | None, tz: str | ZoneInfo) -> str:
    """``24 Nov, 14:05`` in the zone with its abbreviation (tables of many sites)."""
    local = to_local(value, tz)
    if local is None:
        return "–"
    return f"{local.day} {local:%b}, {local:%H:%M} {local.tzname()}"


def zone_label(tz: str, at: datetime) -> str:
    """``Asia/Dubai (+04)``: the zone a page's times are in."""
    local = to_local(at, tz)
    abbrev = local.tzname() if local is not None else None
    return f"{tz} ({abbrev})" if abbrev and abbrev != tz else tz


def fmt_date(value: date | datetime | None) -> str:
    if value is None:
        return "–"
    return f"{value.day} {value:%b %Y}"


def iso(value: datetime | float | None) -> str:
    """The machine-readable time for ``<time datetime=...>`` (UTC, ISO 8601)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="seconds")


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{max(1, round(seconds))} s" if seconds >= 1 else "1 s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{round(minutes)} min"
    hours = minutes / 60
    if hours < 48:
        return f"{round(hours)} h"
    return f"{round(hours / 24)} days"


def fmt_ago(value: datetime | float | None, now: datetime) -> str:
    """``5 min ago``; ``never`` for None."""
    if value is None:
        return "never"
    ts = value.timestamp() if isinstance(value, datetime) else float(value)
    delta = now.timestamp() - ts
    if delta < 45:
        return "just now"
    return f"{_span(delta)} ago"


def fmt_due(due: datetime | None, now: datetime) -> str:
    """``in 3 h`` or ``overdue by 2 days``."""
    if due is None:
        return "–"
    delta = due.timestamp() - now.timestamp()
    return f"in {_span(delta)}" if delta >= 0 else f"overdue by {_span(delta)}"


def fmt_pct(p: float | None) -> str:
    """A probability as a percentage (``72%``); ``–`` for None."""
    if p is None or not math.isfinite(p):
        return "–"
    return f"{p * 100:.0f}%"


def fmt_number(x: float | None, digits: int = 1) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_kwh(x: float | None) -> str:
    return "–" if x is None else f"{fmt_number(x)} kWh"


def humanize(name: str | None) -> str:
    """``discharge_pressure`` → ``Discharge pressure``; ``alarm:high_pressure`` → ``Alarm:
    high pressure``."""
    if not name:
        return ""
    text = name.replace("_", " ").replace(":", ": ").replace("  ", " ").strip()
    return text[:1].upper() + text[1:]


def unit(symbol: str | None) -> str:
    """A profile's unit as people write it (``degC`` → ``°C``)."""
    if not symbol:
        return ""
    return UNITS.get(symbol, symbol)
