"""What ingest needs to know of a gateway: whose it is and which devices it reads.

Loaded by :func:`cloud.registry.services.gateway_devices` (one query) and cached by
:class:`cloud.ingest.directory.SqlDirectory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A registered device as ingest needs it."""

    id: str
    """The registry id (the ``device`` tag of its points)."""
    asset_type: str


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """A registered gateway: its client and site, and its devices by their wire ids
    (the ids its config gives them, which uplink records carry)."""

    gateway_id: str
    client_id: str
    site_id: str
    devices: Mapping[str, DeviceRef] = field(default_factory=dict)
