"""Model cards: what a model was trained on, how, and how well it did.

Every ``fit`` writes ``card.json`` and ``card.md`` into the model folder; every
``evaluate`` adds its metrics to them (``evaluations``, newest last) besides writing its
own metrics file. The card names the data by hash (:attr:`models.dataset.Dataset.digest`),
so a card says which bytes a number was measured on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import edge_agent.features as features

CARD_JSON = "card.json"
CARD_MD = "card.md"
VERSION = "0.1.0"


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_card(folder: Path, card: dict[str, Any]) -> None:
    card = {
        "edgewatch_models": VERSION,
        "feature_set_version": features.FEATURE_SET_VERSION,
        **card,
    }
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, default=str) + "\n", "utf-8")
    (folder / CARD_MD).write_text(render_markdown(card), encoding="utf-8")


def read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD_JSON
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


CARD_LEAVES_OUT = ("per_file",)
"""Detail an evaluation's metrics file keeps and the card does not: the card is package
data and gains an entry per evaluation (per file, 66 KB of the shipped models' 69 KB)."""


def add_evaluation(folder: Path, evaluation: dict[str, Any]) -> None:
    """Append ``evaluation`` to the card in ``folder``, less :data:`CARD_LEAVES_OUT`."""
    metrics = {
        task: (
            {k: v for k, v in m.items() if k not in CARD_LEAVES_OUT} if isinstance(m, dict) else m
        )
        for task, m in evaluation.get("metrics", {}).items()
    }
    card = read_card(folder)
    card.setdefault("evaluations", []).append({**evaluation, "metrics": metrics})
    card.pop("edgewatch_models", None)
    card.pop("feature_set_version", None)
    write_card(folder, card)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def render_markdown(card: dict[str, Any]) -> str:
    ds = card.get("dataset", {})
    lines = [f"# Model card: {card.get('task', '?')} models of {ds.get('name')}", ""]
    lines += [
        f"- created: {card.get('created')}",
        f"- edgewatch-models {card.get('edgewatch_models')}, "
        f"feature set {card.get('feature_set_version')}",
    ]
    lines += [
        f"- data: `{ds.get('folder')}` sha256 `{ds.get('sha256')}`, {ds.get('recordings')} "
        f"recordings, {ds.get('rows')} rows",
        f"- split: {ds.get('split')}",
        f"- settings: {card.get('settings')}",
        "",
    ]
    for m in card.get("models", []):
        lines += [
            f"## {m['asset_type']}: {m['model_id']} v{m['version']}",
            "",
            f"- kind {m['kind']}, baseline {m['baseline']}, window {m['window_rows']} rows "
            f"(~{_fmt(m['window_s'])} s), threshold {_fmt(m['threshold'])} at target "
            f"false-alarm rate {_fmt(m['target_far'])}",
            f"- trained on {m['assets']} assets; {len(m['features'])} features:",
            "",
            *[f"  - `{f}`" for f in m["features"]],
            "",
        ]
        if m.get("screened"):
            lines += ["Screened out:", ""]
            lines += [f"- `{k}`: {v}" for k, v in m["screened"].items()]
            lines.append("")
    for ev in card.get("evaluations", []):
        part = f"{ev.get('part')} rows, {ev.get('reference', 'training')} reference"
        if ev.get("risk_thresholds"):
            part += ", risk thresholds " + ", ".join(
                f"{k} {v:g}" for k, v in sorted(ev["risk_thresholds"].items())
            )
        lines += [f"## Evaluation {ev.get('at')} on `{ev.get('dataset')}` ({part})", ""]
        for section, values in ev.get("metrics", {}).items():
            lines.append(f"### {section}")
            lines.append("")
            for k, v in values.items():
                if not isinstance(v, dict):
                    lines.append(f"- {k}: {_fmt(v)}")
            for ftype, v in (values.get("per_fault_type") or {}).items():
                lines.append(f"- {ftype}: " + ", ".join(f"{a} {_fmt(b)}" for a, b in v.items()))
            lines.append("")
        lines.append("")
    return "\n".join(lines) + "\n"
