"""MQTT ingest workers: the shared subscription, store, then ack.

Each worker is one MQTT v5 client in the shared subscription ``$share/<group>/...``, so
the broker splits gateways' batches between any number of workers. A worker:

1. takes messages from the broker with manual acknowledgement: the broker sends at most
   ``receive_maximum`` messages that the worker has not yet acknowledged (MQTT flow
   control is the queue's limit; a message over it waits in the broker);
2. decodes each batch as it arrives (the prepare thread), while
3. ``writes_in_flight`` store threads each store what is ready, up to ``max_batches``
   batches, with one store write (a group commit): a batch decoded while a write is in
   flight goes into the next write that starts, in another store thread or in the same
   one as soon as it is free, so a slow write (the store busy with a cache snapshot)
   does not hold the batches behind it. A store thread that finds a batch ready waits
   up to ``linger_s`` after it was ready for more to join it: at a moderate load,
   batches arrive a few milliseconds apart, and one write per batch would cost the
   worker and the store most of their CPU in per-request overhead (both measured in
   ``tests/bench/bench_ingest.py``);
4. only then publishes each gateway's :class:`~edge_agent.protocol.Ack` (QoS 1) and
   acknowledges the messages to the broker. With more than one write in flight, acks
   leave in the order writes end, not quite the order the batches came in: a gateway's
   ack names the seqs it covers, and the broker matches a PUBACK by its packet id.

The worker holds at most ``receive_maximum`` batches, received or ready: MQTT flow
control is the limit of both its queues.

The MQTT socket has ``TCP_NODELAY``, as the agent's has: an ack published while the
broker's TCP stack has not yet acknowledged the previous packet would otherwise wait for
its delayed ACK (40 ms on Linux).

If the store is unavailable the worker keeps the messages, retries the write with
backoff (``retry_min_s`` doubling to ``retry_max_s``) and acks nothing meanwhile; the
gateways keep their records. The same holds when the registry (which ingest reads to tag a
gateway's points, and where it records a raised alarm for the scorer) cannot be reached. A
killed worker loses nothing: what it had not stored was not acknowledged, and the gateway
sends it again. So a worker whose prepare or store thread fails unexpectedly does not
linger half-alive: it sets :attr:`IngestWorker.failed`, and its process exits (non-zero)
for the supervisor to start it again.

``run(settings, workers=N)`` starts N worker processes and supervises them.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import queue
import signal
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud import logs
from cloud.errors import CloudError, RegistryUnavailable, StoreError, StoreUnavailable
from cloud.ingest import metrics
from cloud.ingest.directory import Directory
from cloud.ingest.service import BatchRefused, IngestService, Prepared
from cloud.settings import Settings
from edge_agent.errors import ProtocolError
from edge_agent.protocol import TOPIC_ROOT, Ack, ack_topic, encode_ack, parse_topic
from edge_agent.uplink.mqtt import no_delay

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float = field(default_factory=time.monotonic)
    """When it arrived (``time.monotonic``), for ``edgewatch_ingest_batch_seconds``."""


def shared_filter(group: str) -> str:
    """The shared subscription of the ingest workers of ``group``."""
    return f"$share/{group}/{TOPIC_ROOT}/+/up"


class IngestWorker:
    """One MQTT ingest worker (see the module docstring). ``start()``, then ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        service: IngestService,
        *,
        client_id: str,
        receive_maximum: int = 256,
        max_batches: int = 64,
        linger_s: float | None = None,
        writes_in_flight: int | None = None,
        retry_min_s: float = 0.2,
        retry_max_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.service = service
        self.client_id = client_id
        self.receive_maximum = receive_maximum
        self.max_batches = max_batches
        self.linger_s = settings.ingest_linger_ms / 1000 if linger_s is None else linger_s
        self.writes_in_flight = (
            settings.ingest_writes_in_flight if writes_in_flight is None else writes_in_flight
        )
        if self.writes_in_flight < 1:
            raise CloudError(f"writes_in_flight is {self.writes_in_flight}: at least 1")
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._queue: queue.Queue[_Message] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready: deque[tuple[float, _Message, Prepared]] = deque()
        """Batches decoded and not yet taken by a store thread, with when each was ready
        (``time.monotonic``); guarded by ``_ready_cond``."""
        self._ready_cond = threading.Condition()
        self._all_ready = False
        """Set by the prepare thread when it stops: nothing more will be ready."""
        self._connected = threading.Event()
        self.failed = threading.Event()
        """Set when a worker thread died of an unexpected error; the worker is stopping."""
        self.counts: dict[str, int] = {"batches": 0, "stored": 0, "refused": 0, "retries": 0}
        self._counts_lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if settings.mqtt_username:
            password = settings.mqtt_password
            self._client.username_pw_set(
                settings.mqtt_username, password.get_secret_value() if password else None
            )
        if settings.mqtt_tls:
            context = ssl.create_default_context(
                cafile=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
            )
            self._client.tls_set_context(context)
        self._client.reconnect_delay_set(1, 10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_socket_open = no_delay

    # -- broker side (paho's network thread) -------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None
    ) -> None:
        if reason.is_failure:
            log.error("ingest worker %s: broker refused the connection: %s", self.client_id, reason)
            return
        client.subscribe(shared_filter(self.settings.ingest_share_group), qos=1)
        self._connected.set()
        log.info("ingest worker %s connected", self.client_id)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning(
                "ingest worker %s lost the broker (%s); reconnecting", self.client_id, reason
            )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(_Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos))
        metrics.QUEUED.inc()

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = self.receive_maximum
        try:
            self._client.connect(
                self.settings.mqtt_host,
                self.settings.mqtt_port,
                keepalive=30,
                clean_start=True,
                properties=props,
            )
        except OSError as exc:
            raise CloudError(
                f"ingest worker cannot reach the broker at "
                f"{self.settings.mqtt_host}:{self.settings.mqtt_port}: {exc}"
            ) from None
        self._client.loop_start()
        self._threads = [
            threading.Thread(
                target=self._guarded, args=(self._run,), name=f"ingest-prepare-{self.client_id}"
            )
        ] + [
            threading.Thread(
                target=self._guarded,
                args=(self._commit_loop,),
                name=f"ingest-store-{i}-{self.client_id}",
            )
            for i in range(self.writes_in_flight)
        ]
        for thread in self._threads:
            thread.start()
        if not self._connected.wait(timeout):
            self.stop()
            raise CloudError(f"ingest worker {self.client_id}: no CONNACK within {timeout} s")

    def _guarded(self, body: Callable[[], None]) -> None:
        """Run a worker thread's loop; an unexpected error stops the whole worker."""
        try:
            body()
        except Exception:
            log.critical(
                "ingest worker %s: thread %s failed; the worker stops (what it did not "
                "store was not acknowledged and will be sent again)",
                self.client_id,
                threading.current_thread().name,
                exc_info=True,
            )
            self.failed.set()
            self._stopping.set()

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Store and ack what was received, then leave the broker."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._client.disconnect()
        self._client.loop_stop()

    # -- storing ---------------------------------------------------------------------------
    def _run(self) -> None:
        """Decode and map each batch the broker delivered and make it ready for the store
        threads, which meanwhile write what was ready before (they overlap: a store's
        round trip does not hold the interpreter)."""
        while not self.failed.is_set():
            try:
                message = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    break
                continue
            prepared = self._prepare(message)
            if prepared is not None:
                now = time.monotonic()
                with self._ready_cond:
                    self._ready.append((now, message, prepared))
                    self._ready_cond.notify()
                metrics.BATCH_PREPARED.observe(now - message.received)
        with self._ready_cond:
            self._all_ready = True
            self._ready_cond.notify_all()

    def _take(self) -> list[tuple[_Message, Prepared]] | None:
        """The next write's batches: everything ready, up to ``max_batches``. Waits for a
        first one, then until ``linger_s`` after it was ready for more (not at all when it
        was ready that long ago: it waited for a store thread). None once nothing more
        will be ready (the prepare thread stopped or the worker failed)."""
        with self._ready_cond:
            while True:
                while not self._ready:
                    if self._all_ready or self.failed.is_set():
                        return None
                    self._ready_cond.wait(0.2)
                until = self._ready[0][0] + self.linger_s
                while 0 < len(self._ready) < self.max_batches and not self._all_ready:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._ready_cond.wait(left)
                n = min(len(self._ready), self.max_batches)
                if n:  # else another store thread took them meanwhile
                    return [(m, p) for _, m, p in (self._ready.popleft() for _ in range(n))]

    def _count(self, what: str, n: int = 1) -> int:
        """Add ``n`` to ``counts[what]`` (the threads share them); the new count."""
        with self._counts_lock:
            self.counts[what] += n
            return self.counts[what]

    def _prepare(self, m: _Message) -> Prepared | None:
        """``m`` decoded and mapped; None when there is nothing to store (a refused batch,
        acknowledged to the broker at once) or the worker stopped meanwhile."""
        self._count("batches")
        try:
            gateway_id, _rest = parse_topic(m.topic)
            prepared = self._prepare_one(m.payload, gateway_id)
        except (BatchRefused, ProtocolError) as exc:
            # Nothing to store or ack; the message is done with.
            self._count("refused")
            log.debug("batch on %s refused: %s", m.topic, exc)
            self._client.ack(m.mid, m.qos)
            metrics.QUEUED.dec()
            return None
        if prepared is None:  # stopping while the registry is down: leave it unacked
            metrics.QUEUED.dec()
        return prepared

    def _prepare_one(self, payload: bytes, gateway_id: str) -> Prepared | None:
        """``service.prepare``, retried with backoff while the registry cannot be read (a
        PostgreSQL restart): nothing is stored or acked meanwhile, and the worker carries on
        once it is back. None if the worker is stopped first."""
        delay = self.retry_min_s
        while True:
            try:
                return self.service.prepare(payload, gateway_id)
            except RegistryUnavailable as exc:
                self._count("retries")
                if delay == self.retry_min_s or delay >= self.retry_max_s:
                    log.error("registry unavailable, retrying: %s", exc)
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.retry_max_s)

    def _commit_loop(self) -> None:
        """Store what is ready, then ack it to the gateways and to the broker."""
        while (group := self._take()) is not None:
            taken = time.monotonic()
            for m, _ in group:
                metrics.BATCH_TAKEN.observe(taken - m.received)
            acks = self._commit([p for _, p in group])
            metrics.QUEUED.dec(len(group))
            if acks is None:  # stopping while the store is down: leave them unacknowledged
                continue
            for (m, p), ack in zip(group, acks, strict=True):
                self._client.publish(ack_topic(p.gateway_id), encode_ack(ack), qos=1)
                metrics.ACKS.labels("mqtt").inc()
                metrics.BATCH_ACKED.observe(time.monotonic() - m.received)
                self._client.ack(m.mid, m.qos)
                self._count("stored", len(p.points))

    def _commit(self, batches: list[Prepared]) -> list[Ack] | None:
        delay = self.retry_min_s
        while True:
            try:
                return self.service.commit(batches)
            except (StoreUnavailable, RegistryUnavailable) as exc:
                # The store, or the registry where raised alarms are recorded: retry.
                if self._count("retries") == 1 or delay >= self.retry_max_s:
                    log.error("cannot store a batch now, retrying: %s", exc)
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.retry_max_s)
            except StoreError as exc:  # refused even one by one: a store-side bug
                log.error("time-series store refused a write; not acked: %s", exc)
                return None


# ---- processes ---------------------------------------------------------------------------


def build_service(settings: Settings, transport: str = "mqtt") -> IngestService:
    """An ingest service on the configured store and registry."""
    from cloud.db import create_engine_from_settings, make_sessionmaker
    from cloud.ingest.directory import SqlDirectory
    from cloud.risk.requests import RequestSink
    from cloud.tsdb import open_store

    engine = create_engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    directory: Directory = SqlDirectory(sessions, refresh_s=settings.ingest_registry_refresh_s)
    return IngestService(
        open_store(settings),
        directory,
        max_future_s=settings.ingest_max_future_s,
        transport=transport,
        notify=RequestSink(sessions),
    )


ROLLUP_EVERY_S = 3600.0
ROLLUP_LOOKBACK_S = 3 * 3600
"""Each hourly rollup run covers the last three hours again, so late records count."""


def rollup_loop(store: object, stop: threading.Event, *, first_delay_s: float = 60.0) -> None:
    """The scheduled downsampling of an :class:`~cloud.tsdb.influx.InfluxStore` (InfluxDB
    2.x and 3.x have no continuous queries): every hour, the whole hours of the last
    :data:`ROLLUP_LOOKBACK_S`. The first ingest worker runs it; it is idempotent, so a
    second one doing the same is harmless. Stores without ``rollup`` are left alone."""
    rollup = getattr(store, "rollup", None)
    if rollup is None:
        return
    delay = first_delay_s
    while not stop.wait(delay):
        end = time.time() // 3600 * 3600
        try:
            written = rollup(end - ROLLUP_LOOKBACK_S, end)
            log.info("rollup of the %d hours before %s: %d points", 3, end, written)
            delay = ROLLUP_EVERY_S
        except StoreError as exc:
            log.error("rollup failed, trying again in 5 minutes: %s", exc)
            delay = 300.0


def _serve(
    settings: Settings, index: int, metrics_port: int | None, log_level: int = logging.INFO
) -> None:
    """One worker: runs until SIGTERM or SIGINT, logging at ``log_level`` (that of the
    process that ran :func:`run`, also in a worker process of its own)."""
    logs.configure(log_level)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port + index, addr=settings.api_host)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = IngestWorker(
        settings,
        build_service(settings),
        client_id=f"edgewatch-ingest-{multiprocessing.current_process().pid}-{index}",
    )
    worker.start()
    # What start-up built (modules, settings, the registry's cache) lives as long as the
    # process: kept out of the collector's full passes, which otherwise stopped a worker
    # for 76 ms on average and 125 ms at most (11 passes in one tests/bench/bench_ingest.py
    # run of two workers; 33 ms at most since).
    gc.freeze()
    rollups = None
    if index == 0:
        rollups = threading.Thread(
            target=rollup_loop, args=(worker.service.store, stop), name="rollup", daemon=True
        )
        rollups.start()
    while not stop.wait(1.0) and not worker.failed.is_set():
        pass
    stop.set()
    worker.stop()
    if rollups is not None:
        rollups.join(30)
    worker.service.store.close()
    if worker.failed.is_set():
        raise SystemExit(70)  # EX_SOFTWARE: the supervisor starts the worker again


def run(settings: Settings, workers: int = 1, metrics_port: int | None = None) -> int:
    """Run ``workers`` workers until SIGTERM/SIGINT. One worker runs in this process; more
    run as child processes of this one, which starts a child again when it dies. Each
    worker serves its Prometheus metrics on ``metrics_port + index`` when given."""
    if workers < 1:
        raise CloudError(f"--workers {workers}: at least one worker is needed")
    level = logging.getLogger().getEffectiveLevel()
    if workers == 1:
        _serve(settings, 0, metrics_port, level)
        return 0
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs: dict[int, Any] = {}
    while not stop.is_set():
        for i in range(workers):
            proc = procs.get(i)
            if proc is None or not proc.is_alive():
                if proc is not None:
                    log.error("ingest worker %d exited (%s); starting it again", i, proc.exitcode)
                procs[i] = context.Process(
                    target=_serve, args=(settings, i, metrics_port, level), name=f"ingest-{i}"
                )
                procs[i].start()
        stop.wait(1.0)
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        proc.join(30)
    return 0


__all__ = ["IngestWorker", "build_service", "run", "shared_filter"]
