"""The registry's services: create, read, list, update and delete with tenant scoping and roles.

Every function takes the calling :class:`~cloud.auth.principal.Principal` and a SQLAlchemy
session; reads and lists put the caller's tenant into the SQL query itself, so an object
of another client is never loaded, let alone returned. No FastAPI here: the API
(``cloud/api``) and the command line (``cloud/cli.py``, as :meth:`Principal.system`) call
the same functions. Services flush but do not commit; the caller's unit of work commits.

Tenant isolation
    A facility manager sees one client: its sites, their gateways, their devices, the
    devices' events, and the users of that client. Anything else does not exist for them:
    :class:`NotFound` (404), never :class:`Forbidden`, and lists, filters and searches
    simply do not contain it (a filter naming another client's object gives an empty
    list). The visibility check always comes first; the role check (403) only applies to
    objects the caller can see, so a 403 never confirms that an object exists.

Role matrix (R read, C create, U update, D delete; "own" = of the facility manager's client)

    ==========================  =========  ============  ======================================
    object                      admin      service_desk  facility_manager
    ==========================  =========  ============  ======================================
    clients                     CRUD       R             R own
    sites                       CRUD       R             R own; U own: address, latitude,
                                                         longitude, floor_area_m2
    gateways                    CRUD       R             R own
    gateway credentials         C R D      -             -
    devices                     CRUD       R             R own; U own: location, occupant_flags
    device events (life cycle)  C R        C R           R own
    readings, energy, rollups   R          R             R own
    users                       CRUD       -             -
    own profile, own API keys   R; C D     R; C D        R; C D
    ==========================  =========  ============  ======================================

    A gateway credential is created by a rotation and deleted by a revocation (see
    :mod:`cloud.auth.gateways`); secrets are never read back, only metadata.

    Why: the service desk works on every client's equipment (reads everything, records
    repairs and notes as device events) but manages no accounts or credentials; a
    facility manager knows where things are in their buildings and who lives near them,
    so they may keep those descriptive fields current, and nothing else.

Validation
    Values are checked here too (the API's schemas check shapes; the command line has
    none): ids follow ``edge_agent.protocol.IDENT_RE``, time zones are IANA names,
    coordinates are in range, occupant flags are short snake_case words. A bad value is
    :class:`InvalidInput` naming the field; a duplicate or a delete that would orphan
    children is :class:`Conflict`.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, contains_eager

from cloud.auth.gateways import (
    IssuedCredential,
    issue_credential,
    list_credentials,
    revoke_credential,
)
from cloud.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password
from cloud.auth.principal import Principal
from cloud.db import flush
from cloud.energy.tariff import parse_tariff
from cloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from cloud.registry.models import (
    Client,
    Criticality,
    Device,
    DeviceEvent,
    EventKind,
    Gateway,
    GatewayCredential,
    Role,
    Site,
    SiteKind,
    User,
)
from cloud.registry.refs import DeviceRef, GatewayInfo
from edge_agent.protocol import IDENT_RE

T = TypeVar("T")
E = TypeVar("E", bound=enum.StrEnum)

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
OCCUPANT_FLAG_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_OCCUPANT_FLAGS: Final = 16
KNOWN_OCCUPANT_FLAGS: Final = (
    "vulnerable_occupant",
    "elderly_occupant",
    "infant",
    "medical_equipment",
    "food_storage",
    "server_room",
)
"""Flags the risk scorer knows; others are kept and shown, but carry no weight yet."""
EMAIL_RE: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")

SITE_FIELDS: Final = frozenset(
    {
        "name",
        "kind",
        "floor_area_m2",
        "latitude",
        "longitude",
        "address",
        "timezone",
        "tariff",
    }
)
SITE_FIELDS_FACILITY_MANAGER: Final = frozenset(
    {"address", "latitude", "longitude", "floor_area_m2"}
)
GATEWAY_FIELDS: Final = frozenset({"name", "site_id"})
DEVICE_FIELDS: Final = frozenset(
    {
        "gateway_id",
        "name",
        "asset_type",
        "profile",
        "make",
        "model",
        "serial",
        "install_date",
        "warranty_end",
        "criticality",
        "location",
        "occupant_flags",
    }
)
DEVICE_FIELDS_FACILITY_MANAGER: Final = frozenset({"location", "occupant_flags"})
CLIENT_FIELDS: Final = frozenset({"name"})
USER_FIELDS: Final = frozenset({"email", "name", "role", "client_id", "active", "password"})


def _now() -> datetime:
    return datetime.now(UTC)


# ---- validation --------------------------------------------------------------------------


def _text(where: str, value: Any, *, max_len: int, optional: bool = True) -> str | None:
    if value is None:
        if optional:
            return None
        raise InvalidInput(where, "is required")
    if not isinstance(value, str):
        raise InvalidInput(where, "must be text")
    text = value.strip()
    if not text:
        if optional:
            return None
        raise InvalidInput(where, "must not be empty")
    if len(text) > max_len:
        raise InvalidInput(where, f"at most {max_len} characters")
    return text


def _required_text(where: str, value: Any, *, max_len: int) -> str:
    text = _text(where, value, max_len=max_len, optional=False)
    assert text is not None  # noqa: S101 - _text raised otherwise
    return text


def _ident(where: str, value: Any) -> str:
    if not isinstance(value, str) or not IDENT_RE.match(value):
        raise InvalidInput(where, f"must match {IDENT_RE.pattern}")
    return value


def _number(
    where: str, value: Any, *, lo: float | None = None, hi: float | None = None, gt: bool = False
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(where, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(where, "must be finite")
    if lo is not None and (number <= lo if gt else number < lo):
        raise InvalidInput(where, f"must be {'>' if gt else '>='} {lo}")
    if hi is not None and number > hi:
        raise InvalidInput(where, f"must be <= {hi}")
    return number


def _enum_value(where: str, cls: type[E], value: Any) -> E:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise InvalidInput(where, f"{value!r} is not one of {allowed}") from None


def _timezone(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("timezone", "must be an IANA time zone name such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("timezone", f"{value!r} is not an IANA time zone name") from None
    return value


def _tariff(value: Any) -> dict[str, Any] | None:
    """The site's tariff, checked against :mod:`cloud.energy.tariff` (flat or time of use;
    the error names the key path, e.g. ``tariff.periods[1].start``)."""
    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("tariff", f"must be plain JSON with finite numbers ({exc})") from None
    parse_tariff(value)
    return dict(value)


def _occupant_flags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise InvalidInput("occupant_flags", "must be a list of flags")
    flags: list[str] = []
    for flag in value:
        if not isinstance(flag, str) or not OCCUPANT_FLAG_RE.match(flag):
            raise InvalidInput("occupant_flags", f"{flag!r} is not a snake_case flag")
        if flag not in flags:
            flags.append(flag)
    if len(flags) > MAX_OCCUPANT_FLAGS:
        raise InvalidInput("occupant_flags", f"at most {MAX_OCCUPANT_FLAGS} flags")
    return flags


def _date(where: str, value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise InvalidInput(where, "must be a date")
    return value


def _aware(where: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(where, "must be a date and time")
    if value.tzinfo is None:
        raise InvalidInput(where, "needs a time zone (e.g. 2026-01-31T08:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(where, "out of range") from None


def _email(value: Any) -> str:
    email = _required_text("email", value, max_len=320).lower()
    if not EMAIL_RE.match(email):
        raise InvalidInput("email", "is not an email address")
    return email


def _password(value: Any) -> str:
    if not isinstance(value, str) or not MIN_PASSWORD_LENGTH <= len(value) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput("password", f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return value


def _page(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"1 to {MAX_LIMIT}")
    if offset < 0:
        raise InvalidInput("offset", "must be >= 0")
    return limit, offset


def _check_fields(changes: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise InvalidInput(", ".join(unknown), f"not a field of a {what} that can be changed")


# ---- roles and scoping --------------------------------------------------------------------


def _require_admin(p: Principal, action: str) -> None:
    if not p.is_admin:
        raise Forbidden(f"only an admin may {action}")


def _require(p: Principal, roles: frozenset[Role], action: str) -> None:
    if p.role not in roles:
        names = " or ".join(sorted(r.value for r in roles))
        raise Forbidden(f"only {names} may {action}")


def _one(session: Session, stmt: Select[T], what: str, key: str) -> T:
    obj = session.scalars(stmt.limit(1)).first()
    if obj is None:
        raise NotFound(f"{what} {key} not found")
    return obj


def _clients(p: Principal) -> Select[Client]:
    stmt = select(Client)
    if p.tenant is not None:
        stmt = stmt.where(Client.id == p.tenant)
    return stmt


def _sites(p: Principal) -> Select[Site]:
    stmt = select(Site)
    if p.tenant is not None:
        stmt = stmt.where(Site.client_id == p.tenant)
    return stmt


def _gateways(p: Principal) -> Select[Gateway]:
    stmt = (
        select(Gateway)
        .join(Site, Gateway.site_id == Site.id)
        .options(contains_eager(Gateway.site))  # gateway.site without another query
    )
    if p.tenant is not None:
        stmt = stmt.where(Site.client_id == p.tenant)
    return stmt


def _devices(p: Principal) -> Select[Device]:
    stmt = (
        select(Device)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
        .options(contains_eager(Device.gateway).contains_eager(Gateway.site))
    )
    if p.tenant is not None:
        stmt = stmt.where(Site.client_id == p.tenant)
    return stmt


def _users(p: Principal) -> Select[User]:
    """Users the caller can see: admins all; a facility manager their client's; the service
    desk the staff (users without a client). Only admins may *do* anything with them."""
    stmt = select(User)
    if p.role is Role.FACILITY_MANAGER:
        stmt = stmt.where(User.client_id == p.tenant)
    elif p.role is Role.SERVICE_DESK:
        stmt = stmt.where(User.client_id.is_(None))
    return stmt


def _search(q: str | None, *columns: Any) -> Any:
    if q is None or not q.strip():
        return None
    term = q.strip()[:200]
    return or_(*(c.icontains(term, autoescape=True) for c in columns))


# ---- clients ------------------------------------------------------------------------------


def create_client(session: Session, p: Principal, *, name: str) -> Client:
    _require_admin(p, "create clients")
    client = Client(name=_required_text("name", name, max_len=200))
    session.add(client)
    flush(session)
    return client


def get_client(session: Session, p: Principal, client_id: str) -> Client:
    return _one(session, _clients(p).where(Client.id == client_id), "client", client_id)


def list_clients(
    session: Session,
    p: Principal,
    *,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Client]:
    limit, offset = _page(limit, offset)
    stmt = _clients(p)
    if (cond := _search(q, Client.name)) is not None:
        stmt = stmt.where(cond)
    return list(session.scalars(stmt.order_by(Client.name, Client.id).limit(limit).offset(offset)))


def update_client(
    session: Session, p: Principal, client_id: str, changes: Mapping[str, Any]
) -> Client:
    client = get_client(session, p, client_id)
    _require_admin(p, "change clients")
    _check_fields(changes, CLIENT_FIELDS, "client")
    if "name" in changes:
        client.name = _required_text("name", changes["name"], max_len=200)
    flush(session)
    return client


def delete_client(session: Session, p: Principal, client_id: str) -> None:
    """Delete a client without sites (its users go with it); :class:`Conflict` otherwise."""
    client = get_client(session, p, client_id)
    _require_admin(p, "delete clients")
    if session.scalar(select(func.count()).select_from(Site).where(Site.client_id == client.id)):
        raise Conflict(f"client {client_id} still has sites; delete or move them first")
    session.delete(client)
    flush(session)


# ---- sites --------------------------------------------------------------------------------


def _site_values(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            out[key] = _required_text("name", value, max_len=200)
        elif key == "kind":
            out[key] = _enum_value("kind", SiteKind, value)
        elif key == "floor_area_m2":
            out[key] = _number(key, value, lo=0, hi=10_000_000, gt=True)
        elif key == "latitude":
            out[key] = _number(key, value, lo=-90, hi=90)
        elif key == "longitude":
            out[key] = _number(key, value, lo=-180, hi=180)
        elif key == "address":
            out[key] = _text(key, value, max_len=1000)
        elif key == "timezone":
            out[key] = _timezone(value)
        elif key == "tariff":
            out[key] = _tariff(value)
    return out


def create_site(
    session: Session,
    p: Principal,
    *,
    client_id: str,
    name: str,
    kind: SiteKind | str,
    floor_area_m2: float | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    address: str | None = None,
    timezone: str = "UTC",
    tariff: dict[str, Any] | None = None,
) -> Site:
    client = get_client(session, p, client_id)
    _require_admin(p, "create sites")
    values = _site_values(
        {
            "name": name,
            "kind": kind,
            "floor_area_m2": floor_area_m2,
            "latitude": latitude,
            "longitude": longitude,
            "address": address,
            "timezone": timezone,
            "tariff": tariff,
        }
    )
    site = Site(client_id=client.id, **values)
    session.add(site)
    flush(session)
    return site


def get_site(session: Session, p: Principal, site_id: str) -> Site:
    return _one(session, _sites(p).where(Site.id == site_id), "site", site_id)


def list_sites(
    session: Session,
    p: Principal,
    *,
    client_id: str | None = None,
    kind: SiteKind | str | None = None,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Site]:
    limit, offset = _page(limit, offset)
    stmt = _sites(p)
    if client_id is not None:
        stmt = stmt.where(Site.client_id == client_id)
    if kind is not None:
        stmt = stmt.where(Site.kind == _enum_value("kind", SiteKind, kind))
    if (cond := _search(q, Site.name, Site.address)) is not None:
        stmt = stmt.where(cond)
    return list(session.scalars(stmt.order_by(Site.name, Site.id).limit(limit).offset(offset)))


def update_site(session: Session, p: Principal, site_id: str, changes: Mapping[str, Any]) -> Site:
    site = get_site(session, p, site_id)
    _check_fields(changes, SITE_FIELDS, "site")
    if p.role is Role.FACILITY_MANAGER:
        extra = sorted(set(changes) - SITE_FIELDS_FACILITY_MANAGER)
        if extra:
            allowed = ", ".join(sorted(SITE_FIELDS_FACILITY_MANAGER))
            raise Forbidden(f"a facility manager may change only {allowed} of a site")
    elif not p.is_admin:
        raise Forbidden("only an admin or the client's facility manager may change sites")
    for key, value in _site_values(changes).items():
        if key in ("name", "kind", "timezone") and value is None:
            raise InvalidInput(key, "is required")
        setattr(site, key, value)
    flush(session)
    return site


def delete_site(session: Session, p: Principal, site_id: str) -> None:
    site = get_site(session, p, site_id)
    _require_admin(p, "delete sites")
    if session.scalar(select(func.count()).select_from(Gateway).where(Gateway.site_id == site.id)):
        raise Conflict(f"site {site_id} still has gateways; delete or move them first")
    session.delete(site)
    flush(session)


# ---- gateways -----------------------------------------------------------------------------


def create_gateway(
    session: Session, p: Principal, *, gateway_id: str, site_id: str, name: str | None = None
) -> Gateway:
    site = get_site(session, p, site_id)
    _require_admin(p, "register gateways")
    gateway_id = _ident("id", gateway_id)
    if session.get(Gateway, gateway_id) is not None:
        raise Conflict(f"gateway {gateway_id} exists already")
    gateway = Gateway(id=gateway_id, site_id=site.id, name=_text("name", name, max_len=200))
    session.add(gateway)
    flush(session)
    return gateway


def get_gateway(session: Session, p: Principal, gateway_id: str) -> Gateway:
    return _one(session, _gateways(p).where(Gateway.id == gateway_id), "gateway", gateway_id)


def list_gateways(
    session: Session,
    p: Principal,
    *,
    client_id: str | None = None,
    site_id: str | None = None,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Gateway]:
    limit, offset = _page(limit, offset)
    stmt = _gateways(p)
    if client_id is not None:
        stmt = stmt.where(Site.client_id == client_id)
    if site_id is not None:
        stmt = stmt.where(Gateway.site_id == site_id)
    if (cond := _search(q, Gateway.id, Gateway.name)) is not None:
        stmt = stmt.where(cond)
    return list(session.scalars(stmt.order_by(Gateway.id).limit(limit).offset(offset)))


def update_gateway(
    session: Session, p: Principal, gateway_id: str, changes: Mapping[str, Any]
) -> Gateway:
    gateway = get_gateway(session, p, gateway_id)
    _require_admin(p, "change gateways")
    _check_fields(changes, GATEWAY_FIELDS, "gateway")
    if "name" in changes:
        gateway.name = _text("name", changes["name"], max_len=200)
    if "site_id" in changes:
        gateway.site_id = get_site(session, p, str(changes["site_id"])).id
    flush(session)
    return gateway


def delete_gateway(session: Session, p: Principal, gateway_id: str) -> None:
    """Delete a gateway without devices (its credentials go with it)."""
    gateway = get_gateway(session, p, gateway_id)
    _require_admin(p, "delete gateways")
    if session.scalar(
        select(func.count()).select_from(Device).where(Device.gateway_id == gateway.id)
    ):
        raise Conflict(f"gateway {gateway_id} still has devices; delete or move them first")
    session.delete(gateway)
    flush(session)


def rotate_gateway_credentials(
    session: Session,
    p: Principal,
    gateway_id: str,
    *,
    grace_s: int,
    now: datetime | None = None,
) -> IssuedCredential:
    """Issue a new credential; the gateway's previous ones expire ``grace_s`` from now."""
    gateway = get_gateway(session, p, gateway_id)
    _require_admin(p, "issue gateway credentials")
    if grace_s < 0:
        raise InvalidInput("grace_s", "must be >= 0")
    return issue_credential(session, gateway, grace_s=grace_s, now=now)


def revoke_gateway_credential(
    session: Session,
    p: Principal,
    gateway_id: str,
    credential_id: str,
    *,
    now: datetime | None = None,
) -> GatewayCredential:
    gateway = get_gateway(session, p, gateway_id)
    _require_admin(p, "revoke gateway credentials")
    return revoke_credential(session, gateway.id, credential_id, now=now)


def gateway_credentials(session: Session, p: Principal, gateway_id: str) -> list[GatewayCredential]:
    gateway = get_gateway(session, p, gateway_id)
    _require_admin(p, "see gateway credentials")
    return list_credentials(session, gateway.id)


# ---- devices ------------------------------------------------------------------------------


def _device_values(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            out[key] = _ident("name", value)
        elif key == "asset_type":
            out[key] = _ident("asset_type", value)
        elif key == "profile":
            out[key] = None if value is None else _ident("profile", value)
        elif key in ("make", "model", "serial"):
            out[key] = _text(key, value, max_len=200)
        elif key in ("install_date", "warranty_end"):
            out[key] = _date(key, value)
        elif key == "criticality":
            out[key] = _enum_value("criticality", Criticality, value)
        elif key == "location":
            out[key] = _text(key, value, max_len=1000)
        elif key == "occupant_flags":
            out[key] = _occupant_flags(value)
    return out


def _check_dates(device: Device) -> None:
    if (
        device.install_date is not None
        and device.warranty_end is not None
        and device.warranty_end < device.install_date
    ):
        raise InvalidInput("warranty_end", "is before install_date")


def create_device(
    session: Session,
    p: Principal,
    *,
    gateway_id: str,
    name: str,
    asset_type: str,
    profile: str | None = None,
    make: str | None = None,
    model: str | None = None,
    serial: str | None = None,
    install_date: date | None = None,
    warranty_end: date | None = None,
    criticality: Criticality | str = Criticality.MEDIUM,
    location: str | None = None,
    occupant_flags: Sequence[str] | None = None,
) -> Device:
    gateway = get_gateway(session, p, gateway_id)
    _require_admin(p, "register devices")
    values = _device_values(
        {
            "name": name,
            "asset_type": asset_type,
            "profile": profile,
            "make": make,
            "model": model,
            "serial": serial,
            "install_date": install_date,
            "warranty_end": warranty_end,
            "criticality": criticality,
            "location": location,
            "occupant_flags": list(occupant_flags or []),
        }
    )
    device = Device(gateway_id=gateway.id, **values)
    _check_dates(device)
    exists = session.scalar(
        select(Device.id).where(Device.gateway_id == gateway.id, Device.name == device.name)
    )
    if exists is not None:
        raise Conflict(f"gateway {gateway.id} has a device {device.name} already")
    session.add(device)
    flush(session)
    return device


def get_device(session: Session, p: Principal, device_id: str) -> Device:
    return _one(session, _devices(p).where(Device.id == device_id), "device", device_id)


def list_devices(
    session: Session,
    p: Principal,
    *,
    client_id: str | None = None,
    site_id: str | None = None,
    gateway_id: str | None = None,
    asset_type: str | None = None,
    criticality: Criticality | str | None = None,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Device]:
    """Devices the caller can see, filtered; ``q`` searches name, serial and location."""
    limit, offset = _page(limit, offset)
    stmt = _devices(p)
    if client_id is not None:
        stmt = stmt.where(Site.client_id == client_id)
    if site_id is not None:
        stmt = stmt.where(Gateway.site_id == site_id)
    if gateway_id is not None:
        stmt = stmt.where(Device.gateway_id == gateway_id)
    if asset_type is not None:
        stmt = stmt.where(Device.asset_type == asset_type)
    if criticality is not None:
        stmt = stmt.where(
            Device.criticality == _enum_value("criticality", Criticality, criticality)
        )
    if (cond := _search(q, Device.name, Device.serial, Device.location)) is not None:
        stmt = stmt.where(cond)
    stmt = stmt.order_by(Device.gateway_id, Device.name, Device.id).limit(limit).offset(offset)
    return list(session.scalars(stmt))


def update_device(
    session: Session, p: Principal, device_id: str, changes: Mapping[str, Any]
) -> Device:
    device = get_device(session, p, device_id)
    _check_fields(changes, DEVICE_FIELDS, "device")
    if p.role is Role.FACILITY_MANAGER:
        extra = sorted(set(changes) - DEVICE_FIELDS_FACILITY_MANAGER)
        if extra:
            allowed = ", ".join(sorted(DEVICE_FIELDS_FACILITY_MANAGER))
            raise Forbidden(f"a facility manager may change only {allowed} of a device")
    elif not p.is_admin:
        raise Forbidden("only an admin or the client's facility manager may change devices")
    values = _device_values({k: v for k, v in changes.items() if k != "gateway_id"})
    for key in ("name", "asset_type", "criticality"):
        if key in values and values[key] is None:
            raise InvalidInput(key, "is required")
    if "gateway_id" in changes:
        device.gateway_id = get_gateway(session, p, str(changes["gateway_id"])).id
    for key, value in values.items():
        setattr(device, key, value)
    _check_dates(device)
    flush(session)
    return device


def delete_device(session: Session, p: Principal, device_id: str) -> None:
    """Delete a device and its life-cycle events (readings stay in the time-series store)."""
    device = get_device(session, p, device_id)
    _require_admin(p, "delete devices")
    session.delete(device)
    flush(session)


# ---- device life cycle ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """A device with the gateway, site and client it belongs to (one query)."""

    device: Device
    gateway: Gateway
    site: Site
    client: Client


def device_context(session: Session, p: Principal, device_id: str) -> DeviceContext:
    stmt = (
        select(Device, Gateway, Site, Client)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
        .join(Client, Site.client_id == Client.id)
        .where(Device.id == device_id)
    )
    if p.tenant is not None:
        stmt = stmt.where(Site.client_id == p.tenant)
    row = session.execute(stmt).first()
    if row is None:
        raise NotFound(f"device {device_id} not found")
    device, gateway, site, client = row
    return DeviceContext(device=device, gateway=gateway, site=site, client=client)


EVENT_WRITERS: Final = frozenset({Role.ADMIN, Role.SERVICE_DESK})


def add_device_event(
    session: Session,
    p: Principal,
    device_id: str,
    *,
    kind: EventKind | str,
    summary: str,
    at: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> DeviceEvent:
    """Record a repair, a replaced part, a note, ... in the device's life-cycle file."""
    device = get_device(session, p, device_id)
    _require(p, EVENT_WRITERS, "add device events")
    if detail is not None:
        if not isinstance(detail, dict):
            raise InvalidInput("detail", "must be an object")
        try:
            json.dumps(detail, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput("detail", f"must be plain JSON ({exc})") from None
    event = DeviceEvent(
        device_id=device.id,
        at=_now() if at is None else _aware("at", at),
        kind=_enum_value("kind", EventKind, kind),
        summary=_required_text("summary", summary, max_len=10_000),
        detail=detail,
        created_by=p.user_id,
    )
    session.add(event)
    flush(session)
    return event


def list_device_events(
    session: Session,
    p: Principal,
    device_id: str,
    *,
    kind: EventKind | str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[DeviceEvent]:
    """The device's events, newest first."""
    device = get_device(session, p, device_id)
    limit, offset = _page(limit, offset)
    stmt = select(DeviceEvent).where(DeviceEvent.device_id == device.id)
    if kind is not None:
        stmt = stmt.where(DeviceEvent.kind == _enum_value("kind", EventKind, kind))
    stmt = stmt.order_by(DeviceEvent.at.desc(), DeviceEvent.id).limit(limit).offset(offset)
    return list(session.scalars(stmt))


# ---- users --------------------------------------------------------------------------------


def _check_role_client(role: Role, client_id: str | None) -> None:
    if role is Role.FACILITY_MANAGER and client_id is None:
        raise InvalidInput("client_id", "a facility manager must be bound to one client")
    if role is not Role.FACILITY_MANAGER and client_id is not None:
        raise InvalidInput("client_id", f"only facility managers have a client, not {role.value}")


def create_user(
    session: Session,
    p: Principal,
    *,
    email: str,
    role: Role | str,
    client_id: str | None = None,
    name: str | None = None,
    password: str | None = None,
) -> User:
    _require_admin(p, "create users")
    role = _enum_value("role", Role, role)
    if client_id is not None:
        client_id = get_client(session, p, client_id).id
    _check_role_client(role, client_id)
    email = _email(email)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} exists already")
    user = User(
        email=email,
        role=role,
        client_id=client_id,
        name=_text("name", name, max_len=200),
        password_hash=None if password is None else hash_password(_password(password)),
        active=True,
    )
    session.add(user)
    flush(session)
    return user


def get_user(session: Session, p: Principal, user_id: str) -> User:
    user = _one(session, _users(p).where(User.id == user_id), "user", user_id)
    if user.id != p.user_id:
        _require_admin(p, "see other users")
    return user


def list_users(
    session: Session,
    p: Principal,
    *,
    role: Role | str | None = None,
    client_id: str | None = None,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[User]:
    _require_admin(p, "list users")
    limit, offset = _page(limit, offset)
    stmt = _users(p)
    if role is not None:
        stmt = stmt.where(User.role == _enum_value("role", Role, role))
    if client_id is not None:
        stmt = stmt.where(User.client_id == client_id)
    if (cond := _search(q, User.email, User.name)) is not None:
        stmt = stmt.where(cond)
    return list(session.scalars(stmt.order_by(User.email).limit(limit).offset(offset)))


def update_user(session: Session, p: Principal, user_id: str, changes: Mapping[str, Any]) -> User:
    user = _one(session, _users(p).where(User.id == user_id), "user", user_id)
    _require_admin(p, "change users")
    _check_fields(changes, USER_FIELDS, "user")
    if user.id == p.user_id and (
        changes.get("active") is False or changes.get("role", Role.ADMIN) != Role.ADMIN
    ):
        raise Conflict("an admin cannot disable or demote themselves")
    role = _enum_value("role", Role, changes["role"]) if "role" in changes else user.role
    client_id = changes.get("client_id", user.client_id)
    if "role" in changes and role is not Role.FACILITY_MANAGER and "client_id" not in changes:
        client_id = None
    if client_id is not None:
        client_id = get_client(session, p, str(client_id)).id
    _check_role_client(role, client_id)
    user.role, user.client_id = role, client_id
    if "email" in changes:
        email = _email(changes["email"])
        other = session.scalar(select(User.id).where(User.email == email, User.id != user.id))
        if other is not None:
            raise Conflict(f"a user with email {email} exists already")
        user.email = email
    if "name" in changes:
        user.name = _text("name", changes["name"], max_len=200)
    if "active" in changes:
        if not isinstance(changes["active"], bool):
            raise InvalidInput("active", "must be true or false")
        user.active = changes["active"]
    if "password" in changes:
        password = changes["password"]
        user.password_hash = None if password is None else hash_password(_password(password))
    flush(session)
    return user


def delete_user(session: Session, p: Principal, user_id: str) -> None:
    user = _one(session, _users(p).where(User.id == user_id), "user", user_id)
    _require_admin(p, "delete users")
    if user.id == p.user_id:
        raise Conflict("an admin cannot delete themselves")
    session.delete(user)
    flush(session)


def get_me(session: Session, p: Principal) -> User:
    """The calling user (:class:`NotFound` for the command line's system principal)."""
    if p.user_id is None:
        raise NotFound("the command line has no user")
    user = session.get(User, p.user_id)
    if user is None:
        raise NotFound(f"user {p.user_id} not found")
    return user


# ---- the ingest lookup ----------------------------------------------------------------------


def gateway_devices(session: Session, gateway_id: str) -> GatewayInfo:
    """Everything ingest needs to tag a gateway's records, in one query (the gateway and
    its site outer-joined to its devices). :class:`NotFound` for an unknown gateway.

    No principal: ingest acts for the gateway whose credentials the broker or the HTTPS
    uplink already checked."""
    rows = session.execute(
        select(Gateway.id, Site.id, Site.client_id, Device.name, Device.id, Device.asset_type)
        .join(Site, Gateway.site_id == Site.id)
        .outerjoin(Device, Device.gateway_id == Gateway.id)
        .where(Gateway.id == gateway_id)
    ).all()
    if not rows:
        raise NotFound(f"gateway {gateway_id} not found")
    site_id, client_id = rows[0][1], rows[0][2]
    devices = {
        name: DeviceRef(id=did, asset_type=asset)
        for _, _, _, name, did, asset in rows
        if name is not None
    }
    return GatewayInfo(gateway_id=gateway_id, client_id=client_id, site_id=site_id, devices=devices)
