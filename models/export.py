"""A fitted detector as the gateway runs it: ONNX graph, manifest, signature, and back.

Model folder (``edgewatch-models fit --out MODEL_DIR``; the folder is also a valid
``models.dir`` for the agent, one sub-folder per asset type)::

    MODEL_DIR/
      card.json, card.md            the model card (models.card)
      compressor/
        manifest.json               edge_agent.models.ModelManifest, canonical JSON
        manifest.sig                Ed25519 signature when fitted with --key
        compressor-anomaly.v1.onnx  the graph below
        detector.json               what offline scoring needs besides the graph: window
                                    size and hop in rows, baseline mode, fleet baseline

The graph follows :mod:`edge_agent.scoring`'s convention (input ``features`` float32
[batch, n]; outputs ``score`` [batch] and ``contributions`` [batch, n]) and computes
exactly :class:`models.anomaly.Scorer` on the fleet baseline::

    z = clip((features - center) / scale, ±Z_CLIP)
    contributions = a · z ∘ (z M) + b · (z R)²,   score = Σ contributions

A per-asset baseline is applied *before* the graph, by handing it the raw values that the
fleet baseline standardises to the asset's own z (:meth:`Baseline.to_raw`), so offline
scoring runs the very graph the gateway runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from edge_agent.features import FEATURE_SET_VERSION
from edge_agent.models import (
    CONTRIBUTIONS_OUTPUT,
    INPUT_NAME,
    MANIFEST_FILE,
    SCORE_OUTPUT,
    SIGNATURE_FILE,
    ModelManifest,
    canonical_json,
    sign_manifest,
)
from models.anomaly import Z_CLIP, Baseline, FittedDetector, Scorer
from models.errors import ArtifactError

F64 = npt.NDArray[np.float64]
DETECTOR_FILE = "detector.json"
OPSET = 17


def asset_folder_name(asset_type: str) -> str:
    """The folder (and manifest asset type) for an asset type: lower case, [a-z0-9_]."""
    slug = re.sub(r"[^a-z0-9_]+", "_", asset_type.strip().lower()).strip("_")
    if not slug:
        raise ArtifactError(f"asset type {asset_type!r} has no letters or digits")
    return slug if slug[0].isalpha() else f"a_{slug}"


def build_onnx(fleet: Baseline, scorer: Scorer, name: str) -> bytes:
    """The detector's graph (see the module docstring)."""
    n = int(fleet.center.size)
    f32 = np.float32
    inits = [
        numpy_helper.from_array(fleet.center.astype(f32), "center"),
        numpy_helper.from_array(fleet.scale.astype(f32), "scale"),
        numpy_helper.from_array(np.asarray(-Z_CLIP, dtype=f32), "lo"),
        numpy_helper.from_array(np.asarray(Z_CLIP, dtype=f32), "hi"),
        numpy_helper.from_array(scorer.m.astype(f32), "M"),
        numpy_helper.from_array(scorer.r.astype(f32), "R"),
        numpy_helper.from_array(np.asarray([scorer.a], dtype=f32), "a"),
        numpy_helper.from_array(np.asarray([scorer.b], dtype=f32), "b"),
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "center"], ["d"]),
        helper.make_node("Div", ["d", "scale"], ["zr"]),
        helper.make_node("Clip", ["zr", "lo", "hi"], ["z"]),
        helper.make_node("MatMul", ["z", "M"], ["zm"]),
        helper.make_node("Mul", ["z", "zm"], ["t"]),
        helper.make_node("Mul", ["t", "a"], ["ct"]),
        helper.make_node("MatMul", ["z", "R"], ["res"]),
        helper.make_node("Mul", ["res", "res"], ["q"]),
        helper.make_node("Mul", ["q", "b"], ["cq"]),
        helper.make_node("Add", ["ct", "cq"], [CONTRIBUTIONS_OUTPUT]),
        helper.make_node("ReduceSum", [CONTRIBUTIONS_OUTPUT, "axis1"], [SCORE_OUTPUT], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", n])],
        [
            helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info(CONTRIBUTIONS_OUTPUT, TensorProto.FLOAT, ["batch", n]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    model.producer_name = "edgewatch-models"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@dataclass(frozen=True)
class WindowSpec:
    size: int
    """Rows per window."""
    hop: int
    """Rows between window ends offline."""
    interval_s: float
    """Typical sample interval of the training data."""

    @property
    def window_s(self) -> float:
        return self.size * self.interval_s


def write_detector(
    det: FittedDetector,
    out_dir: Path,
    windows: WindowSpec,
    *,
    version: int = 1,
    created: datetime | None = None,
    key: Ed25519PrivateKey | None = None,
) -> Path:
    """Write one asset type's model folder under ``out_dir``; returns the folder."""
    asset = asset_folder_name(det.asset_type)
    model_id = f"{asset}-anomaly-{det.kind}"
    folder = out_dir / asset
    folder.mkdir(parents=True, exist_ok=True)
    onnx_bytes = build_onnx(det.fleet, det.scorer, model_id)
    file = f"{model_id}.v{version}.onnx"
    (folder / file).write_bytes(onnx_bytes)
    created = created or datetime.now(UTC).replace(microsecond=0)
    manifest = ModelManifest(
        model_id=model_id,
        version=version,
        asset_type=asset,
        feature_set_version=FEATURE_SET_VERSION,
        feature_names=det.feature_names,
        window_s=windows.window_s,
        threshold=det.threshold,
        fill_values=[float(v) for v in det.fleet.center],
        file=file,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        created=created,
        outputs={
            SCORE_OUTPUT: f"{det.kind} anomaly score, about 1 when healthy",
            CONTRIBUTIONS_OUTPUT: "each feature's share of the score",
        },
    )
    manifest_bytes = canonical_json(manifest.model_dump(mode="json", exclude_none=True))
    (folder / MANIFEST_FILE).write_bytes(manifest_bytes)
    if key is not None:
        (folder / SIGNATURE_FILE).write_bytes(sign_manifest(manifest_bytes, key).to_json())
    extra = {
        "asset_type": det.asset_type,
        "kind": det.kind,
        "baseline": det.baseline_mode,
        "window_rows": windows.size,
        "hop_rows": windows.hop,
        "interval_s": windows.interval_s,
        "target_far": det.target_far,
        "info": det.info,
        "asset_scale_floor": None if det.scale_floor is None else det.scale_floor.tolist(),
    }
    (folder / DETECTOR_FILE).write_text(json.dumps(extra, indent=2) + "\n", encoding="utf-8")
    return folder


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (unencrypted)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactError(f"{path}: not an Ed25519 key")
    return key


def sign_folder(model_dir: Path, key: Ed25519PrivateKey) -> list[tuple[Path, str]]:
    """Sign the manifest of every detector in ``model_dir`` with ``key`` (Ed25519), as the
    model publisher does before shipping to gateways; (manifest path, key id) of each."""
    from edge_agent.models import MANIFEST_FILE, SIGNATURE_FILE, sign_manifest

    signed = []
    for det in load_detectors(model_dir).values():
        manifest = det.folder / MANIFEST_FILE
        signature = sign_manifest(manifest.read_bytes(), key)
        (det.folder / SIGNATURE_FILE).write_bytes(signature.to_json())
        signed.append((manifest, signature.key_id))
    return signed


def cpu_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """An onnxruntime session on the CPU, one thread per inference (offline scoring runs
    one recording after another)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


@dataclass
class LoadedDetector:
    """A model folder read back for offline scoring, running its ONNX graph."""

    folder: Path
    manifest: ModelManifest
    asset_type: str
    """As the dataset names it (the folder name is its slug)."""
    baseline_mode: str
    windows: WindowSpec
    fleet: Baseline
    session: ort.InferenceSession
    scale_floor: F64 | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest.feature_names)

    @property
    def threshold(self) -> float:
        return float(self.manifest.threshold)

    def run(self, raw: F64) -> tuple[F64, F64]:
        """Scores and contributions of feature rows (NaN is filled with the fleet center,
        i.e. z = 0, as the gateway fills it)."""
        x = np.where(np.isfinite(raw), raw, self.fleet.center).astype(np.float32)
        if x.shape[0] == 0:
            return np.empty(0), np.empty((0, x.shape[1]))
        score, contrib = self.session.run([SCORE_OUTPUT, CONTRIBUTIONS_OUTPUT], {INPUT_NAME: x})
        return np.asarray(score, dtype=np.float64), np.asarray(contrib, dtype=np.float64)


def load_detectors(model_dir: Path) -> dict[str, LoadedDetector]:
    """Every asset type's detector in a model folder, by the dataset's asset type."""
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: no such model folder")
    out: dict[str, LoadedDetector] = {}
    for folder in sorted(p for p in model_dir.iterdir() if (p / DETECTOR_FILE).is_file()):
        out_det = _load_one(folder)
        out[out_det.asset_type] = out_det
    if not out:
        raise ArtifactError(f"{model_dir}: no detector folders (<asset>/{DETECTOR_FILE})")
    return out


def _load_one(folder: Path) -> LoadedDetector:
    try:
        manifest = ModelManifest.model_validate_json((folder / MANIFEST_FILE).read_bytes())
        extra: dict[str, Any] = json.loads((folder / DETECTOR_FILE).read_text(encoding="utf-8"))
        onnx_bytes = (folder / manifest.file).read_bytes()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder}: cannot read the model ({exc})") from None
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.sha256:
        raise ArtifactError(f"{folder / manifest.file}: sha256 differs from the manifest")
    model = onnx.load_from_string(onnx_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    fleet = Baseline(
        center=inits["center"].astype(np.float64), scale=inits["scale"].astype(np.float64)
    )
    return LoadedDetector(
        folder=folder,
        manifest=manifest,
        asset_type=str(extra["asset_type"]),
        baseline_mode=str(extra["baseline"]),
        windows=WindowSpec(
            size=int(extra["window_rows"]),
            hop=int(extra["hop_rows"]),
            interval_s=float(extra["interval_s"]),
        ),
        fleet=fleet,
        session=cpu_session(onnx_bytes),
        scale_floor=None
        if extra.get("asset_scale_floor") is None
        else np.asarray(extra["asset_scale_floor"], dtype=np.float64),
    )
