"""An index on ``risk_scores.ts``: the scorer prunes old scores by time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

Matches :class:`cloud.risk.models.RiskScore` (``tests/unit/cloud/test_migrations.py``
autogenerates against the models and expects no difference).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_risk_scores_ts"), ["ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_scores_ts"))
