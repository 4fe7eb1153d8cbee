"""cloud.auth: password hashes, bearer tokens, API keys, gateway credentials, Mosquitto files."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from support.registry_world import PASSWORD, World

from cloud.auth import Principal, mosquitto_files
from cloud.auth.gateways import authenticate_gateway, issue_credential, revoke_credential
from cloud.auth.mosquitto import GatewayLogin, ServiceAccount, render_files, write_files
from cloud.auth.passwords import (
    hash_password,
    mosquitto_hash,
    sha256_hex,
    verify_mosquitto_hash,
    verify_password,
)
from cloud.auth.tokens import (
    authenticate_password,
    create_api_key,
    issue_token,
    principal_from_api_key,
    principal_from_token,
    revoke_api_key,
    token_subject,
)
from cloud.errors import AuthError, Conflict, InvalidInput, NotFound
from cloud.registry.models import ApiKey, Gateway, GatewayCredential, Role, User
from cloud.settings import load_settings

SETTINGS = load_settings(secret_key="k" * 40, token_ttl_s=600)

# ---- passwords ------------------------------------------------------------------------------


def test_password_hash_verifies_and_is_salted() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)


@pytest.mark.parametrize(
    "stored", [None, "", "plain", "scrypt$1$2$3$x$y", "bcrypt$a$b$c$d$e", "scrypt$16384$8$1$!$!"]
)
def test_verify_refuses_missing_and_malformed_hashes(stored: str | None) -> None:
    assert not verify_password("whatever password", stored)


def test_short_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="10 to"):
        hash_password("short")


def test_mosquitto_hash_has_mosquitto_passwds_format() -> None:
    salt = bytes(range(12))
    stored = mosquitto_hash("s3cret", salt=salt)
    _, seven, iterations, salt_b64, hash_b64 = stored.split("$")
    assert (seven, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert len(base64.b64decode(hash_b64)) == 64
    assert verify_mosquitto_hash("s3cret", stored)
    assert not verify_mosquitto_hash("s3cret!", stored)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_a_hash_written_by_mosquitto_passwd_verifies_here(tmp_path: Path) -> None:
    """The same format both ways: what mosquitto_passwd writes, this module reads (and the
    broker test in tests/integration/cloud proves the broker accepts what this writes)."""
    pwfile = tmp_path / "pw"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pwfile), "gw-1", "s3cret-from-cli"],
        check=True,
        capture_output=True,
    )
    stored = pwfile.read_text().strip().split(":", 1)[1]
    assert stored.startswith("$7$101$")
    assert verify_mosquitto_hash("s3cret-from-cli", stored)
    assert not verify_mosquitto_hash("other", stored)


# ---- login and bearer tokens ----------------------------------------------------------------


def test_login_checks_the_password_and_the_account(session: Session, world: World) -> None:
    assert authenticate_password(session, "FM@Alpha.example ", PASSWORD).id == world.a.manager_id
    for email, password in [
        (world.a.manager_email, "wrong password"),
        ("nobody@example.com", PASSWORD),
    ]:
        with pytest.raises(AuthError, match="incorrect email or password"):
            authenticate_password(session, email, password)
    user = session.get(User, world.a.manager_id)
    assert user is not None
    user.active = False
    with pytest.raises(AuthError, match="incorrect email or password"):
        authenticate_password(session, world.a.manager_email, PASSWORD)


def test_a_token_names_its_user_until_it_expires(session: Session, world: World) -> None:
    user = session.get(User, world.a.manager_id)
    assert user is not None
    token = issue_token(SETTINGS, user)
    assert token.expires_in == 600
    p = principal_from_token(session, SETTINGS, token.access_token)
    assert p == Principal(world.a.manager_id, Role.FACILITY_MANAGER, world.a.client_id)
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600
    later = datetime.now(UTC) + timedelta(seconds=601)
    with pytest.raises(AuthError, match="expired"):
        token_subject(SETTINGS, token.access_token, now=later)
    old = issue_token(SETTINGS, user, now=datetime.now(UTC) - timedelta(seconds=601))
    with pytest.raises(AuthError, match="expired"):
        principal_from_token(session, SETTINGS, old.access_token)


def test_tampered_and_foreign_tokens_are_refused(session: Session, world: World) -> None:
    user = session.get(User, world.a.manager_id)
    assert user is not None
    token = issue_token(SETTINGS, user).access_token
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged_payload = (
        base64.urlsafe_b64encode(json.dumps({**claims, "sub": world.admin_id}).encode())
        .rstrip(b"=")
        .decode()
    )
    other_key = load_settings(secret_key="x" * 40)
    unsigned = jwt.encode({**claims}, key="", algorithm="none")
    for bad in [
        f"{header}.{forged_payload}.{signature}",
        issue_token(other_key, user).access_token,
        unsigned,
        "not-a-token",
    ]:
        with pytest.raises(AuthError, match="not valid"):
            principal_from_token(session, SETTINGS, bad)


def test_a_disabled_users_token_stops_working(session: Session, world: World) -> None:
    user = session.get(User, world.a.manager_id)
    assert user is not None
    token = issue_token(SETTINGS, user).access_token
    user.active = False
    session.flush()
    with pytest.raises(AuthError, match="disabled"):
        principal_from_token(session, SETTINGS, token)


# ---- API keys -------------------------------------------------------------------------------


def test_an_api_key_is_shown_once_stored_hashed_and_revocable(
    session: Session, world: World, fm_a: Principal, fm_b: Principal
) -> None:
    issued = create_api_key(session, fm_a, "grafana")
    assert issued.secret.startswith("ewk_") and len(issued.secret) >= 4 + 43
    row = session.get(ApiKey, issued.key.id)
    assert row is not None
    assert row.secret_sha256 == sha256_hex(issued.secret) and issued.secret not in row.prefix
    assert row.prefix == issued.secret[:12]
    assert principal_from_api_key(session, issued.secret) == fm_a
    assert row.last_used_at is not None
    with pytest.raises(NotFound):
        revoke_api_key(session, fm_b, issued.key.id)  # another user's key: not there
    revoke_api_key(session, fm_a, issued.key.id)
    revoke_api_key(session, fm_a, issued.key.id)  # idempotent
    with pytest.raises(AuthError, match="revoked"):
        principal_from_api_key(session, issued.secret)
    with pytest.raises(AuthError, match="unknown"):
        principal_from_api_key(session, "ewk_" + "A" * 43)
    with pytest.raises(AuthError, match="not an EdgeWatch API key"):
        principal_from_api_key(session, "Bearer-something")


def test_the_command_line_has_no_api_keys(session: Session) -> None:
    with pytest.raises(InvalidInput):
        create_api_key(session, Principal.system(), "x")


# ---- gateway credentials --------------------------------------------------------------------


def _gateway(session: Session, gateway_id: str) -> Gateway:
    gw = session.get(Gateway, gateway_id)
    assert gw is not None
    return gw


def test_rotation_keeps_the_old_secret_for_the_grace_period(session: Session, world: World) -> None:
    gw = _gateway(session, world.a.gateway_id)
    t0 = datetime.now(UTC)
    old_secret = world.a.gateway_secret
    new = issue_credential(session, gw, grace_s=3600, now=t0)
    assert new.username == f"{gw.id}@2"
    assert new.credential.secret_sha256 == sha256_hex(new.secret)
    assert verify_mosquitto_hash(new.secret, new.credential.mosquitto_hash)
    # Both work during the grace period, the old one no longer after it.
    for secret in (old_secret, new.secret):
        assert authenticate_gateway(session, gw.id, secret, now=t0 + timedelta(minutes=59)) is gw
    with pytest.raises(AuthError):
        authenticate_gateway(session, gw.id, old_secret, now=t0 + timedelta(seconds=3601))
    assert authenticate_gateway(session, gw.id, new.secret, now=t0 + timedelta(days=30)) is gw
    third = issue_credential(session, gw, grace_s=0, now=t0 + timedelta(minutes=1))
    assert third.username == f"{gw.id}@3"
    with pytest.raises(AuthError):  # grace 0: the previous one ends at once
        authenticate_gateway(session, gw.id, new.secret, now=t0 + timedelta(minutes=2))


def test_a_rotation_never_extends_an_earlier_expiry(session: Session, world: World) -> None:
    gw = _gateway(session, world.a.gateway_id)
    t0 = datetime.now(UTC)
    issue_credential(session, gw, grace_s=60, now=t0)
    issue_credential(session, gw, grace_s=86_400, now=t0 + timedelta(seconds=10))
    first = session.get(GatewayCredential, world.a.credential_id)
    assert first is not None and first.expires_at == t0 + timedelta(seconds=60)


def test_revocation_is_immediate(session: Session, world: World) -> None:
    gw = _gateway(session, world.a.gateway_id)
    revoke_credential(session, gw.id, world.a.credential_id)
    with pytest.raises(AuthError):
        authenticate_gateway(session, gw.id, world.a.gateway_secret)
    with pytest.raises(NotFound):  # a credential of another gateway
        revoke_credential(session, gw.id, world.b.credential_id)


def test_a_secret_only_authenticates_its_own_gateway(session: Session, world: World) -> None:
    assert authenticate_gateway(session, world.a.gateway_id, world.a.gateway_secret).id == (
        world.a.gateway_id
    )
    for gateway_id, secret in [
        (world.b.gateway_id, world.a.gateway_secret),
        (world.a.gateway_id, "ewg_wrong"),
        ("gw-unknown", world.a.gateway_secret),
    ]:
        with pytest.raises(AuthError, match="invalid gateway credentials"):
            authenticate_gateway(session, gateway_id, secret)


# ---- Mosquitto files ------------------------------------------------------------------------


def test_files_list_every_active_credential_with_its_own_topics(
    session: Session, world: World
) -> None:
    gw = _gateway(session, world.a.gateway_id)
    t0 = datetime.now(UTC)
    issue_credential(session, gw, grace_s=3600, now=t0)
    revoke_credential(session, world.b.gateway_id, world.b.credential_id)
    ingest = ServiceAccount.ingest("_ingest", "ingest-password")
    files = mosquitto_files(session, [ingest], now=t0 + timedelta(minutes=1))
    users = [line.split(":", 1)[0] for line in files.password_file.splitlines()]
    assert users == ["_ingest", "gw-alpha", "gw-alpha@2"]  # bravo's only one is revoked
    assert files.gateway_usernames == 2
    acl = files.acl_file
    assert "user gw-alpha@2\ntopic write edgewatch/v1/gw-alpha/up\n" in acl
    assert "topic read edgewatch/v1/gw-alpha/down/#" in acl
    assert "gw-bravo" not in acl
    assert "user _ingest\ntopic read edgewatch/v1/+/up\ntopic read edgewatch/v1/+/status\n" in acl
    assert "pattern" not in acl
    later = mosquitto_files(session, [], now=t0 + timedelta(hours=2))
    assert [ln.split(":")[0] for ln in later.password_file.splitlines()] == ["gw-alpha@2"]


def test_service_account_names_cannot_be_gateway_ids() -> None:
    with pytest.raises(InvalidInput, match="must start with '_'"):
        ServiceAccount.ingest("ingest", "pw")
    with pytest.raises(Conflict, match="twice"):
        render_files(
            [GatewayLogin("gw-1", "gw-1", "$7$x"), GatewayLogin("gw-1", "gw-1", "$7$y")], []
        )


def test_files_are_written_atomically_with_private_password_file(tmp_path: Path) -> None:
    files = render_files([GatewayLogin("gw-1", "gw-1", mosquitto_hash("s"))], [])
    pw, acl = tmp_path / "pw", tmp_path / "acl"
    write_files(files, pw, acl)
    assert pw.stat().st_mode & 0o777 == 0o600
    assert pw.read_text() == files.password_file
    pw.chmod(0o640)
    write_files(files, pw, acl)
    assert pw.stat().st_mode & 0o777 == 0o640  # an operator's mode survives regeneration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acl", "pw"]  # no temporary left


def test_revoked_and_expired_credentials_are_not_in_the_files(
    session: Session, world: World
) -> None:
    now = datetime.now(UTC)
    for c in session.scalars(select(GatewayCredential)):
        c.expires_at = now - timedelta(seconds=1)
    files = mosquitto_files(session, [], now=now)
    assert files.password_file == "" and files.gateway_usernames == 0
