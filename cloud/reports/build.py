"""Build a report (:class:`~cloud.reports.content.Report`) from its inputs: pure, no I/O.

- Energy, cost by tariff period and CO2 per device, per asset type and per site come
  from :func:`cloud.energy.summary.summarise`; the client's totals add the sites up (costs
  per currency: sites billed in different currencies are never added together).
- Per site, local calendar days (energy cost plus the day's standing charge).
- The weather-normalised baseline per site (:func:`baseline_section`): eemeter's CalTRACK
  model fitted to the site's meter over the 12 months before the month, its fit against
  ASHRAE Guideline 14, and the month's avoided energy use with its uncertainty
  (:func:`cloud.energy.baseline.fit_baseline`, :func:`~cloud.energy.baseline.savings`).
  Too little data is a finding ("insufficient data", with eemeter's reasons), not an
  error. :func:`build_with_models` also returns the fitted models, which the report
  service keeps for the dashboard (:mod:`cloud.reports.baselines`).
- Equipment efficiency and fault waste: :mod:`cloud.reports.equipment`.
- Highlights: the report's first sentences, from the figures above.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from cloud.energy.baseline import (
    Baseline,
    FitStats,
    HourlyValues,
    InsufficientData,
    Savings,
    fit_baseline,
    savings,
)
from cloud.energy.baseline import Issue as EemeterIssue
from cloud.energy.summary import DeviceEnergy, SiteContext, SiteSummary, summarise
from cloud.energy.tariff import TouTariff, zone_of
from cloud.errors import InvalidInput
from cloud.reports import equipment
from cloud.reports.collect import BASELINE_MONTHS, METER_COVERAGE, Inputs, SiteData
from cloud.reports.content import (
    AssetTypeRow,
    BaselinePoint,
    BaselineSection,
    ClientTotals,
    CurrencyTotals,
    DayRow,
    DeviceRow,
    Fit,
    Issue,
    PeriodRow,
    Report,
    SavingsFigures,
    SiteSection,
    SiteTotals,
    TopConsumer,
    Uncertainty,
    WorkOrderRow,
)
from cloud.reports.period import local_iso

TOP_CONSUMERS: Final = 10
MONTH_NAMES: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _share(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or not whole > 0:
        return None
    return part / whole


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _local_date(epoch_s: float, timezone: str) -> str:
    return datetime.fromtimestamp(epoch_s, zone_of(timezone)).date().isoformat()


def month_title(month: str) -> str:
    """``"2026-10"`` → ``"October 2026"``."""
    year, number = month.split("-")
    return f"{MONTH_NAMES[int(number) - 1]} {year}"


def kwh_text(kwh: float) -> str:
    return f"{kwh:,.0f} kWh" if abs(kwh) >= 10 else f"{kwh:,.1f} kWh"


def money_text(amount: float, currency: str) -> str:
    return f"{currency} {amount:,.0f}" if abs(amount) >= 100 else f"{currency} {amount:,.2f}"


# ---- tariff, sites, devices ------------------------------------------------------------------


def tariff_text(site: SiteData) -> str:
    if site.tariff is None:
        return "none"
    if isinstance(site.tariff, TouTariff):
        names = {p.name for p in site.tariff.periods} | {
            p.name for s in site.tariff.seasons for p in s.periods
        }
        seasons = f", {len(site.tariff.seasons)} seasons" if site.tariff.seasons else ""
        return f"time of use, {len(names)} periods and default{seasons} ({site.tariff.currency})"
    return f"flat {site.tariff.price_per_kwh:g} {site.tariff.currency}/kWh"


def _device_rows(
    site: SiteData, summary: SiteSummary, orders: Counter[str]
) -> tuple[DeviceRow, ...]:
    priced = site.tariff is not None
    by_id = {d.info.id: d for d in site.devices}
    rows = []
    for group in summary.asset_types:
        for s in group.devices:
            data = by_id[s.device_id]
            t = s.totals
            hours = t.measured_hours + t.estimated_hours
            runtime = None if data.unit.runtime_h is None else float(np.nansum(data.unit.runtime_h))
            starts = None if data.unit.starts is None else float(np.nansum(data.unit.starts))
            rows.append(
                DeviceRow(
                    device_id=s.device_id,
                    name=data.info.name,
                    asset_type=s.asset_type,
                    make_model=data.info.make_model,
                    location=data.info.location,
                    kwh=t.kwh,
                    estimated_kwh=t.estimated_kwh,
                    cost=t.cost if priced else None,
                    co2_kg=t.co2_kg,
                    share_of_site=_share(t.kwh, summary.totals.kwh),
                    mean_kw=t.kwh / hours if hours else None,
                    runtime_h=runtime,
                    starts=starts,
                    kwh_per_run_hour=t.kwh / runtime if runtime else None,
                    measured_hours=t.measured_hours,
                    estimated_hours=t.estimated_hours,
                    missing_hours=t.missing_hours,
                    readings=data.readings,
                    wraps=s.wraps,
                    resets=s.resets,
                    long_gaps=s.long_gaps,
                    rejected=dict(sorted(s.rejected.items())),
                    work_orders=orders[s.device_id],
                )
            )
    rows.sort(key=lambda r: (-r.kwh, r.name, r.device_id))
    return tuple(rows)


def _days(site: SiteData) -> tuple[DayRow, ...]:
    hours = site.hours
    if not site.devices:
        kwh = np.zeros(hours.size)
        missing = np.zeros(hours.size, dtype=np.int64)
    else:
        stack = np.vstack([d.energy.kwh for d in site.devices])
        kwh = np.nansum(stack, axis=0)
        missing = np.isnan(stack).sum(axis=0)
    cost = kwh * site.prices.prices + site.prices.standing
    dates = [_local_date(float(h), site.timezone) for h in hours]
    order: list[str] = list(dict.fromkeys(dates))
    index = np.array([order.index(d) for d in dates], dtype=np.int64) if dates else np.zeros(0)
    n = len(order)
    day_kwh = np.bincount(index, weights=kwh, minlength=n) if n else np.zeros(0)
    day_cost = np.bincount(index, weights=cost, minlength=n) if n else np.zeros(0)
    day_missing = np.bincount(index, weights=missing, minlength=n) if n else np.zeros(0)
    priced = site.tariff is not None
    return tuple(
        DayRow(
            date=day,
            kwh=float(day_kwh[i]),
            cost=float(day_cost[i]) if priced else None,
            missing_hours=int(day_missing[i]),
        )
        for i, day in enumerate(order)
    )


def _quality(site: SiteData, rows: Sequence[DeviceRow], totals: SiteTotals) -> tuple[str, ...]:
    notes = []
    if site.tariff_problem is not None:
        notes.append(f"No cost figures: {site.tariff_problem}.")
    silent = [r.name for r in rows if r.readings == 0]
    if silent:
        notes.append(
            f"{len(silent)} of {len(rows)} devices sent no energy reading this month: "
            + ", ".join(sorted(silent)[:10])
            + (" and others." if len(silent) > 10 else ".")
        )
    device_hours = totals.measured_hours + totals.estimated_hours + totals.missing_hours
    if totals.missing_hours and device_hours:
        notes.append(
            f"{totals.missing_hours:,} of {device_hours:,} device-hours "
            f"({totals.missing_hours / device_hours:.1%}) have no figure; they count as nothing,"
            " so the totals are a lower bound."
        )
    if totals.estimated_kwh > 0 and totals.kwh > 0:
        notes.append(
            f"{kwh_text(totals.estimated_kwh)} ({totals.estimated_kwh / totals.kwh:.1%}) is "
            "spread evenly across gaps in the readings (estimated; totals preserved)."
        )
    for label, attr in (
        ("controller resets (what was used just before a reset is unknown)", "resets"),
        ("counter wraps (handled)", "wraps"),
        ("gaps longer than 7 days (left out)", "long_gaps"),
    ):
        hit = [(r.name, getattr(r, attr)) for r in rows if getattr(r, attr)]
        if hit:
            listed = ", ".join(f"{name} ({n})" for name, n in hit[:10])
            notes.append(f"{label[0].upper()}{label[1:]}: {listed}.")
    dropped: Counter[str] = Counter()
    for r in rows:
        dropped.update(r.rejected)
    if dropped:
        reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(dropped.items()))
        notes.append(f"Readings dropped as implausible: {reasons}.")
    return tuple(notes)


def _site_section(
    site: SiteData, summary: SiteSummary, orders: Counter[str], baseline: BaselineSection
) -> SiteSection:
    priced = site.tariff is not None
    t = summary.totals
    rows = _device_rows(site, summary, orders)
    totals = SiteTotals(
        kwh=t.kwh,
        estimated_kwh=t.estimated_kwh,
        share_estimated=t.share_estimated,
        energy_cost=t.cost if priced else None,
        standing_charge=summary.standing_charge if priced else None,
        total_cost=summary.total_cost if priced else None,
        co2_kg=t.co2_kg,
        measured_hours=t.measured_hours,
        estimated_hours=t.estimated_hours,
        missing_hours=t.missing_hours,
        devices=len(site.devices),
        devices_without_data=sum(1 for d in site.devices if d.readings == 0),
        mean_price=_share(t.cost, t.kwh) if priced else None,
    )
    periods = []
    for name in t.kwh_by_period:
        kwh = t.kwh_by_period[name]
        cost = t.cost_by_period.get(name, 0.0) if priced else None
        if kwh == 0 and not cost:
            continue
        periods.append(
            PeriodRow(
                period=name,
                kwh=kwh,
                cost=cost,
                mean_price=_share(cost, kwh),
                share_of_cost=_share(cost, t.cost) if priced else None,
            )
        )
    periods.sort(key=lambda p: -(p.cost if p.cost is not None else p.kwh))
    types = tuple(
        AssetTypeRow(
            asset_type=a.asset_type,
            devices=a.totals.devices,
            kwh=a.totals.kwh,
            cost=a.totals.cost if priced else None,
            co2_kg=a.totals.co2_kg,
            share_of_site=_share(a.totals.kwh, t.kwh),
        )
        for a in sorted(summary.asset_types, key=lambda a: -a.totals.kwh)
    )
    return SiteSection(
        site_id=site.id,
        name=site.name,
        kind=site.kind,
        timezone=site.timezone,
        address=site.address,
        floor_area_m2=site.floor_area_m2,
        period_start=local_iso(site.start, site.timezone),
        period_end=local_iso(site.end, site.timezone),
        days=summary.days,
        currency=summary.currency if priced else None,
        tariff=tariff_text(site),
        tariff_problem=site.tariff_problem,
        grid_factor_kg_per_kwh=site.grid_factor,
        totals=totals,
        intensity_kwh_per_m2_year=summary.intensity.kwh_per_m2_year,
        intensity_note=summary.intensity.reason,
        tariff_periods=tuple(periods),
        asset_types=types,
        devices=rows,
        days_=_days(site),
        baseline=baseline,
        quality=_quality(site, rows, totals),
    )


# ---- baseline ---------------------------------------------------------------------------------


def _issues(items: Iterable[EemeterIssue]) -> tuple[Issue, ...]:
    return tuple(Issue(i.name, i.description) for i in items)


def _fit(stats: FitStats) -> Fit:
    limits = stats.limits
    return Fit(
        granularity=stats.granularity.value,
        n=stats.n,
        p=stats.p,
        cv_rmse=_finite(stats.cv_rmse),
        nmbe=_finite(stats.nmbe),
        cv_rmse_limit=None if limits is None else limits.cv_rmse,
        nmbe_limit=None if limits is None else limits.nmbe,
        passes=stats.passes,
    )


def _mean(series: HourlyValues | None) -> float | None:
    if series is None or not np.isfinite(series.values).any():
        return None
    return float(np.nanmean(series.values))


def _savings(result: Savings, mean_price: float | None) -> SavingsFigures:
    u68 = next((u for u in result.uncertainty if math.isclose(u.confidence, 0.68)), None)
    return SavingsFigures(
        counterfactual_kwh=result.counterfactual_kwh,
        actual_kwh=result.actual_kwh,
        avoided_kwh=result.avoided_kwh,
        avoided_percent=_finite(result.avoided_percent),
        avoided_cost=None if mean_price is None else result.avoided_kwh * mean_price,
        points=result.points,
        skipped=result.skipped,
        uncertainty=tuple(
            Uncertainty(
                confidence=u.confidence,
                kwh=u.kwh,
                percent_points=_finite(u.percent_points),
                percent_of_savings=_finite(u.percent_of_savings),
            )
            for u in result.uncertainty
        ),
        significant=None
        if u68 is None or not math.isfinite(u68.kwh)
        else abs(result.avoided_kwh) > u68.kwh,
    )


def _verdict(result: Baseline) -> str:
    monthly = result.monthly
    if result.passes_g14:
        return (
            f"The {result.kind.value} model meets ASHRAE Guideline 14 (monthly CV(RMSE) "
            f"{monthly.cv_rmse:.1%}, NMBE {monthly.nmbe:+.1%})."
        )
    return (
        f"The {result.kind.value} model does not meet ASHRAE Guideline 14 ({monthly}), so"
        " treat its savings as indicative only."
    )


def _savings_text(s: SavingsFigures, title: str) -> str:
    u68 = next((u for u in s.uncertainty if math.isclose(u.confidence, 0.68)), None)
    pct = "" if s.avoided_percent is None else f" ({abs(s.avoided_percent):.1f} %)"
    margin = "" if u68 is None else f" ± {kwh_text(u68.kwh)} at 68 % confidence"
    direction = "less" if s.avoided_kwh >= 0 else "more"
    text = (
        f"Weather-normalised, the site used {kwh_text(abs(s.avoided_kwh))}{pct} {direction} "
        f"in {title} than its baseline predicts for that weather{margin}."
    )
    if s.significant is False:
        text += " The difference is within the uncertainty: no significant change."
    return text


def baseline_section(site: SiteData, inputs: Inputs, mean_price: float | None) -> BaselineSection:
    """The site's baseline and savings (see the module docstring); never raises for data
    that does not qualify."""
    return _baseline(site, inputs, mean_price)[0]


def _baseline(
    site: SiteData, inputs: Inputs, mean_price: float | None
) -> tuple[BaselineSection, Baseline | None]:
    """:func:`baseline_section`, and the fitted model when there is one."""
    if not inputs.options.baseline:
        return BaselineSection(
            status="skipped", summary="No weather-normalised baseline was asked for."
        ), None
    title = month_title(str(inputs.month))
    period: dict[str, Any] = {
        "period_start": _local_date(site.baseline_start, site.timezone),
        "period_end": _local_date(site.start, site.timezone),
    }
    temp = site.temperature
    source = None if temp is None else temp.source
    reasons: list[Issue] = []
    if site.meter is None:
        reasons.append(Issue("edgewatch.meter", site.meter_problem or "no meter"))
    if temp is None or temp.baseline is None:
        problem = "no outdoor temperature" if temp is None else temp.problem or "none"
        reasons.append(Issue("edgewatch.temperature", problem))
    if reasons or site.meter is None or temp is None or temp.baseline is None:
        return BaselineSection(
            status="insufficient_data",
            summary="No baseline: " + "; ".join(r.description for r in reasons) + ".",
            temperature_source=source,
            reasons=tuple(reasons),
            **period,
        ), None
    meter = site.meter
    in_meter = set(meter.devices)
    month_kwh = sum(d.energy.total_kwh for d in site.devices)
    meter_kwh = sum(d.energy.total_kwh for d in site.devices if d.info.id in in_meter)
    common: dict[str, Any] = {
        **period,
        "temperature_source": source,
        "devices": len(meter.devices),
        "devices_excluded": len(meter.excluded),
        "meter_share_of_month": _share(meter_kwh, month_kwh),
        "mean_temperature_c": _mean(temp.report),
        "baseline_mean_temperature_c": _mean(temp.baseline),
    }
    notes: list[str] = []
    if meter.excluded:
        notes.append(
            f"{len(meter.excluded)} device(s) left out of the meter: they reported in fewer "
            f"than {METER_COVERAGE:.0%} of the baseline year's hours."
        )
    result = fit_baseline(
        meter.baseline,
        temp.baseline,
        granularity=inputs.options.granularity,
        timezone=site.timezone,
    )
    notes.extend(result.notes)
    if isinstance(result, InsufficientData):
        why = "; ".join(r.description for r in result.reasons)
        return BaselineSection(
            status="insufficient_data",
            summary=f"Insufficient data for a {result.kind.value} CalTRACK baseline "
            f"(it needs 329 to 365 days of the {BASELINE_MONTHS} months before): {why}.",
            days=result.days,
            hours=result.hours,
            reasons=_issues(result.reasons),
            warnings=_issues(result.warnings),
            notes=tuple(notes),
            **common,
        ), None
    figures: SavingsFigures | None = None
    points: tuple[BaselinePoint, ...] = ()
    try:
        if temp.report is None:
            raise InvalidInput("temperature", f"no outdoor temperature for {title}")
        saved = savings(result, meter.report, temp.report)
    except InvalidInput as exc:
        notes.append(f"No savings for {title}: {exc.why}.")
    else:
        figures = _savings(saved, mean_price)
        daily = result.kind.value == "daily"
        points = tuple(
            BaselinePoint(
                start=_local_date(float(t), site.timezone)
                if daily
                else local_iso(float(t), site.timezone),
                predicted_kwh=_finite(float(p)),
                actual_kwh=_finite(float(o)),
            )
            for t, p, o in zip(saved.starts, saved.predicted, saved.observed, strict=True)
        )
    summary = _verdict(result)
    if figures is not None:
        summary = _savings_text(figures, title) + " " + summary
    return BaselineSection(
        status="fitted" if not result.disqualification else "not_fitted",
        summary=summary,
        model=result.kind.value,
        fit=_fit(result.fit),
        monthly_fit=_fit(result.monthly),
        passes_g14=result.passes_g14,
        autocorrelation=_finite(result.autocorrelation),
        n_effective=_finite(result.n_effective),
        days=result.days,
        hours=result.hours,
        savings=figures,
        points=points,
        reasons=_issues(result.disqualification),
        warnings=_issues(result.warnings),
        notes=tuple(notes),
        **common,
    ), result


# ---- the client ---------------------------------------------------------------------------------


def _client_totals(sites: Sequence[SiteSection]) -> ClientTotals:
    by_currency: dict[str, list[SiteSection]] = defaultdict(list)
    for s in sites:
        if s.currency is not None:
            by_currency[s.currency].append(s)
    costs = tuple(
        CurrencyTotals(
            currency=currency,
            sites=len(group),
            energy_cost=sum(s.totals.energy_cost or 0.0 for s in group),
            standing_charge=sum(s.totals.standing_charge or 0.0 for s in group),
            total_cost=sum(s.totals.total_cost or 0.0 for s in group),
        )
        for currency, group in sorted(by_currency.items())
    )
    with_savings = [s.baseline.savings for s in sites if s.baseline.savings is not None]
    return ClientTotals(
        sites=len(sites),
        devices=sum(s.totals.devices for s in sites),
        devices_without_data=sum(s.totals.devices_without_data for s in sites),
        kwh=sum(s.totals.kwh for s in sites),
        estimated_kwh=sum(s.totals.estimated_kwh for s in sites),
        co2_kg=sum(s.totals.co2_kg for s in sites),
        missing_hours=sum(s.totals.missing_hours for s in sites),
        device_hours=sum(
            s.totals.measured_hours + s.totals.estimated_hours + s.totals.missing_hours
            for s in sites
        ),
        costs=costs,
        sites_without_cost=sum(1 for s in sites if s.currency is None),
        avoided_kwh=sum(x.avoided_kwh for x in with_savings) if with_savings else None,
        baseline_kwh=sum(x.counterfactual_kwh for x in with_savings) if with_savings else None,
    )


def _top(sites: Sequence[SiteSection], total_kwh: float) -> tuple[TopConsumer, ...]:
    ranked = ((d, s) for s in sites for d in s.devices if d.kwh > 0)
    rows = sorted(ranked, key=lambda p: (-p[0].kwh, p[0].name))[:TOP_CONSUMERS]
    return tuple(
        TopConsumer(
            rank=i + 1,
            device_id=d.device_id,
            name=d.name,
            site_id=s.site_id,
            site_name=s.name,
            asset_type=d.asset_type,
            kwh=d.kwh,
            share_of_client=_share(d.kwh, total_kwh),
            cost=d.cost,
            currency=s.currency,
        )
        for i, (d, s) in enumerate(rows)
    )


def _work_orders(inputs: Inputs) -> tuple[WorkOrderRow, ...]:
    sites = {d.info.id: s for s in inputs.sites for d in s.devices}
    out = []
    for e in inputs.episodes:
        site = sites.get(e.device_id)
        if site is None:
            continue
        closed = site.end if e.closed_at is None else min(e.closed_at, site.end)
        hours = max(0.0, (closed - max(e.opened_at, site.start)) / 3600.0)
        out.append(
            WorkOrderRow(
                work_order_id=e.work_order_id,
                number=e.number,
                device_id=e.device_id,
                device_name=inputs.names.get(e.device_id, e.device_id),
                site_id=site.id,
                fault=e.fault,
                state=e.state,
                opened_at=local_iso(e.opened_at, site.timezone),
                closed_at=None if e.closed_at is None else local_iso(e.closed_at, site.timezone),
                hours_in_month=hours,
            )
        )
    return tuple(out)


def _highlights(
    report_sites: Sequence[SiteSection],
    totals: ClientTotals,
    title: str,
    top: Sequence[TopConsumer],
    orders: Sequence[WorkOrderRow],
    recommendations: Sequence[str],
) -> tuple[str, ...]:
    out = []
    money = " and ".join(money_text(c.total_cost, c.currency) for c in totals.costs)
    cost_text = f", cost {money} including standing charges" if money else ""
    out.append(
        f"In {title} the monitored appliances of {totals.sites} site"
        f"{'s' if totals.sites != 1 else ''} used {kwh_text(totals.kwh)}{cost_text} and caused"
        f" {totals.co2_kg / 1000:,.2f} t CO2e."
    )
    if len(report_sites) > 1 and totals.kwh > 0:
        biggest = max(report_sites, key=lambda s: s.totals.kwh)
        out.append(
            f"{biggest.name} used the most: {kwh_text(biggest.totals.kwh)}, "
            f"{biggest.totals.kwh / totals.kwh:.0%} of the total."
        )
    if top and totals.kwh > 0:
        t = top[0]
        out.append(
            f"The largest consumer is {t.name} ({t.asset_type}) at {t.site_name}: "
            f"{kwh_text(t.kwh)}, {t.kwh / totals.kwh:.0%} of the total."
        )
    for s in report_sites:
        priced = [p for p in s.tariff_periods if p.cost is not None and p.period != "default"]
        if len(s.tariff_periods) > 1 and priced and s.currency is not None:
            dear = max(priced, key=lambda p: p.mean_price or 0.0)
            if dear.share_of_cost is not None and dear.mean_price is not None:
                out.append(
                    f"At {s.name}, the {dear.period!r} period cost {dear.share_of_cost:.0%} of"
                    f" the energy bill at {dear.mean_price:.3f} {s.currency}/kWh: load moved "
                    "out of it saves the most."
                )
    if totals.avoided_kwh is not None and totals.baseline_kwh:
        pct = 100.0 * totals.avoided_kwh / totals.baseline_kwh
        word = "less" if totals.avoided_kwh >= 0 else "more"
        saved = kwh_text(abs(totals.avoided_kwh))
        out.append(
            f"Weather-normalised, the sites with a baseline used {saved} ({abs(pct):.1f} %)"
            f" {word} than their baselines predict."
        )
    if orders:
        faults = Counter(o.fault for o in orders)
        listed = ", ".join(f"{f.replace('_', ' ')} ({n})" for f, n in faults.most_common(4))
        out.append(f"{len(orders)} work order(s) were open during the month: {listed}.")
    if totals.devices_without_data:
        out.append(
            f"{totals.devices_without_data} of {totals.devices} devices sent no energy reading"
            " this month (see the data notes of their sites)."
        )
    out.extend(recommendations)
    return tuple(out)


METHOD: Final = (
    "Consumption is what each appliance's energy counter advanced by, hour by hour; counter"
    " wraps and controller resets are recognised, gaps of up to 7 days are spread evenly"
    " over the missing hours (estimated, totals preserved) and implausible readings are"
    " dropped. Hours without a figure count as nothing.",
    "Months are local calendar months at each site (its time zone, daylight saving"
    " included). Cost is each hour's energy times the site's tariff price at that local"
    " time (time-of-use periods and seasons); the standing charge is added per local day."
    " Sites billed in different currencies are never added together.",
    "CO2 is energy times the grid's emission factor (kg CO2e/kWh) configured for the site.",
    "Energy use intensity is the monitored appliances' energy per m² of floor area,"
    " annualised from the month's days (kWh/m²·year); it is not the whole building's.",
    "The weather-normalised baseline is a CalTRACK model (LF Energy's eemeter) fitted to the"
    " site's monitored appliances summed per hour over the 12 months before the month,"
    " against outdoor temperature; its fit is stated against ASHRAE Guideline 14 (monthly"
    " CV(RMSE) ≤ 15 %, |NMBE| ≤ 5 %; hourly 30 % and 10 %). Savings are the baseline's"
    " prediction under the month's weather minus what was used, with Guideline 14's"
    " savings uncertainty at 68 % and 90 % confidence.",
)


def build(inputs: Inputs) -> Report:
    """The report of ``inputs`` (see the module docstring)."""
    return build_with_models(inputs)[0]


def build_with_models(inputs: Inputs) -> tuple[Report, dict[str, Baseline]]:
    """:func:`build`, and the baseline models it fitted, by site id (the report service
    keeps them for the dashboard)."""
    devices = [
        DeviceEnergy(d.info.id, d.info.asset_type, s.id, d.energy)
        for s in inputs.sites
        for d in s.devices
    ]
    contexts = {
        s.id: SiteContext(s.id, s.prices, s.grid_factor, s.floor_area_m2) for s in inputs.sites
    }
    summaries = {x.site_id: x for x in summarise(devices, contexts)}
    orders: Counter[str] = Counter(e.device_id for e in inputs.episodes)
    sections = []
    models: dict[str, Baseline] = {}
    for site in inputs.sites:
        summary = summaries[site.id]
        priced = site.tariff is not None
        mean_price = _share(summary.totals.cost, summary.totals.kwh) if priced else None
        baseline, model = _baseline(site, inputs, mean_price)
        if model is not None:
            models[site.id] = model
        sections.append(_site_section(site, summary, orders, baseline))
    totals = _client_totals(sections)
    top = _top(sections, totals.kwh)
    work_orders = _work_orders(inputs)
    kit = equipment.assess(inputs)
    title = month_title(str(inputs.month))
    report = Report(
        client_id=inputs.client_id,
        client_name=inputs.client_name,
        month=str(inputs.month),
        generated_at=inputs.now.astimezone(UTC).isoformat(timespec="seconds"),
        totals=totals,
        highlights=_highlights(sections, totals, title, top, work_orders, equipment.headlines(kit)),
        sites=tuple(sections),
        top_consumers=top,
        work_orders=work_orders,
        equipment=kit,
        method=METHOD,
        options={
            "grid_factor_default_kg_per_kwh": inputs.options.grid_factors.default,
            "baseline": inputs.options.baseline,
            "baseline_granularity": inputs.options.granularity,
            "weather_dir": None
            if inputs.options.weather_dir is None
            else str(inputs.options.weather_dir),
        },
    )
    return report, models
