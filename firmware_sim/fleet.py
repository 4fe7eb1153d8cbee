"""Fleet files: clients -> sites -> gateways -> devices, with their fault schedules.

A fleet file is YAML with a ``schema_version``. Everything the simulator plays comes
from it and from the seed in it, so the same file and seed give the same history.
See ``firmware_sim/fleets/demo.yaml`` for a complete example.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.configfile import read_yaml, validate_document
from edge_agent.errors import ProfileError
from edge_agent.profiles import DeviceProfile, resolve_profile
from firmware_sim.errors import FleetError

FLEET_SCHEMA_VERSION = 1

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class FaultType(StrEnum):
    BEARING_WEAR = "bearing_wear"
    REFRIGERANT_LEAK = "refrigerant_leak"
    CONDENSER_FOULING = "condenser_fouling"
    VALVE_WEAR = "valve_wear"
    ELECTRICAL_DEGRADATION = "electrical_degradation"
    FAN_IMBALANCE = "fan_imbalance"
    BELT_WEAR = "belt_wear"


#: Which faults each asset type can develop.
FAULTS_BY_ASSET: dict[str, frozenset[FaultType]] = {
    "compressor": frozenset(
        {
            FaultType.BEARING_WEAR,
            FaultType.REFRIGERANT_LEAK,
            FaultType.CONDENSER_FOULING,
            FaultType.VALVE_WEAR,
            FaultType.ELECTRICAL_DEGRADATION,
        }
    ),
    "fan": frozenset(
        {
            FaultType.BEARING_WEAR,
            FaultType.FAN_IMBALANCE,
            FaultType.BELT_WEAR,
            FaultType.ELECTRICAL_DEGRADATION,
        }
    ),
}

#: Variants of each asset type (the application the unit serves).
VARIANTS: dict[str, frozenset[str]] = {
    "compressor": frozenset({"refrigeration", "split_ac", "rooftop"}),
    "fan": frozenset({"condenser", "supply", "exhaust"}),
}


def _utc(value: Any) -> Any:
    """Accept naive datetimes and dates as UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultSpec(_Strict):
    """A scheduled fault: it starts at ``onset`` and, unless repaired, fails the unit
    ``days_to_failure`` days later."""

    type: FaultType
    onset: datetime
    days_to_failure: Annotated[float, Field(gt=0, le=365)] = 14.0

    _onset_utc = field_validator("onset", mode="before")(_utc)


class MaintenanceKind(StrEnum):
    REPAIR = "repair"  # fixes the named faults (or all), resets a tripped unit
    CLEANING = "cleaning"  # restores condenser fouling
    SERVICE = "service"  # routine visit: no fault fixed, logged


class MaintenanceSpec(_Strict):
    at: datetime
    kind: MaintenanceKind
    fixes: list[FaultType] | None = None
    """Faults this visit restores; default: every active fault (repair) or fouling (cleaning)."""

    _at_utc = field_validator("at", mode="before")(_utc)


class DeviceSpec(_Strict):
    id: Ident
    asset_type: Literal["compressor", "fan"]
    variant: str
    profile: str
    """Id of a shipped profile, or a path to a profile YAML relative to the fleet file."""
    unit_id: Annotated[int, Field(ge=1, le=247)]
    install_date: date
    rated_power_kw: Annotated[float, Field(gt=0, le=500)]
    serial: Annotated[str, Field(max_length=16)] = ""
    faults: list[FaultSpec] = []
    maintenance: list[MaintenanceSpec] = []
    fault_rates: dict[FaultType, Annotated[float, Field(ge=0, le=52)]] = {}
    """Random faults: expected onsets per year of each type (Poisson), drawn from the seed."""
    setpoint_c: Annotated[float, Field(ge=-30, le=35)] | None = None
    """Controlled-space setpoint (compressors, and the unit a condenser fan serves);
    default by variant: refrigeration 3 degC, air conditioning 23 degC."""
    refrigerant: Literal["R410A", "R32"] = "R410A"
    """Refrigerant of a compressor circuit (saturation curve of its pressures)."""
    refuse_unmapped: bool = False
    """Answer exception 02 to a read that touches an address no point covers, as strict
    controllers do (a lenient one reads such gaps as 0)."""

    @model_validator(mode="after")
    def _fits_asset(self) -> DeviceSpec:
        if self.variant not in VARIANTS[self.asset_type]:
            raise ValueError(
                f"variant {self.variant!r} is not one of {sorted(VARIANTS[self.asset_type])} "
                f"for asset type {self.asset_type}"
            )
        allowed = FAULTS_BY_ASSET[self.asset_type]
        named = [f.type for f in self.faults] + list(self.fault_rates)
        wrong = sorted({f.value for f in named if f not in allowed})
        if wrong:
            raise ValueError(
                f"fault {', '.join(wrong)} cannot occur on a {self.asset_type}; "
                f"it can develop {', '.join(sorted(f.value for f in allowed))}"
            )
        for i, m in enumerate(self.maintenance):
            bad = sorted({f.value for f in m.fixes or [] if f not in allowed})
            if bad:
                raise ValueError(
                    f"maintenance[{i}] fixes {', '.join(bad)}, which a {self.asset_type} "
                    f"cannot have; it can develop {', '.join(sorted(f.value for f in allowed))}"
                )
        return self


class GatewaySpec(_Strict):
    """One gateway: the Modbus endpoint its devices are reached through."""

    id: Ident
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    """TCP port to serve on; 0 picks a free one (the server prints it)."""
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    byte_timing: bool = False
    max_connections: Annotated[int, Field(ge=1, le=1000)] | None = None
    """TCP only: connections the endpoint accepts at once (many controllers take one);
    a connection past the limit is closed as soon as it is accepted."""
    """RTU only: pace bytes at the baud rate so serial throughput is realistic."""
    devices: Annotated[list[DeviceSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_unit_ids(self) -> GatewaySpec:
        seen: dict[int, str] = {}
        for d in self.devices:
            if d.unit_id in seen:
                raise ValueError(
                    f"unit_id {d.unit_id} is used by both {seen[d.unit_id]} and {d.id}"
                )
            seen[d.unit_id] = d.id
        return self


class Location(_Strict):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    mean_temp_c: float | None = None
    """Annual mean outdoor temperature; default estimated from latitude."""
    annual_swing_c: Annotated[float, Field(ge=0, le=40)] | None = None
    """Half the difference between the warmest and coldest month; default from latitude."""
    daily_swing_c: Annotated[float, Field(ge=0, le=20)] = 5.0


class TouPeriod(_Strict):
    start_hour: Annotated[int, Field(ge=0, le=23)]
    end_hour: Annotated[int, Field(ge=1, le=24)]
    price_per_kwh: Annotated[float, Field(ge=0)]
    weekdays_only: bool = False


class Tariff(_Strict):
    kind: Literal["flat", "time_of_use"] = "flat"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    price_per_kwh: Annotated[float, Field(ge=0)] = 0.20
    """Flat price, and the price outside every period of a time-of-use tariff."""
    periods: list[TouPeriod] = []

    @model_validator(mode="after")
    def _periods_only_for_tou(self) -> Tariff:
        if self.kind == "time_of_use" and not self.periods:
            raise ValueError("a time_of_use tariff needs at least one period")
        if self.kind == "flat" and self.periods:
            raise ValueError("a flat tariff has no periods")
        return self


class SiteSpec(_Strict):
    id: Ident
    name: str = ""
    kind: Literal["hotel", "mall", "office", "home"]
    floor_area_m2: Annotated[float, Field(gt=0, le=2_000_000)]
    location: Location
    timezone: str = "UTC"
    tariff: Tariff = Tariff()
    gateways: Annotated[list[GatewaySpec], Field(min_length=1)]


class ClientSpec(_Strict):
    id: Ident
    name: str = ""
    sites: Annotated[list[SiteSpec], Field(min_length=1)]


class Fleet(_Strict):
    schema_version: Literal[1]
    name: str
    seed: int = 0
    start: datetime
    """Where the simulated clock starts."""
    auto_repair_hours: tuple[
        Annotated[float, Field(ge=0, le=2000)], Annotated[float, Field(ge=0, le=2000)]
    ] = (8.0, 72.0)
    """After a random fault (from ``fault_rates``) trips a unit, a repair visit comes after
    a delay drawn uniformly from this range (hours). Scheduled faults wait for the
    ``maintenance`` the file names."""
    clients: Annotated[list[ClientSpec], Field(min_length=1)]

    _start_utc = field_validator("start", mode="before")(_utc)

    @model_validator(mode="after")
    def _unique_ids(self) -> Fleet:
        if self.auto_repair_hours[0] > self.auto_repair_hours[1]:
            raise ValueError("auto_repair_hours must be [shortest, longest]")
        for kind, ids in (
            ("client", [c.id for c in self.clients]),
            ("site", [s.id for c in self.clients for s in c.sites]),
            ("gateway", [g.id for _, s, g in self._gateways()]),
            ("device", [d.id for *_, d in self._devices()]),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{kind} id {', '.join(dupes)} is used more than once")
        return self

    def _gateways(self) -> Iterator[tuple[ClientSpec, SiteSpec, GatewaySpec]]:
        for c in self.clients:
            for s in c.sites:
                for g in s.gateways:
                    yield c, s, g

    def _devices(self) -> Iterator[tuple[ClientSpec, SiteSpec, GatewaySpec, DeviceSpec]]:
        for c, s, g in self._gateways():
            for d in g.devices:
                yield c, s, g, d

    def gateways(self) -> list[GatewaySpec]:
        return [g for *_, g in self._gateways()]

    def devices(self) -> list[FleetDevice]:
        """Every device with its place in the fleet, in file order."""
        return [FleetDevice(c, s, g, d) for c, s, g, d in self._devices()]


@dataclass(frozen=True)
class FleetDevice:
    """A device and where it sits: the client, site and gateway it belongs to."""

    client: ClientSpec
    site: SiteSpec
    gateway: GatewaySpec
    spec: DeviceSpec

    @property
    def id(self) -> str:
        return self.spec.id


def parse_fleet(data: Any, source: str = "<fleet>") -> Fleet:
    """Validate already-parsed YAML; errors name ``source``, the key and why."""
    return validate_document(Fleet, data, source, FleetError, FLEET_SCHEMA_VERSION)


def load_fleet(path: Path | str) -> Fleet:
    """Read and validate a fleet file, including every device's profile."""
    path = Path(path)
    fleet = parse_fleet(read_yaml(path, FleetError), str(path))
    profiles_of(fleet, base_dir=path.parent, source=str(path))
    return fleet


def profiles_of(
    fleet: Fleet, base_dir: Path | None = None, source: str = "<fleet>"
) -> dict[str, DeviceProfile]:
    """Each device's profile by device id; a missing or wrong profile names the device."""
    out: dict[str, DeviceProfile] = {}
    for dev in fleet.devices():
        try:
            profile = resolve_profile(dev.spec.profile, base_dir)
        except ProfileError as exc:
            raise FleetError(source, f"device {dev.id}.profile", str(exc)) from None
        if profile.asset_type != dev.spec.asset_type:
            raise FleetError(
                source,
                f"device {dev.id}.profile",
                f"profile {profile.id} is for a {profile.asset_type}, the device is a "
                f"{dev.spec.asset_type}",
            )
        out[dev.id] = profile
    return out
