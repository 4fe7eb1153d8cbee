"""The operator's set-up of the service business: service desks, depots, technicians,
parts and stock.

Plain functions on a session (``edgewatch-cloud admin ...`` calls them, and so can tests
and the demo); they validate what they are given (:class:`~cloud.errors.InvalidInput`
naming the field), look referenced objects up (:class:`~cloud.errors.NotFound`) and flush,
so a duplicate surfaces as :class:`~cloud.errors.Conflict`; the caller commits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import flush
from cloud.desk.adapters import check_config
from cloud.desk.signing import new_secret
from cloud.desk.tickets import DESK_KINDS, DeskConfig, DeskKind
from cloud.errors import ConfigError, InvalidInput, NotFound
from cloud.registry.models import Client
from cloud.workorders.models import Depot, Desk, Part, Stock, Technician

SKILL_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
"""A skill as the fault catalogue names them: ``refrigeration``, ``f-gas``."""
PART_NUMBER_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EMAIL_RE: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MAX_STOCK: Final = 1_000_000


def _text(where: str, value: Any, max_len: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise InvalidInput(where, "is required")
    if len(text) > max_len:
        raise InvalidInput(where, f"at most {max_len} characters")
    return text


def _coordinate(where: str, value: Any, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(where, "must be a number")
    number = float(value)
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise InvalidInput(where, f"must be from {-limit:g} to {limit:g}")
    return number


def _location(latitude: Any, longitude: Any) -> tuple[float, float]:
    return _coordinate("latitude", latitude, 90), _coordinate("longitude", longitude, 180)


def _depot(session: Session, ref: str) -> Depot:
    """A depot by id or exact name."""
    depot = (
        session.get(Depot, ref) or session.scalars(select(Depot).where(Depot.name == ref)).first()
    )
    if depot is None:
        raise NotFound(f"no depot with id or name {ref!r}")
    return depot


# -- desks ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreatedDesk:
    desk: Desk
    secret: str
    """The signing secret; the operator configures it at the desk. Shown once."""


def create_desk(
    session: Session,
    *,
    client_id: str,
    kind: str,
    url: str,
    username: str = "",
    token: str = "",
    options: Mapping[str, str] | None = None,
) -> CreatedDesk:
    """A client's service desk, checked the way the delivery worker will build its adapter
    (:func:`cloud.desk.adapters.check_config`), with a fresh ``whsec_`` signing secret."""
    if session.get(Client, client_id) is None:
        raise NotFound(f"client {client_id} not found")
    if kind not in DESK_KINDS:
        raise InvalidInput("kind", f"{kind!r} is not one of {', '.join(DESK_KINDS)}")
    opts = dict(options or {})
    config = DeskConfig(
        kind=cast(DeskKind, kind),  # one of DESK_KINDS (checked above)
        url=url.strip(),
        secret=new_secret(),
        username=username.strip(),
        token=token,
        options=opts,
    )
    try:
        check_config(config)
    except ConfigError as exc:
        raise InvalidInput(exc.key.removeprefix("desk."), exc.why) from None
    desk = Desk(
        client_id=client_id,
        kind=config.kind,
        url=config.url,
        username=config.username,
        token=config.token,
        secret=config.secret,
        options=opts,
    )
    session.add(desk)
    flush(session)
    return CreatedDesk(desk, config.secret)


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a mapping; :class:`InvalidInput` for a pair without ``=`` or a
    key given twice."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput("option", f"{pair!r} is not key=value")
        if key in options:
            raise InvalidInput(f"options.{key}", "given twice")
        options[key] = value.strip()
    return options


# -- depots, technicians ----------------------------------------------------------------------
def create_depot(session: Session, *, name: str, latitude: float, longitude: float) -> Depot:
    lat, lon = _location(latitude, longitude)
    depot = Depot(name=_text("name", name, 200), latitude=lat, longitude=lon)
    session.add(depot)
    flush(session)  # Conflict: a depot of that name exists
    return depot


def create_technician(
    session: Session,
    *,
    name: str,
    skills: Sequence[str],
    depot: str,
    latitude: float,
    longitude: float,
    email: str | None = None,
) -> Technician:
    """A technician based at ``depot`` (its id or name), at ``latitude``/``longitude`` (where
    they start their rounds: the suggestion measures the distance to the site from there)."""
    words: list[str] = []
    for skill in skills:
        word = skill.strip().lower()
        if not SKILL_RE.match(word):
            raise InvalidInput("skills", f"{skill!r} is not a skill such as refrigeration or f-gas")
        if word not in words:
            words.append(word)
    if not words:
        raise InvalidInput("skills", "at least one skill")
    if email is not None and not EMAIL_RE.match(email.strip()):
        raise InvalidInput("email", f"{email!r} is not an email address")
    lat, lon = _location(latitude, longitude)
    technician = Technician(
        name=_text("name", name, 200),
        email=None if email is None else email.strip().lower(),
        skills=words,
        depot_id=_depot(session, depot).id,
        latitude=lat,
        longitude=lon,
    )
    session.add(technician)
    flush(session)
    return technician


# -- parts and stock --------------------------------------------------------------------------
def create_part(
    session: Session, *, number: str, name: str, unit_cost: float | None = None
) -> Part:
    if not PART_NUMBER_RE.match(number or ""):
        raise InvalidInput("number", f"{number!r} must match {PART_NUMBER_RE.pattern}")
    if unit_cost is not None and (
        isinstance(unit_cost, bool)
        or not isinstance(unit_cost, int | float)
        or not math.isfinite(unit_cost)
        or unit_cost < 0
    ):
        raise InvalidInput("unit_cost", "must be a number >= 0")
    part = Part(number=number, name=_text("name", name, 200), unit_cost=unit_cost)
    session.add(part)
    flush(session)  # Conflict: the part number exists
    return part


def set_stock(session: Session, *, depot: str, part_number: str, on_hand: int) -> Stock:
    """What ``depot`` (its id or name) holds of a part, counted: sets ``on_hand``. Parts
    held for orders (``reserved``) stay held, even when the count is now lower (the free
    quantity is then negative and no new order takes any)."""
    if isinstance(on_hand, bool) or not isinstance(on_hand, int) or not 0 <= on_hand <= MAX_STOCK:
        raise InvalidInput("on_hand", f"must be a whole number from 0 to {MAX_STOCK}")
    where = _depot(session, depot)
    if session.get(Part, part_number) is None:
        raise NotFound(f"no part {part_number!r}; create it first (admin create-part)")
    stock = session.get(Stock, (where.id, part_number), with_for_update=True)
    if stock is None:
        stock = Stock(depot_id=where.id, part_number=part_number, on_hand=on_hand, reserved=0)
        session.add(stock)
    else:
        stock.on_hand = on_hand
    flush(session)
    return stock
