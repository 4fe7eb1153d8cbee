"""The MQTT uplink (paho-mqtt 2, MQTT 5).

- Client id = gateway id; a persistent session: ``clean_start=False`` with a
  ``SessionExpiryInterval`` of ``session_expiry_s``, so acks and downlink messages sent
  while the gateway is away wait in the broker (for that long).
- Batches are published with QoS 1 on :func:`~edge_agent.protocol.up_topic`, with the MQTT 5
  content type set; no topic aliases (never sent; ``TopicAliasMaximum=0`` asks the broker
  not to use them towards us).
- The last will is the retained ``offline`` status (QoS 1); on every connect the retained
  ``online`` status is published; :meth:`MqttUplink.stop` publishes ``offline`` itself.
- On every connect the ack and downlink topics are (re)subscribed with QoS 1: a broker that
  lost the session (restarted without persistence) gets them back.
- paho's network thread (``loop_start``) reconnects with exponential backoff
  (``reconnect_min_s`` .. ``reconnect_max_s``).
- The socket has ``TCP_NODELAY`` (paho leaves Nagle's algorithm on): a batch published
  while the previous one is not yet acknowledged by the broker's TCP stack would otherwise
  wait for that delayed ACK (up to 40 ms on Linux), which it often does at a few batches
  a second.
- TLS: CA file (else the system CAs), client certificate and key (certificate auth), or
  username plus the password read from ``password_file`` (never logged).

paho's return and reason codes are translated into :class:`UplinkError` here; nothing above
sees them.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.config import MqttSettings, TlsSettings
from edge_agent.errors import ProtocolError, UplinkError
from edge_agent.protocol import (
    BATCH_CONTENT_TYPE,
    DownlinkKind,
    ack_topic,
    decode_ack,
    down_topic,
    encode_status,
    status_topic,
    up_topic,
)
from edge_agent.uplink import Uplink, read_secret, resolve

logger = logging.getLogger(__name__)

STOP_PUBLISH_TIMEOUT_S = 2.0


def tls_context(tls: TlsSettings, base_dir: Path | None) -> ssl.SSLContext:
    """A client TLS context from the settings; :class:`UplinkError` for unreadable files."""
    ca, cert, key = (resolve(p, base_dir) for p in (tls.ca_file, tls.cert_file, tls.key_file))
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"TLS files (ca {ca}, cert {cert}, key {key}): {exc}") from None
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's ``on_socket_open``: send every packet at once (see the module docstring)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not a TCP socket: nothing to turn off
        logger.debug("TCP_NODELAY not set on the MQTT socket: %s", exc)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class MqttUplink(Uplink):
    """Batches over MQTT 5 (see the module docstring)."""

    def __init__(
        self,
        gateway_id: str,
        settings: MqttSettings,
        base_dir: Path | None = None,
        *,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 60,
        max_queued: int = 256,
    ) -> None:
        self.gateway_id = gateway_id
        self._settings = settings
        self._base_dir = base_dir
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._max_queued = max_queued
        self._up = up_topic(gateway_id)
        self._ack = ack_topic(gateway_id)
        self._status = status_topic(gateway_id)
        self._down = {down_topic(gateway_id, k): k for k in DownlinkKind}
        self._lock = threading.Lock()
        self._connected = False
        self._client: mqtt.Client | None = None
        self._failures = 0
        self._stopping = False
        self._publish_props = _properties(PacketTypes.PUBLISH)
        self._publish_props.ContentType = BATCH_CONTENT_TYPE
        self.counters = {
            "connects": 0,
            "disconnects": 0,
            "published": 0,
            "puback_failed": 0,
            "acks": 0,
            "bad_acks": 0,
            "downlinks": 0,
        }
        """Counters since start: connects, publishes, PUBACKs with a failure reason code,
        acks received and acks that did not decode, downlink messages."""

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._client is not None:
            raise UplinkError("MqttUplink.start() was already called")
        s = self._settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.gateway_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=True,
        )
        if s.username is not None:
            password = (
                None
                if s.password_file is None
                else read_secret(s.password_file, self._base_dir, "MQTT password")
            )
            client.username_pw_set(s.username, password)
        if s.tls is not None:
            client.tls_set_context(tls_context(s.tls, self._base_dir))
        client.will_set(self._status, encode_status(self.gateway_id, False), qos=1, retain=True)
        client.reconnect_delay_set(*self._reconnect)
        client.max_queued_messages_set(self._max_queued)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = no_delay
        props = _properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        props.TopicAliasMaximum = 0
        client.connect_async(
            s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=props
        )
        self._client = client
        rc = client.loop_start()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise UplinkError(f"cannot start the MQTT network thread: {mqtt.error_string(rc)}")
        logger.info("MQTT uplink to %s:%d as %s starting", s.host, s.port, self.gateway_id)

    def stop(self) -> None:
        client = self._client
        if client is None:
            return
        if self._connected:
            info = client.publish(
                self._status, encode_status(self.gateway_id, False, time.time()), 1, True
            )
            try:
                info.wait_for_publish(STOP_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                logger.debug("offline status not published on stop: %s", exc)
        self._stopping = True
        client.disconnect()
        client.loop_stop()
        with self._lock:
            self._connected = False
        self._client = None

    @property
    def connected(self) -> bool:
        return self._connected

    # ---- sending --------------------------------------------------------------------------

    def send(self, payload: bytes, first_seq: int, last_seq: int) -> None:
        client = self._client
        if client is None or not self._connected:
            raise UplinkError("MQTT uplink is not connected")
        info = client.publish(self._up, payload, qos=1, properties=self._publish_props)
        rc = info.rc
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.counters["published"] += 1
            logger.debug(
                "published seq %d..%d (%d bytes) mid %d",
                first_seq,
                last_seq,
                len(payload),
                info.mid,
            )
            return
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # paho keeps the message and sends it after reconnecting; the forwarder resends
            # anyway (duplicates are harmless: the cloud stores idempotently).
            raise UplinkError("MQTT uplink is not connected (connection just lost)")
        if rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise UplinkError(f"MQTT publish queue is full ({self._max_queued} messages)")
        raise UplinkError(f"MQTT publish failed: {mqtt.error_string(rc)}")

    # ---- paho callbacks (paho's network thread) -------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._failed(f"broker refused the connection: {reason}")
            return
        client.subscribe(
            [(t, SubscribeOptions(qos=1)) for t in (self._ack, *self._down)],
        )
        client.publish(self._status, encode_status(self.gateway_id, True, time.time()), 1, True)
        with self._lock:
            self._connected = True
        self.counters["connects"] += 1
        self._failures = 0
        logger.info(
            "MQTT uplink connected to %s:%d (session present: %s)",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        self._emit_connection(True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._failed("cannot connect")

    def _failed(self, why: str) -> None:
        self._failures += 1
        s = self._settings
        if self._failures == 1:
            logger.error("MQTT uplink to %s:%d: %s; retrying with backoff", s.host, s.port, why)
        else:
            logger.debug(
                "MQTT uplink to %s:%d: %s (%d failures)", s.host, s.port, why, self._failures
            )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if not was:
            return
        self.counters["disconnects"] += 1
        if self._stopping:
            logger.info("MQTT uplink disconnected: %s", reason)
        else:
            logger.warning("MQTT uplink disconnected: %s", reason)
        self._emit_connection(False)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        if reason.is_failure:
            # e.g. 0x87 not authorised (ACL), 0x97 quota exceeded: the batch is not taken;
            # the forwarder resends it when its ack does not come.
            self.counters["puback_failed"] += 1
            logger.warning("broker refused publish mid %d: %s", mid, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        if topic == self._ack:
            try:
                ack = decode_ack(bytes(message.payload), expected_gateway=self.gateway_id)
            except ProtocolError as exc:
                self.counters["bad_acks"] += 1
                logger.warning("ignoring an ack that does not decode: %s", exc)
                return
            self.counters["acks"] += 1
            self._emit_ack(ack)
            return
        kind = self._down.get(topic)
        if kind is not None:
            self.counters["downlinks"] += 1
            self._emit_downlink(kind, bytes(message.payload))
            return
        logger.debug("ignoring a message on %s", topic)
