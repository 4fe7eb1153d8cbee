"""The HTTPS uplink: a gateway's batch in, its ack out; every way a request is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.cloud_stub import free_port
from support.registry_world import World, settings_for

from cloud.app import create_app
from cloud.settings import load_settings
from cloud.tsdb.influx import InfluxStore
from edge_agent.protocol import (
    BATCH_CONTENT_TYPE,
    MAX_DOCUMENT_BYTES,
    Record,
    RecordKind,
    decode_ack,
    encode_batch,
)

NOW = time.time()


def batch(gateway: str, device: str, seqs: range) -> bytes:
    return encode_batch(
        gateway,
        [
            Record(s, NOW + s, RecordKind.ENERGY, device, {"values": {"energy": 5.0 + s}})
            for s in seqs
        ],
    )


@pytest.fixture
def client(world: World, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(world.url, tmp_path / "ts.db"))) as c:
        yield c


def post(
    client: TestClient,
    gateway: str,
    secret: str | None,
    body: bytes,
    content_type: str = BATCH_CONTENT_TYPE,
) -> object:
    headers = {"Content-Type": content_type}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return client.post(f"/v1/gateways/{gateway}/batches", content=body, headers=headers)


def test_a_batch_is_stored_and_acked(client: TestClient, world: World) -> None:
    a = world.a
    good = list(range(1, 11))
    body = encode_batch(
        a.gateway_id,
        [
            Record(s, NOW + s, RecordKind.ENERGY, "cc-alpha", {"values": {"energy": float(s)}})
            for s in good
        ]
        + [Record(11, NOW, RecordKind.ENERGY, "cc-bravo", {"values": {"energy": 1.0}})],
    )
    r = client.post(
        f"/v1/gateways/{a.gateway_id}/batches",
        content=body,
        headers={"Content-Type": BATCH_CONTENT_TYPE, "Authorization": f"Bearer {a.gateway_secret}"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    ack = decode_ack(r.content, expected_gateway=a.gateway_id)
    assert ack.ranges == [(1, 10)]
    assert ack.rejected == [(11, "unknown_device")]  # bravo's device is not alpha's
    store = client.app.state.store  # type: ignore[attr-defined]
    assert store.count("energy", gateway=a.gateway_id) == 10
    assert store.latest(a.device_id)["energy"].tags["client"] == a.client_id
    again = client.post(
        f"/v1/gateways/{a.gateway_id}/batches",
        content=body,
        headers={"Content-Type": BATCH_CONTENT_TYPE, "Authorization": f"Bearer {a.gateway_secret}"},
    )
    assert decode_ack(again.content) == ack
    assert store.count("energy", gateway=a.gateway_id) == 10


@pytest.mark.parametrize(
    ("who", "status", "error"),
    [
        ("none", 401, "unauthorized"),
        ("wrong", 401, "unauthorized"),
        ("other-gateway", 401, "unauthorized"),
        ("user-api-key", 401, "unauthorized"),
    ],
)
def test_only_the_gateways_own_secret_is_accepted(
    client: TestClient, world: World, who: str, status: int, error: str
) -> None:
    secret = {
        "none": None,
        "wrong": "not-a-secret",
        "other-gateway": world.b.gateway_secret,
        "user-api-key": world.a.api_key,
    }[who]
    r = post(client, world.a.gateway_id, secret, batch(world.a.gateway_id, "cc-alpha", range(1, 3)))
    assert (r.status_code, r.json()["error"]) == (status, error)  # type: ignore[attr-defined]
    assert r.headers["www-authenticate"] == "Bearer"  # type: ignore[attr-defined]
    assert client.app.state.store.count("energy") == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"\x01{not json", BATCH_CONTENT_TYPE, 400, "malformed"),
        (b"", BATCH_CONTENT_TYPE, 400, "malformed"),
        (None, "application/json", 415, "unsupported_media_type"),
        (b"\x01" + b" " * (MAX_DOCUMENT_BYTES + 1), BATCH_CONTENT_TYPE, 413, "too_large"),
    ],
    ids=["malformed", "empty", "content-type", "too-large"],
)
def test_bad_requests_name_what_is_wrong(
    client: TestClient,
    world: World,
    body: bytes | None,
    content_type: str,
    status: int,
    error: str,
) -> None:
    a = world.a
    data = body if body is not None else batch(a.gateway_id, "cc-alpha", range(1, 3))
    r = post(client, a.gateway_id, a.gateway_secret, data, content_type)
    assert (r.status_code, r.json()["error"]) == (status, error)  # type: ignore[attr-defined]


def test_a_batch_of_another_gateway_is_refused(client: TestClient, world: World) -> None:
    a, b = world.a, world.b
    r = post(client, a.gateway_id, a.gateway_secret, batch(b.gateway_id, "cc-bravo", range(1, 3)))
    assert (r.status_code, r.json()["error"]) == (400, "bad_gateway")  # type: ignore[attr-defined]


def test_an_unavailable_store_answers_503_and_acks_nothing(world: World, tmp_path: Path) -> None:
    settings = load_settings(
        database_url=world.url,
        tsdb="influxdb",
        influx_url=f"http://127.0.0.1:{free_port()}",
        influx_timeout_s=1.0,
        influx_manage_schema=False,
    )
    store = InfluxStore.from_settings(settings)
    with TestClient(create_app(settings, store=store)) as c:
        a = world.a
        r = post(c, a.gateway_id, a.gateway_secret, batch(a.gateway_id, "cc-alpha", range(1, 3)))
    store.close()
    assert (r.status_code, r.json()["error"]) == (503, "store_unavailable")  # type: ignore[attr-defined]
    assert r.headers["retry-after"]  # type: ignore[attr-defined]
