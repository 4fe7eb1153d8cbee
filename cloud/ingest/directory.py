"""Which client, site and devices a gateway belongs to, as ingest needs it, cached.

Ingest looks a gateway up once per batch; the registry is read at most once per
``refresh_s`` per gateway, and again (at most once per ``min_reload_s``) when a batch names
a device the cached entry does not know, so a device registered a moment ago is accepted
without waiting for the refresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from cloud.db import translate_errors
from cloud.errors import NotFound
from cloud.registry.refs import GatewayInfo
from cloud.registry.services import gateway_devices


class Directory(Protocol):
    def lookup(self, gateway_id: str, *, reload: bool = False) -> GatewayInfo | None:
        """The gateway's entry, or None if it is not registered; ``reload`` asks for a
        fresh read (honoured at most once per ``min_reload_s``). Raises
        :class:`~cloud.errors.RegistryUnavailable` when the registry cannot be read."""


class StaticDirectory:
    """A fixed set of gateways (tests, benchmarks, the embedded demo's first start)."""

    def __init__(self, gateways: Mapping[str, GatewayInfo]) -> None:
        self.gateways = dict(gateways)

    def lookup(self, gateway_id: str, *, reload: bool = False) -> GatewayInfo | None:
        return self.gateways.get(gateway_id)


class SqlDirectory:
    """:class:`Directory` over the SQL registry, cached (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        refresh_s: float = 30.0,
        min_reload_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self.refresh_s = refresh_s
        self.min_reload_s = min_reload_s
        self._clock = clock
        self._cache: dict[str, tuple[float, GatewayInfo | None]] = {}
        self._lock = threading.Lock()
        self.reads = 0

    def lookup(self, gateway_id: str, *, reload: bool = False) -> GatewayInfo | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(gateway_id)
        if cached is not None:
            age = now - cached[0]
            if age < self.refresh_s and not (reload and age >= self.min_reload_s):
                return cached[1]
        with translate_errors(), self._sessions() as session:
            try:
                info: GatewayInfo | None = gateway_devices(session, gateway_id)
            except NotFound:
                info = None
        self.reads += 1
        with self._lock:
            self._cache[gateway_id] = (now, info)
        return info
