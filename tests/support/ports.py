"""Loopback ports for the servers the tests start.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same range
it draws from for the local end of every outgoing connection. A port picked that way and
bound a moment later by a server the test starts can meanwhile have become the local end
of some process's connection (an ingest worker's to the broker, say), and the server then
fails with "Address already in use". So ports are picked below the ephemeral range, where
the kernel never assigns one by itself, and checked free; the ephemeral range is used only
when none is found there.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000
_TRIES = 50


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback TCP port that was free a moment ago, outside the ephemeral range when
    one is (the caller retries if it is taken)."""
    high = _ephemeral_low() - 1
    if high > _LOWEST:
        for _ in range(_TRIES):
            port = random.randint(_LOWEST, high)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        found: int = sock.getsockname()[1]
        return found
