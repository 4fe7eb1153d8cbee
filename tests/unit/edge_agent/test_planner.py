"""Read planning, table-tested: gaps, limits, strings, 64-bit points at block edges,
bit tables, refused addresses, and learning what a device refuses."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import CodecError
from edge_agent.planner import (
    ReadBlock,
    Refusals,
    decode_block,
    group_points,
    oversized_points,
    plan_reads,
    unreadable_points,
)
from edge_agent.profiles import DeviceProfile, Table, builtin_profiles, parse_profile
from edge_agent.registers import encode_point

H, IN, C, D = Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE


def profile(*points: tuple[Any, ...]) -> DeviceProfile:
    """Points as (name, table, address, type[, length])."""
    pts = []
    for name, table, address, dtype, *rest in points:
        p: dict[str, Any] = {"name": name, "table": table.value, "address": address,
                             "type": dtype}
        if rest:
            p["length"] = rest[0]
        pts.append(p)
    return parse_profile({"schema_version": 1, "id": "t", "asset_type": "fan", "points": pts})


def spans(blocks: list[ReadBlock]) -> list[tuple[str, int, int, list[str]]]:
    return [(b.table.value, b.address, b.count, [p.name for p in b.points]) for b in blocks]


def plan(prof: DeviceProfile, *, max_gap: int = 16, max_registers: int = 125,
         names: list[str] | None = None, **kw: Any) -> list[tuple[str, int, int, list[str]]]:
    pts = [prof.point(n) for n in names] if names else prof.points
    return spans(plan_reads(prof, pts, max_gap=max_gap, max_registers=max_registers, **kw))


GAPPY = profile(
    ("a", H, 0, "uint16"), ("b", H, 1, "float32"), ("c", H, 3, "uint64"),
    ("d", H, 10, "int16"), ("e", H, 30, "string", 4), ("f", H, 40, "int32"),
)


@pytest.mark.parametrize(
    ("max_gap", "max_registers", "expected"),
    [
        # contiguous a..c, gap 7-9 (3) read through, gap 11-29 (19) > 16 not, 34-39 (6) read
        (16, 125, [("holding", 0, 11, ["a", "b", "c", "d"]),
                   ("holding", 30, 12, ["e", "f"])]),
        (19, 125, [("holding", 0, 42, ["a", "b", "c", "d", "e", "f"])]),
        (0, 125, [("holding", 0, 7, ["a", "b", "c"]), ("holding", 10, 1, ["d"]),
                  ("holding", 30, 4, ["e"]), ("holding", 40, 2, ["f"])]),
        (2, 125, [("holding", 0, 7, ["a", "b", "c"]), ("holding", 10, 1, ["d"]),
                  ("holding", 30, 4, ["e"]), ("holding", 40, 2, ["f"])]),
        (3, 125, [("holding", 0, 11, ["a", "b", "c", "d"]), ("holding", 30, 4, ["e"]),
                  ("holding", 40, 2, ["f"])]),
        # the 64-bit c (3..6) would end at 7 > 6: it starts the next block, whole
        (16, 6, [("holding", 0, 3, ["a", "b"]), ("holding", 3, 4, ["c"]),
                 ("holding", 10, 1, ["d"]), ("holding", 30, 4, ["e"]), ("holding", 40, 2, ["f"])]),
        (16, 7, [("holding", 0, 7, ["a", "b", "c"]), ("holding", 10, 1, ["d"]),
                 ("holding", 30, 4, ["e"]), ("holding", 40, 2, ["f"])]),
        # the string e (30..33) and f (40..41) span 12 registers: 11 is one too few
        (16, 11, [("holding", 0, 11, ["a", "b", "c", "d"]), ("holding", 30, 4, ["e"]),
                  ("holding", 40, 2, ["f"])]),
        (16, 4, [("holding", 0, 3, ["a", "b"]), ("holding", 3, 4, ["c"]),
                 ("holding", 10, 1, ["d"]), ("holding", 30, 4, ["e"]), ("holding", 40, 2, ["f"])]),
    ],
)
def test_gaps_and_limits(max_gap: int, max_registers: int, expected: list[Any]) -> None:
    assert plan(GAPPY, max_gap=max_gap, max_registers=max_registers) == expected


def test_a_subset_reads_other_points_as_gap_and_keeps_order() -> None:
    assert plan(GAPPY, names=["f", "a", "d"]) == [("holding", 0, 11, ["a", "d"]),
                                                 ("holding", 40, 2, ["f"])]


def test_tables_are_planned_apart() -> None:
    prof = profile(("h", H, 0, "uint16"), ("i", IN, 0, "uint16"), ("i2", IN, 1, "uint16"),
                   ("c", C, 0, "bool"), ("c2", C, 5, "bool"), ("d", D, 3, "bool"))
    assert plan(prof) == [("holding", 0, 1, ["h"]), ("input", 0, 2, ["i", "i2"]),
                          ("coil", 0, 6, ["c", "c2"]), ("discrete", 3, 1, ["d"])]


def test_bit_tables_take_longer_gaps_and_2000_bits() -> None:
    prof = profile(("c0", C, 0, "bool"), ("c1", C, 100, "bool"), ("c2", C, 1999, "bool"),
                   ("c3", C, 2000, "bool"))
    # max_gap 8 registers = 128 bits: 0..100 in one block, 1999 is 1898 further on
    assert plan(prof, max_gap=8) == [("coil", 0, 101, ["c0", "c1"]),
                                     ("coil", 1999, 2, ["c2", "c3"])]
    # a gap of 124 registers = 1984 bits joins all but the 2001st bit
    assert plan(prof, max_gap=124) == [("coil", 0, 2000, ["c0", "c1", "c2"]),
                                       ("coil", 2000, 1, ["c3"])]


def test_max_registers_never_above_125() -> None:
    prof = profile(*[(f"p{i}", H, 10 * i, "float64") for i in range(20)])
    blocks = plan_reads(prof, prof.points, max_gap=124, max_registers=125)
    assert all(b.count <= 125 for b in blocks)
    assert [b.address for b in blocks] == [0, 130]


def test_shipped_profiles_plan_as_expected() -> None:
    cc = builtin_profiles()["ew-cc100"]
    assert plan(cc) == [
        ("holding", 100, 21, ["run_state", "alarm_code", "status_flags", "serial_number",
                              "setpoint"]),
        ("input", 0, 25, [p.name for p in cc.in_table(IN)]),
        ("coil", 0, 1, ["enable"]),
        ("discrete", 0, 2, ["high_pressure_switch", "low_pressure_switch"]),
    ]
    assert plan(cc, max_gap=1) == [
        ("holding", 100, 3, ["run_state", "alarm_code", "status_flags"]),
        ("holding", 110, 8, ["serial_number"]),
        ("holding", 120, 1, ["setpoint"]),
        ("input", 0, 25, [p.name for p in cc.in_table(IN)]),
        ("coil", 0, 1, ["enable"]),
        ("discrete", 0, 2, ["high_pressure_switch", "low_pressure_switch"]),
    ]


def test_group_points_applies_overrides() -> None:
    fc = builtin_profiles()["ew-fc200"]
    groups = group_points(fc, {"speed_rpm": "fast", "vibration_rms": "slow"})
    assert [p.name for p in groups["fast"]] == ["speed_rpm", "vib_band_1x", "vib_band_2x",
                                                "vib_band_bearing"]
    assert "vibration_rms" in [p.name for p in groups["slow"]]
    assert sum(len(v) for v in groups.values()) == len(fc.points)


def test_oversized_points_are_refused_at_planning() -> None:
    prof = profile(("sn", H, 0, "string", 8), ("x", H, 8, "uint16"))
    assert [p.name for p in oversized_points(prof.points, 4)] == ["sn"]
    with pytest.raises(ValueError, match="sn takes 8 registers"):
        plan_reads(prof, prof.points, max_gap=0, max_registers=4)


def test_points_of_another_profile_are_refused() -> None:
    with pytest.raises(ValueError, match="no point"):
        plan_reads(GAPPY, builtin_profiles()["ew-fc200"].points[:1], max_gap=0,
                   max_registers=125)


# -- refused and isolated addresses -----------------------------------------------------
@pytest.mark.parametrize(
    ("refused", "expected", "unreadable"),
    [
        # a refused gap address is not read through
        ({(H, 8)}, [("holding", 0, 7, ["a", "b", "c"]), ("holding", 10, 1, ["d"]),
                    ("holding", 30, 12, ["e", "f"])], []),
        # a refused point is left out and reported; its neighbours merge around it
        ({(H, 1)}, [("holding", 0, 1, ["a"]), ("holding", 3, 8, ["c", "d"]),
                    ("holding", 30, 12, ["e", "f"])], ["b"]),
        # one register of a 64-bit point refuses the whole point
        ({(H, 6)}, [("holding", 0, 3, ["a", "b"]), ("holding", 10, 1, ["d"]),
                    ("holding", 30, 12, ["e", "f"])], ["c"]),
        ({(IN, 1)}, [("holding", 0, 11, ["a", "b", "c", "d"]),
                    ("holding", 30, 12, ["e", "f"])], []),  # another table: no matter
    ],
)
def test_refused_addresses(refused: set[Any], expected: list[Any], unreadable: list[str]) -> None:
    assert plan(GAPPY, refused=refused) == expected
    assert [p.name for p in unreadable_points(GAPPY.points, refused)] == unreadable


def test_isolated_points_are_read_alone() -> None:
    isolated = {(H, a) for a in range(0, 7)}
    assert plan(GAPPY, isolated=isolated) == [
        ("holding", 0, 1, ["a"]), ("holding", 1, 2, ["b"]), ("holding", 3, 4, ["c"]),
        ("holding", 10, 1, ["d"]), ("holding", 30, 12, ["e", "f"]),
    ]


# -- learning ------------------------------------------------------------------------
def simulate(prof: DeviceProfile, device_refuses: set[tuple[Table, int]], polls: int,
             **kw: Any) -> tuple[list[list[Any]], Refusals]:
    """Plan, 'read' against a device that refuses every read touching
    ``device_refuses``, learn, repeat; returns each poll's plan."""
    r = Refusals(retry_s=100.0)
    history = []
    for t in range(polls):
        blocks = plan_reads(prof, prof.points, max_gap=kw.get("max_gap", 16),
                            max_registers=125, refused=r.refused, isolated=r.isolated)
        history.append(spans(blocks))
        for b in blocks:
            if any((b.table, a) in device_refuses for a in b.addresses()):
                r.learn(b, prof, float(t))
            else:
                r.confirm(b)
    return history, r


def test_refused_gap_is_learned_and_split_around() -> None:
    # the device refuses every unmapped address (like refuse_unmapped)
    unmapped = {(H, a) for a in range(0, 60)} - {
        (H, a) for p in GAPPY.points for a in range(p.address, p.end)}
    history, r = simulate(GAPPY, unmapped, 3)
    assert history[0] == [("holding", 0, 11, ["a", "b", "c", "d"]),
                          ("holding", 30, 12, ["e", "f"])]
    final = [("holding", 0, 7, ["a", "b", "c"]), ("holding", 10, 1, ["d"]),
             ("holding", 30, 4, ["e"]), ("holding", 40, 2, ["f"])]
    assert history[1] == history[2] == final
    assert r.unreadable == {}
    assert r.isolated == set()


def test_refused_point_is_found_then_neighbours_merge_again() -> None:
    # the device refuses its point b (firmware without it), not the unmapped gaps
    refuses = {(H, 1), (H, 2)}
    history, r = simulate(GAPPY, refuses, 5)
    # 1: whole block refused; its gaps (7..9) are unmapped -> refused, split
    # 2: a..c (no gaps) refused -> isolate its points
    # 3: a, b, c read alone: b refused -> unreadable; a and c confirmed
    # 4: a, then c+d merged (gap 7..9 refused stays split), e+f
    assert history[1][0] == ("holding", 0, 7, ["a", "b", "c"])
    assert history[2][:3] == [("holding", 0, 1, ["a"]), ("holding", 1, 2, ["b"]),
                              ("holding", 3, 4, ["c"])]
    assert history[3] == history[4] == [("holding", 0, 1, ["a"]), ("holding", 3, 4, ["c"]),
                                        ("holding", 10, 1, ["d"]),
                                        ("holding", 30, 12, ["e", "f"])]
    assert set(r.unreadable) == {"b"}
    assert r.isolated == set()


def test_unreadable_point_is_tried_again_after_retry_s() -> None:
    r = Refusals(retry_s=100.0)
    b = plan_reads(GAPPY, [GAPPY.point("b")], max_gap=0, max_registers=125)[0]
    assert r.learn(b, GAPPY, now=5.0) == ["b"]
    v = r.version
    assert r.expire(50.0, GAPPY) == []
    assert r.version == v
    assert r.expire(105.0, GAPPY) == ["b"]
    assert r.version > v
    assert (H, 1) not in r.refused and (H, 1) in r.isolated  # tried alone
    assert plan(GAPPY, refused=r.refused, isolated=r.isolated)[:2] == [
        ("holding", 0, 1, ["a"]), ("holding", 1, 2, ["b"])]


def test_learning_changes_version() -> None:
    r = Refusals()
    blocks = plan_reads(GAPPY, GAPPY.points, max_gap=16, max_registers=125)
    v = r.version
    r.learn(blocks[0], GAPPY, 0.0)
    assert r.version == v + 1
    r.confirm(blocks[1])  # nothing isolated there: no change
    assert r.version == v + 1


# -- decoding a block -------------------------------------------------------------------
def test_decode_block_all_points() -> None:
    prof = profile(("a", H, 0, "int16"), ("c", H, 3, "uint64"), ("e", H, 8, "string", 2))
    block = plan_reads(prof, prof.points, max_gap=16, max_registers=125)[0]
    words = [0] * block.count
    for p, v in [("a", -5), ("c", 2**60 + 3), ("e", "AB")]:
        pt = prof.point(p)
        words[pt.address: pt.end] = encode_point(pt, v)
    out = decode_block(block, words)
    assert {k: v.value for k, v in out.items()} == {"a": -5, "c": 2**60 + 3, "e": "AB"}


def test_decode_block_wrong_length_yields_nothing() -> None:
    block = plan_reads(GAPPY, GAPPY.points, max_gap=16, max_registers=125)[0]
    with pytest.raises(CodecError):
        decode_block(block, [0] * (block.count - 1))


# -- properties ----------------------------------------------------------------------
@st.composite
def layouts(draw: st.DrawFn) -> DeviceProfile:
    n = draw(st.integers(1, 25))
    types = ["uint16", "int32", "float32", "uint64", "float64", "string"]
    addr, pts = 0, []
    for i in range(n):
        addr += draw(st.integers(0, 40))
        t = draw(st.sampled_from(types))
        if t == "string":
            length = draw(st.integers(1, 10))
            pts.append((f"p{i}", H, addr, t, length))
            addr += length
        else:
            pts.append((f"p{i}", H, addr, t))
            addr += {"uint16": 1, "int32": 2, "float32": 2, "uint64": 4, "float64": 4}[t]
    return profile(*pts)


@given(layouts(), st.integers(0, 30), st.integers(10, 125),
       st.sets(st.integers(0, 600), max_size=20))
def test_plan_properties(prof: DeviceProfile, max_gap: int, max_registers: int,
                         refused_addrs: set[int]) -> None:
    refused = {(H, a) for a in refused_addrs}
    blocks = plan_reads(prof, prof.points, max_gap=max_gap, max_registers=max_registers,
                        refused=refused)
    planned = [p.name for b in blocks for p in b.points]
    skipped = {p.name for p in unreadable_points(prof.points, refused)}
    assert sorted(planned + list(skipped)) == sorted(prof.names)  # every point once
    for b in blocks:
        assert 1 <= b.count <= max_registers
        assert b.address == b.points[0].address and b.end == b.points[-1].end
        assert not any((H, a) in refused for a in b.addresses())
        for x, y in zip(b.points, b.points[1:], strict=False):
            assert y.address - x.end <= max_gap
    for x, y in itertools.pairwise(blocks):
        assert x.end <= y.address
