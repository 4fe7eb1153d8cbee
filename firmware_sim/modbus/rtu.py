"""Modbus RTU on a pseudo-terminal: the simulator is every slave on one serial bus.

The simulator opens a pty pair and owns the master side; a client (the agent, a test)
opens the slave path (``/dev/pts/N``) as it would a USB-RS485 adapter. Frames are
pymodbus's RTU framer (address, PDU, CRC-16). One bus carries one request at a time;
requests for unit ids nobody has, and frames with a bad CRC, get no answer, as on a
real bus.

With ``byte_timing`` the bus runs at its baud rate: a frame of n bytes takes n character
times (1 start + 8 data + parity + stop bits, over the baud rate) to arrive and to be
answered, and the answer starts no earlier than 3.5 character times after the request
ended. Without it, answers go out as fast as the pty moves them.

A pty has no real line: its baud rate and parity are only settings. Some Linux kernels
refuse parity (PARENB) on a pty, so a client may have to open the slave with parity N;
the gateway's configured parity still sets the character time used for byte timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import tty

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from firmware_sim.errors import ServeError
from firmware_sim.modbus.endpoint import Answer, Endpoint
from firmware_sim.modbus.faults import FaultKind

log = logging.getLogger(__name__)

#: A partial frame older than this (wall seconds, pty without byte timing) is dropped.
_STALE_S = 0.25


def char_time(baudrate: int, parity: str, stopbits: int) -> float:
    """Seconds one character takes on the wire."""
    bits = 1 + 8 + (0 if parity == "N" else 1) + stopbits
    return bits / baudrate


class RtuEndpoint(Endpoint):
    transport = "rtu"

    def _init_transport(self) -> None:
        config = self.config
        self._framer = FramerRTU(DecodePDU(is_server=True))
        self.char_s = char_time(config.baudrate, config.parity, config.stopbits)
        self.byte_timing = config.byte_timing
        self._master: int | None = None
        self._slave: int | None = None
        self.path = ""
        self._buffer = b""
        self._last_rx = 0.0
        self._frames: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._bus_free_at = 0.0

    @property
    def address(self) -> str:
        return self.path

    async def start(self) -> None:
        try:
            master, slave = os.openpty()
        except OSError as exc:
            raise ServeError(
                f"gateway {self.id}: cannot open a pty: {exc.strerror or exc}"
            ) from None
        tty.setraw(slave)
        # The simulator keeps the slave side open too, so the master never reads EIO
        # while no client has the port open.
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        os.set_blocking(master, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._on_readable)
        self._worker = asyncio.create_task(self._serve(), name=f"rtu-{self.id}")
        log.info("gateway %s serves Modbus RTU on %s (%d baud%s)", self.id, self.path,
                 self.config.baudrate, ", byte timing" if self.byte_timing else "")

    async def stop(self) -> None:
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    # -- receiving -------------------------------------------------------------------
    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: no slave side open (should not happen, we hold one)
            log.debug("gateway %s: pty read: %s", self.id, exc)
            return
        now = time.monotonic()
        stale = _STALE_S if not self.byte_timing else max(_STALE_S, 3.5 * self.char_s)
        if self._buffer and now - self._last_rx > stale:
            log.debug("gateway %s: dropping a stale partial frame %s", self.id, self._buffer.hex())
            self._buffer = b""
        self._last_rx = now
        self._buffer += data
        while self._buffer:
            used, unit_id, _tid, pdu = self._framer.decode(self._buffer)
            if not used:
                if len(self._buffer) > 256:
                    self._buffer = b""
                return
            frame = self._buffer[:used]
            self._buffer = self._buffer[used:]
            if pdu:
                self._frames.put_nowait((bytes([unit_id]) + pdu, now))
                # The framer takes the whole buffer with a frame; one request at a time.
            else:
                log.debug("gateway %s: dropped a frame with a bad CRC: %s", self.id, frame.hex())

    # -- answering -------------------------------------------------------------------
    async def _serve(self) -> None:
        while True:
            frame, received = await self._frames.get()
            unit_id, pdu = frame[0], frame[1:]
            if self.byte_timing:
                # The request took its wire time to arrive, then 3.5 characters of silence.
                await self._sleep_until(received + (len(frame) + 2 + 3.5) * self.char_s)
            answer = self.safe_handle(unit_id, pdu)
            if answer.pdu is None:
                continue
            await self._send(self._frame(answer, answer.pdu))

    def _frame(self, answer: Answer, pdu: bytes) -> bytes:
        adu = self._framer.encode(pdu, answer.unit_id, 0)
        if answer.mangle is FaultKind.GARBAGE:
            noise = bytearray(self.faults.random_bytes(len(adu)))
            crc = FramerRTU.compute_CRC(bytes(noise[:-2])).to_bytes(2, "big")
            if bytes(noise[-2:]) == crc:  # never a valid frame by accident
                noise[-1] ^= 0xFF
            return bytes(noise)
        if answer.mangle is FaultKind.TRUNCATED:
            return adu[: max(1, len(adu) // 2)]
        return adu

    async def _send(self, adu: bytes) -> None:
        if not self.byte_timing:
            self._write(adu)
            return
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._bus_free_at)
        sent = 0
        while sent < len(adu):
            # Each byte goes out when its last bit would have left the wire.
            due = min(len(adu), int((loop.time() - start) / self.char_s))
            if due > sent:
                self._write(adu[sent:due])
                sent = due
            if sent < len(adu):
                await asyncio.sleep(max(0.0, start + (sent + 1) * self.char_s - loop.time()))
        self._bus_free_at = start + (len(adu) + 3.5) * self.char_s

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return
        try:
            os.write(self._master, data)
        except BlockingIOError:
            log.debug("gateway %s: pty full (no client reading?), %d bytes dropped", self.id,
                      len(data))

    @staticmethod
    async def _sleep_until(deadline_monotonic: float) -> None:
        delay = deadline_monotonic - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
