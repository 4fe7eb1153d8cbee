"""Serving register images over real Modbus (TCP and RTU on a pty), with protocol faults.

Layers, each pointing one way:

- :mod:`.image` -- pure: profile + signal values -> register/bit tables (no pymodbus).
- :mod:`.faults` -- fault rules per endpoint and unit (no pymodbus).
- :mod:`.endpoint` -- the protocol: request PDU -> response PDU or silence, through
  pymodbus's PDU classes, with faults applied.
- :mod:`.tcp`, :mod:`.rtu` -- byte pipes and framing (pymodbus framers) on asyncio.
- :mod:`.server` -- every endpoint of a fleet, one source, one clock, the tick.
"""

from firmware_sim.modbus.endpoint import Endpoint, EndpointConfig, UnitConfig, WritableSource
from firmware_sim.modbus.faults import FaultInjector, FaultKind, FaultRule, parse_fault_arg
from firmware_sim.modbus.image import DeviceImage, ImageAccessError
from firmware_sim.modbus.server import ServerThread, SimServer, endpoint_configs

__all__ = [
    "DeviceImage",
    "Endpoint",
    "EndpointConfig",
    "FaultInjector",
    "FaultKind",
    "FaultRule",
    "ImageAccessError",
    "ServerThread",
    "SimServer",
    "UnitConfig",
    "WritableSource",
    "endpoint_configs",
    "parse_fault_arg",
]
