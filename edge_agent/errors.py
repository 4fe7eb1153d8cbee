"""The edge agent's exception tree.

Everything the agent raises on purpose derives from :class:`EdgeWatchError`, so a
caller can catch the whole family without catching programming errors. Library
errors (pymodbus, paho, pyserial, sqlite3, onnxruntime, YAML) are translated into this
tree at the boundary where they occur; nothing above an adapter sees a return code.

    EdgeWatchError
    ├── ConfigError              a file the user wrote is wrong (file, key, why)
    │   └── ProfileError         a device profile (register map) is wrong
    ├── CodecError               a value does not fit a register point, or registers do not decode
    ├── TransportError           a Modbus request got no usable answer
    │   ├── DeviceTimeout        no answer within the timeout
    │   ├── ModbusException      the device answered with an exception code
    │   ├── FrameError           garbage, a truncated frame, or an answer for another unit
    │   └── LinkError            the connection or serial port is down or cannot be opened
    ├── StoreError               the store-and-forward buffer cannot take or give records
    ├── ProtocolError            an uplink batch or ack does not follow edge_agent.protocol
    ├── UplinkError              the uplink (MQTT, HTTPS) cannot send
    └── ModelError               a model cannot be loaded or scored
        └── UpdateRefused        a model update is refused (the running model stays)
"""

from __future__ import annotations


class EdgeWatchError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(EdgeWatchError):
    """A configuration file is invalid.

    The message always names the file, the key (a dotted path such as
    ``points[3].word_order``) and what was expected instead.
    """

    def __init__(self, source: str, key: str, why: str) -> None:
        self.source = source
        self.key = key
        self.why = why
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {why}")


class ProfileError(ConfigError):
    """A device profile (register map) is invalid."""


class CodecError(EdgeWatchError):
    """A value cannot be encoded into, or decoded from, a register point."""

    def __init__(self, point: str, why: str) -> None:
        self.point = point
        self.why = why
        super().__init__(f"point {point!r}: {why}")


class TransportError(EdgeWatchError):
    """A Modbus request got no usable answer."""


class DeviceTimeout(TransportError):
    """No answer within the timeout."""


class ModbusException(TransportError):
    """The device answered with a Modbus exception code (1 illegal function, 2 illegal
    data address, 3 illegal data value, 4 device failure, 6 busy, 0x0B no response
    behind a gateway, ...)."""

    def __init__(self, code: int, why: str = "") -> None:
        self.code = code
        super().__init__(f"exception {code:#04x}" + (f": {why}" if why else ""))


class FrameError(TransportError):
    """The answer could not be used: garbage, truncated, or for another unit id."""


class LinkError(TransportError):
    """The TCP connection or serial port is down or cannot be opened."""


class StoreError(EdgeWatchError):
    """The store-and-forward buffer cannot take or give records."""


class ProtocolError(EdgeWatchError):
    """An uplink batch or ack does not follow :mod:`edge_agent.protocol`.

    ``reason`` is a short stable token (``malformed``, ``bad_version``, ...) for counters.
    """

    def __init__(self, reason: str, why: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {why}")


class UplinkError(EdgeWatchError):
    """The uplink cannot send (not connected, refused, rejected by the server)."""


class ModelError(EdgeWatchError):
    """A model cannot be loaded or scored."""


class UpdateRefused(ModelError):
    """A model update is refused; ``reason`` is a short token (``bad_signature``,
    ``unknown_key``, ``not_newer``, ``expired``, ``hash_mismatch``, ``load_failed``)."""

    def __init__(self, reason: str, why: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {why}")
