"""Replay: recorded telemetry from a CSV played onto the registers of a profile.

The CSV has a header row, a time column (ISO-8601, or epoch seconds) and one column per
point, named like the profile's points (``--map csvcol=point`` for other names). The
value of a point at time t is that of the last row at or before t (sample and hold);
before the first row, and for points the CSV lacks, a point holds its default (0,
False or ""). With ``loop`` the recording starts over after its last row, one typical
row interval later.

A CSV that cannot be replayed at all (unreadable, no header, no time column, no column
that names a point) raises :class:`~firmware_sim.errors.ReplayError` with the file, the
place and why. A bad value in one row does not stop the replay of the good ones: a row
whose time does not parse (or goes backwards) is skipped, a cell whose value does not
fit its point is skipped (the point holds its previous value); both are counted, the
first is logged at WARNING with its line and column, the rest at DEBUG.
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from statistics import median
from typing import Literal

from edge_agent.errors import CodecError
from edge_agent.profiles import DataType, DeviceProfile, Point
from edge_agent.registers import encode_point
from firmware_sim.errors import ReplayError
from firmware_sim.source import SignalValue

log = logging.getLogger(__name__)

TimeFormat = Literal["auto", "iso", "epoch"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def default_value(point: Point) -> SignalValue:
    if point.type is DataType.BOOL:
        return False
    if point.type is DataType.STRING:
        return ""
    return 0


def parse_time(text: str, fmt: TimeFormat = "auto") -> datetime:
    """An ISO-8601 time (naive = UTC) or epoch seconds; ValueError if neither."""
    text = text.strip()
    if fmt in ("auto", "epoch"):
        try:
            seconds = float(text)
        except ValueError:
            if fmt == "epoch":
                raise ValueError(f"{text!r} is not epoch seconds") from None
        else:
            if not math.isfinite(seconds):
                raise ValueError(f"{text!r} is not a finite time")
            return datetime.fromtimestamp(seconds, tz=UTC)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        want = "an ISO-8601 time" if fmt == "iso" else "an ISO-8601 time or epoch seconds"
        raise ValueError(f"{text!r} is not {want}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_value(point: Point, text: str) -> SignalValue:
    """A CSV cell as the engineering value of ``point``; ValueError says why not."""
    t = point.type
    if t is DataType.STRING:
        value: SignalValue = text
    elif t is DataType.BOOL:
        low = text.strip().lower()
        if low in _TRUE:
            value = True
        elif low in _FALSE:
            value = False
        else:
            raise ValueError(f"{text!r} is not a bool (1/0, true/false, yes/no, on/off)")
    else:
        s = text.strip()
        try:
            value = int(s) if t.is_integer and point.scale == 1 and point.offset == 0 else float(s)
        except ValueError:
            kind = "an integer" if t.is_integer and point.scale == 1 else "a number"
            raise ValueError(f"{text!r} is not {kind}") from None
        if isinstance(value, float) and not math.isfinite(value) and not t.is_float:
            raise ValueError(f"{text!r} cannot be stored in a {t.value}")
    try:
        encode_point(point, value)
    except CodecError as exc:
        raise ValueError(exc.why) from None
    return value


@dataclass
class _Series:
    times: list[datetime] = field(default_factory=list)
    values: list[SignalValue] = field(default_factory=list)


#: Rows a replay holds in memory at most (about 100 bytes a value); a longer recording is
#: refused at load time rather than read until memory runs out.
MAX_ROWS = 2_000_000


class ReplaySource:
    """A :class:`~firmware_sim.source.SignalSource` playing a CSV onto one profile."""

    def __init__(
        self,
        path: Path | str,
        profile: DeviceProfile,
        *,
        device_id: str = "replay",
        time_column: str = "time",
        time_format: TimeFormat = "auto",
        column_map: Mapping[str, str] | None = None,
        loop: bool = False,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.profile = profile
        self.device_id = device_id
        self.loop = loop
        self.skipped_rows = 0
        self.skipped_values = 0
        self._warned = False
        self._series: dict[str, _Series] = {}
        self._load(time_column, time_format, dict(column_map or {}))
        self.start = self._first
        self._now = self._first

    # -- loading -----------------------------------------------------------------------
    def _fail(self, where: str, why: str) -> ReplayError:
        return ReplayError(str(self.path), where, why)

    def _skip(self, line: int, column: str, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s: line %d, column %s: %s (skipped; later ones are logged at DEBUG)",
                        self.path, line, column, why)
        else:
            log.debug("%s: line %d, column %s: %s (skipped)", self.path, line, column, why)

    def _load(self, time_column: str, time_format: TimeFormat, column_map: dict[str, str]) -> None:
        try:
            handle = self.path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise self._fail("", f"cannot read the file: {exc.strerror}") from None
        with handle:
            reader = csv.reader(handle)
            try:
                header = next(reader, None)
                if header is None:
                    raise self._fail("line 1", "the file is empty; expected a header row")
                header = [h.strip() for h in header]
                columns = self._columns(header, time_column, column_map)
                time_idx = header.index(time_column)
                rows = 0
                last: datetime | None = None
                for row in reader:
                    line = reader.line_num
                    if not row or all(not c.strip() for c in row):
                        continue
                    if len(row) <= time_idx:
                        self.skipped_rows += 1
                        self._skip(line, time_column, "the row has no value in this column")
                        continue
                    try:
                        t = parse_time(row[time_idx], time_format)
                    except ValueError as exc:
                        self.skipped_rows += 1
                        self._skip(line, time_column, str(exc))
                        continue
                    if last is not None and t < last:
                        self.skipped_rows += 1
                        self._skip(line, time_column, f"time {t.isoformat()} goes back before "
                                   f"{last.isoformat()}")
                        continue
                    last = t
                    rows += 1
                    if rows > self.max_rows:
                        raise self._fail(
                            f"line {line}",
                            f"the recording has more than {self.max_rows} rows, the most a "
                            "replay holds in memory; split the file or pass a higher max_rows",
                        )
                    for idx, point in columns.items():
                        cell = row[idx] if idx < len(row) else ""
                        if not cell.strip() and point.type is not DataType.STRING:
                            continue
                        try:
                            value = parse_value(point, cell)
                        except ValueError as exc:
                            self.skipped_values += 1
                            self._skip(line, header[idx], f"{exc} for point {point.name}")
                            continue
                        series = self._series[point.name]
                        series.times.append(t)
                        series.values.append(value)
            except csv.Error as exc:
                raise self._fail(f"line {reader.line_num}", f"not valid CSV: {exc}") from None
            except UnicodeDecodeError as exc:
                raise self._fail("", f"not UTF-8 text: {exc.reason}") from None
        if rows == 0:
            why = "no data rows" if not self.skipped_rows else (
                f"none of the {self.skipped_rows} data rows has a valid time"
            )
            raise self._fail(f"column {time_column}", why)
        if self.skipped_rows or self.skipped_values:
            log.warning("%s: skipped %d rows and %d values that could not be replayed",
                        self.path, self.skipped_rows, self.skipped_values)
        all_times = sorted({t for s in self._series.values() for t in s.times})
        self._first = min(all_times) if all_times else datetime.fromtimestamp(0, UTC)
        self._last = max(all_times) if all_times else self._first
        steps = [(b - a).total_seconds() for a, b in pairwise(all_times)]
        step = median(steps) if steps else 0.0
        self.period = (self._last - self._first) + timedelta(seconds=step)
        self.rows = rows
        log.info("%s: %d rows, %s .. %s, points %s", self.path, rows, self._first.isoformat(),
                 self._last.isoformat(), ", ".join(n for n, s in self._series.items() if s.times))

    def _columns(self, header: list[str], time_column: str,
                 column_map: dict[str, str]) -> dict[int, Point]:
        if time_column not in header:
            raise self._fail(
                "line 1", f"no time column {time_column!r} (columns: {', '.join(header)}); "
                "name it with --time-column"
            )
        names = set(self.profile.names)
        for csv_col, point in column_map.items():
            if csv_col not in header:
                raise self._fail("line 1", f"--map names column {csv_col!r}, which the header "
                                 f"lacks (columns: {', '.join(header)})")
            if point not in names:
                raise self._fail(f"column {csv_col}", f"--map names point {point!r}, which "
                                 f"profile {self.profile.id} lacks")
        columns: dict[int, Point] = {}
        ignored = []
        for idx, col in enumerate(header):
            if col == time_column:
                continue
            name = column_map.get(col, col)
            if name in names:
                if any(p.name == name for p in columns.values()):
                    raise self._fail(f"column {col}", f"point {name} has two columns")
                columns[idx] = self.profile.point(name)
                self._series[name] = _Series()
            else:
                ignored.append(col)
        if not columns:
            raise self._fail("line 1", f"no column names a point of profile {self.profile.id} "
                             "(map columns with --map csvcol=point)")
        if ignored:
            log.warning("%s: columns %s name no point of %s and are ignored", self.path,
                        ", ".join(ignored), self.profile.id)
        return columns

    # -- SignalSource ------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        return self._now

    @property
    def end(self) -> datetime:
        """Time of the last row."""
        return self._last

    def advance_to(self, t: datetime) -> None:
        if t > self._now:
            self._now = t

    def _position(self) -> datetime:
        """Where in the recording ``now`` falls (with loop, wrapped into one period)."""
        if self.loop and self._now > self._last and self.period > timedelta(0):
            return self._first + (self._now - self._first) % self.period
        return self._now

    def signals(self, device_id: str) -> dict[str, SignalValue]:
        if device_id != self.device_id:
            raise KeyError(f"replay serves device {self.device_id!r}, not {device_id!r}")
        at = self._position()
        out: dict[str, SignalValue] = {}
        for point in self.profile.points:
            series = self._series.get(point.name)
            value = default_value(point)
            if series is not None and series.times:
                i = bisect.bisect_right(series.times, at) - 1
                if i >= 0:
                    value = series.values[i]
            out[point.name] = value
        return out

    def reboot(self, device_id: str) -> None:
        log.info("replay of %s: a reboot does not change recorded values", self.path)
