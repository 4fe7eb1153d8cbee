"""The edge agent's exception tree.

Everything the agent raises on purpose derives from :class:`EdgeWatchError`, so a
caller can catch the whole family without catching programming errors. Library
errors (pymodbus, paho, pyserial, YAML) are translated into this tree at the
boundary where they occur.

    EdgeWatchError
    ├── ConfigError          a file the user wrote is wrong (file, key, why)
    │   └── ProfileError     a device profile (register map) is wrong
    └── CodecError           a value does not fit a register point, or registers do not decode
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
