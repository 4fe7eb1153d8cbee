"""The Modbus adapter: read requests over TCP, serial RTU or RTU over TCP, errors translated.

Nothing above this module sees pymodbus. :class:`ModbusLink` owns one connection (one TCP
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

Modbus TCP goes through :class:`MbapClient`, an asyncio protocol framed by
:mod:`edge_agent.mbap` (why not pymodbus's TCP client: see there); serial RTU and RTU over
TCP through pymodbus's async clients (:class:`PymodbusClient`). Every await is bounded by a
timeout. pymodbus's own reconnect task and its close-after-N-timeouts rule are turned off:
a silent unit on a shared connection must not cost its neighbours the connection. A serial
link keeps the inter-frame silence before each request. After a frame error on a stream
carrying RTU frames (no transaction ids to tell a late answer from the next one) the socket
is closed and opened again; on Modbus TCP a late answer is told apart by its transaction id.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.exceptions import ModbusException as PymodbusError
from pymodbus.framer import FramerType

from edge_agent import mbap
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
    max_in_flight: int
    """Requests :meth:`read_many` sends before their answers come back (1: one at a time)."""

    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        """``count`` registers (or bits as 0/1) of ``table`` from ``address``."""
        ...

    async def read_many(self, unit_id: int, reads: Sequence[Read]) -> list[Outcome]:
        """Each ``(table, address, count)`` of ``reads``, up to :attr:`max_in_flight` of
        them sent at once: its words, or the error that read got (a link that is down is a
        LinkError for every read; after a timeout, one at a time, the reads not yet sent get
        the same timeout). Raises no TransportError."""
        ...

    async def close(self) -> None: ...


Read = tuple[Table, int, int]
"""A read request: table, address, count."""
Outcome = list[int] | TransportError
"""What one read of :meth:`Link.read_many` gave."""


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


class Client(Protocol):
    """One connection's reads, with errors already the agent's own (see the module doc).

    A client is used for one connection: after it is closed, or found not connected, the
    link makes a new one.
    """

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool:
        """Open the connection; False (or OSError) when it cannot be opened."""
        ...

    def close(self) -> None: ...

    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]: ...


class ModbusLink:
    """One connection behind the :class:`Link` interface: reconnects paced by a backoff, the
    inter-frame silence kept, the stream reopened after a frame error where it has to be."""

    def __init__(
        self,
        name: str,
        make_client: Callable[[], Client],
        *,
        timeout_s: float,
        inter_frame_gap_s: float = 0.0,
        reopen_after_frame_error: bool = False,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 30.0,
        max_in_flight: int = 1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``make_client()`` builds the client of one connection, not yet connected; with
        ``max_in_flight`` above 1 it must be an :class:`MbapClient`."""
        self.name = name
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._make_client = make_client
        self._gap = inter_frame_gap_s
        self._reopen_after_frame_error = reopen_after_frame_error
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._monotonic = monotonic
        self._client: Client | None = None
        self._quiet_at = 0.0
        self._connect_failures = 0
        self._reconnect_at = 0.0
        self.connects = 0
        """Connections opened (for stats and tests)."""

    @classmethod
    def for_bus(cls, bus: TcpBus | RtuBus | RtuOverTcpBus) -> ModbusLink:
        """The link a bus of the gateway config describes: Modbus TCP on :class:`MbapClient`,
        serial RTU and RTU over TCP on pymodbus's async clients."""
        if isinstance(bus, RtuBus):
            serial: RtuBus = bus

            def serial_client() -> Client:
                return PymodbusClient(
                    serial.id,
                    lambda trace: AsyncModbusSerialClient(
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
                    ),
                    serial.timeout_s,
                )

            return cls(
                bus.id,
                serial_client,
                timeout_s=bus.timeout_s,
                inter_frame_gap_s=inter_frame_gap(bus),
            )
        host, port, timeout = bus.host, bus.port, bus.timeout_s
        if isinstance(bus, TcpBus):
            return cls(
                bus.id,
                lambda: MbapClient(bus.id, host, port, timeout),
                timeout_s=timeout,
                max_in_flight=bus.max_in_flight,
            )

        def rtu_over_tcp_client() -> Client:
            return PymodbusClient(
                bus.id,
                lambda trace: AsyncModbusTcpClient(
                    host,
                    port=port,
                    framer=FramerType.RTU,
                    timeout=timeout,
                    retries=0,
                    reconnect_delay=0,
                    trace_packet=trace,
                    name=bus.id,
                ),
                timeout,
            )

        # No transaction ids to tell a late answer from the next one: start afresh.
        return cls(bus.id, rtu_over_tcp_client, timeout_s=timeout, reopen_after_frame_error=True)

    # -- connection -----------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def _ensure_connected(self) -> Client:
        client = self._client
        if client is not None and client.connected:
            return client
        self._drop()
        now = self._monotonic()
        if now < self._reconnect_at:
            raise LinkError(
                f"{self.name}: not connected; next attempt in {self._reconnect_at - now:.1f} s"
            )
        client = self._make_client()
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
        try:
            return await client.read(unit_id, table, address, count)
        except FrameError:
            if self._reopen_after_frame_error:
                self._drop()
            raise
        finally:
            self._quiet_at = self._monotonic() + self._gap

    async def read_many(self, unit_id: int, reads: Sequence[Read]) -> list[Outcome]:
        if self.max_in_flight == 1:
            out: list[Outcome] = []
            for table, address, count in reads:
                try:
                    out.append(await self.read(unit_id, table, address, count))
                except (DeviceTimeout, LinkError) as exc:
                    # A silent device costs one timeout, not one a read.
                    return out + [exc] * (len(reads) - len(out))
                except TransportError as exc:
                    out.append(exc)
            return out
        try:
            client = await self._ensure_connected()
        except LinkError as exc:
            return [exc] * len(reads)
        if not isinstance(client, MbapClient):
            raise TypeError(f"{self.name}: pipelined reads need Modbus TCP, not {client!r}")
        out = []
        for at in range(0, len(reads), self.max_in_flight):
            out += await client.read_many(unit_id, reads[at : at + self.max_in_flight])
        return out


class _MbapStream(asyncio.Protocol):
    """The receiving side of one Modbus TCP connection: frames matched to the requests
    awaiting their transaction ids; anything else (a late answer to a request given up on)
    is dropped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.received = 0
        """Bytes received on this connection."""
        self.paired = 0
        """Bytes of the frames that answered a request waiting."""
        self._buffer = bytearray()
        """At most one partial frame (260 bytes) and the rest of what one read brought."""
        self._waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP connection's

    def expect(self, tid: int, answer: asyncio.Future[tuple[int, bytes]]) -> None:
        """``answer`` gets the unit id and PDU of the frame with transaction id ``tid``."""
        self._waiting[tid] = answer

    def forget(self, tid: int) -> None:
        self._waiting.pop(tid, None)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        buffer = self._buffer
        buffer += data
        try:
            frames, used = mbap.split_frames(buffer)
        except FrameError as exc:
            self._fail(exc)  # out of step: nothing after this can be trusted
            return
        del buffer[:used]
        for tid, unit_id, pdu in frames:
            answer = self._waiting.pop(tid, None)
            if answer is not None and not answer.done():
                answer.set_result((unit_id, pdu))
                self.paired += mbap.HEADER + len(pdu)
            # else: a late answer to a request given up on, dropped

    def _fail(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(LinkError(f"{self.name}: connection lost ({exc or 'closed'})"))


class MbapClient:
    """A Modbus TCP connection, framed by :mod:`edge_agent.mbap`: one request at a time
    (:meth:`read`), or several sent together (:meth:`read_many`, pipelined).

    Requests carry increasing transaction ids; an answer that comes after its request timed
    out is recognised by its id and dropped, so the stream stays in step. A header that is
    not MBAP closes the connection (the link opens a new one).
    """

    def __init__(self, name: str, host: str, port: int, timeout_s: float) -> None:
        self.name = name
        self._host, self._port, self._timeout_s = host, port, timeout_s
        self._stream: _MbapStream | None = None
        self._tid = 0

    @property
    def connected(self) -> bool:
        return self._stream is not None and self._stream.transport is not None

    async def connect(self) -> bool:
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(
            lambda: _MbapStream(self.name), self._host, self._port
        )
        self._stream = stream  # asyncio turns Nagle off on TCP sockets
        return True

    def close(self) -> None:
        if self._stream is not None and self._stream.transport is not None:
            self._stream.transport.close()
        self._stream = None

    def _stream_or_raise(self, unit_id: int) -> tuple[_MbapStream, asyncio.Transport]:
        stream = self._stream
        if stream is None or stream.transport is None:
            raise LinkError(f"{self.name} unit {unit_id}: not connected")
        return stream, stream.transport

    def _send(
        self, stream: _MbapStream, unit_id: int, table: Table, address: int, count: int
    ) -> tuple[int, bytes, asyncio.Future[tuple[int, bytes]]]:
        self._tid = tid = (self._tid + 1) & 0xFFFF
        answer: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        stream.expect(tid, answer)
        return tid, mbap.read_request(tid, unit_id, _FUNCTION[table], address, count), answer

    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        stream, transport = self._stream_or_raise(unit_id)
        tid, request, answer = self._send(stream, unit_id, table, address, count)
        before = stream.received - stream.paired
        try:
            transport.write(request)
            async with asyncio.timeout(self._timeout_s):
                unit, pdu = await answer
            return _answer(unit_id, table, count, unit, pdu)
        except TimeoutError:
            silence = self._silence(stream.received - stream.paired - before)
            raise _about(silence, self.name, unit_id, table, address, count) from None
        except TransportError as exc:
            raise _about(exc, self.name, unit_id, table, address, count) from None
        finally:
            stream.forget(tid)

    async def read_many(self, unit_id: int, reads: Sequence[Read]) -> list[Outcome]:
        """Every read sent at once (in one segment), the answers awaited together."""
        stream, transport = self._stream_or_raise(unit_id)
        sent = [self._send(stream, unit_id, *r) for r in reads]
        before = stream.received - stream.paired
        try:
            transport.write(b"".join(request for _, request, _ in sent))
            async with asyncio.timeout(self._timeout_s):
                for _, _, answer in sent:
                    await answer  # answers come together: most of these do not suspend
        except (TimeoutError, TransportError):
            pass  # a stream that failed fails every answer at once; each is looked at below
        finally:
            for tid, _, _ in sent:
                stream.forget(tid)
        silence = self._silence(stream.received - stream.paired - before)
        out: list[Outcome] = []
        for (table, address, count), (_, _, answer) in zip(reads, sent, strict=True):
            exc: BaseException | None
            if not answer.done() or answer.cancelled():
                answer.cancel()
                exc = silence
            else:
                exc = answer.exception()
            if exc is None:
                try:
                    out.append(_answer(unit_id, table, count, *answer.result()))
                    continue
                except TransportError as bad:
                    exc = bad
            if not isinstance(exc, TransportError):
                raise exc  # the stream sets no other: a bug, not the device
            out.append(_about(exc, self.name, unit_id, table, address, count))
        return out

    def _silence(self, unpaired: int) -> TransportError:
        """What a request that got no answer in time is: a timeout if not a byte came
        besides the answers to the other requests."""
        if unpaired:
            return FrameError(f"{unpaired} bytes but no usable answer")
        return DeviceTimeout(f"no answer in {self._timeout_s} s")


def _answer(unit_id: int, table: Table, count: int, unit: int, pdu: bytes) -> list[int]:
    if unit not in (unit_id, 0):
        raise FrameError(f"answer from unit {unit}")
    return mbap.read_answer(pdu, _FUNCTION[table], count)


def _about(
    exc: TransportError, bus: str, unit_id: int, table: Table, address: int, count: int
) -> TransportError:
    """``exc`` naming the bus, unit and block it is about."""
    what = f"{bus} unit {unit_id} {table.value} {address}+{count}"
    if isinstance(exc, ModbusException):
        return ModbusException(exc.code, what)
    return type(exc)(f"{what}: {exc}")


class PymodbusClient:
    """One pymodbus async client (serial RTU, or RTU frames over TCP) as a :class:`Client`.

    pymodbus's own reconnect task and its close-after-N-timeouts rule are turned off: a
    silent unit on a shared connection must not cost its neighbours the connection.
    """

    def __init__(
        self, name: str, make: Callable[[Callable[[bool, bytes], bytes]], Any], timeout_s: float
    ) -> None:
        """``make(trace)`` builds the pymodbus client with ``trace_packet=trace``,
        ``retries=0`` and ``timeout=timeout_s``."""
        self.name = name
        self.timeout_s = timeout_s
        self._client = make(self._trace)
        self._client.set_max_no_responses(_NEVER_DISCONNECT)
        self._received = 0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._received += len(data)
        return data

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> bool:
        return bool(await self._client.connect())

    def close(self) -> None:
        self._client.close()

    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        def what() -> str:  # built only for an error: this is the hot path
            return f"{self.name} unit {unit_id} {table.value} {address}+{count}"

        self._received = 0
        method = getattr(self._client, _METHOD[table])
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
        """A pymodbus or socket error as the agent's own (and the client closed where the
        link is gone)."""
        if isinstance(exc, ConnectionException):
            self.close()
            return LinkError(f"{what}: {exc}")
        if isinstance(exc, (ModbusIOException, TimeoutError)):
            lost = not self.connected
            if lost:
                self.close()
            if self._received:
                # pymodbus's TCP transport closes the connection when a frame does not
                # decode: still the device's answer that was bad, not the link.
                return FrameError(f"{what}: {self._received} bytes but no usable answer")
            if lost:
                return LinkError(f"{what}: connection lost")
            return DeviceTimeout(f"{what}: no answer in {self.timeout_s} s ({exc})")
        if isinstance(exc, PymodbusError):
            return FrameError(f"{what}: {exc}")
        self.close()
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
