"""Traffic no agent sends: a gateway credential publishing garbage, and a gateway reaching
into another gateway's topics.

:func:`rogue_payloads` connects as the rogue gateway (registered, with a credential and a
device, but no agent) and publishes batches that are not batches at all, a batch of a
schema version nobody reads, another gateway's batch on its own topic, and one batch that
mixes good records with every kind of bad one (NaN where a number must be finite, a
timestamp far in the future, beyond 2100, not a number, an unknown device, an unknown
kind, a body without what its kind needs, a device-level record without a device, a
record with a key too many, a seq that is no seq, a seq twice). The ack must name the
good ones stored and the bad ones rejected with their reasons; ingest's counters must
count them; afterwards InfluxDB must hold the good ones and nothing else of the rogue.

:func:`foreign_topics` connects with one real gateway's credential (under another client
id, so the agent keeps its session) and tries the other gateway's topics: a forged batch
on its ``up`` topic, a forged ack on its ``ack`` topic (had it arrived, the victim would
have deleted records the cloud never stored), a forged ``offline`` status and a downlink
command, and subscriptions to its acks and downlink while the victim's agent is being
acked. The broker must deliver none of it (MQTT 5: PUBACK/SUBACK reason codes say so).
"""

from __future__ import annotations

import json
import math
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.subscribeoptions import SubscribeOptions
from soak.ledger import Key, ts_ns
from soak.stack import INGEST_USER, ROGUE, ROGUE_DEVICE, Stack

from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    FORMAT_JSON,
    FORMAT_ZLIB,
    SCHEMA_VERSION,
    Ack,
    PollNow,
    Record,
    RecordKind,
    ack_topic,
    decode_ack,
    down_topic,
    encode_ack,
    encode_batch,
    encode_downlink,
    encode_status,
    status_topic,
    up_topic,
)

ACK_WAIT_S = 5.0
"""A batch not acked within this long is sent again (the same bytes: stored once)."""
INJECTION_DEADLINE_S = 90.0
BATCH_LEVEL = ("malformed", "malformed", "malformed", "bad_version", "bad_gateway")
"""What ingest must refuse whole (counted as batches with outcome ``rejected``)."""


@dataclass
class RogueResult:
    good: dict[int, Key] = field(default_factory=dict)
    """Seq → the point each good record must become (the rogue's only points)."""
    expected_rejected: dict[int, str] = field(default_factory=dict)
    """Seq → the reason the ack must give."""
    unackable: list[str] = field(default_factory=list)
    """Records refused that no ack can name (no valid seq, or a seq already in the batch)."""
    ack: Ack | None = None
    sends: int = 0
    counted: Counter[str] = field(default_factory=Counter)
    """Ingest's counters' rise during the injection (record reasons, ``batch:rejected``)."""


STORED = "stored"


def _mixed_batch(seq0: int, now: float) -> tuple[bytes, list[tuple[dict[str, Any], str]]]:
    """The mixed batch's bytes, and each record with what must become of it: ``stored``,
    or the reason it is refused."""
    energy = {"values": {"energy": 12.5}, "units": {"energy": "kWh"}}

    def rec(seq: Any, ts: Any, kind: Any, device: Any, body: Any, **extra: Any) -> dict[str, Any]:
        return {"seq": seq, "ts": ts, "kind": kind, "device_id": device, "body": body, **extra}

    s, dev = seq0, ROGUE_DEVICE
    rows = [
        (rec(s, now - 0.5, "energy", dev, energy), STORED),
        (rec(s + 1, now - 0.4, "energy", dev, {"values": {"energy": math.nan}}), "bad_body"),
        (rec(s + 2, now + 10 * 365 * 86400, "energy", dev, energy), "future_ts"),
        (rec(s + 3, 5.0e9, "energy", dev, energy), "bad_ts"),
        (rec(s + 4, "yesterday", "energy", dev, energy), "bad_ts"),
        (rec(s + 5, now - 0.3, "energy", "cc-nobody", energy), "unknown_device"),
        (rec(s + 6, now - 0.3, "telemetry", dev, energy), "bad_kind"),
        (rec(s + 7, now - 0.3, "features", dev, {"group": "x", "n_samples": 3}), "bad_body"),
        (rec(s + 8, now - 0.2, "energy", None, energy), "missing_device"),
        (rec(s + 9, now - 0.2, "energy", dev, energy, extra=1), "bad_record"),
        (rec(0, now - 0.15, "energy", dev, energy), "bad_seq"),
        (rec(s + 10, now - 0.1, "energy", dev, energy), STORED),
        (rec(s, now - 0.05, "energy", dev, energy), "duplicate_seq"),
        (rec(s + 11, now, "health", None, {"note": "rogue", "uptime_s": 1.0}), STORED),
    ]
    doc = {"schema_version": SCHEMA_VERSION, "gateway_id": ROGUE, "records": [r for r, _ in rows]}
    # json.dumps writes NaN as the bare NaN token: not JSON, what a broken encoder sends.
    return bytes((FORMAT_JSON,)) + json.dumps(doc).encode(), rows


def _not_batches(other_gateway: str, now: float) -> list[bytes]:
    """Five payloads ingest must refuse whole (:data:`BATCH_LEVEL`, in order)."""
    one = Record(1, now, RecordKind.ENERGY, ROGUE_DEVICE, {"values": {"energy": 1.0}})
    version = {"schema_version": SCHEMA_VERSION + 98, "gateway_id": ROGUE, "records": []}
    return [
        b"\x00garbage",
        bytes((FORMAT_JSON,)) + b'{"schema_version": 1, "gateway_id": ',
        bytes((FORMAT_ZLIB,)) + b"this is not zlib at all",
        bytes((FORMAT_JSON,)) + json.dumps(version).encode(),
        encode_batch(other_gateway, [one]),
    ]


def rogue_payloads(
    stack: Stack,
    seq0: int,
    other_gateway: str,
    counts: Callable[[], tuple[Counter[str], Counter[str]]],
) -> RogueResult:
    """Publish the rogue's traffic; return once the ack came and ingest counted it all.

    ``counts()`` returns ingest's (rejected records by reason, batches by outcome)."""
    login = stack.logins[ROGUE]
    device_id = login.devices[ROGUE_DEVICE]
    now = time.time()
    payload, rows = _mixed_batch(seq0, now)
    result = RogueResult()
    for r, outcome in rows:
        if outcome == STORED:
            device = device_id if r["device_id"] else ""
            result.good[r["seq"]] = (r["kind"], device, "", "", "", ts_ns(r["ts"]))
        elif outcome in ("bad_seq", "duplicate_seq"):
            result.unackable.append(outcome)
        else:
            result.expected_rejected[r["seq"]] = outcome
    reasons0, batches0 = counts()
    clients = stack.clients()
    try:
        conn = clients.connect(login.gateway_id, login.secret, tls=True, client_id=f"{ROGUE}-x")
        assert conn.ok, f"the rogue's own credential was refused: {conn.reason}"
        conn.subscribe(ack_topic(ROGUE))
        deadline = time.monotonic() + INJECTION_DEADLINE_S
        while result.ack is None:
            assert time.monotonic() < deadline, "the rogue's batch was never acked"
            conn.publish(up_topic(ROGUE), payload)
            result.sends += 1
            wait_until = time.monotonic() + ACK_WAIT_S
            while result.ack is None and time.monotonic() < wait_until:
                try:
                    _topic, data = conn.messages.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    ack = decode_ack(data, expected_gateway=ROGUE)
                except ProtocolError:
                    continue
                if any(a <= seq0 <= b for a, b in ack.ranges):
                    result.ack = ack
        # The non-batches go once the batch was acked, so an ingest worker is subscribed:
        # the broker drops what arrives while a shared subscription has no member (just
        # after a broker restart, before the worker is back), and nothing resends a
        # non-batch (found with EDGEWATCH_SOAK_SEED=445826: a broker kill 3 s before).
        for garbage in _not_batches(other_gateway, now):
            conn.publish(up_topic(ROGUE), garbage)
    finally:
        clients.close()
    # Ingest counts as it refuses; the whole-batch refusals went out after the mixed batch
    # and may be handled by another worker: wait for the counters to catch up.
    want = Counter(result.expected_rejected.values())
    deadline = time.monotonic() + 30
    while True:
        reasons, batches = counts()
        rise = reasons - reasons0
        rise["batch:rejected"] = batches["rejected"] - batches0["rejected"]
        result.counted = rise
        if all(rise[r] >= n for r, n in want.items()) and rise["batch:rejected"] >= len(
            BATCH_LEVEL
        ):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return result


@dataclass
class ForeignResult:
    intruder: str
    victim: str
    puback: dict[str, str] = field(default_factory=dict)
    """Topic → the broker's PUBACK reason for each forged publish."""
    suback: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    """Topics of what the intruder's subscriptions delivered."""
    forged: list[Key] = field(default_factory=list)
    """Points the forged batch would have become."""
    victim_acked: tuple[int, int] = (0, 0)
    """Records of the victim acknowledged (last seq − depth) before and after listening."""
    retained_status_forged: bool | None = None
    """Whether the victim's retained status is the forged one (None: none was retained)."""


def foreign_topics(
    stack: Stack,
    intruder: str,
    victim: str,
    seq0: int,
    acked: Callable[[str], int],
    listen_s: float = 3.0,
) -> ForeignResult:
    """``intruder``'s credential against ``victim``'s topics (see the module docstring).
    ``acked(gw)`` is how many of a gateway's records have been acknowledged so far."""
    result = ForeignResult(intruder, victim)
    login = stack.logins[intruder]
    victim_device = next(iter(stack.logins[victim].devices))
    victim_device_id = stack.logins[victim].devices[victim_device]
    now = time.time()
    records = [
        Record(seq0 + k, now - 3600 - k * 0.001 - 0.000123, RecordKind.ENERGY, victim_device,
               {"values": {"energy": 999.0}})
        for k in range(3)
    ]  # fmt: skip
    result.forged = [("energy", victim_device_id, "", "", "", ts_ns(r.ts)) for r in records]
    forged_ack = encode_ack(Ack(victim, [(1, 10**9)]))
    forged_status = encode_status(victim, False, now)
    clients = stack.clients()
    try:
        conn = clients.connect(login.gateway_id, login.secret, tls=True, client_id=f"{intruder}-x")
        assert conn.ok, f"{intruder}'s own credential was refused: {conn.reason}"
        pubacks: queue.Queue[tuple[int, str]] = queue.Queue()
        subacks: queue.Queue[list[str]] = queue.Queue()
        conn.client.on_publish = lambda _c, _u, mid, reason, _p: pubacks.put((mid, str(reason)))
        conn.client.on_subscribe = lambda _c, _u, _mid, reasons, _p: subacks.put(
            [str(r) for r in reasons]
        )
        topics = [ack_topic(victim), f"edgewatch/v1/{victim}/down/#", "edgewatch/v1/+/ack"]
        conn.client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
        result.suback = subacks.get(timeout=10)
        before = acked(victim)
        mids: dict[int, str] = {}
        for topic, data, retain in (
            (up_topic(victim), encode_batch(victim, records), False),
            (ack_topic(victim), forged_ack, False),
            (status_topic(victim), forged_status, True),
            (down_topic(victim, "command"), encode_downlink(PollNow("soak-forged")), False),
        ):
            info = conn.client.publish(topic, data, qos=1, retain=retain)
            mids[info.mid] = topic
            info.wait_for_publish(timeout=10)
        deadline = time.monotonic() + 10
        while len(result.puback) < len(mids) and time.monotonic() < deadline:
            try:
                mid, reason = pubacks.get(timeout=0.5)
            except queue.Empty:
                continue
            if mid in mids:
                result.puback[mids[mid]] = reason
        end = time.monotonic() + listen_s
        while time.monotonic() < end:
            try:
                topic, _data = conn.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            result.received.append(topic)
        # Go on listening until the victim has been acked meanwhile (its agent was talking
        # to the cloud all along), so that silence here means refusal, not a quiet moment.
        # (A victim that a fault before sent into its reconnect backoff may take a while.)
        deadline = time.monotonic() + 120
        while acked(victim) <= before and time.monotonic() < deadline:
            try:
                topic, _data = conn.messages.get(timeout=0.2)
                result.received.append(topic)
            except queue.Empty:
                pass
        result.victim_acked = (before, acked(victim))
        # The victim's retained status, as the cloud sees it: still its own.
        cloud = clients.connect(INGEST_USER, stack.ingest_password, tls=False)
        assert cloud.ok, cloud.reason
        cloud.subscribe(status_topic(victim))
        try:
            _topic, retained = cloud.messages.get(timeout=5)
            result.retained_status_forged = retained == forged_status
        except queue.Empty:
            result.retained_status_forged = None
    finally:
        clients.close()
    return result
