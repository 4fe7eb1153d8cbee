"""A report (:class:`~cloud.reports.content.Report`) as JSON, CSV tables, HTML and PDF.

JSON
    ``dataclasses.asdict`` of the report, NaN as ``null``, UTF-8: every figure.
CSV
    One table per kind of row (:data:`TABLES`), each row flattened: nested fields become
    dotted columns (``totals.kwh``, ``baseline.fit.cv_rmse``) and lists indexed ones
    (``uncertainty[0].kwh``); numbers are written as Python writes them (no rounding),
    ``None`` as an empty cell. ``summary.csv`` is long (``metric,value,unit``); the other
    tables are wide, with the ``site_id`` of their rows. Every number of the JSON is in
    one of them (a test checks it). The API serves them zipped (``report.csv.zip``), the
    command line writes them into a folder.
HTML
    One self-contained page from ``templates/report.html.j2`` (Jinja2, autoescaped): CSS
    inline, charts as inline SVG (:mod:`cloud.reports.charts`), no script, no link to any
    other resource; in-page anchors only.
PDF
    The very same HTML through WeasyPrint (A4, page numbers, each site from a new page).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jinja2
from markupsafe import Markup

from cloud.reports import charts
from cloud.reports.build import month_title
from cloud.reports.content import Report, SiteSection
from cloud.reports.equipment import plain

log = logging.getLogger(__name__)

TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
TEMPLATE: Final = "report.html.j2"
CHART_SITES: Final = 6
"""Sites drawn separately in the client's daily chart; the rest are summed as "others"."""
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outputs:
    html: bytes
    pdf: bytes
    json: bytes
    csv_zip: bytes


# ---- JSON -----------------------------------------------------------------------------------


def to_json(report: Report) -> bytes:
    return (json.dumps(plain(report), ensure_ascii=False, indent=1, allow_nan=False) + "\n").encode(
        "utf-8"
    )


# ---- CSV --------------------------------------------------------------------------------------


def flatten(value: Any, exclude: Iterable[str] = ()) -> Row:
    """``value`` (a dataclass, mapping or record) as one flat row (module docstring);
    ``exclude``: dotted paths left out (their own tables)."""
    skip = set(exclude)
    out: Row = {}

    def walk(item: Any, key: str) -> None:
        if key in skip:
            return
        if isinstance(item, dict):
            if not item and key:
                out[key] = None
            for k, v in item.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(item, list):
            for i, v in enumerate(item):
                walk(v, f"{key}[{i}]")
        else:
            out[key] = item

    walk(plain(value), "")
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def csv_text(rows: Sequence[Row]) -> str:
    """Rows as CSV; the columns are every key, in the order first seen."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(columns))
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


UNITS: Final = (
    ("kwh_per_m2_year", "kWh/m²·year"),
    ("kg_per_kwh", "kg CO2e/kWh"),
    ("co2_kg", "kg CO2e"),
    ("_kwh", "kWh"),
    ("kwh", "kWh"),
    ("_c", "°C"),
    ("_h", "h"),
    ("hours", "h"),
    ("cost", "currency"),
    ("standing_charge", "currency"),
    ("price", "currency/kWh"),
    ("share", "fraction"),
    ("percent", "%"),
)


def unit_of(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    for suffix, unit in UNITS:
        if leaf.endswith(suffix):
            return unit
    return ""


_SITE_TABLES: Final = ("tariff_periods", "asset_types", "devices", "days_")
_BASELINE_TABLES: Final = ("baseline.points", "baseline.reasons", "baseline.warnings")


def _site_rows(report: Report, field: str) -> list[Row]:
    rows = []
    for s in report.sites:
        for item in getattr(s, field):
            rows.append({"site_id": s.site_id, "site": s.name, **flatten(item)})
    return rows


def tables(report: Report) -> dict[str, list[Row]]:
    """The report's CSV tables by name (module docstring)."""
    top = flatten(report, exclude=("sites", "top_consumers", "work_orders", "equipment", "method"))
    summary = [{"metric": k, "value": v, "unit": unit_of(k)} for k, v in top.items()]
    baseline_daily = [
        {"site_id": s.site_id, "site": s.name, **flatten(p)}
        for s in report.sites
        for p in s.baseline.points
    ]
    issues = [
        {"site_id": s.site_id, "site": s.name, "kind": kind, **flatten(i)}
        for s in report.sites
        for kind, items in (("reason", s.baseline.reasons), ("warning", s.baseline.warnings))
        for i in items
    ]
    kit = report.equipment
    return {
        "summary": summary,
        "sites": [flatten(s, exclude=_SITE_TABLES + _BASELINE_TABLES) for s in report.sites],
        "tariff_periods": _site_rows(report, "tariff_periods"),
        "asset_types": _site_rows(report, "asset_types"),
        "devices": _site_rows(report, "devices"),
        "daily": _site_rows(report, "days_"),
        "baseline_daily": baseline_daily,
        "baseline_issues": issues,
        "top_consumers": [flatten(t) for t in report.top_consumers],
        "work_orders": [flatten(w) for w in report.work_orders],
        "efficiency_units": [flatten(r) for r in kit.units],
        "like_unit_groups": [flatten(r) for r in kit.like_unit_groups],
        "fault_waste": [flatten(r) for r in kit.fault_waste],
        "recommendations": [
            {"rank": i + 1, **flatten(r)} for i, r in enumerate(kit.recommendations)
        ],
    }


TABLES: Final = (
    "summary",
    "sites",
    "tariff_periods",
    "asset_types",
    "devices",
    "daily",
    "baseline_daily",
    "baseline_issues",
    "top_consumers",
    "work_orders",
    "efficiency_units",
    "like_unit_groups",
    "fault_waste",
    "recommendations",
)
"""The CSV tables, in this order (:func:`tables`)."""


def csv_zip(report: Report) -> bytes:
    """Every table as ``<name>.csv`` in one zip (deterministic: fixed member times)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows in tables(report).items():
            info = zipfile.ZipInfo(f"{name}.csv", date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, csv_text(rows))
    return buffer.getvalue()


def write_csv_dir(report: Report, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in tables(report).items():
        path = folder / f"{name}.csv"
        path.write_text(csv_text(rows), encoding="utf-8")
        paths.append(path)
    return paths


# ---- HTML ------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def fmt_kwh(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{_num(value, 0 if abs(value) >= 100 else 1)} kWh"


def fmt_money(value: float | None, currency: str | None) -> str:
    if value is None or currency is None:
        return "–"
    return f"{currency} {_num(value, 0 if abs(value) >= 1000 else 2)}"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.{digits}f} %"


def fmt_co2(kg: float | None) -> str:
    if kg is None:
        return "–"
    return f"{kg / 1000:,.2f} t" if abs(kg) >= 1000 else f"{kg:,.0f} kg"


def fmt_when(iso: str | None) -> str:
    if not iso:
        return "–"
    moment = datetime.fromisoformat(iso)
    if len(iso) <= 10:
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%d %H:%M")


def fmt_epoch(seconds: float | None) -> str:
    """Seconds since the epoch as a UTC date and time."""
    if seconds is None:
        return "–"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=_num,
        kwh=fmt_kwh,
        money=fmt_money,
        pct=fmt_pct,
        co2=fmt_co2,
        when=fmt_when,
        label=lambda key: str(key).replace("_", " "),
        epoch=fmt_epoch,
    )
    return env


def _svg(text: str) -> Markup:
    """A chart as markup: :mod:`cloud.reports.charts` escapes every text it draws."""
    return Markup(text)  # noqa: S704 - escaped by cloud.reports.charts


def _day_label(date: str) -> str:
    return str(int(date[8:10]))


def client_charts(report: Report) -> dict[str, Markup]:
    """The charts of the client's overview."""
    sites = sorted(report.sites, key=lambda s: -s.totals.kwh)
    out: dict[str, Markup] = {}
    out["sites"] = _svg(
        charts.bars(
            [s.name for s in sites],
            [s.totals.kwh for s in sites],
            title="Energy per site",
            unit="kWh",
            notes=[
                f"{fmt_kwh(s.totals.kwh)} · {fmt_money(s.totals.total_cost, s.currency)}"
                for s in sites
            ],
            colours=[charts.colour(i) for i in range(len(sites))],
        )
    )
    dates = sorted({d.date for s in report.sites for d in s.days_})
    shown = sites[:CHART_SITES]
    series = []
    for i, s in enumerate(shown):
        by_date = {d.date: d.kwh for d in s.days_}
        series.append(charts.Series(s.name, [by_date.get(d, 0.0) for d in dates], charts.colour(i)))
    rest = sites[CHART_SITES:]
    if rest:
        other: dict[str, float] = defaultdict(float)
        for s in rest:
            for d in s.days_:
                other[d.date] += d.kwh
        series.append(
            charts.Series(f"{len(rest)} other sites", [other[d] for d in dates], charts.OTHER)
        )
    out["daily"] = _svg(
        charts.columns(
            [_day_label(d) for d in dates],
            series,
            title=f"Energy per day, {month_title(report.month)}",
            unit="kWh",
        )
    )
    types: dict[str, float] = defaultdict(float)
    for s in report.sites:
        for a in s.asset_types:
            types[a.asset_type] += a.kwh
    ranked = sorted(types.items(), key=lambda p: -p[1])
    total = sum(types.values())
    out["asset_types"] = _svg(
        charts.bars(
            [name for name, _ in ranked],
            [kwh for _, kwh in ranked],
            title="Energy per kind of equipment",
            unit="kWh",
            notes=[f"{fmt_kwh(v)} · {fmt_pct(v / total if total else None, 0)}" for _, v in ranked],
            colours=[charts.colour(i + 1) for i in range(len(ranked))],
        )
    )
    top = report.top_consumers
    out["top"] = _svg(
        charts.bars(
            [f"{t.name} ({t.site_name})" for t in top],
            [t.kwh for t in top],
            title="Largest consumers",
            unit="kWh",
            notes=[f"{fmt_kwh(t.kwh)} · {fmt_pct(t.share_of_client, 0)}" for t in top],
            colours=[charts.PALETTE[5]] * len(top),
        )
    )
    eui = [s for s in sites if s.intensity_kwh_per_m2_year is not None]
    if eui:
        eui.sort(key=lambda s: -(s.intensity_kwh_per_m2_year or 0.0))
        out["eui"] = _svg(
            charts.bars(
                [s.name for s in eui],
                [s.intensity_kwh_per_m2_year or 0.0 for s in eui],
                title="Energy use intensity (monitored appliances)",
                unit="kWh/m²·year",
                notes=[f"{_num(s.intensity_kwh_per_m2_year, 1)} kWh/m²·yr" for s in eui],
                colours=[charts.PALETTE[2]] * len(eui),
            )
        )
    by_currency: dict[str, list[SiteSection]] = defaultdict(list)
    for s in sites:
        if s.currency is not None and s.tariff_periods:
            by_currency[s.currency].append(s)
    for currency, group in sorted(by_currency.items()):
        names = list(dict.fromkeys(p.period for s in group for p in s.tariff_periods))
        segments = [
            charts.Series(
                name,
                [next((p.cost for p in s.tariff_periods if p.period == name), 0.0) for s in group],
                charts.OTHER if name == "default" else charts.colour(i),
            )
            for i, name in enumerate(names)
        ]
        out[f"cost_{currency}"] = _svg(
            charts.stacked_bars(
                [s.name for s in group],
                segments,
                title=f"Energy cost by tariff period ({currency})",
                unit=currency,
            )
        )
    return out


def site_charts(site: SiteSection) -> dict[str, Markup]:
    out: dict[str, Markup] = {}
    out["daily"] = _svg(
        charts.columns(
            [_day_label(d.date) for d in site.days_],
            [charts.Series("kWh", [d.kwh for d in site.days_], charts.PALETTE[0])],
            title=f"{site.name}: energy per day",
            unit="kWh",
            height=200,
        )
    )
    points = site.baseline.points
    if points:
        daily = site.baseline.model == "daily"
        out["baseline"] = _svg(
            charts.lines(
                [_day_label(p.start) if daily else p.start[5:13] for p in points],
                [
                    charts.Series(
                        "baseline prediction",
                        [p.predicted_kwh for p in points],
                        charts.PALETTE[7],
                        dashed=True,
                    ),
                    charts.Series("actual", [p.actual_kwh for p in points], charts.PALETTE[0]),
                ],
                title=f"{site.name}: baseline prediction and actual use per "
                f"{'day' if daily else 'hour'}",
                unit="kWh",
            )
        )
    top = site.devices[:10]
    if top:
        out["devices"] = _svg(
            charts.bars(
                [d.name for d in top],
                [d.kwh for d in top],
                title=f"{site.name}: largest consumers",
                unit="kWh",
                notes=[f"{fmt_kwh(d.kwh)} · {fmt_pct(d.share_of_site, 0)}" for d in top],
                colours=[charts.PALETTE[5]] * len(top),
            )
        )
    return out


PAGE_UNITS: Final = 30
"""At most this many units in the page's efficiency table (flagged ones first)."""
PAGE_MEMBERS: Final = 8
"""A like-unit group of more members shows only its outliers on the page."""


def equipment_view(report: Report) -> dict[str, Any]:
    """What the page shows of the equipment section (the JSON and CSV have all of it): the
    units worth a look (short cycling, an unfavourable outlier among like units, or named by
    a recommendation; then the largest consumers) up to :data:`PAGE_UNITS`, and per like-unit
    group its outliers (every member of a small group)."""
    kit = report.equipment
    named = {d for rec in kit.recommendations for d in rec.get("device_ids") or []}
    outliers = {
        m.get("device_id")
        for g in kit.like_unit_groups
        for m in g.get("members") or []
        if m.get("outlier")
    }

    def flagged(u: Mapping[str, Any]) -> bool:
        starts = u.get("starts") or {}
        return bool(starts.get("short_cycling")) or u.get("device_id") in named | outliers

    units = sorted(kit.units, key=lambda u: (not flagged(u), -(u.get("kwh") or 0.0)))
    groups = []
    for g in kit.like_unit_groups:
        if not g.get("comparable"):
            continue
        members = g.get("members") or []
        shown = (
            members if len(members) <= PAGE_MEMBERS else [m for m in members if m.get("outlier")]
        )
        groups.append({"group": g, "members": shown, "hidden": len(members) - len(shown)})
    return {
        "units": units[:PAGE_UNITS],
        "units_hidden": max(len(units) - PAGE_UNITS, 0),
        "groups": groups,
    }


def to_html(report: Report) -> str:
    template = _environment().get_template(TEMPLATE)
    return template.render(
        r=report,
        title=month_title(report.month),
        charts=client_charts(report),
        site_charts={s.site_id: site_charts(s) for s in report.sites},
        names={d.device_id: d.name for s in report.sites for d in s.devices},
        kit_view=equipment_view(report),
    )


# ---- PDF -------------------------------------------------------------------------------------


def to_pdf(html: str) -> bytes:
    """The HTML as a PDF (WeasyPrint; nothing is fetched: the page links to nothing)."""
    import weasyprint  # type: ignore[import-untyped]

    pdf: bytes = weasyprint.HTML(string=html, base_url=str(TEMPLATES)).write_pdf()
    return pdf


def render(report: Report) -> Outputs:
    html = to_html(report)
    return Outputs(
        html=html.encode("utf-8"),
        pdf=to_pdf(html),
        json=to_json(report),
        csv_zip=csv_zip(report),
    )


def summary_of(report: Report) -> dict[str, Any]:
    """Headline figures stored with the report (listed without loading the outputs)."""
    t = report.totals
    return {
        "sites": t.sites,
        "devices": t.devices,
        "kwh": t.kwh,
        "co2_kg": t.co2_kg,
        "costs": [dataclasses.asdict(c) for c in t.costs],
        "avoided_kwh": t.avoided_kwh,
        "baseline_kwh": t.baseline_kwh,
        "devices_without_data": t.devices_without_data,
    }
