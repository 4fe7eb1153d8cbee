"""``edgewatch-models``: fit, score and evaluate EdgeWatch's models on any dataset.

    edgewatch-models fit --task anomaly --dataset DIR --out MODEL_DIR
    edgewatch-models score --model MODEL_DIR --dataset DIR --out scores.csv
    edgewatch-models evaluate --model MODEL_DIR --dataset DIR --out metrics.json
    edgewatch-models sign --model MODEL_DIR --key KEY.pem

A dataset is a folder with ``dataset.yaml`` (see :mod:`models.dataset`). ``fit`` writes one
model folder per asset type plus the model card; ``score`` writes one row per input row
(file, timestamp, asset, score, decision, top_signal), causally; ``evaluate`` scores the
test part of the split and writes the metrics (and adds them to the model card).

Logging goes to stderr (``-v`` INFO). Exit codes: 0 done, 2 bad arguments or a bad
dataset/model (the message names the file, where and why), 3 the data cannot give a model.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ConfigError
from models import REFERENCES
from models.errors import ArtifactError, ModelsError, TrainingError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from models.dataset import Dataset, Recording
    from models.export import LoadedDetector
    from models.pipeline import RiskReport

PROG = "edgewatch-models"
log = logging.getLogger("models.cli")


def _duration_h(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 72h or 3d")
    value = float(m.group(1))
    return value * 24 if m.group(2) == "d" else value


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _type_threshold(text: str) -> tuple[str, float]:
    """``TYPE=P`` (``compressor=0.95``): an asset type's alert threshold, 0 < P < 1."""
    kind, sep, value = text.partition("=")
    if not sep or not kind:
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE=P (e.g. compressor=0.95)")
    try:
        return kind, _rate(value)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: the threshold {exc}") from None


def _type_thresholds(text: str) -> tuple[float, ...]:
    """``P,P,...`` (``0.9,0.95,0.97``): alert thresholds, each 0 < P < 1."""
    out = []
    for item in text.split(","):
        try:
            out.append(_rate(item.strip()))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: the threshold {exc}") from None
    return tuple(out)


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train models from a dataset")
    fit.add_argument("--task", choices=("anomaly", "risk"), required=True)
    fit.add_argument("--dataset", type=Path, required=True)
    fit.add_argument("--out", type=Path, required=True, help="model folder to write")
    fit.add_argument("--horizon", type=_duration_h, default=72.0, help="risk: e.g. 72h")
    fit.add_argument(
        "--alert-horizon",
        type=_duration_h,
        default=None,
        help="risk: alerts are raised on P(failure within this), e.g. 336h; default: the one "
        "of --horizon, 168h and 336h that warns the most training failures --horizon ahead "
        "at the target precision",
    )
    fit.add_argument("--window-rows", type=_positive_int, default=24)
    fit.add_argument("--hop-rows", type=_positive_int, default=None)
    fit.add_argument("--kind", choices=("spe", "pca", "zscore"), default="spe")
    fit.add_argument("--baseline", choices=("asset", "fleet"), default="asset")
    fit.add_argument("--target-far", type=_rate, default=0.01)
    fit.add_argument(
        "--operating-features",
        action="store_true",
        help="also offer each signal's features over the rows where the machine runs (the "
        "dataset's operating condition) as candidates: twice the candidates, about 2.3 times "
        "the time and twice the memory to fit",
    )
    fit.add_argument(
        "--reference",
        choices=REFERENCES,
        default="training",
        help="risk: the windows each asset is standardised against: its healthy training windows "
        "(training), its first 14 days (first), the cloud scorer's rolling baseline "
        "(rolling), or that baseline started again at each maintenance event (deployed)",
    )
    fit.add_argument("--version", type=_positive_int, default=1)
    fit.add_argument(
        "--all-rows",
        action="store_true",
        help="train on every row, ignoring the dataset's split (a dataset kept for training)",
    )
    fit.add_argument("--key", type=Path, help="Ed25519 private key (PEM) to sign manifests")
    fit.add_argument("--no-progress", action="store_true")

    score = sub.add_parser("score", help="score every row of a dataset")
    score.add_argument("--model", type=Path, required=True)
    score.add_argument("--dataset", type=Path, required=True)
    score.add_argument("--out", type=Path, required=True)
    score.add_argument("--no-progress", action="store_true")

    sign = sub.add_parser("sign", help="sign every manifest of a model folder (Ed25519)")
    sign.add_argument("--model", type=Path, required=True)
    sign.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")

    ev = sub.add_parser("evaluate", help="metrics on the test part of a dataset")
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--dataset", type=Path, required=True)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument(
        "--reference",
        choices=REFERENCES,
        default="training",
        help="the windows each asset is standardised against (see fit --reference); "
        "deployed: as the cloud would score it",
    )
    ev.add_argument(
        "--all-rows",
        action="store_true",
        help="evaluate every row, ignoring the dataset's split (a fleet the model never saw, "
        "from each unit's first day); needs a --reference other than training",
    )
    ev.add_argument(
        "--risk-threshold",
        type=_type_threshold,
        action="append",
        default=[],
        metavar="TYPE=P",
        help="alert on P(alert) over P for that asset type instead of its model's threshold "
        "(what the cloud's EDGEWATCH_CLOUD_RISK_THRESHOLDS would make of the fleet); "
        "repeatable",
    )
    ev.add_argument(
        "--risk-sweep",
        nargs="?",
        const=(),
        type=_type_thresholds,
        metavar="P,P,...",
        help="also, per asset type, the alerts of each threshold (default: 0.80 to 0.999) "
        "on the same risk: warned >= 72 h ahead, precision@72h and false alerts, and the "
        "threshold to ship (the most failures warned ahead at precision >= 0.9 and <= 1 "
        "false alert per 100 asset-months); in --out, not in the model card",
    )
    ev.add_argument("--no-progress", action="store_true")
    return p


class _Files:
    """A progress bar over a dataset's files, advanced as recordings of new files arrive."""

    def __init__(self, total: int, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="file", disable=disable, file=sys.stderr)
        self.last = ""

    def __call__(self, rec: Any) -> None:
        if rec.file != self.last:
            self.last = rec.file
            self.bar.update(1)

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def cmd_fit(args: argparse.Namespace) -> int:
    from models.card import now_iso, write_card
    from models.dataset import Dataset
    from models.export import load_private_key, write_detector
    from models.pipeline import fit_anomaly

    alert_h = args.alert_horizon if args.task == "risk" else None
    if alert_h is not None and alert_h < args.horizon:
        raise TrainingError(
            f"--alert-horizon {alert_h:g}h is shorter than --horizon {args.horizon:g}h: "
            "alerts would come after the risk they warn of is shown"
        )
    key = load_private_key(args.key) if args.key else None
    ds = Dataset(args.dataset, rows="train" if args.all_rows else "split")
    with _Files(len(ds.files), args.no_progress) as bar:
        result = fit_anomaly(
            ds,
            window_rows=args.window_rows,
            hop_rows=args.hop_rows,
            kind=args.kind,
            baseline=args.baseline,
            target_far=args.target_far,
            operating_features=args.operating_features,
            progress=bar,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    models = []
    for det in result.detectors:
        folder = write_detector(det, args.out, result.windows, version=args.version, key=key)
        manifest = json.loads((folder / "manifest.json").read_text())
        models.append(
            {
                "asset_type": det.asset_type,
                "folder": folder.name,
                "model_id": manifest["model_id"],
                "version": manifest["version"],
                "kind": det.kind,
                "baseline": det.baseline_mode,
                "window_rows": result.windows.size,
                "hop_rows": result.windows.hop,
                "window_s": result.windows.window_s,
                "threshold": det.threshold,
                "target_far": det.target_far,
                "assets": result.assets[det.asset_type],
                "features": det.feature_names,
                "screened": result.screened.get(det.asset_type, {}),
                "selection": result.selection.get(det.asset_type, {}),
                "fit": det.info,
                "signed": key is not None,
            }
        )
        print(
            f"{det.asset_type}: {manifest['model_id']} v{manifest['version']}, "
            f"{len(det.feature_names)} features, threshold {det.threshold:.4g} -> {folder}"
        )
    risk_models = {}
    if args.task == "risk":
        from models.export import load_detectors
        from models.pipeline import fit_risk_models
        from models.risk import write_risk

        detectors = load_detectors(args.out)
        with _Files(len(ds.files), args.no_progress) as bar:
            risk_models = fit_risk_models(
                ds,
                detectors,
                args.horizon,
                progress=bar,
                alert_horizon_h=alert_h,
                baseline=args.reference,
            )
        for asset_type, rm in risk_models.items():
            where = write_risk(rm, detectors[asset_type].folder)
            info = rm.info
            print(
                f"{asset_type}: risk within {rm.horizon_h:g} h, alerts on risk within "
                f"{rm.alert_horizon_h:g} h over {rm.threshold:.3g} "
                f"(training: precision {info['train_precision']:.2f}, recall "
                f"{info['train_recall']:.2f}), fault types {rm.fault_types} -> {where}"
            )
            for m in models:
                if m["asset_type"] == asset_type:
                    m["risk"] = {
                        "horizon_h": rm.horizon_h,
                        "alert_horizon_h": rm.alert_horizon_h,
                        "threshold": rm.threshold,
                        "fault_types": rm.fault_types,
                        "features": rm.feature_names,
                        "fit": rm.info,
                    }
    write_card(
        args.out,
        {
            "task": args.task,
            "created": now_iso(),
            "dataset": _dataset_info(ds, result.recordings, result.rows),
            "settings": {
                "all_rows": args.all_rows,
                "window_rows": args.window_rows,
                "hop_rows": result.windows.hop,
                "kind": args.kind,
                "baseline": args.baseline,
                "target_far": args.target_far,
                "operating_features": args.operating_features,
                **(
                    {
                        "horizon_h": args.horizon,
                        "alert_horizon_h": alert_h or "auto",
                        "reference": args.reference,
                    }
                    if args.task == "risk"
                    else {}
                ),
            },
            "models": models,
        },
    )
    for r in ds.reports:
        for problem in r.problems():
            print(f"note: {problem}", file=sys.stderr)
    return 0


def _dataset_info(ds: Any, recordings: int, rows: int) -> dict[str, Any]:
    return {
        "name": ds.name,
        "folder": str(ds.folder),
        "sha256": ds.digest,
        "recordings": recordings,
        "rows": rows,
        "split": ds.spec.split.model_dump(mode="json", exclude_none=True),
    }


def _running(ds: Dataset, rec: Recording) -> npt.NDArray[np.bool_] | None:
    """Which of the recording's rows its machine ran in (the dataset's operating
    condition held); None when the dataset does not say for its asset type."""
    import numpy as np

    from edge_agent.features import signal_samples

    op = ds.spec.operating_for(rec.asset_type)
    if op is None:
        return None
    x = signal_samples(op, rec.columns)
    return None if x is None else np.nan_to_num(x, nan=0.0) != 0


def _model_columns(detectors: Iterable[LoadedDetector]) -> list[str]:
    """The raw columns the detectors' features read (a run state that gates them too)."""
    from models.featurize import needed_signals

    return needed_signals([n for d in detectors for n in d.manifest.feature_names])


def cmd_score(args: argparse.Namespace) -> int:
    from models.dataset import Dataset
    from models.export import load_detectors
    from models.pipeline import score_recordings

    detectors = load_detectors(args.model)
    ds = Dataset(args.dataset, context=_model_columns(detectors.values()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with (
        args.out.open("w", newline="", encoding="utf-8") as f,
        _Files(len(ds.files), args.no_progress) as bar,
    ):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "timestamp", "asset", "score", "decision", "top_signal"])
        for rs in score_recordings(ds, detectors, progress=bar):
            rec = rs.rec
            for i in range(rec.rows):
                ts = datetime.fromtimestamp(float(rec.t[i]), UTC).isoformat().replace("+00:00", "Z")
                s = rs.score[i]
                w.writerow(
                    [
                        rec.file,
                        ts,
                        rec.asset_id,
                        "" if s != s else f"{s:.6g}",
                        int(rs.decision[i]),
                        rs.top_signal[i],
                    ]
                )
            rows += rec.rows
    print(f"{rows} rows scored -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.card import add_evaluation, now_iso
    from models.dataset import Dataset
    from models.export import load_detectors
    from models.metrics import AnomalyReport
    from models.pipeline import RiskReport, risk_table, score_recording, score_windows
    from models.risk import SWEEP_THRESHOLDS, load_risk

    if args.all_rows and args.reference == "training":
        raise ArtifactError(
            "evaluate --all-rows leaves no training rows to standardise against; "
            "give --reference first, rolling or deployed"
        )
    detectors = load_detectors(args.model)
    risks = {a: load_risk(d.folder) for a, d in detectors.items()}
    thresholds = dict(args.risk_threshold)
    for kind, p in thresholds.items():
        loaded = risks.get(kind)
        if loaded is None:
            have = sorted(a for a, r in risks.items() if r is not None)
            raise ArtifactError(
                f"--risk-threshold {kind}={p:g}: {args.model} has no risk model for {kind!r} "
                f"(it has: {', '.join(have) or 'none'})"
            )
        risks[kind] = replace(loaded, meta={**loaded.meta, "threshold": p})
    ds = Dataset(
        args.dataset,
        rows="test" if args.all_rows else "split",
        context=_model_columns(detectors.values()),
    )
    has_risk = any(r is not None for r in risks.values())
    judge_risk = has_risk and bool(ds.spec.failures)
    if args.risk_sweep is not None and not judge_risk:
        raise ArtifactError(
            f"--risk-sweep needs a risk model in {args.model} and failures (failures: FILE) "
            f"in {args.dataset}"
        )
    if ds.spec.labels is None and not judge_risk:
        raise ArtifactError(
            f"{args.dataset}: nothing to evaluate against: the dataset has no per-row labels "
            "(labels: {anomaly: COLUMN}) for anomaly models"
            + ("" if not has_risk else " and no failures (failures: FILE) for risk models")
        )
    report = AnomalyReport()
    risk_report = RiskReport()
    with _Files(len(ds.files), args.no_progress) as bar:
        for rec in ds.recordings():
            det = detectors.get(rec.asset_type)
            if det is None:
                raise ArtifactError(
                    f"{rec.file}: no model for asset type {rec.asset_type!r} in {args.model}"
                )
            sw = score_windows(ds, rec, det, args.reference)  # once, for both evaluations
            if rec.label is not None:
                rs = score_recording(ds, rec, det, sw)
                test = ~rec.train
                running = _running(ds, rec)
                report.add(
                    f"{rec.file}#{rec.asset_id}" if ds.spec.asset else rec.file,
                    rec.t[test],
                    rec.label[test],
                    rs.decision[test],
                    [(f.time, f.fault_type) for f in ds.failures_of(rec.asset_id)],
                    None if running is None else running[test],
                )
            rm = risks.get(rec.asset_type)
            if rm is not None and ds.spec.failures:
                risk_report.add(risk_table(ds, rec, det, sw), rm)
            bar(rec)
    metrics: dict[str, Any] = {}
    if ds.spec.labels is not None:
        metrics["anomaly"] = report.summary()
    if judge_risk:
        metrics["risk"] = risk_report.summary()
    doc = {
        "at": now_iso(),
        "model": str(args.model),
        "dataset": ds.name,
        "dataset_sha256": ds.digest,
        "part": "all" if args.all_rows else "test",
        "reference": args.reference,
        **({"risk_thresholds": thresholds} if thresholds else {}),
        "metrics": metrics,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.risk_sweep is not None:
        doc["risk_sweep"] = _risk_sweep(risk_report, args.risk_sweep or SWEEP_THRESHOLDS)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    add_evaluation(args.model, {k: v for k, v in doc.items() if k not in ("model", "risk_sweep")})
    if "anomaly" in metrics:
        c = report.confusion.summary()
        print(
            f"anomaly: TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}  F1 {_f(c['f1'])}  "
            f"false-alarm rate {_f(c['false_alarm_rate'])}  missed {_f(c['missed_alarm_rate'])}"
        )
        if report.running is not None:
            c = report.running.summary()
            print(
                f"anomaly, rows where the machine ran: TP {c['tp']} FP {c['fp']} TN {c['tn']} "
                f"FN {c['fn']}  F1 {_f(c['f1'])}  false-alarm rate {_f(c['false_alarm_rate'])}"
            )
    if "risk" in metrics:
        r = metrics["risk"]
        print(
            f"risk: {r['failures']} failures, {r['alerts']} alerts; recall@24h "
            f"{_f(r['recall@24h'])} @72h {_f(r['recall@72h'])}, warned >= 72 h ahead "
            f"{_f(r['ahead@72h'])}, precision@72h "
            f"{_f(r['precision@72h'])}, median lead {_f(r['median_lead_h@72h'])} h, false "
            f"alerts/100 asset-months {_f(r['false_alerts_per_100_asset_months@72h'])}, "
            f"PR-AUC {_f(r.get('pr_auc_asset_windows'))}, fault type right at the alert "
            f"{_f(r.get('fault_type_accuracy_at_alert'))}"
        )
    print(f"-> {args.out}")
    return 0


def _risk_sweep(report: RiskReport, thresholds: Sequence[float]) -> dict[str, Any]:
    """:meth:`models.pipeline.RiskReport.sweep` with the suggested thresholds, printed as a
    table per asset type."""
    from models.risk import MAX_FALSE_ALERTS, TARGET_PRECISION, suggest_threshold

    per_type = report.sweep(thresholds)
    suggested = {a: suggest_threshold(rows) for a, rows in per_type.items()}
    for asset_type, rows in per_type.items():
        print(
            f"risk sweep, {asset_type}: threshold, alerts, warned >= 72 h ahead, "
            "precision@72h, false alerts/100 asset-months"
        )
        for r in rows:
            mark = "  <- suggested" if r["threshold"] == suggested[asset_type] else ""
            print(
                f"  {r['threshold']:.3f}  {r['alerts']:5d}  {_f(r['ahead@72h'])}  "
                f"{_f(r['precision@72h'])}  "
                f"{_f(r['false_alerts_per_100_asset_months@72h'])}{mark}"
            )
        if suggested[asset_type] is None:
            print(
                f"  none reaches precision {TARGET_PRECISION:g} with at most "
                f"{MAX_FALSE_ALERTS:g} false alert per 100 asset-months"
            )
    return {
        "rule": (
            f"of the thresholds with precision@72h >= {TARGET_PRECISION:g} and at most "
            f"{MAX_FALSE_ALERTS:g} false alerts per 100 asset-months, the most failures "
            "warned >= 72 h ahead, then the fewest false alerts, then the lowest"
        ),
        "suggested": suggested,
        "per_asset_type": per_type,
    }


def cmd_sign(args: argparse.Namespace) -> int:
    from models.export import load_private_key, sign_folder

    for manifest, key_id in sign_folder(args.model, load_private_key(args.key)):
        print(f"{manifest}: signed with key {key_id}")
    return 0


def _f(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "—"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    commands = {"fit": cmd_fit, "score": cmd_score, "evaluate": cmd_evaluate, "sign": cmd_sign}
    try:
        return commands[args.command](args)
    except TrainingError as exc:
        print(f"{PROG}: cannot fit: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, ModelsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
