"""The registry: clients, sites, gateways, credentials, devices, device events, users, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written to match ``cloud/registry/models.py`` exactly (``tests/unit/cloud/test_migrations.py``
autogenerates against it on SQLite and PostgreSQL and expects no difference). Enumerations
are VARCHAR(32) without a database-side type or check (``native_enum=False``), so adding a
member needs no migration; the values listed here are the models' at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32)


def _ts(name: str, *, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _created_at() -> sa.Column[Any]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


SITE_KINDS = (
    "home",
    "hotel",
    "mall",
    "office",
    "retail",
    "restaurant",
    "hospital",
    "school",
    "warehouse",
    "other",
)
ROLES = ("admin", "facility_manager", "service_desk")
CRITICALITIES = ("low", "medium", "high", "critical")
EVENT_KINDS = (
    "installed",
    "commissioned",
    "inspected",
    "repaired",
    "part_replaced",
    "note",
    "alert_acknowledged",
    "work_order_opened",
    "work_order_closed",
    "decommissioned",
)


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clients")),
        sa.UniqueConstraint("name", name=op.f("uq_clients_name")),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", _enum("site_kind", *SITE_KINDS), nullable=False),
        sa.Column("floor_area_m2", sa.Float(), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("tariff", sa.JSON(), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_sites_client_id_clients"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("client_id", "name", name=op.f("uq_sites_client_id_name")),
    )
    op.create_index(op.f("ix_sites_client_id"), "sites", ["client_id"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("role", _enum("role", *ROLES), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_users_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_index(op.f("ix_users_client_id"), "users", ["client_id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        _created_at(),
        _ts("last_used_at"),
        _ts("revoked_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_api_keys_secret_sha256")),
    )
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"], unique=False)

    op.create_table(
        "gateways",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        _created_at(),
        _ts("last_seen_at"),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_gateways_site_id_sites"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
    )
    op.create_index(op.f("ix_gateways_site_id"), "gateways", ["site_id"], unique=False)

    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("asset_type", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("make", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("serial", sa.String(length=200), nullable=True),
        sa.Column("install_date", sa.Date(), nullable=True),
        sa.Column("warranty_end", sa.Date(), nullable=True),
        sa.Column("criticality", _enum("criticality", *CRITICALITIES), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("occupant_flags", sa.JSON(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_devices_gateway_id_gateways"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("gateway_id", "name", name=op.f("uq_devices_gateway_id_name")),
    )
    op.create_index(op.f("ix_devices_gateway_id"), "devices", ["gateway_id"], unique=False)

    op.create_table(
        "gateway_credentials",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("mqtt_username", sa.String(length=80), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("mosquitto_hash", sa.Text(), nullable=False),
        _created_at(),
        _ts("expires_at"),
        _ts("revoked_at"),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_gateway_credentials_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_credentials")),
        sa.UniqueConstraint("mqtt_username", name=op.f("uq_gateway_credentials_mqtt_username")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_gateway_credentials_secret_sha256")),
    )
    op.create_index(
        op.f("ix_gateway_credentials_gateway_id"),
        "gateway_credentials",
        ["gateway_id"],
        unique=False,
    )

    op.create_table(
        "device_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        _ts("at", nullable=False),
        sa.Column("kind", _enum("device_event_kind", *EVENT_KINDS), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_device_events_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_events_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_events")),
    )
    op.create_index(
        "ix_device_events_device_id_at", "device_events", ["device_id", "at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_device_events_device_id_at", table_name="device_events")
    op.drop_table("device_events")
    op.drop_index(op.f("ix_gateway_credentials_gateway_id"), table_name="gateway_credentials")
    op.drop_table("gateway_credentials")
    op.drop_index(op.f("ix_devices_gateway_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_index(op.f("ix_gateways_site_id"), table_name="gateways")
    op.drop_table("gateways")
    op.drop_index(op.f("ix_api_keys_user_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_users_client_id"), table_name="users")
    op.drop_table("users")
    op.drop_index(op.f("ix_sites_client_id"), table_name="sites")
    op.drop_table("sites")
    op.drop_table("clients")
