"""Protocol faults on demand: what a flaky controller, cable or gateway does to a request.

Faults are rules held per endpoint (one gateway) in a :class:`FaultInjector` and matched
per request by unit id. A rule applies to every request of its unit while it exists,
or with a ``probability`` per request, for at most ``count`` requests, and for at most
``duration_s`` wall seconds; whichever ends first removes it.

Kinds (``arg`` in brackets):

==============  ===============================================================
``exception``   answer with exception code [1, 2, 3, 4 or 6; default 4]
``timeout``     no answer to the request
``garbage``     random bytes instead of the answer
``truncated``   the answer cut short
``wrong_unit``  the answer carries another unit id [that unit id; default unit+1]
``reboot``      the device goes silent for [seconds; default 5], then restarts:
                its volatile counters start again (``SignalSource.reboot``).
                Fires once unless ``count``/``probability`` say otherwise.
``offline``     no answer at all until the rule is removed (or ``duration_s`` ends)
==============  ===============================================================

The CLI form is ``GATEWAY:UNIT:KIND[:ARG][@PROB|xCOUNT]`` (UNIT ``*`` = every unit of
the gateway), parsed by :func:`parse_fault_arg`.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    GARBAGE = "garbage"
    TRUNCATED = "truncated"
    WRONG_UNIT = "wrong_unit"
    REBOOT = "reboot"
    OFFLINE = "offline"


EXCEPTION_CODES = (1, 2, 3, 4, 6)
DEFAULT_EXCEPTION_CODE = 4
DEFAULT_REBOOT_S = 5.0

_ids = itertools.count(1)


@dataclass
class FaultRule:
    """One active fault rule; ``unit_id`` None means every unit of the endpoint."""

    unit_id: int | None
    kind: FaultKind
    arg: float | None = None
    count: int | None = None
    """Requests it still applies to (None: no limit)."""
    probability: float | None = None
    expires_at: float | None = None
    """Monotonic time it ends (None: until removed)."""
    id: int = 0
    fired: int = 0

    @property
    def code(self) -> int:
        """The exception code of an ``exception`` rule."""
        return int(self.arg) if self.arg is not None else DEFAULT_EXCEPTION_CODE

    @property
    def seconds(self) -> float:
        """How long a ``reboot`` keeps the device silent."""
        return float(self.arg) if self.arg is not None else DEFAULT_REBOOT_S


def _validate(kind: FaultKind, arg: float | None, count: int | None, probability: float | None,
              duration_s: float | None) -> None:
    if kind is FaultKind.EXCEPTION and arg is not None and int(arg) not in EXCEPTION_CODES:
        raise ValueError(
            f"exception code {arg!r} is not one of {', '.join(map(str, EXCEPTION_CODES))}"
        )
    if kind is FaultKind.REBOOT and arg is not None and not arg >= 0:
        raise ValueError(f"reboot needs seconds >= 0, got {arg!r}")
    if kind is FaultKind.WRONG_UNIT and arg is not None and not 0 <= int(arg) <= 255:
        raise ValueError(f"wrong_unit needs a unit id 0..255, got {arg!r}")
    if kind in (FaultKind.TIMEOUT, FaultKind.GARBAGE, FaultKind.TRUNCATED,
                FaultKind.OFFLINE) and arg is not None:
        raise ValueError(f"fault {kind.value} takes no argument")
    if kind is FaultKind.OFFLINE and (count is not None or probability is not None):
        raise ValueError(
            "offline lasts until removed (or duration_s); it takes no count or probability"
        )
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if probability is not None and not 0 < probability <= 1:
        raise ValueError(f"probability must be within (0, 1], got {probability}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")


class FaultInjector:
    """The fault rules of one endpoint. Thread-safe: tests add rules from their thread
    while the server's event loop matches them."""

    def __init__(
        self,
        seed: int = 0,
        *,
        units: frozenset[int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - fault timing, not cryptography
        self._units = units
        self._monotonic = monotonic

    def add(
        self,
        unit_id: int | None,
        kind: FaultKind | str,
        arg: float | None = None,
        *,
        count: int | None = None,
        probability: float | None = None,
        duration_s: float | None = None,
    ) -> FaultRule:
        """Add a rule; see the module docstring for kinds and arguments."""
        kind = FaultKind(kind)
        _validate(kind, arg, count, probability, duration_s)
        if unit_id is not None and self._units is not None and unit_id not in self._units:
            raise ValueError(
                f"unit id {unit_id} is not served here (units: {sorted(self._units)})"
            )
        if kind is FaultKind.REBOOT and count is None and probability is None:
            count = 1
        rule = FaultRule(
            unit_id=unit_id,
            kind=kind,
            arg=arg,
            count=count,
            probability=probability,
            expires_at=None if duration_s is None else self._monotonic() + duration_s,
            id=next(_ids),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule | int) -> bool:
        """Remove a rule (or its id); False if it was already gone."""
        rid = rule if isinstance(rule, int) else rule.id
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rid]
            return len(self._rules) != before

    def clear(self, unit_id: int | None = None) -> None:
        """Remove every rule (of one unit, if given)."""
        with self._lock:
            keep = [] if unit_id is None else [r for r in self._rules if r.unit_id != unit_id]
            self._rules = keep

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def offline(self, unit_id: int) -> bool:
        """Whether an ``offline`` rule holds this unit (without consuming anything)."""
        now = self._monotonic()
        with self._lock:
            return any(
                r.kind is FaultKind.OFFLINE and r.unit_id in (None, unit_id)
                and (r.expires_at is None or r.expires_at > now)
                for r in self._rules
            )

    def pick(self, unit_id: int) -> FaultRule | None:
        """The rule that fires for this request of ``unit_id``, if any (consumes a count)."""
        now = self._monotonic()
        with self._lock:
            self._rules = [r for r in self._rules if r.expires_at is None or r.expires_at > now]
            for rule in self._rules:
                if rule.unit_id is not None and rule.unit_id != unit_id:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                return rule
        return None

    def random_bytes(self, n: int) -> bytes:
        with self._lock:
            return self._rng.randbytes(n)


@dataclass(frozen=True)
class FaultArg:
    """A parsed ``--fault`` option."""

    gateway: str
    unit_id: int | None
    kind: FaultKind
    arg: float | None = None
    count: int | None = None
    probability: float | None = None


FAULT_SYNTAX = "GATEWAY:UNIT:KIND[:ARG][@PROB|xCOUNT]"


def parse_fault_arg(text: str) -> FaultArg:
    """Parse ``GATEWAY:UNIT:KIND[:ARG][@PROB|xCOUNT]``; ValueError says what is wrong."""
    body, probability, count = text, None, None
    if "@" in body:
        body, _, p = body.rpartition("@")
        try:
            probability = float(p)
        except ValueError:
            raise ValueError(f"{text!r}: probability {p!r} is not a number") from None
    else:
        head, sep, tail = body.rpartition("x")
        if sep and tail.isdigit() and ":" in head:
            body, count = head, int(tail)
    parts = body.split(":")
    if not 3 <= len(parts) <= 4:
        raise ValueError(f"{text!r} does not read as {FAULT_SYNTAX}")
    gateway, unit, kind_s = parts[0], parts[1], parts[2]
    if not gateway:
        raise ValueError(f"{text!r}: the gateway id is empty")
    unit_id: int | None
    if unit == "*":
        unit_id = None
    else:
        try:
            unit_id = int(unit)
        except ValueError:
            raise ValueError(f"{text!r}: unit {unit!r} is not a number or *") from None
    try:
        kind = FaultKind(kind_s)
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"{text!r}: fault kind {kind_s!r} is not one of {kinds}") from None
    arg: float | None = None
    if len(parts) == 4:
        try:
            arg = float(parts[3])
        except ValueError:
            raise ValueError(f"{text!r}: argument {parts[3]!r} is not a number") from None
    try:
        _validate(kind, arg, count, probability, None)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return FaultArg(gateway, unit_id, kind, arg, count, probability)
