"""Device profiles: the register maps of the controllers EdgeWatch reads.

A profile is a YAML file with one schema, owned here and read by everyone: the agent
polls the points a profile names, the simulator serves exactly the same points, and
the names of the points are the names of the signals downstream.

Example (the shipped profiles in ``edge_agent/profiles/`` are complete ones)::

    schema_version: 1
    id: ew-cc100
    asset_type: compressor
    description: compressor controller
    defaults: {byte_order: big, word_order: big}
    points:
      - {name: suction_pressure, table: input, address: 0, type: float32,
         word_order: little, unit: bar}
      - {name: suction_temp, table: input, address: 4, type: int16, scale: 0.1, unit: degC}
      - {name: run_state, table: holding, address: 100, type: uint16,
         enum: {0: off, 1: running, 2: tripped}}

Addresses are 0-based protocol addresses (what goes on the wire), per table. The
engineering value of a numeric point is ``raw * scale + offset``.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.configfile import read_yaml, validate_document
from edge_agent.errors import ProfileError

PROFILE_SCHEMA_VERSION = 1
BUILTIN_PROFILE_DIR = Path(__file__).parent / "profiles"


class Table(StrEnum):
    """The four Modbus data tables."""

    HOLDING = "holding"  # function codes 3 (read), 6/16 (write)
    INPUT = "input"  # function code 4
    COIL = "coil"  # function code 1 (read), 5/15 (write)
    DISCRETE = "discrete"  # function code 2

    @property
    def is_bit_table(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BOOL = "bool"

    @property
    def is_integer(self) -> bool:
        return self.value.startswith(("int", "uint"))

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT32, DataType.FLOAT64)

    @property
    def words(self) -> int:
        """Registers one value occupies (strings: see ``Point.length``)."""
        return _WORDS[self]


_WORDS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.STRING: 1,
    DataType.BOOL: 1,
}

Order = Literal["big", "little"]


class PointKind(StrEnum):
    """What a point means to everyone downstream of the register map."""

    MEASUREMENT = "measurement"  # a sampled physical quantity: windows and features
    COUNTER = "counter"  # monotonic total (energy, runtime, starts): deltas, resets
    STATE = "state"  # run state, alarm code, flags, switches: transitions, duty cycle
    SETTING = "setting"  # a writable setpoint or command
    IDENTITY = "identity"  # serial number, firmware version


def _default_kind(point: dict[str, Any]) -> PointKind:
    if point.get("type") == "string":
        return PointKind.IDENTITY
    if point.get("writable"):
        return PointKind.SETTING
    if point.get("type") == "bool" or point.get("enum") or point.get("bits"):
        return PointKind.STATE
    return PointKind.MEASUREMENT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Strict):
    """One named value in a device's register map."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    byte_order: Order = "big"
    """Order of the two bytes inside each 16-bit register."""
    word_order: Order = "big"
    """Order of the registers of a multi-register value: big = most significant first."""
    length: Annotated[int, Field(ge=1, le=125)] | None = None
    """Registers of a string point (two characters each)."""
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    bits: dict[str, Annotated[int, Field(ge=0, le=63)]] | None = None
    """Named bits of an integer point (bit 0 is the least significant)."""
    enum: dict[int, str] | None = None
    """Labels of the values of an integer point."""
    writable: bool = False
    poll_group: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "default"
    """Suggested poll group; a gateway config may override it."""
    kind: PointKind = PointKind.MEASUREMENT
    """Default: identity for strings, setting if writable, state for bools, enums and bit
    fields, measurement otherwise; counters must say ``kind: counter``."""

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data:
            return {**data, "kind": _default_kind(data)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        t = self.type
        if self.table.is_bit_table != (t is DataType.BOOL):
            raise ValueError(
                f"type {t.value} does not fit table {self.table.value}: coils and discrete "
                "inputs hold type bool, holding and input registers hold the other types"
            )
        if (self.length is not None) != (t is DataType.STRING):
            raise ValueError("length is required for type string and allowed only there")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if (self.bits or self.enum) and not t.is_integer:
            raise ValueError(f"bits and enum need an integer type, not {t.value}")
        if self.bits:
            width = 16 * t.words
            too_high = {n: b for n, b in self.bits.items() if b >= width}
            if too_high:
                raise ValueError(f"bits {too_high} do not fit a {width}-bit {t.value}")
        if self.table in (Table.INPUT, Table.DISCRETE) and self.writable:
            raise ValueError(f"table {self.table.value} is read-only; writable must be false")
        if self.address + self.count > 65536:
            raise ValueError(f"address {self.address} + {self.count} registers passes 65535")
        return self

    @property
    def count(self) -> int:
        """Registers (or bits, in a bit table) this point occupies."""
        if self.type is DataType.STRING:
            return self.length or 1  # the validator requires a length for strings
        return self.type.words

    @property
    def end(self) -> int:
        """First address after this point."""
        return self.address + self.count


class Defaults(_Strict):
    byte_order: Order = "big"
    word_order: Order = "big"


class DeviceProfile(_Strict):
    """A register map for one kind of controller."""

    schema_version: Literal[1]
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    asset_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    vendor: str = ""
    model: str = ""
    description: str = ""
    defaults: Defaults = Defaults()
    points: Annotated[list[Point], Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        """Fill each point's byte and word order from ``defaults`` where it names none."""
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            return data
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            return data
        filled = []
        for p in data["points"]:
            if isinstance(p, dict):
                orders = {k: v for k, v in defaults.items() if k in ("byte_order", "word_order")}
                p = {**orders, **p}
            filled.append(p)
        return {**data, "points": filled}

    @model_validator(mode="after")
    def _no_clashes(self) -> DeviceProfile:
        seen: dict[str, int] = {}
        for i, p in enumerate(self.points):
            if p.name in seen:
                raise ValueError(
                    f"points[{i}]: name {p.name!r} is already used by points[{seen[p.name]}]"
                )
            seen[p.name] = i
        for table in Table:
            spans = sorted(
                (p.address, p.end, i) for i, p in enumerate(self.points) if p.table is table
            )
            for (a0, e0, i0), (a1, _e1, i1) in pairwise(spans):
                if a1 < e0:
                    raise ValueError(
                        f"points[{i1}] ({self.points[i1].name}) at {table.value} address {a1} "
                        f"overlaps points[{i0}] ({self.points[i0].name}) at {a0}..{e0 - 1}"
                    )
        return self

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"profile {self.id!r} has no point {name!r}")

    def in_table(self, table: Table) -> Iterator[Point]:
        return (p for p in self.points if p.table is table)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points)


def parse_profile(data: Any, source: str = "<profile>") -> DeviceProfile:
    """Validate already-parsed YAML; errors name ``source``, the key and why."""
    return validate_document(DeviceProfile, data, source, ProfileError, PROFILE_SCHEMA_VERSION)


def load_profile(path: Path | str) -> DeviceProfile:
    """Read and validate one profile file."""
    path = Path(path)
    return parse_profile(read_yaml(path, ProfileError), str(path))


@cache
def builtin_profiles() -> dict[str, DeviceProfile]:
    """The profiles shipped with EdgeWatch, by id."""
    out: dict[str, DeviceProfile] = {}
    for path in sorted(BUILTIN_PROFILE_DIR.glob("*.yaml")):
        profile = load_profile(path)
        out[profile.id] = profile
    return out


def resolve_profile(ref: str, base_dir: Path | None = None) -> DeviceProfile:
    """A profile by shipped id, or by path (relative to ``base_dir``) to a YAML file."""
    shipped = builtin_profiles()
    if ref in shipped:
        return shipped[ref]
    path = Path(ref)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.suffix in (".yaml", ".yml"):
        return load_profile(path)
    raise ProfileError(
        ref,
        "",
        f"no shipped profile has this id (shipped: {', '.join(sorted(shipped))}) "
        "and it is not a path to a .yaml file",
    )
