"""EMQX asks the API about MQTT logins: the right gateways get in, confined to their topics."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.client import topic_matches_sub
from sqlalchemy.orm import Session, sessionmaker
from support.registry_world import World, settings_for

from cloud.app import create_app
from cloud.auth.gateways import issue_credential, revoke_credential
from cloud.errors import ConfigError
from cloud.registry.models import Gateway
from cloud.settings import load_settings

KEY = secrets.token_urlsafe(33)
INGEST_PASSWORD = secrets.token_urlsafe(16)
URL = "/v1/broker/emqx/authenticate"


def make_client(world: World, tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    settings = settings_for(world.url, tmp_path / "ts.db", secret_key="t" * 40, **overrides)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def broker(world: World, tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(
        world, tmp_path, broker_auth_key=KEY, mqtt_username="_ingest",
        mqtt_password=INGEST_PASSWORD,
    )  # fmt: skip


def ask(client: TestClient, username: str, password: str, key: str | None = KEY) -> Any:
    headers = {} if key is None else {"X-EdgeWatch-Broker-Key": key}
    body = {"username": username, "password": password, "clientid": username}
    r = client.post(URL, json=body, headers=headers)
    return r.status_code, r.json()


def allowed(acl: list[dict[str, Any]], action: str, topic: str) -> bool:
    """EMQX's reading of an ACL: the first rule whose action and topic filter match."""
    for rule in acl:
        if rule["action"] in (action, "all") and (
            rule["topic"] == topic or topic_matches_sub(rule["topic"], topic)
        ):
            return bool(rule["permission"] == "allow")
    raise AssertionError(f"no rule for {action} {topic}: the ACL must end in a deny-all")


def test_a_gateway_gets_in_with_its_secret_and_only_its_own_topics(
    broker: TestClient, world: World
) -> None:
    a, b = world.a, world.b
    status, answer = ask(broker, a.gateway_id, a.gateway_secret)
    assert status == 200 and answer["result"] == "allow" and answer["is_superuser"] is False
    acl = answer["acl"]
    own = f"edgewatch/v1/{a.gateway_id}"
    other = f"edgewatch/v1/{b.gateway_id}"
    assert allowed(acl, "publish", f"{own}/up") and allowed(acl, "publish", f"{own}/status")
    assert allowed(acl, "subscribe", f"{own}/ack") and allowed(acl, "subscribe", f"{own}/down/x")
    for action, topic in [
        ("publish", f"{other}/up"),  # writing as another gateway
        ("subscribe", f"{other}/ack"),  # reading another gateway's acks
        ("publish", f"{own}/ack"),  # forging its own acks
        ("subscribe", f"{own}/up"),
        ("subscribe", "edgewatch/v1/+/up"),  # everyone's uplink
        ("subscribe", "#"),
        ("publish", "$SYS/broker"),
        ("subscribe", "$share/g/edgewatch/v1/+/up"),  # everyone's uplink, shared
    ]:
        assert not allowed(acl, action, topic), (action, topic)


def test_wrong_unknown_and_revoked_logins(
    broker: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    a, b = world.a, world.b
    assert ask(broker, a.gateway_id, b.gateway_secret) == (200, {"result": "deny"})
    assert ask(broker, a.gateway_id, "") == (200, {"result": "deny"})
    # Not ours: EMQX asks its next authenticator (operators' own accounts, say).
    assert ask(broker, "ops-console", "whatever") == (200, {"result": "ignore"})
    status, before = ask(broker, a.gateway_id, a.gateway_secret)
    assert before["result"] == "allow" and "expire_at" not in before
    with sessions.begin() as s:
        gateway = s.get(Gateway, a.gateway_id)
        assert gateway is not None
        issued = issue_credential(s, gateway, grace_s=3600)
    # During the rotation's grace period the old secret still logs in, until its expiry.
    status, rotating = ask(broker, a.gateway_id, a.gateway_secret)
    assert rotating["result"] == "allow"
    assert 3500 < rotating["expire_at"] - time.time() <= 3601
    with sessions.begin() as s:
        revoke_credential(s, a.gateway_id, a.credential_id)
    assert ask(broker, a.gateway_id, a.gateway_secret) == (200, {"result": "deny"})
    status, answer = ask(broker, issued.username, issued.secret)
    assert status == 200 and answer["result"] == "allow"
    assert allowed(answer["acl"], "publish", f"edgewatch/v1/{a.gateway_id}/up")


def test_the_ingest_account_reads_every_uplink_through_its_shared_subscription(
    broker: TestClient,
) -> None:
    status, answer = ask(broker, "_ingest", INGEST_PASSWORD)
    assert status == 200 and answer["result"] == "allow"
    acl = answer["acl"]
    assert allowed(acl, "subscribe", "$share/ingest/edgewatch/v1/+/up")
    assert allowed(acl, "subscribe", "edgewatch/v1/+/status")
    assert allowed(acl, "publish", "edgewatch/v1/gw-anything/ack")
    assert not allowed(acl, "publish", "edgewatch/v1/gw-anything/up")  # never as a gateway
    assert ask(broker, "_ingest", INGEST_PASSWORD + "x") == (200, {"result": "deny"})


def test_only_the_broker_may_ask(broker: TestClient, world: World) -> None:
    assert ask(broker, world.a.gateway_id, world.a.gateway_secret, key=None)[0] == 401
    wrong = KEY[:-1] + ("y" if KEY.endswith("x") else "x")  # differs in its last character
    assert ask(broker, world.a.gateway_id, world.a.gateway_secret, key=wrong)[0] == 401


def test_no_endpoint_without_a_key(world: World, tmp_path: Path) -> None:
    for client in make_client(world, tmp_path):
        assert ask(client, world.a.gateway_id, world.a.gateway_secret)[0] == 404


def test_a_short_key_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="BROKER_AUTH_KEY"):
        load_settings(broker_auth_key="short")
