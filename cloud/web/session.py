"""Browser sessions of the dashboard: cookie names, CSRF tokens, flash messages, redirects.

Pure functions; the routes (:mod:`cloud.web.routes`) set and read the cookies.

Session
    The session cookie (:data:`SESSION_COOKIE`) holds a bearer token from
    :func:`cloud.auth.tokens.issue_token`: the API's token, with the API's expiry, checked
    on every request by :func:`cloud.auth.tokens.principal_from_token` exactly as a bearer
    header is. It is ``HttpOnly`` (no script reads it), ``SameSite=Lax`` (no cross-site
    POST carries it), limited to the dashboard's path and ``Secure`` over HTTPS.

CSRF
    Every POST form carries :func:`csrf_token`: an HMAC-SHA256, under the service's secret
    key, of the session token; a POST whose token does not match its session cookie is
    refused (:class:`~cloud.web.errors.CsrfRefused`). Nothing is stored on the server, and
    the token changes with every login. The login form, which has no session yet, is
    bound the same way to a random nonce in a ``SameSite=Strict`` cookie set with the form
    (:func:`login_token`): a form posted from another site carries neither.

Flash
    A one-line outcome shown on the page a POST redirects to ("WO-000042 approved"), kept
    in a short-lived cookie signed with the same key (:func:`encode_flash`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Final, Literal

SESSION_COOKIE: Final = "ew_session"
LOGIN_COOKIE: Final = "ew_login"
FLASH_COOKIE: Final = "ew_flash"
CSRF_FIELD: Final = "csrf_token"
LOGIN_NONCE_TTL_S: Final = 3600
FLASH_TTL_S: Final = 60
MAX_NEXT_LENGTH: Final = 2000
MAX_FLASH_LENGTH: Final = 500


def _mac(secret: str, purpose: str, value: str) -> str:
    """An HMAC-SHA256 of ``value`` for one ``purpose`` (domain-separated), hex."""
    message = f"edgewatch-web\0{purpose}\0{value}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _equal(expected: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(expected.encode(), (sent or "").encode())


# ---- CSRF ------------------------------------------------------------------------------------


def csrf_token(secret: str, session_token: str) -> str:
    """The CSRF token of the session whose cookie holds ``session_token``."""
    return _mac(secret, "csrf", session_token)


def csrf_valid(secret: str, session_token: str, sent: str | None) -> bool:
    return _equal(csrf_token(secret, session_token), sent)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_token(secret: str, nonce: str) -> str:
    """The login form's CSRF token for the nonce in its cookie."""
    return _mac(secret, "login", nonce)


def login_token_valid(secret: str, nonce: str | None, sent: str | None) -> bool:
    return bool(nonce) and _equal(login_token(secret, nonce or ""), sent)


# ---- flash messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flash:
    kind: Literal["ok", "error"]
    text: str


def encode_flash(secret: str, flash: Flash) -> str:
    raw = json.dumps({"k": flash.kind, "t": flash.text[:MAX_FLASH_LENGTH]}, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    return f"{payload}.{_mac(secret, 'flash', payload)}"


def decode_flash(secret: str, value: str | None) -> Flash | None:
    """The flash in a cookie value, or None when it is missing, malformed or not ours."""
    if not value or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    if not _equal(_mac(secret, "flash", payload), mac):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict) or data.get("k") not in ("ok", "error"):
        return None
    text = data.get("t")
    if not isinstance(text, str):
        return None
    return Flash("ok" if data["k"] == "ok" else "error", text)


# ---- redirects --------------------------------------------------------------------------------


def safe_next(value: str | None, prefix: str, default: str) -> str:
    """``value`` when it is a path of the dashboard (``prefix`` or below it, no scheme, no
    host, no ``//`` or backslash); ``default`` otherwise. Keeps the login form and the
    POST forms from redirecting anywhere else (no open redirect)."""
    if not value or len(value) > MAX_NEXT_LENGTH:
        return default
    if any(ord(c) < 0x20 or c == "\\" for c in value) or "//" in value:
        return default
    if (
        value != prefix
        and not value.startswith(prefix + "/")
        and not value.startswith(prefix + "?")
    ):
        return default
    return value
