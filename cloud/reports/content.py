"""The report as data: frozen dataclasses of plain values, built by :mod:`cloud.reports.build`.

Every figure the HTML and the PDF show is a field here, and :mod:`cloud.reports.render`
writes all of them to the JSON (``dataclasses.asdict``) and the CSV tables. Units are in
the field names where they are not obvious (``_kwh``, ``_kg``, ``_c``); costs are in the
site's currency (:attr:`SiteSection.currency`); shares are fractions (0.25 = 25 %).
``None`` means unknown (a site without a tariff has no cost), never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

SCHEMA_VERSION: Final = 1
"""Of the JSON and CSV layout; raised when a field is renamed or removed."""

Record = Mapping[str, Any]
"""A result of the efficiency and waste modules as ``dataclasses.asdict`` gives it."""


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """The client's costs in one currency (sites with other currencies are not added in)."""

    currency: str
    sites: int
    energy_cost: float
    standing_charge: float
    total_cost: float


@dataclass(frozen=True, slots=True)
class ClientTotals:
    sites: int
    devices: int
    devices_without_data: int
    kwh: float
    estimated_kwh: float
    co2_kg: float
    missing_hours: int
    """Device-hours without a figure (counted as nothing in ``kwh``)."""
    device_hours: int
    costs: tuple[CurrencyTotals, ...]
    sites_without_cost: int
    """Sites without a (valid) tariff, whose cost is unknown."""
    avoided_kwh: float | None
    """Weather-normalised savings summed over the sites that have them."""
    baseline_kwh: float | None
    """Those sites' counterfactual (what the baselines predict), for the percentage."""


@dataclass(frozen=True, slots=True)
class PeriodRow:
    """A tariff period's share of a site's month."""

    period: str
    kwh: float
    cost: float | None
    mean_price: float | None
    """cost / kWh, per kWh in the site's currency."""
    share_of_cost: float | None


@dataclass(frozen=True, slots=True)
class AssetTypeRow:
    asset_type: str
    devices: int
    kwh: float
    cost: float | None
    co2_kg: float
    share_of_site: float | None


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: str
    name: str
    asset_type: str
    make_model: str | None
    location: str | None
    kwh: float
    estimated_kwh: float
    cost: float | None
    co2_kg: float
    share_of_site: float | None
    mean_kw: float | None
    """kWh / hours with a figure: the average draw."""
    runtime_h: float | None
    """Hours run in the month (the runtime counter), when the device has one."""
    starts: float | None
    kwh_per_run_hour: float | None
    measured_hours: int
    estimated_hours: int
    missing_hours: int
    readings: int
    wraps: int
    resets: int
    long_gaps: int
    rejected: Mapping[str, int]
    """Readings dropped as implausible, by reason."""
    work_orders: int
    """Work orders of the device that overlap the month."""


@dataclass(frozen=True, slots=True)
class DayRow:
    """A local calendar day of a site."""

    date: str
    kwh: float
    cost: float | None
    missing_hours: int
    """Device-hours of the day without a figure."""


@dataclass(frozen=True, slots=True)
class Issue:
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class Fit:
    """A CalTRACK model's fit at one granularity, against ASHRAE Guideline 14."""

    granularity: str
    n: int
    p: int
    cv_rmse: float | None
    nmbe: float | None
    cv_rmse_limit: float | None
    nmbe_limit: float | None
    passes: bool | None
    """None where Guideline 14 sets no limit (daily points)."""


@dataclass(frozen=True, slots=True)
class Uncertainty:
    confidence: float
    kwh: float
    """± kWh around the avoided energy use."""
    percent_points: float | None
    percent_of_savings: float | None


@dataclass(frozen=True, slots=True)
class SavingsFigures:
    """Avoided energy use in the month: the baseline's prediction under the month's weather
    minus what was used, over the days (or hours) with both."""

    counterfactual_kwh: float
    actual_kwh: float
    avoided_kwh: float
    avoided_percent: float | None
    avoided_cost: float | None
    """avoided kWh × the month's mean price at the site."""
    points: int
    skipped: int
    uncertainty: tuple[Uncertainty, ...]
    significant: bool | None
    """Whether the saving exceeds its 68 % uncertainty (None without an uncertainty)."""


@dataclass(frozen=True, slots=True)
class BaselinePoint:
    """One reporting day (or hour): what the baseline predicts and what was used."""

    start: str
    predicted_kwh: float | None
    actual_kwh: float | None


BaselineStatus = Literal["fitted", "insufficient_data", "not_fitted", "skipped"]


@dataclass(frozen=True, slots=True)
class BaselineSection:
    """A site's weather-normalised baseline (CalTRACK, fitted by eemeter) and savings."""

    status: BaselineStatus
    summary: str
    """One or two sentences for a facility manager."""
    period_start: str | None = None
    """The baseline year (local dates; the end is exclusive)."""
    period_end: str | None = None
    temperature_source: str | None = None
    devices: int = 0
    """Devices on the site's meter (module :mod:`cloud.reports.collect`)."""
    devices_excluded: int = 0
    meter_share_of_month: float | None = None
    """The meter's devices' share of the site's month kWh."""
    model: str | None = None
    """``daily`` or ``hourly``."""
    fit: Fit | None = None
    monthly_fit: Fit | None = None
    passes_g14: bool | None = None
    autocorrelation: float | None = None
    n_effective: float | None = None
    days: int | None = None
    hours: int | None = None
    mean_temperature_c: float | None = None
    """The month's mean outdoor temperature."""
    baseline_mean_temperature_c: float | None = None
    savings: SavingsFigures | None = None
    points: tuple[BaselinePoint, ...] = ()
    reasons: tuple[Issue, ...] = ()
    """Why there is no baseline (eemeter's disqualifications, or ours: ``edgewatch.*``)."""
    warnings: tuple[Issue, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SiteTotals:
    kwh: float
    estimated_kwh: float
    share_estimated: float | None
    energy_cost: float | None
    standing_charge: float | None
    total_cost: float | None
    co2_kg: float
    measured_hours: int
    estimated_hours: int
    missing_hours: int
    devices: int
    devices_without_data: int
    mean_price: float | None


@dataclass(frozen=True, slots=True)
class SiteSection:
    site_id: str
    name: str
    kind: str
    timezone: str
    address: str | None
    floor_area_m2: float | None
    period_start: str
    """Local ISO 8601 with offset; the end is exclusive."""
    period_end: str
    days: float
    currency: str | None
    tariff: str
    """What the tariff is, in words (``time of use, 3 periods``)."""
    tariff_problem: str | None
    grid_factor_kg_per_kwh: float
    totals: SiteTotals
    intensity_kwh_per_m2_year: float | None
    intensity_note: str | None
    tariff_periods: tuple[PeriodRow, ...]
    asset_types: tuple[AssetTypeRow, ...]
    devices: tuple[DeviceRow, ...]
    """Largest consumer first."""
    days_: tuple[DayRow, ...]
    baseline: BaselineSection
    quality: tuple[str, ...]
    """What the reader should know about the data (gaps, resets, dropped readings)."""


@dataclass(frozen=True, slots=True)
class TopConsumer:
    rank: int
    device_id: str
    name: str
    site_id: str
    site_name: str
    asset_type: str
    kwh: float
    share_of_client: float | None
    cost: float | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class WorkOrderRow:
    """A work order of one of the client's devices that overlaps the month."""

    work_order_id: str
    number: str
    device_id: str
    device_name: str
    site_id: str
    fault: str
    state: str
    opened_at: str
    closed_at: str | None
    hours_in_month: float
    """Hours of the device's month the fault was open."""


EquipmentStatus = Literal["ok", "not_available", "error"]


@dataclass(frozen=True, slots=True)
class EquipmentSection:
    """Equipment efficiency and fault waste (:mod:`cloud.energy.efficiency`,
    :mod:`cloud.energy.waste`), their results as records."""

    status: EquipmentStatus
    note: str
    units: tuple[Record, ...] = ()
    """Efficiency per unit."""
    like_unit_groups: tuple[Record, ...] = ()
    fault_waste: tuple[Record, ...] = ()
    recommendations: tuple[Record, ...] = ()
    """Ranked by money saved per year."""


@dataclass(frozen=True, slots=True)
class Report:
    client_id: str
    client_name: str
    month: str
    generated_at: str
    """UTC, ISO 8601."""
    totals: ClientTotals
    highlights: tuple[str, ...]
    """The report's first lines: where energy and money went, what to fix."""
    sites: tuple[SiteSection, ...]
    top_consumers: tuple[TopConsumer, ...]
    work_orders: tuple[WorkOrderRow, ...]
    equipment: EquipmentSection
    method: tuple[str, ...]
    """How the figures were made, in sentences."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The settings the report was made with (grid factor, baseline, granularity)."""
    schema_version: int = SCHEMA_VERSION
