"""The service desks' status posts, remembered by webhook-id (``desk_inbound``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Matches :class:`cloud.workorders.models.DeskInbound` (``tests/unit/cloud/test_migrations.py``
autogenerates against the models and expects no difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "desk_inbound",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("desk_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("work_order_id", sa.String(length=36), nullable=False),
        sa.Column("requested_state", sa.String(length=32), nullable=False),
        sa.Column("vendor_state", sa.String(length=200), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "moved",
                "commented",
                "unchanged",
                "rejected",
                name="inbound_outcome",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("from_state", sa.String(length=32), nullable=False),
        sa.Column("to_state", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["desk_id"],
            ["desks.id"],
            name=op.f("fk_desk_inbound_desk_id_desks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_desk_inbound_work_order_id_work_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_inbound")),
        sa.UniqueConstraint(
            "desk_id", "message_id", name=op.f("uq_desk_inbound_desk_id_message_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("desk_inbound")
