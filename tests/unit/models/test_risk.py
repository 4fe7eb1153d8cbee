"""Failure risk: the labelling and windowing helpers, and fit → evaluate on a small fleet
whose failures announce themselves days ahead."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from support.models import run_models

from models import risk
from models.cli import main
from models.errors import ArtifactError

H = 3600.0
DAY = 86400.0


def test_time_to_failure_and_down_periods() -> None:
    t = np.array([0.0, 10, 20, 30, 40, 50])
    assert risk.time_to_failure(t, [25.0, 45.0]).tolist() == [25, 15, 5, 15, 5, np.inf]
    # down from a failure to its repair; without a repair, for DOWN_AFTER_FAILURE_S
    assert risk.down_mask(t, [25.0], [35.0]).tolist() == [0, 0, 0, 1, 0, 0]
    assert risk.down_mask(t, [25.0], []).tolist() == [0, 0, 0, 1, 1, 1]


def test_trailing_statistics_are_causal() -> None:
    t = np.arange(10) * H
    v = np.arange(10, dtype=float)[:, None]
    m = risk._trailing_mean(t, v, 3 * H)[:, 0]
    assert m.tolist() == [0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8]  # rows in (t - 3 h, t]
    slope = risk._trailing_slope_per_day(t, 2 * np.arange(10.0), 5 * H)
    assert slope[:2].tolist() == [0, 0]  # fewer than 3 points: no trend
    assert slope[5] == pytest.approx(48.0)  # 2 per hour


def test_alerts_have_hysteresis_and_none_while_down() -> None:
    t = np.arange(12) * 12 * H
    p = np.array([0.1, 0.9, 0.7, 0.9, 0.3, 0.3, 0.3, 0.9, 0.9, 0.9, 0.9, 0.1])
    # 0.7 and a single 12-h dip below 0.48 do not clear it; 24 h below does
    assert [a for a, _ in risk.alert_episodes(t, p, 0.8)] == [1 * 12 * H, 7 * 12 * H]
    # each stands until cleared: the first after two rows below (24 h), the second to the
    # end of the recording
    assert risk.alert_episodes(t, p, 0.8) == [(1 * 12 * H, 6 * 12 * H), (7 * 12 * H, 11 * 12 * H)]
    down = np.zeros(12, bool)
    down[7:9] = True  # the asset failed: no alert until it is back, and 72 h after
    assert [a for a, _ in risk.alert_episodes(t, p, 0.8, down)] == [1 * 12 * H]
    # an alert standing when the asset goes down ends there; back at row 5, quiet to row 10
    down = np.zeros(12, bool)
    down[3:5] = True
    assert risk.alert_episodes(t, p, 0.8, down) == [
        (1 * 12 * H, 3 * 12 * H),
        (10 * 12 * H, 11 * 12 * H),
    ]


def _fleet(folder: Path, seed: int, assets: int = 6, days: int = 60) -> Path:
    """Pumps sampled hourly; every other pump fails (bearing) on day 25 and day 50 of its
    life after its vibration has grown for 5 days; repaired 12 h later."""
    rng = np.random.default_rng(seed)
    (folder / "data").mkdir(parents=True)
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    fails, events = [], []
    for a in range(assets):
        t = start + np.arange(days * 24) * H
        vib = 2 + rng.normal(0, 0.1, t.size)
        temp = 40 + 2 * np.sin(2 * np.pi * np.arange(t.size) / 24) + rng.normal(0, 0.2, t.size)
        if a % 2 == 0:
            for d in (25 + a % 3, 50 + a % 3):
                f = start + d * DAY
                before = (t > f - 5 * DAY) & (t <= f)
                vib[before] += 3 * ((t[before] - (f - 5 * DAY)) / (5 * DAY)) ** 2
                down = (t > f) & (t < f + 12 * H)
                vib[down] = 0.0
                fails.append((f"p{a}", f, "bearing_wear"))
                events.append((f"p{a}", f + 12 * H, "maintenance", "repair"))
        with (folder / "data" / f"p{a}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["time", "asset_id", "vibration", "temperature"])
            for k in range(t.size):
                iso = datetime.fromtimestamp(t[k], UTC).isoformat()
                w.writerow([iso, f"p{a}", f"{vib[k]:.4f}", f"{temp[k]:.3f}"])
    iso = lambda x: datetime.fromtimestamp(x, UTC).isoformat()  # noqa: E731
    with (folder / "failures.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["asset_id", "timestamp", "fault_type"])
        w.writerows((a, iso(f), k) for a, f, k in fails)
    with (folder / "events.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["asset_id", "timestamp", "kind", "code"])
        w.writerows((a, iso(f), k, c) for a, f, k, c in events)
    (folder / "dataset.yaml").write_text(
        "name: pumps\nfiles: ['data/*.csv']\ntimestamp: {column: time}\n"
        "asset: {column: asset_id}\nasset_type: {value: pump}\n"
        "split: {train_until: '2026-02-10T00:00:00Z'}\n"
        "failures: failures.csv\nevents: events.csv\n"
    )
    return folder


def test_fit_and_evaluate_a_risk_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = _fleet(tmp_path / "train", seed=1)
    test = _fleet(tmp_path / "test", seed=2)
    out = tmp_path / "model"
    args = ["--window-rows", "6", "--hop-rows", "1", "--horizon", "72h", "--no-progress"]
    assert main(["fit", "--task", "risk", "--dataset", str(train), "--out", str(out), *args]) == 0
    meta = json.loads((out / "pump" / "risk" / "risk.json").read_text())
    assert meta["fault_types"] == ["bearing_wear"] and meta["horizon_h"] == 72
    # the alert horizon: of those tried, one that reached the target precision on the
    # training part and warned the most failures 72 h ahead
    tried = meta["info"]["alert_horizons"]
    assert set(tried) == {"72", "168", "336"}
    precise = {h: f for h, f in tried.items() if f["train_precision"] >= risk.TARGET_PRECISION}
    assert f"{meta['alert_horizon_h']:g}" in precise
    chosen = precise[f"{meta['alert_horizon_h']:g}"]
    assert chosen["train_ahead"] == max(f["train_ahead"] for f in precise.values())
    assert meta["threshold"] == chosen["threshold"]
    # the exported graph runs in onnxruntime with the documented outputs
    sess = ort.InferenceSession(
        (out / "pump" / "risk" / "risk.onnx").read_bytes(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in sess.get_outputs()]
    assert names == ["p24", "p_horizon", "p_alert", "fault_probs", "contributions"]
    x = np.zeros((2, len(meta["feature_names"])), np.float32)
    p24, ph, pa, fp, contrib = sess.run(None, {"features": x})
    assert p24.shape == ph.shape == pa.shape == (2,)
    assert fp.shape == (2, 1) and contrib.shape == x.shape

    metrics = tmp_path / "m.json"
    run_models("evaluate", "--model", str(out), "--dataset", str(test), "--out", str(metrics))
    r = json.loads(metrics.read_text())["metrics"]["risk"]
    assert "anomaly" not in json.loads(metrics.read_text())["metrics"]  # no labels
    assert r["failures"] == 3  # the day-50(+) failures of pumps 0, 2, 4 are in the test part
    assert r["recall@72h"] == 1.0
    assert r["precision@72h"] >= 0.75
    # the vibration grows for 5 days before each failure: warned 3 days ahead or more
    assert r["ahead@72h"] == 1.0 and r["median_lead_h@72h"] >= 72
    assert r["per_fault_type"]["bearing_wear"]["failures"] == 3
    assert r["fault_type_accuracy_at_alert"] == 1.0  # the only type there is
    # as the cloud would score it: each pump against its own rolling baseline, started
    # again after each repair; the five days of growth still warn of every failure
    deployed = tmp_path / "deployed.json"
    run_models("evaluate", "--model", str(out), "--dataset", str(test), "--out", str(deployed),
               "--reference", "deployed")  # fmt: skip
    doc = json.loads(deployed.read_text())
    assert doc["reference"] == "deployed" and json.loads(metrics.read_text())["reference"] == (
        "training"
    )
    d = doc["metrics"]["risk"]
    assert d["failures"] == 3 and d["recall@72h"] == 1.0
    assert d["pr_auc_asset_windows"] != r["pr_auc_asset_windows"]  # other inputs
    # a fleet the model never saw, judged from each pump's first day: the day-25(+)
    # failures count too
    whole = tmp_path / "whole.json"
    run_models("evaluate", "--model", str(out), "--dataset", str(test), "--out", str(whole),
               "--reference", "deployed", "--all-rows")  # fmt: skip
    doc = json.loads(whole.read_text())
    assert doc["part"] == "all" and doc["metrics"]["risk"]["failures"] == 6
    assert doc["metrics"]["risk"]["recall@72h"] == 1.0
    card = (out / "card.md").read_text()
    assert "(test rows, training reference)" in card and "(all rows, deployed reference)" in card
    assert main(["evaluate", "--model", str(out), "--dataset", str(test), "--out",
                 str(tmp_path / "no.json"), "--all-rows", "--no-progress"]) == 2  # fmt: skip
    assert "--all-rows leaves no training rows" in capsys.readouterr().err
    assert not (tmp_path / "no.json").exists()
    # another alert threshold, as an operator would set one in the cloud: the model's own
    # threshold given explicitly changes nothing; one no window reaches raises no alert
    same, none = tmp_path / "same.json", tmp_path / "none.json"
    run_models("evaluate", "--model", str(out), "--dataset", str(test), "--out", str(same),
               "--risk-threshold", f"pump={meta['threshold']}")  # fmt: skip
    assert json.loads(same.read_text())["metrics"]["risk"] == r
    run_models("evaluate", "--model", str(out), "--dataset", str(test), "--out", str(none),
               "--risk-threshold", "pump=0.999999")  # fmt: skip
    doc = json.loads(none.read_text())
    assert doc["risk_thresholds"] == {"pump": 0.999999}
    assert doc["metrics"]["risk"]["alerts"] == 0 and doc["metrics"]["risk"]["recall@72h"] == 0
    assert (
        "(test rows, training reference, risk thresholds pump 0.999999)"
        in (out / "card.md").read_text()
    )
    # a sweep: each threshold's alerts on the same risk, per asset type; the model's own
    # threshold gives the evaluation's figures, one no window reaches no alert
    sweep = tmp_path / "sweep.json"
    run_models("evaluate", "--model", str(out), "--dataset", str(test), "--out", str(sweep),
               "--risk-sweep", f"0.999999,{meta['threshold']}")  # fmt: skip
    doc = json.loads(sweep.read_text())
    assert doc["metrics"]["risk"] == r
    rows = doc["risk_sweep"]["per_asset_type"]["pump"]
    assert [x["threshold"] for x in rows] == [meta["threshold"], 0.999999]
    fa = "false_alerts_per_100_asset_months@72h"
    for key in ("alerts", "failures", "ahead@72h", "recall@72h", "precision@72h", fa):
        assert rows[0][key] == r[key], key
    assert rows[1]["alerts"] == 0 and rows[1]["ahead@72h"] == 0
    assert doc["risk_sweep"]["suggested"]["pump"] == risk.suggest_threshold(rows)
    card = json.loads((out / "card.json").read_text())
    assert "risk_sweep" not in card["evaluations"][-1]  # the card keeps the evaluation only
    with pytest.raises(SystemExit) as refused:
        main(["evaluate", "--model", str(out), "--dataset", str(test), "--out",
              str(tmp_path / "no.json"), "--risk-sweep", "0.9,x"])  # fmt: skip
    assert refused.value.code == 2
    assert "'0.9,x': the threshold 'x' is not a number" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(out), "--dataset", str(test), "--out",
                 str(tmp_path / "no.json"), "--risk-threshold", "fan=0.5"]) == 2  # fmt: skip
    assert "has no risk model for 'fan' (it has: pump)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["evaluate", "--model", str(out), "--dataset", str(test), "--out",
              str(tmp_path / "no.json"), "--risk-threshold", "pump=1.5"])  # fmt: skip
    assert refused.value.code == 2
    assert "'pump=1.5': the threshold must be between 0 and 1, got 1.5" in capsys.readouterr().err


class _FixedRisk:
    """A stand-in for a loaded risk model: P rises to 1 from the 10th window on."""

    threshold = 0.5
    fault_types = ("leak",)

    def __init__(self, horizon_h: float) -> None:
        self.horizon_h = horizon_h
        self.meta = {"feature_names": ["a", "b"]}

    def run(self, x: np.ndarray) -> risk.RiskOutput:
        p = (np.arange(x.shape[0]) >= 10).astype(np.float64)
        return risk.RiskOutput(p, p, p, np.ones((x.shape[0], 1)), np.zeros(x.shape))


def test_the_failures_judged_do_not_depend_on_the_model_horizon() -> None:
    """A model trained for a longer horizon is judged on the same failures as a 72-h one:
    those in the test part or within 72 h after it (a failure 100 h after the data ends
    can be warned of by no model that these metrics judge)."""
    from models.pipeline import RiskReport

    hour = 3600.0
    t = np.arange(40) * hour
    table = {
        "asset_id": "a1",
        "t": t,
        "x": np.zeros((40, 2)),
        "names": ["a", "b"],
        "train": np.zeros(40, dtype=bool),
        "down": np.zeros(40, dtype=bool),
        "failures": [t[-1] + 50 * hour, t[-1] + 100 * hour],
        "failure_types": ["leak", "leak"],
        "ttf": np.full(40, 1e9),
    }
    for horizon_h in (72.0, 168.0):
        report = RiskReport()
        report.add(table, _FixedRisk(horizon_h))  # type: ignore[arg-type]
        assert report.failures["a1"] == [t[-1] + 50 * hour]


class _TypedRisk(_FixedRisk):
    """Alerts from the 10th window; names "fan" before ``switch`` and "leak" from it."""

    fault_types = ("fan", "leak")

    def __init__(self, switch: int) -> None:
        super().__init__(72.0)
        self.switch = switch

    def run(self, x: np.ndarray) -> risk.RiskOutput:
        out = super().run(x)
        leak = (np.arange(x.shape[0]) >= self.switch).astype(np.float64)
        return risk.RiskOutput(
            out.p24,
            out.p_horizon,
            out.p_alert,
            np.column_stack([1 - leak, leak]),
            np.zeros(x.shape),
        )


def test_the_fault_type_is_judged_where_each_alert_was_raised() -> None:
    """Of the alerts a failure followed, the share whose fault type, when raised, was the
    failure's: what a work order's skills and parts come from."""
    from models.pipeline import RiskReport

    hour = 3600.0
    t = np.arange(40) * hour

    def table(asset: str, failures: list[float]) -> dict[str, object]:
        return {
            "asset_id": asset,
            "t": t,
            "x": np.zeros((40, 2)),
            "names": ["a", "b"],
            "train": np.zeros(40, dtype=bool),
            "down": np.zeros(40, dtype=bool),
            "failures": failures,
            "failure_types": ["leak"] * len(failures),
            "ttf": np.full(40, 1e9),
        }

    report = RiskReport()
    failure = [float(t[30]) + 0.5 * hour]
    report.add(table("late-diagnosis", failure), _TypedRisk(switch=20))  # type: ignore[arg-type]
    report.add(table("right-at-once", failure), _TypedRisk(switch=5))  # type: ignore[arg-type]
    report.add(table("no-failure", []), _TypedRisk(switch=5))  # type: ignore[arg-type]
    assert report.typed == [("fan", "leak"), ("leak", "leak")]
    assert report.summary()["fault_type_accuracy_at_alert"] == 0.5


def test_an_alert_horizon_shorter_than_the_horizon_is_refused_before_fitting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]
    code = main(["fit", "--task", "risk", *args, "--horizon", "72h", "--alert-horizon", "48h"])
    assert code != 0
    assert "--alert-horizon 48h is shorter than --horizon 72h" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_fixed_alert_horizon_is_used_as_asked(tmp_path: Path) -> None:
    train = _fleet(tmp_path / "train", seed=1)
    out = tmp_path / "model"
    args = ["--window-rows", "6", "--hop-rows", "1", "--alert-horizon", "168h", "--no-progress"]
    assert main(["fit", "--task", "risk", "--dataset", str(train), "--out", str(out), *args]) == 0
    meta = json.loads((out / "pump" / "risk" / "risk.json").read_text())
    assert (meta["horizon_h"], meta["alert_horizon_h"]) == (72, 168)
    assert list(meta["info"]["alert_horizons"]) == ["168"]


def test_the_regressions_are_fitted_on_a_bounded_number_of_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beyond FIT_MAX_WINDOWS, every k-th usable window of each recording (k the smallest
    that fits); below it, all of them."""
    monkeypatch.setattr(risk, "FIT_MAX_WINDOWS", 10)
    a = np.array([True] * 12 + [False] * 3)
    b = np.array([False, True, True, True, True, True, True, True, True])
    got = risk._thinned([a, b])  # 20 usable: every 2nd
    assert np.flatnonzero(got[0]).tolist() == [0, 2, 4, 6, 8, 10]
    assert np.flatnonzero(got[1]).tolist() == [1, 3, 5, 7]
    assert sum(int(m.sum()) for m in got) <= 10
    small = risk._thinned([a[:5], b[:4]])
    assert [m.tolist() for m in small] == [a[:5].tolist(), b[:4].tolist()]


def test_an_older_risk_model_is_evaluated_on_the_inputs_it_was_fitted_on() -> None:
    """A table carries every risk input the code computes; a model fitted before some of
    them existed gets its own, by name, and one naming an input the detector has not is
    refused with the input named."""
    from models.pipeline import model_inputs

    table = {
        "asset_id": "a1",
        "names": ["score__mean_24h", "a__share_mean_24h", "a__mean__z_mean_72h"],
        "x": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
    }
    old = _FixedRisk(72.0)
    old.meta = {"feature_names": ["a__share_mean_24h", "score__mean_24h"]}
    assert model_inputs(table, old).tolist() == [[2.0, 1.0], [5.0, 4.0]]  # type: ignore[arg-type]
    old.meta = {"feature_names": table["names"]}
    assert model_inputs(table, old).tolist() == table["x"].tolist()  # type: ignore[arg-type]
    old.meta = {"feature_names": ["score__mean_24h", "b__share_mean_24h"]}
    with pytest.raises(ArtifactError, match=r"a1: inputs \['b__share_mean_24h'\]"):
        model_inputs(table, old)  # type: ignore[arg-type]


def test_the_threshold_is_chosen_without_the_alerts_the_recording_end_leaves_unjudged() -> None:
    """An alert standing when a training recording ends may be right: its failure would
    come after the data. Counted as false it would push every threshold up."""
    t = np.arange(1000) * H
    none = np.zeros(t.size, dtype=bool)
    at_end = np.where(t >= t[-1] - 30 * H, 0.9, 0.0)  # no failure in the data
    before = np.where((t >= 480 * H) & (t < 500 * H), 0.9, 0.0)  # failure at 500 h
    thr, info = risk.choose_threshold([(t, at_end, [], none), (t, before, [500 * H], none)], 72 * H)
    assert thr == risk.THRESHOLDS[0]
    assert info["train_precision"] == 1.0 and info["train_recall"] == 1.0
    # cleared 100 h before the end, the same alert is judged: false
    early = np.where((t >= 800 * H) & (t < 830 * H), 0.9, 0.0)
    _, judged = risk.choose_threshold([(t, early, [], none), (t, before, [500 * H], none)], 72 * H)
    assert judged["train_precision"] == 0.5


def _sweep_row(threshold: float, ahead: float, precision: float | None, fa: float) -> dict:
    return {
        "threshold": threshold,
        "ahead@72h": ahead,
        "precision@72h": precision,
        "false_alerts_per_100_asset_months@72h": fa,
    }


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # the most failures warned ahead among those within both limits
        ([(0.90, 0.95, 0.85, 1.3), (0.95, 0.92, 0.93, 0.8), (0.97, 0.90, 0.95, 0.6)], 0.95),
        # a tie on warned ahead: the fewest false alerts, not the lowest threshold
        ([(0.95, 0.92, 0.92, 0.95), (0.96, 0.92, 0.94, 0.75), (0.97, 0.91, 0.94, 0.75)], 0.96),
        # a tie on both: the lowest threshold
        ([(0.96, 0.92, 0.94, 0.75), (0.97, 0.92, 0.94, 0.75)], 0.96),
        # precision just at the limit counts; false alerts just over it do not
        ([(0.90, 0.95, 0.90, 1.0), (0.92, 0.97, 0.99, 1.01)], 0.90),
        # no alerts judged (precision None), or none within the limits: no suggestion
        ([(0.999, 0.0, None, 0.0), (0.90, 0.95, 0.80, 0.5)], None),
        ([], None),
    ],
)
def test_the_suggested_threshold_of_a_sweep(
    rows: list[tuple[float, float, float | None, float]], expected: float | None
) -> None:
    assert risk.suggest_threshold([_sweep_row(*r) for r in rows]) == expected
