"""The registry's tables (SQLAlchemy 2): tenants, sites, gateways, devices, users, credentials.

Clients (tenants) own sites; a site has gateways; a gateway reads devices. Users have one
role; a facility manager is bound to one client and sees nothing of another (the services
answer 404). Every change to these tables goes through an Alembic migration
(``cloud/migrations``); SQLite and PostgreSQL run the same migrations.

Ids: clients, sites, users, API keys and gateway credentials get random UUID text ids;
a gateway's id is the id it uses on the wire (``edge_agent.protocol.IDENT_RE``) and a
device has a UUID plus its ``name``, the id its gateway's config gives it (unique per
gateway), which is what uplink records carry.

Conventions kept by every table:

- constraints and indexes are named by :data:`NAMING_CONVENTION`, so that a later
  migration can drop or alter them by name on both SQLite (batch mode) and PostgreSQL;
- times are :class:`UtcDateTime`: stored with the time zone where the database has one,
  always read back as an aware UTC ``datetime`` (SQLite would return naive ones);
- ``created_at`` is set by Python on ORM inserts (so it is loaded without a round trip)
  and by the database for rows inserted any other way.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from datetime import UTC, date, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Names of constraints and indexes; ``cloud/migrations`` writes the same names."""


SHARDS: Final = 1024
"""Sites are spread over this many shards; a scorer partition ``i/n`` takes the sites with
``shard % n == i`` (even for any ``n`` that divides it, near even for any other)."""


def new_id() -> str:
    return str(uuid.uuid4())


def site_shard(site_id: str) -> int:
    """A site's shard: a stable hash of its id (BLAKE2b), in ``[0, SHARDS)``."""
    digest = hashlib.blake2b(site_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % SHARDS


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that refuses naive values and reads back aware UTC.

    PostgreSQL stores ``timestamptz``; SQLite stores text without an offset, so values are
    converted to UTC before they are written and marked UTC when they are read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: registry times must be aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: UtcDateTime,
    }


class Role(enum.StrEnum):
    ADMIN = "admin"
    FACILITY_MANAGER = "facility_manager"
    SERVICE_DESK = "service_desk"


class SiteKind(enum.StrEnum):
    HOME = "home"
    HOTEL = "hotel"
    MALL = "mall"
    OFFICE = "office"
    RETAIL = "retail"
    RESTAURANT = "restaurant"
    HOSPITAL = "hospital"
    SCHOOL = "school"
    WAREHOUSE = "warehouse"
    OTHER = "other"


class Criticality(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class EventKind(enum.StrEnum):
    """What a :class:`DeviceEvent` records."""

    INSTALLED = "installed"
    COMMISSIONED = "commissioned"
    INSPECTED = "inspected"
    REPAIRED = "repaired"
    PART_REPLACED = "part_replaced"
    NOTE = "note"
    ALERT_ACKNOWLEDGED = "alert_acknowledged"
    WORK_ORDER_OPENED = "work_order_opened"
    WORK_ORDER_CLOSED = "work_order_closed"
    DECOMMISSIONED = "decommissioned"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    """A VARCHAR(32) holding the member's *value* (``"facility_manager"``, what the API and
    raw SQL see), not SQLAlchemy's default, the member's name."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        validate_strings=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    sites: Mapped[list[Site]] = relationship(back_populates="client")


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("client_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[SiteKind] = mapped_column(_enum(SiteKind, "site_kind"))
    floor_area_m2: Mapped[float | None] = mapped_column(Float)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    tariff: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Flat or time-of-use prices (:mod:`cloud.energy.tariff`), e.g. ``{"kind": "flat",
    "currency": "EUR", "price_per_kwh": 0.21}``."""
    shard: Mapped[int] = mapped_column(Integer, index=True, default=0, server_default="0")
    """:func:`site_shard` of the id: risk scorers split the fleet by ``shard % n``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    client: Mapped[Client] = relationship(back_populates="sites")
    gateways: Mapped[list[Gateway]] = relationship(back_populates="site")


class Gateway(Base):
    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    last_seen_at: Mapped[datetime | None] = mapped_column()
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Sequence numbers go up to 2**63 - 1 (``edge_agent.protocol.SEQ_MAX``)."""

    site: Mapped[Site] = relationship(back_populates="gateways")
    devices: Mapped[list[Device]] = relationship(back_populates="gateway")
    credentials: Mapped[list[GatewayCredential]] = relationship(
        back_populates="gateway", passive_deletes=True
    )
    """Deleted with the gateway by the database (``ON DELETE CASCADE``)."""


class GatewayCredential(Base):
    """A gateway's secret (MQTT password and HTTPS uplink bearer token), stored hashed.

    Rotation issues a new one; the old one stays valid until ``expires_at`` (a grace
    period for the gateway to pick up the new one) or until revoked.

    Each credential has its own MQTT username (the gateway id for the first one,
    ``<gateway id>@<n>`` for later ones; ``@`` is not allowed in ids, so it can never be
    another gateway's): Mosquitto's password file keeps one hash per username (a later
    line replaces an earlier one), so two valid secrets during a grace period need two
    usernames. The ACL gives every username of a gateway the same topics."""

    __tablename__ = "gateway_credentials"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    gateway_id: Mapped[str] = mapped_column(
        ForeignKey("gateways.id", ondelete="CASCADE"), index=True
    )
    mqtt_username: Mapped[str] = mapped_column(String(80), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mosquitto_hash: Mapped[str] = mapped_column(Text)
    """The secret as a Mosquitto 2 password-file hash (``$7$`` PBKDF2-SHA512)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    gateway: Mapped[Gateway] = relationship(back_populates="credentials")


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("gateway_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    gateway_id: Mapped[str] = mapped_column(
        ForeignKey("gateways.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    """The device's id in its gateway's config and in uplink records."""
    asset_type: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str | None] = mapped_column(String(64))
    make: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    serial: Mapped[str | None] = mapped_column(String(200))
    install_date: Mapped[date | None] = mapped_column(Date)
    warranty_end: Mapped[date | None] = mapped_column(Date)
    criticality: Mapped[Criticality] = mapped_column(
        _enum(Criticality, "criticality"), default=Criticality.MEDIUM
    )
    location: Mapped[str | None] = mapped_column(Text)
    """Where in the building, e.g. "roof, plant room 2"."""
    occupant_flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    """E.g. ``["vulnerable_occupant"]``: raises work-order priority."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    gateway: Mapped[Gateway] = relationship(back_populates="devices")
    events: Mapped[list[DeviceEvent]] = relationship(back_populates="device", passive_deletes=True)
    """Deleted with the device by the database (``ON DELETE CASCADE``)."""


class DeviceEvent(Base):
    """An entry of a device's life-cycle file that is not a reading: installed, repaired,
    part replaced, note, alert acknowledged, work order opened or closed."""

    __tablename__ = "device_events"
    __table_args__ = (Index("ix_device_events_device_id_at", "device_id", "at"),)
    """A device's file is read newest first: one index serves the filter and the order."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column()
    kind: Mapped[EventKind] = mapped_column(_enum(EventKind, "device_event_kind"))
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    device: Mapped[Device] = relationship(back_populates="events")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    client_id: Mapped[str | None] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    """Set exactly for facility managers: the one client they see."""
    password_hash: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ApiKey(Base):
    """A user's API key: the secret is shown once; the table keeps its SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the key, to tell keys apart in lists."""
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


@event.listens_for(Site, "before_insert")
def _site_shard(_mapper: Any, _connection: Any, site: Site) -> None:
    """Every site gets its id (if it has none yet) and the shard derived from it."""
    if site.id is None:
        site.id = new_id()
    site.shard = site_shard(site.id)
