"""The whole agent against the simulator and a real Mosquitto.

A simulated gateway (a compressor and a fan behind one Modbus TCP endpoint, physics
running at 60x) is polled by an :class:`~edge_agent.agent.Agent` that scores the
compressor with a signed ONNX model and ships everything over MQTT to a stand-in cloud
that decodes every batch with :mod:`edge_agent.protocol` and acks what it received.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from support.agents import running_agent
from support.models import Publisher

from edge_agent.agent import Agent
from edge_agent.cli import main as agent_main
from edge_agent.config import load_config
from edge_agent.protocol import (
    Ack,
    Record,
    ack_topic,
    coalesce,
    decode_batch,
    encode_ack,
    up_topic,
)
from firmware_sim.clock import SimClock
from firmware_sim.engine import FleetSimulation
from firmware_sim.fleet import parse_fleet, profiles_of
from firmware_sim.modbus.server import ServerThread, SimServer, endpoint_configs

pytestmark = pytest.mark.integration

GW = "gw-e2e"
FLEET: dict[str, Any] = {
    "schema_version": 1,
    "name": "e2e",
    "seed": 5,
    "start": "2026-07-01T10:00:00Z",
    "clients": [
        {
            "id": "c1",
            "sites": [
                {
                    "id": "s1",
                    "kind": "office",
                    "floor_area_m2": 3000,
                    "location": {"lat": 40.4, "lon": -3.7},
                    "gateways": [
                        {
                            "id": GW,
                            "devices": [
                                {
                                    "id": "cc-1",
                                    "asset_type": "compressor",
                                    "variant": "split_ac",
                                    "profile": "ew-cc100",
                                    "unit_id": 1,
                                    "install_date": "2022-01-01",
                                    "rated_power_kw": 8,
                                },
                                {
                                    "id": "fan-1",
                                    "asset_type": "fan",
                                    "variant": "supply",
                                    "profile": "ew-fc200",
                                    "unit_id": 2,
                                    "install_date": "2022-01-01",
                                    "rated_power_kw": 3,
                                },
                            ],
                        }
                    ],
                }
            ],
        }
    ],
}
MODEL_FEATURES = [
    "discharge_temp__mean",
    "discharge_pressure__mean",
    "current_l1__mean",
    "voltage__mean",
]


class StandInCloud:
    """Subscribes to the gateway's uplink, decodes each batch, keeps the records, acks."""

    def __init__(self, host: str, port: int) -> None:
        self.records: dict[int, Record] = {}
        self.batches = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-cloud", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(up_topic(GW), qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        batch = decode_batch(msg.payload, expected_gateway=GW)
        with self.lock:
            self.batches += 1
            for r in batch.records:
                self.records[r.seq] = r
        ack = Ack(GW, coalesce(r.seq for r in batch.records))
        client.publish(ack_topic(GW), encode_ack(ack), qos=1)

    def by_kind(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = defaultdict(list)
        with self.lock:
            for r in self.records.values():
                out[str(r.kind)].append(r)
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextmanager
def simulator() -> Iterator[int]:
    fleet = parse_fleet(FLEET, "<e2e>")
    profiles = profiles_of(fleet)
    source = FleetSimulation(fleet, profiles, step_s=10)
    server = SimServer(
        endpoint_configs(fleet.gateways(), profiles),
        source,
        SimClock(fleet.start, 60),
        tick_s=0.1,
    )
    with ServerThread(server):
        yield int(server.endpoint(GW).port)  # type: ignore[attr-defined]


def agent_config(tmp_path: Path, modbus_port: int, mqtt_port: int, publisher: Publisher) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    update = publisher.update(
        1,
        mu=[80.0, 25.0, 15.0, 400.0],
        sd=[10.0, 3.0, 3.0, 5.0],
        threshold=1e9,
        feature_names=MODEL_FEATURES,
        window_s=2,
        fill_values=[80.0, 25.0, 15.0, 400.0],
    )
    publisher.write_folder(models / "compressor", update)
    config = {
        "schema_version": 1,
        "gateway": {"id": GW},
        "buses": [
            {"id": "sim", "type": "tcp", "host": "127.0.0.1", "port": modbus_port, "timeout_s": 0.5}
        ],
        "poll_groups": [
            {"name": "fast", "period_s": 0.25, "window_s": 2},
            {"name": "default", "period_s": 0.5, "window_s": 2},
            {"name": "slow", "period_s": 1, "window_s": 2},
        ],
        "devices": [
            {"id": "cc-1", "bus": "sim", "unit_id": 1, "profile": "ew-cc100"},
            {"id": "fan-1", "bus": "sim", "unit_id": 2, "profile": "ew-fc200"},
        ],
        "alarms": {
            "thresholds": [
                {
                    "name": "ambient_seen",
                    "point": "ambient_temp",
                    "above": -50,
                    "clear_below": -60,
                    "min_duration_s": 0.5,
                    "severity": "info",
                },
            ],
        },
        "models": {
            "dir": "models",
            "trusted_keys": [str(publisher.public_pem(tmp_path / "k.pem"))],
        },
        "buffer": {"path": "state/buffer.sqlite"},
        "uplink": {
            "mqtt": {
                "host": "127.0.0.1",
                "port": mqtt_port,
                "tls": None,
                "batch": {"max_delay_s": 0.05},
            }
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def wait_for(predicate: Any, what: str, timeout: float = 20.0, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_the_agent_polls_scores_alarms_and_ships_everything_acked(
    tmp_path: Path, mosquitto_broker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud = StandInCloud(mosquitto_broker.host, mosquitto_broker.port)
    publisher = Publisher()
    with simulator() as modbus_port:
        path = agent_config(tmp_path, modbus_port, mosquitto_broker.port, publisher)
        agent = Agent(load_config(path), health_every_s=1.0)
        wanted = {"features", "score", "energy", "alarm", "health"}

        def everything_arrived() -> bool:
            kinds = cloud.by_kind()
            devices = {r.device_id for r in kinds.get("features", [])}
            complete = [
                r
                for r in kinds.get("features", [])
                if r.device_id == "cc-1"
                and r.body["group"] == "default"
                and r.body["n_samples"] >= 2
            ]
            return wanted <= set(kinds) and devices == {"cc-1", "fan-1"} and bool(complete)

        with running_agent(agent) as thread:
            try:
                wait_for(everything_arrived, "not every kind of record arrived")
                time.sleep(1.0)  # let the last acks land
                depth = agent.store.depth()
            finally:
                cloud.close()
    assert not thread.is_alive()
    kinds = cloud.by_kind()
    assert wanted <= set(kinds), f"missing record kinds: {wanted - set(kinds)}"

    features = [
        r for r in kinds["features"] if r.device_id == "cc-1" and r.body["group"] == "default"
    ]
    full = [r for r in features if r.body["n_samples"] >= 2]  # the first window may be partial
    assert full, "no complete window of the compressor's default group"
    f = full[-1].body["features"]
    assert 0 < f["discharge_pressure__mean"] < 60  # gauge bar, as the simulator serves it
    assert f["voltage__mean"] == pytest.approx(400, abs=30)
    assert {r.device_id for r in kinds["features"]} == {"cc-1", "fan-1"}

    scores = kinds["score"]
    assert {r.device_id for r in scores} == {"cc-1"}  # only compressors have a model
    s = scores[0].body
    assert s["model_id"] == "cc-zscore" and s["model_version"] == 1
    assert s["anomalous"] is False and s["score"] >= 0
    assert s["top_signals"] and s["top_signals"][0][0] in {f.split("__")[0] for f in MODEL_FEATURES}

    energy = [r for r in kinds["energy"] if r.device_id == "cc-1"]
    assert energy and energy[0].body["values"]["energy"] > 0
    raised = [r for r in kinds["alarm"] if r.body["name"] == "ambient_seen"]
    assert {r.device_id for r in raised} == {"cc-1"} and raised[0].body["state"] == "raised"
    health = kinds["health"][-1].body
    assert health["devices"]["cc-1"]["state"] == "ok" and health["uplink"]["connected"]
    assert 0 <= health["devices"]["cc-1"]["late_ms"] < 1000  # how late its polls start

    # sequence numbers are unique and gap-free from 1, and everything sent was acked
    seqs = sorted(cloud.records)
    assert seqs == list(range(1, len(seqs) + 1))
    assert depth <= 5  # at most the last poll's records were still in flight

    # the status file the agent left behind, through the CLI
    assert agent_main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"gateway {GW}" in out and "compressor cc-zscore v1" in out
    assert "cc-1" in out and "fan-1" in out and "late ms" in out


def test_signed_model_updates_arrive_over_the_downlink_and_bad_ones_are_refused(
    tmp_path: Path, mosquitto_broker: Any
) -> None:
    from edge_agent.protocol import ModelUpdate, PollNow, down_topic, encode_downlink

    cloud = StandInCloud(mosquitto_broker.host, mosquitto_broker.port)
    publisher = Publisher()
    with simulator() as modbus_port:
        path = agent_config(tmp_path, modbus_port, mosquitto_broker.port, publisher)
        agent = Agent(load_config(path), health_every_s=1.0)

        def versions() -> set[int]:
            return {r.body["model_version"] for r in cloud.by_kind().get("score", [])}

        def send(update: Any, onnx: bytes | None = None) -> None:
            message = ModelUpdate(
                update.manifest["version"],
                update.manifest_bytes,
                update.signature.to_json(),
                onnx if onnx is not None else update.onnx_bytes,
            )
            cloud.client.publish(down_topic(GW, "model"), encode_downlink(message), qos=1)

        with running_agent(agent):
            try:
                wait_for(lambda: 1 in versions(), "no score from model v1")
                good = publisher.update(
                    2,
                    mu=[80.0, 25.0, 15.0, 400.0],
                    sd=[10.0, 3.0, 3.0, 5.0],
                    threshold=1e9,
                    feature_names=MODEL_FEATURES,
                    window_s=2,
                )
                send(good, onnx=good.onnx_bytes + b"tampered")  # hash mismatch: refused
                stranger = Publisher().update(3, feature_names=MODEL_FEATURES, window_s=2)
                send(stranger)  # signed by a key the gateway does not trust: refused
                wait_for(
                    lambda: (
                        agent.counts["model_refused_hash_mismatch"] == 1
                        and agent.counts["model_refused_unknown_key"] == 1
                    ),
                    "the bad updates were not refused",
                )
                assert agent.models.model_for("compressor").version == 1  # type: ignore[union-attr]
                send(good)
                wait_for(lambda: 2 in versions(), "no score from model v2")
                assert agent.counts["model_updates"] == 1
                polls = agent.poller.stats()["fan-1"].polls
                cloud.client.publish(
                    down_topic(GW, "command"), encode_downlink(PollNow("r-1", ["fan-1"])), qos=1
                )
                wait_for(lambda: agent.counts["poll_now"] == 1, "poll now not received")
                wait_for(
                    lambda: agent.poller.stats()["fan-1"].polls >= polls + 3, "fan-1 not polled"
                )
            finally:
                cloud.close()


def test_edgewatch_agent_run_restarts_itself_on_a_signed_config_change(
    tmp_path: Path, mosquitto_broker: Any
) -> None:
    import signal
    import subprocess
    import sys

    from edge_agent.models import sign_manifest
    from edge_agent.protocol import ConfigChange, down_topic, encode_downlink

    cloud = StandInCloud(mosquitto_broker.host, mosquitto_broker.port)
    publisher = Publisher()
    with simulator() as modbus_port:
        path = agent_config(tmp_path, modbus_port, mosquitto_broker.port, publisher)
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def config_versions() -> set[int]:
            return {r.body["config_version"] for r in cloud.by_kind().get("health", [])}

        def alive() -> None:
            assert proc.poll() is None, f"the agent exited: {proc.communicate()}"

        try:
            wait_for(lambda: 0 in config_versions(), "no health from config_version 0", 30, alive)
            new = yaml.safe_load(path.read_text(encoding="utf-8"))
            new["config_version"] = 7
            new["alarms"]["thresholds"][0]["name"] = "ambient_seen_v7"
            document = yaml.safe_dump(new).encode()
            signature = sign_manifest(document, publisher.key).to_json()
            message = encode_downlink(ConfigChange(7, document, signature))
            cloud.client.publish(down_topic(GW, "config"), message, qos=1)
            wait_for(lambda: 7 in config_versions(), "no restart on version 7", 30, alive)
            wait_for(
                lambda: any(
                    r.body["name"] == "ambient_seen_v7" for r in cloud.by_kind().get("alarm", [])
                ),
                "the new config's alarm never came",
                30,
                alive,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
            cloud.close()
    assert proc.returncode == 0, err
    assert "config_version 7 kept" in err and "config_version 7" in err
    seqs = sorted(cloud.records)
    assert seqs == list(range(1, len(seqs) + 1))  # one sequence across the restart
