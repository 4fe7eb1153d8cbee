"""The demo's registry and gateways: what an operator would set up with ``edgewatch-cloud
admin`` and an installer would put on each gateway, done in one go.

:func:`register` writes clients, sites (tariff, floor area, time zone), gateways with
their credentials, devices, a webhook desk per client, a parts depot with technicians, and
one login per role into a migrated registry. :func:`gateway_configs` writes each gateway's
agent config, its uplink token and the shipped anomaly models signed with a demo key.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth import Principal
from cloud.auth.gateways import issue_credential
from cloud.db import session_scope
from cloud.errors import Conflict
from cloud.registry import services
from cloud.registry.models import Client, Device
from cloud.settings import DEFAULT_MODELS_DIR
from cloud.workorders import admin
from edge_agent.profiles import DeviceProfile, PointKind
from edgewatch_demo.fleet import CLIENTS, SITES, Plan
from models.export import sign_folder

POLL_S = 300.0
"""Simulated seconds between polls: the shipped models were trained on 5-minute rows."""
WINDOW_S = 12 * 3600.0
HOP_S = 3600.0
COUNTER_POLL_S = 900.0
"""Energy, run-hour and start counters: read every 15 simulated minutes (the report's
hourly energy needs no more), in their own poll group, since no model uses them."""


@dataclass(frozen=True, slots=True)
class Login:
    email: str
    password: str
    role: str
    client: str | None = None


@dataclass
class World:
    """What :func:`register` made: ids by demo name, secrets to hand out."""

    clients: dict[str, str] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    gateway_secrets: dict[str, str] = field(default_factory=dict)
    gateway_users: dict[str, str] = field(default_factory=dict)
    """The MQTT user name of each gateway's credential."""
    logins: list[Login] = field(default_factory=list)


def _password() -> str:
    return secrets.token_urlsafe(12)


def register(sessions: sessionmaker[Session], p: Plan, desk_url: str, grace_s: int) -> World:
    """The demo's registry; :class:`~cloud.errors.Conflict` if it holds clients already
    (the demo wants an empty registry, so that what it counts is its own)."""
    system = Principal.system()
    world = World()
    with session_scope(sessions) as s:
        if s.scalar(select(Client.id).limit(1)) is not None:
            raise Conflict(
                "the registry holds clients already; the demo needs an empty one "
                "(a new SQLite folder with --out, or an empty PostgreSQL database)"
            )
        for key, name in CLIENTS.items():
            world.clients[key] = services.create_client(s, system, name=name).id
        depot = admin.create_depot(s, name="Central depot", latitude=40.4, longitude=-3.7)
        for i, (lat, lon) in enumerate(((25.2, 55.3), (40.4, -3.7), (-33.9, 151.2)), 1):
            admin.create_technician(
                s, name=f"Technician {i}", depot=depot.id, latitude=lat, longitude=lon,
                skills=["refrigeration", "electrical", "mechanical", "hvac"],
            )  # fmt: skip
        for site in SITES:
            row = services.create_site(
                s, system, client_id=world.clients[site.client], name=site.name,
                kind=site.kind, floor_area_m2=site.floor_area_m2, latitude=site.lat,
                longitude=site.lon, timezone=site.timezone, tariff=site.tariff,
            )  # fmt: skip
            world.sites[site.id] = row.id
            gateway = services.create_gateway(s, system, gateway_id=site.gateway, site_id=row.id)
            issued = issue_credential(s, gateway, grace_s=grace_s)
            world.gateway_secrets[site.gateway] = issued.secret
            world.gateway_users[site.gateway] = issued.credential.mqtt_username
            for u in site.units:
                device = services.create_device(
                    s, system, gateway_id=site.gateway, name=u.id, asset_type=u.asset_type,
                    profile=u.profile, make="EdgeWatch Sim", model=u.profile.upper(),
                    location=f"{u.variant.replace('_', ' ')} {u.unit_id}",
                )  # fmt: skip
                world.devices[u.id] = device.id
        for key in CLIENTS:
            admin.create_desk(s, client_id=world.clients[key], kind="webhook", url=desk_url)
        logins = [Login("admin@demo.edgewatch", _password(), "admin")]
        logins += [
            Login(f"fm-{key}@demo.edgewatch", _password(), "facility_manager", key)
            for key in CLIENTS
        ]
        logins.append(Login("desk@demo.edgewatch", _password(), "service_desk"))
        for login in logins:
            services.create_user(
                s, system, email=login.email, role=login.role, password=login.password,
                client_id=world.clients[login.client] if login.client else None,
            )  # fmt: skip
        world.logins = logins
        # The devices were installed before the simulated period: their baseline starts
        # with it (the scorer learns each device from its first days of windows).
        for device in s.scalars(select(Device)):
            device.created_at = p.start
    return world


def sign_models(folder: Path) -> Path:
    """The shipped anomaly detectors (not the cloud's risk models) in ``folder/models``,
    signed with a new demo key; the public key's PEM path."""
    models = folder / "models"
    shutil.rmtree(models, ignore_errors=True)
    for asset in ("compressor", "fan"):
        shutil.copytree(
            DEFAULT_MODELS_DIR / asset, models / asset, ignore=shutil.ignore_patterns("risk")
        )
    key = Ed25519PrivateKey.generate()
    sign_folder(models, key)
    pem = folder / "model-publisher.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pem


def gateway_configs(
    folder: Path,
    world: World,
    profiles: dict[str, DeviceProfile],
    endpoints: dict[str, str | int],
    speed: float,
    uplink: dict[str, Any],
) -> dict[str, Path]:
    """Each gateway's agent config in ``folder/<gateway>/agent.yaml``; ``endpoints`` holds
    the simulator's TCP port or pty path per gateway, ``uplink`` the ``uplink`` section
    without the token file (added here). Periods are wall seconds: the simulated ones
    divided by ``speed``."""
    pem = sign_models(folder)
    out = {}
    for site in SITES:
        gw_dir = folder / site.gateway
        gw_dir.mkdir(parents=True, exist_ok=True)
        token = gw_dir / "uplink.token"
        token.write_text(world.gateway_secrets[site.gateway], encoding="utf-8")
        token.chmod(0o600)
        where = endpoints[site.gateway]
        bus: dict[str, Any] = {"id": "bus", "timeout_s": 1.0}
        if site.transport == "tcp":
            bus |= {"type": "tcp", "host": "127.0.0.1", "port": int(where)}
        else:
            bus |= {"type": "rtu", "port": str(where), "baudrate": 115200, "parity": "N"}
        link = {kind: dict(section) for kind, section in uplink.items()}
        if "https" in link:
            link["https"]["token_file"] = str(token)
        else:
            link["mqtt"] |= {
                "username": world.gateway_users[site.gateway],
                "password_file": str(token),
            }
        config = {
            "schema_version": 1,
            "gateway": {"id": site.gateway},
            "buses": [bus],
            "poll_groups": [
                {
                    "name": "risk",
                    "period_s": POLL_S / speed,
                    "window_s": WINDOW_S,
                    "hop_s": HOP_S,
                },
                {"name": "counters", "period_s": COUNTER_POLL_S / speed, "window_s": HOP_S},
            ],
            "devices": [
                {
                    "id": u.id,
                    "bus": "bus",
                    "unit_id": u.unit_id,
                    "profile": u.profile,
                    "poll_groups": {
                        pt.name: "counters" if pt.kind == PointKind.COUNTER else "risk"
                        for pt in profiles[u.id].points
                    },
                }
                for u in site.units
            ],
            # A stall of a loaded machine is minutes of simulated time: a device counts
            # as offline only after half a simulated day without an answer.
            "alarms": {"offline_after_s": 12 * 3600},
            "models": {"dir": str(folder / "models"), "trusted_keys": [str(pem)]},
            "buffer": {"path": str(gw_dir / "buffer.sqlite")},
            "uplink": link,
        }
        path = gw_dir / "agent.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        out[site.gateway] = path
    return out
