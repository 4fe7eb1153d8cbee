"""Modbus TCP framing and read answers (edge_agent.mbap): the specification's own examples,
what a peer can send wrong, and agreement with pymodbus's framer on random answers."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from edge_agent import mbap
from edge_agent.errors import DeviceTimeout, FrameError, LinkError, ModbusException
from edge_agent.profiles import Table
from edge_agent.transport import MbapClient

# -- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "frame"),
    [
        # Modbus application protocol v1.1b3, 6.3: read holding registers 108-110 of unit 17
        ((1, 17, 3, 107, 3), "0001 0000 0006 11 03 006b 0003"),
        # 6.1: read coils 20-38
        ((0x1234, 1, 1, 19, 19), "1234 0000 0006 01 01 0013 0013"),
        ((0xFFFF, 0, 2, 0xFFFF, 1), "ffff 0000 0006 00 02 ffff 0001"),
        ((0x10000 + 5, 255, 4, 0, 125), "0005 0000 0006 ff 04 0000 007d"),  # tid wraps
    ],
)
def test_read_request_frames(args: tuple[int, int, int, int, int], frame: str) -> None:
    assert mbap.read_request(*args) == bytes.fromhex(frame.replace(" ", ""))


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((1, 1, 6, 0, 1), "not a read function"),
        ((1, 1, 3, 0, 126), "count 126 outside 1..125"),
        ((1, 1, 1, 0, 2001), "count 2001 outside 1..2000"),
        ((1, 1, 4, 0, 0), "count 0"),
        ((1, 1, 3, 0xFFFF, 2), "outside the 16-bit address space"),
        ((1, 256, 3, 0, 1), "unit id 256"),
    ],
)
def test_a_request_no_device_could_answer_is_refused(
    args: tuple[int, int, int, int, int], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        mbap.read_request(*args)


# -- framing ----------------------------------------------------------------------------------


def frame(tid: int, unit: int, pdu: str) -> bytes:
    data = bytes.fromhex(pdu.replace(" ", ""))
    return struct.pack(">HHHB", tid, 0, len(data) + 1, unit) + data


def test_frames_are_split_and_a_partial_one_is_left_for_more_bytes() -> None:
    a, b = frame(1, 17, "03 06 022b 0000 0064"), frame(2, 17, "84 02")
    stream = a + b + frame(3, 1, "04 02 0001")[:-1]
    frames, used = mbap.split_frames(bytearray(stream))
    assert frames == [
        (1, 17, bytes.fromhex("0306022b00000064")),
        (2, 17, bytes.fromhex("8402")),
    ]
    assert used == len(a) + len(b)
    assert mbap.split_frames(a[:6]) == ([], 0)  # not even a whole header


@pytest.mark.parametrize(
    ("head", "why"),
    [
        ("0001 0001 0006 01", "protocol id 1"),
        ("0001 0000 0001 01", "length 1"),
        ("0001 0000 00ff 01", "length 255"),
        ("4869 2074 6865 72", "protocol id 8308"),  # text on the port
    ],
)
def test_a_header_that_is_not_mbap_says_so(head: str, why: str) -> None:
    good = frame(9, 1, "03 02 0001")
    with pytest.raises(FrameError, match=why):
        mbap.split_frames(good + bytes.fromhex(head.replace(" ", "")) + b"\x00" * 8)


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "function", "count", "words"),
    [
        ("03 06 022b 0000 0064", 3, 3, [555, 0, 100]),  # the specification's example, 6.3
        ("04 02 000a", 4, 1, [10]),
        ("04 04 ffff 8000", 4, 2, [0xFFFF, 0x8000]),
        # 6.1: coils 20-38 are CD 6B 05, least significant bit first
        (
            "01 03 cd 6b 05",
            1,
            19,
            [1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1],
        ),
        ("02 01 01", 2, 1, [1]),
        ("02 02 ff 01", 2, 9, [1] * 9),
    ],
)
def test_read_answers_give_registers_and_bits(
    pdu: str, function: int, count: int, words: list[int]
) -> None:
    assert mbap.read_answer(bytes.fromhex(pdu.replace(" ", "")), function, count) == words


@pytest.mark.parametrize(
    ("pdu", "function", "count", "error", "why"),
    [
        ("83 02", 3, 1, ModbusException, "exception 0x02"),
        ("81 0b", 1, 8, ModbusException, "exception 0x0b"),
        ("83 02 00", 3, 1, FrameError, "exception response of 3 bytes"),
        ("", 3, 1, FrameError, "empty PDU"),
        ("04 02 0001", 3, 1, FrameError, "function code 4, asked 3"),
        ("84 02", 3, 1, FrameError, "function code 132, asked 3"),
        ("7f 1a 2b", 3, 1, FrameError, "function code 127"),  # noise from a spoiled frame
        ("03", 3, 1, FrameError, "byte count"),
        ("03 04 0001", 3, 2, FrameError, "byte count"),  # truncated
        ("03 02 0001", 3, 2, FrameError, "2 bytes for 2 registers"),
        ("03 03 000100", 3, 1, FrameError, "3 bytes for 1 registers"),
        ("01 02 ff 01", 1, 8, FrameError, "2 bytes for 8 bits"),
        ("01 01 ff", 1, 9, FrameError, "1 bytes for 9 bits"),
    ],
)
def test_an_answer_that_does_not_answer_the_request_says_what_is_wrong(
    pdu: str, function: int, count: int, error: type[Exception], why: str
) -> None:
    with pytest.raises(error, match=why):
        mbap.read_answer(bytes.fromhex(pdu.replace(" ", "")), function, count)


RESPONSES = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, int, int, list[int]]:
    function = draw(st.sampled_from([1, 2, 3, 4]))
    if function in (3, 4):
        values = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125))
    else:
        values = draw(st.lists(st.integers(0, 1), min_size=1, max_size=2000))
    return draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 247)), function, values


@given(answers())
def test_agrees_with_pymodbus_on_answers_pymodbus_frames(
    answer: tuple[int, int, int, list[int]],
) -> None:
    tid, unit, function, values = answer
    cls = RESPONSES[function]
    if function in (3, 4):
        pdu = cls(registers=values, dev_id=unit, transaction_id=tid)
    else:
        pdu = cls(bits=[bool(v) for v in values], dev_id=unit, transaction_id=tid)
    wire = FramerSocket(DecodePDU(is_server=False)).buildFrame(pdu)
    frames, used = mbap.split_frames(wire)
    assert used == len(wire)
    assert [(t, u) for t, u, _ in frames] == [(tid, unit)]
    assert mbap.read_answer(frames[0][2], function, len(values)) == values


# -- the client on a real socket ---------------------------------------------------------------

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def device(handle: Handler) -> AsyncIterator[int]:
    """A TCP server on loopback that gives each request frame to ``handle``."""

    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(6)
                rest = await reader.readexactly(int.from_bytes(head[4:6], "big"))
                await handle(head + rest, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        await server.wait_closed()


def answer_to(request: bytes, pdu: str) -> bytes:
    tid, unit = int.from_bytes(request[:2], "big"), request[6]
    return frame(tid, unit, pdu)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_late_answer_is_dropped_and_the_next_request_gets_its_own() -> None:
    async def main() -> None:
        calls = 0

        async def handle(request: bytes, writer: asyncio.StreamWriter) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.sleep(0.3)  # answers after the client gave up
                writer.write(answer_to(request, "04 02 0001"))
            else:
                writer.write(answer_to(request, "04 02 0002"))

        async with device(handle) as port:
            client = MbapClient("bus-1", "127.0.0.1", port, timeout_s=0.2)
            assert await client.connect()
            with pytest.raises(DeviceTimeout, match="bus-1 unit 1 input 0\\+1: no answer"):
                await client.read(1, Table.INPUT, 0, 1)
            await asyncio.sleep(0.2)  # the late answer arrives now
            assert await client.read(1, Table.INPUT, 0, 1) == [2]
            assert client.connected
            client.close()

    run(main())


@pytest.mark.parametrize(
    ("reply", "error", "why"),
    [
        ("83 02", ModbusException, "exception 0x02: bus-1 unit 1 holding 10\\+2"),
        ("03 04 0001 0002", FrameError, "bus-1 unit 1 holding 10\\+2: answer from unit 9"),
        ("03 02 0001", FrameError, "bus-1 unit 1 holding 10\\+2: answer holds 2 bytes"),
    ],
)
def test_errors_name_the_bus_unit_and_block(
    reply: str, error: type[Exception], why: str
) -> None:
    async def main() -> None:
        async def handle(request: bytes, writer: asyncio.StreamWriter) -> None:
            unit = 9 if "unit 9" in why else request[6]
            pdu = bytes.fromhex(reply.replace(" ", ""))
            writer.write(struct.pack(">HHHB", int.from_bytes(request[:2]), 0, len(pdu) + 1, unit))
            writer.write(pdu)

        async with device(handle) as port:
            client = MbapClient("bus-1", "127.0.0.1", port, timeout_s=0.5)
            assert await client.connect()
            with pytest.raises(error, match=why):
                await client.read(1, Table.HOLDING, 10, 2)
            client.close()

    run(main())


def test_a_stream_out_of_step_is_a_frame_error_and_the_connection_is_closed() -> None:
    async def main() -> None:
        async def handle(request: bytes, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        async with device(handle) as port:
            client = MbapClient("bus-1", "127.0.0.1", port, timeout_s=0.5)
            assert await client.connect()
            with pytest.raises(FrameError, match="bus-1 unit 1 coil 0\\+8: not a Modbus TCP"):
                await client.read(1, Table.COIL, 0, 8)
            await asyncio.sleep(0.05)
            assert not client.connected
            with pytest.raises(LinkError, match="not connected"):
                await client.read(1, Table.COIL, 0, 8)

    run(main())


def test_a_connection_closed_under_a_request_is_a_link_error() -> None:
    async def main() -> None:
        async def handle(request: bytes, writer: asyncio.StreamWriter) -> None:
            writer.close()

        async with device(handle) as port:
            client = MbapClient("bus-1", "127.0.0.1", port, timeout_s=1.0)
            assert await client.connect()
            with pytest.raises(LinkError, match=r"bus-1 unit 1 discrete 0\+1: .*connection lost"):
                await client.read(1, Table.DISCRETE, 0, 1)
            assert not client.connected

    run(main())


def test_pipelined_reads_are_paired_by_transaction_id_and_fail_one_by_one() -> None:
    async def main() -> None:
        held: list[bytes] = []

        async def handle(request: bytes, writer: asyncio.StreamWriter) -> None:
            held.append(request)
            if len(held) < 4:
                return
            # Answers in reverse order; the read of address 2 gets none, address 3 an
            # exception.
            for r in reversed(held):
                address = int.from_bytes(r[8:10], "big")
                if address == 3:
                    writer.write(answer_to(r, "84 02"))
                elif address != 2:
                    writer.write(answer_to(r, f"04 02 {100 + address:04x}"))
            held.clear()

        async with device(handle) as port:
            client = MbapClient("bus-1", "127.0.0.1", port, timeout_s=0.3)
            assert await client.connect()
            reads = [(Table.INPUT, a, 1) for a in range(4)]
            got = await client.read_many(1, reads)
            assert got[0] == [100] and got[1] == [101]
            assert isinstance(got[2], DeviceTimeout)
            assert str(got[2]) == "bus-1 unit 1 input 2+1: no answer in 0.3 s"
            assert isinstance(got[3], ModbusException) and got[3].code == 2
            assert "bus-1 unit 1 input 3+1" in str(got[3])
            client.close()

    run(main())
