"""Datasets: a folder with ``dataset.yaml`` and CSV recordings, from any source.

``dataset.yaml``::

    name: chillers-2026
    files: ["data/**/*.csv"]          # globs relative to the folder; each file one recording
    delimiter: ","                    # any single character
    timestamp: {column: time}         # ISO-8601 text; or epoch with unit: s | ms;
                                      # timezone: Europe/Paris for text without an offset
                                      # (default UTC)
    asset: {column: asset_id}         # optional; default: one asset per file (its path)
    asset_type: {column: asset_type}  # or a constant: {value: pump}
    signals: [a, b, c]                # optional; default: every numeric column that is not
                                      # the time, asset, asset type or a label; a file may
                                      # have some of them (one asset type's), not none
    labels: {anomaly: anomaly}        # optional per-row 0/1 column
    split: {train_rows: 400}          # first N rows of each recording train;
                                      # or {train_until: "2015-07-31"}
    failures: failures.csv            # optional: asset_id, timestamp, fault_type
    events: events.csv                # optional: asset_id, timestamp, kind, code
    operating: "run_state == 1"       # optional: when the asset runs, an expression over
                                      # its columns (edge_agent.features grammar); or one
                                      # per asset type: {compressor: "current_l1 > 0.5"}

``operating`` names the rows where a machine works: ``evaluate`` then also counts the
detector's errors over those rows, and ``fit --operating-features`` offers each signal's
features over those rows alone (``when(run_state==1,discharge_temp)__mean``): a machine's
condition shows while it runs, and a window's share of idle rows then no longer moves
those features. The columns it reads are loaded beside the signals (they need not be
signals themselves); a file of that asset type without them is an error.

A *recording* is one asset's rows of one file, in time order. What the loader does with
real-world data, and what it refuses:

- A file that cannot be read, lacks a named column, or has no row with a valid time is an
  error that names the file and the column (:class:`~models.errors.DatasetError`); so is a
  malformed ``dataset.yaml`` (the key and why) and a glob that matches nothing.
- Rows whose time does not parse are left out and counted, the first reported with its line.
- A signal cell that is empty is missing (NaN); one that is not a number is missing too, and
  counted per column with the first line where it happened. A column is numeric (a default
  signal) when at least 90 % of its non-empty cells are numbers.
- Rows out of time order (a recorder whose clock stepped back) are kept and sorted into
  place; they are counted. Repeated times are kept.
- A label cell must be 0 or 1 (or empty: unknown, left out of the confusion counts); any
  other value is an error naming the line.
- An asset whose asset type changes within a file is an error.

The loader reads one file at a time (:meth:`Dataset.recordings` is a generator), so a
dataset larger than memory can be trained on; it hashes every byte it reads
(:attr:`Dataset.digest`) for the model card.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.configfile import read_yaml, validate_mapping
from edge_agent.features import signals_of
from models.errors import DatasetError

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
NUMERIC_SHARE = 0.9
"""A column is numeric when at least this share of its non-empty cells are numbers."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimestampSpec(_Strict):
    column: str
    unit: Literal["s", "ms"] | None = None
    """None: ISO-8601 text; s or ms: epoch numbers."""
    timezone: str = "UTC"
    """For ISO text without an offset."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (an IANA name such as Europe/Paris)"
            ) from None
        return v


class ColumnSpec(_Strict):
    column: str


class AssetTypeSpec(_Strict):
    column: str | None = None
    value: str | None = None

    @field_validator("value")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("value must not be empty")
        return v

    def model_post_init(self, _context: Any) -> None:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of column (per row) or value (a constant)")


class LabelsSpec(_Strict):
    anomaly: str
    """The per-row 0/1 column."""


class SplitSpec(_Strict):
    train_rows: Annotated[int, Field(ge=0)] | None = None
    train_until: datetime | None = None

    def model_post_init(self, _context: Any) -> None:
        if (self.train_rows is None) == (self.train_until is None):
            raise ValueError("give exactly one of train_rows or train_until")

    @property
    def until_s(self) -> float | None:
        if self.train_until is None:
            return None
        t = self.train_until
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp()


class DatasetSpec(_Strict):
    name: str
    files: Annotated[list[str], Field(min_length=1)]
    delimiter: str = ","
    timestamp: TimestampSpec
    asset: ColumnSpec | None = None
    asset_type: AssetTypeSpec
    signals: list[str] | None = None
    labels: LabelsSpec | None = None
    split: SplitSpec
    failures: str | None = None
    events: str | None = None
    operating: str | dict[str, str] | None = None

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str) -> str:
        if len(v) != 1:
            raise ValueError(f"the delimiter must be a single character, got {v!r}")
        return v

    @field_validator("signals")
    @classmethod
    def _signals_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("signals must name at least one column (or be left out)")
            dup = sorted({s for s in v if v.count(s) > 1})
            if dup:
                raise ValueError(f"signals named twice: {dup}")
        return v

    @field_validator("operating")
    @classmethod
    def _operating_parses(cls, v: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if v is None:
            return None
        exprs = {"": v} if isinstance(v, str) else v
        if not exprs:
            raise ValueError("operating must name at least one asset type (or be left out)")
        out: dict[str, str] = {}
        for kind, text in exprs.items():
            where = f" for {kind!r}" if kind else ""
            compact = "".join(text.split())
            if not compact:
                raise ValueError(f"the operating expression{where} is empty")
            try:
                signals_of(f"{compact}__mean")
            except ValueError as exc:
                raise ValueError(f"the operating expression{where} {text!r}: {exc}") from None
            out[kind] = compact
        return out[""] if isinstance(v, str) else out

    def operating_for(self, asset_type: str) -> str | None:
        """The asset type's operating condition, without spaces; None without one."""
        if isinstance(self.operating, dict):
            return self.operating.get(asset_type)
        return self.operating

    def operating_columns(self, asset_type: str) -> tuple[str, ...]:
        """The columns the asset type's operating condition reads."""
        op = self.operating_for(asset_type)
        return () if op is None else signals_of(f"{op}__mean")

    def reserved_columns(self) -> set[str]:
        cols = {self.timestamp.column}
        if self.asset is not None:
            cols.add(self.asset.column)
        if self.asset_type.column is not None:
            cols.add(self.asset_type.column)
        if self.labels is not None:
            cols.add(self.labels.anomaly)
        return cols


@dataclass(slots=True)
class Recording:
    """One asset's rows of one file, sorted by time."""

    file: str
    """Path relative to the dataset folder."""
    asset_id: str
    asset_type: str
    t: F64
    """Epoch seconds, ascending (repeats allowed)."""
    signals: dict[str, F64]
    """Signal -> values on ``t``, NaN where missing."""
    label: F64 | None
    """Per-row anomaly label 0/1, NaN where unknown; None without a label column."""
    train: npt.NDArray[np.bool_]
    """True for the rows in the training part of the split."""
    line: npt.NDArray[np.int64]
    """The row's line number in the file (the header is line 1)."""
    context: dict[str, F64] = field(default_factory=dict)
    """Columns read beside the signals (an operating condition's, a model's), not signals:
    column -> values on ``t``, NaN where missing."""

    @property
    def rows(self) -> int:
        return int(self.t.size)

    @property
    def columns(self) -> dict[str, F64]:
        """The signals and the context columns, by name."""
        return {**self.context, **self.signals}

    def frame(self) -> pd.DataFrame:
        """The signals as a DataFrame indexed by UTC time."""
        index = pd.to_datetime(self.t, unit="s", utc=True)
        return pd.DataFrame(self.signals, index=index)


@dataclass(slots=True)
class FileReport:
    """What the loader found wrong in one file (nothing here stopped the load)."""

    file: str
    rows: int = 0
    bad_times: int = 0
    first_bad_time: int | None = None
    """Line of the first row whose time did not parse."""
    out_of_order: int = 0
    bad_cells: dict[str, int] = field(default_factory=dict)
    """Column -> cells that were not numbers (read as missing)."""
    first_bad_cell: dict[str, int] = field(default_factory=dict)
    """Column -> line of its first cell that was not a number."""
    missing_cells: dict[str, int] = field(default_factory=dict)
    """Column -> empty cells."""

    def problems(self) -> list[str]:
        out = []
        if self.bad_times:
            out.append(
                f"{self.file}: {self.bad_times} rows with a time that does not parse left "
                f"out (first at line {self.first_bad_time})"
            )
        if self.out_of_order:
            out.append(f"{self.file}: {self.out_of_order} rows out of time order sorted in")
        for col, n in self.bad_cells.items():
            out.append(
                f"{self.file}: column {col!r}: {n} cells that are not numbers read as missing "
                f"(first at line {self.first_bad_cell[col]})"
            )
        return out


@dataclass(frozen=True, slots=True)
class Failure:
    asset_id: str
    time: float
    """Epoch seconds."""
    fault_type: str


@dataclass(frozen=True, slots=True)
class Event:
    asset_id: str
    time: float
    kind: str
    code: str


def _error(source: Path | str, key: str, why: str) -> DatasetError:
    return DatasetError(str(source), key, why)


def load_spec(folder: Path) -> DatasetSpec:
    """Read and validate ``folder/dataset.yaml``."""
    if not Path(folder).is_dir():
        raise _error(folder, "", "not a folder (a dataset is a folder with dataset.yaml)")
    path = Path(folder) / "dataset.yaml"
    return validate_mapping(DatasetSpec, read_yaml(path, DatasetError), str(path), DatasetError)


class Dataset:
    """An opened dataset: its spec, files, failures and events; recordings on demand."""

    def __init__(
        self,
        folder: Path,
        *,
        rows: Literal["split", "train", "test"] = "split",
        context: Collection[str] = (),
    ) -> None:
        """``rows``: which rows are training data: as the dataset's split says (``split``),
        every row (``train``: to fit on a dataset kept for training, e.g. a simulated
        fleet), or none (``test``: to evaluate on a fleet a model never saw, from each
        unit's first day). ``context``: columns to read beside the signals where a file has
        them (those a model's features name, such as a run state), into
        :attr:`Recording.context`."""
        self.folder = Path(folder)
        self.rows = rows
        self.context = tuple(dict.fromkeys(context))
        self.spec = load_spec(self.folder)
        self.files = self._resolve_files()
        self.failures = self._read_failures()
        self.events = self._read_events()
        self.reports: list[FileReport] = []
        self._hash = hashlib.sha256()
        self._hash.update((self.folder / "dataset.yaml").read_bytes())
        for extra in (self.spec.failures, self.spec.events):
            if extra is not None:
                self._hash.update((self.folder / extra).read_bytes())

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def digest(self) -> str:
        """sha256 over dataset.yaml, the label files and every file read so far."""
        return self._hash.hexdigest()

    # -- files ---------------------------------------------------------------------------
    def _resolve_files(self) -> list[Path]:
        seen: dict[Path, None] = {}
        source = self.folder / "dataset.yaml"
        for i, pattern in enumerate(self.spec.files):
            if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
                raise _error(source, f"files[{i}]", f"{pattern!r} must be inside the folder")
            matched = sorted(p for p in self.folder.glob(pattern) if p.is_file())
            if not matched:
                raise _error(source, f"files[{i}]", f"{pattern!r} matches no file")
            for p in matched:
                seen.setdefault(p)
        return list(seen)

    def _read_table(self, name: str, key: str, columns: Sequence[str]) -> pd.DataFrame:
        path = self.folder / name
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise _error(self.folder / "dataset.yaml", key, f"{name!r} does not exist") from None
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise _error(path, "", f"cannot read the CSV: {exc}") from None
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise _error(path, "header", f"missing columns {missing} (has {list(df.columns)})")
        return df

    def _times(self, path: Path, values: pd.Series) -> F64:
        parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            line = int(bad[0]) + 2
            raise _error(path, f"line {line}", f"timestamp {values.iloc[bad[0]]!r} is not ISO-8601")
        return np.asarray(parsed.astype("int64").to_numpy() / 1e9, dtype=np.float64)

    def _read_failures(self) -> list[Failure]:
        if self.spec.failures is None:
            return []
        df = self._read_table(
            self.spec.failures, "failures", ("asset_id", "timestamp", "fault_type")
        )
        t = self._times(self.folder / self.spec.failures, df["timestamp"])
        return [
            Failure(a, float(x), f)
            for a, x, f in zip(df["asset_id"], t, df["fault_type"], strict=True)
        ]

    def _read_events(self) -> list[Event]:
        if self.spec.events is None:
            return []
        df = self._read_table(self.spec.events, "events", ("asset_id", "timestamp", "kind"))
        t = self._times(self.folder / self.spec.events, df["timestamp"])
        codes = df["code"] if "code" in df.columns else pd.Series([""] * len(df))
        return [
            Event(a, float(x), k, c)
            for a, x, k, c in zip(df["asset_id"], t, df["kind"], codes, strict=True)
        ]

    def failures_of(self, asset_id: str) -> list[Failure]:
        return [f for f in self.failures if f.asset_id == asset_id]

    def events_of(self, asset_id: str) -> list[Event]:
        return [e for e in self.events if e.asset_id == asset_id]

    # -- recordings ----------------------------------------------------------------------
    def recordings(self) -> Iterator[Recording]:
        """Every recording, one file read at a time; :attr:`reports` fills as they are read."""
        for path in self.files:
            yield from self._read_file(path)

    def _read_file(self, path: Path) -> Iterator[Recording]:
        spec = self.spec
        rel = path.relative_to(self.folder).as_posix()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise _error(path, "", f"cannot read the file: {exc.strerror}") from None
        self._hash.update(rel.encode() + b"\0" + hashlib.sha256(raw).digest())
        try:
            head = pd.read_csv(io.BytesIO(raw), sep=spec.delimiter, nrows=0)
            text_cols = {c: str for c in head.columns if str(c).strip() in spec.reserved_columns()}
            df = pd.read_csv(
                io.BytesIO(raw),
                sep=spec.delimiter,
                dtype=text_cols,  # times, ids and labels as text; signals as numbers if they are
                skipinitialspace=True,
                low_memory=False,
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise _error(path, "", f"not a CSV with delimiter {spec.delimiter!r}: {exc}") from None
        df.columns = [str(c).strip() for c in df.columns]
        for c in text_cols:
            df[str(c).strip()] = df[str(c).strip()].fillna("")
        report = FileReport(rel, rows=len(df))
        self.reports.append(report)
        needed = [c for c in spec.reserved_columns() if c not in df.columns]
        if needed:
            raise _error(
                path, "header", f"no column {needed[0]!r} (the header has {list(df.columns)})"
            )
        t = self._file_times(path, df[spec.timestamp.column], report)
        signals = self._signal_columns(path, df)
        values = {c: self._numbers(df[c], c, report) for c in signals}
        context: dict[str, F64] = {}
        label = None
        if spec.labels is not None:
            label = self._labels(path, df[spec.labels.anomaly])
        lines = np.arange(2, len(df) + 2, dtype=np.int64)
        keep = np.isfinite(t)
        if not keep.any():
            raise _error(path, spec.timestamp.column, "no row has a valid time")
        if spec.asset is not None:
            assets = df[spec.asset.column].str.strip().to_numpy()
        else:
            assets = np.full(len(df), Path(rel).with_suffix("").as_posix(), dtype=object)
        if spec.asset_type.column is not None:
            types = df[spec.asset_type.column].str.strip().to_numpy()
        else:
            types = np.full(len(df), spec.asset_type.value, dtype=object)
        for asset in pd.unique(assets[keep]):
            rows = np.flatnonzero(keep & (assets == asset))
            kinds = pd.unique(types[rows])
            if len(kinds) != 1 or not kinds[0]:
                raise _error(
                    path,
                    spec.asset_type.column or "asset_type",
                    f"asset {asset!r} has asset types {list(kinds)}; one non-empty type per asset",
                )
            if not str(asset):
                line = int(lines[rows[0]])
                raise _error(
                    path, f"line {line}", f"empty {spec.asset.column if spec.asset else 'asset'}"
                )
            kind = str(kinds[0])
            operating = spec.operating_columns(kind)
            for c in (*self.context, *operating):
                if c in context or c in values:
                    continue
                if c in df.columns:
                    context[c] = self._numbers(df[c], c, report)
                elif c in operating:
                    raise _error(
                        path,
                        "operating",
                        f"{kind}'s operating condition {spec.operating_for(kind)!r} reads "
                        f"column {c!r}, which this file does not have",
                    )
            order = np.argsort(t[rows], kind="stable")
            report.out_of_order += int(np.count_nonzero(np.diff(t[rows]) < 0))
            rows = rows[order]
            n = rows.size
            until = spec.split.until_s
            if self.rows != "split":
                train = np.full(n, self.rows == "train", dtype=bool)
            elif until is not None:
                train = t[rows] < until
            else:
                train = np.arange(n) < (spec.split.train_rows or 0)
            yield Recording(
                file=rel,
                asset_id=str(asset),
                asset_type=str(kinds[0]),
                t=t[rows],
                signals={c: v[rows] for c, v in values.items()},
                label=None if label is None else label[rows],
                train=train,
                line=lines[rows],
                context={c: v[rows] for c, v in context.items()},
            )
        for problem in report.problems():
            log.warning("%s", problem)

    def _file_times(self, path: Path, col: pd.Series, report: FileReport) -> F64:
        ts = self.spec.timestamp
        text = col.str.strip()
        if ts.unit is not None:
            num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            t = num / (1000.0 if ts.unit == "ms" else 1.0)
        else:
            parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=False)
            if isinstance(parsed.dtype, pd.DatetimeTZDtype):
                utc = parsed.dt.tz_convert("UTC")
            else:
                try:
                    utc = parsed.dt.tz_localize(
                        ts.timezone, ambiguous="NaT", nonexistent="NaT"
                    ).dt.tz_convert("UTC")
                except (TypeError, ValueError):
                    # Mixed offsets: parse each cell on its own, to UTC.
                    utc = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
            ns = utc.to_numpy(dtype="datetime64[ns]")
            t = np.where(np.isnat(ns), np.nan, ns.astype("int64") / 1e9)
        bad = np.flatnonzero(~np.isfinite(t))
        if bad.size:
            report.bad_times = int(bad.size)
            report.first_bad_time = int(bad[0]) + 2
        if bad.size == t.size:
            first = col.iloc[0] if len(col) else ""
            how = f"epoch in {ts.unit}" if ts.unit else "ISO-8601 text"
            raise _error(
                path,
                f"column {ts.column!r}",
                f"no row has a valid time ({how}); the first is {first!r}",
            )
        return np.asarray(t, dtype=np.float64)

    def _signal_columns(self, path: Path, df: pd.DataFrame) -> list[str]:
        spec = self.spec
        if spec.signals is not None:
            # A dataset of several asset types lists the union of their signals; each file
            # has its own type's. A file with none of them is wrong.
            have = [s for s in spec.signals if s in df.columns]
            if not have:
                raise _error(
                    path,
                    "signals",
                    f"none of the signals {spec.signals} is a column of this file "
                    f"(the header has {list(df.columns)})",
                )
            return have
        reserved = spec.reserved_columns()
        out = []
        for c in df.columns:
            if c in reserved:
                continue
            if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
                if df[c].notna().any():
                    out.append(c)
                continue
            text = df[c].astype(str).str.strip().where(df[c].notna(), "")
            filled = text != ""
            if not filled.any():
                continue
            ok = pd.to_numeric(text[filled], errors="coerce").notna().mean()
            if ok >= NUMERIC_SHARE:
                out.append(c)
        if not out:
            raise _error(path, "signals", f"no numeric column besides {sorted(reserved)}")
        return out

    @staticmethod
    def _numbers(col: pd.Series, name: str, report: FileReport) -> F64:
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            num = col.to_numpy(dtype=np.float64, na_value=np.nan)
            missing = int(np.count_nonzero(np.isnan(num)))
            if missing:
                report.missing_cells[name] = missing
            num[~np.isfinite(num)] = np.nan
            return np.asarray(num, dtype=np.float64)
        text = col.astype(str).str.strip().where(col.notna(), "")
        empty = (text == "") | text.str.lower().isin(("nan", "na", "null", "none"))
        num = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(num) & ~empty.to_numpy())
        if bad.size:
            report.bad_cells[name] = int(bad.size)
            report.first_bad_cell[name] = int(bad[0]) + 2
        if empty.any():
            report.missing_cells[name] = int(empty.sum())
        num[~np.isfinite(num)] = np.nan
        return np.asarray(num, dtype=np.float64)

    def _labels(self, path: Path, col: pd.Series) -> F64:
        name = col.name
        text = col.str.strip()
        empty = text == ""
        num = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~empty.to_numpy() & ~np.isin(num, (0.0, 1.0)))
        if bad.size:
            raise _error(
                path,
                f"line {int(bad[0]) + 2}, column {name!r}",
                f"label {text.iloc[bad[0]]!r} is not 0 or 1 (or empty for unknown)",
            )
        return np.asarray(num, dtype=np.float64)
