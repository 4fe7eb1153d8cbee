"""The run-time risk scorer (models.runtime): same numbers as the offline path, loading and
its errors, a simulated fault seen coming, missing features, and health / alert / top
signals on models whose outputs are set by hand."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from support.risk_sim import DAY, FAIL_DAY, ONSET_DAY, START, H, Sim, leak_fleet

from models import risk
from models.anomaly import MIN_ASSET_WINDOWS, Baseline, FittedDetector, Scorer
from models.errors import ArtifactError
from models.export import WindowSpec, load_detectors, write_detector
from models.pipeline import model_inputs, risk_table, score_windows
from models.runtime import (
    Assessment,
    BaselinePolicy,
    DeviceHistory,
    RiskRuntime,
    SignalTrend,
    health_index,
    input_signals,
    top_signals,
)

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "models" / "artifacts"


@pytest.fixture(scope="module")
def runtime() -> RiskRuntime:
    return RiskRuntime.load(ARTIFACTS)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    return leak_fleet(tmp_path_factory.mktemp("sim"))


# -- parity with the offline path -----------------------------------------------------------


@pytest.mark.parametrize("asset_id", ["cc-ok", "cc-leak", "fan-ok"])
def test_same_numbers_as_the_offline_risk_table(
    runtime: RiskRuntime, sim: Sim, asset_id: str
) -> None:
    rec = sim.recs[asset_id]
    det = load_detectors(ARTIFACTS)[rec.asset_type]
    sw = score_windows(sim.ds, rec, det)
    table = risk_table(sim.ds, rec, det, sw)
    model = risk.load_risk(det.folder)
    assert model is not None
    out = model.run(model_inputs(table, model))
    w, t = sw.windows, table["t"]
    reference = w.x[w.healthy_train]
    # the healthy devices get their own (quantile) baseline, the failing one the fleet's
    assert (reference.shape[0] >= MIN_ASSET_WINDOWS) == (asset_id != "cc-leak")

    got = runtime.assess(rec.asset_type, t, w.x, baseline=reference, last=t.size)
    assert [a.ts for a in got] == t.tolist()
    np.testing.assert_allclose([a.p24 for a in got], out.p24, atol=1e-6)
    np.testing.assert_allclose([a.p72 for a in got], out.p_horizon, atol=1e-6)
    np.testing.assert_allclose([a.p_alert for a in got], out.p_alert, atol=1e-6)
    assert [a.alert for a in got] == (out.p_alert >= model.threshold).tolist()
    assert {(a.horizon_h, a.alert_horizon_h) for a in got} == {(72.0, 336.0)}
    np.testing.assert_allclose(
        [list(a.fault_probs.values()) for a in got], out.fault_probs, atol=1e-6
    )
    np.testing.assert_allclose([a.anomaly_score for a in got], sw.score, rtol=1e-6)
    assert list(got[0].fault_probs) == model.meta["fault_types"]

    # the latest assessment from only the trailing history_s of rows is the same
    spec = runtime.spec(rec.asset_type)
    base = runtime.baseline(rec.asset_type, reference)
    for end in (t.size // 3, t.size // 2, t.size - 1):
        keep = (t > t[end] - spec.history_s + spec.window_s) & (t <= t[end])
        (one,) = runtime.assess(rec.asset_type, t[keep], w.x[keep], baseline=base)
        assert one.ts == t[end]
        assert one.p72 == pytest.approx(out.p_horizon[end], abs=1e-6)
        assert one.p24 == pytest.approx(out.p24[end], abs=1e-6)
        assert one.p_alert == pytest.approx(out.p_alert[end], abs=1e-6)
        _same_signals(one.top_signals, got[end].top_signals)


def _same_signals(a: tuple[SignalTrend, ...], b: tuple[SignalTrend, ...]) -> None:
    assert [s.signal for s in a] == [s.signal for s in b] and a
    assert [s.share for s in a] == pytest.approx([s.share for s in b], abs=1e-6)
    assert [s.trend_per_day for s in a] == pytest.approx([s.trend_per_day for s in b], abs=1e-6)


def test_assess_many_equals_one_device_at_a_time(runtime: RiskRuntime, sim: Sim) -> None:
    histories = []
    for asset_id in ("cc-ok", "cc-leak"):
        rec = sim.recs[asset_id]
        w = score_windows(sim.ds, rec, load_detectors(ARTIFACTS)["compressor"]).windows
        histories.append((rec.t[w.ends], w.x, w.x[:100]))
    devices = [DeviceHistory(t, x, ref) for t, x, ref in histories]
    f = len(runtime.spec("compressor").feature_names)
    empty = DeviceHistory(np.empty(0), np.empty((0, f)))
    many = runtime.assess_many("compressor", [devices[0], empty, devices[1]], last=5)
    assert [len(m) for m in many] == [5, 0, 5]
    for (t, x, ref), batch in zip(histories, (many[0], many[2]), strict=True):
        alone = runtime.assess("compressor", t, x, baseline=ref, last=5)
        assert [a.ts for a in alone] == [a.ts for a in batch] == t[-5:].tolist()
        for a, b in zip(alone, batch, strict=True):
            assert a.p72 == pytest.approx(b.p72, abs=1e-6)
            assert a.fault_type == b.fault_type and a.health == b.health
            _same_signals(a.top_signals, b.top_signals)


# -- a fault seen coming --------------------------------------------------------------------


def test_a_leaking_compressor_gets_rising_risk_and_falling_health(
    runtime: RiskRuntime, sim: Sim
) -> None:
    """The simulator's refrigerant leak (onset day 8, failure day 13), scored hourly against
    the device's own first 4 days as its baseline, as the cloud would: the risk stays low
    while healthy, climbs through the last days and alerts before the failure; a healthy
    compressor of the same site, scored the same way, does not."""

    def history(asset_id: str) -> tuple[npt.NDArray[np.float64], list[Assessment]]:
        rec = sim.recs[asset_id]
        w = score_windows(sim.ds, rec, load_detectors(ARTIFACTS)["compressor"]).windows
        t = rec.t[w.ends]
        t, x = t[t < fail], w.x[t < fail]
        reference = x[t < START + 4 * DAY]
        return t, runtime.assess("compressor", t, x, baseline=reference, last=t.size)

    fail = START + FAIL_DAY * DAY
    t, got = history("cc-leak")
    p72 = np.array([a.p72 for a in got])
    p_alert = np.array([a.p_alert for a in got])
    health = np.array([a.health for a in got])
    healthy = (t > START + 2 * DAY) & (t < START + ONSET_DAY * DAY)
    eve = t > fail - DAY
    assert np.median(p72[healthy]) < 0.05 and np.median(health[healthy]) >= 90
    assert np.median(p_alert[healthy]) < 0.2  # the threshold is 0.96
    # the last day: the failure within 72 h climbs to near certain, more likely than not
    # for the last 6 h at least, and the health falls near 0
    assert np.all(p72[t > fail - 6 * H] > 0.5) and np.max(p72[eve]) > 0.99
    assert np.median(p72[eve]) > 5 * np.median(p72[healthy])
    assert np.median(health[eve]) <= 10
    # the risk alerts are raised on rises over the 72 h before the failure, every day
    # higher than the day before
    days = [p_alert[(t > fail - (d + 1) * DAY) & (t <= fail - d * DAY)] for d in (3, 2, 1, 0)]
    medians = [float(np.median(d)) for d in days]
    assert medians == sorted(medians) and medians[-1] - medians[0] > 0.4
    assert np.polyfit(t[t > fail - 3 * DAY] / DAY, health[t > fail - 3 * DAY], 1)[0] < 0
    last = got[-1]
    assert last.alert and last.fault_type == "refrigerant_leak"
    assert any(a.alert for a in got if a.ts < fail - 6 * H)  # warned hours ahead
    assert not any(a.alert for a in got if a.ts < START + ONSET_DAY * DAY)
    # the signal most behind it: the refrigerant circuit's, with a rising anomaly
    top = last.top_signals[0]
    assert top.signal in {"subcooling", "superheat"} and top.trend_per_day > 0
    assert top.share == max(s.share for s in last.top_signals) > 0.3

    t, control = history("cc-ok")
    p72 = np.array([a.p72 for a in control])
    assert np.median(p72[t > START + 2 * DAY]) < 0.05 and not any(a.alert for a in control)
    assert np.median([a.health for a in control]) >= 90


# -- missing features ----------------------------------------------------------------------


def test_missing_features_are_tolerated(runtime: RiskRuntime, sim: Sim) -> None:
    rec = sim.recs["cc-ok"]
    det = load_detectors(ARTIFACTS)["compressor"]
    w = score_windows(sim.ds, rec, det).windows
    t, x = rec.t[w.ends], w.x
    names = runtime.spec("compressor").feature_names
    vib = [j for j, n in enumerate(names) if n.startswith("vibration_rms__")]
    assert vib
    full = runtime.assess("compressor", t, x, baseline=x[:100], last=24)

    no_vib = x.copy()
    no_vib[:, vib] = np.nan  # a sensor that never reported, in the history and the baseline
    rng = np.random.default_rng(0)
    holes = no_vib.copy()
    holes[rng.random(holes.shape) < 0.2] = np.nan  # and a fifth of the values lost on top
    for xs in (no_vib, holes):
        got = runtime.assess("compressor", t, xs, baseline=xs[:100], last=24)
        assert len(got) == 24
        for a in got:
            values = [a.p24, a.p72, a.anomaly_score, *a.fault_probs.values()]
            assert all(math.isfinite(v) for v in values) and 0 <= a.health <= 100
    # a missing feature counts as z = 0 (a typical value), not as the value it had
    same_as_typical = x.copy()
    same_as_typical[:, vib] = det.fleet.center[vib]
    typical = runtime.assess("compressor", t, same_as_typical, baseline=no_vib[:100], last=24)
    missing = runtime.assess("compressor", t, no_vib, baseline=no_vib[:100], last=24)
    assert [a.p72 for a in missing] == pytest.approx([a.p72 for a in typical], abs=1e-6)
    assert [a.anomaly_score for a in missing] != pytest.approx([a.anomaly_score for a in full])


def test_bad_inputs_are_refused_with_the_shapes(runtime: RiskRuntime) -> None:
    f = len(runtime.spec("fan").feature_names)
    t = START + np.arange(5) * H
    ref = np.zeros((30, len(runtime.spec("compressor").feature_names)))
    assert runtime.assess("fan", t[:0], np.empty((0, f))) == []
    with pytest.raises(ValueError, match=rf"x \(5, {f - 1}\).*expected t \(n,\) and x \(n, {f}\)"):
        runtime.assess("fan", t, np.zeros((5, f - 1)))
    with pytest.raises(ValueError, match=r"t has shape \(4,\) and x \(5,"):
        runtime.assess("fan", t[:4], np.zeros((5, f)))
    with pytest.raises(ValueError, match=rf"baseline has shape \(30, 3\).*\(rows, {f}\)"):
        runtime.assess("fan", t, np.zeros((5, f)), baseline=np.zeros((30, 3)))
    with pytest.raises(ValueError, match=rf"baseline built for \d+ features; fan has {f}"):
        runtime.assess("fan", t, np.zeros((5, f)), baseline=runtime.baseline("compressor", ref))
    with pytest.raises(ValueError, match="ascending"):
        runtime.assess("fan", t[::-1], np.zeros((5, f)))
    with pytest.raises(ValueError, match="last must be at least 1"):
        runtime.assess("fan", t, np.zeros((5, f)), last=0)
    with pytest.raises(ValueError, match=r"device 1"):
        runtime.assess_many(
            "fan", [DeviceHistory(t, np.zeros((5, f))), DeviceHistory(t, np.zeros((4, f)))]
        )
    assert len(runtime.assess("fan", t, np.zeros((5, f)), last=99)) == 5


# -- loading ---------------------------------------------------------------------------------


def test_the_shipped_models_load(runtime: RiskRuntime) -> None:
    assert runtime.asset_types == ("compressor", "fan")
    for asset in runtime.asset_types:
        manifest = json.loads((ARTIFACTS / asset / "manifest.json").read_text())
        spec = runtime.spec(asset)
        assert spec.asset_type == asset
        assert spec.feature_names == tuple(manifest["feature_names"])
        assert spec.window_s == manifest["window_s"] == 43200
        assert spec.hop_s == 3600
        assert spec.history_s == 72 * H + 43200
        assert spec.baseline_windows == MIN_ASSET_WINDOWS
    with pytest.raises(ArtifactError, match="no risk model for asset type 'pump'"):
        runtime.spec("pump")
    with pytest.raises(ArtifactError, match="no risk model for asset type 'pump'"):
        runtime.assess("pump", np.zeros(1), np.zeros((1, 3)))


def test_the_module_stays_light() -> None:
    code = (
        "import sys, models.runtime\n"
        "heavy = {'pandas', 'sklearn', 'tsfresh'} & {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    out = tmp_path / "models"
    shutil.copytree(ARTIFACTS, out)
    return out


def test_a_tampered_detector_is_refused(copied: Path) -> None:
    (onnx_file,) = (copied / "compressor").glob("*.onnx")
    data = bytearray(onnx_file.read_bytes())
    data[-10] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{onnx_file.name}: sha256 differs"):
        RiskRuntime.load(copied)


def test_an_incomplete_risk_model_is_refused(copied: Path) -> None:
    (copied / "fan" / "risk" / "risk.json").unlink()
    with pytest.raises(ArtifactError, match=r"fan/risk/risk\.json: missing"):
        RiskRuntime.load(copied)


def test_a_broken_risk_graph_is_refused(copied: Path) -> None:
    (copied / "fan" / "risk" / "risk.onnx").write_bytes(b"not a graph")
    path = copied / "fan" / "risk" / "risk.json"
    meta = json.loads(path.read_text())
    meta["sha256"] = hashlib.sha256(b"not a graph").hexdigest()  # signed off, yet broken
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"fan/risk/risk\.onnx: not a valid ONNX model"):
        RiskRuntime.load(copied)


def test_a_replaced_or_unhashed_risk_graph_is_refused(copied: Path) -> None:
    # the compressor's risk graph where the fan's should be: a valid graph, not the one
    # risk.json describes
    shutil.copyfile(
        copied / "compressor" / "risk" / "risk.onnx", copied / "fan" / "risk" / "risk.onnx"
    )
    with pytest.raises(ArtifactError, match=r"fan/risk/risk\.onnx: sha256 differs from risk\.json"):
        RiskRuntime.load(copied)
    path = copied / "compressor" / "risk" / "risk.json"
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    shutil.rmtree(copied / "fan")
    with pytest.raises(ArtifactError, match=r"compressor/risk/risk\.json: names no sha256"):
        RiskRuntime.load(copied)


def test_a_risk_model_of_another_detector_is_refused(copied: Path) -> None:
    path = copied / "fan" / "risk" / "risk.json"
    meta = json.loads(path.read_text())
    meta["feature_names"][1] = "speed_rpm__share_mean_24h"
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"risk\.json: feature_names are not the risk"):
        RiskRuntime.load(copied)


def test_an_asset_type_without_a_risk_model_is_not_served(copied: Path) -> None:
    shutil.rmtree(copied / "fan" / "risk")
    assert RiskRuntime.load(copied).asset_types == ("compressor",)
    shutil.rmtree(copied / "compressor" / "risk")
    with pytest.raises(ArtifactError, match="no asset type has both"):
        RiskRuntime.load(copied)


# -- health, alert and top signals on hand-set models ------------------------------------------

FEATURES = ["discharge_temp__mean", "vibration_rms__mean", "current_l1__mean"]
SIGNALS = ["discharge_temp", "vibration_rms", "current_l1"]


def _hand_made(
    folder: Path,
    wh: dict[str, float],
    bh: float,
    threshold: float = 0.5,
    alert: tuple[dict[str, float], float] | None = None,
    z_inputs: bool = False,
    present: bool = False,
) -> RiskRuntime:
    """A detector whose score is the mean z² (z = the raw values: centre 0, scale 1;
    threshold 1) and a risk model whose horizon logit is ``bh`` + Σ ``wh[input]`` · input
    (inputs not standardised: μ 0, σ 1); the 24-h one is always 0.5, the fault type "b".
    The alert logit is ``alert`` (weights, bias) over 168 h; without it, the horizon's."""
    f = len(FEATURES)
    det = FittedDetector(
        asset_type="pump",
        feature_names=FEATURES,
        kind="zscore",
        baseline_mode="fleet",
        fleet=Baseline(center=np.zeros(f), scale=np.ones(f)),
        scorer=Scorer(m=np.eye(f), r=np.zeros((f, f)), a=1 / f, b=0.0),
        threshold=1.0,
        target_far=0.01,
    )
    where = write_detector(det, folder, WindowSpec(size=12, hop=12, interval_s=300.0))
    z = (np.zeros((1, f)), FEATURES) if z_inputs else ()
    _, names = risk.risk_features(
        np.zeros(1),
        np.zeros(1),
        np.zeros((1, f)),
        SIGNALS,
        *z,
        present=np.ones((1, f), dtype=bool) if present else None,
    )
    n = len(names)
    model = risk.RiskModel(
        asset_type="pump",
        horizon_h=72.0,
        feature_names=names,
        mu=np.zeros(n),
        sd=np.ones(n),
        w24=np.zeros(n),
        b24=0.0,
        wh=np.array([wh.get(name, 0.0) for name in names]),
        bh=bh,
        alert_horizon_h=72.0 if alert is None else 168.0,
        wa=np.array([(wh if alert is None else alert[0]).get(name, 0.0) for name in names]),
        ba=bh if alert is None else alert[1],
        fault_types=["a", "b"],
        wf=np.zeros((n, 2)),
        bf=np.array([0.0, 1.0]),
        threshold=threshold,
    )
    risk.write_risk(model, where)
    return RiskRuntime.load(folder)


def test_a_risk_model_on_the_standardised_features_means(tmp_path: Path) -> None:
    """A model fitted with the z-mean inputs gets each feature's trailing 72-h mean z: a
    current drifting up by 2 robust scales over three days raises the alert (which the
    anomaly score alone, the mean z², does not tell from a drop), and the alert is
    explained by the current's signal."""
    name = f"current_l1__mean{risk.Z_SUFFIX}"
    rt = _hand_made(tmp_path, {}, _logit(0.1), alert=({name: 2.0}, -2.0), z_inputs=True)
    t = START + np.arange(37) * 7200.0  # three days of windows, one every 2 h
    drift = np.column_stack([np.zeros(37), np.zeros(37), np.linspace(0.0, 4.0, 37)])
    (got,) = rt.assess("pump", t, drift)
    zmean = drift[1:, 2].mean()  # the windows of the trailing 72 h: (t - 72 h, t]
    assert got.p_alert == pytest.approx(1 / (1 + math.exp(-(2.0 * zmean - 2.0))), abs=1e-6)
    assert got.alert and [s.signal for s in got.top_signals] == ["current_l1"]
    (drop,) = rt.assess("pump", t, -drift)
    assert drop.anomaly_score == pytest.approx(got.anomaly_score)
    assert not drop.alert
    assert drop.p_alert == pytest.approx(1 / (1 + math.exp(2.0 * zmean + 2.0)), abs=1e-6)


def test_risk_inputs_of_the_standardised_features() -> None:
    """The trailing 72-h mean of each feature's z, missing z counting as 0."""
    t = np.arange(5) * 24 * H  # one window a day: the 72-h mean spans the last 3
    z = np.array([[0.0, 1.0], [3.0, 1.0], [6.0, np.nan], [9.0, 1.0], [12.0, 1.0]])
    features = ["a__mean", "b-a__maximum"]
    x, names = risk.risk_features(t, np.zeros(5), np.zeros((5, 2)), ["a", "b-a"], z, features)
    assert names[-2:] == ["a__mean__z_mean_72h", "b-a__maximum__z_mean_72h"]
    np.testing.assert_allclose(x[:, -2], [0.0, 1.5, 3.0, 6.0, 9.0])
    np.testing.assert_allclose(x[:, -1], [1.0, 1.0, 2 / 3, 2 / 3, 2 / 3])
    plain, plain_names = risk.risk_features(t, np.zeros(5), np.zeros((5, 2)), ["a", "b-a"])
    assert plain_names == names[:-2]
    np.testing.assert_array_equal(plain, x[:, :-2])
    with pytest.raises(ValueError, match=r"z of shape \(5, 2\) for 5 windows of 1 features"):
        risk.risk_features(t, np.zeros(5), np.zeros((5, 2)), ["a", "b-a"], z, features[:1])
    m = input_signals(names, ["a", "b-a"])
    assert m[-2:].tolist() == [[1, 0], [0, 1]]  # each belongs to its feature's signal


def test_risk_inputs_over_the_windows_with_a_value() -> None:
    """With ``present``, each feature's z is also averaged over the windows of the trailing
    72 h where it had a value (0 where it had none), after the means over all windows."""
    t = np.arange(6) * 24 * H
    z = np.array(
        [
            [4.0, np.nan],
            [np.nan, np.nan],
            [np.nan, 2.0],
            [1.0, np.nan],
            [np.nan, np.nan],
            [3.0, 5.0],
        ]
    )
    features = ["a__mean", "b-a__maximum"]
    args = (t, np.zeros(6), np.zeros((6, 2)), ["a", "b-a"], np.nan_to_num(z), features)
    plain, plain_names = risk.risk_features(*args)
    x, names = risk.risk_features(*args, present=np.isfinite(z))
    assert names[: len(plain_names)] == plain_names
    np.testing.assert_array_equal(x[:, : len(plain_names)], plain)
    assert names[-2:] == ["a__mean__z_present_mean_72h", "b-a__maximum__z_present_mean_72h"]
    np.testing.assert_allclose(x[:, -2], [4.0, 4.0, 4.0, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(x[:, -1], [0.0, 0.0, 2.0, 2.0, 2.0, 5.0])
    np.testing.assert_allclose(x[:, -4], [4.0, 2.0, 4 / 3, 1 / 3, 1 / 3, 4 / 3])  # idle = 0
    m = input_signals(names, ["a", "b-a"])
    assert m[-2:].tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="present z means need z"):
        risk.risk_features(*args[:4], present=np.isfinite(z))
    with pytest.raises(ValueError, match=r"present of shape \(6, 1\) for z of shape \(6, 2\)"):
        risk.risk_features(*args, present=np.isfinite(z[:, :1]))


def test_an_idle_weekend_keeps_the_alert_of_a_model_on_the_present_means(
    tmp_path: Path,
) -> None:
    """A current 3 robust scales high for a day, then two days with no value (the unit
    idle): a model on the means over the windows with a value keeps its alert, one on the
    means over all windows loses it as the idle windows count 0."""
    t = START + np.arange(37) * 7200.0  # three days of windows, one every 2 h
    x = np.zeros((37, 3))
    x[:13, 2] = 3.0  # the first day high
    x[13:, 2] = np.nan  # then idle
    runs = {}
    for present, suffix in ((False, risk.Z_SUFFIX), (True, risk.Z_PRESENT_SUFFIX)):
        rt = _hand_made(
            tmp_path / suffix,
            {},
            _logit(0.1),
            alert=({f"current_l1__mean{suffix}": 2.0}, -4.0),
            z_inputs=True,
            present=present,
        )
        (runs[present],) = rt.assess("pump", t, x)
    assert runs[True].p_alert == pytest.approx(1 / (1 + math.exp(-(2.0 * 3.0 - 4.0))), abs=1e-6)
    assert runs[True].alert and [s.signal for s in runs[True].top_signals] == ["current_l1"]
    zmean = 3.0 * 12 / 36  # the trailing 72 h: (t - 72 h, t] holds 36 windows, 12 high
    assert runs[False].p_alert == pytest.approx(1 / (1 + math.exp(-(2.0 * zmean - 4.0))), abs=1e-6)
    assert not runs[False].alert


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize(
    ("p72", "v", "health", "alert"),
    [
        (1e-9, 0.0, 100, False),  # no risk, no anomaly
        (0.25, 0.0, 75, False),
        (0.25, math.sqrt(3), 75, False),  # score 1 = the detector's threshold: untempered
        (0.5, 0.0, 50, True),  # p72 at the risk threshold alerts
        (0.49, 0.0, 51, False),
        (0.5, math.sqrt(6), 25, True),  # score 2 = twice the threshold: health halved
        (0.9, 3.0, 3, True),  # score 3: 100 · 0.1 / 3
        (1 - 1e-9, 0.0, 0, True),
    ],
)
def test_health_and_alert(tmp_path: Path, p72: float, v: float, health: int, alert: bool) -> None:
    rt = _hand_made(tmp_path, {}, _logit(p72))
    (a,) = rt.assess("pump", np.array([START]), np.array([[v, 0.0, 0.0]]))
    assert a.p72 == pytest.approx(p72, abs=1e-6)
    assert a.anomaly_score == pytest.approx(v * v / 3, rel=1e-6)
    assert a.anomaly_threshold == 1.0
    assert (a.health, a.alert) == (health, alert)
    assert a.p24 == pytest.approx(0.5) and a.fault_type == "b"
    assert a.fault_probs == pytest.approx({"a": 1 / (1 + math.e), "b": math.e / (1 + math.e)})
    assert a.top_signals == ()  # no input pushes the risk up


def test_alerts_follow_the_alert_horizon_and_health_the_72_hour_risk(tmp_path: Path) -> None:
    """A failure likely within 7 days but not within 3: an alert, with the health of the
    72-h risk, explained by what drives the alert logit."""
    rt = _hand_made(
        tmp_path, {}, _logit(0.1), alert=({"vibration_rms__share_mean_72h": 1.0}, _logit(0.5))
    )
    (a,) = rt.assess("pump", np.array([START]), np.array([[0.0, 1.0, 0.0]]))
    assert a.p72 == pytest.approx(0.1, abs=1e-6) and a.health == 90
    share = math.log1p(1 / 3)  # vibration_rms's anomaly share of the score 1/3
    assert a.p_alert == pytest.approx(1 / (1 + math.exp(-share)), abs=1e-6)
    assert (a.alert, a.alert_horizon_h, a.horizon_h) == (True, 168.0, 72.0)
    assert [s.signal for s in a.top_signals] == ["vibration_rms"]
    # the same reading under a model alerting on its 72-h risk: no alert
    quiet = _hand_made(tmp_path / "72", {}, _logit(0.1))
    (b,) = quiet.assess("pump", np.array([START]), np.array([[0.0, 1.0, 0.0]]))
    assert (b.alert, b.p_alert, b.alert_horizon_h) == (False, pytest.approx(0.1), 72.0)


def test_a_risk_model_fitted_before_the_alert_horizon_still_serves_and_alerts_on_p72(
    tmp_path: Path,
) -> None:
    """A graph with the four outputs of earlier fits (no ``p_alert``) and a ``risk.json``
    without ``alert_horizon_h``."""
    _hand_made(tmp_path, {}, _logit(0.6))
    folder = tmp_path / "pump" / risk.RISK_DIR
    graph = onnx.load_from_string((folder / risk.RISK_ONNX).read_bytes())
    kept = [o for o in graph.graph.output if o.name != "p_alert"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    data = graph.SerializeToString()
    (folder / risk.RISK_ONNX).write_bytes(data)
    meta = json.loads((folder / risk.RISK_JSON).read_text())
    del meta["alert_horizon_h"]
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / risk.RISK_JSON).write_text(json.dumps(meta))
    rt = RiskRuntime.load(tmp_path)
    (a,) = rt.assess("pump", np.array([START]), np.array([[0.0, 0.0, 0.0]]))
    assert (a.p72, a.p_alert) == (pytest.approx(0.6, abs=1e-6), pytest.approx(0.6, abs=1e-6))
    assert (a.alert, a.alert_horizon_h) == (True, 72.0)


def test_top_signals_are_the_positive_shares_of_the_risk(tmp_path: Path) -> None:
    """discharge_temp's anomaly share is 1 for two days, then climbs 0.5 a day for three;
    the others stay at 1/3. The risk weighs the 72-h share means +1, +2 and −1 (current_l1
    lowers the risk: left out)."""
    weights = {
        "discharge_temp__share_mean_72h": 1.0,
        "vibration_rms__share_mean_72h": 2.0,
        "current_l1__share_mean_72h": -1.0,
    }
    rt = _hand_made(tmp_path, weights, 0.0)
    t = START + np.arange(5 * 24 + 1) * H
    days = (t - t[0]) / DAY
    share_a = 1 + 0.5 * np.clip(days - 2, 0, None)
    x = np.ones((t.size, 3))
    x[:, 0] = np.sqrt(3 * share_a)  # contribution z²/3 = share_a
    got = rt.assess("pump", t, x, last=2)
    assert [a.ts for a in got] == t[-2:].tolist()
    a = got[-1]
    trailing = t > t[-1] - 72 * H  # the ramp only: its slope is 0.5 a day
    c = [float(np.log1p(share_a[trailing]).mean()), 2 * math.log1p(1 / 3)]
    assert [s.signal for s in a.top_signals] == ["discharge_temp", "vibration_rms"]
    assert [s.share for s in a.top_signals] == pytest.approx([c[0] / sum(c), c[1] / sum(c)])
    assert [s.trend_per_day for s in a.top_signals] == pytest.approx([0.5, 0.0], abs=1e-4)
    assert a.p72 == pytest.approx(1 / (1 + math.exp(-(sum(c) - math.log1p(1 / 3)))), abs=1e-6)


@pytest.mark.parametrize(
    ("p", "score", "threshold", "expected"),
    [
        (0.0, 0.5, 2.0, 100),
        (0.2, 2.0, 2.0, 80),
        (0.2, 4.0, 2.0, 40),
        (0.2, 40.0, 2.0, 4),
        (0.004, 0.0, 2.0, 100),  # rounds
        (0.006, 0.0, 2.0, 99),
        (1.0, 0.0, 2.0, 0),
        (0.2, math.nan, 2.0, 80),  # no score: untempered
        (0.2, 5.0, 0.0, 80),  # no threshold: untempered
        (math.nan, 1.0, 2.0, 0),
    ],
)
def test_health_index(p: float, score: float, threshold: float, expected: int) -> None:
    assert health_index(p, score, threshold) == expected


def test_top_signals_ranking() -> None:
    names = ["score__mean_24h", "a__share_mean_24h", "b__share_mean_24h", "score__trend"]
    m = input_signals(names, ["a", "b"])
    assert m.tolist() == [[0, 0], [1, 0], [0, 1], [0, 0]]
    t = np.arange(4.0) * H
    shares = np.zeros((4, 2))
    # the score inputs' net counts in the denominator, negative nets nowhere
    got = top_signals(np.array([2.0, 1.0, -5.0, 1.0]), m, ["a", "b"], t, shares, 3)
    assert [(s.signal, s.share) for s in got] == [("a", 0.25)]
    got = top_signals(np.array([0.0, 1.0, 3.0, 0.0]), m, ["a", "b"], t, shares, 3)
    assert [(s.signal, s.share) for s in got] == [("b", 0.75), ("a", 0.25)]
    got = top_signals(np.array([-3.0, 1.0, 3.0, 1.0]), m, ["a", "b"], t, shares, 3)
    assert [(s.signal, s.share) for s in got] == [("b", 0.75), ("a", 0.25)]
    assert top_signals(np.array([-1.0, 0.0, -2.0, 0.0]), m, ["a", "b"], t, shares, 3) == ()
    assert len(top_signals(np.ones(4), m, ["a", "b"], t, shares, 3, k=1)) == 1
    # a signal's inputs are netted: +2 on one span and −3 on the other lowers the risk
    m2 = input_signals(["score__mean_24h", "a__share_mean_24h", "a__share_mean_72h"], ["a"])
    assert top_signals(np.array([1.0, 2.0, -3.0]), m2, ["a"], t[:3], shares[:3, :1], 2) == ()
    got = top_signals(np.array([1.0, 4.0, -1.0]), m2, ["a"], t[:3], shares[:3, :1], 2)
    assert [(s.signal, s.share) for s in got] == [("a", 0.75)]


def test_signal_shares_sum_features_per_signal() -> None:
    names = ["a__mean", "b__mean", "a__maximum", "a-b__mean"]
    contrib = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, 0.5, 0.0]])
    shares, signals = risk.signal_shares(names, contrib)
    assert signals == ["a", "b", "a-b"]
    assert shares.tolist() == [[4.0, 2.0, 4.0], [1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match=r"shape \(2, 3\) for 4 features"):
        risk.signal_shares(names, contrib[:, :3])


# -- which windows make a device's baseline ------------------------------------------------
ORIGIN = 1_000_000.0  # a device's origin (epoch s)


@pytest.mark.parametrize(
    ("now_days", "block_days", "rolling_days"),
    [
        (-3, 0, (0, 0)),  # before the origin: the first block, an empty lagged span
        (0, 0, (0, 0)),
        (6.9, 0, (0, 0)),
        (13.9, 7, (0, 0)),  # the lag still reaches back before the origin
        (21, 21, (0, 7)),  # a week of windows since the origin, clipped there
        (30, 28, (0, 14)),
        (44, 42, (0, 28)),
        (50, 49, (5, 35)),  # a full 30-day span, ending 14 days before the block
        (365.5, 364, (320, 350)),
    ],
)
def test_the_lagged_span_follows_the_block(
    now_days: float, block_days: float, rolling_days: tuple[float, float]
) -> None:
    p = BaselinePolicy()  # 14 first days; 14 days' lag, 30 days' span, rebuilt weekly
    block = p.block(ORIGIN, ORIGIN + now_days * DAY)
    assert block == ORIGIN + block_days * DAY
    assert p.rolling(ORIGIN, block) == tuple(ORIGIN + d * DAY for d in rolling_days)
    assert p.first(ORIGIN) == (ORIGIN, ORIGIN + 14 * DAY)


@pytest.mark.parametrize(
    ("rows", "hop_s", "enough"),
    [
        (360, 3600.0, True),  # half of a 30-day span of hourly windows
        (359, 3600.0, False),
        (4320, 300.0, True),  # half of it at 5-minute windows
        (4319, 300.0, False),
        (MIN_ASSET_WINDOWS, 86400.0 * 10, True),  # 3 windows would fill half: the floor
        (MIN_ASSET_WINDOWS - 1, 86400.0 * 10, False),
    ],
)
def test_a_rolling_span_is_used_once_it_is_half_full(rows: int, hop_s: float, enough: bool) -> None:
    assert BaselinePolicy().enough(rows, hop_s) is enough


@pytest.mark.parametrize(
    ("rows", "kept"),
    [
        (0, 0),
        (325, 325),  # 14 days of hourly windows: all of them
        (360, 360),
        (361, 181),  # every 2nd
        (709, 355),  # 30 days of hourly windows
        (8640, 360),  # 30 days of 5-minute windows: every 24th
    ],
)
def test_a_long_reference_is_thinned_evenly_to_the_newest(rows: int, kept: int) -> None:
    idx = np.arange(rows)[BaselinePolicy().thinned(rows)]
    assert idx.size == kept <= 360
    if rows:
        assert idx[-1] == rows - 1
        assert np.unique(np.diff(idx)).size <= 1  # evenly spaced


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"first_days": 0}, "first_days"),
        ({"span_days": -1}, "span_days"),
        ({"refresh_days": 0}, "refresh_days"),
        ({"lag_days": -1}, "lag_days"),
        ({"min_fill": 0}, "min_fill"),
        ({"min_fill": 1.5}, "min_fill"),
        ({"span_days": float("nan")}, "span_days"),
        ({"max_windows": MIN_ASSET_WINDOWS - 1}, "max_windows"),
    ],
)
def test_a_policy_that_cannot_work_is_refused_by_name(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        BaselinePolicy(**kwargs)
