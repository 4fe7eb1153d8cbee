"""What a fault means for the technician: failure code, skills, parts.

Failure codes follow the problem / cause / remedy triple CMMS tools use (ISO 14224 calls
them failure mode, failure cause and maintenance activity). One entry per fault type the
risk models predict (the simulator's fault types) and per local alarm that can open an
order; an unknown fault gets a generic inspection entry instead of no entry, so an order
always tells the technician something.

The catalogue is data: :func:`load_catalogue` reads an operator's YAML file of the same
shape (``faults: {name: {problem, cause, remedy, skills: [...], parts: {number: qty}}}``)
over these defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from cloud.errors import ConfigError

ALARM_PREFIX: Final = "alarm:"
"""A work order opened on a local alarm has the fault ``alarm:<alarm name>``."""


@dataclass(frozen=True, slots=True)
class FaultInfo:
    problem: str
    cause: str
    remedy: str
    skills: tuple[str, ...]
    parts: Mapping[str, int] = field(default_factory=dict)
    """Part number → quantity a repair usually takes."""


GENERIC: Final = FaultInfo(
    problem="abnormal operation",
    cause="unknown",
    remedy="inspect and diagnose",
    skills=("hvac",),
)

DEFAULTS: Final[Mapping[str, FaultInfo]] = {
    "refrigerant_leak": FaultInfo(
        problem="low refrigerant charge",
        cause="leak in the refrigerant circuit",
        remedy="locate and repair the leak, evacuate and recharge",
        skills=("refrigeration", "f-gas"),
        parts={"RFG-R410A-5KG": 1, "BRZ-ROD-KIT": 1},
    ),
    "condenser_fouling": FaultInfo(
        problem="high condensing pressure",
        cause="fouled condenser coil",
        remedy="clean the condenser coil, check the condenser fan",
        skills=("hvac",),
        parts={"CLN-COIL-5L": 1},
    ),
    "valve_wear": FaultInfo(
        problem="loss of compression efficiency",
        cause="worn compressor valves",
        remedy="replace the valve plate",
        skills=("refrigeration",),
        parts={"CMP-VALVE-PLATE": 1, "GSK-SET-CMP": 1},
    ),
    "bearing_wear": FaultInfo(
        problem="rising vibration",
        cause="worn bearing",
        remedy="replace the bearings, check alignment",
        skills=("mechanical",),
        parts={"BRG-6205-2RS": 2},
    ),
    "electrical_degradation": FaultInfo(
        problem="current imbalance and overheating",
        cause="degrading motor winding or contactor",
        remedy="test the windings, replace the contactor",
        skills=("electrical",),
        parts={"CTR-40A-3P": 1},
    ),
    "fan_imbalance": FaultInfo(
        problem="fan vibration",
        cause="imbalanced or damaged impeller",
        remedy="clean and balance the impeller, replace if damaged",
        skills=("mechanical",),
        parts={"FAN-IMP-450": 1},
    ),
    "belt_wear": FaultInfo(
        problem="belt slip",
        cause="worn or loose drive belt",
        remedy="replace and tension the belt",
        skills=("mechanical",),
        parts={"BLT-A42": 1},
    ),
    ALARM_PREFIX + "device_offline": FaultInfo(
        problem="controller not answering",
        cause="power, wiring or controller fault",
        remedy="check supply, bus wiring and the controller",
        skills=("electrical", "controls"),
    ),
    ALARM_PREFIX + "discharge_temp_high": FaultInfo(
        problem="high discharge temperature",
        cause="overload, low charge or fouled condenser",
        remedy="check charge, condenser and load",
        skills=("refrigeration",),
    ),
}


class Catalogue:
    """Fault name → :class:`FaultInfo`, with a generic entry for names it does not know."""

    def __init__(self, entries: Mapping[str, FaultInfo] = DEFAULTS) -> None:
        self._entries = dict(entries)

    def __getitem__(self, fault: str) -> FaultInfo:
        return self._entries.get(fault, GENERIC)


def _entry(where: str, raw: Any) -> FaultInfo:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "expected a mapping with problem, cause, remedy, skills, parts")
    unknown = set(raw) - {"problem", "cause", "remedy", "skills", "parts"}
    if unknown:
        raise ConfigError(where, f"unknown keys {sorted(unknown)}")
    texts: dict[str, str] = {}
    for key in ("problem", "cause", "remedy"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.{key}", "expected a non-empty text")
        texts[key] = value.strip()
    skills = raw.get("skills", [])
    if not isinstance(skills, list) or not all(isinstance(s, str) and s for s in skills):
        raise ConfigError(f"{where}.skills", "expected a list of skill names")
    parts = raw.get("parts", {}) or {}
    if not isinstance(parts, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
        for k, v in parts.items()
    ):
        raise ConfigError(f"{where}.parts", "expected part number: positive quantity")
    return FaultInfo(texts["problem"], texts["cause"], texts["remedy"], tuple(skills), dict(parts))


def load_catalogue(path: Path | None) -> Catalogue:
    """The defaults, with the entries of the YAML file at ``path`` added or replacing
    theirs; a bad file raises :class:`~cloud.errors.ConfigError` naming the entry."""
    if path is None:
        return Catalogue()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), f"cannot read the fault catalogue ({exc})") from None
    faults = doc.get("faults") if isinstance(doc, Mapping) else None
    if not isinstance(faults, Mapping):
        raise ConfigError(f"{path}: faults", "expected a mapping of fault name to entry")
    entries = dict(DEFAULTS)
    for name, raw in faults.items():
        entries[str(name)] = _entry(f"{path}: faults.{name}", raw)
    return Catalogue(entries)
