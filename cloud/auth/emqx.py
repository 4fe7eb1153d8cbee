"""EMQX 5 HTTP authentication: the MQTT cluster asks EdgeWatch about each login and gets
the client's ACL with the answer, so gateway accounts never have to be copied into it.

EMQX's HTTP authenticator posts the login (``{"username": "${username}", "password":
"${password}"}``, ``deploy/README.md`` has the configuration) and reads ``result``
(``allow``, ``deny`` or ``ignore``), ``is_superuser`` and, from EMQX 5.8, an ``acl`` list
that confines the client for the rest of its connection:

- a gateway credential's MQTT username with its secret, the credential active: ``allow``,
  with that gateway's rules (:mod:`cloud.auth.broker`), and ``expire_at`` when the
  credential has an expiry (the old one during a rotation): EMQX disconnects it then;
- the ingest account (settings ``mqtt_username`` / ``mqtt_password``): ``allow`` with the
  ingest rules, also in their shared-subscription form ``$share/<group>/...``;
- a known username with another secret, or an expired or revoked credential: ``deny``;
- a username EdgeWatch does not know: ``ignore`` (EMQX asks its next authenticator, e.g.
  its built-in database for operators' accounts; with none it refuses the login).

Every ACL ends in deny-all rules (:data:`DENY_ALL`): EMQX's rules from an authentication
answer fall through to its other authorizers when none matches, and a gateway must match
nothing else.
Nobody is a superuser.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.auth.broker import TopicRule, gateway_rules, ingest_rules
from cloud.auth.gateways import is_active
from cloud.auth.passwords import sha256_hex
from cloud.registry.models import GatewayCredential

Result = Literal["allow", "deny", "ignore"]
DENY_ALL = ("#", "$SYS/#", "$share/#", "$queue/#")
"""The filters of the deny-all rules that close every ACL."""


@dataclass(frozen=True, slots=True)
class IngestAccount:
    """The ingest workers' broker account, as the cloud's settings name it."""

    username: str
    password: str
    share_group: str


def emqx_acl(rules: Iterable[TopicRule]) -> list[dict[str, Any]]:
    """EMQX's new-format ACL (EMQX ≥ 5.5) for ``rules``, closed by a deny-all."""
    acl: list[dict[str, Any]] = [
        {
            "permission": "allow",
            "action": "publish" if r.access == "write" else "subscribe",
            "topic": r.topic,
        }
        for r in rules
    ]
    # "#" does not match topics that start with "$" (MQTT 4.7.2): those are closed apart.
    acl += [{"permission": "deny", "action": "all", "topic": t} for t in DENY_ALL]
    return acl


def _shared(rules: list[TopicRule], group: str) -> list[TopicRule]:
    return rules + [
        TopicRule("read", f"$share/{group}/{r.topic}") for r in rules if r.access == "read"
    ]


def authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    ingest: IngestAccount | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """EMQX's answer to the login ``username`` / ``password`` (see the module docstring)."""
    if ingest is not None and username == ingest.username:
        if hmac.compare_digest(password.encode(), ingest.password.encode()):
            return _allow(_shared(ingest_rules(), ingest.share_group))
        return {"result": "deny"}
    credential = session.scalar(
        select(GatewayCredential).where(GatewayCredential.mqtt_username == username)
    )
    if credential is None:
        return {"result": "ignore"}
    if not hmac.compare_digest(credential.secret_sha256, sha256_hex(password)) or not is_active(
        credential, now or datetime.now(UTC)
    ):
        return {"result": "deny"}
    answer = _allow(gateway_rules(credential.gateway_id))
    if credential.expires_at is not None:  # EMQX disconnects the client then (5.8+)
        answer["expire_at"] = math.ceil(_aware(credential.expires_at).timestamp())
    return answer


def _allow(rules: list[TopicRule]) -> dict[str, Any]:
    return {"result": "allow", "is_superuser": False, "acl": emqx_acl(rules)}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
