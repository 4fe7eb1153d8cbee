"""One batch in, points stored once, the right ack out (on the embedded SQLite stores)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from support.registry_world import add_gateway

from cloud.ingest.directory import SqlDirectory, StaticDirectory
from cloud.ingest.service import BatchRefused, IngestService
from cloud.registry.models import Base, Client, Device
from cloud.registry.refs import DeviceRef, GatewayInfo
from cloud.settings import Settings
from cloud.tsdb import TimeSeriesStore, open_store
from edge_agent.protocol import FORMAT_JSON, Record, RecordKind, encode_batch

NOW = 1_750_000_000.0
GW = GatewayInfo("gw-1", "client-a", "site-1", {"cc-1": DeviceRef("dev-1", "compressor")})


@pytest.fixture
def store(tmp_path: Path) -> TimeSeriesStore:
    return open_store(Settings(tsdb="sqlite", tsdb_sqlite_path=tmp_path / "ts.db"))


def energy(seq: int, device: str = "cc-1", value: float = 10.0, ts: float = NOW) -> Record:
    return Record(seq, ts + seq, RecordKind.ENERGY, device, {"values": {"energy": value + seq}})


def raw_batch(gateway: str, records: list[dict[str, Any]]) -> bytes:
    doc = {"schema_version": 1, "gateway_id": gateway, "records": records}
    return bytes((FORMAT_JSON,)) + json.dumps(doc).encode()


def service(store: TimeSeriesStore, directory: Any = None) -> IngestService:
    return IngestService(
        store, directory or StaticDirectory({"gw-1": GW}), clock=lambda: NOW + 3600
    )


def test_good_records_are_stored_and_acked_next_to_bad_ones(store: TimeSeriesStore) -> None:
    good = [energy(s).to_json() for s in (1, 2, 3, 5)]
    records = [
        *good[:2],
        {"seq": 4, "ts": NOW, "kind": "energy", "device_id": "cc-1", "body": {"values": "x"}},
        good[2],
        {"seq": 6, "ts": NOW, "kind": "nonsense", "device_id": "cc-1", "body": {}},
        energy(7, device="cc-unknown").to_json(),
        energy(8, ts=NOW + 86_400).to_json(),
        good[3],
        {"seq": 9, "ts": "yesterday", "kind": "energy", "device_id": "cc-1", "body": {}},
    ]
    ack = service(store).handle(raw_batch("gw-1", records), "gw-1")
    assert ack.ranges == [(1, 3), (5, 5)]
    assert sorted(ack.rejected) == [
        (4, "bad_body"),
        (6, "bad_kind"),
        (7, "unknown_device"),
        (8, "future_ts"),
        (9, "bad_ts"),
    ]
    assert store.count("energy") == 4
    assert store.count("energy", gateway="gw-1") == 4


def test_a_replayed_batch_stores_nothing_twice(store: TimeSeriesStore) -> None:
    data = encode_batch("gw-1", [energy(s) for s in range(1, 51)])
    svc = service(store)
    first = svc.handle(data, "gw-1")
    again = svc.handle(data, "gw-1")
    overlapping = svc.handle(encode_batch("gw-1", [energy(s) for s in range(40, 61)]), "gw-1")
    assert first == again and first.ranges == [(1, 50)]
    assert overlapping.ranges == [(40, 60)]
    assert store.count("energy") == 60


@pytest.mark.parametrize(
    ("data", "topic_gateway", "reason"),
    [
        (b"", "gw-1", "malformed"),
        (b"\x09junk", "gw-1", "malformed"),
        (b"\x02" + zlib.compress(b"{not json"), "gw-1", "malformed"),
        (
            raw_batch("gw-1", []).replace(b'"schema_version": 1', b'"schema_version": 9'),
            "gw-1",
            "bad_version",
        ),
        (raw_batch("gw-1", [energy(1).to_json()]), "gw-2", "bad_gateway"),
        (raw_batch("gw-9", [energy(1).to_json()]), "gw-9", "unknown_gateway"),
    ],
    ids=["empty", "format", "zlib-json", "version", "other-gateway", "unregistered"],
)
def test_batch_level_faults_store_nothing(
    store: TimeSeriesStore, data: bytes, topic_gateway: str, reason: str
) -> None:
    with pytest.raises(BatchRefused) as info:
        service(store).handle(data, topic_gateway)
    assert info.value.reason == reason
    assert store.count("energy") == 0


def test_commit_writes_several_batches_at_once_and_acks_each(store: TimeSeriesStore) -> None:
    other = GatewayInfo("gw-2", "client-b", "site-2", {"fc-1": DeviceRef("dev-2", "fan")})
    svc = service(store, StaticDirectory({"gw-1": GW, "gw-2": other}))
    a = svc.prepare(encode_batch("gw-1", [energy(1), energy(2)]), "gw-1")
    b = svc.prepare(encode_batch("gw-2", [energy(1, device="fc-1")]), "gw-2")
    acks = svc.commit([a, b])
    assert [(x.gateway_id, x.ranges) for x in acks] == [("gw-1", [(1, 2)]), ("gw-2", [(1, 1)])]
    assert store.count("energy", gateway="gw-1") == 2
    assert store.count("energy", gateway="gw-2") == 1


def test_a_device_registered_a_moment_ago_is_accepted(
    tmp_path: Path, store: TimeSeriesStore
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions.begin() as s:
        add_gateway(s, "gw-1")
        s.add(Device(gateway_id="gw-1", name="cc-1", asset_type="compressor"))
    directory = SqlDirectory(sessions, refresh_s=3600, min_reload_s=0)
    svc = service(store, directory)
    first = svc.handle(encode_batch("gw-1", [energy(1), energy(2, device="cc-2")]), "gw-1")
    assert first.rejected == [(2, "unknown_device")]
    with sessions.begin() as s:
        s.add(Device(gateway_id="gw-1", name="cc-2", asset_type="compressor"))
    second = svc.handle(encode_batch("gw-1", [energy(3, device="cc-2")]), "gw-1")
    assert second.ranges == [(3, 3)] and second.rejected == []
    with Session(engine) as s:
        device = s.query(Device).filter_by(name="cc-2").one()
    latest = store.latest(device.id)
    assert latest["energy"].fields == {"energy": 13.0}
    assert latest["energy"].tags["client"] == first_client_id(sessions)
    # Read once, again for the unknown cc-2, and again when cc-2 came back: not per record.
    assert directory.reads == 3


def first_client_id(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        return s.query(Client).one().id
