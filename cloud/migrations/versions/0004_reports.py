"""The monthly energy reports and their outputs (``reports``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Matches :class:`cloud.reports.models.Report` (``tests/unit/cloud/test_migrations.py``
autogenerates against the models and expects no difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "generating", "ready", "failed", name="report_status", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("output_html", sa.LargeBinary(), nullable=True),
        sa.Column("output_pdf", sa.LargeBinary(), nullable=True),
        sa.Column("output_json", sa.LargeBinary(), nullable=True),
        sa.Column("output_csv_zip", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_reports_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("client_id", "month", name=op.f("uq_reports_client_id_month")),
    )


def downgrade() -> None:
    op.drop_table("reports")
