"""Charts as inline SVG, drawn on the server: no JavaScript, no external asset.

Each function returns one ``<svg>`` element as text (labels escaped) with a ``viewBox``,
so the same markup scales in a browser and in WeasyPrint's PDF. Colours are the
Okabe-Ito palette (distinguishable with the common colour-vision deficiencies); every
chart has a ``<title>`` and a ``<desc>`` for screen readers, and the report prints the
figures of every chart in a table as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

PALETTE: Final = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#999999",
)
OTHER: Final = "#BBBBBB"
TEXT: Final = "#333333"
GRID: Final = "#DDDDDD"
FONT: Final = 'font-family="DejaVu Sans, Verdana, sans-serif"'
WIDTH: Final = 720
TITLE_H: Final = 24
"""Height of the title line above every chart."""
CLOSE: Final = "</g></svg>"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]
    colour: str = PALETTE[0]
    dashed: bool = False


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round axis ticks from 0 to at least ``top`` (steps of 1, 2 or 5 × 10^k)."""
    if not math.isfinite(top) or top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def short(value: float) -> str:
    """``12500`` → ``12.5k``: tick labels."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:g}M"
    if size >= 1e3:
        return f"{value / 1e3:g}k"
    if size >= 1 or size == 0:
        return f"{value:g}"
    return f"{value:.2g}"


def _open(height: float, title: str, desc: str) -> list[str]:
    """The ``<svg>`` start with the title drawn above the chart (:data:`TITLE_H`); close
    with :data:`CLOSE`."""
    total = height + TITLE_H
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {total:.0f}" width="{WIDTH}" height="{total:.0f}" {FONT} '
        f'font-size="11">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
        _text(0, 14, title, size=13, weight="bold"),
        f'<g transform="translate(0 {TITLE_H})">',
    ]


def _text(
    x: float,
    y: float,
    text: str,
    anchor: str = "start",
    size: int = 11,
    weight: str = "normal",
    fill: str = TEXT,
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'font-weight="{weight}" fill="{fill}">{escape(text)}</text>'
    )


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for name, fill in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{fill}"/>')
        out.append(_text(x + 14, y, name))
        x += 24 + 6.5 * len(name)
    return out


def _empty(title: str, message: str) -> str:
    parts = _open(60, title, message)
    parts.append(_text(WIDTH / 2, 34, message, anchor="middle", fill="#777777"))
    parts.append(CLOSE)
    return "".join(parts)


def columns(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str,
    height: int = 240,
    every: int | None = None,
) -> str:
    """Vertical bars, stacked when there are several series (one value per label each;
    None counts as 0). ``every``: label every n-th bar (default: about 16 labels)."""
    if not labels or not series:
        return _empty(title, "no data")
    totals = [sum(float(s.values[i] or 0.0) for s in series) for i in range(len(labels))]
    ticks = nice_ticks(max(totals, default=0.0))
    top = ticks[-1]
    legend = len(series) > 1
    left, right, upper, lower = 56.0, 12.0, 30.0 if legend else 12.0, 34.0
    plot_w, plot_h = WIDTH - left - right, height - upper - lower
    slot = plot_w / len(labels)
    bar = max(slot * 0.78, 1.0)
    every = every or max(1, math.ceil(len(labels) / 16))
    desc = f"{title}: " + "; ".join(
        f"{lab} {short(v)} {unit}" for lab, v in zip(labels, totals, strict=True)
    )
    parts = _open(height, title, desc[:2000])
    for t in ticks:
        y = upper + plot_h * (1 - t / top)
        parts.append(
            f'<line x1="{left:.1f}" x2="{WIDTH - right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(_text(left - 6, y + 4, short(t), anchor="end"))
    parts.append(_text(4, upper - 4 if legend else 10, unit, size=10, fill="#666666"))
    for i, lab in enumerate(labels):
        x = left + i * slot + (slot - bar) / 2
        base = upper + plot_h
        for s in series:
            v = float(s.values[i] or 0.0)
            if v <= 0:
                continue
            h = plot_h * v / top
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{s.colour}"><title>{escape(lab)} {escape(s.name)}: '
                f"{v:,.1f} {escape(unit)}</title></rect>"
            )
        if i % every == 0:
            parts.append(_text(x + bar / 2, height - lower + 14, lab, anchor="middle", size=10))
    if legend:
        parts += _legend([(s.name, s.colour) for s in series], left, 14)
    parts.append(CLOSE)
    return "".join(parts)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    unit: str,
    notes: Sequence[str] | None = None,
    colours: Sequence[str] | None = None,
) -> str:
    """Horizontal bars, one per label, largest first as given; ``notes`` are printed at the
    bars' ends (default: the value and unit)."""
    if not labels:
        return _empty(title, "no data")
    row = 22.0
    left = min(260.0, 24.0 + 6.4 * max(len(lab) for lab in labels))
    right = 150.0
    height = 16 + row * len(labels) + 8
    top = max(max(values, default=0.0), 1e-12)
    plot_w = WIDTH - left - right
    desc = f"{title}: " + "; ".join(
        f"{lab} {v:,.1f} {unit}" for lab, v in zip(labels, values, strict=True)
    )
    parts = _open(height, title, desc[:2000])
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = 12 + i * row
        w = max(plot_w * max(v, 0.0) / top, 0.5)
        fill = colours[i] if colours is not None else PALETTE[0]
        parts.append(
            _text(left - 8, y + 13, lab if len(lab) <= 40 else lab[:39] + "…", anchor="end")
        )
        parts.append(
            f'<rect x="{left:.1f}" y="{y + 2:.1f}" width="{w:.1f}" height="{row - 6:.1f}" '
            f'fill="{fill}"><title>{escape(lab)}: {v:,.1f} {escape(unit)}</title></rect>'
        )
        note = notes[i] if notes is not None else f"{v:,.0f} {unit}"
        parts.append(_text(left + w + 6, y + 13, note))
    parts.append(CLOSE)
    return "".join(parts)


def stacked_bars(
    labels: Sequence[str],
    segments: Sequence[Series],
    *,
    title: str,
    unit: str,
) -> str:
    """Horizontal stacked bars: one bar per label, one segment per series (e.g. cost by
    tariff period per site), with a legend."""
    if not labels or not segments:
        return _empty(title, "no data")
    row = 24.0
    left = min(260.0, 24.0 + 6.4 * max(len(lab) for lab in labels))
    right = 110.0
    totals = [sum(float(s.values[i] or 0.0) for s in segments) for i in range(len(labels))]
    top = max(max(totals, default=0.0), 1e-12)
    height = 34 + row * len(labels) + 6
    plot_w = WIDTH - left - right
    desc = f"{title}: " + "; ".join(
        f"{lab}: " + ", ".join(f"{s.name} {float(s.values[i] or 0):,.1f}" for s in segments)
        for i, lab in enumerate(labels)
    )
    parts = _open(height, title, desc[:2000])
    parts += _legend([(s.name, s.colour) for s in segments], left, 14)
    for i, lab in enumerate(labels):
        y = 28 + i * row
        x = left
        parts.append(
            _text(left - 8, y + 14, lab if len(lab) <= 40 else lab[:39] + "…", anchor="end")
        )
        for s in segments:
            v = float(s.values[i] or 0.0)
            if v <= 0:
                continue
            w = plot_w * v / top
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 2:.1f}" width="{w:.1f}" height="{row - 6:.1f}" '
                f'fill="{s.colour}"><title>{escape(lab)} {escape(s.name)}: {v:,.2f} '
                f"{escape(unit)}</title></rect>"
            )
            x += w
        parts.append(_text(x + 6, y + 14, f"{totals[i]:,.0f} {unit}"))
    parts.append(CLOSE)
    return "".join(parts)


def lines(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str,
    height: int = 220,
) -> str:
    """Lines over the labels (gaps where a value is None), with dots and a legend."""
    finite = [float(v) for s in series for v in s.values if v is not None and math.isfinite(v)]
    if not labels or not finite:
        return _empty(title, "no data")
    ticks = nice_ticks(max(finite))
    top = ticks[-1]
    left, right, upper, lower = 56.0, 12.0, 30.0, 34.0
    plot_w, plot_h = WIDTH - left - right, height - upper - lower
    step = plot_w / max(len(labels) - 1, 1)
    every = max(1, math.ceil(len(labels) / 16))
    parts = _open(height, title, f"{title} ({unit})")
    for t in ticks:
        y = upper + plot_h * (1 - t / top)
        parts.append(
            f'<line x1="{left:.1f}" x2="{WIDTH - right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(_text(left - 6, y + 4, short(t), anchor="end"))
    parts.append(_text(4, upper - 4, unit, size=10, fill="#666666"))
    for i, lab in enumerate(labels):
        if i % every == 0:
            parts.append(_text(left + i * step, height - lower + 14, lab, anchor="middle", size=10))
    for s in series:
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None or not math.isfinite(v):
                runs.append([])
                continue
            runs[-1].append((left + i * step, upper + plot_h * (1 - float(v) / top)))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for run in runs:
            if len(run) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(
                    f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="2"{dash}/>'
                )
            for x, y in run:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{s.colour}"/>')
    parts += _legend([(s.name, s.colour) for s in series], left, 14)
    parts.append(CLOSE)
    return "".join(parts)
