"""The bookkeeping of the simulated gateways that ``tests/bench/bench_scaleout.py`` checks
InfluxDB against: every record has a point identity of its own, and only what an ack names
counts as acknowledged (stored or rejected), however acks and resends interleave."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from support.gateways import (
    AlarmEvent,
    LoadShape,
    Login,
    RecordStream,
    SimulatedGateways,
)

from cloud.ingest.records import ts_ns
from edge_agent.protocol import Ack, decode_batch, encode_ack

T0 = 1_790_000_000.123456


def busy_alarms(g: int, d: int, w: int) -> list[AlarmEvent]:
    """Two alarm records per device and window (k = 0 and 1: ts + 1 and ts + 2)."""
    return [
        AlarmEvent("discharge_temp_high", "major", "raised", 110.0),
        AlarmEvent("suction_pressure_low", "minor", "cleared", 1.5),
    ]


@pytest.mark.parametrize("kind", ["bench", "agent"])
def test_every_record_has_a_point_identity_of_its_own(kind: str) -> None:
    """No two records of a gateway share (measurement, device, timestamp), in either load
    shape, with alarms in every window: the map the bench checks InfluxDB against holds
    every seq, and each batch's records map back to their own seqs."""
    for index in (0, 7, 39):
        stream = RecordStream(
            f"gw-{index:04d}", index, LoadShape(kind=kind, batch=50), T0, busy_alarms
        )
        stream.extend(6000 if kind == "bench" else 3000)
        seqs = [seq for ts_map in stream.identities.values() for seq in ts_map.values()]
        assert len(seqs) == len(set(seqs)) == stream._seq
        for batch in stream.batches:
            for record in decode_batch(batch.payload).records:
                identity = stream.identities[(record.kind.value, record.device_id or "")]
                assert identity[ts_ns(record.ts)] == record.seq


def gateways(records: int = 150) -> tuple[SimulatedGateways, RecordStream]:
    stream = RecordStream("gw-0000", 0, LoadShape(batch=50), T0)
    stream.extend(records)
    sim = SimulatedGateways(
        "127.0.0.1", 1, [Login("gw-0000", "u", "p")], [stream], ack_timeout_s=0.0
    )
    return sim, stream


def deliver(sim: SimulatedGateways, ack: Ack) -> None:
    gw = sim.gateways[0]
    on_message = sim._on_message(gw)
    on_message(None, None, SimpleNamespace(payload=encode_ack(ack)))


def test_only_what_an_ack_names_is_acknowledged() -> None:
    sim, stream = gateways()
    gw = sim.gateways[0]
    for _ in range(len(stream.batches)):
        sim._publish(gw, 0.0)
    # Batch 0 in two acks (a gap between them), batch 1 with a rejected record, batch 2
    # never acknowledged.
    deliver(sim, Ack("gw-0000", [(1, 20), (22, 30)]))
    deliver(sim, Ack("gw-0000", [(31, 50)]))
    deliver(sim, Ack("gw-0000", [(51, 59), (61, 100)], [(60, "bad_body")]))
    acked = sim.acked()["gw-0000"]
    assert acked == set(range(1, 21)) | set(range(22, 60)) | set(range(61, 101))
    assert sim.rejected == [("gw-0000", 60, "bad_body")]
    assert set(gw.inflight) == {0, 2}  # seq 21 is still out, and all of batch 2
    # The resend of batch 0 and its ack complete it; a late duplicate changes nothing.
    sim._resend_expired(1.0)
    deliver(sim, Ack("gw-0000", [(1, 50)]))
    deliver(sim, Ack("gw-0000", [(1, 50)]))
    deliver(sim, Ack("gw-0000", [(51, 100)]))  # 60 stays rejected: the first ack decided
    acked = sim.acked()["gw-0000"]
    assert acked == set(range(1, 60)) | set(range(61, 101))
    assert set(gw.inflight) == {2}
    assert sim.unexpected_acks == 0
    done = sim.completion_of()
    assert set(done) == {("gw-0000", 0), ("gw-0000", 1)}
    assert done[("gw-0000", 0)].resends == 1
