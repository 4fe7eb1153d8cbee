"""Smoke tests for the real-server fixtures: each server does its basic job."""

from __future__ import annotations

import queue
import secrets
import threading
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from psycopg import sql

pytestmark = pytest.mark.integration

WAIT_S = 10.0


class _Client:
    """A paho-mqtt client on its own network thread, with connect/subscribe waits."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self.granted: list[ReasonCode] = []
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S), f"{client_id} did not connect in {WAIT_S} s"
        assert self.connect_reason is not None
        assert not self.connect_reason.is_failure, self.connect_reason

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.connect_reason = reason
        self.connected.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        self.granted = reasons
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mosquitto_delivers_a_qos1_message(mosquitto_broker: Any) -> None:
    topic = f"edgewatch/test/{secrets.token_hex(4)}/features"
    payload = b'{"schema_version": 1, "seq": 42}'
    subscriber = _Client(mosquitto_broker.host, mosquitto_broker.port, "ew-test-sub")
    try:
        subscriber.client.subscribe(topic, qos=1)
        assert subscriber.subscribed.wait(WAIT_S), "no SUBACK"
        assert [reason.value for reason in subscriber.granted] == [1]

        publisher = _Client(mosquitto_broker.host, mosquitto_broker.port, "ew-test-pub")
        try:
            info = publisher.client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=WAIT_S)
            assert info.is_published()
        finally:
            publisher.close()

        message = subscriber.messages.get(timeout=WAIT_S)
        assert message.topic == topic
        assert message.payload == payload
        assert message.qos == 1
    finally:
        subscriber.close()


def test_influxdb_writes_and_queries_points(influxdb: Any) -> None:
    database = f"edgewatch_smoke_{secrets.token_hex(4)}"
    with httpx.Client(base_url=influxdb.url, timeout=WAIT_S) as http:
        created = http.post("/query", data={"q": f'CREATE DATABASE "{database}"'})
        assert created.status_code == 200, created.text
        assert "error" not in created.json()["results"][0]

        lines = (
            "compressor,gateway=gw-1,asset=cc-7 discharge_temp_c=71.5,current_a=4.25 1700000000\n"
            "compressor,gateway=gw-1,asset=cc-7 discharge_temp_c=72.0,current_a=4.5 1700000060\n"
        )
        written = http.post("/write", params={"db": database, "precision": "s"}, content=lines)
        assert written.status_code == 204, written.text

        answer = http.get(
            "/query",
            params={
                "db": database,
                "epoch": "s",
                "q": "SELECT discharge_temp_c, current_a FROM compressor "
                "WHERE asset = 'cc-7' ORDER BY time ASC",
            },
        )
        assert answer.status_code == 200, answer.text
        series = answer.json()["results"][0]["series"]
        assert len(series) == 1
        assert series[0]["name"] == "compressor"
        assert series[0]["columns"] == ["time", "discharge_temp_c", "current_a"]
        assert series[0]["values"] == [[1700000000, 71.5, 4.25], [1700000060, 72.0, 4.5]]


def test_postgres_database_is_fresh_and_usable(postgres_db: str) -> None:
    with psycopg.connect(postgres_db) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        assert name[0].startswith("edgewatch_test_")
        assert name[0] not in {"postgres", "root", "template1"}

        # The database is shared by the whole session: a unique table keeps this test apart.
        table = sql.Identifier(f"smoke_{secrets.token_hex(4)}")
        conn.execute(
            sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, asset text NOT NULL)").format(table)
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (asset) VALUES (%s), (%s)").format(table), ("cc-7", "fc-2")
        )
        select = sql.SQL("SELECT id, asset FROM {} ORDER BY id").format(table)
        rows = conn.execute(select).fetchall()
        assert rows == [(1, "cc-7"), (2, "fc-2")]
