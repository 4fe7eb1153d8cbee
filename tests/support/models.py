"""Tiny ONNX models built with onnx.helper, and a publisher that signs manifests with a
test Ed25519 key, as ``edgewatch-models`` will. Shared by the model tests and the agent's
end-to-end tests (``tests`` is on pytest's pythonpath)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from edge_agent.features import FEATURE_SET_VERSION
from edge_agent.models import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    ManifestSignature,
    canonical_json,
    sign_manifest,
)

FEATURES = [
    "discharge_temp__mean",
    "discharge_temp__standard_deviation",
    "vibration_rms__root_mean_square",
    "current_l1__mean",
]
MU = [70.0, 1.0, 2.0, 10.0]
SD = [5.0, 0.5, 0.5, 2.0]
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def zscore_onnx(
    mu: Sequence[float],
    sd: Sequence[float],
    *,
    contributions: bool = True,
    input_name: str = "features",
) -> bytes:
    """score = mean(((x - mu) / sd)²); contributions = ((x - mu) / sd)² / n."""
    n = len(mu)
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    contrib = helper.make_tensor_value_info("contributions", TensorProto.FLOAT, ["batch", n])
    inits = [
        numpy_helper.from_array(np.asarray(mu, dtype=np.float32), "mu"),
        numpy_helper.from_array(np.asarray(sd, dtype=np.float32), "sd"),
        numpy_helper.from_array(np.asarray([float(n)], dtype=np.float32), "n"),
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Sub", [input_name, "mu"], ["d"]),
        helper.make_node("Div", ["d", "sd"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("Div", ["z2", "n"], ["contributions"]),
        helper.make_node("ReduceSum", ["contributions", "axis1"], ["score"], keepdims=0),
    ]
    outputs = [score, contrib] if contributions else [score]
    graph = helper.make_graph(nodes, "zscore", [x], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass
class Update:
    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: ManifestSignature
    onnx_bytes: bytes

    def args(self) -> tuple[bytes, ManifestSignature, bytes]:
        return self.manifest_bytes, self.signature, self.onnx_bytes


@dataclass
class Publisher:
    """Signs model updates with its key, as the model publisher does."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def public_pem(self, path: Path) -> Path:
        path.write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return path

    def update(
        self,
        version: int,
        *,
        mu: Sequence[float] = MU,
        sd: Sequence[float] = SD,
        asset_type: str = "compressor",
        threshold: float = 4.0,
        onnx_bytes: bytes | None = None,
        expires: datetime | None = None,
        **extra: Any,
    ) -> Update:
        model = onnx_bytes if onnx_bytes is not None else zscore_onnx(mu, sd)
        manifest: dict[str, Any] = {
            "manifest_version": 1,
            "model_id": "cc-zscore",
            "version": version,
            "asset_type": asset_type,
            "feature_set_version": FEATURE_SET_VERSION,
            "feature_names": FEATURES,
            "window_s": 300,
            "threshold": threshold,
            "fill_values": list(mu),
            "file": f"cc-zscore.v{version}.onnx",
            "sha256": hashlib.sha256(model).hexdigest(),
            "created": (NOW - timedelta(days=1)).isoformat(),
            "outputs": {"score": "mean squared z-score", "contributions": "squared z / n"},
            **extra,
        }
        if expires is not None:
            manifest["expires"] = expires.isoformat()
        data = canonical_json(manifest)
        return Update(manifest, data, sign_manifest(data, self.key), model)

    def write_folder(self, folder: Path, update: Update, *, signed: bool = True) -> Path:
        """A model folder as copied in by hand (or shipped in models/artifacts)."""
        folder.mkdir(parents=True)
        (folder / MANIFEST_FILE).write_bytes(update.manifest_bytes)
        (folder / update.manifest["file"]).write_bytes(update.onnx_bytes)
        if signed:
            (folder / SIGNATURE_FILE).write_bytes(update.signature.to_json())
        return folder




def run_models(command: str, *args: str | Path) -> None:
    """``edgewatch-models COMMAND ARGS... --no-progress``, which must succeed."""
    from models.cli import main

    assert main([command, *(str(a) for a in args), "--no-progress"]) == 0
