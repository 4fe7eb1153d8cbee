"""Gateway credentials: issue, rotate, revoke, authenticate.

A gateway authenticates with one secret on both uplinks: as its MQTT password (with the
credential's MQTT username) and as the HTTPS uplink's bearer token. The secret is
``ewg_`` plus 32 random bytes (base64url), shown once when issued; the registry keeps its
SHA-256 (the HTTPS lookup key) and its Mosquitto ``$7$`` hash (for the broker's password
file, :mod:`cloud.auth.mosquitto`).

Rotation issues a new credential and gives every credential still valid an expiry
``grace_s`` from now (settings ``gateway_credential_grace_s``, 24 h by default), the time
the gateway has to pick the new one up; revocation ends one at once. A credential is
*active* while it is neither revoked nor past its expiry. The broker learns of a change
when its files are regenerated and it reloads them (SIGHUP); Mosquitto 2 then checks its
connected clients again and disconnects those whose credential is gone
(``tests/integration/cloud/test_mosquitto_acl.py``). Regenerate the files on a schedule
too (e.g. hourly): an expiry is a point in time, not an event anything is told about.

These functions carry no role rules; :mod:`cloud.registry.services` checks who may call
them.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from cloud.auth.passwords import mosquitto_hash, sha256_hex
from cloud.db import flush
from cloud.errors import AuthError, NotFound
from cloud.registry.models import Gateway, GatewayCredential

log = logging.getLogger(__name__)

GATEWAY_SECRET_PREFIX: Final = "ewg_"  # noqa: S105 - a prefix, not a secret
GATEWAY_SECRET_BYTES: Final = 32
USERNAME_SEPARATOR: Final = "@"
"""Between the gateway id and the credential's number in later MQTT usernames; not allowed
in gateway ids (``edge_agent.protocol.IDENT_RE``), so no gateway can own such a name."""

_SUFFIX_RE = re.compile(r"@([0-9]+)$")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    credential: GatewayCredential
    secret: str
    """The secret; shown once, never stored."""

    @property
    def username(self) -> str:
        return self.credential.mqtt_username


def is_active(credential: GatewayCredential, now: datetime) -> bool:
    return credential.revoked_at is None and (
        credential.expires_at is None or credential.expires_at > now
    )


def active_clause(now: datetime) -> ColumnElement[bool]:
    """SQL condition: the credential is active at ``now``."""
    return (GatewayCredential.revoked_at.is_(None)) & or_(
        GatewayCredential.expires_at.is_(None), GatewayCredential.expires_at > now
    )


def _next_username(session: Session, gateway_id: str) -> str:
    names = session.scalars(
        select(GatewayCredential.mqtt_username).where(GatewayCredential.gateway_id == gateway_id)
    ).all()
    if not names:
        return gateway_id
    numbers = [int(m.group(1)) for n in names if (m := _SUFFIX_RE.search(n))]
    return f"{gateway_id}{USERNAME_SEPARATOR}{max(numbers, default=1) + 1}"


def issue_credential(
    session: Session, gateway: Gateway, *, grace_s: int, now: datetime | None = None
) -> IssuedCredential:
    """A new credential for ``gateway``; every credential still active expires ``grace_s``
    from now at the latest (see the module docstring)."""
    at = _now(now)
    deadline = at + timedelta(seconds=grace_s)
    for old in session.scalars(
        select(GatewayCredential).where(
            GatewayCredential.gateway_id == gateway.id, active_clause(at)
        )
    ):
        if old.expires_at is None or old.expires_at > deadline:
            old.expires_at = deadline
    secret = GATEWAY_SECRET_PREFIX + secrets.token_urlsafe(GATEWAY_SECRET_BYTES)
    credential = GatewayCredential(
        gateway_id=gateway.id,
        mqtt_username=_next_username(session, gateway.id),
        secret_sha256=sha256_hex(secret),
        mosquitto_hash=mosquitto_hash(secret),
        created_at=at,
    )
    session.add(credential)
    flush(session)
    log.info(
        "gateway %s: issued credential %s (MQTT user %s); older ones expire by %s",
        gateway.id,
        credential.id,
        credential.mqtt_username,
        deadline.isoformat(),
    )
    return IssuedCredential(credential=credential, secret=secret)


def revoke_credential(
    session: Session, gateway_id: str, credential_id: str, *, now: datetime | None = None
) -> GatewayCredential:
    """End one credential of ``gateway_id`` now (idempotent); :class:`NotFound` otherwise."""
    credential = session.scalar(
        select(GatewayCredential).where(
            GatewayCredential.id == credential_id, GatewayCredential.gateway_id == gateway_id
        )
    )
    if credential is None:
        raise NotFound(f"credential {credential_id} of gateway {gateway_id} not found")
    if credential.revoked_at is None:
        credential.revoked_at = _now(now)
        flush(session)
        log.info("gateway %s: revoked credential %s", gateway_id, credential_id)
    return credential


def list_credentials(session: Session, gateway_id: str) -> list[GatewayCredential]:
    """All credentials of a gateway, newest first (secrets are never part of them)."""
    return list(
        session.scalars(
            select(GatewayCredential)
            .where(GatewayCredential.gateway_id == gateway_id)
            .order_by(GatewayCredential.created_at.desc(), GatewayCredential.mqtt_username)
        )
    )


def active_credentials(session: Session, *, now: datetime | None = None) -> list[GatewayCredential]:
    """Every active credential of every gateway, by username (the broker's files)."""
    return list(
        session.scalars(
            select(GatewayCredential)
            .where(active_clause(_now(now)))
            .order_by(GatewayCredential.gateway_id, GatewayCredential.mqtt_username)
        )
    )


def authenticate_gateway(
    session: Session, gateway_id: str, secret: str, *, now: datetime | None = None
) -> Gateway:
    """The gateway whose active credential ``secret`` is (the HTTPS uplink's bearer check).

    :class:`AuthError` for an unknown, expired or revoked secret or one of another gateway
    (one message for all: the caller learns nothing about other gateways)."""
    at = _now(now)
    digest = sha256_hex(secret)
    row = session.execute(
        select(GatewayCredential, Gateway)
        .join(Gateway, GatewayCredential.gateway_id == Gateway.id)
        .where(GatewayCredential.secret_sha256 == digest)
    ).first()
    if row is None:
        raise AuthError("invalid gateway credentials")
    credential, gateway = row
    if (
        not hmac.compare_digest(credential.secret_sha256, digest)
        or gateway.id != gateway_id
        or not is_active(credential, at)
    ):
        raise AuthError("invalid gateway credentials")
    return gateway
