"""``POST /v1/desks/{desk_id}/status`` over HTTP, on the two-tenant world with a webhook desk
and an order waiting for approval per tenant (``seed_work_orders``): a signed post moves
the order, anything not signed by an enabled desk answers the same 401, bad bodies name
the place, and replays answer without moving anything."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from support.registry_world import World, seed_work_orders
from unit.cloud.api.conftest import Headers, TestClient

from cloud.api.desk_inbound import MAX_BODY_BYTES
from cloud.api.schemas import DESK_STATUS_EXAMPLES, EXAMPLE_ORDER_ID
from cloud.desk.inbound import parse_status_update
from cloud.desk.signing import new_secret, signed_headers
from cloud.desk.tickets import DESK_KINDS
from cloud.workorders.models import Desk

Login = Callable[[str], Headers]


@pytest.fixture
def world(world: World) -> World:
    """The two-tenant world with a webhook desk and a work order per tenant."""
    return seed_work_orders(world)


def secret_of(sessions: sessionmaker[Session], desk_id: str) -> str:
    with sessions() as s:
        desk = s.get(Desk, desk_id)
        assert desk is not None
        return desk.secret


def send(
    client: TestClient,
    desk_id: str,
    body: Any,
    secret: str,
    *,
    msg_id: str | None = None,
    age_s: int = 0,
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = signed_headers(
        secret, msg_id or f"msg_{uuid.uuid4().hex}", int(time.time()) - age_s, raw
    )
    headers["Content-Type"] = "application/json"
    return client.post(f"/v1/desks/{desk_id}/status", content=raw, headers=headers)


@pytest.fixture
def alpha_secret(world: World, sessions: sessionmaker[Session]) -> str:
    return secret_of(sessions, world.a.desk_id)


def test_a_signed_post_moves_the_order_once(
    client: TestClient, world: World, login: Login, alpha_secret: str
) -> None:
    a = world.a
    body = {"order_id": a.work_order_id, "state": "approved", "note": "approved at the desk"}

    r = send(client, a.desk_id, body, alpha_secret, msg_id="msg_approve")

    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer == {
        "order_id": a.work_order_id,
        "number": answer["number"],
        "state_before": "waiting_approval",
        "state_after": "approved",
        "outcome": "moved",
        "duplicate": False,
        "message_id": "msg_approve",
    }
    assert answer["number"].startswith("WO-")
    order = client.get(f"/v1/work-orders/{a.work_order_id}", headers=login(a.manager_email))
    last = order.json()["events"][-1]
    assert (last["actor"], last["from_state"], last["to_state"], last["note"]) == (
        f"desk:{a.desk_id}",
        "waiting_approval",
        "approved",
        "approved at the desk",
    )
    assert last["detail"]["vendor_state"] == "approved"

    again = send(client, a.desk_id, body, alpha_secret, msg_id="msg_approve")
    assert again.status_code == 200, again.text
    assert again.json() == {**answer, "duplicate": True}
    after = client.get(f"/v1/work-orders/{a.work_order_id}", headers=login(a.manager_email))
    assert len(after.json()["events"]) == len(order.json()["events"])


def test_only_an_enabled_desks_own_signature_is_accepted_and_all_else_looks_alike(
    client: TestClient, world: World, sessions: sessionmaker[Session], alpha_secret: str
) -> None:
    a = world.a
    body = {"order_id": a.work_order_id, "state": "approved"}

    wrong = send(client, a.desk_id, body, new_secret())
    assert (wrong.status_code, wrong.json()["error"]) == (401, "unauthorized")
    assert wrong.headers["www-authenticate"] == "webhook-signature"
    assert wrong.json()["detail"].startswith("webhook-signature: none of 1 v1 signature(s)")

    unknown = send(client, str(uuid.uuid4()), body, alpha_secret)
    assert (unknown.status_code, unknown.json()) == (401, wrong.json())

    with sessions.begin() as s:
        s.execute(update(Desk).where(Desk.id == a.desk_id).values(enabled=False))
    disabled = send(client, a.desk_id, body, alpha_secret)
    assert (disabled.status_code, disabled.json()) == (401, wrong.json())
    with sessions.begin() as s:
        s.execute(update(Desk).where(Desk.id == a.desk_id).values(enabled=True))

    stale = send(client, a.desk_id, body, alpha_secret, age_s=400)
    assert stale.status_code == 401
    assert stale.json()["detail"].startswith("webhook-timestamp: 40")
    assert "behind this clock" in stale.json()["detail"]

    unsigned = client.post(f"/v1/desks/{a.desk_id}/status", json=body)
    unsigned_unknown = client.post(f"/v1/desks/{uuid.uuid4()}/status", json=body)
    assert unsigned.status_code == unsigned_unknown.status_code == 401
    assert unsigned.json() == unsigned_unknown.json()
    assert unsigned.json()["detail"] == "webhook-id: missing or empty"

    order = send(client, a.desk_id, body, alpha_secret)
    assert order.status_code == 200, order.text  # and the desk's own post still works


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "body: not JSON"),
        ({"order_id": "ORDER", "state": "fixed"}, "body.state: unknown state 'fixed'"),
        ({"state": "approved"}, "body: names no order"),
        ({"data": {"order_id": "ORDER", "state": ["approved"]}}, "body.data.state: expected a"),
        ([1, 2], "body: expected a JSON object"),
    ],
)
def test_a_body_that_is_no_status_update_answers_422_naming_the_place(
    client: TestClient, world: World, alpha_secret: str, body: Any, detail: str
) -> None:
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace("ORDER", world.a.work_order_id))
    r = send(client, world.a.desk_id, body, alpha_secret)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_input"), r.text
    assert r.json()["detail"].startswith(detail)


def test_an_oversized_body_answers_413(client: TestClient, world: World, alpha_secret: str) -> None:
    big = json.dumps(
        {"order_id": world.a.work_order_id, "state": "approved", "note": "x" * MAX_BODY_BYTES}
    )
    r = send(client, world.a.desk_id, big.encode(), alpha_secret)
    assert (r.status_code, r.json()["error"]) == (413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it is read
        for _ in range(5):
            yield b" " * (MAX_BODY_BYTES // 4)

    streamed = client.post(f"/v1/desks/{world.a.desk_id}/status", content=chunks())
    assert (streamed.status_code, streamed.json()["error"]) == (413, "too_large")


def test_a_move_the_life_cycle_refuses_answers_409_and_so_does_its_replay(
    client: TestClient, world: World, alpha_secret: str
) -> None:
    body = {"order_id": world.a.work_order_id, "state": "closed"}
    first = send(client, world.a.desk_id, body, alpha_secret, msg_id="msg_close")
    assert (first.status_code, first.json()["error"]) == (409, "conflict")
    assert "from waiting_approval to closed" in first.json()["detail"]
    again = send(client, world.a.desk_id, body, alpha_secret, msg_id="msg_close")
    assert (again.status_code, again.json()) == (409, first.json())


def test_another_clients_order_answers_404(
    client: TestClient, world: World, alpha_secret: str
) -> None:
    bravo_order = world.b.work_order_id
    r = send(client, world.a.desk_id, {"order_id": bravo_order, "state": "approved"}, alpha_secret)
    assert (r.status_code, r.json()) == (
        404,
        {"error": "not_found", "detail": f"work order {bravo_order} not found"},
    )
    ticket = {"external_id": "FM-404", "state": "approved"}
    r = send(client, world.a.desk_id, ticket, alpha_secret)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


def test_the_documented_bodies_are_one_per_desk_kind_and_parse(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/v1/desks/{desk_id}/status"]["post"]["requestBody"]["content"]
    examples = content["application/json"]["examples"]
    assert sorted(examples) == sorted(DESK_KINDS)
    for kind, example in DESK_STATUS_EXAMPLES.items():
        update = parse_status_update(kind, example["value"])
        assert update.order_id == EXAMPLE_ORDER_ID, kind
