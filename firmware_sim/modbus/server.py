"""Serving a fleet: the endpoints of every gateway, one source, one simulated clock.

:class:`SimServer` starts one endpoint per gateway (TCP or RTU), then at every tick
(``tick_s`` wall seconds) advances the source to ``clock.now()`` and re-encodes every
device's register image, so what a client reads is a function of simulated time only.
It runs on an asyncio loop; :class:`ServerThread` runs it on a loop of its own in a
background thread, for tests, benchmarks and the agent's tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TypeVar

from edge_agent.profiles import DeviceProfile
from firmware_sim.clock import SimClock
from firmware_sim.errors import ServeError
from firmware_sim.fleet import GatewaySpec
from firmware_sim.modbus.endpoint import Endpoint, EndpointConfig, UnitConfig
from firmware_sim.modbus.faults import FaultInjector
from firmware_sim.modbus.rtu import RtuEndpoint
from firmware_sim.modbus.tcp import TcpEndpoint
from firmware_sim.source import SignalSource

log = logging.getLogger(__name__)

T = TypeVar("T")


def endpoint_configs(
    gateways: Iterable[GatewaySpec],
    profiles: Mapping[str, DeviceProfile],
    *,
    refuse_unmapped: Collection[str] = (),
) -> list[EndpointConfig]:
    """Endpoint configs for a fleet's gateways; ``refuse_unmapped`` names devices that
    answer exception 02 to reads touching unmapped addresses, besides those whose fleet
    entry sets ``refuse_unmapped``."""
    out = []
    for gw in gateways:
        units = tuple(
            UnitConfig(
                d.unit_id,
                d.id,
                profiles[d.id],
                refuse_unmapped=d.refuse_unmapped or d.id in refuse_unmapped,
            )
            for d in gw.devices
        )
        out.append(
            EndpointConfig(
                id=gw.id, units=units, transport=gw.transport, host=gw.host, port=gw.port,
                baudrate=gw.baudrate, parity=gw.parity, stopbits=gw.stopbits,
                byte_timing=gw.byte_timing,
                max_connections=gw.max_connections,
            )
        )
    return out


class SimServer:
    """Every endpoint of a fleet, fed from one source at the pace of one clock."""

    def __init__(
        self,
        endpoints: Iterable[EndpointConfig],
        source: SignalSource,
        clock: SimClock,
        *,
        tick_s: float = 0.2,
        seed: int = 0,
        until: datetime | None = None,
    ) -> None:
        """``until``: simulated time the source is never advanced past (the values then
        stay as they were at that moment)."""
        self.source = source
        self.clock = clock
        self.until = until
        self.tick_s = tick_s
        self.endpoints: dict[str, Endpoint] = {}
        for i, cfg in enumerate(endpoints):
            if cfg.id in self.endpoints:
                raise ValueError(f"endpoint id {cfg.id} is used twice")
            cls = TcpEndpoint if cfg.transport == "tcp" else RtuEndpoint
            self.endpoints[cfg.id] = cls(cfg, source, seed=seed * 1000 + i)
        self._ticker: asyncio.Task[None] | None = None
        self._last_now: datetime | None = None
        self._tick_errors = 0

    def endpoint(self, gateway_id: str) -> Endpoint:
        try:
            return self.endpoints[gateway_id]
        except KeyError:
            raise KeyError(
                f"no gateway {gateway_id!r} (gateways: {', '.join(self.endpoints)})"
            ) from None

    def faults(self, gateway_id: str) -> FaultInjector:
        """The fault rules of one gateway's endpoint."""
        return self.endpoint(gateway_id).faults

    async def start(self) -> None:
        """Encode the first images, open every endpoint, start ticking."""
        self.tick()
        started: list[Endpoint] = []
        try:
            for ep in self.endpoints.values():
                await ep.start()
                started.append(ep)
        except ServeError:
            for ep in started:
                await ep.stop()
            raise
        self._ticker = asyncio.create_task(self._tick_loop(), name="sim-tick")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for ep in self.endpoints.values():
            await ep.stop()

    def tick(self, *, force: bool = False) -> None:
        """Advance the source to the clock and re-encode every image (if time moved)."""
        now = self.clock.now()
        if self.until is not None:
            now = min(now, self.until)
        if now > self.source.now:
            self.source.advance_to(now)
        for ep in self.endpoints.values():
            ep.check_reboots()
        if force or self._last_now != self.source.now:
            self._last_now = self.source.now
            for ep in self.endpoints.values():
                ep.refresh()

    def refresh(self) -> None:
        """Re-encode every image now (a test changed its source's values)."""
        self.tick(force=True)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception:
                # The endpoints keep serving the last images; say so loudly once.
                self._tick_errors += 1
                if self._tick_errors == 1:
                    log.exception("updating the registers from the source failed; serving "
                                  "the last values (repeats are logged at DEBUG)")
                else:
                    log.debug("updating the registers failed (%d times)", self._tick_errors,
                              exc_info=True)

    async def run(self, stop: asyncio.Event | None = None, duration_s: float | None = None) -> None:
        """Start, serve until ``stop`` is set or ``duration_s`` passed, stop."""
        stop = stop or asyncio.Event()
        await self.start()
        try:
            if duration_s is None:
                await stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration_s)
        finally:
            await self.stop()


class ServerThread:
    """A :class:`SimServer` on its own event loop in a daemon thread.

    ::

        with ServerThread(SimServer(configs, source, clock)) as st:
            port = st.server.endpoint("gw-1").port
            st.call(st.server.refresh)
    """

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="edgewatch-sim", daemon=True)
        self._started = concurrent.futures.Future[None]()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # handed to the starting thread, which raises it
            self._started.set_exception(exc)
            self.loop.close()
            return
        self._started.set_result(None)
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop and return its result."""

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
