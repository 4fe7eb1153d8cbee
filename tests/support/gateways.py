"""Simulated gateways for ingest benchmarks: records made and encoded beforehand, published
over MQTT with each gateway's own credentials, acknowledged the way the agent's forwarder
expects.

- :class:`RecordStream`: one gateway's records in the load shape of
  ``tests/bench/bench_ingest.py`` (per device and window one ``features`` record of
  ``features`` features, one ``score`` and ``energy`` energy readings) or in the agent's
  (:class:`LoadShape` ``kind="agent"``: what its default poll groups make for the shipped
  profiles, and health records), optionally with local alarms, encoded with
  :func:`edge_agent.protocol.encode_batch` (zlib) in batches of ``batch`` records.
  :meth:`RecordStream.extend` encodes more; nothing is encoded while the gateways
  publish. Each record's point identity (measurement, device, timestamp in
  ns as ingest stores it) maps back to its seq, so a benchmark can check the store.
- :class:`SimulatedGateways`: one MQTT 5 client per gateway (its username and secret, so
  the broker's password file and ACL apply), publishing ``edgewatch/v1/<gw>/up`` at QoS 1
  and reading its own ``ack`` topic. Like the agent, a gateway keeps at most
  ``max_inflight`` batches unacknowledged and sends a batch again when its ack has not
  come within ``ack_timeout_s`` (a killed ingest worker's batches are found again this
  way). :meth:`SimulatedGateways.run` publishes as fast as the acks allow, or at a given
  rate; :meth:`SimulatedGateways.window` gives records/s acknowledged and the ack latency
  (first publish to the ack that completes the batch) of a time window.
"""

from __future__ import annotations

import bisect
import functools
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud.ingest.records import ts_ns
from edge_agent.agent import point_feature_names
from edge_agent.profiles import resolve_profile
from edge_agent.protocol import Record, RecordKind, ack_topic, decode_ack, encode_batch, up_topic


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A local alarm record: ``state`` is ``raised`` or ``cleared``."""

    name: str
    severity: str
    state: str
    value: float


AlarmSchedule = Callable[[int, int, int], Sequence[AlarmEvent]]
"""``(gateway index, device index, window index)`` → the alarm records of that window."""


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    first: int
    last: int
    records: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class LoadShape:
    kind: str = "bench"
    """``bench``: per device and window one features record of ``features`` features,
    one score and ``energy`` energy readings (``bench_ingest.py``'s shape); ``agent``:
    per device and minute what the agent sends with its default poll groups, and a health
    record per gateway (:meth:`RecordStream._agent_records`)."""
    devices: int = 4
    features: int = 100
    energy: int = 6
    batch: int = 50
    window_s: float = 60.0


AGENT_PROFILES = ("ew-cc100", "ew-fc200")
AGENT_GROUPS = ("fast", "default", "slow")
"""The agent's default poll groups (``edge_agent.config.DEFAULT_POLL_GROUPS``): 60-s
windows of the fast group, 300-s of the default, 900-s of the slow one, whose counters
are the energy readings."""


@functools.cache
def agent_feature_names(profile_id: str) -> dict[str, list[str]]:
    """Per poll group, the features the agent's features record carries for a device of
    the shipped profile ``profile_id`` (every point of the group, its kind's features)."""
    profile = resolve_profile(profile_id)
    out = {}
    for group in AGENT_GROUPS:
        points = [p.name for p in profile.points if p.poll_group == group and p.type != "string"]
        window = SimpleNamespace(series=dict.fromkeys(points))
        out[group] = point_feature_names(window, profile)  # type: ignore[arg-type]
    return out


class RecordStream:
    """One gateway's records (see the module docstring); windows ``window_s`` apart from
    ``t0`` (plus ``index`` ms, so that no two gateways share a timestamp)."""

    def __init__(
        self,
        gateway: str,
        index: int,
        shape: LoadShape,
        t0: float,
        alarms: AlarmSchedule | None = None,
    ) -> None:
        self.gateway = gateway
        self.index = index
        self.shape = shape
        self.t0 = t0
        self.alarms = alarms
        self.devices = [f"cc-{d}" for d in range(shape.devices)]
        self.batches: list[EncodedBatch] = []
        self.firsts: list[int] = []
        self.records = 0
        self.identities: dict[tuple[str, str], dict[int, int]] = {}
        """``(measurement, device name)`` → ``{ts_ns: seq}``."""
        self.alarm_records: list[tuple[int, str, AlarmEvent]] = []
        """``(seq, device name, event)`` of every alarm record."""
        self._names = [f"s{i // 10}__f{i % 10}" for i in range(shape.features)]
        self._window = 0
        self._seq = 0
        self._pending: list[Record] = []

    def _add(self, ts: float, kind: RecordKind, device: str | None, body: dict[str, Any]) -> Record:
        self._seq += 1
        self.identities.setdefault((kind.value, device or ""), {})[ts_ns(ts)] = self._seq
        return Record(self._seq, ts, kind, device, body)

    def _next_window(self) -> None:
        w = self._window
        self._window += 1
        ts = self.t0 + w * self.shape.window_s + self.index * 1e-3
        for d, device in enumerate(self.devices):
            if self.shape.kind == "agent":
                self._agent_records(ts, w, d, device)
            else:
                self._bench_records(ts, device)
            for k, event in enumerate(self.alarms(self.index, d, w) if self.alarms else ()):
                body = {
                    "name": event.name,
                    "severity": event.severity,
                    "state": event.state,
                    "value": event.value,
                }
                record = self._add(ts + 1.0 + k, RecordKind.ALARM, device, body)
                self.alarm_records.append((record.seq, device, event))
                self._pending.append(record)
        if self.shape.kind == "agent":
            self._pending.append(self._add(ts + 0.125, RecordKind.HEALTH, None, self._health(w)))

    def _features(
        self, ts: float, device: str, group: str, names: Sequence[str], window_s: float
    ) -> Record:
        base = float((self._seq + 1) % 97)
        body = {
            "group": group,
            "start": ts - window_s,
            "n_samples": 30,
            "n_missing": 0,
            "features": {n: base + i * 0.01 for i, n in enumerate(names)},
        }
        return self._add(ts, RecordKind.FEATURES, device, body)

    def _score(self, ts: float, device: str, group: str) -> Record:
        body = {
            "model_id": "cc",
            "model_version": 1,
            "score": (self._seq % 13) / 10.0,
            "threshold": 1.0,
            "anomalous": False,
            "top_signals": [["s0", 0.5]],
            "group": group,
        }
        return self._add(ts, RecordKind.SCORE, device, body)

    def _bench_records(self, ts: float, device: str) -> None:
        """``bench_ingest.py``'s shape: energy readings, one features record, one score."""
        out = self._pending
        for e in range(self.shape.energy):
            body = {"values": {"energy": 1000.0 + self._seq * 0.1}}
            out.append(self._add(ts + e * 10.0, RecordKind.ENERGY, device, body))
        out.append(self._features(ts, device, "fast", self._names, self.shape.window_s))
        out.append(self._score(ts, device, "fast"))

    def _agent_records(self, ts: float, w: int, d: int, device: str) -> None:
        """A minute of one device as the agent sends it with its default poll groups (see
        :data:`AGENT_GROUPS`): even devices are compressors, odd ones fans."""
        profile = AGENT_PROFILES[d % 2]
        out = self._pending
        names = agent_feature_names(profile)
        out.append(self._features(ts, device, "fast", names["fast"], 60.0))
        if w % 5 == 4:
            out.append(self._features(ts + 0.25, device, "default", names["default"], 300.0))
        if w % 15 == 14:
            out.append(self._features(ts + 0.5, device, "slow", names["slow"], 900.0))
        if w % 60 == 59:  # the risk models' group, if mapped: 12-h windows every hour
            risk = names["default"][:94]
            out.append(self._features(ts + 0.75, device, "risk", risk, 43_200.0))
            out.append(self._score(ts + 0.75, device, "risk"))
        counters = {
            "energy": 1000.0 + self._seq * 0.1,
            "runtime_hours": 100.0 + w // 60,
            "start_count": 10.0 + w // 30,
        }
        units = {"energy": "kWh", "runtime_hours": "h", "start_count": ""}
        body = {"values": counters, "units": units}
        out.append(self._add(ts + 30.0, RecordKind.ENERGY, device, body))

    def _health(self, w: int) -> dict[str, Any]:
        return {
            "uptime_s": 60.0 * w,
            "buffer": {"depth": 12, "bytes": 65_536, "dropped_total": 0, "oldest_s": 0.4},
            "uplink": {"connected": True, "sent": 23 * w, "acked": 23 * w, "inflight": 1},
            "polls": 245 * w,
            "windows": 6 * w,
            "cpu_s": 0.05 * w,
            "rss_mb": 61.0,
        }

    def extend(self, records: int) -> None:
        """Encode whole batches until at least ``records`` more records are encoded."""
        target = self.records + records
        size = self.shape.batch
        while self.records < target:
            while len(self._pending) < size:
                self._next_window()
            chunk, self._pending = self._pending[:size], self._pending[size:]
            payload = encode_batch(self.gateway, chunk)
            self.batches.append(EncodedBatch(chunk[0].seq, chunk[-1].seq, len(chunk), payload))
            self.firsts.append(chunk[0].seq)
            self.records += len(chunk)

    @property
    def windows(self) -> int:
        """Windows made so far (the next one made has this index)."""
        return self._window

    def batch_of(self, seq: int) -> int:
        """The index of the batch that carries ``seq``."""
        return bisect.bisect_right(self.firsts, seq) - 1


@dataclass(frozen=True, slots=True)
class Login:
    gateway: str
    username: str
    password: str


@dataclass(slots=True)
class _Flight:
    first_sent: float
    sent: float
    resolved: int = 0
    resends: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    first_sent: float
    done: float
    records: int
    resends: int
    gateway: str = ""
    index: int = -1
    """The batch's index in its gateway's :attr:`RecordStream.batches`."""


@dataclass(slots=True)
class _Gateway:
    login: Login
    stream: RecordStream
    client: mqtt.Client
    subscribed: threading.Event = field(default_factory=threading.Event)
    refused: str = ""
    next: int = 0
    inflight: dict[int, _Flight] = field(default_factory=dict)
    resolved: bytearray = field(default_factory=bytearray)
    """Per seq: 1 once an ack stored it, 2 once an ack rejected it."""


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float
    published: int
    """Batches published for the first time in the window."""
    held: int = 0
    """Paced runs: ticks at which every gateway had ``max_inflight`` batches out."""


def _quantiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        only = values[0] if values else 0.0
        return {"p50_ms": only, "p99_ms": only, "max_ms": only}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": q[49], "p99_ms": q[98], "max_ms": max(values)}


class SimulatedGateways:
    """The gateways of ``streams``, each connected with its :class:`Login` (see the module
    docstring). ``connect()``, then ``run()``/``drain()``, then ``close()``."""

    def __init__(
        self,
        host: str,
        port: int,
        logins: Sequence[Login],
        streams: Sequence[RecordStream],
        *,
        max_inflight: int = 8,
        ack_timeout_s: float = 10.0,
    ) -> None:
        by_gateway = {s.gateway: s for s in streams}
        self.host, self.port = host, port
        self.max_inflight = max_inflight
        self.ack_timeout_s = ack_timeout_s
        self.cond = threading.Condition()
        self.completions: list[Completion] = []
        self.resends = 0
        self.rejected: list[tuple[str, int, str]] = []
        self.unexpected_acks = 0
        self.gateways: list[_Gateway] = []
        for login in logins:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=login.gateway,
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            client.username_pw_set(login.username, login.password)
            gw = _Gateway(login, by_gateway[login.gateway], client)
            client.on_connect = self._on_connect(gw)
            client.on_subscribe = lambda _c, _u, _m, _r, _p, gw=gw: gw.subscribed.set()
            client.on_message = self._on_message(gw)
            self.gateways.append(gw)
        self._last_expiry_check = 0.0

    # -- connections ------------------------------------------------------------------------
    def _on_connect(self, gw: _Gateway) -> Callable[..., None]:
        def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                gw.refused = str(reason)
                gw.subscribed.set()
                return
            client.subscribe(ack_topic(gw.login.gateway), qos=1)

        return on_connect

    def connect(self, timeout: float = 20.0) -> None:
        """Connect every gateway and subscribe it to its acks; raises if the broker refuses
        one or it does not answer in time."""
        for gw in self.gateways:
            gw.client.connect(self.host, self.port, keepalive=30, clean_start=True)
            gw.client.loop_start()
        deadline = time.monotonic() + timeout
        for gw in self.gateways:
            if not gw.subscribed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"gateway {gw.login.gateway} not subscribed in {timeout} s")
            if gw.refused:
                raise ConnectionRefusedError(f"broker refused {gw.login.username}: {gw.refused}")

    def close(self) -> None:
        for gw in self.gateways:
            gw.client.disconnect()
            gw.client.loop_stop()

    # -- acks (the clients' network threads) --------------------------------------------------
    def _on_message(self, gw: _Gateway) -> Callable[..., None]:
        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            ack = decode_ack(bytes(msg.payload), expected_gateway=gw.login.gateway)
            now = time.monotonic()
            stored = [s for a, b in ack.ranges for s in range(a, b + 1)]
            with self.cond:
                touched: set[int] = set()
                for seqs, mark in ((stored, 1), ([s for s, _ in ack.rejected], 2)):
                    for seq in seqs:
                        if seq >= len(gw.resolved) or gw.resolved[seq]:
                            continue
                        gw.resolved[seq] = mark
                        index = gw.stream.batch_of(seq)
                        flight = gw.inflight.get(index)
                        if flight is None:
                            self.unexpected_acks += 1
                            continue
                        flight.resolved += 1
                        touched.add(index)
                for seq, reason in ack.rejected:
                    self.rejected.append((gw.login.gateway, seq, reason))
                for index in touched:
                    flight = gw.inflight[index]
                    batch = gw.stream.batches[index]
                    if flight.resolved >= batch.records:
                        del gw.inflight[index]
                        self.completions.append(
                            Completion(
                                flight.first_sent,
                                now,
                                batch.records,
                                flight.resends,
                                gw.login.gateway,
                                index,
                            )
                        )
                if touched:
                    self.cond.notify_all()

        return on_message

    # -- publishing ---------------------------------------------------------------------------
    def _publish(self, gw: _Gateway, now: float) -> None:
        """Publish ``gw``'s next batch (the caller checked there is one and room for it)."""
        index = gw.next
        batch = gw.stream.batches[index]
        with self.cond:
            gw.next += 1
            gw.inflight[index] = _Flight(now, now)
            if len(gw.resolved) <= batch.last:
                gw.resolved.extend(bytes(batch.last + 1 - len(gw.resolved) + 4096))
        gw.client.publish(up_topic(gw.login.gateway), batch.payload, qos=1)

    def _has_room(self, gw: _Gateway) -> bool:
        return len(gw.inflight) < self.max_inflight and gw.next < len(gw.stream.batches)

    def _resend_expired(self, now: float) -> None:
        if now - self._last_expiry_check < 0.2:
            return
        self._last_expiry_check = now
        again: list[tuple[_Gateway, int]] = []
        with self.cond:
            for gw in self.gateways:
                for index, flight in gw.inflight.items():
                    if now - flight.sent > self.ack_timeout_s:
                        flight.sent = now
                        flight.resends += 1
                        again.append((gw, index))
            self.resends += len(again)
        for gw, index in again:
            gw.client.publish(up_topic(gw.login.gateway), gw.stream.batches[index].payload, qos=1)

    def exhausted(self) -> list[str]:
        """Gateways that have published every batch encoded for them."""
        return [g.login.gateway for g in self.gateways if g.next >= len(g.stream.batches)]

    def run(
        self,
        seconds: float,
        *,
        rate: float | None = None,
        stop: threading.Event | None = None,
        tick: Callable[[float], None] | None = None,
    ) -> Window:
        """Publish for ``seconds`` (or until ``stop``): whenever a gateway has room
        (``rate`` None), or ``rate`` records/s round robin over the gateways with room.
        ``tick(elapsed)`` is called about every 0.1 s (a benchmark's schedule of kills)."""
        start = time.monotonic()
        end = start + seconds
        published = held = 0
        turn = 0
        next_t = start
        last_tick = start
        n = len(self.gateways)
        per_batch = self.gateways[0].stream.shape.batch if n else 1
        while (now := time.monotonic()) < end and not (stop is not None and stop.is_set()):
            if tick is not None and now - last_tick >= 0.1:
                last_tick = now
                tick(now - start)
            self._resend_expired(now)
            if rate is None:
                sent = 0
                for gw in self.gateways:
                    if self._has_room(gw):
                        self._publish(gw, now)
                        sent += 1
                published += sent
                if not sent:
                    with self.cond:
                        self.cond.wait(0.02)
                continue
            if now < next_t:
                time.sleep(min(next_t - now, 0.01))
                continue
            for k in range(n):
                gw = self.gateways[(turn + k) % n]
                if self._has_room(gw):
                    self._publish(gw, now)
                    published += 1
                    turn = (turn + k + 1) % n
                    next_t += per_batch / rate
                    break
            else:
                held += 1
                with self.cond:
                    self.cond.wait(0.005)
        return Window(start, time.monotonic(), published, held)

    def inflight(self) -> int:
        with self.cond:
            return sum(len(g.inflight) for g in self.gateways)

    def drain(self, timeout: float) -> bool:
        """Until every published batch is acknowledged (sending again what times out);
        False if some are not after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (now := time.monotonic()) < deadline:
            self._resend_expired(now)
            with self.cond:
                if not any(g.inflight for g in self.gateways):
                    return True
                self.cond.wait(0.1)
        return self.inflight() == 0

    # -- figures ------------------------------------------------------------------------------
    def window(self, start: float, end: float) -> dict[str, Any]:
        """Records acknowledged per second between ``start`` and ``end`` (monotonic), and
        the ack latency of the batches first published in that time that have completed
        (all of them, and those acknowledged without being sent again)."""
        with self.cond:
            done = list(self.completions)
        completed = [c for c in done if start <= c.done < end]
        acked = sum(c.records for c in completed)
        sent = [c for c in done if start <= c.first_sent < end]
        lat = sorted((c.done - c.first_sent) * 1000 for c in sent)
        once = sorted((c.done - c.first_sent) * 1000 for c in sent if not c.resends)
        return {
            "seconds": end - start,
            "records_acked": acked,
            "records_per_s": acked / (end - start) if end > start else 0.0,
            "batches_per_s": len(completed) / (end - start) if end > start else 0.0,
            "batches": len(lat),
            "batches_resent": len(lat) - len(once),
            **_quantiles(lat),
            "not_resent": _quantiles(once),
        }

    def acked(self) -> dict[str, set[int]]:
        """Per gateway, the seqs an ack named as stored."""
        with self.cond:
            return {
                g.login.gateway: {s for s, mark in enumerate(g.resolved) if mark == 1}
                for g in self.gateways
            }

    def completion_of(self) -> dict[tuple[str, int], Completion]:
        """``(gateway, batch index)`` → how its batch was acknowledged (when first sent,
        when completed, how often sent again)."""
        with self.cond:
            return {(c.gateway, c.index): c for c in self.completions}

    def published_records(self) -> int:
        with self.cond:
            return sum(sum(b.records for b in g.stream.batches[: g.next]) for g in self.gateways)
