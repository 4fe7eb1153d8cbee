"""User credentials: password login, bearer tokens (JWT HS256) and API keys.

Bearer tokens are JWTs signed with ``settings.secret_key`` (HS256) carrying ``sub`` (the
user id), ``iat`` and ``exp`` (``settings.token_ttl_s`` later). API keys are ``ewk_``
followed by 32 random bytes (base64url); the key is shown once, the registry keeps its
SHA-256 and the first characters (to tell keys apart), and a revoked key stops working
at once. A caller sends either as ``Authorization: Bearer ...``; an API key may also come
as ``X-API-Key: ewk_...``.

Every check ends in :class:`cloud.errors.AuthError` with a message that says what is
wrong with the credential (expired, malformed, revoked) but never echoes it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.auth.passwords import sha256_hex, verify_password
from cloud.auth.principal import Principal
from cloud.db import flush
from cloud.errors import AuthError, InvalidInput, NotFound
from cloud.registry.models import ApiKey, User
from cloud.settings import Settings

log = logging.getLogger(__name__)

JWT_ALGORITHM: Final = "HS256"
JWT_ISSUER: Final = "edgewatch-cloud"
API_KEY_PREFIX: Final = "ewk_"
API_KEY_BYTES: Final = 32
API_KEY_SHOWN_PREFIX: Final = 12
"""Characters of a key kept in clear to tell keys apart (``ewk_`` + 8)."""
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


# ---- passwords ---------------------------------------------------------------------------


def authenticate_password(session: Session, email: str, password: str) -> User:
    """The active user with ``email`` whose password is ``password``; :class:`AuthError`
    otherwise (the same message whether the user, the password or the account is wrong)."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    ok = verify_password(password, user.password_hash if user is not None else None)
    if user is None or not ok or not user.active:
        raise AuthError("incorrect email or password")
    return user


# ---- bearer tokens -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type


def issue_token(settings: Settings, user: User, *, now: datetime | None = None) -> IssuedToken:
    """A signed bearer token for ``user``, valid ``settings.token_ttl_s`` seconds."""
    issued = _now(now)
    payload = {
        "sub": user.id,
        "iss": JWT_ISSUER,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=settings.token_ttl_s)).timestamp()),
    }
    token = jwt.encode(payload, settings.secret_key.get_secret_value(), algorithm=JWT_ALGORITHM)
    return IssuedToken(access_token=token, expires_in=settings.token_ttl_s)


def token_subject(settings: Settings, token: str, *, now: datetime | None = None) -> str:
    """The user id a valid token names; :class:`AuthError` for an expired, tampered or
    malformed token."""
    options: dict[str, object] = {"require": ["exp", "iat", "sub", "iss"]}
    try:
        claims = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[JWT_ALGORITHM],
            issuer=JWT_ISSUER,
            options=options,  # type: ignore[arg-type]
            leeway=0,
        )
        if now is not None and claims["exp"] <= int(now.timestamp()):
            raise jwt.ExpiredSignatureError("Signature has expired")
    except jwt.ExpiredSignatureError:
        raise AuthError("the bearer token has expired") from None
    except jwt.InvalidTokenError:
        raise AuthError("the bearer token is not valid") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("the bearer token is not valid")
    return sub


def principal_from_token(
    session: Session, settings: Settings, token: str, *, now: datetime | None = None
) -> Principal:
    user = session.get(User, token_subject(settings, token, now=now))
    if user is None or not user.active:
        raise AuthError("the bearer token's user does not exist or is disabled")
    return Principal.of(user)


# ---- API keys ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    key: ApiKey
    secret: str
    """The whole key; shown once, never stored."""


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def create_api_key(session: Session, principal: Principal, name: str) -> IssuedApiKey:
    """A new API key of the calling user."""
    if principal.user_id is None:
        raise InvalidInput("user", "API keys belong to a user; the command line has none")
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidInput("name", "1 to 200 characters")
    secret = API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_BYTES)
    key = ApiKey(
        user_id=principal.user_id,
        name=name,
        prefix=secret[:API_KEY_SHOWN_PREFIX],
        secret_sha256=sha256_hex(secret),
    )
    session.add(key)
    flush(session)
    log.info("user %s created API key %s", principal.user_id, key.id)
    return IssuedApiKey(key=key, secret=secret)


def list_api_keys(session: Session, principal: Principal) -> list[ApiKey]:
    """The calling user's keys, newest first (revoked ones included, marked)."""
    return list(
        session.scalars(
            select(ApiKey)
            .where(ApiKey.user_id == principal.user_id)
            .order_by(ApiKey.created_at.desc(), ApiKey.id)
        )
    )


def revoke_api_key(
    session: Session, principal: Principal, key_id: str, *, now: datetime | None = None
) -> ApiKey:
    """Revoke one of the calling user's keys (idempotent); :class:`NotFound` for a key of
    another user."""
    key = session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == principal.user_id)
    )
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = _now(now)
        flush(session)
        log.info("user %s revoked API key %s", principal.user_id, key.id)
    return key


def principal_from_api_key(
    session: Session, secret: str, *, now: datetime | None = None
) -> Principal:
    """The user an API key belongs to; :class:`AuthError` for an unknown or revoked key or
    a disabled user."""
    if not is_api_key(secret):
        raise AuthError("not an EdgeWatch API key")
    row = session.execute(
        select(ApiKey, User)
        .join(User, ApiKey.user_id == User.id)
        .where(ApiKey.secret_sha256 == sha256_hex(secret))
    ).first()
    if row is None:
        raise AuthError("unknown API key")
    key, user = row
    if key.revoked_at is not None:
        raise AuthError("the API key has been revoked")
    if not user.active:
        raise AuthError("the API key's user is disabled")
    at = _now(now)
    if key.last_used_at is None or at - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = at  # not on every request: a write per call would serialise them
    return Principal.of(user)
