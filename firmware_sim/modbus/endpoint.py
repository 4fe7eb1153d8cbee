"""One Modbus endpoint (a gateway): its units, their images, faults, and the protocol.

This is the protocol layer between the pure register images (:mod:`.image`) and the
byte pipes (:mod:`.tcp`, :mod:`.rtu`). Request and response PDUs are decoded and encoded
with pymodbus's PDU classes; framing (MBAP, RTU with CRC) with pymodbus's framers in the
transports. What pymodbus's own server does not allow, and the reason this layer exists,
is deciding per request whether to answer, what to answer, and how to spoil the answer
(protocol faults, see :mod:`.faults`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.bit_message import (
    ReadCoilsResponse,
    ReadDiscreteInputsResponse,
    WriteMultipleCoilsResponse,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)

from edge_agent.profiles import DeviceProfile, Table
from edge_agent.registers import Value
from firmware_sim.modbus.faults import FaultInjector, FaultKind, FaultRule
from firmware_sim.modbus.image import (
    DEVICE_FAILURE,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    DeviceImage,
    ImageAccessError,
)
from firmware_sim.source import SignalSource, SignalValue

log = logging.getLogger(__name__)

GATEWAY_TARGET_NO_RESPONSE = 0x0B

READ_TABLES = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
SUPPORTED_FUNCTIONS = frozenset({1, 2, 3, 4, 5, 6, 15, 16})
_READ_RESPONSES: dict[int, Any] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}


@runtime_checkable
class WritableSource(Protocol):
    """A source that wants to hear about values written over Modbus (setpoints, enables)."""

    def write(self, device_id: str, name: str, value: SignalValue) -> None: ...


@dataclass(frozen=True)
class UnitConfig:
    """A device behind an endpoint."""

    unit_id: int
    device_id: str
    profile: DeviceProfile
    refuse_unmapped: bool = False


@dataclass(frozen=True)
class EndpointConfig:
    """What to serve where: one gateway. Built from a fleet's ``GatewaySpec`` by
    :func:`firmware_sim.modbus.server.endpoint_configs`, or directly (replay, tests)."""

    id: str
    units: tuple[UnitConfig, ...]
    transport: str = "tcp"
    host: str = "127.0.0.1"
    port: int = 0
    baudrate: int = 19200
    parity: str = "E"
    stopbits: int = 1
    byte_timing: bool = False
    max_connections: int | None = None

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "rtu"):
            raise ValueError(f"transport must be tcp or rtu, not {self.transport!r}")
        ids = [u.unit_id for u in self.units]
        if len(set(ids)) != len(ids):
            raise ValueError(f"endpoint {self.id}: unit ids repeat: {ids}")
        if not self.units:
            raise ValueError(f"endpoint {self.id} has no units")


@dataclass
class Unit:
    """A device's serving state."""

    config: UnitConfig
    image: DeviceImage
    down_until: float | None = None
    """Monotonic time a rebooting device answers again."""
    requests: int = 0
    answered: int = 0

    @property
    def device_id(self) -> str:
        return self.config.device_id


@dataclass(frozen=True)
class Answer:
    """What the transport sends back: a PDU (None = stay silent) from ``unit_id``,
    possibly to be spoiled (``mangle``: garbage or truncated)."""

    pdu: bytes | None
    unit_id: int
    mangle: FaultKind | None = None


@dataclass
class EndpointStats:
    requests: int = 0
    answered: int = 0
    exceptions: int = 0
    faults: dict[str, int] = field(default_factory=dict)


def exception_pdu(function_code: int, code: int) -> bytes:
    resp = ExceptionResponse(function_code & 0x7F, code)
    return bytes([resp.function_code]) + resp.encode()


class Endpoint:
    """Protocol handling shared by the TCP and RTU transports."""

    transport = "none"

    def __init__(
        self,
        config: EndpointConfig,
        source: SignalSource,
        *,
        seed: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.id = config.id
        self.source = source
        self._monotonic = monotonic
        self.units: dict[int, Unit] = {
            u.unit_id: Unit(u, DeviceImage(u.profile, refuse_unmapped=u.refuse_unmapped))
            for u in config.units
        }
        self.faults = FaultInjector(seed, units=frozenset(self.units), monotonic=monotonic)
        self.stats = EndpointStats()
        self._decoder = DecodePDU(is_server=True)
        self._internal_errors = 0
        self._init_transport()

    def _init_transport(self) -> None:
        """The transport's own state (framer, sockets); called at the end of ``__init__``."""

    # -- life cycle, implemented by the transports ---------------------------------------
    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """Where clients reach this endpoint (``host:port`` or the pty path)."""
        raise NotImplementedError

    def describe(self) -> str:
        units = ",".join(str(u) for u in sorted(self.units))
        return f"{self.id} {self.transport} {self.address} units {units}"

    # -- images --------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-encode every unit's image from the source (at the source's current time)."""
        for unit in self.units.values():
            unit.image.update(self.source.signals(unit.device_id))

    def reboot(self, unit_id: int, seconds: float) -> None:
        """Take a unit down now for ``seconds``; it restarts when they are over."""
        unit = self.units[unit_id]
        unit.down_until = self._monotonic() + seconds
        log.info("%s unit %d (%s) reboots: silent for %.1f s", self.id, unit_id,
                 unit.device_id, seconds)

    def check_reboots(self) -> None:
        """Bring back units whose reboot is over (called at each tick and per request)."""
        now = self._monotonic()
        for unit in self.units.values():
            self._check_reboot(unit, now)

    def _check_reboot(self, unit: Unit, now: float) -> bool:
        """True while the unit is down."""
        if unit.down_until is None:
            return False
        if now < unit.down_until:
            return True
        unit.down_until = None
        self.source.reboot(unit.device_id)
        unit.image.update(self.source.signals(unit.device_id))
        log.info("%s unit %d (%s) is back after a reboot", self.id, unit.config.unit_id,
                 unit.device_id)
        return False

    # -- requests ------------------------------------------------------------------------
    def unknown_unit(self, unit_id: int, pdu: bytes) -> Answer:
        """A request for a unit id nobody serves; TCP and RTU differ."""
        return Answer(None, unit_id)

    def handle(self, unit_id: int, pdu: bytes) -> Answer:
        """Decide the answer to one request PDU (function code + data) for ``unit_id``."""
        self.stats.requests += 1
        unit = self.units.get(unit_id)
        if unit is None:
            return self.unknown_unit(unit_id, pdu)
        unit.requests += 1
        if self._check_reboot(unit, self._monotonic()):
            return Answer(None, unit_id)
        rule = self.faults.pick(unit_id)
        if rule is not None:
            self.stats.faults[rule.kind.value] = self.stats.faults.get(rule.kind.value, 0) + 1
            log.debug("%s unit %d: fault %s fires", self.id, unit_id, rule.kind.value)
            answer = self._faulty(unit, rule, pdu)
            if answer is not None:
                return answer
        response = self.execute(unit, pdu)
        unit.answered += 1
        self.stats.answered += 1
        if rule is not None and rule.kind is FaultKind.WRONG_UNIT:
            other = int(rule.arg) if rule.arg is not None else unit_id % 247 + 1
            return Answer(response, other)
        if rule is not None and rule.kind in (FaultKind.GARBAGE, FaultKind.TRUNCATED):
            return Answer(response, unit_id, rule.kind)
        return Answer(response, unit_id)

    def _faulty(self, unit: Unit, rule: FaultRule, pdu: bytes) -> Answer | None:
        """The answer a fault gives, or None when the fault spoils a normal answer."""
        kind, unit_id = rule.kind, unit.config.unit_id
        if kind is FaultKind.EXCEPTION:
            self.stats.exceptions += 1
            return Answer(exception_pdu(pdu[0], rule.code), unit_id)
        if kind in (FaultKind.TIMEOUT, FaultKind.OFFLINE):
            return Answer(None, unit_id)
        if kind is FaultKind.REBOOT:
            self.reboot(unit_id, rule.seconds)
            return Answer(None, unit_id)
        return None

    def execute(self, unit: Unit, pdu: bytes) -> bytes:
        """Run a request PDU against a unit's image; returns the response PDU."""
        fc = pdu[0]
        if fc not in SUPPORTED_FUNCTIONS:
            self.stats.exceptions += 1
            return exception_pdu(fc, ILLEGAL_FUNCTION)
        request = self._decoder.decode(pdu)
        if request is None:  # pymodbus refuses counts out of range and short PDUs
            self.stats.exceptions += 1
            return exception_pdu(fc, ILLEGAL_VALUE)
        try:
            return self._run(unit, fc, request, pdu)
        except ImageAccessError as exc:
            self.stats.exceptions += 1
            log.debug("%s unit %d fc %d: %s", self.id, unit.config.unit_id, fc, exc)
            return exception_pdu(fc, exc.code)

    def _run(self, unit: Unit, fc: int, request: Any, pdu: bytes) -> bytes:
        image = unit.image
        address = int(request.address)
        if fc in READ_TABLES:
            values = image.read(READ_TABLES[fc], address, int(request.count))
            cls = _READ_RESPONSES[fc]
            if fc in (1, 2):
                response = cls(bits=[bool(v) for v in values])
            else:
                response = cls(registers=values)
        elif fc == 5:
            raw = pdu[3:5]
            if raw not in (b"\xff\x00", b"\x00\x00"):
                raise ImageAccessError(ILLEGAL_VALUE, f"coil value {raw.hex()} is not ff00 or 0000")
            on = raw == b"\xff\x00"
            self._written(unit, image.write(Table.COIL, address, [int(on)]))
            response = WriteSingleCoilResponse(address=address, bits=[on])
        elif fc == 6:
            value = int(request.registers[0])
            self._written(unit, image.write(Table.HOLDING, address, [value]))
            response = WriteSingleRegisterResponse(address=address, registers=[value])
        elif fc == 15:
            count = int(request.count)
            nbytes = (count + 7) // 8
            if request.byte_count != nbytes or request.data_byte_count != nbytes:
                raise ImageAccessError(ILLEGAL_VALUE, "byte count does not match the quantity")
            bits = [int(bool(b)) for b in request.bits[:count]]
            self._written(unit, image.write(Table.COIL, address, bits))
            response = WriteMultipleCoilsResponse(address=address, count=count)
        else:  # 16
            count = int(request.count)
            words = [int(r) for r in request.registers]
            if not 1 <= count <= 123 or request.byte_count != 2 * count or len(words) != count:
                raise ImageAccessError(ILLEGAL_VALUE, "quantity or byte count out of range")
            self._written(unit, image.write(Table.HOLDING, address, words))
            response = WriteMultipleRegistersResponse(address=address, count=count)
        return bytes([fc]) + bytes(response.encode())

    def _written(self, unit: Unit, values: Mapping[str, Value]) -> None:
        log.debug("%s unit %d written: %s", self.id, unit.config.unit_id, dict(values))
        if isinstance(self.source, WritableSource):
            for name, value in values.items():
                self.source.write(unit.device_id, name, value)

    def safe_handle(self, unit_id: int, pdu: bytes) -> Answer:
        """:meth:`handle`, but a failure inside the simulator (a source that raises, a
        bug) answers exception 04 (server device failure) instead of killing the
        connection or the bus: logged with its traceback the first time, then at DEBUG
        with a count."""
        try:
            return self.handle(unit_id, pdu)
        except Exception:
            self._internal_errors += 1
            if self._internal_errors == 1:
                log.exception("%s unit %d: serving a request failed; answering exception 04 "
                              "(repeats are logged at DEBUG)", self.id, unit_id)
            else:
                log.debug("%s unit %d: serving a request failed (%d times)", self.id, unit_id,
                          self._internal_errors, exc_info=True)
            return Answer(exception_pdu(pdu[0] if pdu else 0, DEVICE_FAILURE), unit_id)
