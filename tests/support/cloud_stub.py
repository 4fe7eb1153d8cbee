"""A stand-in for the EdgeWatch cloud's ingest, and a restartable private Mosquitto.

Run as a script, it is the ingest: it receives batches (MQTT shared subscription
``$share/ingest/...``, or HTTP ``POST /v1/gateways/{gw}/batches``), decodes them with
:mod:`edge_agent.protocol` (lenient: bad records are rejected, good ones kept), "stores"
each record by appending ``gateway seq ts arrival`` to ``--out`` (flushed), and only then
acks what it stored. A separate process, like the real ingest, with its own GIL.

    python tests/support/cloud_stub.py mqtt --host 127.0.0.1 --port 1883 --out f
    python tests/support/cloud_stub.py http --port 8080 --out f [--token-file t]

It writes ``<out>.ready`` once it can receive. Imported, it offers :class:`Broker` (a
private mosquitto that tests can kill and restart on the same port) and :class:`Cloud`
(the stub as a child process).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

LOOPBACK = "127.0.0.1"
HERE = Path(__file__).resolve()


def free_port() -> int:
    """:func:`support.ports.free_port` (imported here, not at the top: this file also runs
    as a script, where ``support`` is not importable)."""
    from support.ports import free_port as pick

    return pick()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.02)


# ---- a restartable private broker ----------------------------------------------------------


class Broker:
    """A private mosquitto on a fixed loopback port that can be killed and started again.

    With ``password_file`` (and usually ``acl_file``) it refuses anonymous clients and
    checks those files, as the production broker does; :meth:`reload` makes it re-read
    them (SIGHUP)."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistence: bool = False,
        password_file: Path | None = None,
        acl_file: Path | None = None,
    ):
        self.workdir = workdir
        self.port = port or free_port()
        self.host = LOOPBACK
        self.persistence = persistence
        self.password_file = password_file
        self.acl_file = acl_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        binary = os.environ.get("EDGEWATCH_MOSQUITTO") or shutil.which("mosquitto")
        if binary is None and Path("/usr/sbin/mosquitto").exists():
            binary = "/usr/sbin/mosquitto"
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary

    def start(self) -> None:
        self.starts += 1
        log = self.workdir / f"mosquitto-{self.port}.log"
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        # set_tcp_nodelay as in deploy/cloud/mosquitto.conf
        lines = [f"listener {self.port} {LOOPBACK}", "set_tcp_nodelay true"]
        if self.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines += ["persistence false"]
        if os.getuid() == 0:
            lines.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
        lines += [f"log_dest file {log}", "log_type error", "log_type warning", ""]
        conf.write_text("\n".join(lines))
        deadline = time.monotonic() + 10
        while True:  # the port may linger a moment after a kill
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(
                    lambda: _accepts(self.port) or self.proc.poll() is not None, 10, "broker"
                )
            except TimeoutError:
                self.kill()
                raise
            if self.proc.poll() is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto could not start on {self.port}; log {log}")
            time.sleep(0.2)

    def reload(self) -> None:
        """SIGHUP: re-read the password and ACL files (connected clients stay connected)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL: a broker crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# ---- the stub as a child process ----------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    gateway: str
    seq: int
    ts: float
    arrival: float


class Cloud:
    """The ingest stub in a child process; ``arrivals()`` reads what it stored."""

    def __init__(self, workdir: Path, mode: str, *args: str) -> None:
        self.workdir = workdir
        self.mode = mode
        self.args = list(args)
        self.out = workdir / f"cloud-{mode}.tsv"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        ready = Path(f"{self.out}.ready")
        ready.unlink(missing_ok=True)
        log = (self.workdir / f"cloud-{self.mode}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), self.mode, "--out", str(self.out), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: ready.exists() or self.proc.poll() is not None, timeout, "cloud stub")
        if self.proc.poll() is not None:
            text = (self.workdir / f"cloud-{self.mode}.log").read_text(errors="replace")
            raise RuntimeError(f"cloud stub exited: {text[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def arrivals(self) -> list[Arrival]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 4:  # a line cut short by a kill is incomplete
                out.append(Arrival(parts[0], int(parts[1]), float(parts[2]), float(parts[3])))
        return out

    def seqs(self) -> list[int]:
        return [a.seq for a in self.arrivals()]


# ---- the stub itself (runs in the child) ---------------------------------------------------


class _Ingest:
    def __init__(self, out: Path) -> None:
        self.file: TextIO = out.open("a", encoding="utf-8")
        self.lock = threading.Lock()

    def ingest(self, gateway: str, data: bytes) -> bytes:
        """Decode, store, and return the ack bytes; raises ProtocolError for a bad batch."""
        from edge_agent.protocol import Ack, coalesce, decode_batch, encode_ack

        decoded = decode_batch(data, strict=False, expected_gateway=gateway)
        now = time.time()
        with self.lock:
            self.file.write(
                "".join(f"{gateway}\t{r.seq}\t{r.ts!r}\t{now!r}\n" for r in decoded.batch.records)
            )
            self.file.flush()
        ack = Ack(gateway, coalesce(r.seq for r in decoded.batch.records), decoded.rejected_seqs)
        return encode_ack(ack)


def _run_mqtt(args: argparse.Namespace, ingest: _Ingest) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    from edge_agent.errors import ProtocolError
    from edge_agent.protocol import INGEST_SHARED_FILTER, ack_topic, parse_topic

    ready = Path(f"{args.out}.ready")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=MQTTProtocolVersion.MQTTv5
    )

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            c.subscribe(INGEST_SHARED_FILTER, options=SubscribeOptions(qos=1))

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
        ready.touch()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            gateway, _ = parse_topic(msg.topic)
            ack = ingest.ingest(gateway, bytes(msg.payload))
        except ProtocolError as exc:
            print(f"rejected batch on {msg.topic}: {exc}", flush=True)  # noqa: T201
            return
        c.publish(ack_topic(gateway), ack, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.reconnect_delay_set(1, 1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    client.connect_async(args.host, args.port, keepalive=10, clean_start=False, properties=props)
    client.loop_forever(retry_first_connection=True)


def _run_http(args: argparse.Namespace, ingest: _Ingest) -> None:
    from edge_agent.errors import ProtocolError
    from edge_agent.protocol import BATCH_CONTENT_TYPE

    token = Path(args.token_file).read_text().strip() if args.token_file else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *a: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[:2] != ["v1", "gateways"] or parts[3] != "batches":
                self._answer(404, b'{"error":"not found"}')
                return
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                self._answer(401, b'{"error":"unauthorized"}')
                return
            if self.headers.get("Content-Type") != BATCH_CONTENT_TYPE:
                self._answer(415, b'{"error":"content type"}')
                return
            try:
                ack = ingest.ingest(parts[2], data)
            except ProtocolError as exc:
                self._answer(400, f'{{"error":"{exc.reason}"}}'.encode())
                return
            self._answer(200, ack)

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer((LOOPBACK, args.port), Handler)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    Path(f"{args.out}.ready").touch()
    server.serve_forever(poll_interval=0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["mqtt", "http"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", default="edgewatch-ingest-stub")
    parser.add_argument("--token-file")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ingest = _Ingest(Path(args.out))
    with contextlib.suppress(KeyboardInterrupt):
        if args.mode == "mqtt":
            _run_mqtt(args, ingest)
        else:
            _run_http(args, ingest)


if __name__ == "__main__":
    main()
