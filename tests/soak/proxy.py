"""A TCP proxy between one agent and the broker that can cut the network and stall it.

    proxy = FaultProxy("127.0.0.1", broker_port).start()   # the agent connects to proxy.port
    proxy.cut()      # every connection reset; new ones are accepted and reset at once
    proxy.stall()    # bytes stop moving both ways; connections stay open, new ones hang
    proxy.heal()     # forwarding again (connections that were stalled carry on)
    proxy.close()

Bytes pass through untouched, so TLS between the agent and the broker is end to end.
A stall is the nasty kind of network fault: nothing is closed, so each side finds out
only from its own keep-alive. Threads, not asyncio: two per connection, a handful of
connections per proxy.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
CHUNK = 65536
POLL_S = 0.1


def _reset(sock: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0), as a network that drops a connection looks."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    """Connections reset at once because the proxy was cut or the target refused."""
    reset: int = 0
    """Open connections reset by :meth:`FaultProxy.cut`."""
    bytes_up: int = 0
    bytes_down: int = 0
    faults: list[str] = field(default_factory=list)


class _Link:
    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def start(self) -> None:
        for src, dst, up in (
            (self.client, self.upstream, True),
            (self.upstream, self.client, False),
        ):
            threading.Thread(
                target=self._pump, args=(src, dst, up), name="soak-proxy-pump", daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        proxy = self.proxy
        try:
            while not self.closed.is_set():
                if not proxy.flowing.wait(POLL_S):
                    continue  # stalled: leave the bytes where they are
                ready, _, _ = select.select([src], [], [], POLL_S)
                if not ready:
                    continue
                data = src.recv(CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                while not proxy.flowing.is_set() and not self.closed.is_set():
                    proxy.flowing.wait(POLL_S)  # a stall that began mid-read holds this too
                dst.sendall(data)
                with proxy.lock:
                    if up:
                        proxy.stats.bytes_up += len(data)
                    else:
                        proxy.stats.bytes_down += len(data)
        except (OSError, ValueError):  # ValueError: select() on a socket cut meanwhile
            pass
        finally:
            self.close(rst=False)

    def close(self, *, rst: bool) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if rst:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        with self.proxy.lock:
            self.proxy.links.discard(self)


class FaultProxy:
    """See the module docstring."""

    def __init__(self, target_host: str, target_port: int, name: str = "proxy") -> None:
        self.target = (target_host, target_port)
        self.name = name
        self.lock = threading.Lock()
        self.links: set[_Link] = set()
        self.flowing = threading.Event()
        self.flowing.set()
        self.cutting = threading.Event()
        self.stats = ProxyStats()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=f"soak-{name}", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    @property
    def state(self) -> str:
        if self.cutting.is_set():
            return "cut"
        return "flowing" if self.flowing.is_set() else "stalled"

    def cut(self) -> None:
        """Reset every open connection and every new one until :meth:`heal`."""
        self.cutting.set()
        with self.lock:
            links = list(self.links)
            self.stats.reset += len(links)
            self.stats.faults.append("cut")
        for link in links:
            link.close(rst=True)

    def stall(self) -> None:
        """Stop moving bytes; nothing is closed."""
        self.flowing.clear()
        with self.lock:
            self.stats.faults.append("stall")

    def heal(self) -> None:
        self.cutting.clear()
        self.flowing.set()

    def connections(self) -> int:
        with self.lock:
            return len(self.links)

    def close(self) -> None:
        self._stop.set()
        self.heal()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self.lock:
            links = list(self.links)
        for link in links:
            link.close(rst=False)
        if self._thread.is_alive():
            self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], POLL_S)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.cutting.is_set():
                with self.lock:
                    self.stats.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                with self.lock:
                    self.stats.refused += 1
                _reset(client)  # the broker is down: so is the path to it
                continue
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, upstream)
            with self.lock:
                self.stats.accepted += 1
                self.links.add(link)
            link.start()
