"""cloud.registry.services: the role matrix, tenant scoping, validation, the ingest lookup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session
from support.registry_world import World

from cloud.auth import Principal
from cloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from cloud.registry import services as sv
from cloud.registry.models import Criticality, Device, EventKind, Role, Site
from cloud.registry.refs import DeviceRef

# ---- the role matrix, table-driven ----------------------------------------------------------
# Each action runs on an object of client Alpha; the expected outcome per role is what the
# module docstring's matrix says: "ok", or the error class.

Action = Callable[[Session, Principal, World], object]

ACTIONS: dict[str, Action] = {
    "get client": lambda s, p, w: sv.get_client(s, p, w.a.client_id),
    "create client": lambda s, p, w: sv.create_client(s, p, name="New client"),
    "rename client": lambda s, p, w: sv.update_client(s, p, w.a.client_id, {"name": "Renamed"}),
    "get site": lambda s, p, w: sv.get_site(s, p, w.a.site_id),
    "create site": lambda s, p, w: sv.create_site(
        s, p, client_id=w.a.client_id, name="new", kind="office"
    ),
    "site address": lambda s, p, w: sv.update_site(s, p, w.a.site_id, {"address": "New st 2"}),
    "site tariff": lambda s, p, w: sv.update_site(s, p, w.a.site_id, {"tariff": None}),
    "get gateway": lambda s, p, w: sv.get_gateway(s, p, w.a.gateway_id),
    "create gateway": lambda s, p, w: sv.create_gateway(
        s, p, gateway_id="gw-new", site_id=w.a.site_id
    ),
    "rotate credentials": lambda s, p, w: sv.rotate_gateway_credentials(
        s, p, w.a.gateway_id, grace_s=60
    ),
    "revoke credential": lambda s, p, w: sv.revoke_gateway_credential(
        s, p, w.a.gateway_id, w.a.credential_id
    ),
    "list credentials": lambda s, p, w: sv.gateway_credentials(s, p, w.a.gateway_id),
    "get device": lambda s, p, w: sv.get_device(s, p, w.a.device_id),
    "create device": lambda s, p, w: sv.create_device(
        s, p, gateway_id=w.a.gateway_id, name="new-dev", asset_type="fan"
    ),
    "device location": lambda s, p, w: sv.update_device(
        s, p, w.a.device_id, {"location": "basement", "occupant_flags": []}
    ),
    "device criticality": lambda s, p, w: sv.update_device(
        s, p, w.a.device_id, {"criticality": "low"}
    ),
    "add event": lambda s, p, w: sv.add_device_event(
        s, p, w.a.device_id, kind="repaired", summary="fixed"
    ),
    "list events": lambda s, p, w: sv.list_device_events(s, p, w.a.device_id),
    "delete device": lambda s, p, w: sv.delete_device(s, p, w.a.device2_id),
    "list users": lambda s, p, w: sv.list_users(s, p),
    "get manager": lambda s, p, w: sv.get_user(s, p, w.a.manager_id),
    "get desk user": lambda s, p, w: sv.get_user(s, p, w.desk_id),
    "create user": lambda s, p, w: sv.create_user(s, p, email="x@y.example", role="service_desk"),
}

OK = "ok"
# role:                  admin  service_desk  facility_manager of Alpha
MATRIX: dict[str, tuple[object, object, object]] = {
    "get client": (OK, OK, OK),
    "create client": (OK, Forbidden, Forbidden),
    "rename client": (OK, Forbidden, Forbidden),
    "get site": (OK, OK, OK),
    "create site": (OK, Forbidden, Forbidden),
    "site address": (OK, Forbidden, OK),
    "site tariff": (OK, Forbidden, Forbidden),
    "get gateway": (OK, OK, OK),
    "create gateway": (OK, Forbidden, Forbidden),
    "rotate credentials": (OK, Forbidden, Forbidden),
    "revoke credential": (OK, Forbidden, Forbidden),
    "list credentials": (OK, Forbidden, Forbidden),
    "get device": (OK, OK, OK),
    "create device": (OK, Forbidden, Forbidden),
    "device location": (OK, Forbidden, OK),
    "device criticality": (OK, Forbidden, Forbidden),
    "add event": (OK, OK, Forbidden),
    "list events": (OK, OK, OK),
    "delete device": (OK, Forbidden, Forbidden),
    "list users": (OK, Forbidden, Forbidden),
    "get manager": (OK, NotFound, OK),  # the desk sees staff only; the manager themselves
    "get desk user": (OK, OK, NotFound),  # the desk sees itself; a manager no staff
    "create user": (OK, Forbidden, Forbidden),
}


def test_the_matrix_covers_every_action() -> None:
    assert set(MATRIX) == set(ACTIONS)


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("role_index", [0, 1, 2], ids=["admin", "service_desk", "fm_alpha"])
def test_role_matrix(
    action: str,
    role_index: int,
    session: Session,
    world: World,
    admin: Principal,
    desk: Principal,
    fm_a: Principal,
) -> None:
    principal = (admin, desk, fm_a)[role_index]
    expected = MATRIX[action][role_index]
    if expected == OK:
        ACTIONS[action](session, principal, world)
    else:
        assert isinstance(expected, type)
        with pytest.raises(expected):
            ACTIONS[action](session, principal, world)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_another_clients_manager_gets_not_found_for_everything(
    action: str, session: Session, world: World, fm_b: Principal
) -> None:
    """Bravo's manager acting on Alpha's objects: NotFound, never Forbidden (which would
    confirm they exist) -- except actions on no object at all (create client, list users),
    where the role alone decides."""
    role_only = {"create client", "list users", "create user"}
    if action == "get desk user":
        return  # staff, not Alpha's: covered by the matrix
    expected = Forbidden if action in role_only else NotFound
    with pytest.raises(expected) as info:
        ACTIONS[action](session, fm_b, world)
    if expected is NotFound:
        assert not isinstance(info.value, Forbidden)


# ---- tenant scoping of lists, filters and search --------------------------------------------


def test_lists_show_a_manager_only_their_client(
    session: Session, world: World, fm_a: Principal, desk: Principal
) -> None:
    b = world.b
    assert [c.id for c in sv.list_clients(session, fm_a)] == [world.a.client_id]
    assert {s.client_id for s in sv.list_sites(session, fm_a)} == {world.a.client_id}
    assert [g.id for g in sv.list_gateways(session, fm_a)] == [world.a.gateway_id]
    assert {d.gateway_id for d in sv.list_devices(session, fm_a)} == {world.a.gateway_id}
    # Filters and searches naming Bravo's objects find nothing, rather than an error.
    assert sv.list_sites(session, fm_a, client_id=b.client_id) == []
    assert sv.list_gateways(session, fm_a, site_id=b.site_id) == []
    assert sv.list_gateways(session, fm_a, client_id=b.client_id) == []
    assert sv.list_devices(session, fm_a, gateway_id=b.gateway_id) == []
    assert sv.list_devices(session, fm_a, site_id=b.site_id) == []
    assert sv.list_devices(session, fm_a, client_id=b.client_id) == []
    assert sv.list_devices(session, fm_a, q=b.serial) == []
    assert sv.list_devices(session, fm_a, q="bravo") == []
    assert sv.list_clients(session, fm_a, q="Bravo") == []
    assert sv.list_sites(session, fm_a, q="bravo") == []
    # The service desk and admin see both.
    assert len(sv.list_clients(session, desk)) == 2
    assert [d.id for d in sv.list_devices(session, desk, q=b.serial)] == [b.device_id]


def test_search_is_case_insensitive_and_literal(session: Session, admin: Principal) -> None:
    assert [d.name for d in sv.list_devices(session, admin, q="ser-alpha")] == ["cc-alpha"]
    assert [d.name for d in sv.list_devices(session, admin, q="ALPHA ROOF")] == ["cc-alpha"]
    assert sv.list_devices(session, admin, q="%") == []  # not a wildcard
    assert sv.list_devices(session, admin, q="_") == []
    assert len(sv.list_devices(session, admin, asset_type="fan")) == 2
    assert len(sv.list_devices(session, admin, criticality="high")) == 2


def test_paging(session: Session, admin: Principal) -> None:
    names = [d.name for d in sv.list_devices(session, admin)]
    assert names == ["cc-alpha", "fan-alpha", "cc-bravo", "fan-bravo"]
    assert [d.name for d in sv.list_devices(session, admin, limit=2, offset=1)] == names[1:3]
    with pytest.raises(InvalidInput, match="limit"):
        sv.list_devices(session, admin, limit=0)


def test_device_context_is_scoped(
    session: Session, world: World, fm_a: Principal, fm_b: Principal
) -> None:
    ctx = sv.device_context(session, fm_a, world.a.device_id)
    assert (ctx.gateway.id, ctx.site.id, ctx.client.id) == (
        world.a.gateway_id,
        world.a.site_id,
        world.a.client_id,
    )
    with pytest.raises(NotFound):
        sv.device_context(session, fm_b, world.a.device_id)


# ---- what a facility manager may change -----------------------------------------------------


def test_a_manager_updates_descriptive_fields_only(
    session: Session, world: World, fm_a: Principal
) -> None:
    device = sv.update_device(
        session,
        fm_a,
        world.a.device_id,
        {"location": "  plant room 3 ", "occupant_flags": ["vulnerable_occupant", "infant"]},
    )
    assert device.location == "plant room 3"
    assert device.occupant_flags == ["vulnerable_occupant", "infant"]
    site = sv.update_site(session, fm_a, world.a.site_id, {"latitude": 25.1, "longitude": 55.2})
    assert (site.latitude, site.longitude) == (25.1, 55.2)
    with pytest.raises(Forbidden, match="location, occupant_flags"):
        sv.update_device(session, fm_a, world.a.device_id, {"location": "x", "serial": "y"})
    with pytest.raises(Forbidden):
        sv.update_site(session, fm_a, world.a.site_id, {"name": "mine now"})


# ---- validation and conflicts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"latitude": 91}, "latitude"),
        ({"longitude": float("nan")}, "longitude"),
        ({"floor_area_m2": 0}, "floor_area_m2"),
        ({"kind": "castle"}, "kind"),
        ({"tariff": {"kind": "flat", "currency": "euro", "price_per_kwh": 1}}, "tariff.currency"),
        (
            {"tariff": {"kind": "flat", "currency": "EUR", "price_per_kwh": -1}},
            "tariff.price_per_kwh",
        ),
        ({"tariff": {"currency": "EUR", "energy_per_kwh": 0.2}}, "tariff.kind"),
        ({"name": "  "}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_site_values_name_the_field(
    changes: dict[str, Any], where: str, session: Session, world: World, admin: Principal
) -> None:
    with pytest.raises(InvalidInput) as info:
        sv.update_site(session, admin, world.a.site_id, changes)
    assert info.value.where == where


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "-x"}, "name"),
        ({"occupant_flags": ["Vulnerable Occupant"]}, "occupant_flags"),
        ({"criticality": "urgent"}, "criticality"),
        ({"install_date": date(2025, 1, 2), "warranty_end": date(2025, 1, 1)}, "warranty_end"),
    ],
)
def test_bad_device_values_name_the_field(
    kwargs: dict[str, Any], where: str, session: Session, world: World, admin: Principal
) -> None:
    args: dict[str, Any] = {
        "gateway_id": world.a.gateway_id,
        "name": "ok-name",
        "asset_type": "fan",
    }
    with pytest.raises(InvalidInput) as info:
        sv.create_device(session, admin, **(args | kwargs))
    assert info.value.where == where


def test_duplicates_and_orphans_are_conflicts(
    session: Session, world: World, admin: Principal
) -> None:
    with pytest.raises(Conflict):
        sv.create_gateway(session, admin, gateway_id=world.b.gateway_id, site_id=world.a.site_id)
    with pytest.raises(Conflict):
        sv.create_device(
            session, admin, gateway_id=world.a.gateway_id, name="cc-alpha", asset_type="x"
        )
    with pytest.raises(Conflict):
        sv.create_user(session, admin, email="FM@alpha.example", role="service_desk")
    with pytest.raises(Conflict, match="still has sites"):
        sv.delete_client(session, admin, world.a.client_id)
    with pytest.raises(Conflict, match="still has gateways"):
        sv.delete_site(session, admin, world.a.site_id)
    with pytest.raises(Conflict, match="still has devices"):
        sv.delete_gateway(session, admin, world.a.gateway_id)


def test_deleting_bottom_up_works_and_cascades(
    session: Session, world: World, admin: Principal
) -> None:
    for device_id in (world.a.device_id, world.a.device2_id):
        sv.delete_device(session, admin, device_id)
    sv.delete_gateway(session, admin, world.a.gateway_id)  # its credentials go with it
    sv.delete_site(session, admin, world.a.site_id)
    sv.delete_client(session, admin, world.a.client_id)  # its manager goes with it
    with pytest.raises(NotFound):
        sv.get_user(session, admin, world.a.manager_id)


def test_user_rules(session: Session, world: World, admin: Principal) -> None:
    with pytest.raises(InvalidInput, match="client_id"):
        sv.create_user(session, admin, email="a@b.example", role="facility_manager")
    with pytest.raises(InvalidInput, match="client_id"):
        sv.create_user(
            session, admin, email="a@b.example", role="admin", client_id=world.a.client_id
        )
    with pytest.raises(InvalidInput, match="password"):
        sv.create_user(session, admin, email="a@b.example", role="admin", password="short")  # noqa: S106
    with pytest.raises(Conflict, match="themselves"):
        sv.update_user(session, admin, world.admin_id, {"active": False})
    with pytest.raises(Conflict, match="themselves"):
        sv.delete_user(session, admin, world.admin_id)
    user = sv.update_user(session, admin, world.a.manager_id, {"role": Role.SERVICE_DESK})
    assert (user.role, user.client_id) == (Role.SERVICE_DESK, None)


def test_events_record_who_and_when(session: Session, world: World, desk: Principal) -> None:
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    sv.add_device_event(
        session, desk, world.a.device_id, kind=EventKind.REPAIRED, summary="valve", at=at
    )
    events = sv.list_device_events(session, desk, world.a.device_id)
    assert (events[0].kind, events[0].at, events[0].created_by) == (
        EventKind.REPAIRED,
        at,
        desk.user_id,
    )
    assert events[1].kind == EventKind.INSTALLED  # newest first
    with pytest.raises(InvalidInput, match="time zone"):
        sv.add_device_event(
            session, desk, world.a.device_id, kind="note", summary="x", at=datetime(2026, 1, 1)
        )


# ---- the ingest lookup ----------------------------------------------------------------------


@contextmanager
def count_queries(session: Session) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = session.get_bind()

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_gateway_devices_is_one_query(session: Session, world: World) -> None:
    with count_queries(session) as statements:
        refs = sv.gateway_devices(session, world.a.gateway_id)
    assert len(statements) == 1
    assert (refs.client_id, refs.site_id) == (world.a.client_id, world.a.site_id)
    assert set(refs.devices) == {"cc-alpha", "fan-alpha"}
    assert refs.devices["cc-alpha"] == DeviceRef(world.a.device_id, "compressor")
    assert refs.devices.get("nope") is None and len(refs.devices) == 2


def test_gateway_devices_of_a_gateway_without_devices_and_of_none(
    session: Session, world: World, admin: Principal
) -> None:
    sv.create_gateway(session, admin, gateway_id="gw-empty", site_id=world.b.site_id)
    refs = sv.gateway_devices(session, "gw-empty")
    assert len(refs.devices) == 0 and refs.client_id == world.b.client_id
    with pytest.raises(NotFound):
        sv.gateway_devices(session, "gw-unknown")


def test_moving_a_device_to_another_clients_gateway_needs_admin(
    session: Session, world: World, admin: Principal, fm_a: Principal
) -> None:
    with pytest.raises(Forbidden):
        sv.update_device(session, fm_a, world.a.device_id, {"gateway_id": world.b.gateway_id})
    device = sv.update_device(session, admin, world.a.device_id, {"gateway_id": world.b.gateway_id})
    assert device.gateway_id == world.b.gateway_id
    assert session.get(Device, world.a.device_id) is device
    assert sv.get_device(session, admin, world.a.device_id).criticality is Criticality.HIGH
    assert session.get(Site, world.a.site_id) is not None
