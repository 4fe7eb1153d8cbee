"""Risk scores keep the probability alerts are raised on: ``p_alert`` over
``alert_horizon_h`` (336 h for the shipped models), beside ``p72``. Rows scored before stay
null: they alerted on ``p72``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

Matches :class:`cloud.risk.models.RiskScore` (``tests/unit/cloud/test_migrations.py``
autogenerates against the models and expects no difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("p_alert", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("alert_horizon_h", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.drop_column("alert_horizon_h")
        batch_op.drop_column("p_alert")
