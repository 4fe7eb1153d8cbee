"""Risk history and the scorer's work queue (SQLAlchemy 2; conventions of
:mod:`cloud.registry.models`).

- :class:`RiskScore`: one row per device and assessed window end; kept, so a user sees
  how risk rose before an order was opened (the API reads the newest and the history).
- :class:`RiskRequest`: "score this device now": written by ingest when an anomalous
  window or a local alarm arrives, taken by the scorer that owns the device's site
  shard. Rows are deleted once handled; a scorer killed midway leaves them for the next
  pass (handling twice is harmless: scoring is idempotent per window end and work-order
  triggers are deduplicated by the database).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.registry.models import Base, new_id, utcnow


class RiskScore(Base):
    __tablename__ = "risk_scores"
    __table_args__ = (UniqueConstraint("device_id", "ts"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    ts: Mapped[datetime] = mapped_column(index=True)
    """The window end the assessment is for (indexed for the history's pruning)."""
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
    p24: Mapped[float] = mapped_column(Float)
    p72: Mapped[float] = mapped_column(Float)
    horizon_h: Mapped[float] = mapped_column(Float)
    p_alert: Mapped[float | None] = mapped_column(Float)
    """P(failure within ``alert_horizon_h``), which ``alert`` is judged on; null for rows
    scored before alerts had their own horizon (they alerted on ``p72``)."""
    alert_horizon_h: Mapped[float | None] = mapped_column(Float)
    fault_type: Mapped[str] = mapped_column(String(96))
    fault_probs: Mapped[dict[str, float]] = mapped_column(JSON)
    health: Mapped[int] = mapped_column(Integer)
    anomaly_score: Mapped[float | None] = mapped_column(Float)
    alert: Mapped[bool] = mapped_column(Boolean)
    top_signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """``[{"signal", "share", "trend_per_day"}, ...]``, largest share first."""
    model: Mapped[str] = mapped_column(String(200))
    """Which risk model scored it (asset type and model version)."""


class RiskRequest(Base):
    __tablename__ = "risk_requests"
    __table_args__ = (Index(None, "shard", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    shard: Mapped[int] = mapped_column(Integer)
    """The device's site shard (:func:`cloud.registry.models.site_shard`)."""
    reason: Mapped[str] = mapped_column(String(16))
    """``anomaly`` or ``alarm``."""
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """For an alarm: its name, severity, state and time."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
