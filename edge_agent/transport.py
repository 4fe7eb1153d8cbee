"""The Modbus adapter: read requests over pymodbus's async clients, errors translated.

Nothing above this module sees pymodbus. :class:`ModbusLink` owns one client (one TCP
connection, one serial port, or one TCP socket carrying RTU frames) and reads one block
at a time::

    words = await link.read(unit_id, Table.HOLDING, 0, 24)   # bits come as 0/1

and raises only :class:`~edge_agent.errors.TransportError` subclasses:

- :class:`DeviceTimeout`: not a byte came back within the timeout;
- :class:`ModbusException`: the device answered with an exception code;
- :class:`FrameError`: bytes came back but no usable answer (garbage, a truncated frame,
  an answer from another unit, a reply of the wrong length or function);
- :class:`LinkError`: the connection or port is down; reconnecting is paced by an
  exponential backoff of its own, and a read while it waits fails at once.

Every await is bounded by a timeout. pymodbus's own reconnect task and its
close-after-N-timeouts rule are turned off: a silent unit on a shared connection must
not cost its neighbours the connection. A serial link keeps the inter-frame silence
before each request. After a frame error on a stream carrying RTU frames (no
transaction ids to tell a late answer from the next one) the socket is closed and
opened again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.exceptions import ModbusException as PymodbusError
from pymodbus.framer import FramerType

from edge_agent.config import RtuBus, RtuOverTcpBus, TcpBus
from edge_agent.errors import (
    DeviceTimeout,
    FrameError,
    LinkError,
    ModbusException,
    TransportError,
)
from edge_agent.profiles import Table

log = logging.getLogger(__name__)

_FUNCTION = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_METHOD = {
    Table.COIL: "read_coils",
    Table.DISCRETE: "read_discrete_inputs",
    Table.HOLDING: "read_holding_registers",
    Table.INPUT: "read_input_registers",
}
_NEVER_DISCONNECT = 1 << 30
"""pymodbus closes a connection after this many unanswered requests: never, here."""
_GUARD_S = 0.5
"""Slack on top of the timeout for the outer bound of a request."""


class Link(Protocol):
    """What the poller needs from a Modbus connection (fakes in tests implement it)."""

    name: str
    timeout_s: float

    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        """``count`` registers (or bits as 0/1) of ``table`` from ``address``."""
        ...

    async def close(self) -> None: ...


def char_time(baudrate: int, parity: str, stopbits: int) -> float:
    """Seconds one character takes on a serial line."""
    return (1 + 8 + (0 if parity == "N" else 1) + stopbits) / baudrate


def inter_frame_gap(bus: RtuBus) -> float:
    """The silence between frames: configured, or 3.5 characters (1.75 ms above 19,200)."""
    if bus.inter_frame_gap_s is not None:
        return bus.inter_frame_gap_s
    if bus.baudrate > 19200:
        return 0.00175
    return 3.5 * char_time(bus.baudrate, bus.parity, bus.stopbits)


class ModbusLink:
    """One pymodbus async client behind the :class:`Link` interface."""

    def __init__(
        self,
        name: str,
        make_client: Callable[[Callable[[bool, bytes], bytes]], Any],
        *,
        timeout_s: float,
        inter_frame_gap_s: float = 0.0,
        reopen_after_frame_error: bool = False,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``make_client(trace)`` builds a pymodbus async client with ``trace_packet=trace``,
        ``retries=0`` and ``timeout=timeout_s``; a new one for every connection."""
        self.name = name
        self.timeout_s = timeout_s
        self._make_client = make_client
        self._gap = inter_frame_gap_s
        self._reopen_after_frame_error = reopen_after_frame_error
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._monotonic = monotonic
        self._client: Any = None
        self._quiet_at = 0.0
        self._connect_failures = 0
        self._reconnect_at = 0.0
        self._received = 0
        self.connects = 0
        """Connections opened (for stats and tests)."""

    @classmethod
    def for_bus(cls, bus: TcpBus | RtuBus | RtuOverTcpBus) -> ModbusLink:
        """The link a bus of the gateway config describes."""
        if isinstance(bus, RtuBus):
            serial: RtuBus = bus

            def serial_client(trace: Callable[[bool, bytes], bytes]) -> Any:
                return AsyncModbusSerialClient(
                    serial.port,
                    framer=FramerType.RTU,
                    baudrate=serial.baudrate,
                    parity=serial.parity,
                    stopbits=serial.stopbits,
                    timeout=serial.timeout_s,
                    retries=0,
                    reconnect_delay=0,
                    trace_packet=trace,
                    name=serial.id,
                )

            return cls(
                bus.id,
                serial_client,
                timeout_s=bus.timeout_s,
                inter_frame_gap_s=inter_frame_gap(bus),
            )
        framer = FramerType.RTU if isinstance(bus, RtuOverTcpBus) else FramerType.SOCKET
        host, port, timeout = bus.host, bus.port, bus.timeout_s

        def tcp_client(trace: Callable[[bool, bytes], bytes]) -> Any:
            return AsyncModbusTcpClient(
                host,
                port=port,
                framer=framer,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
                trace_packet=trace,
                name=bus.id,
            )

        return cls(
            bus.id,
            tcp_client,
            timeout_s=bus.timeout_s,
            reopen_after_frame_error=framer is FramerType.RTU,
        )

    # -- connection -----------------------------------------------------------------
    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._received += len(data)
        return data

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def _ensure_connected(self) -> Any:
        if self.connected:
            return self._client
        self._drop()
        now = self._monotonic()
        if now < self._reconnect_at:
            raise LinkError(
                f"{self.name}: not connected; next attempt in {self._reconnect_at - now:.1f} s"
            )
        client = self._make_client(self._trace)
        client.set_max_no_responses(_NEVER_DISCONNECT)
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=self.timeout_s + _GUARD_S)
        except (TimeoutError, OSError) as exc:
            ok, why = False, str(exc) or type(exc).__name__
        else:
            why = "connection refused or port not available"
        if not ok or not client.connected:
            client.close()
            self._connect_failures += 1
            delay = min(
                self._reconnect_max_s,
                self._reconnect_min_s * 2 ** (self._connect_failures - 1),
            )
            self._reconnect_at = self._monotonic() + delay
            raise LinkError(f"{self.name}: cannot connect ({why}); next attempt in {delay:.1f} s")
        self._connect_failures = 0
        self._client = client
        self.connects += 1
        log.debug("%s: connected", self.name)
        return client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def close(self) -> None:
        self._drop()

    # -- requests -------------------------------------------------------------------
    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        client = await self._ensure_connected()
        wait = self._quiet_at - self._monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._received = 0
        try:
            return await self._read(client, unit_id, table, address, count)
        except FrameError:
            if self._reopen_after_frame_error:
                self._drop()
            raise
        finally:
            self._quiet_at = self._monotonic() + self._gap

    async def _read(
        self, client: Any, unit_id: int, table: Table, address: int, count: int
    ) -> list[int]:
        def what() -> str:  # built only for an error: this is the hot path
            return f"{self.name} unit {unit_id} {table.value} {address}+{count}"

        method = getattr(client, _METHOD[table])
        try:
            async with asyncio.timeout(self.timeout_s + _GUARD_S):
                rr = await method(address, count=count, device_id=unit_id)
        except (
            ConnectionException,
            ModbusIOException,
            TimeoutError,
            PymodbusError,
            OSError,
        ) as exc:
            raise self._translate(exc, what()) from None
        return _words(rr, what, unit_id, table, count)

    def _translate(self, exc: BaseException, what: str) -> TransportError:
        """A pymodbus or socket error as the agent's own (and the link dropped where it is gone)."""
        if isinstance(exc, ConnectionException):
            self._drop()
            return LinkError(f"{what}: {exc}")
        if isinstance(exc, (ModbusIOException, TimeoutError)):
            lost = not self.connected
            if lost:
                self._drop()
            if self._received:
                # pymodbus's TCP transport closes the connection when a frame does not
                # decode: still the device's answer that was bad, not the link.
                return FrameError(f"{what}: {self._received} bytes but no usable answer")
            if lost:
                return LinkError(f"{what}: connection lost")
            return DeviceTimeout(f"{what}: no answer in {self.timeout_s} s ({exc})")
        if isinstance(exc, PymodbusError):
            return FrameError(f"{what}: {exc}")
        self._drop()
        return LinkError(f"{what}: {exc}")


def _words(rr: Any, what: Callable[[], str], unit_id: int, table: Table, count: int) -> list[int]:
    """The registers (bits as 0/1) of a response, after checking it answers the request."""
    if rr is None:
        raise FrameError(f"{what()}: no response object")
    if rr.isError():
        code = int(getattr(rr, "exception_code", 0))
        if code:
            raise ModbusException(code, what())
        raise FrameError(f"{what()}: error response {rr}")
    if rr.function_code != _FUNCTION[table]:
        raise FrameError(f"{what()}: answer has function code {rr.function_code}")
    if rr.dev_id not in (unit_id, 0):
        raise FrameError(f"{what()}: answer from unit {rr.dev_id}")
    if table.is_bit_table:
        bits = list(rr.bits)
        if len(bits) < count or len(bits) > 8 * math.ceil(count / 8):
            raise FrameError(f"{what()}: answer holds {len(bits)} bits")
        return [1 if b else 0 for b in bits[:count]]
    regs = list(rr.registers)
    if len(regs) != count:
        raise FrameError(f"{what()}: answer holds {len(regs)} registers")
    return regs
