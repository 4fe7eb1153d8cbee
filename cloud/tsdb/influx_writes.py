"""InfluxDB ``/write`` requests on keep-alive ``http.client`` connections, one per thread.

A write is the ingest path's one request per group of batches: hundreds a second on a busy
worker. ``tests/bench/bench_tsdb.py`` (``influx_small_writes``): an ``InfluxStore.write`` of
100 score points cost the writing thread 0.96-1.03 ms of CPU through ``httpx`` (its client,
auth flow, connection pool and pure-Python HTTP parser) and 0.59-0.62 ms this way.
Queries, and writes through a proxy or an injected transport, stay on ``httpx``.

What ``httpx`` would do and this keeps:

- the same connection target: the write URL's path and query as ``httpx`` built them
  (a path prefix in the store's URL included);
- TLS verified as ``httpx`` verifies it (:func:`httpx.create_ssl_context`, which also reads
  ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``);
- the ``Authorization`` header (a token, or basic auth encoded as ``httpx`` does);
- the timeout, applied to the connect and to every read and send on the socket;
- proxies from the environment: where ``HTTP_PROXY``, ``HTTPS_PROXY`` or ``ALL_PROXY``
  applies to the store's host (not excluded by ``NO_PROXY``), :func:`direct_writes` gives
  ``None`` and the store writes through ``httpx``.

A connection the server (or a load balancer) closed while it was idle fails at the next
request; that request is sent once more on a fresh connection. A write is idempotent
(the same points at the same times overwrite each other), so a write the server took
before the connection broke does no harm when sent again. A timeout is not retried.
"""

from __future__ import annotations

import base64
import http.client
import logging
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from typing import Final, NamedTuple
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)

STALE: Final = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)
"""What a request on a kept-alive connection the other end has closed fails with."""


WRITE_HEADERS: Final = {"Content-Type": "text/plain; charset=utf-8"}
"""What every ``/write`` request carries besides the credentials (either way it goes)."""


class Answer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def auth_headers(token: str | None, username: str | None, password: str | None) -> dict[str, str]:
    """The ``Authorization`` header ``httpx`` would send for these credentials."""
    if token:
        return {"Authorization": f"Token {token}"}
    if username and password:
        pair = f"{username}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


def proxied(url: str) -> bool:
    """Whether a proxy from the environment applies to ``url`` (``httpx``'s ``trust_env``
    reads the same variables)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc.rpartition("@")[2])


class DirectWrites:
    """POSTs bodies to one HTTP(S) server, each thread on its own kept-alive connection.

    Safe to share between threads. A thread's connection stays open until a new thread
    connects after it ended, or :meth:`close` (a thread that writes again afterwards opens
    a new one)."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.timeout_s = timeout_s
        self.headers = {**WRITE_HEADERS, **headers}
        self._tls: ssl.SSLContext | None = (
            httpx.create_ssl_context() if parts.scheme == "https" else None
        )
        self._conns: dict[threading.Thread, http.client.HTTPConnection] = {}
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's connection; opening one closes those of threads that ended."""
        me = threading.current_thread()
        conn = self._conns.get(me)
        if conn is None:
            if self._tls is not None:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s, context=self._tls
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            with self._lock:
                for gone in [t for t in self._conns if not t.is_alive()]:
                    self._conns.pop(gone).close()
                self._conns[me] = conn
        return conn

    def post(self, target: str, body: bytes) -> Answer:
        """POST ``body`` to ``target`` (path and query). Raises what ``http.client`` and the
        socket raise (:class:`OSError`, :class:`http.client.HTTPException`); the caller
        translates them."""
        conn = self._connection()
        reused = conn.sock is not None
        try:
            return self._exchange(conn, target, body)
        except STALE as exc:
            if not reused:
                raise
            log.debug("kept-alive connection to %s was closed (%s); sending again", self.host, exc)
        return self._exchange(conn, target, body)

    def _exchange(self, conn: http.client.HTTPConnection, target: str, body: bytes) -> Answer:
        try:
            conn.request("POST", target, body=body, headers=self.headers)
            resp = conn.getresponse()
            return Answer(resp.status, resp.getheaders(), resp.read())
        except BaseException:
            conn.close()  # a request cut short leaves the connection unusable
            raise

    def close(self) -> None:
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            conn.close()


def direct_writes(url: str, headers: Mapping[str, str], timeout_s: float) -> DirectWrites | None:
    """Direct writes to ``url``, or ``None`` where ``httpx`` must carry them: a URL that is
    not http(s) or holds credentials, or a proxy from the environment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None  # httpx names a bad URL, and sends credentials given in the URL
    if proxied(url):
        log.info("InfluxDB writes go through the proxy the environment names for %s", url)
        return None
    return DirectWrites(url, headers, timeout_s)
