"""An index on ``outbox (state, id)``: the delivery workers claim pending messages in id
order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

Matches :class:`cloud.workorders.models.OutboxMessage` (``tests/unit/cloud/test_migrations.py``
autogenerates against the models and expects no difference).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_state_id"), ["state", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_state_id"))
