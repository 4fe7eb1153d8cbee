"""One open risk order per device: the ``open_key`` of an open risk order becomes
``"<device id>|risk"`` (it was ``"<device id>|<fault>"``, so a risk model that named
another fault for the same device opened a second order for the same predicted failure).

A device that has several open risk orders keeps them open: the oldest takes the new key,
the others keep theirs until they are closed. No schema change: the models are those of
0008. Downgrade gives the open risk orders their fault's key back.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_orders = sa.table(
    "work_orders",
    sa.column("id", sa.String),
    sa.column("device_id", sa.String),
    sa.column("fault", sa.String),
    sa.column("source", sa.String),
    sa.column("open_key", sa.String),
    sa.column("opened_at", sa.DateTime),
)


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_orders.c.id, _orders.c.device_id)
        .where(_orders.c.source == "risk", _orders.c.open_key.is_not(None))
        .order_by(_orders.c.device_id, _orders.c.opened_at, _orders.c.id)
    ).all()
    first: dict[str, str] = {}
    for order_id, device_id in rows:
        first.setdefault(device_id, order_id)
    for device_id, order_id in first.items():
        conn.execute(
            sa.update(_orders).where(_orders.c.id == order_id).values(open_key=f"{device_id}|risk")
        )


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.update(_orders)
        .where(_orders.c.source == "risk", _orders.c.open_key.like("%|risk"))
        .values(open_key=_orders.c.device_id + "|" + _orders.c.fault)
    )
