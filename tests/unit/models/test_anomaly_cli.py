"""``edgewatch-models`` fit → score → evaluate on small datasets, the exported model
running in the gateway's own model store and scorer, and the asset baseline's z-scores
against a feature-by-feature reference."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy.special import ndtri
from support.models import run_models

from edge_agent.config import ModelSettings
from edge_agent.models import ModelStore
from edge_agent.scoring import Scorer as GatewayScorer
from models.anomaly import (
    MIN_ASSET_WINDOWS,
    Z_CLIP,
    Baseline,
    QuantileBaseline,
    Scorer,
    asset_baseline,
)
from models.cli import main
from models.export import build_onnx, load_detectors

FIXTURES = Path(__file__).parents[2] / "fixtures"
START = 1_767_225_600  # 2026-01-01T00:00:00Z


def synthetic(folder: Path, *, spike_from: int = 900, future: float = 0.0) -> Path:
    """Two pumps sampled every 60 s: a 2-hour cycle plus noise; pump-2 runs hot (its own
    baseline) and from row ``spike_from`` its vibration triples (labelled). ``future``
    shifts the rows after 1,000 (to check causality)."""
    rng = np.random.default_rng(7)
    (folder / "data").mkdir(parents=True)
    for unit, offset in (("pump-1", 0.0), ("pump-2", 20.0)):
        n = 1200
        i = np.arange(n)
        temp = 40 + offset + 3 * np.sin(2 * np.pi * i / 120) + rng.normal(0, 0.3, n)
        vib = 2 + rng.normal(0, 0.1, n)
        label = np.zeros(n, int)
        if unit == "pump-2":
            vib[spike_from:] *= 3
            label[spike_from:] = 1
        vib[1000:] += future
        with (folder / "data" / f"{unit}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "temperature", "vibration", "bad"])
            for k in range(n):
                w.writerow([START + 60 * k, f"{temp[k]:.3f}", f"{vib[k]:.3f}", label[k]])
    (folder / "dataset.yaml").write_text(
        "name: pumps\nfiles: ['data/*.csv']\ntimestamp: {column: epoch, unit: s}\n"
        "asset_type: {value: pump}\nlabels: {anomaly: bad}\nsplit: {train_rows: 600}\n"
    )
    return folder


def fit(dataset: Path, out: Path, *extra: str) -> None:
    args = ["fit", "--task", "anomaly", "--dataset", str(dataset), "--out", str(out)]
    assert main([*args, "--window-rows", "20", "--no-progress", *extra]) == 0


def test_fit_writes_a_model_folder_the_gateway_loads_and_scores_alike(tmp_path: Path) -> None:
    data = synthetic(tmp_path / "ds")
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub = tmp_path / "key.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    out = tmp_path / "model"
    fit(data, out, "--baseline", "fleet")
    assert not (out / "pump" / "manifest.sig").exists()  # unsigned until signed
    assert main(["sign", "--model", str(out), "--key", str(pem)]) == 0
    folder = out / "pump"
    assert {p.name for p in folder.iterdir()} >= {"manifest.json", "manifest.sig", "detector.json"}
    card = json.loads((out / "card.json").read_text())
    assert card["dataset"]["sha256"] and card["models"][0]["features"]
    assert "temperature__mean" in card["models"][0]["features"]
    assert (out / "card.md").read_text().startswith("# Model card")

    # The agent's store verifies the signature and loads it; its scorer gives the score
    # the offline path gives for the same window.
    store = ModelStore(ModelSettings(dir=out, trusted_keys=[pub]))
    model = store.model_for("pump")
    assert model is not None and model.threshold == card["models"][0]["threshold"]
    (det,) = load_detectors(out).values()
    window = {"temperature": np.full(20, 61.0), "vibration": np.linspace(5, 7, 20)}
    from edge_agent.features import feature_vector

    x = feature_vector(window, det.feature_names, START + 60.0 * np.arange(20))
    gateway = GatewayScorer(store).score(x, model)
    offline, _ = det.run(x[None, :])
    assert gateway.score == pytest.approx(offline[0], rel=1e-5)
    assert gateway.anomalous and gateway.top_signals[0][0] == "vibration"


def test_score_is_causal_and_evaluate_finds_the_anomaly(tmp_path: Path) -> None:
    data = synthetic(tmp_path / "ds")
    out = tmp_path / "model"
    fit(data, out)
    scores = tmp_path / "scores.csv"
    run_models("score", "--model", str(out), "--dataset", str(data), "--out", str(scores))
    rows = list(csv.DictReader(scores.read_text().splitlines()))
    assert len(rows) == 2400  # one per input row
    assert rows[0] == {
        "file": "data/pump-1.csv",
        "timestamp": "2026-01-01T00:00:00Z",
        "asset": "data/pump-1",
        "score": "",  # no full window yet
        "decision": "0",
        "top_signal": "",
    }
    # Changing the future does not change any earlier row's score.
    other = synthetic(tmp_path / "ds2", future=5.0)
    scores2 = tmp_path / "scores2.csv"
    run_models("score", "--model", str(out), "--dataset", str(other), "--out", str(scores2))
    rows2 = list(csv.DictReader(scores2.read_text().splitlines()))
    assert [r["score"] for r in rows2][:1000] == [r["score"] for r in rows][:1000]
    assert [r["score"] for r in rows2][1000:1200] != [r["score"] for r in rows][1000:1200]

    metrics = tmp_path / "metrics.json"
    run_models("evaluate", "--model", str(out), "--dataset", str(data), "--out", str(metrics))
    m = json.loads(metrics.read_text())["metrics"]["anomaly"]
    assert m["tp"] + m["fn"] == 300  # the labelled rows of the test part (900..1199)
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == 2 * 600
    assert m["f1"] > 0.9 and m["false_alarm_rate"] < 0.05
    assert m["segments"] == 1 and m["median_delay_s"] <= 20 * 60
    card = json.loads((out / "card.json").read_text())
    assert card["evaluations"][-1]["metrics"]["anomaly"]["f1"] == m["f1"]
    # the per-file detail stays in the metrics file; the card (package data) keeps totals
    assert m["per_file"] and "per_file" not in card["evaluations"][-1]["metrics"]["anomaly"]
    assert f"f1: {m['f1']:.4g}" in (out / "card.md").read_text()


def test_onnx_graph_computes_the_scorer() -> None:
    rng = np.random.default_rng(3)
    f = 6
    a = rng.normal(size=(f, f))
    scorer = Scorer(m=a @ a.T, r=np.eye(f) - np.ones((f, f)) / f, a=0.3, b=0.7)
    fleet = Baseline(center=rng.normal(size=f), scale=rng.uniform(0.5, 2, size=f))
    import onnxruntime as ort

    sess = ort.InferenceSession(build_onnx(fleet, scorer, "t"), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(50, f)) * 3
    score, contrib = sess.run(None, {"features": x.astype(np.float32)})
    z = fleet.z(x)
    np.testing.assert_allclose(contrib, scorer.contributions(z), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(score, scorer.score(z), rtol=1e-4, atol=1e-3)


def _reference_quantile_z(
    sorted_values: list[np.ndarray], scale: np.ndarray, fallback: Baseline, x: np.ndarray
) -> np.ndarray:
    """:meth:`QuantileBaseline.z` as first written, one feature at a time: the reference
    the vectorised version must match."""
    out = fallback.z(x)
    for j, ref in enumerate(sorted_values):
        n = ref.size
        if n < MIN_ASSET_WINDOWS:
            continue
        col = x[:, j]
        rank = (np.searchsorted(ref, col, "left") + np.searchsorted(ref, col, "right")) / 2
        z = ndtri((rank + 0.5) / (n + 1))
        lo_z, hi_z = ndtri(np.array([0.5 / (n + 1), (n + 0.5) / (n + 1)]))
        with np.errstate(invalid="ignore"):
            z = np.where(col > ref[-1], hi_z + (col - ref[-1]) / scale[j], z)
            z = np.where(col < ref[0], lo_z - (ref[0] - col) / scale[j], z)
        z = np.clip(z, -Z_CLIP, Z_CLIP)
        out[:, j] = np.where(np.isfinite(col), z, 0.0)
    return np.asarray(out, dtype=np.float64)


def _awkward_columns(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Reference windows with every kind of column the z-scores must get right."""
    cols = [
        rng.normal(size=rows) * 10 ** rng.uniform(-3, 3),  # continuous, any magnitude
        np.round(rng.normal(size=rows) * 3),  # heavy ties (a quantised signal)
        rng.integers(0, 3, size=rows).astype(float),  # three values only
        np.full(rows, 2.5),  # constant
        rng.choice([-0.0, 0.0, 1.0], size=rows),  # ties between -0.0 and 0.0
        rng.exponential(size=rows) ** 3,  # heavy right tail
        np.where(rng.random(rows) < 0.3, np.nan, rng.normal(size=rows)),  # some missing
        np.where(np.arange(rows) < MIN_ASSET_WINDOWS - 1, 1.0, np.nan),  # too few: fallback
        np.full(rows, np.nan),  # never seen: fallback
        np.where(rng.random(rows) < 0.1, np.inf, rng.normal(size=rows)),  # infinities
        -1e300 * rng.random(rows),  # huge values (z beyond the range overflows to ±inf)
    ]
    return np.column_stack(cols)


@pytest.mark.parametrize("seed", range(8))
def test_quantile_baseline_z_matches_the_feature_by_feature_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_rows = int(rng.integers(MIN_ASSET_WINDOWS, 400))
    reference = _awkward_columns(rng, ref_rows)
    f = reference.shape[1]
    fleet = Baseline(center=rng.normal(size=f), scale=rng.uniform(0.5, 2, size=f))
    floor = rng.uniform(1e-3, 1, size=f) if seed % 2 else None
    b = asset_baseline(fleet, "asset", reference, floor)
    assert isinstance(b, QuantileBaseline)
    columns = [np.sort(c[np.isfinite(c)]) for c in reference.T]
    assert all(np.array_equal(a, c) for a, c in zip(b.sorted_values, columns, strict=True))
    # rows to score: fresh values, the reference values themselves (exact ties), values
    # beyond both ends of the range, far outside, missing and infinite
    fresh = _awkward_columns(rng, 300)
    seen = [c[np.isfinite(c)] for c in reference.T]
    lo = np.array([c.min() if c.size else 0.0 for c in seen])
    hi = np.array([c.max() if c.size else 0.0 for c in seen])
    span = hi - lo + 1.0
    outside = np.vstack(
        [
            hi + span * rng.uniform(0, 3, size=(40, f)),
            lo - span * rng.uniform(0, 3, size=(40, f)),
            np.full((2, f), 1e308),
            np.full((2, f), -1e308),
            np.full((2, f), np.nan),
            np.full((2, f), np.inf),
            np.full((2, f), -np.inf),
        ]
    )
    x = np.vstack([fresh, reference, outside])
    x = x[rng.permutation(x.shape[0])]
    few = QuantileBaseline([c[:5] for c in b.sorted_values], b.scale, fleet)
    with np.errstate(over="ignore"):  # 1e308 against a small scale
        want = _reference_quantile_z(columns, b.scale, fleet, x)
        got = b.z(x)
        fleet_z, few_z = fleet.z(x), few.z(x)
    assert got.shape == want.shape and np.all(np.isfinite(got))
    assert np.max(np.abs(got - want)) <= 1e-12
    # a baseline with no column of its own is the fleet's everywhere
    np.testing.assert_array_equal(few_z, fleet_z)


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (
            ["score", "--model", "{tmp}/none", "--dataset", "{nab}", "--out", "{tmp}/s.csv"],
            2,
            "no such model folder",
        ),
        (
            ["fit", "--task", "risk", "--dataset", "{nab}", "--out", "{tmp}/m"],
            3,
            "a risk model needs failures",
        ),
        (["fit", "--task", "anomaly", "--dataset", "{tmp}", "--out", "{tmp}/m"], 2, "dataset.yaml"),
    ],
)
def test_cli_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, says: str
) -> None:
    nab = FIXTURES / "nab-realknowncause"
    args = [a.format(tmp=tmp_path, nab=nab) for a in argv]
    assert main([*args, "--no-progress"]) == code
    assert says in capsys.readouterr().err


def test_real_recordings_nab_end_to_end(tmp_path: Path) -> None:
    """Seven real recordings with their own units, sampling and a clock that steps back:
    every test row is scored and counted, every labelled segment accounted for."""
    nab = FIXTURES / "nab-realknowncause"
    out = tmp_path / "model"
    args = ["--window-rows", "12", "--hop-rows", "1", "--no-progress"]
    assert main(["fit", "--task", "anomaly", "--dataset", str(nab), "--out", str(out), *args]) == 0
    metrics = tmp_path / "m.json"
    run_models("evaluate", "--model", str(out), "--dataset", str(nab), "--out", str(metrics))
    m = json.loads(metrics.read_text())["metrics"]["anomaly"]
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == 69561 - 7 * 600  # rows after training
    assert len(m["per_file"]) == 7
    assert m["segments"] == 19  # NAB's labelled windows in these files
    assert m["segments_detected"] >= 5


def test_shipped_default_models_load_in_the_agent_and_the_cloud_format() -> None:
    """models/artifacts: one detector per simulated asset type, small, loadable by the
    gateway's model store, with a risk graph beside each and a model card."""
    from edge_agent.profiles import builtin_profiles
    from models.risk import load_risk

    artifacts = Path(__file__).parents[3] / "models" / "artifacts"
    store = ModelStore(ModelSettings(dir=artifacts, allow_unsigned=True))
    assert set(store.models()) == {"compressor", "fan"}
    assert not store.refused
    points = {p.asset_type: {pt.name for pt in p.points} for p in builtin_profiles().values()}
    for asset, model in store.models().items():
        folder = artifacts / asset
        assert (folder / model.manifest.file).stat().st_size < 2_000_000
        from edge_agent.features import signals_of

        needed = {s for n in model.feature_names for s in signals_of(n)}
        assert needed <= points[asset], needed - points[asset]  # the gateway can read them
        rm = load_risk(folder)
        assert rm is not None and rm.horizon_h == 72
        assert rm.alert_horizon_h == 336  # alerts on the risk within 14 days
        out = rm.run(np.zeros((1, len(rm.meta["feature_names"]))))
        assert all(0 <= p[0] <= 1 for p in (out.p24, out.p_horizon, out.p_alert))
        assert out.fault_probs.sum() == pytest.approx(1, abs=1e-5)
    card = json.loads((artifacts / "card.json").read_text())
    assert card["task"] == "risk" and card["evaluations"]


def test_labelled_training_windows_select_the_features_that_carry_the_anomaly(
    tmp_path: Path,
) -> None:
    data = synthetic(tmp_path / "ds", spike_from=300)  # anomalies inside the training part
    out = tmp_path / "model"
    fit(data, out)
    (model,) = json.loads((out / "card.json").read_text())["models"]
    sel = model["selection"]
    assert sel["tested"] and sel["anomalous"] >= 50
    assert next(iter(sel["top"])).startswith("vibration__")  # the spike is in vibration
    assert model["features"] and all(f.startswith("vibration__") for f in model["features"])
    dropped = [f for f, why in model["screened"].items() if "not relevant" in why]
    assert any(f.startswith("temperature__") for f in dropped)


def cycling(folder: Path, *, operating: bool) -> Path:
    """Two pumps that start and stop at random (runs and idle spells of 20-120 min):
    running, the motor is at 60 °C, idle it cools to 25 °C (±1 K of noise). From row 2000
    pump-2's motor runs 1 K hotter (labelled): a fault that shows only while it runs."""
    rng = np.random.default_rng(11)
    (folder / "data").mkdir(parents=True)
    n = 3000
    for unit in ("pump-1", "pump-2"):
        state = np.zeros(n, int)
        k, on = 0, 1
        while k < n:
            spell = int(rng.integers(20, 120))
            state[k : k + spell] = on
            k, on = k + spell, 1 - on
        temp = np.where(state == 1, 60.0, 25.0) + rng.normal(0, 1.0, n)
        label = np.zeros(n, int)
        if unit == "pump-2":
            temp[2000:] += 1.0 * state[2000:]
            label[2000:] = 1
        with (folder / "data" / f"{unit}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "temperature", "state", "bad"])
            for r in range(n):
                w.writerow([START + 60 * r, f"{temp[r]:.3f}", state[r], label[r]])
    (folder / "dataset.yaml").write_text(
        "name: cycling\nfiles: ['data/*.csv']\ntimestamp: {column: epoch, unit: s}\n"
        "asset_type: {value: pump}\nsignals: [temperature]\nlabels: {anomaly: bad}\n"
        "split: {train_rows: 1500}\n" + ("operating: state == 1\n" if operating else "")
    )
    return folder


def test_operating_features_are_fitted_scored_and_judged_over_the_running_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    said = cycling(tmp_path / "said", operating=True)
    unsaid = cycling(tmp_path / "unsaid", operating=False)
    window = ["--window-rows", "60", "--hop-rows", "5"]
    gated, plain = tmp_path / "gated", tmp_path / "plain"
    fit(said, gated, *window, "--operating-features")
    fit(said, plain, *window)  # the dataset says when the pumps run; the fit was not asked
    names = load_detectors(gated)["pump"].manifest.feature_names
    assert any(n.startswith("when(state==1,temperature)__") for n in names)
    assert not any("when(" in n for n in load_detectors(plain)["pump"].manifest.feature_names)
    card = json.loads((gated / "card.json").read_text())
    assert card["settings"]["operating_features"] is True
    # asked of a dataset that does not say when its machines run: refused, saying what
    args = ["fit", "--task", "anomaly", "--dataset", str(unsaid), "--out", str(tmp_path / "x")]
    assert main([*args, "--operating-features", "--no-progress"]) == 3
    assert "say when its machines run" in capsys.readouterr().err

    # the model reads the run state wherever it scores, dataset.yaml saying so or not
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    run_models("score", "--model", str(gated), "--dataset", str(said), "--out", str(a))
    run_models("score", "--model", str(gated), "--dataset", str(unsaid), "--out", str(b))
    assert a.read_text() == b.read_text()

    # evaluate also counts the rows where the machine ran, when the dataset says
    running_test_rows = 0
    for unit in ("pump-1", "pump-2"):
        rows = list(csv.DictReader((said / "data" / f"{unit}.csv").read_text().splitlines()))
        running_test_rows += sum(r["state"] == "1" for r in rows[1500:])
    for data, has in ((said, True), (unsaid, False)):
        out = tmp_path / f"{data.name}.json"
        run_models("evaluate", "--model", str(gated), "--dataset", str(data), "--out", str(out))
        m = json.loads(out.read_text())["metrics"]["anomaly"]
        assert ("while_running" in m) is has
        if has:
            r = m["while_running"]
            assert r["tp"] + r["fp"] + r["tn"] + r["fn"] == running_test_rows
            assert r["tp"] <= m["tp"] and r["fn"] <= m["fn"] and r["fp"] <= m["fp"]
