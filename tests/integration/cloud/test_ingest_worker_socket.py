"""The ingest worker's MQTT connection to a real Mosquitto sends without Nagle's delay.

With Nagle's algorithm on, an ack published while the broker had not yet acknowledged the
worker's previous packet waited for the broker's delayed ACK (40 ms on Linux), which at
a few batches a second it often did; so did the broker's own sockets until the shipped
configuration turned ``set_tcp_nodelay`` on.
"""

from __future__ import annotations

import socket
from pathlib import Path

from support import cloud_stub as stub

from cloud.ingest.directory import StaticDirectory
from cloud.ingest.service import IngestService
from cloud.ingest.worker import IngestWorker
from cloud.settings import Settings
from cloud.tsdb import open_store

SHIPPED_CONF = Path(__file__).resolve().parents[3] / "deploy" / "cloud" / "mosquitto.conf"


def test_the_worker_socket_has_tcp_nodelay(tmp_path: Path) -> None:
    broker = stub.Broker(tmp_path)
    broker.start()
    store = open_store(Settings(tsdb="sqlite", tsdb_sqlite_path=tmp_path / "ts.db"))
    settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port)
    worker = IngestWorker(settings, IngestService(store, StaticDirectory({})), client_id="w1")
    try:
        worker.start()
        sock = worker._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        worker.stop()
        store.close()
        broker.stop()


def test_the_shipped_broker_config_turns_nagle_off() -> None:
    lines = [line.split() for line in SHIPPED_CONF.read_text().splitlines()]
    assert ["set_tcp_nodelay", "true"] in lines
