"""The HTTPS uplink, for sites where MQTT is blocked (standard library only).

Each batch is one ``POST {url}/v1/gateways/{gateway_id}/batches`` with the batch bytes as
the body, ``Content-Type: application/vnd.edgewatch.batch`` and ``Authorization: Bearer
<token>`` (the token read from ``token_file``, never logged); a ``200`` answer's body is
the :class:`~edge_agent.protocol.Ack`. One worker thread sends the queued batches in order
over one persistent connection (HTTP/1.1 keep-alive).

Connected or not: HTTP has no session, so the uplink counts as connected until a request
fails at the transport level, or the server answers 401, 403, 429 or 5xx. Then it is down:
queued batches are dropped (the forwarder resends every unacked batch after a reconnect),
and the worker retries the failed batch with exponential backoff (``retry_min_s`` ..
``retry_max_s``) until the server takes it, which makes it connected again.
Other 4xx answers (400, 413) refuse that one batch: it is logged and dropped, and the
forwarder resends it when its ack does not come.

``http://`` URLs are accepted for tests on loopback; anything else should be ``https://``.
Downlink over HTTPS (polling) is not implemented: config and model updates and
"poll now" reach HTTPS-only gateways by a later change.
"""

from __future__ import annotations

import http.client
import logging
import queue
import ssl
import threading
import urllib.parse
from pathlib import Path

from edge_agent.config import HttpsSettings
from edge_agent.errors import ProtocolError, UplinkError
from edge_agent.protocol import BATCH_CONTENT_TYPE, IDENT_RE, decode_ack
from edge_agent.uplink import Uplink, read_secret, resolve

logger = logging.getLogger(__name__)

_DOWN_STATUSES = frozenset({401, 403, 408, 429})

_Item = tuple[bytes, int, int]


class HttpsUplink(Uplink):
    """Batches as HTTPS POSTs (see the module docstring)."""

    def __init__(
        self,
        gateway_id: str,
        settings: HttpsSettings,
        base_dir: Path | None = None,
        *,
        queue_size: int = 16,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        if not IDENT_RE.match(gateway_id):
            raise UplinkError(f"gateway id {gateway_id!r} is not a valid id")
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise UplinkError(f"uplink url {settings.url!r} is not an https:// URL")
        self.gateway_id = gateway_id
        self._settings = settings
        self._base_dir = base_dir
        self._scheme = url.scheme
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._path = f"{url.path.rstrip('/')}/v1/gateways/{gateway_id}/batches"
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._retry = (retry_min_s, retry_max_s)
        self._connected = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._headers: dict[str, str] = {}
        self._context: ssl.SSLContext | None = None
        self._failures = 0
        self.counters = {"posted": 0, "acks": 0, "bad_acks": 0, "refused": 0, "failures": 0}
        """Counters since start: batches posted and answered 200, acks decoded, answers
        that did not decode, batches refused (4xx), transport or server failures."""

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise UplinkError("HttpsUplink.start() was already called")
        s = self._settings
        self._headers = {"Content-Type": BATCH_CONTENT_TYPE, "Accept": "application/json"}
        if s.token_file is not None:
            token = read_secret(s.token_file, self._base_dir, "uplink token")
            self._headers["Authorization"] = f"Bearer {token}"
        if self._scheme == "https":
            try:
                self._context = ssl.create_default_context(
                    cafile=resolve(s.ca_file, self._base_dir)
                )
            except (OSError, ssl.SSLError) as exc:
                raise UplinkError(f"uplink CA file {s.ca_file}: {exc}") from None
        self._stopping.clear()
        self._connected = True
        self._thread = threading.Thread(
            target=self._run, name=f"edgewatch-https-{self.gateway_id}", daemon=True
        )
        self._thread.start()
        logger.info("HTTPS uplink to %s://%s:%d starting", self._scheme, self._host, self._port)

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        thread.join(self._settings.timeout_s + 5.0)
        self._thread = None
        self._connected = False
        self._close()

    @property
    def connected(self) -> bool:
        return self._connected and not self._stopping.is_set()

    def send(self, payload: bytes, first_seq: int, last_seq: int) -> None:
        if not self.connected:
            raise UplinkError("HTTPS uplink is down (the last request failed)")
        try:
            self._queue.put_nowait((payload, first_seq, last_seq))
        except queue.Full:
            raise UplinkError(f"HTTPS send queue is full ({self._queue.maxsize} batches)") from None

    # ---- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            delay = self._retry[0]
            while not self._stopping.is_set():
                up = self._post(item)
                if up:
                    break
                # Down: drop what is queued (resent by the forwarder after the reconnect)
                # and retry this batch with backoff until the server takes it.
                self._drain()
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, self._retry[1])

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _post(self, item: _Item) -> bool:
        """Send one batch; False if the server is unreachable or unwilling (down)."""
        payload, first, last = item
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=payload, headers=self._headers)
            response = conn.getresponse()
            body = response.read()
            status = response.status
            if response.will_close:
                self._close()
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            self._down(f"{type(exc).__name__}: {exc}")
            return False
        if status == 200:
            self._up()
            self.counters["posted"] += 1
            try:
                ack = decode_ack(body, expected_gateway=self.gateway_id)
            except ProtocolError as exc:
                self.counters["bad_acks"] += 1
                logger.warning("ignoring an ack that does not decode: %s", exc)
                return True
            self.counters["acks"] += 1
            self._emit_ack(ack)
            return True
        if status in _DOWN_STATUSES or status >= 500:
            self._down(f"server answered {status} {response.reason}")
            return False
        self._up()
        self.counters["refused"] += 1
        logger.error(
            "server refused batch seq %d..%d (%d bytes): %d %s",
            first,
            last,
            len(payload),
            status,
            response.reason,
        )
        return True

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self._settings.timeout_s
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _up(self) -> None:
        if not self._connected:
            self._connected = True
            logger.info("HTTPS uplink reachable again after %d failures", self._failures)
            self._failures = 0
            self._emit_connection(True)
        self._failures = 0

    def _down(self, why: str) -> None:
        self.counters["failures"] += 1
        self._failures += 1
        where = f"{self._scheme}://{self._host}:{self._port}"
        if self._failures == 1:
            logger.error("HTTPS uplink to %s: %s; retrying with backoff", where, why)
        else:
            logger.debug("HTTPS uplink to %s: %s (%d failures)", where, why, self._failures)
        if self._connected:
            self._connected = False
            self._emit_connection(False)
