"""Model store: loading signed model folders and installing signed updates.

The ``publisher``, ``features`` and ``now`` fixtures and the ONNX builder live in conftest.py.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from edge_agent.config import ModelSettings
from edge_agent.errors import ConfigError, UpdateRefused
from edge_agent.models import (
    MANIFEST_FILE,
    ManifestSignature,
    ModelStore,
    canonical_json,
    key_id,
    sign_manifest,
)

X = np.array([80.0, 1.5, 2.0, 12.0])  # z = 2, 1, 0, 1 -> score (4 + 1 + 0 + 1) / 4 = 1.5


def make_store(tmp_path: Path, publisher: Any, now: Any, **kw: Any) -> ModelStore:
    pem = tmp_path / "keys" / "publisher.pem"
    pem.parent.mkdir(exist_ok=True)
    publisher.public_pem(pem)
    settings = ModelSettings(dir=tmp_path / "models", trusted_keys=[pem], **kw)
    return ModelStore(settings, clock=lambda: now.timestamp())


def score_of(store: ModelStore) -> tuple[int, float]:
    model = store.model_for("compressor")
    assert model is not None
    value, _ = model.run(X)
    return model.version, value


@pytest.fixture
def store(tmp_path: Path, publisher: Any, now: Any) -> ModelStore:
    """A store running compressor model v2 (installed as a signed update)."""
    s = make_store(tmp_path, publisher, now)
    s.install_update(*publisher.update(2).args())
    return s


def test_an_empty_folder_has_no_models(tmp_path: Path, publisher: Any, now: Any) -> None:
    s = make_store(tmp_path, publisher, now)
    assert s.model_for("compressor") is None
    assert s.models() == {}


def test_the_first_update_installs_and_scores(store: ModelStore, features: list[str]) -> None:
    model = store.model_for("compressor")
    assert model is not None
    assert (model.model_id, model.version, model.feature_names) == ("cc-zscore", 2, features)
    assert model.has_contributions
    value, contributions = model.run(X)
    assert value == pytest.approx(1.5)
    assert contributions == pytest.approx([1.0, 0.25, 0.0, 0.25])
    link = store.dir / "compressor"
    assert link.is_symlink() and os.readlink(link) == "compressor.v2"


def _tampered_file(p: Any, now: Any) -> tuple[Any, ...]:
    u = p.update(3)
    return u.manifest_bytes, u.signature, u.onnx_bytes[:-1] + bytes([u.onnx_bytes[-1] ^ 1])


def _unknown_key(p: Any, now: Any) -> tuple[Any, ...]:
    stranger = type(p)()
    return stranger.update(3).args()


def _older(p: Any, now: Any) -> tuple[Any, ...]:
    return p.update(1).args()


def _equal(p: Any, now: Any) -> tuple[Any, ...]:
    return p.update(2, mu=[0.0, 0.0, 0.0, 0.0]).args()


def _expired(p: Any, now: Any) -> tuple[Any, ...]:
    return p.update(3, expires=now - timedelta(seconds=1)).args()


def _bad_signature(p: Any, now: Any) -> tuple[Any, ...]:
    u = p.update(3)
    forged = u.manifest_bytes.replace(b'"threshold":4.0', b'"threshold":400.0')
    assert forged != u.manifest_bytes
    return forged, u.signature, u.onnx_bytes


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (_tampered_file, "hash_mismatch"),
        (_unknown_key, "unknown_key"),
        (_older, "not_newer"),
        (_equal, "not_newer"),
        (_expired, "expired"),
        (_bad_signature, "bad_signature"),
    ],
    ids=["tampered-file", "unknown-key", "older", "equal-version", "expired", "bad-signature"],
)
def test_a_refused_update_leaves_the_running_model(
    store: ModelStore, publisher: Any, now: Any, case: Any, reason: str
) -> None:
    before = score_of(store)
    listing = sorted(p.name for p in store.dir.iterdir())
    with pytest.raises(UpdateRefused) as info:
        store.install_update(*case(publisher, now))
    assert info.value.reason == reason
    assert score_of(store) == before == (2, pytest.approx(1.5))
    assert sorted(p.name for p in store.dir.iterdir()) == listing


def test_a_good_newer_update_is_accepted_and_scores_with_the_new_version(
    store: ModelStore, publisher: Any, now: Any
) -> None:
    update = publisher.update(3, mu=[80.0, 1.5, 2.0, 12.0], expires=now + timedelta(days=7))
    model = store.install_update(*update.args())
    assert model.version == 3
    assert score_of(store) == (3, pytest.approx(0.0))
    assert os.readlink(store.dir / "compressor") == "compressor.v3"


def test_an_update_signature_may_arrive_as_its_json_document(
    store: ModelStore, publisher: Any
) -> None:
    u = publisher.update(3)
    assert store.install_update(u.manifest_bytes, u.signature.to_json(), u.onnx_bytes).version == 3


def test_a_model_that_fails_to_load_is_refused_and_the_old_one_keeps_scoring(
    store: ModelStore, publisher: Any
) -> None:
    corrupt = b"\x08\x07this is not an onnx graph"
    update = publisher.update(3, onnx_bytes=corrupt)  # sha256 and signature are right
    with pytest.raises(UpdateRefused) as info:
        store.install_update(*update.args())
    assert info.value.reason == "load_failed"
    assert score_of(store) == (2, pytest.approx(1.5))
    assert not (store.dir / "compressor.v3").exists()


def test_a_model_off_the_io_convention_is_refused(
    store: ModelStore, publisher: Any, build_zscore_onnx: Any
) -> None:
    wrong_input = build_zscore_onnx([0.0] * 4, [1.0] * 4, input_name="x")
    with pytest.raises(UpdateRefused, match="input") as info:
        store.install_update(*publisher.update(3, onnx_bytes=wrong_input).args())
    assert info.value.reason == "load_failed"
    too_few = build_zscore_onnx([0.0] * 3, [1.0] * 3)
    with pytest.raises(UpdateRefused, match="shape") as info:
        store.install_update(*publisher.update(3, onnx_bytes=too_few).args())
    assert info.value.reason == "load_failed"
    assert score_of(store) == (2, pytest.approx(1.5))


def test_a_model_for_another_feature_set_is_incompatible(store: ModelStore, publisher: Any) -> None:
    with pytest.raises(UpdateRefused) as info:
        store.install_update(*publisher.update(3, feature_set_version=99).args())
    assert info.value.reason == "incompatible"
    # a model of feature set 1 (whose features set 2 computes unchanged) still installs
    assert store.install_update(*publisher.update(4, feature_set_version=1).args()) is not None
    assert store.model_for("compressor").manifest.feature_set_version == 1
    bad_names = publisher.update(5, feature_names=["discharge_temp__fourier", "a__mean", "b", "c"])
    with pytest.raises(UpdateRefused, match="discharge_temp__fourier") as info:
        store.install_update(*bad_names.args())
    assert info.value.reason == "incompatible"


def test_a_malformed_manifest_is_refused(store: ModelStore, publisher: Any) -> None:
    data = canonical_json({"model_id": "x"})
    with pytest.raises(UpdateRefused) as info:
        store.install_update(data, sign_manifest(data, publisher.key), b"")
    assert info.value.reason == "malformed"
    with pytest.raises(UpdateRefused) as info:
        store.install_update(data, b"{not json", b"")
    assert info.value.reason == "malformed"


def test_installed_models_survive_a_restart(
    store: ModelStore, tmp_path: Path, publisher: Any, now: Any
) -> None:
    store.install_update(*publisher.update(3).args())
    again = make_store(tmp_path, publisher, now)
    assert score_of(again) == (3, pytest.approx(1.5))
    model = again.model_for("compressor")
    assert model is not None and model.key_id == key_id(publisher.key.public_key())


def test_old_versions_are_pruned_keeping_the_previous_one(
    store: ModelStore, publisher: Any
) -> None:
    store.install_update(*publisher.update(3).args())
    store.install_update(*publisher.update(4).args())
    names = sorted(p.name for p in store.dir.iterdir())
    assert names == ["compressor", "compressor.v3", "compressor.v4"]


def test_an_interrupted_install_leaves_the_old_model(
    store: ModelStore, tmp_path: Path, publisher: Any, now: Any
) -> None:
    # A crash while writing: a half-written temporary folder is left behind.
    partial = store.dir / ".incoming-abc123"
    partial.mkdir()
    (partial / "cc-zscore.v3.onnx").write_bytes(b"\x08")
    # A crash after the rename but before the pointer moved: a complete, never-current folder.
    update = publisher.update(3, mu=[0.0] * 4, sd=[1.0] * 4)
    publisher.write_folder(store.dir / "compressor.v3", update)
    restarted = make_store(tmp_path, publisher, now)
    assert score_of(restarted) == (2, pytest.approx(1.5))
    assert not partial.exists()
    # The same update sent again installs cleanly over the leftover.
    assert restarted.install_update(*update.args()).version == 3


def test_a_crash_at_the_commit_point_leaves_the_old_model(
    store: ModelStore, tmp_path: Path, publisher: Any, now: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def power_cut(src: Any, dst: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("edge_agent.models.os.replace", power_cut)
    with pytest.raises(UpdateRefused) as info:
        store.install_update(*publisher.update(3).args())
    assert info.value.reason == "write_failed"
    assert score_of(store) == (2, pytest.approx(1.5))
    monkeypatch.undo()
    assert score_of(make_store(tmp_path, publisher, now)) == (2, pytest.approx(1.5))


# ---- folders found at start ---------------------------------------------------------------


def test_a_signed_folder_copied_in_by_hand_loads_and_can_be_updated(
    tmp_path: Path, publisher: Any, now: Any
) -> None:
    publisher.write_folder(tmp_path / "models" / "compressor", publisher.update(1))
    s = make_store(tmp_path, publisher, now)
    assert score_of(s) == (1, pytest.approx(1.5))
    s.install_update(*publisher.update(2).args())
    assert score_of(s) == (2, pytest.approx(1.5))
    assert sorted(p.name for p in s.dir.iterdir()) == [
        "compressor",
        "compressor.v1",
        "compressor.v2",
    ]
    assert score_of(make_store(tmp_path, publisher, now)) == (2, pytest.approx(1.5))


def test_an_unsigned_folder_is_refused_unless_development_allows_it(
    tmp_path: Path, publisher: Any, now: Any, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.write_folder(tmp_path / "models" / "compressor", publisher.update(1), signed=False)
    s = make_store(tmp_path, publisher, now)
    assert s.model_for("compressor") is None
    assert "compressor" in s.refused
    dev = make_store(tmp_path, publisher, now, allow_unsigned=True)
    model = dev.model_for("compressor")
    assert model is not None and model.key_id is None
    assert "allow_unsigned" in caplog.text


@pytest.mark.parametrize("problem", ["unknown_key", "hash_mismatch", "wrong_folder"])
def test_a_bad_folder_at_start_is_refused_and_others_still_load(
    tmp_path: Path, publisher: Any, now: Any, problem: str
) -> None:
    models = tmp_path / "models"
    publisher.write_folder(models / "fan", publisher.update(1, asset_type="fan"))
    if problem == "unknown_key":
        publisher.write_folder(models / "compressor", type(publisher)().update(1))
    elif problem == "hash_mismatch":
        u = publisher.update(1)
        publisher.write_folder(models / "compressor", u)
        (models / "compressor" / u.manifest["file"]).write_bytes(u.onnx_bytes + b"\0")
    else:
        publisher.write_folder(models / "compressor", publisher.update(1, asset_type="pump"))
    s = make_store(tmp_path, publisher, now)
    assert s.model_for("compressor") is None
    assert "compressor" in s.refused
    assert s.model_for("fan") is not None


def test_an_expired_model_already_installed_keeps_running(
    tmp_path: Path, publisher: Any, now: Any
) -> None:
    update = publisher.update(1, expires=now + timedelta(days=1))
    publisher.write_folder(tmp_path / "models" / "compressor", update)
    later = now + timedelta(days=30)
    assert score_of(make_store(tmp_path, publisher, later)) == (1, pytest.approx(1.5))


def test_a_trusted_key_that_is_not_ed25519_is_a_config_error(tmp_path: Path) -> None:
    pem = tmp_path / "ec.pem"
    pem.write_bytes(
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="Ed25519"):
        ModelStore(ModelSettings(dir=tmp_path / "m", trusted_keys=[pem]))
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        ModelStore(ModelSettings(dir=tmp_path / "m", trusted_keys=[missing]))


def test_key_id_is_the_sha256_prefix_of_the_raw_public_key(publisher: Any) -> None:
    import hashlib

    raw = publisher.key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert key_id(publisher.key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]
    sig = sign_manifest(b"{}", publisher.key)
    assert ManifestSignature.from_json(sig.to_json()) == sig
    assert (MANIFEST_FILE, len(sig.signature)) == ("manifest.json", 64)


def test_an_update_replaces_a_broken_folder_copied_in_by_hand(
    tmp_path: Path, publisher: Any, now: Any
) -> None:
    broken = tmp_path / "models" / "compressor"
    broken.mkdir(parents=True)
    (broken / MANIFEST_FILE).write_text("{not json")
    s = make_store(tmp_path, publisher, now)
    assert s.model_for("compressor") is None and "compressor" in s.refused
    s.install_update(*publisher.update(1).args())
    assert score_of(s) == (1, pytest.approx(1.5))
    assert "compressor" not in s.refused
    kept = [p.name for p in s.dir.iterdir() if p.name.startswith("compressor.local-")]
    assert len(kept) == 1  # set aside, not deleted
    assert score_of(make_store(tmp_path, publisher, now)) == (1, pytest.approx(1.5))
