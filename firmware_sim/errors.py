"""The simulator's exception tree.

    SimError
    ├── FleetError      a fleet file is wrong (file, key, why)
    ├── ReplayError     a telemetry CSV for replay is wrong (file, line/column, why)
    └── ServeError      a Modbus endpoint cannot be served (port taken, pty unavailable)

Profile errors come from :mod:`edge_agent.errors` (the agent owns profiles) and are
re-raised as :class:`FleetError` naming the fleet file and the device that refers to them.
"""

from __future__ import annotations

from edge_agent.errors import ConfigError, EdgeWatchError


class SimError(EdgeWatchError):
    """Base class of every error the simulator raises on purpose."""


class FleetError(SimError, ConfigError):
    """A fleet file is invalid; the message names the file, the key and why."""


class ReplayError(SimError, ConfigError):
    """A telemetry CSV cannot be replayed; the message names the file, where and why."""


class ServeError(SimError):
    """A Modbus endpoint cannot be served."""
