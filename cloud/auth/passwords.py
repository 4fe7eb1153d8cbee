"""Secret hashing: user passwords (scrypt), Mosquitto's password-file format, lookup digests.

- User passwords: ``hashlib.scrypt`` with a random 16-byte salt per password, stored as
  ``scrypt$<n>$<r>$<p>$<base64 salt>$<base64 key>`` so the cost can be raised later
  without breaking stored hashes; verified in constant time.
- Random secrets (API keys, gateway secrets) carry 256 bits of entropy: a SHA-256 digest
  is enough to store them, and lets the secret itself be the lookup key.
- Mosquitto 2 password files: ``$7$<iterations>$<base64 salt>$<base64 hash>``, the hash
  being PBKDF2-HMAC-SHA512 (64 bytes) of the password with a 12-byte salt, exactly what
  ``mosquitto_passwd`` writes (``src/password_mosq.c`` of Mosquitto 2.0; checked against
  the 2.0.11 binary in ``tests/unit/cloud/test_auth.py``). 101 iterations is
  ``mosquitto_passwd``'s default; more would only slow the broker's connects, since the
  secrets hashed here are random 256-bit values, not guessable passwords.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SCRYPT_DKLEN: Final = 32
SALT_BYTES: Final = 16
MIN_PASSWORD_LENGTH: Final = 10
MAX_PASSWORD_LENGTH: Final = 1024

MOSQUITTO_ITERATIONS: Final = 101
MOSQUITTO_SALT_BYTES: Final = 12

_DUMMY_SALT: Final = b"edgewatch-dummy!"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=64 << 20
    )


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` (see the module docstring for the format)."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(
            f"a password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return "$".join(
        [
            "scrypt",
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(key).decode("ascii"),
        ]
    )


def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored``; constant time in the key comparison.

    With ``stored`` None (a user without a password, or no such user) a hash is still
    computed, so the answer takes as long as for a real user."""
    if stored is None or len(password) > MAX_PASSWORD_LENGTH:
        _scrypt(password[:MAX_PASSWORD_LENGTH], _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)
        return False
    try:
        scheme, n_s, r_s, p_s, salt_b64, key_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(key_b64, validate=True)
        n, r, p = int(n_s), int(r_s), int(p_s)
    except (ValueError, binascii.Error):
        return False
    actual = _scrypt(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


def sha256_hex(secret: str) -> str:
    """The lookup digest of a random secret (API key, gateway secret)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS
) -> str:
    """``password`` in Mosquitto 2's password-file format (``$7$``, PBKDF2-SHA512)."""
    salt = secrets.token_bytes(MOSQUITTO_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (
        f"$7${iterations}${base64.b64encode(salt).decode('ascii')}"
        f"${base64.b64encode(digest).decode('ascii')}"
    )


def verify_mosquitto_hash(password: str, stored: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (as the broker would decide)."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(actual, expected)
