"""Site tariffs: the schema of ``Site.tariff`` and the price of every hour of a period.

Schema (JSON, validated by :func:`parse_tariff`; unknown keys are refused)
    Flat: one price at all hours::

        {"kind": "flat", "currency": "EUR", "price_per_kwh": 0.21,
         "standing_charge_per_day": 0.5}

    Time of use: named periods of the week, a default price for the hours outside them,
    and optionally seasons (month ranges) with periods of their own::

        {"kind": "tou", "currency": "EUR", "default_price_per_kwh": 0.14,
         "standing_charge_per_day": 0.5,
         "periods": [
           {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "08:00", "end": "20:00", "price_per_kwh": 0.31},
           {"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.09}],
         "seasons": [
           {"name": "summer", "start_month": 6, "end_month": 9,
            "default_price_per_kwh": 0.16,
            "periods": [{"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"],
                         "start": "12:00", "end": "18:00", "price_per_kwh": 0.38}]}]}

    Common keys: ``schema_version`` (optional, 1), ``currency`` (ISO 4217, e.g. ``EUR``),
    ``standing_charge_per_day`` (optional, default 0; charged per local calendar day).
    Prices are per kWh in the currency, finite and not negative.

Periods
    ``start`` and ``end`` are local wall-clock times ``HH:MM`` (``end`` may be ``24:00``);
    a period covers ``[start, end)``. When ``end`` is not after ``start`` the period
    crosses midnight (``22:00``–``06:00``) and ``days`` name the day it *starts*: a night
    period on ``mon``–``fri`` covers Friday 22:00 to Saturday 06:00 but not Monday 00:00 to
    06:00. ``days`` defaults to every day; ``start == end`` is refused (use ``00:00`` to
    ``24:00`` for a whole day). One name may have several entries (a morning and an
    evening peak) at one price. Periods of one schedule must not overlap: the error names
    both. Hours outside every period are in the period ``"default"`` at the default price
    (the names ``"default"`` and ``"flat"``, which a flat tariff's hours get, are reserved).

Seasons
    ``start_month`` to ``end_month``, both included, may wrap the year (11 to 2 is
    November to February). A minute belongs to the season of its *local date*'s month
    (a night period that starts on 30 September runs on into October under October's
    schedule). Seasons must not overlap; months in no season use the top-level
    ``periods`` and default price; a season without ``default_price_per_kwh`` uses the
    top-level one.

Evaluation (:func:`price_per_hour`)
    Every UTC hour is evaluated minute by minute at the local wall-clock time of the
    site's IANA time zone, so DST days come out right by construction: the spring-forward
    day has 23 hours, wall-clock 01:00 to 02:00 (Lisbon) happens on no hour, and the
    fall-back day has 25, the repeated hour priced twice.

    Boundaries inside an hour (a period that starts at 07:30, or every boundary in a zone
    with a half-hour offset such as Asia/Kolkata) are **split proportionally**: the
    hour's price is the time-weighted mean of the prices in force during it. Consumption
    is only known per hour, so this assumes it is even within the hour. Such boundaries
    are not refused, because a zone's offset alone can put them mid-hour.
    :attr:`HourlyPrices.shares` gives each period's fraction of each hour and
    :attr:`HourlyPrices.price_parts` its contribution to the hour's price, so cost by
    period adds up to the cost exactly.

    The standing charge is spread over the hours of each local day (1/23 of it per hour on
    a 23-hour day), so any whole local days sum to whole daily charges.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from cloud.errors import InvalidInput

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DEFAULT_PERIOD: Final = "default"
"""The period of the hours outside every period of a time-of-use tariff."""
FLAT_PERIOD: Final = "flat"
"""The period of every hour of a flat tariff."""
MINUTES_PER_DAY: Final = 1440
_CLOCK: Final = re.compile(r"([0-9]{2}):([0-9]{2})")


class _At(ValueError):
    """A validation error of a model at ``path`` below it (names the key, not just the model)."""

    def __init__(self, path: tuple[str | int, ...], why: str) -> None:
        super().__init__(why)
        self.path = path
        self.why = why


def _clock(value: str) -> str:
    match = _CLOCK.fullmatch(value)
    if match is None or int(match[1]) > 24 or int(match[2]) > 59 or value > "24:00":
        raise ValueError(f"{value!r} is not a time of day HH:MM (00:00 to 24:00)")
    return value


def _minute(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


Clock = Annotated[str, AfterValidator(_clock)]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Month = Annotated[int, Field(ge=1, le=12)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Period(_Strict):
    """One named window of the week at one price."""

    name: Name
    days: Annotated[tuple[Day, ...], Field(min_length=1)] = DAYS
    """The days the period *starts* on."""
    start: Clock
    end: Clock
    price_per_kwh: Price

    @model_validator(mode="after")
    def _check(self) -> Period:
        if self.name in (DEFAULT_PERIOD, FLAT_PERIOD):
            raise _At(("name",), f"{self.name!r} is reserved for the hours outside every period")
        seen: set[str] = set()
        for i, day in enumerate(self.days):
            if day in seen:
                raise _At(("days", i), f"{day!r} is listed twice")
            seen.add(day)
        if self.start == "24:00":
            raise _At(("start",), "a period starts at 23:59 at the latest")
        if self.start_minute == self.end_minute:
            raise _At(("end",), f"equals start ({self.start}): use 00:00 to 24:00 for a whole day")
        return self

    @property
    def start_minute(self) -> int:
        return _minute(self.start)

    @property
    def end_minute(self) -> int:
        """Minute of the day the period ends (1440 for ``24:00``)."""
        return _minute(self.end)

    def spans(self) -> list[tuple[int, int, int]]:
        """``(weekday, from, to)`` minute ranges of the week (Monday = 0) the period covers."""
        out: list[tuple[int, int, int]] = []
        start, end = self.start_minute, self.end_minute
        for day in self.days:
            d = DAYS.index(day)
            if end > start:
                out.append((d, start, end))
            else:
                out.append((d, start, MINUTES_PER_DAY))
                if end:
                    out.append(((d + 1) % 7, 0, end))
        return out


def _check_periods(periods: Sequence[Period]) -> None:
    """One name, one price; no two periods share a minute of the week."""
    first_of: dict[str, int] = {}
    owner = np.full((7, MINUTES_PER_DAY), -1, dtype=np.int64)
    for i, period in enumerate(periods):
        j = first_of.setdefault(period.name, i)
        if periods[j].price_per_kwh != period.price_per_kwh:
            raise _At(
                ("periods", i, "price_per_kwh"),
                f"{period.price_per_kwh} differs from periods[{j}], also named "
                f"{period.name!r} ({periods[j].price_per_kwh}): the entries of one period "
                "share a price",
            )
        for d, lo, hi in period.spans():
            taken = np.nonzero(owner[d, lo:hi] >= 0)[0]
            if taken.size:
                minute = lo + int(taken[0])
                k = int(owner[d, minute])
                raise _At(
                    ("periods", i),
                    f"{period.name!r} ({period.start}-{period.end}) overlaps periods[{k}] "
                    f"({periods[k].name!r}, {periods[k].start}-{periods[k].end}) on "
                    f"{DAYS[d]} from {_hhmm(minute)}: periods must not overlap",
                )
            owner[d, lo:hi] = i


class Season(_Strict):
    """Months (``start_month`` to ``end_month``, both included, may wrap the year) with
    their own periods."""

    name: Name
    start_month: Month
    end_month: Month
    periods: list[Period] = Field(default_factory=list)
    default_price_per_kwh: Price | None = None
    """``None``: the tariff's ``default_price_per_kwh``."""

    @model_validator(mode="after")
    def _check(self) -> Season:
        _check_periods(self.periods)
        return self

    @property
    def months(self) -> tuple[int, ...]:
        if self.start_month <= self.end_month:
            return tuple(range(self.start_month, self.end_month + 1))
        return (*range(self.start_month, 13), *range(1, self.end_month + 1))


class FlatTariff(_Strict):
    """One price at all hours."""

    kind: Literal["flat"]
    schema_version: Literal[1] = 1
    currency: Currency
    price_per_kwh: Price
    standing_charge_per_day: Price = 0.0


class TouTariff(_Strict):
    """Time of use: named periods of the week, optionally per season."""

    kind: Literal["tou"]
    schema_version: Literal[1] = 1
    currency: Currency
    periods: list[Period] = Field(default_factory=list)
    default_price_per_kwh: Price
    standing_charge_per_day: Price = 0.0
    seasons: list[Season] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> TouTariff:
        if not self.periods and not any(s.periods for s in self.seasons):
            raise _At(
                ("periods",),
                "a tou tariff needs at least one period (one price at all hours is kind flat)",
            )
        _check_periods(self.periods)
        season_of: dict[int, int] = {}
        for i, season in enumerate(self.seasons):
            for month in season.months:
                j = season_of.setdefault(month, i)
                if j != i:
                    other = self.seasons[j]
                    raise _At(
                        ("seasons", i),
                        f"{season.name!r} (months {season.start_month}-{season.end_month}) "
                        f"overlaps seasons[{j}] ({other.name!r}, months {other.start_month}-"
                        f"{other.end_month}) in month {month}: seasons must not overlap",
                    )
        return self


Tariff = Annotated[FlatTariff | TouTariff, Field(discriminator="kind")]
_ADAPTER: Final[TypeAdapter[FlatTariff | TouTariff]] = TypeAdapter(Tariff)


def _key_path(where: str, loc: Sequence[str | int]) -> str:
    return where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def parse_tariff(data: object, where: str = "tariff") -> FlatTariff | TouTariff:
    """Validate a ``Site.tariff`` value; a problem raises :class:`~cloud.errors.InvalidInput`
    whose ``where`` is the key path (``tariff.periods[1].start``) of the first one."""
    if data is None:
        raise InvalidInput(where, "no tariff is set")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        loc: list[str | int] = list(err["loc"])
        if loc and loc[0] in ("flat", "tou"):
            loc = loc[1:]  # the discriminator's tag, not a key
        why = str(err["msg"]).removeprefix("Value error, ")
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _At):
            loc += cause.path
            why = cause.why
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
            why = f"expected 'flat' or 'tou', got {_kind_of(data)!r}"
        if len(errors) > 1:
            why += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise InvalidInput(_key_path(where, loc), why) from None


def _kind_of(data: object) -> object:
    return data.get("kind") if isinstance(data, Mapping) else None


def tariff_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``Site.tariff`` (for the API's documentation)."""
    return _ADAPTER.json_schema()


# ---- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tables:
    """A tariff as lookup tables: schedule (0 = top level, then seasons) × weekday × minute."""

    names: tuple[str, ...]
    name_idx: npt.NDArray[np.intp]
    price: npt.NDArray[np.float64]
    schedule_of_month: npt.NDArray[np.intp]
    """Index 1-12: the schedule of that month."""


def _tables(tariff: FlatTariff | TouTariff) -> _Tables:
    if isinstance(tariff, FlatTariff):
        return _Tables(
            names=(FLAT_PERIOD,),
            name_idx=np.zeros((1, 7, MINUTES_PER_DAY), dtype=np.intp),
            price=np.full((1, 7, MINUTES_PER_DAY), tariff.price_per_kwh),
            schedule_of_month=np.zeros(13, dtype=np.intp),
        )
    schedules: list[tuple[Sequence[Period], float]] = [
        (tariff.periods, tariff.default_price_per_kwh)
    ]
    for season in tariff.seasons:
        default = season.default_price_per_kwh
        schedules.append(
            (season.periods, tariff.default_price_per_kwh if default is None else default)
        )
    names = list(dict.fromkeys(p.name for periods, _ in schedules for p in periods))
    names.append(DEFAULT_PERIOD)
    name_idx = np.full((len(schedules), 7, MINUTES_PER_DAY), len(names) - 1, dtype=np.intp)
    price = np.zeros((len(schedules), 7, MINUTES_PER_DAY))
    for s, (periods, default) in enumerate(schedules):
        price[s] = default
        for period in periods:
            for d, lo, hi in period.spans():
                name_idx[s, d, lo:hi] = names.index(period.name)
                price[s, d, lo:hi] = period.price_per_kwh
    schedule_of_month = np.zeros(13, dtype=np.intp)
    for k, season in enumerate(tariff.seasons, start=1):
        schedule_of_month[list(season.months)] = k
    return _Tables(tuple(names), name_idx, price, schedule_of_month)


@dataclass(frozen=True, slots=True)
class HourlyPrices:
    """A tariff evaluated over hours: what :func:`price_per_hour` returns."""

    hours: npt.NDArray[np.int64]
    """The hour starts (seconds since the epoch, UTC) evaluated."""
    currency: str
    prices: npt.NDArray[np.float64]
    """Price per kWh of each hour: the time-weighted mean over its minutes."""
    periods: npt.NDArray[np.str_]
    """Name of the period in force for most of each hour (a tie: the first in the tariff's
    order, declared periods before ``default``)."""
    shares: Mapping[str, npt.NDArray[np.float64]]
    """Period → the fraction of each hour it covers (every period of the tariff; the
    fractions of one hour sum to 1)."""
    price_parts: Mapping[str, npt.NDArray[np.float64]]
    """Period → its contribution to :attr:`prices` (share × its price; they sum to it)."""
    local_days: npt.NDArray[np.float64]
    """The fraction of a local calendar day each hour is (1/23 on a 23-hour day)."""
    standing: npt.NDArray[np.float64]
    """The standing charge allotted to each hour (daily charge × :attr:`local_days`)."""

    @property
    def days(self) -> float:
        """Local calendar days the hours cover (31.0 for March, DST change or not)."""
        return float(self.local_days.sum())


def zone_of(timezone: str) -> ZoneInfo:
    """The IANA zone ``timezone``; :class:`~cloud.errors.InvalidInput` naming it when
    there is none of that name."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("timezone", f"{timezone!r} is not an IANA time zone") from None


def _hour_array(hour_starts_utc: npt.ArrayLike) -> npt.NDArray[np.int64]:
    raw = np.asarray(hour_starts_utc)
    if raw.ndim != 1:
        raise InvalidInput("hour_starts_utc", f"expected one dimension, got shape {raw.shape}")
    if raw.size and not (
        np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)
    ):
        raise InvalidInput("hour_starts_utc", f"expected seconds since the epoch, got {raw.dtype}")
    as_float = raw.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
        raise InvalidInput("hour_starts_utc", "expected whole seconds since the epoch")
    return raw.astype(np.int64)


def _offset_s(zone: ZoneInfo, t: int) -> int:
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def _day_minutes(zone: ZoneInfo, day: int) -> float:
    """Real minutes of the local calendar day ``day`` (days since 1970-01-01)."""
    first = date(1970, 1, 1) + timedelta(days=day)
    second = first + timedelta(days=1)
    t0 = datetime(first.year, first.month, first.day, tzinfo=zone).timestamp()
    t1 = datetime(second.year, second.month, second.day, tzinfo=zone).timestamp()
    return (t1 - t0) / 60


def _hour_mean(minutes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Mean of each row of per-minute values; exactly the value where a row is uniform (a
    whole hour at 0.21 costs 0.21, not 0.21000000000000005)."""
    uniform = minutes.min(axis=1) == minutes.max(axis=1)
    return np.where(uniform, minutes[:, 0], minutes.mean(axis=1))


def price_per_hour(
    tariff: FlatTariff | TouTariff | Mapping[str, Any],
    hour_starts_utc: npt.ArrayLike,
    timezone: str,
) -> HourlyPrices:
    """The tariff at each hour starting at ``hour_starts_utc`` (seconds since the epoch),
    evaluated at the local time of ``timezone`` (IANA); a mapping is parsed first
    (:func:`parse_tariff`). ``prices`` and ``periods`` are the price and period per hour;
    see :class:`HourlyPrices` and the module docstring for split hours and DST."""
    if not isinstance(tariff, FlatTariff | TouTariff):
        tariff = parse_tariff(tariff)
    zone = zone_of(timezone)
    hours = _hour_array(hour_starts_utc)
    tables = _tables(tariff)
    seconds = np.arange(60, dtype=np.int64) * 60
    try:
        first = np.array([_offset_s(zone, int(t)) for t in hours], dtype=np.int64)
        last = np.array([_offset_s(zone, int(t) + 3540) for t in hours], dtype=np.int64)
        offsets = np.repeat(first[:, None], 60, axis=1)
        for row in np.nonzero(first != last)[0]:  # an offset change inside the hour
            start = int(hours[row])
            offsets[row] = [_offset_s(zone, start + int(s)) for s in seconds]
        wall = (hours[:, None] + seconds[None, :] + offsets) // 60  # local minutes since epoch
        day = wall // MINUTES_PER_DAY
        unique_days = np.unique(day)
        per_day = np.array([1.0 / _day_minutes(zone, int(d)) for d in unique_days])
    except (OverflowError, ValueError, OSError) as exc:
        raise InvalidInput("hour_starts_utc", f"a time is out of range: {exc}") from None
    minute = wall % MINUTES_PER_DAY
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    schedule = tables.schedule_of_month[month]
    idx = tables.name_idx[schedule, weekday, minute]
    price = tables.price[schedule, weekday, minute]

    shares: dict[str, npt.NDArray[np.float64]] = {}
    parts: dict[str, npt.NDArray[np.float64]] = {}
    counts = np.zeros((len(tables.names), len(hours)), dtype=np.int64)
    for p, name in enumerate(tables.names):
        mask = idx == p
        counts[p] = mask.sum(axis=1)
        shares[name] = counts[p] / 60.0
        parts[name] = _hour_mean(np.where(mask, price, 0.0))
    names = np.array(tables.names, dtype=np.str_)
    local_days = per_day[np.searchsorted(unique_days, day)].sum(axis=1)
    return HourlyPrices(
        hours=hours,
        currency=tariff.currency,
        prices=_hour_mean(price),
        periods=names[np.argmax(counts, axis=0)] if len(hours) else np.array([], dtype=np.str_),
        shares=shares,
        price_parts=parts,
        local_days=local_days,
        standing=local_days * tariff.standing_charge_per_day,
    )


def _pair(
    kwh: npt.ArrayLike, prices: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    k = np.asarray(kwh, dtype=np.float64)
    p = np.asarray(prices, dtype=np.float64)
    if k.shape != p.shape:
        raise InvalidInput("kwh", f"shape {k.shape} does not match the prices' {p.shape}")
    return k, p


def cost(kwh: npt.ArrayLike, prices: npt.ArrayLike) -> float:
    """Energy cost: Σ kWh × price over the hours; hours whose kWh is NaN (missing) add
    nothing. The standing charge is separate (:attr:`HourlyPrices.standing`)."""
    k, p = _pair(kwh, prices)
    return float(np.nansum(k * p))


def cost_by_period(kwh: npt.ArrayLike, prices: HourlyPrices) -> dict[str, float]:
    """:func:`cost` split by tariff period (a split hour's kWh go to its periods pro rata);
    the values sum to ``cost(kwh, prices.prices)``."""
    k, _ = _pair(kwh, prices.prices)
    return {name: float(np.nansum(k * part)) for name, part in prices.price_parts.items()}


def kwh_by_period(kwh: npt.ArrayLike, prices: HourlyPrices) -> dict[str, float]:
    """Consumption split by tariff period, pro rata within split hours."""
    k, _ = _pair(kwh, prices.prices)
    return {name: float(np.nansum(k * share)) for name, share in prices.shares.items()}
