"""Anomaly models: signed manifests, the model folder, and verified updates.

A model is an ONNX file plus a manifest (JSON) signed with Ed25519. The folder
(``ModelSettings.dir``) holds one running model per asset type::

    models/
      compressor -> compressor.v3    the running model: a symlink (or, for a model copied
                                     in by hand, a plain folder) named after the asset type
      compressor.v3/                 manifest.json, manifest.sig, the ONNX file
      compressor.v2/                 the previous one, kept for a manual rollback
      .incoming-*/                   an install in progress; removed at start

Manifest (``manifest.json``; the signer writes it with :func:`canonical_json`, the agent
verifies the bytes as they are, never a re-serialisation)::

    {"manifest_version": 1, "model_id": "cc-zscore", "version": 3,
     "asset_type": "compressor", "feature_set_version": 2,
     "feature_names": ["discharge_temp__mean", "vibration_rms__root_mean_square", ...],
     "window_s": 300, "threshold": 4.2, "fill_values": [71.3, 1.8, ...],
     "file": "cc-zscore.v3.onnx", "sha256": "<hex of the ONNX file>",
     "created": "2025-06-01T00:00:00Z", "expires": "2025-07-01T00:00:00Z",
     "outputs": {"score": "mean squared z-score", "contributions": "squared z / n"}}

``version`` is monotonic per asset type. ``expires`` (optional) is the last moment the
manifest may be *installed*: it stops an old signed update from being replayed later; a
model already installed keeps running after it (logged at WARNING at start).

Signature (``manifest.sig``, detached)::

    {"alg": "ed25519", "key_id": "<16 hex>", "signature": "<base64 of 64 bytes>"}

over the exact bytes of ``manifest.json``. The key id is the first 16 hex digits of the
SHA-256 of the raw 32-byte public key. Trusted keys are PEM files (``trusted_keys``).

An update (:meth:`ModelStore.install_update`) is refused with :class:`UpdateRefused` and a
``reason`` token, the first that applies, in this order: ``malformed`` (signature document or
manifest unreadable), ``unknown_key``, ``bad_signature``, ``expired``, ``not_newer``
(version ≤ the running version), ``hash_mismatch`` (the ONNX file is not the one signed),
``incompatible`` (another feature set, or features this agent cannot compute),
``load_failed`` (onnxruntime cannot load it, its inputs and outputs do not follow
:mod:`edge_agent.scoring`'s convention, or a smoke inference on zeros fails), ``write_failed``.
A refused update changes nothing: the running model stays and keeps scoring. An accepted one
is written to a temporary folder, fsynced, renamed to ``{asset}.v{version}``, and made current
by atomically replacing the ``{asset}`` symlink; a crash at any point leaves either the old
or the new model complete.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import onnxruntime.capi.onnxruntime_pybind11_state as _ort_state
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.config import ModelSettings
from edge_agent.errors import ConfigError, ModelError, UpdateRefused
from edge_agent.features import (
    COMPATIBLE_FEATURE_SETS,
    FEATURE_SET_VERSION,
    check_feature_names,
)

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
INPUT_NAME = "features"
SCORE_OUTPUT = "score"
CONTRIBUTIONS_OUTPUT = "contributions"

_ASSET = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION_DIR = re.compile(r"^([a-z][a-z0-9_]*)\.v([0-9]+)$")
_INCOMING = ".incoming-"

# Everything onnxruntime raises (its pybind11 exceptions derive straight from Exception).
_ORT_ERRORS: tuple[type[BaseException], ...] = (
    *(v for v in vars(_ort_state).values() if isinstance(v, type) and issubclass(v, Exception)),
    RuntimeError,
    ValueError,
    TypeError,
)

FloatArray = npt.NDArray[np.float64]


class ModelManifest(BaseModel):
    """The signed description of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest_version: Literal[1] = 1
    model_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
    version: Annotated[int, Field(ge=1)]
    asset_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    feature_set_version: Annotated[int, Field(ge=1)]
    feature_names: Annotated[list[str], Field(min_length=1)]
    """Ordered: the model's input vector."""
    window_s: Annotated[float, Field(gt=0)]
    """Length of the windows the features were computed over in training."""
    threshold: float
    """Calibrated score threshold: a score above it is anomalous."""
    fill_values: list[float] | None = None
    """Per feature, what a missing (NaN) feature is replaced by (training means); default 0."""
    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.onnx$", max_length=128)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    created: AwareDatetime
    expires: AwareDatetime | None = None
    outputs: dict[str, str] = {}
    """What the outputs mean, for people."""

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if not math.isfinite(self.threshold):
            raise ValueError("threshold must be a finite number")
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError("feature_names has duplicates")
        if self.fill_values is not None:
            if len(self.fill_values) != len(self.feature_names):
                raise ValueError(
                    f"fill_values has {len(self.fill_values)} values for "
                    f"{len(self.feature_names)} features"
                )
            if not all(math.isfinite(v) for v in self.fill_values):
                raise ValueError("fill_values must be finite numbers")
        return self


@dataclass(frozen=True, slots=True)
class ManifestSignature:
    """A detached Ed25519 signature over a manifest's bytes."""

    key_id: str
    signature: bytes

    def to_json(self) -> bytes:
        doc = {
            "alg": "ed25519",
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }
        return canonical_json(doc)

    @classmethod
    def from_json(cls, data: bytes) -> ManifestSignature:
        """Parse a signature document; UpdateRefused("malformed") if it is not one."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("alg") != "ed25519":
                raise ValueError("not an ed25519 signature document")
            key_id, sig = doc["key_id"], doc["signature"]
            if not isinstance(key_id, str) or not isinstance(sig, str):
                raise ValueError("key_id and signature must be strings")
            raw = base64.b64decode(sig, validate=True)
        except (ValueError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
            raise UpdateRefused("malformed", f"signature document: {exc}") from None
        return cls(key_id=key_id, signature=raw)


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The bytes a signer writes: sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_manifest(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> ManifestSignature:
    """Sign manifest bytes (for the publisher: ``edgewatch-models`` and tests)."""
    return ManifestSignature(
        key_id=key_id(private_key.public_key()), signature=private_key.sign(manifest_bytes)
    )


def verify_signature(
    keys: Mapping[str, Ed25519PublicKey], data: bytes, signature: ManifestSignature
) -> str:
    """The id of the trusted key whose signature on ``data`` verifies; otherwise
    :class:`UpdateRefused` (``unknown_key`` or ``bad_signature``). Serves model manifests
    and config documents alike."""
    key = keys.get(signature.key_id)
    if key is None:
        raise UpdateRefused(
            "unknown_key",
            f"signed by key {signature.key_id}, which is not trusted "
            f"(trusted: {', '.join(sorted(keys)) or 'none'})",
        )
    try:
        key.verify(signature.signature, data)
    except InvalidSignature:
        raise UpdateRefused(
            "bad_signature", f"the signature by key {signature.key_id} does not verify"
        ) from None
    return signature.key_id


def load_trusted_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """Key id -> key, from PEM files; ConfigError names the file that is not an Ed25519 key."""
    keys: dict[str, Ed25519PublicKey] = {}
    for i, path in enumerate(paths):
        where = f"models.trusted_keys[{i}]"
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise ConfigError(str(path), where, f"cannot read the key: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(str(path), where, f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            got = type(key).__name__
            raise ConfigError(str(path), where, f"expected an Ed25519 key, got {got}")
        keys[key_id(key)] = key
    return keys


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A verified model with its onnxruntime session (immutable; safe to share)."""

    manifest: ModelManifest
    session: Any
    """The ``onnxruntime.InferenceSession``."""
    path: Path | None
    """Folder it was loaded from."""
    key_id: str | None
    """Key that signed it; None for an unsigned development install."""
    has_contributions: bool

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def asset_type(self) -> str:
        return self.manifest.asset_type

    @property
    def feature_names(self) -> list[str]:
        return self.manifest.feature_names

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    @property
    def fill_values(self) -> FloatArray:
        if self.manifest.fill_values is None:
            return np.zeros(len(self.manifest.feature_names), dtype=np.float64)
        return np.asarray(self.manifest.fill_values, dtype=np.float64)

    def run(self, features: npt.ArrayLike) -> tuple[float, FloatArray | None]:
        """Score one complete feature vector (no NaN): (score, contributions or None)."""
        x = np.asarray(features, dtype=np.float32).reshape(1, -1)
        if x.shape[1] != len(self.feature_names):
            raise ModelError(
                f"model {self.model_id} v{self.version} takes {len(self.feature_names)} "
                f"features, got {x.shape[1]}"
            )
        names = [SCORE_OUTPUT] + ([CONTRIBUTIONS_OUTPUT] if self.has_contributions else [])
        try:
            out = self.session.run(names, {INPUT_NAME: x})
        except _ORT_ERRORS as exc:
            raise ModelError(f"model {self.model_id} v{self.version}: {exc}") from exc
        score_arr = np.asarray(out[0], dtype=np.float64).reshape(-1)
        if score_arr.size != 1:
            raise ModelError(
                f"model {self.model_id} v{self.version}: score has {score_arr.size} values"
            )
        contributions = None
        if self.has_contributions:
            contributions = np.asarray(out[1], dtype=np.float64).reshape(-1)
            if contributions.size != x.shape[1]:
                raise ModelError(
                    f"model {self.model_id} v{self.version}: {contributions.size} "
                    f"contributions for {x.shape[1]} features"
                )
        return float(score_arr[0]), contributions


def _utcnow_from(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class ModelStore:
    """The running model of each asset type, and the only way to replace one.

    Thread-safe: :meth:`model_for` may be called from the scoring loop while
    :meth:`install_update` runs; a scorer holding a :class:`LoadedModel` finishes with it.
    """

    def __init__(self, settings: ModelSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.dir = settings.dir
        self._clock = clock
        self._keys = load_trusted_keys(list(settings.trusted_keys))
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        self.refused: dict[str, str] = {}
        """Asset type -> why its model folder was not loaded at start."""
        if settings.allow_unsigned:
            log.warning("models: allow_unsigned is on; this is for development only")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._remove_incoming()
        self._recover_pointers()
        self._load_all()

    # ---- reading ---------------------------------------------------------------------

    def model_for(self, asset_type: str) -> LoadedModel | None:
        """The running model of an asset type, if one is loaded."""
        with self._lock:
            return self._models.get(asset_type)

    def models(self) -> dict[str, LoadedModel]:
        """Asset type -> running model."""
        with self._lock:
            return dict(self._models)

    @property
    def trusted_key_ids(self) -> list[str]:
        return sorted(self._keys)

    # ---- start-up --------------------------------------------------------------------

    def _remove_incoming(self) -> None:
        for entry in self.dir.iterdir():
            name = entry.name
            if name.startswith(_INCOMING) or (name.startswith(".") and name.endswith(".link")):
                log.warning("models: removing %s left by an interrupted install", name)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def _versions(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for entry in self.dir.iterdir():
            m = _VERSION_DIR.match(entry.name)
            if m and entry.is_dir() and not entry.is_symlink():
                found.setdefault(m.group(1), []).append(int(m.group(2)))
        return found

    def _recover_pointers(self) -> None:
        """An asset with version folders but no pointer (a crash while a hand-installed
        folder was being replaced): point it at its newest version folder, which is only
        ever renamed into place after it was fully verified."""
        for asset, versions in self._versions().items():
            pointer = self.dir / asset
            if not pointer.exists() and not pointer.is_symlink():
                target = f"{asset}.v{max(versions)}"
                log.warning("models: %s had no current model; pointing it at %s", asset, target)
                os.symlink(target, pointer)
                _fsync_dir(self.dir)

    def _load_all(self) -> None:
        for entry in sorted(self.dir.iterdir()):
            if not _ASSET.match(entry.name) or not entry.is_dir():
                continue
            try:
                model = self._load_folder(entry)
            except ModelError as exc:
                reason = exc.reason if isinstance(exc, UpdateRefused) else "load_failed"
                self.refused[entry.name] = str(exc)
                log.error("models: %s not loaded (%s): %s", entry.name, reason, exc)
                continue
            if model.asset_type != entry.name:
                self.refused[entry.name] = f"manifest is for asset type {model.asset_type}"
                log.error(
                    "models: folder %s holds a model for %s; not loaded",
                    entry.name,
                    model.asset_type,
                )
                continue
            if model.manifest.expires is not None and model.manifest.expires <= _utcnow_from(
                self._clock
            ):
                log.warning(
                    "models: %s v%d's manifest expired at %s; it keeps running until replaced",
                    model.model_id,
                    model.version,
                    model.manifest.expires.isoformat(),
                )
            self._models[entry.name] = model
            log.info(
                "models: %s runs %s v%d (%d features, key %s)",
                entry.name,
                model.model_id,
                model.version,
                len(model.feature_names),
                model.key_id or "none: unsigned",
            )

    def _load_folder(self, folder: Path) -> LoadedModel:
        try:
            manifest_bytes = (folder / MANIFEST_FILE).read_bytes()
        except OSError as exc:
            raise UpdateRefused("malformed", f"{folder / MANIFEST_FILE}: {exc.strerror}") from None
        sig_path = folder / SIGNATURE_FILE
        signer: str | None
        try:
            signature = ManifestSignature.from_json(sig_path.read_bytes())
            signer = self._verify(manifest_bytes, signature)
        except (OSError, UpdateRefused) as exc:
            if not self.settings.allow_unsigned:
                if isinstance(exc, UpdateRefused):
                    raise
                raise UpdateRefused("bad_signature", f"{sig_path}: {exc.strerror}") from None
            log.warning("models: %s has no valid signature (%s); allowed: unsigned", folder, exc)
            signer = None
        manifest = _parse_manifest(manifest_bytes)
        try:
            onnx_bytes = (folder / manifest.file).read_bytes()
        except OSError as exc:
            raise UpdateRefused("malformed", f"{folder / manifest.file}: {exc.strerror}") from None
        _check_hash(manifest, onnx_bytes)
        _check_features(manifest)
        return self._session(manifest, onnx_bytes, folder, signer)

    # ---- verification ----------------------------------------------------------------

    def _verify(self, manifest_bytes: bytes, signature: ManifestSignature) -> str:
        return verify_signature(self._keys, manifest_bytes, signature)

    def _session(
        self, manifest: ModelManifest, onnx_bytes: bytes, path: Path | None, signer: str | None
    ) -> LoadedModel:
        where = f"model {manifest.model_id} v{manifest.version}"
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except _ORT_ERRORS as exc:
            raise UpdateRefused("load_failed", f"{where}: onnxruntime: {exc}") from None
        n = len(manifest.feature_names)
        inputs = session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME] or inputs[0].type != "tensor(float)":
            got = [(i.name, i.type) for i in inputs]
            raise UpdateRefused(
                "load_failed", f"{where}: expected one float input {INPUT_NAME!r}, got {got}"
            )
        shape = inputs[0].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n):
            raise UpdateRefused(
                "load_failed", f"{where}: input shape {shape}, expected [batch, {n}]"
            )
        outputs = {o.name for o in session.get_outputs()}
        if SCORE_OUTPUT not in outputs:
            raise UpdateRefused(
                "load_failed", f"{where}: no output {SCORE_OUTPUT!r} (outputs {sorted(outputs)})"
            )
        model = LoadedModel(
            manifest=manifest,
            session=session,
            path=path,
            key_id=signer,
            has_contributions=CONTRIBUTIONS_OUTPUT in outputs,
        )
        try:
            score, _ = model.run(np.zeros(n, dtype=np.float32))
        except ModelError as exc:
            raise UpdateRefused("load_failed", f"{where}: smoke inference: {exc}") from None
        if not math.isfinite(score):
            raise UpdateRefused("load_failed", f"{where}: smoke inference scored {score}")
        return model

    # ---- updates ---------------------------------------------------------------------

    def install_update(
        self, manifest_bytes: bytes, signature: ManifestSignature | bytes, onnx_bytes: bytes
    ) -> LoadedModel:
        """Verify, load and install a signed model; returns the model now running.

        Raises :class:`UpdateRefused` (see the module docstring for the reasons); then
        nothing changed on disk or in memory.
        """
        try:
            model = self._install(manifest_bytes, signature, onnx_bytes)
        except UpdateRefused as exc:
            log.warning("models: update refused (%s): %s", exc.reason, exc)
            raise
        log.info(
            "models: %s now runs %s v%d (key %s)",
            model.asset_type,
            model.model_id,
            model.version,
            model.key_id,
        )
        return model

    def _install(
        self, manifest_bytes: bytes, signature: ManifestSignature | bytes, onnx_bytes: bytes
    ) -> LoadedModel:
        if not isinstance(signature, ManifestSignature):
            signature = ManifestSignature.from_json(signature)
        signer = self._verify(manifest_bytes, signature)
        manifest = _parse_manifest(manifest_bytes)
        now = _utcnow_from(self._clock)
        if manifest.expires is not None and manifest.expires <= now:
            raise UpdateRefused(
                "expired",
                f"manifest of {manifest.model_id} v{manifest.version} expired at "
                f"{manifest.expires.isoformat()}",
            )
        with self._lock:
            running = self._models.get(manifest.asset_type)
        _check_newer(manifest, running)
        _check_hash(manifest, onnx_bytes)
        _check_features(manifest)
        model = self._session(manifest, onnx_bytes, None, signer)
        with self._lock:
            # Checked again under the lock: two updates may race.
            running = self._models.get(manifest.asset_type)
            _check_newer(manifest, running)
            try:
                path, previous = self._write(manifest, manifest_bytes, signature, onnx_bytes)
            except OSError as exc:
                raise UpdateRefused("write_failed", f"{self.dir}: {exc}") from exc
            model = LoadedModel(
                manifest=model.manifest,
                session=model.session,
                path=path,
                key_id=model.key_id,
                has_contributions=model.has_contributions,
            )
            self._models[manifest.asset_type] = model
            self.refused.pop(manifest.asset_type, None)
        self._prune(manifest.asset_type, keep={path.name, previous})
        return model

    def _write(
        self,
        manifest: ModelManifest,
        manifest_bytes: bytes,
        signature: ManifestSignature,
        onnx_bytes: bytes,
    ) -> tuple[Path, str]:
        """Write the new version folder and make it current; (its path, the name of the
        folder of the model it replaced)."""
        asset = manifest.asset_type
        final = self.dir / f"{asset}.v{manifest.version}"
        tmp = Path(tempfile.mkdtemp(prefix=_INCOMING, dir=self.dir))
        try:
            _write_synced(tmp / manifest.file, onnx_bytes)
            _write_synced(tmp / SIGNATURE_FILE, signature.to_json())
            _write_synced(tmp / MANIFEST_FILE, manifest_bytes)
            _fsync_dir(tmp)
            if final.exists():  # left by a crash before the pointer moved: never current
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.dir)
        pointer = self.dir / asset
        previous = os.readlink(pointer) if pointer.is_symlink() else ""
        if pointer.is_dir() and not pointer.is_symlink():
            # A model copied in by hand: keep it as a version folder (or, if it is not a
            # readable model, under a .local- name), then point at the new one.
            aside = self._aside_name(pointer)
            os.rename(pointer, aside)
            previous = aside.name
        link = self.dir / f".{asset}.link"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(final.name, link)
        os.replace(link, pointer)  # the commit point
        _fsync_dir(self.dir)
        return final, previous

    def _aside_name(self, folder: Path) -> Path:
        try:
            old: Path | None = self.dir / (
                f"{folder.name}.v{_parse_manifest((folder / MANIFEST_FILE).read_bytes()).version}"
            )
        except (OSError, UpdateRefused):
            old = None
        if old is None or old.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{folder.name}.local-", dir=self.dir))
            old.rmdir()
        return old

    def _prune(self, asset: str, keep: set[str]) -> None:
        for version in self._versions().get(asset, []):
            name = f"{asset}.v{version}"
            if name not in keep:
                shutil.rmtree(self.dir / name, ignore_errors=True)
                log.debug("models: removed %s", name)


def _parse_manifest(manifest_bytes: bytes) -> ModelManifest:
    try:
        return ModelManifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise UpdateRefused("malformed", f"manifest: {problems}") from None


def _check_newer(manifest: ModelManifest, running: LoadedModel | None) -> None:
    if running is not None and manifest.version <= running.version:
        raise UpdateRefused(
            "not_newer",
            f"{manifest.model_id} v{manifest.version} is not newer than the running "
            f"{running.model_id} v{running.version} for {manifest.asset_type}",
        )


def _check_hash(manifest: ModelManifest, onnx_bytes: bytes) -> None:
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    if digest != manifest.sha256:
        raise UpdateRefused(
            "hash_mismatch",
            f"{manifest.file} has sha256 {digest[:16]}…, the manifest says {manifest.sha256[:16]}…",
        )


def _check_features(manifest: ModelManifest) -> None:
    if manifest.feature_set_version not in COMPATIBLE_FEATURE_SETS:
        raise UpdateRefused(
            "incompatible",
            f"{manifest.model_id} v{manifest.version} needs feature set "
            f"{manifest.feature_set_version}; this agent computes {FEATURE_SET_VERSION} "
            f"(and runs models of sets {sorted(COMPATIBLE_FEATURE_SETS)})",
        )
    try:
        check_feature_names(manifest.feature_names)
    except ValueError as exc:
        raise UpdateRefused("incompatible", str(exc)) from None
