"""The report's outputs: JSON with every figure, CSV tables with every JSON number, an HTML
page that links to nothing outside itself, and a PDF whose pages show something (their
PNGs are kept in ``tests/artifacts/report/`` for a look)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2
import pytest

from cloud.reports import charts
from cloud.reports.content import EquipmentSection, Report
from cloud.reports.render import (
    TABLES,
    Outputs,
    csv_text,
    equipment_view,
    flatten,
    tables,
    to_html,
)

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "report"


def numbers(value: Any) -> list[float]:
    """Every number (not bool) in a JSON document."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    return [n for v in value for n in numbers(v)]


def csv_numbers(archive: bytes) -> tuple[dict[str, list[dict[str, str]]], set[float]]:
    found: set[float] = set()
    rows: dict[str, list[dict[str, str]]] = {}
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        for name in z.namelist():
            reader = csv.DictReader(io.StringIO(z.read(name).decode("utf-8")))
            rows[name] = list(reader)
            for row in rows[name]:
                for cell in row.values():
                    with contextlib.suppress(TypeError, ValueError):
                        found.add(float(cell))
    return rows, found


def test_json_has_every_figure_and_the_csv_every_json_number(
    outputs: Outputs, report: Report
) -> None:
    doc = json.loads(outputs.json)
    assert doc["schema_version"] == 1 and doc["month"] == "2026-10"
    assert doc["sites"][0]["totals"]["kwh"] == report.sites[0].totals.kwh
    assert doc["equipment"]["status"] == report.equipment.status
    rows, found = csv_numbers(outputs.csv_zip)
    assert sorted(rows) == sorted(f"{t}.csv" for t in TABLES)
    wanted = numbers(doc)
    assert len(wanted) > 300
    missing = sorted({n for n in wanted if n not in found})
    assert not missing, f"{len(missing)} numbers of the JSON are in no CSV: {missing[:10]}"
    devices = rows["devices.csv"]
    assert len(devices) == 5 and {"site_id", "kwh", "cost", "rejected"} <= set(devices[0])
    summary = {r["metric"]: r for r in rows["summary.csv"]}
    assert float(summary["totals.kwh"]["value"]) == report.totals.kwh
    assert summary["totals.kwh"]["unit"] == "kWh"
    assert len(rows["daily.csv"]) == 62 and len(rows["work_orders.csv"]) == 1


def test_flatten_and_csv_keep_everything() -> None:
    row = flatten({"a": {"b": 1.5, "c": [1, {"d": None}]}, "e": True, "f": {}}, exclude=["x"])
    assert row == {"a.b": 1.5, "a.c[0]": 1, "a.c[1].d": None, "e": True, "f": None}
    text = csv_text([{"x": 0.1 + 0.2, "y": None}, {"z": "a,b"}])
    assert text.splitlines() == ["x,y,z", "0.30000000000000004,,", ',,"a,b"']


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href", "srcset", "xlink:href", "action", "data", "poster"):
                self.refs.append((tag, name, value or ""))


def test_the_html_page_links_to_nothing_outside_itself(outputs: Outputs, report: Report) -> None:
    html = outputs.html.decode("utf-8")
    parser = Links()
    parser.feed(html)
    assert parser.refs, "the contents at least link to the sections"
    for tag, attr, value in parser.refs:
        if value.startswith("#"):
            assert value[1:] in parser.ids, f"<{tag} {attr}={value!r}>: no such anchor"
        else:
            assert value.startswith("data:"), f"<{tag} {attr}={value!r}> leaves the page"
    assert not {"script", "link", "iframe", "img", "object", "embed"} & parser.tags
    lowered = html.lower()
    assert "http://" not in lowered.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in lowered and "@import" not in lowered and "url(" not in lowered
    assert lowered.count("<svg") >= 6  # the overview's and each site's charts
    for s in report.sites:
        assert f'id="site-{s.site_id}"' in html


def test_names_are_escaped_in_the_page_and_the_charts(report: Report) -> None:
    evil = "<script>alert(1)</script> & Co"
    sites = (dataclasses.replace(report.sites[0], name=evil), *report.sites[1:])
    html = to_html(dataclasses.replace(report, client_name=evil, sites=sites))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html


def test_the_pdf_has_pages_that_show_something(outputs: Outputs) -> None:
    pdf = pypdfium2.PdfDocument(outputs.pdf)
    try:
        pages = len(pdf)
        assert 4 <= pages <= 20, pages
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("page-*.png"):
            old.unlink()
        for i in range(pages):
            image = pdf[i].render(scale=1.0).to_pil()
            pixels = np.asarray(image.convert("L"))
            ink = float((pixels < 200).mean())
            assert ink > 0.01, f"page {i + 1} is blank ({ink:.2%} ink)"
            image.save(ARTIFACTS / f"page-{i + 1:02d}.png")
        text = pdf[0].get_textpage().get_text_range()
        assert "Harbour Hotels" in text and "October 2026" in text
    finally:
        pdf.close()


@pytest.mark.parametrize(
    ("top", "ticks"),
    [(0.0, [0.0, 1.0]), (7.0, [0, 2, 4, 6, 8]), (4463.4, [0, 1000, 2000, 3000, 4000, 5000])],
)
def test_nice_ticks(top: float, ticks: list[float]) -> None:
    assert charts.nice_ticks(top) == ticks


def test_an_empty_chart_says_so() -> None:
    svg = charts.columns([], [], title="Energy", unit="kWh")
    assert svg.startswith("<svg") and "no data" in svg and svg.endswith("</svg>")


def test_tables_name_their_site(report: Report) -> None:
    t = tables(report)
    assert {r["site_id"] for r in t["devices"]} == {s.site_id for s in report.sites}
    assert all("site_id" in r for r in t["sites"])


def test_the_page_lists_flagged_units_first_and_only_outliers_of_big_groups(
    report: Report,
) -> None:
    def unit(i: int, **extra: Any) -> dict[str, Any]:
        return {"device_id": f"d{i}", "name": f"unit-{i}", "kwh": float(i), "starts": {}, **extra}

    units = [unit(i) for i in range(40)]
    units[3]["starts"] = {"short_cycling": True}
    members = [{"device_id": f"d{i}", "name": f"unit-{i}", "outlier": i == 5, "metrics": []}
               for i in range(10)]  # fmt: skip
    kit = EquipmentSection(
        status="ok",
        note="",
        units=tuple(units),
        like_unit_groups=({"comparable": True, "members": members, "asset_type": "fan"},),
        recommendations=({"device_ids": ["d7"], "action": "Fix unit-7."},),
    )
    view = equipment_view(dataclasses.replace(report, equipment=kit))
    assert [u["name"] for u in view["units"][:3]] == ["unit-7", "unit-5", "unit-3"]
    assert [u["name"] for u in view["units"][3:5]] == ["unit-39", "unit-38"]
    assert (len(view["units"]), view["units_hidden"]) == (30, 10)
    (group,) = view["groups"]
    assert [m["name"] for m in group["members"]] == ["unit-5"] and group["hidden"] == 9
    html = to_html(dataclasses.replace(report, equipment=kit))
    assert "10 more unit(s) without a finding" in html and "9 unit(s) within the usual" in html
