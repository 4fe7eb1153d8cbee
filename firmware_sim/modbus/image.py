"""The register image of one simulated controller: pure, no Modbus library in sight.

A :class:`DeviceImage` holds the four tables of one device as plain integers (registers
0..65535, bits 0/1). :meth:`DeviceImage.update` encodes the device's signal values into
it with the shared codec (:func:`edge_agent.registers.encode_point`, saturating the way
firmware clamps a reading past its register's range); :meth:`DeviceImage.read` and
:meth:`DeviceImage.write` are what the protocol layer calls for function codes 1-6, 15
and 16. Refusals are :class:`ImageAccessError` carrying the Modbus exception code the
protocol layer answers with.

Addresses no point covers read as 0, as on most controllers, unless the image is
created with ``refuse_unmapped=True``: then a read touching a gap is refused with
exception 02 (illegal data address), as stricter controllers do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from itertools import accumulate

from edge_agent.errors import CodecError
from edge_agent.profiles import DeviceProfile, Point, Table
from edge_agent.registers import Value, decode_point, encode_point
from firmware_sim.errors import SimError

log = logging.getLogger(__name__)

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04

MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MAX_WRITE_REGISTERS = 123
MAX_WRITE_BITS = 1968


class ImageAccessError(SimError):
    """A read or write the device refuses; ``code`` is the Modbus exception code."""

    def __init__(self, code: int, why: str) -> None:
        self.code = code
        self.why = why
        super().__init__(f"exception {code:02d}: {why}")


class _TableImage:
    """One table: values by address, which addresses a point covers, and who owns each."""

    def __init__(self, points: Sequence[Point]) -> None:
        size = max((p.end for p in points), default=0)
        self.values = [0] * size
        self.owner: list[Point | None] = [None] * size
        for p in points:
            for a in range(p.address, p.end):
                self.owner[a] = p
        # mapped_before[a] = mapped addresses below a: a gap check is two lookups.
        self.mapped_before = [0, *accumulate(1 if o is not None else 0 for o in self.owner)]

    def mapped(self, address: int, count: int) -> bool:
        size = len(self.values)
        if address + count > size:
            return False
        return self.mapped_before[address + count] - self.mapped_before[address] == count

    def read(self, address: int, count: int) -> list[int]:
        out = self.values[address : address + count]
        if len(out) < count:
            out.extend([0] * (count - len(out)))
        return out


class DeviceImage:
    """The four tables of one device, encoded from its signal values."""

    def __init__(self, profile: DeviceProfile, *, refuse_unmapped: bool = False) -> None:
        self.profile = profile
        self.refuse_unmapped = refuse_unmapped
        self._tables = {t: _TableImage(list(profile.in_table(t))) for t in Table}
        self._held: dict[str, list[int]] = {}
        self._bad_points: set[str] = set()
        self._bad_count = 0

    # -- from the source -------------------------------------------------------------
    def update(self, signals: Mapping[str, object]) -> None:
        """Encode every point the signals name; points written over Modbus keep the
        written value. A value that cannot be encoded leaves the point as it was and is
        logged (the first time per point at ERROR, then at DEBUG with a count)."""
        for point in self.profile.points:
            if point.name in self._held:
                words = self._held[point.name]
            elif point.name in signals:
                value = signals[point.name]
                try:
                    words = encode_point(point, value, saturate=True)  # type: ignore[arg-type]
                except CodecError as exc:
                    self._report_bad(point, exc)
                    continue
            else:
                continue
            self._put(point, words)

    def _report_bad(self, point: Point, exc: CodecError) -> None:
        self._bad_count += 1
        if point.name not in self._bad_points:
            self._bad_points.add(point.name)
            log.error("profile %s: cannot encode %s (keeps its last value)", self.profile.id, exc)
        else:
            log.debug("profile %s: %s (%d bad values so far)", self.profile.id, exc,
                      self._bad_count)

    def _put(self, point: Point, words: Sequence[int]) -> None:
        table = self._tables[point.table]
        table.values[point.address : point.end] = words

    def clear_held(self) -> None:
        """Forget values written over Modbus: the source's values show again."""
        self._held.clear()

    @property
    def held(self) -> Mapping[str, list[int]]:
        """Points written over Modbus and their registers."""
        return self._held

    # -- from the protocol -----------------------------------------------------------
    def read(self, table: Table, address: int, count: int) -> list[int]:
        """``count`` registers (or bits, in a bit table) from ``address``."""
        limit = MAX_READ_BITS if table.is_bit_table else MAX_READ_REGISTERS
        if not 1 <= count <= limit:
            raise ImageAccessError(ILLEGAL_VALUE, f"quantity {count} is not within 1..{limit}")
        if address + count > 65536:
            raise ImageAccessError(
                ILLEGAL_ADDRESS, f"{table.value} {address}+{count} passes address 65535"
            )
        image = self._tables[table]
        if self.refuse_unmapped and not image.mapped(address, count):
            gap = next(
                a for a in range(address, address + count)
                if a >= len(image.owner) or image.owner[a] is None
            )
            raise ImageAccessError(
                ILLEGAL_ADDRESS, f"{table.value} address {gap} is not mapped on {self.profile.id}"
            )
        return image.read(address, count)

    def write(self, table: Table, address: int, values: Sequence[int]) -> dict[str, Value]:
        """Write registers (or bits) that cover whole writable points.

        Returns the engineering values of the points written, by name. Touching an
        unmapped address, a read-only point, or only part of a point is refused with
        exception 02; a value that is not a register (or bit) with exception 03.
        """
        if table not in (Table.HOLDING, Table.COIL):
            raise ImageAccessError(ILLEGAL_FUNCTION, f"table {table.value} cannot be written")
        count = len(values)
        limit = MAX_WRITE_BITS if table.is_bit_table else MAX_WRITE_REGISTERS
        if not 1 <= count <= limit:
            raise ImageAccessError(ILLEGAL_VALUE, f"quantity {count} is not within 1..{limit}")
        top = 1 if table.is_bit_table else 0xFFFF
        if any(not 0 <= v <= top for v in values):
            raise ImageAccessError(ILLEGAL_VALUE, f"a value is outside 0..{top}")
        if address + count > 65536:
            raise ImageAccessError(ILLEGAL_ADDRESS, f"{address}+{count} passes address 65535")
        image = self._tables[table]
        touched: list[Point] = []
        for a in range(address, address + count):
            owner = image.owner[a] if a < len(image.owner) else None
            if owner is None:
                raise ImageAccessError(
                    ILLEGAL_ADDRESS, f"{table.value} address {a} is not mapped on {self.profile.id}"
                )
            if not owner.writable:
                raise ImageAccessError(ILLEGAL_ADDRESS, f"point {owner.name} is read-only")
            if not touched or touched[-1] is not owner:
                touched.append(owner)
        first, last = touched[0], touched[-1]
        if first.address < address or last.end > address + count:
            partial = first if first.address < address else last
            raise ImageAccessError(
                ILLEGAL_ADDRESS,
                f"the write covers only part of point {partial.name} "
                f"({partial.address}..{partial.end - 1})",
            )
        written: dict[str, Value] = {}
        for point in touched:
            words = list(values[point.address - address : point.end - address])
            try:
                decoded = decode_point(point, words).value
            except CodecError as exc:
                raise ImageAccessError(ILLEGAL_VALUE, str(exc)) from None
            written[point.name] = decoded
        for point in touched:
            words = list(values[point.address - address : point.end - address])
            self._held[point.name] = words
            self._put(point, words)
        return written

    def snapshot(self, table: Table) -> list[int]:
        """A copy of one table (up to its last mapped address), for tests and debugging."""
        return list(self._tables[table].values)
