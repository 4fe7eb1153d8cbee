"""Uplinks: how record batches leave the gateway (MQTT, or HTTPS where MQTT is blocked).

An uplink is a byte pipe with an ack channel, nothing more: it sends the batch bytes that
:func:`edge_agent.protocol.encode_batch` made and hands every ack (and downlink message)
it receives to the callbacks the forwarder and the agent set. What to send, when to
resend and when to delete is the forwarder's business (:mod:`edge_agent.forwarder`).

Every implementation passes one conformance suite (``tests/integration/test_agent_uplink.py``).

Threads: callbacks are called on the uplink's own thread (paho's network thread, or the
HTTPS worker); they must be quick and must not block (hand over to a queue).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from pathlib import Path

from edge_agent.errors import UplinkError
from edge_agent.protocol import Ack, DownlinkKind

__all__ = ["Uplink", "UplinkError", "read_secret"]

logger = logging.getLogger(__name__)

AckCallback = Callable[[Ack], None]
DownlinkCallback = Callable[[DownlinkKind, bytes], None]
ConnectionCallback = Callable[[bool], None]


class Uplink(abc.ABC):
    """The interface every uplink implements."""

    gateway_id: str
    """The gateway this uplink speaks for (batches and acks carry it)."""
    on_ack: AckCallback | None = None
    """Called with every valid ack for this gateway."""
    on_downlink: DownlinkCallback | None = None
    """Called with ``(kind, payload)`` of every downlink message (payload undecoded)."""
    on_connection: ConnectionCallback | None = None
    """Called with True when the uplink (re)connects and False when it goes down."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start connecting in the background; returns at once. Raises
        :class:`UplinkError` for a setting that can never work (unreadable secret, bad
        TLS files)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Say goodbye if connected (MQTT: the retained ``offline`` status) and stop."""

    @abc.abstractmethod
    def send(self, payload: bytes, first_seq: int, last_seq: int) -> None:
        """Queue one batch for sending and return at once (delivery is known only from
        the ack). ``first_seq``/``last_seq`` are for logs. Raises :class:`UplinkError` when
        not connected or when the send queue is full; nothing was queued then."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether :meth:`send` would accept a batch now."""

    # ---- for implementations ----------------------------------------------------------------

    def _emit_ack(self, ack: Ack) -> None:
        callback = self.on_ack
        if callback is not None:
            self._guarded("on_ack", callback, ack)

    def _emit_downlink(self, kind: DownlinkKind, payload: bytes) -> None:
        callback = self.on_downlink
        if callback is not None:
            self._guarded("on_downlink", callback, kind, payload)

    def _emit_connection(self, up: bool) -> None:
        callback = self.on_connection
        if callback is not None:
            self._guarded("on_connection", callback, up)

    def _guarded(self, name: str, callback: Callable[..., None], *args: object) -> None:
        # A callback runs on the uplink's network thread: an exception escaping it would
        # stop that thread and with it the uplink. It is logged with its traceback instead.
        try:
            callback(*args)
        except Exception:
            logger.exception("uplink %s callback failed", name)


def read_secret(path: Path, base_dir: Path | None, what: str) -> str:
    """A secret from a file (password, token), without its trailing newline."""
    full = path if path.is_absolute() or base_dir is None else base_dir / path
    try:
        text = full.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise UplinkError(f"cannot read the {what} file {full}: {exc.strerror}") from None
    if not text:
        raise UplinkError(f"the {what} file {full} is empty")
    return text


def resolve(path: Path | None, base_dir: Path | None) -> str | None:
    if path is None:
        return None
    return str(path if path.is_absolute() or base_dir is None else base_dir / path)
