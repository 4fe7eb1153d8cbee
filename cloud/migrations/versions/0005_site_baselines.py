"""Each site's newest fitted baseline model, for the dashboard (``site_baselines``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Matches :class:`cloud.reports.models.SiteBaseline` (``tests/unit/cloud/test_migrations.py``
autogenerates against the models and expects no difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "site_baselines",
        sa.Column("site_id", sa.String(length=36), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("baseline_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("baseline_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("meter_devices", sa.JSON(), nullable=False),
        sa.Column("temperature_sensors", sa.JSON(), nullable=False),
        sa.Column("temperature_source", sa.String(length=300), nullable=False),
        sa.Column("monthly_cv_rmse", sa.Float(), nullable=True),
        sa.Column("monthly_nmbe", sa.Float(), nullable=True),
        sa.Column("passes_g14", sa.Boolean(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_site_baselines_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_site_baselines")),
    )


def downgrade() -> None:
    op.drop_table("site_baselines")
