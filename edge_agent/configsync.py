"""Config changes from the cloud: signed, versioned, and never half applied.

The operator's config file (``/etc/edgewatch/agent.yaml``) is read-only to the agent. A
config change that arrives over the downlink is a whole config document with a
``config_version`` and an Ed25519 signature by one of ``models.trusted_keys``. The agent
checks it (signature, same gateway, valid, newer than the running config), writes the
document and its signature beside the buffer (``agent.downlinked.yaml`` and ``.sig``,
each atomically) and restarts itself on it.

At every start :func:`effective_config` runs the downlinked config only if it still
verifies and is newer than the file's; otherwise (tampered, unsigned, older, another
gateway's, torn by a crash between the two writes) the file's config runs and the reason
is logged. Raising ``config_version`` in the file therefore always wins over an older
downlinked config.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

from edge_agent.config import LoadedConfig, load_config, parse_config
from edge_agent.errors import ConfigError, UpdateRefused
from edge_agent.models import ManifestSignature, load_trusted_keys, verify_signature

log = logging.getLogger(__name__)

DOWNLINKED_CONFIG = "agent.downlinked.yaml"
DOWNLINKED_SIGNATURE = "agent.downlinked.sig"


def state_dir(loaded: LoadedConfig) -> Path:
    """The agent's writable folder: the buffer's."""
    return loaded.path(loaded.config.buffer.path).parent


def check_config_change(
    running: LoadedConfig,
    document: bytes,
    signature: bytes,
    *,
    source: str,
    version: int | None = None,
) -> LoadedConfig:
    """The config ``document`` would run, if it may; otherwise :class:`UpdateRefused` with
    reason ``malformed``, ``unknown_key``, ``bad_signature``, ``invalid``,
    ``wrong_gateway`` or ``not_newer``. Relative paths resolve as the running config's."""
    keys = load_trusted_keys([running.path(k) for k in running.config.models.trusted_keys])
    verify_signature(keys, document, ManifestSignature.from_json(signature))
    try:
        data = yaml.safe_load(document)
    except yaml.YAMLError as exc:
        raise UpdateRefused("malformed", f"{source}: not valid YAML: {exc}") from None
    try:
        new = parse_config(data, source, running.base_dir)
    except ConfigError as exc:
        raise UpdateRefused("invalid", str(exc)) from None
    cfg, now = new.config, running.config
    if cfg.gateway.id != now.gateway.id:
        raise UpdateRefused(
            "wrong_gateway", f"{source} is for gateway {cfg.gateway.id}, this is {now.gateway.id}"
        )
    if version is not None and cfg.config_version != version:
        raise UpdateRefused(
            "malformed",
            f"{source}: config_version {cfg.config_version}, the message says {version}",
        )
    if cfg.config_version <= now.config_version:
        raise UpdateRefused(
            "not_newer",
            f"{source}: config_version {cfg.config_version} is not newer than the running "
            f"{now.config_version}",
        )
    return new


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_config_change(running: LoadedConfig, document: bytes, signature: bytes) -> Path:
    """Keep a checked config change for the next start; returns where it went."""
    folder = state_dir(running)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / DOWNLINKED_SIGNATURE, signature)
    _write_atomically(folder / DOWNLINKED_CONFIG, document)
    return folder / DOWNLINKED_CONFIG


def effective_config(path: Path | str) -> LoadedConfig:
    """The config to run: the file's, or a newer downlinked one that still verifies."""
    base = load_config(path)
    folder = state_dir(base)
    doc_path = folder / DOWNLINKED_CONFIG
    if not doc_path.exists():
        return base
    try:
        document = doc_path.read_bytes()
        signature = (folder / DOWNLINKED_SIGNATURE).read_bytes()
        chosen = check_config_change(base, document, signature, source=str(doc_path))
    except (UpdateRefused, ConfigError, OSError) as exc:
        log.warning("not running %s (%s); running %s", doc_path, exc, base.source)
        return base
    log.warning(
        "running config_version %d from %s (the file %s has %d)",
        chosen.config.config_version,
        doc_path,
        base.source,
        base.config.config_version,
    )
    return chosen
