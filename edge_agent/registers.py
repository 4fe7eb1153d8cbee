"""Register codec: pure functions between engineering values and Modbus registers.

Every width, byte order and word order goes through these few functions, for the
agent (decode) and the simulator (encode) alike, so they are table-tested once.

Byte and word order, for the 32-bit value 0xAABBCCDD (A most significant byte):

    word_order  byte_order  registers on the wire   common name
    big         big         0xAABB 0xCCDD           ABCD (Modbus standard)
    little      big         0xCCDD 0xAABB           CDAB ("word swap")
    big         little      0xBBAA 0xDDCC           BADC ("byte swap")
    little      little      0xDDCC 0xBBAA           DCBA

64-bit values follow the same rules over four registers. Strings are two characters
a register, first character in the high byte unless ``byte_order`` is little.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_agent.errors import CodecError
from edge_agent.profiles import DataType, Point

Number = int | float
Value = int | float | str | bool

_FLOAT_FORMAT = {DataType.FLOAT32: ">f", DataType.FLOAT64: ">d"}
_SIGNED = {DataType.INT16, DataType.INT32, DataType.INT64}


@dataclass(frozen=True, slots=True)
class PointValue:
    """A decoded point.

    ``value`` is the engineering value (``raw * scale + offset``; an ``int`` when the
    point is an integer with scale 1 and offset 0, so counters stay exact), ``raw`` the
    number as it sat in the registers, ``bits`` the named bits, and ``label`` the enum
    label (``None`` for a value the profile does not name).
    """

    value: Value
    raw: Value
    bits: Mapping[str, bool] = field(default_factory=dict)
    label: str | None = None


def _endian(order: str) -> Literal["big", "little"]:
    return "big" if order == "big" else "little"


def integer_range(dtype: DataType) -> tuple[int, int]:
    """Smallest and largest raw value of an integer type."""
    width = 16 * dtype.words
    if dtype in _SIGNED:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def _check_words(point: Point, words: Sequence[int]) -> None:
    if len(words) != point.count:
        raise CodecError(point.name, f"needs {point.count} registers, got {len(words)}")
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise CodecError(point.name, f"register value {w} is not a 16-bit unsigned integer")


def words_to_bytes(words: Sequence[int], byte_order: str, word_order: str) -> bytes:
    """Registers as they came off the wire -> the value's bytes, most significant first."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    if byte_order == "big":
        return b"".join(w.to_bytes(2, "big") for w in ordered)
    return b"".join(w.to_bytes(2, "little") for w in ordered)


def bytes_to_words(data: bytes, byte_order: str, word_order: str) -> list[int]:
    """The inverse of :func:`words_to_bytes`."""
    if len(data) % 2:
        raise ValueError("an odd number of bytes does not fill whole registers")
    endian = _endian(byte_order)
    words = [int.from_bytes(data[i : i + 2], endian) for i in range(0, len(data), 2)]
    return words if word_order == "big" else list(reversed(words))


def decode_raw(point: Point, words: Sequence[int]) -> Value:
    """Registers (or one bit, for a bool point) -> the raw number, string or bool."""
    _check_words(point, words)
    t = point.type
    if t is DataType.BOOL:
        return bool(words[0])
    if t is DataType.STRING:
        data = b"".join(w.to_bytes(2, _endian(point.byte_order)) for w in words)
        return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").rstrip(" ")
    data = words_to_bytes(words, point.byte_order, point.word_order)
    if t.is_float:
        return float(struct.unpack(_FLOAT_FORMAT[t], data)[0])
    return int.from_bytes(data, "big", signed=t in _SIGNED)


def _is_exact(point: Point) -> bool:
    return point.type.is_integer and point.scale == 1 and point.offset == 0


def decode_point(point: Point, words: Sequence[int]) -> PointValue:
    """Registers -> :class:`PointValue` with scale, offset, bits and enum applied."""
    raw = decode_raw(point, words)
    if isinstance(raw, (str, bool)):
        return PointValue(value=raw, raw=raw)
    if isinstance(raw, int):
        bits = {n: bool((raw >> b) & 1) for n, b in (point.bits or {}).items()}
        label = (point.enum or {}).get(raw)
        value: Number = raw if _is_exact(point) else raw * point.scale + point.offset
        return PointValue(value=value, raw=raw, bits=bits, label=label)
    return PointValue(value=raw * point.scale + point.offset, raw=raw)


PointDecoder = Callable[[Sequence[int]], PointValue]


def point_decoder(point: Point) -> PointDecoder:
    """:func:`decode_point` for ``point`` with its per-point work done once: the returned
    function takes exactly ``point.count`` 16-bit words (the caller guarantees it; no
    checks are made) and returns what :func:`decode_point` would."""
    t = point.type
    if t is DataType.BOOL:

        def decode_bool(words: Sequence[int]) -> PointValue:
            raw = bool(words[0])
            return PointValue(value=raw, raw=raw)

        return decode_bool
    n = point.count
    pack = struct.Struct(("<" if point.byte_order == "little" else ">") + f"{n}H").pack
    if t is DataType.STRING:

        def decode_string(words: Sequence[int]) -> PointValue:
            text = pack(*words).split(b"\x00", 1)[0]
            raw = text.decode("ascii", errors="replace").rstrip(" ")
            return PointValue(value=raw, raw=raw)

        return decode_string
    reverse = point.word_order != "big"
    scale, offset = point.scale, point.offset
    if t.is_float:
        unpack = struct.Struct(_FLOAT_FORMAT[t]).unpack

        def decode_float(words: Sequence[int]) -> PointValue:
            data = pack(*(reversed(words) if reverse else words))
            raw = float(unpack(data)[0])
            return PointValue(value=raw * scale + offset, raw=raw)

        return decode_float
    signed = t in _SIGNED
    exact = _is_exact(point)
    bits = tuple((point.bits or {}).items())
    enum = point.enum or {}
    from_bytes = int.from_bytes

    def decode_int(words: Sequence[int]) -> PointValue:
        raw = from_bytes(pack(*(reversed(words) if reverse else words)), "big", signed=signed)
        flags = {name: bool((raw >> b) & 1) for name, b in bits} if bits else {}
        value: Number = raw if exact else raw * scale + offset
        return PointValue(value=value, raw=raw, bits=flags, label=enum.get(raw))

    return decode_int


_STRUCT_CODE = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
"""struct codes (with ``>``: standard sizes, most significant byte first) of the numbers."""

BlockDecoder = Callable[[Sequence[int]], dict[str, PointValue]]


def _finisher(point: Point) -> Callable[[Any], PointValue]:
    """Raw number (as :func:`decode_raw` gives it) -> what :func:`decode_point` returns."""
    scale, offset = point.scale, point.offset
    if point.type.is_float:

        def finish_float(raw: float) -> PointValue:
            return PointValue(raw * scale + offset, raw)

        return finish_float
    exact = _is_exact(point)
    bits = tuple((point.bits or {}).items())
    enum = point.enum or {}
    if exact and not bits and not enum:

        def finish_exact(raw: int) -> PointValue:
            return PointValue(raw, raw, {}, None)

        return finish_exact

    def finish_int(raw: int) -> PointValue:
        flags = {name: bool((raw >> b) & 1) for name, b in bits} if bits else {}
        value: Number = raw if exact else raw * scale + offset
        return PointValue(value, raw, flags, enum.get(raw))

    return finish_int


def block_decoder(points: Sequence[Point], address: int) -> BlockDecoder:
    """:func:`decode_point` for every point of a read block at once, by point name.

    ``points`` lie whole in the block that starts at ``address`` (their offset in it is
    ``point.address - address``; registers between them are skipped). The returned
    function takes the block's words (at least up to the end of the last point, each a
    16-bit word; the caller guarantees both, no checks are made) and gives what
    :func:`decode_point` gives for each point, in the order of ``points``.

    The numbers of a block are decoded with one ``struct`` pack and unpack per byte
    order: the words of each point are gathered in big-endian word order (reversed for
    ``word_order: little``), packed with the byte order of their points, and unpacked
    most significant byte first. Strings and bools go through :func:`point_decoder`.
    """
    names = [p.name for p in points]
    finish: list[Callable[[Any], PointValue] | None] = []
    by_order: dict[str, tuple[list[int], list[str], list[int]]] = {}
    others: list[tuple[int, int, int, PointDecoder]] = []
    for slot, p in enumerate(points):
        lo = p.address - address
        code = _STRUCT_CODE.get(p.type)
        if code is None:
            others.append((slot, lo, lo + p.count, point_decoder(p)))
            finish.append(None)
            continue
        order = list(range(lo, lo + p.count))
        if p.word_order != "big":
            order.reverse()
        index, codes, slots = by_order.setdefault(p.byte_order, ([], [], []))
        index += order
        codes.append(code)
        slots.append(slot)
        finish.append(_finisher(p))
    groups: list[
        tuple[
            Callable[[Sequence[int]], Sequence[int]],
            Callable[..., bytes],
            Callable[[bytes], tuple[Any, ...]],
            list[tuple[int, Callable[[Any], PointValue]]],
        ]
    ] = []
    for byte_order, (index, codes, slots) in by_order.items():
        gather = _gatherer(index)
        pack = struct.Struct(("<" if byte_order == "little" else ">") + f"{len(index)}H").pack
        unpack = struct.Struct(">" + "".join(codes)).unpack
        done = [(slot, f) for slot in slots if (f := finish[slot]) is not None]
        groups.append((gather, pack, unpack, done))
    n = len(points)

    def decode_block(words: Sequence[int]) -> dict[str, PointValue]:
        out: list[PointValue | None] = [None] * n
        for gather, pack, unpack, done in groups:
            for (slot, f), raw in zip(done, unpack(pack(*gather(words))), strict=True):
                out[slot] = f(raw)
        for slot, lo, hi, decode in others:
            out[slot] = decode(words[lo:hi])
        return dict(zip(names, out, strict=True))  # type: ignore[arg-type]

    return decode_block


def _gatherer(index: Sequence[int]) -> Callable[[Sequence[int]], Sequence[int]]:
    """``words -> [words[i] for i in index]``, in C (itemgetter returns a bare item for one
    index: wrap it)."""
    if len(index) == 1:
        i = index[0]
        return lambda words: (words[i],)
    return operator.itemgetter(*index)


def encode_point(point: Point, value: Value, *, saturate: bool = False) -> list[int]:
    """Engineering value -> registers (or ``[0|1]`` for a bool point).

    Integer points round to the nearest raw step. A value outside the type's range is
    an error, or, with ``saturate=True``, clamped to the range, as a controller's
    firmware does with a reading past its register's limits.
    """
    t = point.type
    if t is DataType.BOOL:
        if not isinstance(value, (bool, int)):
            raise CodecError(point.name, f"expected a bool, got {value!r}")
        return [1 if value else 0]
    if t is DataType.STRING:
        if not isinstance(value, str):
            raise CodecError(point.name, f"expected a string, got {value!r}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError:
            raise CodecError(point.name, f"{value!r} is not ASCII") from None
        size = 2 * point.count
        if len(data) > size:
            if not saturate:
                raise CodecError(point.name, f"{value!r} is longer than {size} characters")
            data = data[:size]
        data = data.ljust(size, b"\x00")
        endian = _endian(point.byte_order)
        return [int.from_bytes(data[i : i + 2], endian) for i in range(0, size, 2)]
    if isinstance(value, str):
        raise CodecError(point.name, f"expected a number, got {value!r}")
    if isinstance(value, float) and math.isnan(value) and not t.is_float:
        raise CodecError(point.name, f"NaN cannot be stored in a {t.value}")
    raw = (value - point.offset) / point.scale if not _is_exact(point) else value
    if t.is_float:
        try:
            data = struct.pack(_FLOAT_FORMAT[t], raw)
        except OverflowError:
            if not saturate:
                raise CodecError(point.name, f"{value!r} overflows {t.value}") from None
            limit = 3.4028234663852886e38
            data = struct.pack(_FLOAT_FORMAT[t], math.copysign(limit, raw))
        return bytes_to_words(data, point.byte_order, point.word_order)
    if isinstance(raw, float) and math.isinf(raw):
        if not saturate:
            raise CodecError(point.name, f"{value!r} does not fit {t.value}")
        raw = 0.0
    rounded = round(raw)
    lo, hi = integer_range(t)
    if not lo <= rounded <= hi:
        if not saturate:
            raise CodecError(
                point.name,
                f"{value!r} is raw {rounded}, outside {t.value} range {lo}..{hi}"
                f" (scale {point.scale}, offset {point.offset})",
            )
        rounded = min(max(rounded, lo), hi)
    data = rounded.to_bytes(2 * t.words, "big", signed=t in _SIGNED)
    return bytes_to_words(data, point.byte_order, point.word_order)


def pack_bits(point: Point, flags: Mapping[str, bool]) -> int:
    """Named flags -> the raw integer of a bit-field point."""
    names = point.bits or {}
    unknown = set(flags) - set(names)
    if unknown:
        raise CodecError(point.name, f"has no bits named {sorted(unknown)}; it has {sorted(names)}")
    raw = 0
    for name, on in flags.items():
        if on:
            raw |= 1 << names[name]
    return raw


def quantize(point: Point, value: float) -> float:
    """The value a reader would decode after ``value`` went through the register."""
    return float(decode_point(point, encode_point(point, value, saturate=True)).value)
