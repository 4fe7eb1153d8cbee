"""The register codec, table-tested for every width, byte order and word order."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import CodecError
from edge_agent.planner import plan_reads
from edge_agent.profiles import DataType, Point, Table, builtin_profiles
from edge_agent.registers import (
    block_decoder,
    decode_point,
    encode_point,
    integer_range,
    pack_bits,
    point_decoder,
    quantize,
)

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


def point(dtype: str, byte_order: str = "big", word_order: str = "big", **kw: Any) -> Point:
    table = Table.COIL if dtype == "bool" else Table.HOLDING
    return Point(
        name="p",
        table=table,
        address=0,
        type=DataType(dtype),
        byte_order=byte_order,
        word_order=word_order,
        **kw,  # type: ignore[arg-type]
    )


# (type, value, {(byte_order, word_order): registers on the wire})
TABLE: list[tuple[str, int | float, dict[tuple[str, str], list[int]]]] = [
    ("uint16", 0x1234, {("big", "big"): [0x1234], ("little", "big"): [0x3412]}),
    ("int16", -2, {("big", "big"): [0xFFFE], ("little", "big"): [0xFEFF]}),
    ("int16", -32768, {("big", "big"): [0x8000], ("little", "big"): [0x0080]}),
    (
        "uint32",
        0x12345678,
        {
            ("big", "big"): [0x1234, 0x5678],  # ABCD
            ("big", "little"): [0x5678, 0x1234],  # CDAB
            ("little", "big"): [0x3412, 0x7856],  # BADC
            ("little", "little"): [0x7856, 0x3412],  # DCBA
        },
    ),
    (
        "int32",
        -2,
        {
            ("big", "big"): [0xFFFF, 0xFFFE],
            ("big", "little"): [0xFFFE, 0xFFFF],
            ("little", "big"): [0xFFFF, 0xFEFF],
            ("little", "little"): [0xFEFF, 0xFFFF],
        },
    ),
    (
        "float32",
        1.0,
        {
            ("big", "big"): [0x3F80, 0x0000],
            ("big", "little"): [0x0000, 0x3F80],
            ("little", "big"): [0x803F, 0x0000],
            ("little", "little"): [0x0000, 0x803F],
        },
    ),
    (
        "float32",
        -123.5,
        {
            ("big", "big"): [0xC2F7, 0x0000],
            ("big", "little"): [0x0000, 0xC2F7],
            ("little", "big"): [0xF7C2, 0x0000],
            ("little", "little"): [0x0000, 0xF7C2],
        },
    ),
    (
        "uint64",
        0x0102030405060708,
        {
            ("big", "big"): [0x0102, 0x0304, 0x0506, 0x0708],
            ("big", "little"): [0x0708, 0x0506, 0x0304, 0x0102],
            ("little", "big"): [0x0201, 0x0403, 0x0605, 0x0807],
            ("little", "little"): [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    (
        "int64",
        -0x0102030405060708,
        {
            ("big", "big"): [0xFEFD, 0xFCFB, 0xFAF9, 0xF8F8],
            ("big", "little"): [0xF8F8, 0xFAF9, 0xFCFB, 0xFEFD],
            ("little", "big"): [0xFDFE, 0xFBFC, 0xF9FA, 0xF8F8],
            ("little", "little"): [0xF8F8, 0xF9FA, 0xFBFC, 0xFDFE],
        },
    ),
    (
        "float64",
        1.0,
        {
            ("big", "big"): [0x3FF0, 0, 0, 0],
            ("big", "little"): [0, 0, 0, 0x3FF0],
            ("little", "big"): [0xF03F, 0, 0, 0],
            ("little", "little"): [0, 0, 0, 0xF03F],
        },
    ),
]

CASES = [
    pytest.param(t, v, bo, wo, regs, id=f"{t}-{v}-{bo}bytes-{wo}words")
    for t, v, by_order in TABLE
    for (bo, wo), regs in by_order.items()
]


@pytest.mark.parametrize(("dtype", "value", "byte_order", "word_order", "registers"), CASES)
def test_encode_gives_the_documented_wire_layout(
    dtype: str, value: int | float, byte_order: str, word_order: str, registers: list[int]
) -> None:
    assert encode_point(point(dtype, byte_order, word_order), value) == registers


@pytest.mark.parametrize(("dtype", "value", "byte_order", "word_order", "registers"), CASES)
def test_decode_reads_the_documented_wire_layout(
    dtype: str, value: int | float, byte_order: str, word_order: str, registers: list[int]
) -> None:
    decoded = decode_point(point(dtype, byte_order, word_order), registers)
    assert decoded.value == value
    assert type(decoded.value) is type(value)


def _strategy(dtype: DataType) -> st.SearchStrategy[Any]:
    if dtype is DataType.FLOAT32:
        return st.floats(width=32, allow_nan=False)
    if dtype is DataType.FLOAT64:
        return st.floats(allow_nan=False)
    lo, hi = integer_range(dtype)
    return st.integers(min_value=lo, max_value=hi)


NUMERIC = [t for t in DataType if t.is_integer or t.is_float]


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda t: t.value)
@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@given(data=st.data())
def test_every_type_and_order_round_trips(
    dtype: DataType, byte_order: str, word_order: str, data: st.DataObject
) -> None:
    p = point(dtype.value, byte_order, word_order)
    value = data.draw(_strategy(dtype))
    regs = encode_point(p, value)
    assert len(regs) == dtype.words
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode_point(p, regs).value == value


def test_scale_and_offset_give_engineering_units_and_round_to_the_register_step() -> None:
    p = point("int16", scale=0.1, offset=-40.0)
    assert encode_point(p, 21.37) == [614]  # (21.37 + 40) / 0.1 = 613.7 -> 614
    assert decode_point(p, [614]).value == pytest.approx(21.4)
    assert quantize(p, 21.37) == pytest.approx(21.4)


def test_exact_integers_stay_integers_so_counters_do_not_lose_precision() -> None:
    p = point("uint64")
    big = 2**63 + 1  # not representable as a float
    assert decode_point(p, encode_point(p, big)).value == big


def test_value_outside_the_register_range_is_an_error_naming_the_point_and_range() -> None:
    p = point("uint16", scale=0.01)
    with pytest.raises(CodecError, match=r"point 'p'.*outside uint16 range 0\.\.65535"):
        encode_point(p, 700.0)  # raw 70000


def test_saturate_clamps_like_controller_firmware() -> None:
    p = point("int16", scale=0.1)
    assert decode_point(p, encode_point(p, 1e6, saturate=True)).value == pytest.approx(3276.7)
    assert decode_point(p, encode_point(p, -1e6, saturate=True)).value == pytest.approx(-3276.8)
    f = point("float32")
    assert math.isfinite(float(decode_point(f, encode_point(f, 1e300, saturate=True)).value))


def test_nan_cannot_go_into_an_integer_register_but_survives_a_float_one() -> None:
    with pytest.raises(CodecError, match="NaN"):
        encode_point(point("int32"), math.nan)
    assert math.isnan(
        float(decode_point(point("float32"), encode_point(point("float32"), math.nan)).value)
    )


def test_float32_overflow_is_an_error() -> None:
    with pytest.raises(CodecError, match="overflows float32"):
        encode_point(point("float32"), 1e39)


@pytest.mark.parametrize(
    ("dtype", "words", "why"),
    [
        ("uint32", [1], "needs 2 registers, got 1"),
        ("uint16", [1, 2], "needs 1 registers, got 2"),
        ("uint16", [70000], "not a 16-bit unsigned integer"),
        ("float64", [1, 2, 3], "needs 4 registers, got 3"),
    ],
)
def test_wrong_register_counts_and_values_are_rejected(
    dtype: str, words: list[int], why: str
) -> None:
    with pytest.raises(CodecError, match=why):
        decode_point(point(dtype), words)


def test_strings_pad_with_nul_and_decode_without_it() -> None:
    p = point("string", length=4)
    regs = encode_point(p, "AB-1")
    assert regs == [0x4142, 0x2D31, 0, 0]
    assert decode_point(p, regs).value == "AB-1"
    swapped = point("string", byte_order="little", length=2)
    assert encode_point(swapped, "ABC") == [0x4241, 0x0043]
    assert decode_point(swapped, [0x4241, 0x0043]).value == "ABC"


def test_strings_that_do_not_fit_or_are_not_ascii_are_rejected() -> None:
    p = point("string", length=2)
    with pytest.raises(CodecError, match="longer than 4 characters"):
        encode_point(p, "ABCDE")
    assert decode_point(p, encode_point(p, "ABCDE", saturate=True)).value == "ABCD"
    with pytest.raises(CodecError, match="not ASCII"):
        encode_point(p, "Äb")


def test_bit_fields_decode_to_named_flags() -> None:
    p = point("uint16", bits={"running": 0, "alarm": 1, "lockout": 15})
    raw = pack_bits(p, {"running": True, "lockout": True})
    assert raw == 0x8001
    decoded = decode_point(p, encode_point(p, raw))
    assert decoded.bits == {"running": True, "alarm": False, "lockout": True}
    with pytest.raises(CodecError, match="no bits named"):
        pack_bits(p, {"defrost": True})


def test_enum_labels_known_codes_and_leaves_unknown_ones_unlabelled() -> None:
    p = point("uint16", enum={0: "off", 1: "running"})
    assert decode_point(p, [1]).label == "running"
    unknown = decode_point(p, [7])
    assert unknown.label is None
    assert unknown.value == 7


def test_bool_points_are_single_bits() -> None:
    p = point("bool")
    assert encode_point(p, True) == [1]
    assert decode_point(p, [1]).value is True
    assert decode_point(p, [0]).value is False


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("profile_id", ["ew-cc100", "ew-fc200"])
@given(data=st.data())
def test_point_decoder_agrees_with_decode_point(profile_id: str, data: st.DataObject) -> None:
    for p in builtin_profiles()[profile_id].points:
        top = 1 if p.type is DataType.BOOL else 0xFFFF
        words = data.draw(st.lists(st.integers(0, top), min_size=p.count, max_size=p.count))
        want, got = decode_point(p, words), point_decoder(p)(words)
        assert _same(got.value, want.value) and _same(got.raw, want.raw), p.name
        assert (got.bits, got.label) == (want.bits, want.label), p.name


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "uint32", "int64", "uint64",
                                   "float32", "float64"])
@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@given(data=st.data())
def test_point_decoder_agrees_for_every_order(
    dtype: str, byte_order: str, word_order: str, data: st.DataObject
) -> None:
    p = point(dtype, byte_order, word_order, scale=0.5, offset=-3.0)
    n = DataType(dtype).words
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n))
    want, got = decode_point(p, words), point_decoder(p)(words)
    assert _same(got.value, want.value) and _same(got.raw, want.raw)


# -- block_decoder: a whole read block at once ------------------------------------------
def at(p: Point, address: int, name: str = "p") -> Point:
    return p.model_copy(update={"address": address, "name": name})


def _agrees(want: Any, got: Any, name: str) -> None:
    assert _same(got.value, want.value) and _same(got.raw, want.raw), name
    assert (got.bits, got.label) == (want.bits, want.label), name


@pytest.mark.parametrize(("dtype", "value", "byte_order", "word_order", "registers"), CASES)
def test_block_decoder_reads_the_documented_wire_layout(
    dtype: str, value: int | float, byte_order: str, word_order: str, registers: list[int]
) -> None:
    # the point between two unmapped registers of a block that starts at 100
    p = at(point(dtype, byte_order, word_order), 101)
    words = [0xDEAD, *registers, 0xBEEF]
    decoded = block_decoder([p], 100)(words)
    assert list(decoded) == ["p"]
    assert decoded["p"].value == value and type(decoded["p"].value) is type(value)
    _agrees(decode_point(p, registers), decoded["p"], p.name)


def test_block_decoder_mixes_every_type_and_order_in_one_block() -> None:
    points, words = [], []
    for i, (dtype, _value, by_order) in enumerate(TABLE):
        for (bo, wo), regs in by_order.items():
            words.append(0x5555)  # a gap register before each point
            points.append(at(point(dtype, bo, wo), len(words), f"p{len(points)}_{i}"))
            words += regs
    points.append(at(point("string", length=2), len(words), "serial"))
    words += encode_point(points[-1], "AB1")
    decoded = block_decoder(points, 0)(words)
    assert list(decoded) == [p.name for p in points]  # in the order of the points
    for p in points:
        lo = p.address
        _agrees(decode_point(p, words[lo : lo + p.count]), decoded[p.name], p.name)
    assert decoded["serial"].value == "AB1"


def test_block_decoder_applies_scale_offset_bits_and_enum() -> None:
    points = [
        at(point("int16", scale=0.1, offset=-40.0), 0, "temp"),
        at(point("uint16", bits={"running": 0, "alarm": 1}), 1, "flags"),
        at(point("uint16", enum={0: "off", 1: "running"}), 2, "state"),
        at(point("uint32", word_order="little"), 3, "counter"),
        at(point("float32", byte_order="little", scale=2.0), 5, "speed"),
    ]
    words = [614, 0b10, 1, 0x5678, 0x1234, 0x803F, 0x0000]
    got = block_decoder(points, 0)(words)
    assert got["temp"].value == pytest.approx(21.4) and got["temp"].raw == 614
    assert got["flags"].bits == {"running": False, "alarm": True} and got["flags"].value == 2
    assert (got["state"].value, got["state"].label) == (1, "running")
    assert got["counter"].value == 0x12345678 and type(got["counter"].value) is int
    assert (got["speed"].raw, got["speed"].value) == (1.0, 2.0)


@pytest.mark.parametrize("profile_id", ["ew-cc100", "ew-fc200"])
@given(data=st.data())
def test_block_decoder_agrees_with_decode_point_on_the_shipped_profiles(
    profile_id: str, data: st.DataObject
) -> None:
    profile = builtin_profiles()[profile_id]
    for max_gap in (0, 16):
        for block in plan_reads(profile, profile.points, max_gap=max_gap, max_registers=125):
            top = 1 if block.table.is_bit_table else 0xFFFF
            n = block.count
            words = data.draw(st.lists(st.integers(0, top), min_size=n, max_size=n))
            got = block_decoder(block.points, block.address)(words)
            assert list(got) == [p.name for p in block.points]
            for p in block.points:
                lo = p.address - block.address
                _agrees(decode_point(p, words[lo : lo + p.count]), got[p.name], p.name)


@pytest.mark.parametrize("dtype", [t.value for t in NUMERIC])
@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@given(data=st.data())
def test_block_decoder_agrees_with_decode_point_for_every_order(
    dtype: str, byte_order: str, word_order: str, data: st.DataObject
) -> None:
    # two points of the type around a big-endian neighbour, scaled and offset
    n = DataType(dtype).words
    first = at(point(dtype, byte_order, word_order, scale=0.5, offset=-3.0), 0, "first")
    middle = at(point("uint16"), n, "middle")
    last = at(point(dtype, byte_order, word_order), n + 2, "last")  # one gap register
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=2 * n + 2, max_size=2 * n + 2))
    got = block_decoder([first, middle, last], 0)(words)
    for p in (first, middle, last):
        _agrees(decode_point(p, words[p.address : p.address + p.count]), got[p.name], p.name)
