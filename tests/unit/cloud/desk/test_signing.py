"""Standard Webhooks signing and verification: the spec's published vector, then every way
a message can fail, each naming the header (or the secret) at fault."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from cloud.desk.signing import (
    SignatureError,
    new_secret,
    secret_key,
    sign,
    signed_headers,
    verify,
)
from cloud.errors import InvalidInput

# The vector of the reference libraries' tests (standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py, test_sign_function).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - published
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def spec_headers() -> dict[str, str]:
    return {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_the_spec_vector_signs_and_verifies() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.encode()) == SPEC_SIGNATURE
    assert signed_headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == spec_headers()
    assert verify(SPEC_SECRET, spec_headers(), SPEC_BODY, SPEC_TIMESTAMP) == SPEC_ID
    # One byte of the body more, and the spec's signature no longer holds.
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY + " ") != SPEC_SIGNATURE


def _with(**changes: str | None) -> Callable[[dict[str, str]], dict[str, str]]:
    def change(headers: dict[str, str]) -> dict[str, str]:
        out = dict(headers)
        for name, value in changes.items():
            header = name.replace("_", "-")
            if value is None:
                out.pop(header)
            else:
                out[header] = value
        return out

    return change


VALID = SPEC_SIGNATURE
WRONG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="  # the last byte differs


@pytest.mark.parametrize(
    ("change", "body", "now", "where", "why"),
    [
        (_with(webhook_id=None), SPEC_BODY, SPEC_TIMESTAMP, "webhook-id", "missing"),
        (_with(webhook_id=" "), SPEC_BODY, SPEC_TIMESTAMP, "webhook-id", "missing"),
        (_with(webhook_timestamp=None), SPEC_BODY, SPEC_TIMESTAMP, "webhook-timestamp", "missing"),
        (_with(webhook_signature=None), SPEC_BODY, SPEC_TIMESTAMP, "webhook-signature", "missing"),
        (_with(webhook_timestamp="hello"), SPEC_BODY, SPEC_TIMESTAMP, "webhook-timestamp", "unix"),
        (_with(webhook_timestamp="-5"), SPEC_BODY, SPEC_TIMESTAMP, "webhook-timestamp", "unix"),
        (_with(), SPEC_BODY, SPEC_TIMESTAMP + 301, "webhook-timestamp", "301 s behind"),
        (_with(), SPEC_BODY, SPEC_TIMESTAMP - 301, "webhook-timestamp", "301 s ahead"),
        (_with(), SPEC_BODY + " ", SPEC_TIMESTAMP, "webhook-signature", "none of 1"),
        (_with(webhook_id="msg_other"), SPEC_BODY, SPEC_TIMESTAMP, "webhook-signature", "none"),
        (_with(webhook_signature=WRONG), SPEC_BODY, SPEC_TIMESTAMP, "webhook-signature", "none"),
        (
            _with(webhook_signature=f"{WRONG} v1,!!notbase64!!"),
            SPEC_BODY,
            SPEC_TIMESTAMP,
            "webhook-signature",
            "none of 2",
        ),
        (
            _with(webhook_signature=VALID.replace("v1,", "v2,")),
            SPEC_BODY,
            SPEC_TIMESTAMP,
            "webhook-signature",
            "no v1 signature",
        ),
        (
            _with(webhook_signature=VALID.replace(",", "")),
            SPEC_BODY,
            SPEC_TIMESTAMP,
            "webhook-signature",
            "no v1 signature",
        ),
    ],
)
def test_refusals_name_the_header_and_the_reason(
    change: Callable[[dict[str, str]], dict[str, str]],
    body: str,
    now: int,
    where: str,
    why: str,
) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(SPEC_SECRET, change(spec_headers()), body, now)
    assert caught.value.where == where
    assert why in caught.value.why
    assert "MfKQ9r8" not in str(caught.value)  # never the secret


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="none of 1"):
        verify(OTHER_SECRET, spec_headers(), SPEC_BODY, SPEC_TIMESTAMP)


@pytest.mark.parametrize(
    "header",
    [
        f"{WRONG} {VALID}",
        f"{VALID} {WRONG}",
        f"v2,{VALID[3:]} v1a,abc {VALID}",
        f"v1,!!notbase64!! {VALID}",
        f"  {VALID}  ",
    ],
)
def test_one_matching_v1_signature_among_several_is_enough(header: str) -> None:
    headers = {**spec_headers(), "webhook-signature": header}
    assert verify(SPEC_SECRET, headers, SPEC_BODY, SPEC_TIMESTAMP) == SPEC_ID


def test_a_rotation_signs_with_both_secrets() -> None:
    new = new_secret()
    header = f"{sign(SPEC_SECRET, 'm1', 100, 'x')} {sign(new, 'm1', 100, 'x')}"
    headers = {"webhook-id": "m1", "webhook-timestamp": "100", "webhook-signature": header}
    assert verify(SPEC_SECRET, headers, "x", 100) == "m1"
    assert verify(new, headers, "x", 100) == "m1"


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_the_tolerance_is_five_minutes_both_ways(offset: int) -> None:
    assert verify(SPEC_SECRET, spec_headers(), SPEC_BODY, SPEC_TIMESTAMP + offset) == SPEC_ID


def test_a_custom_tolerance() -> None:
    assert verify(SPEC_SECRET, spec_headers(), SPEC_BODY, SPEC_TIMESTAMP + 900, 900) == SPEC_ID
    with pytest.raises(SignatureError, match="tolerance is 10 s"):
        verify(SPEC_SECRET, spec_headers(), SPEC_BODY, SPEC_TIMESTAMP + 11, 10)


def test_header_names_in_any_case_and_now_as_a_datetime() -> None:
    headers = {name.title(): value for name, value in spec_headers().items()}
    now = datetime.fromtimestamp(SPEC_TIMESTAMP + 10, UTC)
    assert verify(SPEC_SECRET, headers, SPEC_BODY.encode(), now) == SPEC_ID
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(SPEC_SECRET, headers, SPEC_BODY, now.replace(tzinfo=None))


def test_a_non_ascii_body_is_signed_as_utf8() -> None:
    body = '{"note": "Kältemittel ☃"}'
    headers = signed_headers(SPEC_SECRET, "m", 5, body)
    assert verify(SPEC_SECRET, headers, body.encode("utf-8"), 5) == "m"
    with pytest.raises(SignatureError):
        verify(SPEC_SECRET, headers, body.encode("utf-16"), 5)


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "expected whsec_"),
        ("whsec_", "0 key bytes"),
        ("whsec_not*base64", "not base64"),
        ("whsec_" + base64.b64encode(bytes(16)).decode(), "16 key bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "65 key bytes"),
    ],
)
def test_unusable_secrets(secret: str, why: str) -> None:
    with pytest.raises(SignatureError) as caught:
        secret_key(secret)
    assert caught.value.where == "secret"
    assert why in caught.value.why
    with pytest.raises(InvalidInput):  # SignatureError is an InvalidInput (→ 422/401 upstream)
        sign(secret, "m", 1, "x")


def test_unpadded_base64_secrets_are_accepted() -> None:
    padded = "whsec_" + base64.b64encode(bytes(range(25))).decode()
    assert padded.endswith("=")
    assert secret_key(padded.rstrip("=")) == secret_key(padded) == bytes(range(25))


def test_new_secrets_are_random_32_byte_keys() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(secret_key(first)) == 32
    headers = signed_headers(first, "m", 7, b"body")
    assert verify(first, headers, b"body", 7) == "m"
    with pytest.raises(SignatureError):
        verify(second, headers, b"body", 7)
