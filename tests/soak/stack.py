"""The cloud side of the soak, on real servers: a private PostgreSQL cluster (the registry),
a private InfluxDB, and Mosquitto running the shipped ``deploy/cloud/mosquitto.conf``
(only its ports, paths and user rewritten, by the helpers of
``tests/integration/cloud/test_mosquitto_deploy.py``) with the password and ACL files that
``edgewatch-cloud admin mosquitto-files`` writes from that registry.

Every gateway is registered with its own credential; one more gateway, the rogue, has a
credential and a device too and is used only to send what no agent would.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from conftest import MOSQUITTO, ServerStartError, _find_binary, free_port
from integration.cloud.test_mosquitto_deploy import (
    DEPLOYED,
    Clients,
    DeployedBroker,
    Pki,
    adapt,
    make_pki,
)
from support.influx import RestartableInflux
from support.pg_cluster import PrivateCluster

from cloud.auth.gateways import issue_credential
from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.registry.models import Client, Device, Gateway, Site, SiteKind

INGEST_USER = "_ingest"
INFLUX_DATABASE = "edgewatch_soak"
DEVICES_PER_GATEWAY = 2
ROGUE = "gw-soak-rogue"
ROGUE_DEVICE = "cc-rogue-1"


def gateway_id(index: int) -> str:
    return f"gw-soak-{index}"


def device_names(index: int) -> list[str]:
    return [f"cc-{index}-{unit}" for unit in range(1, DEVICES_PER_GATEWAY + 1)]


@dataclass
class Login:
    gateway_id: str
    secret: str
    devices: dict[str, str]
    """Device name (the agent's id) → registry id (the ``device`` tag of its points)."""


@dataclass
class Stack:
    """The servers and what the gateways and cloud processes need to reach them."""

    workdir: Path
    gateways: int
    pg: PrivateCluster | None = None
    influx: RestartableInflux | None = None
    broker: DeployedBroker | None = None
    pki: Pki | None = None
    database_url: str = ""
    ingest_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    logins: dict[str, Login] = field(default_factory=dict)
    password_file: Path | None = None
    acl_file: Path | None = None

    # ---- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pg = PrivateCluster()
        self.pg.start()
        url = self.pg.create_database("edgewatch")
        self.database_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.influx = RestartableInflux(self.workdir / "influx")
        self.influx.start()
        self._seed_registry()
        self._write_broker_files()
        self.pki = make_pki(self.workdir)
        self.broker = self._start_broker()

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.influx is not None:
            self.influx.stop()
        if self.pg is not None:
            self.pg.destroy()

    # ---- the registry --------------------------------------------------------------------

    def _seed_registry(self) -> None:
        migrate(self.database_url)
        engine = make_engine(self.database_url)
        sessions = make_sessionmaker(engine)
        names = {gateway_id(i): device_names(i) for i in range(self.gateways)}
        names[ROGUE] = [ROGUE_DEVICE]
        try:
            with sessions.begin() as s:
                client = Client(name="Soak Hotels")
                s.add(client)
                s.flush()
                site = Site(client_id=client.id, name="Soak Tower", kind=SiteKind.HOTEL)
                s.add(site)
                s.flush()
                for gw, devices in names.items():
                    gateway = Gateway(id=gw, site_id=site.id)
                    s.add(gateway)
                    s.flush()
                    ids = {}
                    for name in devices:
                        device = Device(gateway_id=gw, name=name, asset_type="compressor")
                        s.add(device)
                        s.flush()
                        ids[name] = device.id
                    secret = issue_credential(s, gateway, grace_s=0).secret
                    self.logins[gw] = Login(gw, secret, ids)
        finally:
            engine.dispose()

    def cloud_env(self) -> dict[str, str]:
        """The environment of every ``edgewatch-cloud`` process (the caller's own
        ``EDGEWATCH_CLOUD_*`` variables left out)."""
        assert self.influx is not None and self.broker is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_CLOUD_")}
        return env | {
            "EDGEWATCH_CLOUD_DATABASE_URL": self.database_url,
            "EDGEWATCH_CLOUD_TSDB": "influxdb",
            "EDGEWATCH_CLOUD_INFLUX_URL": self.influx.url,
            "EDGEWATCH_CLOUD_INFLUX_DATABASE": INFLUX_DATABASE,
            "EDGEWATCH_CLOUD_MQTT_HOST": "127.0.0.1",
            "EDGEWATCH_CLOUD_MQTT_PORT": str(self.broker.local_port),
            "EDGEWATCH_CLOUD_MQTT_USERNAME": INGEST_USER,
            "EDGEWATCH_CLOUD_MQTT_PASSWORD": self.ingest_password,
            # Registry reads every second instead of every 30 s: a PostgreSQL outage meets
            # ingest's lookups instead of slipping between them.
            "EDGEWATCH_CLOUD_INGEST_REGISTRY_REFRESH_S": "1",
            "EDGEWATCH_CLOUD_SCORER_POLL_S": "0.5",
        }

    def _write_broker_files(self) -> None:
        """``edgewatch-cloud admin mosquitto-files``, the command the shipped broker config
        names, run as a process against the registry."""
        self.password_file = self.workdir / "edgewatch.passwd"
        self.acl_file = self.workdir / "edgewatch.acl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_CLOUD_")}
        env["EDGEWATCH_CLOUD_DATABASE_URL"] = self.database_url
        done = subprocess.run(
            [sys.executable, "-m", "cloud.cli", "admin", "mosquitto-files",
             "--password-file", str(self.password_file), "--acl-file", str(self.acl_file),
             "--ingest-user", INGEST_USER, "--ingest-password-stdin"],
            input=f"{self.ingest_password}\n", capture_output=True, text=True, env=env,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

    # ---- the broker ----------------------------------------------------------------------

    def _start_broker(self) -> DeployedBroker:
        """The shipped config with its ports, paths and user rewritten; persistence on (as
        shipped) in a folder of its own. Ports are picked again if one was taken."""
        assert self.pki is not None and self.password_file and self.acl_file
        binary = _find_binary(MOSQUITTO)
        workdir = self.workdir / "mosquitto"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 4):
            tls_port, local_port = free_port(), free_port()
            conf = workdir / f"mosquitto-{attempt}.conf"
            conf.write_text(
                adapt(
                    DEPLOYED.read_text(),
                    ports={"8883": tls_port, "1883": local_port},
                    paths={
                        "certfile": str(self.pki.cert_file),
                        "keyfile": str(self.pki.key_file),
                        "password_file": str(self.password_file),
                        "acl_file": str(self.acl_file),
                        "persistence_location": f"{workdir / 'data'}/",
                    },
                    user=pwd.getpwuid(os.getuid()).pw_name,
                )
            )
            broker = DeployedBroker(binary, workdir, conf, tls_port, local_port, self.pki.ca_file)
            try:
                broker.start()
            except ServerStartError as exc:
                if not exc.exited or attempt == 3:
                    raise
                continue
            return broker
        raise AssertionError("unreachable")

    def kill_broker(self) -> None:
        """SIGKILL: a broker crash (nothing saved since its last autosave)."""
        assert self.broker is not None and self.broker.proc is not None
        self.broker.proc.kill()
        self.broker.proc.wait(10)
        self.broker.proc = None

    def clients(self) -> Clients:
        """MQTT 5 connections to the broker (TLS listener for gateways, local for ingest)."""
        assert self.broker is not None
        return Clients(self.broker)

    def broker_alive(self) -> bool:
        return (
            self.broker is not None
            and self.broker.proc is not None
            and (self.broker.proc.poll() is None)
        )
