"""Tenant isolation, proven over the real route table.

The walk enumerates ``app.routes`` (every ``APIRoute``, every method) and builds each
request from the OpenAPI operation: path parameters are filled with client Bravo's ids,
every id-like query parameter with a Bravo id and ``q`` with Bravo's word, and a JSON body
from the schema's example with every ``*_id`` field set to Bravo's. Then:

1. As Alpha's facility manager (gateway-authenticated routes: as Alpha's gateway; routes
   signed by a service desk: signed by Alpha's desk), every call must answer exactly as
   it answers for ids that do not exist at all: same status, same error code, and for
   reads the same body. Routes with a path parameter must answer 404 (401 for the gateway
   uplink and the desks' status posts). No response may contain anything of Bravo that
   the request did not carry itself, and nothing of Bravo's may change.
2. The same calls as Bravo's manager, or as an admin where the manager's role may not do
   it (as Bravo's gateway for the uplink, signed by Bravo's desk for its status posts),
   must succeed, and reads must show Bravo's data: the 404s above are isolation, not
   broken routes.

A route added later is walked automatically; one with a path or query parameter the walk
cannot fill fails the test with what to add. The world walked has a desk, a risk score and
a work order (with its delivery) per tenant (``seed_work_orders``), so the risk, work-order
and delivery routes are walked on real objects too.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import Engine, select, update
from support.registry_world import NOW, PASSWORD, Tenant, World, seed_work_orders
from support.report_world import seed_tenant_reports
from unit.cloud.api.conftest import BROKER_KEY, Headers, TestClient

from cloud.api.deps import CurrentPrincipal, SessionDep
from cloud.api.schemas import DeviceOut
from cloud.db import make_engine
from cloud.desk.signing import new_secret, signed_headers
from cloud.errors import NotFound
from cloud.registry.models import Device
from cloud.schema import metadata
from cloud.workorders.models import Desk
from edge_agent.protocol import BATCH_CONTENT_TYPE, Record, RecordKind, encode_batch

Login = Callable[[str], Headers]

# Path and query parameters the walk knows how to fill, by name.
ID_PARAMS = {
    "client_id",
    "site_id",
    "gateway_id",
    "device_id",
    "user_id",
    "key_id",
    "credential_id",
    "event_id",
    "work_order_id",
    "outbox_id",
    "desk_id",
    "report_id",
}
BODY_IDS = {"order_id": "work_order_id"}
"""Body fields that name an object under another name than its parameter's."""
QUERY_SEARCH = {"q"}
TIME_PARAMS = {  # the seeded readings' hours
    "start": (NOW - timedelta(hours=1)).isoformat(),
    "end": (NOW + timedelta(hours=5)).isoformat(),
}
QUERY_FREE = {
    # Parameters that name no object: left at their defaults.
    "limit",
    "offset",
    "interval",
    "group",
    "names",
    "kind",
    "role",
    "criticality",
    "asset_type",
    "events_limit",
    "state",
    "open",
    "fault",
    "priority_max",
}
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MISSING_UUID = "00000000-0000-4000-8000-000000000000"
MISSING_GATEWAY = "gw-does-not-exist"
MISSING = {"gateway_id": MISSING_GATEWAY, "outbox_id": "2147483647"}


@dataclass
class Call:
    method: str
    path: str  # the template
    url: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str | None = None
    auth: str = "user"  # user | gateway | desk | broker | public
    carried: set[str] = field(default_factory=set)
    """Values the request itself carries (a response may echo them)."""

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    """The full path template, e.g. ``/v1/devices/{device_id}``."""


@pytest.fixture
def world(world: World, tmp_path: Path) -> World:
    """The two-tenant world with a desk, a risk score, a work order and an energy report per
    tenant. Alpha's desk gets a secret of its own (the seeded desks share one), so that
    Alpha's desk signing a post to Bravo's desk is a wrong signature, as it is in
    production."""
    seeded = seed_tenant_reports(seed_work_orders(world), tmp_path)
    engine = make_engine(seeded.url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(Desk).where(Desk.id == seeded.a.desk_id).values(secret=new_secret())
            )
    finally:
        engine.dispose()
    return seeded


def operations(app: FastAPI) -> Iterator[Op]:
    """Every method of every APIRoute in ``app.routes``. FastAPI 0.165 keeps included
    routers as wrappers there; ``iter_route_contexts`` flattens them with their prefixes."""
    for ctx in iter_route_contexts(app.routes):
        if isinstance(ctx.original_route, APIRoute) and ctx.path and ctx.methods:
            for method in sorted(ctx.methods):
                yield Op(method, ctx.path)


def _id_for(name: str, tenant: Tenant | None) -> str:
    if tenant is None:
        return MISSING.get(name, MISSING_UUID)
    return {**tenant.ids(), "desk_id": tenant.desk_id}[name]


def build_call(spec: dict[str, Any], route: Op, tenant: Tenant | None) -> Call:
    """The request for ``route`` naming ``tenant``'s objects (None: objects that do not
    exist)."""
    method = route.method
    op = spec["paths"][route.path][method.lower()]
    security = {name for req in op.get("security", []) for name in req}
    auth = (
        "gateway"
        if "GatewaySecret" in security
        else "desk"
        if "DeskSignature" in security
        else "broker"
        if "BrokerKey" in security
        else "user"
        if security
        else "public"
    )
    call = Call(method=method, path=route.path, url=route.path, auth=auth)
    for param in op.get("parameters", []):
        name, where = param["name"], param["in"]
        if where == "path":
            if name not in ID_PARAMS:
                pytest.fail(f"{call.label}: path parameter {name!r} unknown to the tenant walk")
            value = _id_for(name, tenant)
            call.url = call.url.replace("{" + name + "}", value)
            call.carried.add(value)
        elif where == "query":
            if name in ID_PARAMS:
                call.params[name] = _id_for(name, tenant)
            elif name in QUERY_SEARCH:
                call.params[name] = tenant.word if tenant is not None else "zzz-nothing"
            elif name in TIME_PARAMS:
                call.params[name] = TIME_PARAMS[name]
            elif name not in QUERY_FREE:
                pytest.fail(f"{call.label}: query parameter {name!r} unknown to the tenant walk")
            if name in call.params:
                call.carried.add(call.params[name])
    content = op.get("requestBody", {}).get("content", {})
    if JSON in content:
        example = _example(spec, content[JSON]["schema"])
        for key in list(example):
            name = BODY_IDS.get(key, key)
            if name.endswith("_id") and name in ID_PARAMS:
                example[key] = _id_for(name, tenant)
                call.carried.add(example[key])
        call.body, call.content_type = example, JSON
    elif FORM in content:
        call.content_type = FORM
    elif BATCH_CONTENT_TYPE in content:
        call.content_type = BATCH_CONTENT_TYPE
    elif content:
        pytest.fail(f"{call.label}: request body type {sorted(content)} unknown to the walk")
    return call


def _example(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    component = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema
    examples = component.get("examples") or []
    if not examples:
        pytest.fail(f"request schema {ref or schema} has no example to build a body from")
    return json.loads(json.dumps(examples[0]))


def batch_for(gateway_id: str, device_name: str) -> bytes:
    record = Record(1, NOW.timestamp(), RecordKind.ENERGY, device_name, {"values": {"energy": 1}})
    return encode_batch(gateway_id, [record])


class Caller:
    """Sends a :class:`Call` as a user, a gateway, a service desk or anonymously."""

    def __init__(self, client: TestClient, world: World, login: Login) -> None:
        self.client, self.world, self.login = client, world, login

    def desk_secret(self, tenant: Tenant) -> str:
        engine = cast(FastAPI, self.client.app).state.engine
        with engine.connect() as conn:
            return str(conn.scalar(select(Desk.secret).where(Desk.id == tenant.desk_id)))

    def send(
        self,
        call: Call,
        *,
        user: str | None = None,
        gateway: Tenant | None = None,
        desk: Tenant | None = None,
    ) -> Any:
        headers: dict[str, str] = {}
        if call.auth == "user" and user is not None:
            headers.update(self.login(user))
        if call.auth == "gateway" and gateway is not None:
            headers["Authorization"] = f"Bearer {gateway.gateway_secret}"
        if call.auth == "broker":  # the MQTT cluster: not a tenant, it asks about any login
            headers["X-EdgeWatch-Broker-Key"] = BROKER_KEY
        kwargs: dict[str, Any] = {"params": call.params, "headers": headers}
        if call.auth == "desk" and desk is not None:
            raw = json.dumps(call.body).encode()
            msg_id = f"msg_{uuid.uuid4().hex}"
            headers.update(signed_headers(self.desk_secret(desk), msg_id, int(time.time()), raw))
            headers["Content-Type"] = JSON
            kwargs["content"] = raw
        elif call.content_type == JSON:
            kwargs["json"] = call.body
        elif call.content_type == FORM:
            kwargs["data"] = call.body
        elif call.content_type == BATCH_CONTENT_TYPE:
            headers["Content-Type"] = BATCH_CONTENT_TYPE
            kwargs["content"] = call.body
        return self.client.request(call.method, call.url, **kwargs)


# ---- what belongs to Bravo ------------------------------------------------------------------


def tenant_rows(engine: Engine, seeds: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that is, or hangs (transitively) off, an object whose id is in ``seeds``."""
    tables = metadata.sorted_tables
    with engine.connect() as conn:
        everything = {t.name: [tuple(r) for r in conn.execute(select(t))] for t in tables}
    id_column = {
        t.name: list(t.columns.keys()).index(next(iter(t.primary_key.columns)).name) for t in tables
    }
    ids = set(seeds)
    while True:
        found = {
            name: sorted(
                (r for r in rows if any(v in ids for v in r if isinstance(v, str))), key=repr
            )
            for name, rows in everything.items()
        }
        new_ids = {r[id_column[name]] for name, rows in found.items() for r in rows}
        if new_ids <= ids:
            return found
        ids |= new_ids


def leaks(text: str, tenant: Tenant, carried: set[str]) -> list[str]:
    return sorted(m for m in tenant.markers() - carried if m and m in text)


def normalized(text: str, values: set[str]) -> str:
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, "<id>")
    return re.sub(r'"(created_at|last_used_at|at|id|prefix|key|secret)":"[^"]*"', r'"\1":"*"', text)


def error_code(r: Any) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


# ---- the walk -----------------------------------------------------------------------------------


def _prepare(call: Call, world: World, tenant: Tenant | None, *, as_tenant: Tenant) -> Call:
    """Fill in what depends on who calls: the login form and the batch."""
    if call.content_type == FORM:
        email = tenant.manager_email if tenant is not None else "nobody@nowhere.example"
        # The caller (Alpha's manager) tries Bravo's account with their own password ...
        # and, positively, Bravo's manager logs in with theirs.
        call.body = {"username": email, "password": PASSWORD if as_tenant is tenant else "x" * 12}
        call.carried.add(email)
    elif call.content_type == BATCH_CONTENT_TYPE:
        gateway_id = call.url.rsplit("/", 2)[-2]
        call.body = batch_for(gateway_id, f"cc-{as_tenant.word}")
    return call


def test_every_route_hides_another_clients_objects(
    app: FastAPI, client: TestClient, world: World, login: Login
) -> None:
    spec = app.openapi()
    caller = Caller(client, world, login)
    a, b = world.a, world.b
    ops = list(operations(app))
    assert len(ops) >= 30, "the walk should see the whole API"
    engine = app.state.engine
    before = tenant_rows(engine, set(b.ids().values()))
    assert sum(len(rs) for rs in before.values()) == 16  # client, site, gateway, credential,
    # two devices, an event, the manager, their API key; a desk, a risk score, a work order,
    # its history event, its life-cycle event and its delivery; an energy report
    problems: list[str] = []

    for route in ops:
        method = route.method
        call = _prepare(build_call(spec, route, b), world, b, as_tenant=a)
        missing = _prepare(build_call(spec, route, None), world, None, as_tenant=a)
        r = caller.send(call, user=a.manager_email, gateway=a, desk=a)
        r_missing = caller.send(missing, user=a.manager_email, gateway=a, desk=a)
        has_object = "{" in route.path
        expected = {"gateway": 401, "desk": 401, "user": 404}.get(call.auth)
        if has_object and expected is not None and r.status_code != expected:
            problems.append(f"{call.label}: {r.status_code} for Bravo's ids, expected {expected}")
        if (r.status_code, error_code(r)) != (r_missing.status_code, error_code(r_missing)):
            problems.append(
                f"{call.label}: answers {r.status_code} {error_code(r)} for Bravo's ids but "
                f"{r_missing.status_code} {error_code(r_missing)} for ids that do not exist"
            )
        elif (
            method == "GET"
            and r.status_code == 200
            and route.path != "/metrics"  # counts requests: differs between any two calls
            and normalized(r.text, call.carried) != normalized(r_missing.text, missing.carried)
        ):
            problems.append(f"{call.label}: the answer differs for Bravo's ids")
        if found := leaks(r.text, b, call.carried):
            problems.append(f"{call.label}: the response shows Bravo's {found}")
    assert not problems, "\n".join(problems)
    assert tenant_rows(engine, set(b.ids().values())) == before, "Bravo's data changed"

    # The same calls by someone who may: Bravo's manager, else an admin (deletes last).
    def order(route: Op) -> tuple[int, int, int]:
        if route.method != "DELETE":
            return (0, 0, 0)
        rank = ["me", "devices", "gateways", "sites", "clients", "users"]
        first = route.path.split("/")[2] if route.path.count("/") > 1 else ""
        return (1, -route.path.count("/"), rank.index(first) if first in rank else 0)

    for route in sorted(ops, key=order):
        method = route.method
        call = _prepare(build_call(spec, route, b), world, b, as_tenant=b)
        r = caller.send(call, user=b.manager_email, gateway=b, desk=b)
        who = "Bravo's manager"
        if r.status_code == 403:
            r, who = caller.send(call, user=world.admin_email), "an admin"
        ok = r.status_code < 400 or (method == "DELETE" and error_code(r) == "conflict")
        if not ok:
            problems.append(f"{call.label} as {who}: {r.status_code} {r.text[:200]}")
        elif method == "GET" and r.content.strip() in (b"", b"[]", b"{}"):
            # Every filter names Bravo's objects, every time range Bravo's readings.
            problems.append(f"{call.label} as {who}: an empty answer")
    assert not problems, "\n".join(problems)


def test_the_walk_notices_an_unscoped_route(
    app: FastAPI, client: TestClient, world: World, login: Login
) -> None:
    """A route that forgets the tenant (reads by id without the caller's scope) is caught:
    the walk's oracle tells it apart from a scoped one."""

    @app.get("/v1/leaky/{device_id}", response_model=DeviceOut)
    def leaky(device_id: str, session: SessionDep, principal: CurrentPrincipal) -> DeviceOut:
        device = session.get(Device, device_id)
        if device is None:
            raise NotFound("device not found")
        return DeviceOut.of(device)

    spec = app.openapi()
    route = next(op for op in operations(app) if op.path.startswith("/v1/leaky"))
    caller = Caller(client, world, login)
    call = build_call(spec, route, world.b)
    r = caller.send(call, user=world.a.manager_email)
    assert r.status_code == 200  # the bug
    assert leaks(r.text, world.b, call.carried)  # ... which the walk reports


def test_unknown_parameters_fail_the_walk(app: FastAPI) -> None:
    @app.get("/v1/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {}

    spec = app.openapi()
    route = next(op for op in operations(app) if op.path.startswith("/v1/things"))
    with pytest.raises(pytest.fail.Exception, match="thing_id"):
        build_call(spec, route, None)


def test_every_uuid_like_marker_is_unique(world: World) -> None:
    assert not world.a.markers() & world.b.markers()
    assert all(
        uuid.UUID(v) for k, v in world.b.ids().items() if k not in ("gateway_id", "outbox_id")
    )
