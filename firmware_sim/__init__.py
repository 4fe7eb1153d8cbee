"""EdgeWatch fleet simulator: appliance controllers, healthy and failing, over real Modbus."""

__version__ = "0.1.0"
