"""The ``reports`` table (one row per client and month, with the generated outputs) and
``site_baselines`` (each site's newest fitted baseline model).

Same conventions as :mod:`cloud.registry.models` (one ``Base``, named constraints,
:class:`~cloud.registry.models.UtcDateTime` times, the migration in ``cloud/migrations``).

*One report per client and month* is a database rule (unique ``(client_id, month)``):
generating a month again replaces the row's outputs, and two processes that race to
start one both insert, one fails on the index and finds the other's row. A row is
claimed for generation with a lease (``locked_until``): a generator that dies leaves a
``generating`` row that anyone may take over once the lease has run out.

The outputs (HTML, PDF, JSON, the CSV tables zipped) are stored as bytes (``bytea`` on
PostgreSQL) and loaded only when asked for (deferred columns), so listing reports reads
none of them.

``site_baselines`` keeps, per site, eemeter's daily CalTRACK model as the report fitted it
(its own JSON, ``DailyModel.to_json()``), so that the dashboard predicts the expected use
of the current month without fitting (:mod:`cloud.reports.baselines`). One row per site,
not a column of ``reports``: the dashboard looks a site's model up by the site alone, a
report holds many sites, and a site keeps the model of the newest month that had one
while later reports find too little data.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.registry.models import Base, _enum, new_id, utcnow


class ReportStatus(enum.StrEnum):
    GENERATING = "generating"
    READY = "ready"
    FAILED = "failed"


OUTPUTS = ("html", "pdf", "json", "csv_zip")
"""The formats stored per report (attribute ``output_<format>``)."""


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("client_id", "month"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    month: Mapped[str] = mapped_column(String(7))
    """``YYYY-MM``: local calendar months at each site (:mod:`cloud.reports.period`)."""
    status: Mapped[ReportStatus] = mapped_column(_enum(ReportStatus, "report_status"))
    error: Mapped[str | None] = mapped_column(Text)
    """Why the last attempt failed (``failed``), in one line."""
    requested_by: Mapped[str] = mapped_column(String(200))
    """Who asked last: ``schedule``, ``cli`` or ``user:<id>``."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Generations started, successful or not (the schedule's retries back off by it)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()
    """While ``generating``: the claim's lease; after it anyone may take the report over."""
    finished_at: Mapped[datetime | None] = mapped_column()
    """When the last attempt ended (ready or failed)."""
    generated_at: Mapped[datetime | None] = mapped_column()
    """When the stored outputs were made (kept while a new attempt runs or after it fails)."""
    summary: Mapped[dict[str, Any] | None] = mapped_column()
    """Headline figures of the stored outputs (kWh, cost per currency, CO2, savings)."""
    output_html: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    output_pdf: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    output_json: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    output_csv_zip: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class SiteBaseline(Base):
    """A site's newest weather-normalised baseline model, from the report that fitted it."""

    __tablename__ = "site_baselines"

    site_id: Mapped[str] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[str] = mapped_column(String(7))
    """The report month (``YYYY-MM``) it was fitted for: on the 12 months before it."""
    kind: Mapped[str] = mapped_column(String(16))
    """``daily``: eemeter's ``DailyModel`` (the only kind kept)."""
    model: Mapped[str] = mapped_column(Text, deferred=True)
    """eemeter's JSON of the model (``DailyModel.to_json()``)."""
    timezone: Mapped[str] = mapped_column(String(64))
    """The site's zone when it was fitted: the model's days are local days there."""
    baseline_start: Mapped[datetime] = mapped_column()
    baseline_end: Mapped[datetime] = mapped_column()
    """The hours fitted on: ``[baseline_start, baseline_end)``."""
    meter_devices: Mapped[list[str]] = mapped_column(default=list)
    """Ids of the devices whose summed use the model predicts."""
    temperature_sensors: Mapped[list[str]] = mapped_column(default=list)
    """Ids of the devices whose ``ambient_temp`` was the outdoor temperature (empty when
    it came from a weather file)."""
    temperature_source: Mapped[str] = mapped_column(String(300))
    """As the report states it: ``sensors: <names>`` or ``weather file <name>``."""
    monthly_cv_rmse: Mapped[float | None] = mapped_column(Float)
    monthly_nmbe: Mapped[float | None] = mapped_column(Float)
    passes_g14: Mapped[bool] = mapped_column(Boolean)
    fitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    """When the report that fitted it was made (the dashboard's cache key)."""
