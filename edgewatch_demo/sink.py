"""A local service desk for the demo: receives the work orders' signed webhooks.

It checks every message's Standard Webhooks signature against the desks' secrets (an
unsigned or forged post gets 401), keeps one ticket per work order (a retried message,
same ``webhook-id``, changes nothing), appends later events to the ticket, and answers
the ticket's id so the cloud records it. What it received is kept in memory and, one JSON
object per line, in ``tickets.jsonl``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloud.desk.signing import SignatureError, verify

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20


@dataclass
class DemoTicket:
    ref: str
    order_id: str
    number: str
    device: str
    fault: str
    priority: int
    received_at: float
    """Wall time of the create."""
    events: list[str] = field(default_factory=list)


class WebhookSink:
    """A threaded HTTP server on ``127.0.0.1``; :attr:`url` once started."""

    def __init__(self, secrets: Sequence[str], journal: Path) -> None:
        self.secrets = list(secrets)
        self.journal = journal
        self.tickets: dict[str, DemoTicket] = {}
        """By work order id."""
        self.seen: set[str] = set()
        self.refused = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-sink", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/tickets"

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _verify(self, headers: dict[str, str], body: bytes) -> str:
        error: SignatureError | None = None
        for secret in self.secrets:
            try:
                return verify(secret, headers, body, time.time())
            except SignatureError as exc:
                error = exc
        raise error or SignatureError("webhook-signature", "no desk secret to check it with")

    def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """One post: (HTTP status, JSON answer)."""
        try:
            message_id = self._verify(headers, body)
            message = json.loads(body)
            data = message["data"]
            order_id, event = str(data["id"]), str(data["event"])
        except SignatureError as exc:
            self.refused += 1
            return 401, {"error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            self.refused += 1
            return 400, {"error": f"not a work-order message: {exc}"}
        with self._lock:
            ticket = self.tickets.get(order_id)
            if message_id not in self.seen:
                self.seen.add(message_id)
                if ticket is None:
                    ticket = DemoTicket(
                        ref=f"DEMO-{len(self.tickets) + 1:04d}",
                        order_id=order_id,
                        number=str(data.get("number", "")),
                        device=str(data.get("device", {}).get("name", "")),
                        fault=str(data.get("fault", "")),
                        priority=int(data.get("priority", 0)),
                        received_at=time.time(),
                    )
                    self.tickets[order_id] = ticket
                ticket.events.append(event)
                with self.journal.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"ticket": ticket.ref, "id": message_id, **message}))
                    f.write("\n")
            if ticket is None:  # a replay of a message for an order we never saw created
                return 200, {}
            return 200, {"external_id": ticket.ref, "external_ref": ticket.ref}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if not 0 < length <= MAX_BODY:
                    status, answer = 400, {"error": f"content-length {length}"}
                else:
                    body = self.rfile.read(length)
                    status, answer = sink.receive(dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("sink: " + format, *args)

        return Handler
