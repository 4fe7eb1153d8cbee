"""Modbus TCP: one listening socket per gateway, devices addressed by unit id.

MBAP framing is pymodbus's socket framer. Each client connection is its own task and
its requests are answered in order; a unit that stays silent (timeout, offline, reboot)
holds up nobody, not even later requests on the same connection.

A request for a unit id no device has is answered with exception 0x0B (gateway target
device failed to respond), as a Modbus TCP gateway does when nothing answers behind it;
the client learns at once instead of waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU

from firmware_sim.errors import ServeError
from firmware_sim.modbus.endpoint import (
    GATEWAY_TARGET_NO_RESPONSE,
    Answer,
    Endpoint,
    exception_pdu,
)
from firmware_sim.modbus.faults import FaultKind

log = logging.getLogger(__name__)

_MAX_ADU = 260


class TcpEndpoint(Endpoint):
    transport = "tcp"

    def _init_transport(self) -> None:
        config = self.config
        self._framer = FramerSocket(DecodePDU(is_server=True))
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.refused_connections = 0
        """Connections closed because ``max_connections`` were already open."""
        self.host = config.host
        self.port = config.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve_connection, self.config.host, self.config.port
            )
        except OSError as exc:
            raise ServeError(
                f"gateway {self.id}: cannot listen on {self.config.host}:{self.config.port}: "
                f"{exc.strerror or exc}"
            ) from None
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        log.info("gateway %s serves Modbus TCP on %s", self.id, self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._connections.values():
                writer.close()
            if self._connections:
                await asyncio.wait(list(self._connections), timeout=5)
            await self._server.wait_closed()
            self._server = None

    def unknown_unit(self, unit_id: int, pdu: bytes) -> Answer:
        return Answer(exception_pdu(pdu[0], GATEWAY_TARGET_NO_RESPONSE), unit_id)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        limit = self.config.max_connections
        if limit is not None and len(self._connections) >= limit:
            self.refused_connections += 1
            log.debug("gateway %s: refusing %s, %d connection(s) open", self.id, peer, limit)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        log.debug("gateway %s: connection from %s", self.id, peer)
        buffer = b""
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                rest = self._process(buffer + data, writer)
                if rest is None:
                    break
                buffer = rest
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            log.debug("gateway %s: %s disconnected", self.id, peer)

    def _process(self, buffer: bytes, writer: asyncio.StreamWriter) -> bytes | None:
        """Answer every complete frame in ``buffer``; the rest, or None to hang up."""
        while len(buffer) >= 8:
            if buffer[2:4] != b"\x00\x00" or not 2 <= int.from_bytes(buffer[4:6], "big") <= 254:
                log.debug("gateway %s: not a Modbus TCP frame, closing: %s", self.id,
                          buffer[:16].hex())
                return None
            used, unit_id, tid, pdu = self._framer.decode(buffer)
            if not used:
                break
            buffer = buffer[used:]
            answer = self.safe_handle(unit_id, pdu)
            if answer.pdu is not None:
                writer.write(self._frame(answer, answer.pdu, tid))
        return buffer

    def _frame(self, answer: Answer, pdu: bytes, tid: int) -> bytes:
        if answer.mangle is FaultKind.GARBAGE:
            # A well-framed reply whose PDU is noise, as a TCP gateway forwards a frame
            # spoiled on its serial side: the client's decoder must reject it.
            noise = bytearray(self.faults.random_bytes(max(len(pdu), 2)))
            noise[0] = 0x41 + noise[0] % 0x3F  # a function code no client knows
            return self._framer.encode(bytes(noise), answer.unit_id, tid)
        if answer.mangle is FaultKind.TRUNCATED:
            # The reply cut short, as a TCP gateway forwards a serial frame that broke
            # off: the MBAP header matches what is sent, the PDU lacks its tail, so the
            # client's decoder rejects it and the stream stays in step.
            return self._framer.encode(pdu[: max(1, len(pdu) // 2)], answer.unit_id, tid)
        return self._framer.encode(pdu, answer.unit_id, tid)
