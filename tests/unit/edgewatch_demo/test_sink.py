"""The demo's service desk: signed webhooks in, one ticket per work order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.desk.signing import new_secret, signed_headers
from edgewatch_demo.sink import WebhookSink

SECRET = new_secret()


def message(order: str, event: str) -> bytes:
    data = {"id": order, "number": "WO-7", "event": event, "fault": "refrigerant_leak",
            "priority": 2, "device": {"name": "cc-dxb-01"}}  # fmt: skip
    return json.dumps({"type": f"work_order.{event}", "data": data}).encode()


def post(
    sink: WebhookSink, body: bytes, msg_id: str, secret: str = SECRET
) -> tuple[int, dict[str, Any]]:
    headers = signed_headers(secret, msg_id, int(time.time()), body)
    r = httpx.post(sink.url, content=body, headers=headers, timeout=5)
    return r.status_code, r.json()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[WebhookSink]:
    s = WebhookSink([new_secret(), SECRET], tmp_path / "tickets.jsonl").start()
    yield s
    s.stop()


def test_an_order_becomes_one_ticket_whose_id_is_answered(sink: WebhookSink) -> None:
    status, answer = post(sink, message("o1", "created"), "msg_1")
    assert (status, answer) == (200, {"external_id": "DEMO-0001", "external_ref": "DEMO-0001"})
    ticket = sink.tickets["o1"]
    assert (ticket.device, ticket.fault, ticket.priority, ticket.events) == (
        "cc-dxb-01", "refrigerant_leak", 2, ["created"]
    )  # fmt: skip


def test_a_retried_message_changes_nothing_and_later_events_join_the_ticket(
    sink: WebhookSink, tmp_path: Path
) -> None:
    post(sink, message("o1", "created"), "msg_1")
    assert post(sink, message("o1", "created"), "msg_1")[1]["external_id"] == "DEMO-0001"
    post(sink, message("o1", "updated"), "msg_2")
    post(sink, message("o2", "created"), "msg_3")
    assert sink.tickets["o1"].events == ["created", "updated"]
    assert sink.tickets["o2"].ref == "DEMO-0002"
    lines = (tmp_path / "tickets.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["msg_1", "msg_2", "msg_3"]


def test_a_forged_or_unsigned_post_is_refused(sink: WebhookSink) -> None:
    status, answer = post(sink, message("o1", "created"), "msg_1", secret=new_secret())
    assert status == 401 and "signature" in answer["error"]
    assert httpx.post(sink.url, content=message("o1", "created"), timeout=5).status_code == 401
    assert sink.tickets == {} and sink.refused == 2
