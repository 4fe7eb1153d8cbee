"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec and reference
libraries in github.com/standard-webhooks/standard-webhooks).

A secret is ``whsec_`` followed by the base64 of 24 to 64 random bytes; those bytes are
the HMAC key. A message is signed as

    webhook-id:        <msg id>          (stable across retries of one message)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64(HMAC-SHA256(key, f"{msg id}.{timestamp}.{body}"))>

over the exact body bytes. ``webhook-signature`` may hold several space-separated
entries (a sender signing with an old and a new secret during a rotation); a message is
authentic when one ``v1`` entry matches (entries of other versions are skipped). The
receiver refuses timestamps further than ``tolerance_s`` (5 minutes) from its clock, in
either direction, which bounds replays; deduplicating by ``webhook-id`` is the caller's.

Every refusal is a :class:`SignatureError` (an :class:`~cloud.errors.InvalidInput`) whose
``where`` names the header or the secret at fault and whose ``why`` says what was wrong;
it never quotes the secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Final

from cloud.errors import InvalidInput

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the prefix, not a secret
MIN_KEY_BYTES: Final = 24
MAX_KEY_BYTES: Final = 64
NEW_KEY_BYTES: Final = 32
TOLERANCE_S: Final = 300
ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"


class SignatureError(InvalidInput):
    """A message is not authentic, or a secret is unusable (``where`` says which)."""


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_KEY_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; :class:`SignatureError` if it is none."""
    if not secret.startswith(SECRET_PREFIX):
        raise SignatureError("secret", f"expected {SECRET_PREFIX}<base64>")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Unpadded base64 is accepted, as the reference libraries do.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise SignatureError("secret", f"the part after {SECRET_PREFIX} is not base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SignatureError(
            "secret", f"{len(key)} key bytes; expected {MIN_KEY_BYTES} to {MAX_KEY_BYTES}"
        )
    return key


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of ``body`` sent as ``msg_id`` at
    ``timestamp`` (unix seconds)."""
    digest = _digest(secret_key(secret), msg_id, timestamp, _as_bytes(body))
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> dict[str, str]:
    """The three Standard Webhooks headers of one message."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, msg_id, timestamp, body),
    }


def _epoch(now: datetime | float) -> float:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.timestamp()
    return float(now)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    now: datetime | float,
    tolerance_s: float = TOLERANCE_S,
) -> str:
    """Check a received message; return its ``webhook-id``.

    ``headers`` may use any case (a plain dict or Starlette's ``Headers``); ``now`` is a
    timezone-aware datetime or unix seconds. Raises :class:`SignatureError`.
    """
    key = secret_key(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        if not lowered.get(name, "").strip():
            raise SignatureError(name, "missing or empty")
    msg_id = lowered[ID_HEADER].strip()
    raw_timestamp = lowered[TIMESTAMP_HEADER].strip()
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit():
        raise SignatureError(TIMESTAMP_HEADER, f"{raw_timestamp[:20]!r} is not unix seconds")
    timestamp = int(raw_timestamp)
    skew = timestamp - _epoch(now)
    if abs(skew) > tolerance_s:
        direction = "ahead of" if skew > 0 else "behind"
        raise SignatureError(
            TIMESTAMP_HEADER,
            f"{abs(skew):.0f} s {direction} this clock; tolerance is {tolerance_s:.0f} s",
        )
    expected = _digest(key, msg_id, timestamp, _as_bytes(body))
    checked = 0
    for entry in lowered[SIGNATURE_HEADER].split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        checked += 1
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(candidate, expected):
            return msg_id
    if checked == 0:
        raise SignatureError(SIGNATURE_HEADER, "no v1 signature in the header")
    raise SignatureError(
        SIGNATURE_HEADER, f"none of {checked} v1 signature(s) matches the body and secret"
    )
