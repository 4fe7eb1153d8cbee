"""Who may use which MQTT topic: the one definition every broker's configuration renders.

A gateway username may publish its own ``up`` and ``status`` topics (its last will too) and
subscribe to its own ``ack`` and ``down/#``; an ingest account subscribes to every
gateway's ``up`` and ``status`` and publishes every ``ack`` and ``down/#``. Mosquitto gets
these as ``acl_file`` blocks (:mod:`cloud.auth.mosquitto`), EMQX in its HTTP
authentication answer (:mod:`cloud.auth.emqx`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.protocol import TOPIC_ROOT, ack_topic, status_topic, up_topic


@dataclass(frozen=True, slots=True)
class TopicRule:
    """``access`` (``write``: publish, ``read``: subscribe) to ``topic`` (a filter)."""

    access: Literal["read", "write"]
    topic: str


def gateway_rules(gateway_id: str) -> list[TopicRule]:
    """What confines one gateway to its own subtree."""
    return [
        TopicRule("write", up_topic(gateway_id)),
        TopicRule("write", status_topic(gateway_id)),
        TopicRule("read", ack_topic(gateway_id)),
        TopicRule("read", f"{TOPIC_ROOT}/{gateway_id}/down/#"),
    ]


def ingest_rules() -> list[TopicRule]:
    """An ingest account's: every gateway's uplink in, acks and commands out."""
    return [
        TopicRule("read", f"{TOPIC_ROOT}/+/up"),
        TopicRule("read", f"{TOPIC_ROOT}/+/status"),
        TopicRule("write", f"{TOPIC_ROOT}/+/ack"),
        TopicRule("write", f"{TOPIC_ROOT}/+/down/#"),
    ]
