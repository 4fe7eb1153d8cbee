"""InfluxStore's writes on its own keep-alive connections (cloud.tsdb.influx_writes), against
a recording HTTP/1.1 server on loopback: one connection per writing thread, the credentials
and TLS verification httpx would use, a connection closed while idle sent again once, and
writes through httpx where a proxy from the environment applies."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.tls import self_signed

from cloud.errors import StoreError, StoreUnavailable
from cloud.tsdb.base import Point
from cloud.tsdb.influx import InfluxStore
from cloud.tsdb.influx_writes import proxied

T0 = 1_700_000_000.0
TAGS = {"client": "c", "site": "s", "gateway": "g", "device": "d"}


def score(ts: float, value: float) -> Point:
    return Point("score", int(ts * 1e9), TAGS, {"score": value})


@dataclass
class Seen:
    """What the server was sent: one entry per request, in order."""

    requests: list[tuple[int, str, dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    answer: tuple[int, bytes] = (204, b"")
    drop_after_answer: bool = False
    """Close the connection after each answer without saying so (an idle timeout)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        super().setup()
        with self.server.seen.lock:
            self.server.seen.connections += 1
            self.conn_id = self.server.seen.connections

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        seen = self.server.seen
        with seen.lock:
            seen.requests.append((self.conn_id, self.path, dict(self.headers.items()), body))
        status, content = seen.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
        self.close_connection = seen.drop_after_answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Recorder)
        self.seen = Seen()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(srv: Server, scheme: str = "http", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{srv.server_address[1]}"


def test_each_thread_keeps_one_connection_and_sends_the_token(server: Server) -> None:
    store = InfluxStore(url_of(server), "plant", token="s3cr3t", manage_schema=False)  # noqa: S106
    try:
        for k in range(3):
            store.write([score(T0 + k, k / 10)])
        others = [
            threading.Thread(target=store.write, args=([score(T0 + 10 + k, 0.5)],))
            for k in range(2)
        ]
        for t in others:
            t.start()
        for t in others:
            t.join()
    finally:
        store.close()
    seen = server.seen
    assert seen.connections == 3  # this thread's, and one per other thread
    assert [conn for conn, *_ in seen.requests[:3]] == [1, 1, 1]
    for _, path, headers, body in seen.requests:
        assert path == "/write?db=plant&precision=ns"
        assert headers["Authorization"] == "Token s3cr3t"
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert body.startswith(b"score,")
    assert b"score=0.2 1700000002000000000" in seen.requests[2][3]
    assert store.stats().points_written == 5


def test_basic_auth_and_a_path_prefix_are_kept(server: Server) -> None:
    store = InfluxStore(
        url_of(server) + "/influx/",
        "plant",
        username="writer",
        password="pa:ss wörd",  # noqa: S106 - a fake server
    )
    store._schema_ready = True  # no CREATE DATABASE: this server only records writes
    try:
        store.write([score(T0, 0.5)])
    finally:
        store.close()
    ((_, path, headers, _),) = server.seen.requests
    assert path == "/influx/write?db=plant&precision=ns&rp=raw"
    expected = base64.b64encode("writer:pa:ss wörd".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"


def test_a_connection_closed_while_idle_is_sent_again_once(server: Server) -> None:
    server.seen.drop_after_answer = True  # as a load balancer's idle timeout would
    store = InfluxStore(url_of(server), "plant", manage_schema=False)
    try:
        for k in range(4):
            store.write([score(T0 + k, k / 10)])
    finally:
        store.close()
    seen = server.seen
    bodies = [body for *_, body in seen.requests]
    assert len(bodies) == 4 and len(set(bodies)) == 4  # each write arrived once
    assert seen.connections == 4
    assert store.stats().write_errors == 0


def test_a_fresh_connection_that_breaks_is_not_sent_again() -> None:
    accepted: list[socket.socket] = []
    with socket.socket() as listener:  # accepts, then closes without an answer
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted.append(conn)
                conn.recv(65536)
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        store = InfluxStore(f"http://127.0.0.1:{port}", "plant", manage_schema=False)
        try:
            with pytest.raises(StoreUnavailable, match=r"cannot be reached for a write of 1"):
                store.write([score(T0, 0.5)])
        finally:
            store.close()
    assert len(accepted) == 1


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (503, b'{"error":"engine closed"}', StoreUnavailable, r"could not take .* \(HTTP 503\)"),
        (401, b'{"error":"authorization failed"}', StoreUnavailable, r"refused the credentials"),
        (400, b'{"error":"partial write: field type conflict"}', StoreError, r"stored only part"),
        (400, b'{"error":"unable to parse \'x y\'"}', StoreError, r"refused .*unable to parse"),
    ],
)
def test_refused_writes_carry_influxdbs_words(
    server: Server, status: int, body: bytes, error: type[StoreError], words: str
) -> None:
    server.seen.answer = (status, body)
    store = InfluxStore(url_of(server), "plant", manage_schema=False)
    try:
        with pytest.raises(error, match=words) as info:
            store.write([score(T0, 0.5)])
    finally:
        store.close()
    assert (type(info.value) is StoreUnavailable) == (error is StoreUnavailable)
    assert store.stats().write_errors == 1


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    cert, key = self_signed(tmp_path)
    srv = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, cert
    srv.shutdown()
    srv.server_close()


def test_https_writes_verify_the_certificate(
    tls_server: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, cert = tls_server
    url = url_of(srv, "https", "localhost")
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    untrusting = InfluxStore(url, "plant", manage_schema=False, timeout_s=5)
    try:
        with pytest.raises(StoreUnavailable, match=r"CERTIFICATE_VERIFY_FAILED"):
            untrusting.write([score(T0, 0.5)])
    finally:
        untrusting.close()
    assert srv.seen.requests == []

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # as httpx: the environment's CA file
    trusting = InfluxStore(url, "plant", token="t", manage_schema=False, timeout_s=5)  # noqa: S106
    try:
        trusting.write([score(T0, 0.5)])
        trusting.write([score(T0 + 1, 0.6)])
    finally:
        trusting.close()
    assert [(conn, headers["Authorization"]) for conn, _, headers, _ in srv.seen.requests] == [
        (1, "Token t"),
        (1, "Token t"),
    ]


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "http://influx:8086", False),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://influx:8086", True),
        ({"http_proxy": "http://proxy:3128"}, "http://influx:8086", True),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://influx:8086", False),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://influx:8086", True),
        ({"ALL_PROXY": "http://proxy:3128"}, "https://influx:8086", True),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "influx"}, "http://influx:8086", False),
        (
            {"HTTP_PROXY": "http://p:3128", "NO_PROXY": ".example.org"},
            "http://db.example.org",
            False,
        ),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "other"}, "http://influx:8086", True),
    ],
)
def test_a_proxy_from_the_environment_is_noticed(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, expected: bool
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxied(url) is expected


def test_through_a_proxy_writes_go_by_httpx(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url_of(server))  # the recorder plays the proxy
    monkeypatch.delenv("http_proxy", raising=False)
    store = InfluxStore("http://influx.invalid:8086", "plant", manage_schema=False)
    try:
        store.write([score(T0, 0.5)])
    finally:
        store.close()
    ((_, path, _, body),) = server.seen.requests
    assert path == "http://influx.invalid:8086/write?db=plant&precision=ns"  # proxy form
    assert body.startswith(b"score,")


def test_credentials_in_the_url_are_sent_by_httpx(server: Server) -> None:
    url = url_of(server).replace("http://", "http://writer:s3cret@")
    store = InfluxStore(url, "plant", manage_schema=False)
    try:
        store.write([score(T0, 0.5)])
    finally:
        store.close()
    ((_, _, headers, _),) = server.seen.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"writer:s3cret").decode()
