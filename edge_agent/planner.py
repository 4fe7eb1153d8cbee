"""Read planning: which Modbus requests fetch a device's points, and what a device refuses.

Pure functions and a small state class, no I/O and no pymodbus. For one device and one
poll group the planner turns the group's points into read blocks:

- points of one table are read in address order, contiguous points in one request;
- a gap of at most ``max_gap`` unmapped registers between two points is read through
  (one longer request is cheaper than a second one); in a bit table the gap is counted
  in bits and may be 16 times longer, since 16 bits cost what one register costs;
- a block holds at most ``max_registers`` registers (2000 bits in a bit table), and never
  splits a point: a 64-bit value or a string at the edge of a block starts the next one;
- an address the device refused (exception 02) is never read again: a gap that holds one
  is not read through, and a point whose own registers are refused is left out and
  reported as unreadable.

What a device refuses is learned by :class:`Refusals` from the blocks it answers with
exception 02: unmapped addresses read through are refused at once; a block of several
points without gaps has its points read one by one (``isolated``) until the one the
device refuses is known; a single point that is refused is unreadable, and tried once
more after ``retry_s`` (a firmware update may add it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.errors import CodecError
from edge_agent.profiles import DeviceProfile, Point, Table
from edge_agent.registers import BlockDecoder, PointValue, block_decoder, decode_point

MAX_REGISTERS = 125
"""Registers one read request may ask for (function codes 3 and 4)."""
MAX_BITS = 2000
"""Coils or discrete inputs one read request may ask for (function codes 1 and 2)."""
BIT_GAP_FACTOR = 16
"""A gap in a bit table may be this many times ``max_gap`` long (16 bits = 1 register)."""

Address = tuple[Table, int]


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``table`` from ``address``,
    holding ``points`` whole, in address order."""

    table: Table
    address: int
    count: int
    points: tuple[Point, ...]
    decoder: BlockDecoder = field(init=False, repr=False, compare=False)
    """Decodes the block's words into its points' values (set at creation)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", block_decoder(self.points, self.address))

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.address + self.count

    def addresses(self) -> range:
        return range(self.address, self.end)

    def gaps(self) -> list[int]:
        """Addresses the block reads that none of its points occupies."""
        used: set[int] = set()
        for p in self.points:
            used.update(range(p.address, p.end))
        return [a for a in self.addresses() if a not in used]


def block_limit(table: Table, max_registers: int) -> int:
    """Registers (or bits) one request of ``table`` may ask for."""
    return MAX_BITS if table.is_bit_table else min(max_registers, MAX_REGISTERS)


def _refused_in(table: Table, start: int, end: int, refused: Collection[Address]) -> bool:
    return any((table, a) in refused for a in range(start, end))


def is_refused(point: Point, refused: Collection[Address]) -> bool:
    """Whether any register of ``point`` is refused."""
    return _refused_in(point.table, point.address, point.end, refused)


def unreadable_points(points: Iterable[Point], refused: Collection[Address]) -> list[Point]:
    """The points :func:`plan_reads` leaves out because the device refuses them."""
    return [p for p in points if is_refused(p, refused)]


def oversized_points(points: Iterable[Point], max_registers: int) -> list[Point]:
    """Points larger than one request may be (a string longer than ``max_registers``)."""
    return [p for p in points if p.count > block_limit(p.table, max_registers)]


def plan_reads(
    profile: DeviceProfile,
    points: Iterable[Point],
    *,
    max_gap: int,
    max_registers: int,
    refused: Collection[Address] = frozenset(),
    isolated: Collection[Address] = frozenset(),
) -> list[ReadBlock]:
    """The read blocks that fetch ``points`` (of ``profile``), in table and address order.

    ``refused``: addresses the device answers exception 02 for; points on them are left
    out (see :func:`unreadable_points`) and no gap holding one is read through.
    ``isolated``: addresses whose points are read alone, one request each (while the
    device's refusal of a block is being narrowed down to a point).

    Raises ValueError for a point that no single request can hold (see
    :func:`oversized_points`): a gateway config should be refused at start-up for it.
    """
    if max_gap < 0 or max_registers < 1:
        raise ValueError(f"max_gap {max_gap} must be >= 0 and max_registers {max_registers} >= 1")
    names = set(profile.names)
    chosen = list(points)
    strangers = [p.name for p in chosen if p.name not in names]
    if strangers:
        raise ValueError(f"profile {profile.id} has no point {strangers}")
    too_big = oversized_points(chosen, max_registers)
    if too_big:
        p = too_big[0]
        raise ValueError(
            f"point {p.name} takes {p.count} registers, more than one request of "
            f"{block_limit(p.table, max_registers)} may read"
        )
    blocks: list[ReadBlock] = []
    for table in Table:
        mine = sorted(
            (p for p in chosen if p.table is table and not is_refused(p, refused)),
            key=lambda p: p.address,
        )
        limit = block_limit(table, max_registers)
        gap_limit = max_gap * (BIT_GAP_FACTOR if table.is_bit_table else 1)
        current: list[Point] = []
        alone = False  # the current block holds an isolated point
        for p in mine:
            p_alone = _refused_in(table, p.address, p.end, isolated)
            if current:
                start, end = current[0].address, current[-1].end
                fits = (
                    not alone
                    and not p_alone
                    and p.address - end <= gap_limit
                    and p.end - start <= limit
                    and not _refused_in(table, end, p.address, refused)
                )
                if fits:
                    current.append(p)
                    continue
                blocks.append(_block(table, current))
            current, alone = [p], p_alone
        if current:
            blocks.append(_block(table, current))
    return blocks


def _block(table: Table, points: Sequence[Point]) -> ReadBlock:
    start = points[0].address
    return ReadBlock(table, start, points[-1].end - start, tuple(points))


def decode_block(block: ReadBlock, words: Sequence[int]) -> dict[str, PointValue]:
    """Every point of ``block`` from the block's registers (bits as 0/1), all or nothing.

    Raises CodecError if the answer has the wrong length or any point does not decode:
    a block never yields some of its values and not others.
    """
    if len(words) != block.count:
        raise CodecError(
            block.points[0].name,
            f"block {block.table.value} {block.address}+{block.count} got {len(words)} words",
        )
    if words and (min(words) < 0 or max(words) > 0xFFFF):
        # Not 16-bit words: let decode_point say which point and why.
        out: dict[str, PointValue] = {}
        for p in block.points:
            lo = p.address - block.address
            out[p.name] = decode_point(p, words[lo : lo + p.count])
        return out
    # The checks above guarantee every point its own count of 16-bit words.
    return block.decoder(words)


@dataclass
class Refusals:
    """What one device refuses (exception 02), learned from the blocks it refused.

    Pure state: time is passed in. ``refused`` and ``isolated`` feed :func:`plan_reads`;
    ``version`` changes whenever they do, so a caller can cache its plans.
    """

    retry_s: float = 3600.0
    """A point found unreadable is tried once more after this long."""
    refused: set[Address] = field(default_factory=set)
    isolated: set[Address] = field(default_factory=set)
    unreadable: dict[str, float] = field(default_factory=dict)
    """Point name -> when (caller's clock) it is tried again."""
    version: int = 0

    def learn(self, block: ReadBlock, profile: DeviceProfile, now: float) -> list[str]:
        """The device answered ``block`` with exception 02; returns the points now known
        to be unreadable (empty while the culprit is still being narrowed down)."""
        self.version += 1
        table = block.table
        mapped = _mapped(profile, table)
        unmapped = [a for a in block.addresses() if a not in mapped]
        if unmapped:
            # Reading through unmapped addresses costs nothing to give up.
            self.refused.update((table, a) for a in unmapped)
            return []
        if len(block.points) > 1 or block.count != block.points[0].count:
            self.isolated.update((table, a) for a in block.addresses())
            return []
        point = block.points[0]
        own = {(table, a) for a in range(point.address, point.end)}
        self.refused |= own
        self.isolated -= own
        self.unreadable[point.name] = now + self.retry_s
        return [point.name]

    def confirm(self, block: ReadBlock) -> None:
        """The device answered ``block``: an isolated point in it needs isolating no more."""
        if not self.isolated:  # the usual case, after every block read: nothing to do
            return
        own = {(block.table, a) for a in block.addresses()}
        if own & self.isolated:
            self.isolated -= own
            self.version += 1

    def expire(self, now: float, profile: DeviceProfile) -> list[str]:
        """Points whose retry time has come: no longer refused; read alone next time."""
        due = [name for name, at in self.unreadable.items() if at <= now]
        for name in due:
            del self.unreadable[name]
            p = profile.point(name)
            own = {(p.table, a) for a in range(p.address, p.end)}
            self.refused -= own
            self.isolated |= own
        if due:
            self.version += 1
        return due


def _mapped(profile: DeviceProfile, table: Table) -> set[int]:
    out: set[int] = set()
    for p in profile.in_table(table):
        out.update(range(p.address, p.end))
    return out


def group_points(profile: DeviceProfile, overrides: Mapping[str, str]) -> dict[str, list[Point]]:
    """The profile's points by poll group, with a gateway config's overrides applied."""
    out: dict[str, list[Point]] = {}
    for p in profile.points:
        out.setdefault(overrides.get(p.name, p.poll_group), []).append(p)
    return out
