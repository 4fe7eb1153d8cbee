"""The REST API through FastAPI's TestClient: auth, errors, resources, readings, health."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from support.registry_world import NOW, PASSWORD, World
from unit.cloud.api.conftest import Headers, TestClient

from cloud.app import create_app
from cloud.errors import StoreUnavailable
from cloud.settings import Settings
from cloud.tsdb.sqlite import SQLiteStore

Login = Callable[[str], Headers]
RANGE = {
    "start": (NOW - timedelta(hours=1)).isoformat(),
    "end": (NOW + timedelta(hours=5)).isoformat(),
}


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code


# ---- authentication -------------------------------------------------------------------------


def test_login_and_me(client: TestClient, world: World) -> None:
    r = client.post(
        "/v1/auth/token", data={"username": world.a.manager_email, "password": PASSWORD}
    )
    assert r.status_code == 200
    token = r.json()
    assert (token["token_type"], token["expires_in"]) == ("bearer", 3600)
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.json()["id"] == world.a.manager_id and me.json()["role"] == "facility_manager"
    assert "password" not in me.text and "password_hash" not in me.json()


def test_bad_credentials_are_401_with_www_authenticate(client: TestClient, world: World) -> None:
    r = client.post("/v1/auth/token", data={"username": world.a.manager_email, "password": "x"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    for headers in [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Bearer ewk_unknown"},
        {"X-API-Key": "ewk_unknown"},
    ]:
        r = client.get("/v1/me", headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


def test_an_expired_token_is_refused(app: FastAPI, client: TestClient, world: World) -> None:
    from cloud.auth.tokens import issue_token
    from cloud.registry.models import User

    with app.state.sessionmaker() as s:
        user = s.get(User, world.a.manager_id)
        old = issue_token(app.state.settings, user, now=datetime.now(UTC) - timedelta(hours=2))
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {old.access_token}"})
    assert_error(r, 401, "unauthorized")
    assert "expired" in r.json()["detail"]


def test_api_keys_in_either_header_until_revoked(
    client: TestClient, login: Login, world: World
) -> None:
    h = login(world.a.manager_email)
    r = client.post("/v1/me/api-keys", json={"name": "grafana"}, headers=h)
    assert r.status_code == 201
    key = r.json()
    assert key["key"].startswith("ewk_") and key["key"].startswith(key["prefix"])
    listed = client.get("/v1/me/api-keys", headers=h).json()
    assert {k["id"] for k in listed} >= {key["id"]} and all("key" not in k for k in listed)
    for headers in ({"X-API-Key": key["key"]}, {"Authorization": f"Bearer {key['key']}"}):
        assert client.get("/v1/me", headers=headers).json()["id"] == world.a.manager_id
    assert client.delete(f"/v1/me/api-keys/{key['id']}", headers=h).status_code == 204
    assert_error(client.get("/v1/me", headers={"X-API-Key": key["key"]}), 401, "unauthorized")
    # Another user's key cannot be revoked, nor even found.
    hb = login(world.b.manager_email)
    assert_error(
        client.delete(f"/v1/me/api-keys/{world.a.api_key_id}", headers=hb), 404, "not_found"
    )


# ---- errors ---------------------------------------------------------------------------------


def test_error_bodies_have_one_shape(client: TestClient, login: Login, world: World) -> None:
    admin = login(world.admin_email)
    fm = login(world.a.manager_email)
    assert_error(client.get("/v1/sites/nope", headers=admin), 404, "not_found")
    assert_error(
        client.post("/v1/clients", json={"name": "Client Alpha"}, headers=admin), 409, "conflict"
    )
    assert_error(client.post("/v1/clients", json={"name": "x"}, headers=fm), 403, "forbidden")
    assert_error(client.get("/v1/sites?limit=0", headers=admin), 422, "invalid_input")
    r = client.patch(
        f"/v1/sites/{world.a.site_id}", json={"timezone": "Nowhere/Land"}, headers=admin
    )
    assert_error(r, 422, "invalid_input")
    assert "timezone" in r.json()["detail"]
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.put("/v1/sites", headers=admin), 405, "method_not_allowed")


def test_a_store_outage_is_503_with_retry_after(api_settings: Settings, world: World) -> None:
    class DownStore(SQLiteStore):
        def latest(self, device: str) -> dict[str, Any]:
            raise StoreUnavailable("the store is down")

        def ping(self) -> bool:
            return False

    store = DownStore(api_settings.tsdb_sqlite_path)
    try:
        with TestClient(create_app(api_settings, store=store)) as c:
            r = c.post("/v1/auth/token", data={"username": world.admin_email, "password": PASSWORD})
            h = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = c.get(f"/v1/devices/{world.a.device_id}/lifecycle", headers=h)
            assert_error(r, 503, "store_unavailable")
            assert r.headers["retry-after"] == "5"
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {
                "database": "ok",
                "store": "failed: the store does not answer",
            }
    finally:
        store.close()


# ---- resources ------------------------------------------------------------------------------


def test_admin_builds_a_site_from_scratch(client: TestClient, login: Login) -> None:
    h = login("admin@edgewatch.example")
    client_id = client.post("/v1/clients", json={"name": "Client Charlie"}, headers=h).json()["id"]
    site = client.post(
        "/v1/sites",
        json={
            "client_id": client_id,
            "name": "c-site",
            "kind": "mall",
            "timezone": "Europe/Berlin",
        },
        headers=h,
    )
    assert site.status_code == 201 and site.json()["timezone"] == "Europe/Berlin"
    gw = client.post("/v1/gateways", json={"id": "gw-c", "site_id": site.json()["id"]}, headers=h)
    assert gw.status_code == 201 and gw.json()["client_id"] == client_id
    dev = client.post(
        "/v1/devices",
        json={"gateway_id": "gw-c", "name": "fan-c", "asset_type": "fan", "serial": "S-C"},
        headers=h,
    )
    assert dev.status_code == 201
    assert dev.json()["site_id"] == site.json()["id"] and dev.json()["client_id"] == client_id
    user = client.post(
        "/v1/users",
        json={
            "email": "fm@c.example",
            "role": "facility_manager",
            "client_id": client_id,
            "password": "long enough password",
        },
        headers=h,
    )
    assert user.status_code == 201 and user.json()["client_id"] == client_id
    r = client.post(
        "/v1/auth/token", data={"username": "fm@c.example", "password": "long enough password"}
    )
    fm = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert [d["name"] for d in client.get("/v1/devices", headers=fm).json()] == ["fan-c"]


def test_gateway_credentials_rotate_and_revoke(
    client: TestClient, login: Login, world: World
) -> None:
    h = login(world.admin_email)
    gw = world.a.gateway_id
    issued = client.post(f"/v1/gateways/{gw}/credentials", headers=h)
    assert issued.status_code == 201
    body = issued.json()
    assert body["secret"].startswith("ewg_") and body["mqtt_username"] == f"{gw}@2"
    listed = client.get(f"/v1/gateways/{gw}/credentials", headers=h).json()
    assert [c["active"] for c in listed] == [True, True]
    assert all("secret" not in c for c in listed)
    old = next(c for c in listed if c["id"] == world.a.credential_id)
    assert old["expires_at"] is not None  # the grace period (3600 s here)
    r = client.delete(f"/v1/gateways/{gw}/credentials/{world.a.credential_id}", headers=h)
    assert r.status_code == 204
    listed = client.get(f"/v1/gateways/{gw}/credentials", headers=h).json()
    assert [c["active"] for c in listed if c["id"] == world.a.credential_id] == [False]
    fm = login(world.a.manager_email)
    assert_error(client.post(f"/v1/gateways/{gw}/credentials", headers=fm), 403, "forbidden")


def test_a_manager_edits_location_and_flags_only(
    client: TestClient, login: Login, world: World
) -> None:
    fm = login(world.a.manager_email)
    url = f"/v1/devices/{world.a.device_id}"
    r = client.patch(url, json={"location": "basement", "occupant_flags": ["infant"]}, headers=fm)
    assert r.status_code == 200 and r.json()["occupant_flags"] == ["infant"]
    assert_error(client.patch(url, json={"serial": "X"}, headers=fm), 403, "forbidden")
    assert_error(client.patch(url, json={"bogus": 1}, headers=fm), 422, "invalid_input")


def test_service_desk_records_events(client: TestClient, login: Login, world: World) -> None:
    desk = login(world.desk_email)
    url = f"/v1/devices/{world.b.device_id}/events"
    r = client.post(
        url,
        json={"kind": "repaired", "summary": "new valve", "detail": {"ticket": "T-1"}},
        headers=desk,
    )
    assert r.status_code == 201 and r.json()["created_by"] == world.desk_id
    kinds = [e["kind"] for e in client.get(url, headers=desk).json()]
    assert kinds == ["repaired", "installed"]
    fm = login(world.b.manager_email)
    assert_error(
        client.post(url, json={"kind": "note", "summary": "x"}, headers=fm), 403, "forbidden"
    )


# ---- the device's file and its readings -----------------------------------------------------


def test_lifecycle_joins_registry_events_and_latest_readings(
    client: TestClient, login: Login, world: World
) -> None:
    h = login(world.a.manager_email)
    body = client.get(f"/v1/devices/{world.a.device_id}/lifecycle", headers=h).json()
    assert body["device"]["serial"] == world.a.serial
    assert body["gateway"]["id"] == world.a.gateway_id
    assert body["site"]["id"] == world.a.site_id and body["client"]["id"] == world.a.client_id
    assert [e["kind"] for e in body["events"]] == ["installed"]
    assert set(body["latest"]) == {"features", "score", "alarm", "energy"}
    assert body["latest"]["score"]["fields"]["anomalous"] is True
    assert body["last_alarm"]["tags"]["name"] == "high_pressure"
    assert all(v["tags"]["device"] == world.a.device_id for v in body["latest"].values())


def test_feature_history_energy_and_rollup(client: TestClient, login: Login, world: World) -> None:
    h = login(world.a.manager_email)
    dev = world.a.device_id
    rows = client.get(f"/v1/devices/{dev}/features", params=RANGE, headers=h).json()
    assert [r["features"]["p__mean"] for r in rows] == [1.0, 2.0, 3.0, 4.0]
    rows = client.get(
        f"/v1/devices/{dev}/features", params={**RANGE, "names": "p__mean", "limit": 2}, headers=h
    ).json()
    assert [r["features"] for r in rows] == [{"p__mean": 3.0}, {"p__mean": 4.0}]
    energy = client.get(f"/v1/devices/{dev}/energy", params={**RANGE, "interval": 3600}, headers=h)
    consumed = [e["consumed"] for e in energy.json() if e["counter"] == "energy"]
    assert [c for c in consumed if c is not None] == [5.0, 5.0, 5.0]  # 4 hourly readings
    rollup = client.get(
        f"/v1/sites/{world.a.site_id}/rollup", params={**RANGE, "interval": 86_400}, headers=h
    ).json()
    assert len(rollup) == 1
    assert rollup[0]["alarms_raised"] == 1 and rollup[0]["anomalous_windows"] == 1
    bad = client.get(
        f"/v1/devices/{dev}/energy",
        params={"start": RANGE["end"], "end": RANGE["start"]},
        headers=h,
    )
    assert_error(bad, 422, "invalid_input")
    many = client.get(
        f"/v1/devices/{dev}/energy",
        params={"start": "2024-01-01T00:00:00Z", "end": "2025-12-01T00:00:00Z", "interval": 60},
        headers=h,
    )
    assert_error(many, 422, "invalid_input")


# ---- health, metrics, OpenAPI ---------------------------------------------------------------


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "store": "ok"}}


def test_metrics_label_routes_by_template(client: TestClient, login: Login, world: World) -> None:
    h = login(world.admin_email)
    client.get(f"/v1/devices/{world.a.device_id}", headers=h)
    client.get("/v1/devices/no-such-device", headers=h)
    text = client.get("/metrics").text
    assert (
        'edgewatch_http_requests_total{method="GET",route="/v1/devices/{device_id}",status="200"}'
        in text
    )
    assert 'route="/v1/devices/{device_id}",status="404"' in text
    assert world.a.device_id not in text
    assert 'edgewatch_db_query_seconds_count{operation="select"}' in text
    assert "edgewatch_http_request_seconds_bucket" in text


def test_openapi_documents_examples_errors_and_security(app: FastAPI) -> None:
    spec = app.openapi()
    schemas = spec["components"]["schemas"]
    for name in ("SiteIn", "DeviceIn", "GatewayIn", "UserIn", "DeviceEventIn", "ClientIn"):
        assert schemas[name]["examples"], name
    assert {"OAuth2PasswordBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    get_device = spec["paths"]["/v1/devices/{device_id}"]["get"]
    for status in ("401", "403", "404", "422"):
        assert get_device["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
    assert "HTTPValidationError" not in schemas
