"""The whole system on one machine: simulator → agents → cloud → risk → work orders →
service desk → energy report, on an accelerated clock.

One process plays the fleet over real Modbus (TCP endpoints and an RTU one on a pty) and
hosts the demo's service desk; child processes run one agent per gateway, the API (the
HTTPS uplink and the dashboard), the risk scorer with a delivery worker, and, when a
broker is named, an MQTT ingest worker. The registry and the time series are SQLite files
in ``<out>/state`` unless PostgreSQL or InfluxDB are named. When the simulated period is
over, the agents' buffers drain, the month's energy report is made for each client, and a
summary says what failed, what was warned about and how early, and where to look.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import secrets
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select

from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.delivery.worker import pending
from cloud.registry.models import Device
from cloud.reports.collect import Options as ReportOptions
from cloud.reports.service import generate_now
from cloud.settings import Settings, load_settings
from cloud.tsdb import open_store
from cloud.workorders.models import Desk, WorkOrder
from edgewatch_demo.fleet import (
    BASELINE_DAYS,
    CLIENTS,
    SITES,
    Plan,
    failing_units,
    fleet_document,
    plan,
)
from edgewatch_demo.processes import Gate, run_agent, run_api, run_ingest, run_workers
from edgewatch_demo.sink import WebhookSink
from edgewatch_demo.world import POLL_S, World, gateway_configs, register
from firmware_sim.clock import SimClock
from firmware_sim.engine import FleetSimulation
from firmware_sim.fleet import parse_fleet, profiles_of
from firmware_sim.groundtruth import GroundTruthEvent
from firmware_sim.modbus.server import ServerThread, SimServer, endpoint_configs

H = 3600.0
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 60.0


class DemoError(Exception):
    """The demo could not run; the message says why."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    out: Path
    days: float
    speed: float
    port: int
    keep_running: bool = False
    mqtt: tuple[str, int] | None = None
    influx_url: str | None = None
    database_url: str | None = None
    report: bool = True
    status_every_s: float = 5.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback
            return int(r.status), r.read()
    except OSError:
        return 0, b""


_RECORDS = re.compile(r'^edgewatch_ingest_records_total\{kind="(\w+)"\} ([0-9.e+]+)$', re.M)


def _records(metrics_url: str) -> dict[str, int]:
    status, body = _http_get(metrics_url)
    if status != 200:
        return {}
    return {k: int(float(v)) for k, v in _RECORDS.findall(body.decode())}


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.o = options
        self.print: Callable[[str], None] = lambda line: print(line, file=out, flush=True)
        self.plan: Plan = plan(datetime.now(UTC), options.days)
        self.state = options.out / "state"
        self.children: dict[str, SpawnProcess] = {}
        self.ctx = mp.get_context("spawn")
        self.failures: list[GroundTruthEvent] = []
        self.origin: float | None = None
        self.env_file = options.out / "cloud.env"

    # ---- set-up ------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        o = self.o
        env = {
            "EDGEWATCH_CLOUD_ENVIRONMENT": "development",
            "EDGEWATCH_CLOUD_SECRET_KEY": secrets.token_urlsafe(32),
            "EDGEWATCH_CLOUD_DATABASE_URL": o.database_url
            or f"sqlite:///{self.state / 'registry.db'}",
            "EDGEWATCH_CLOUD_TSDB_SQLITE_PATH": str(self.state / "timeseries.db"),
            "EDGEWATCH_CLOUD_API_PORT": str(o.port),
            "EDGEWATCH_CLOUD_PUBLIC_URL": f"http://127.0.0.1:{o.port}",
            "EDGEWATCH_CLOUD_DELIVERY_TIMEOUT_S": "5",
            "EDGEWATCH_CLOUD_DELIVERY_LEASE_S": "30",
            "EDGEWATCH_CLOUD_DELIVERY_IDLE_S": "0.1",
        }
        if o.influx_url:
            env |= {
                "EDGEWATCH_CLOUD_TSDB": "influxdb",
                "EDGEWATCH_CLOUD_INFLUX_URL": o.influx_url,
                "EDGEWATCH_CLOUD_INFLUX_DATABASE": "edgewatch_demo",
            }
        else:
            env["EDGEWATCH_CLOUD_TSDB"] = "sqlite"
        if o.mqtt:
            env |= {
                "EDGEWATCH_CLOUD_MQTT_HOST": o.mqtt[0],
                "EDGEWATCH_CLOUD_MQTT_PORT": str(o.mqtt[1]),
            }
        return env

    def _settings(self, env: dict[str, str]) -> Settings:
        keys: dict[str, Any] = {
            k.removeprefix("EDGEWATCH_CLOUD_").lower(): v for k, v in env.items()
        }
        return load_settings(None, **keys)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        proc = self.ctx.Process(target=target, args=args, name=name, daemon=True)
        proc.start()
        self.children[name] = proc

    def _gate(self) -> Gate:
        return Gate(self.ctx.Event(), self.ctx.Event(), self.ctx.Value("d", 0.0))

    def _wait(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            dead = [n for n, p in self.children.items() if not p.is_alive()]
            if dead:
                raise DemoError(
                    f"{', '.join(dead)} stopped while waiting for {what}; see {self.o.out / 'logs'}"
                )
            if time.monotonic() > deadline:
                raise DemoError(f"{what}: not within {timeout:.0f} s; see {self.o.out / 'logs'}")
            time.sleep(0.1)

    # ---- the run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o, p = self.o, self.plan
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(o.out / "logs", ignore_errors=True)
        for folder in (self.state, o.out / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
        (o.out / "tickets.jsonl").unlink(missing_ok=True)
        self.print(
            f"==> EdgeWatch demo: {len(SITES)} sites of {len(CLIENTS)} clients, "
            f"{sum(len(s.units) for s in SITES)} controllers; {p.days:g} simulated days "
            f"({p.start:%Y-%m-%d %H:%M} to {p.end:%Y-%m-%d %H:%M} UTC) at {o.speed:,.0f}x, "
            f"about {p.days * 86400 / o.speed:.0f} s"
        )
        env = self._env()
        settings = self._settings(env)
        self.env_file.touch(mode=0o600)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
        migrate(settings)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        sink = WebhookSink([], o.out / "tickets.jsonl").start()
        world = register(sessions, p, sink.url, settings.gateway_credential_grace_s)
        with sessions() as s:
            sink.secrets = list(s.scalars(select(Desk.secret)))
        self.print(f"    registry {settings.database_url}, time series {settings.tsdb}")

        fleet = parse_fleet(fleet_document(p), "<demo fleet>")
        profiles = profiles_of(fleet)
        started: list[float] = [float("inf")]
        clock = SimClock(
            p.start, o.speed, monotonic=lambda: max(0.0, time.monotonic() - started[0])
        )
        source = FleetSimulation(
            fleet,
            profiles,
            step_s=POLL_S,
            on_event=lambda e: self.failures.append(e) if e.event == "failure" else None,
        )
        server = SimServer(
            endpoint_configs(fleet.gateways(), profiles), source, clock, tick_s=0.02, until=p.end
        )
        summary: dict[str, Any] = {}
        try:
            with ServerThread(server) as st:
                metrics_url = self._play(env, world, server, profiles, sessions, started)
                # The clock is at the end now; the last tick may have come just before it.
                # One more brings the simulation there, so that a failure due at the last
                # instant is in the ground truth (it was missed about one run in three).
                st.call(server.tick)
            # The controllers stop answering (the simulated clock has stopped too, so no
            # agent calls them offline): what the agents hold now is all there is to ship.
            summary = self._finish(metrics_url, sessions)
            summary |= self._report(settings, sessions, world)
            summary |= self._summary(sessions, world, sink)
            (o.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
            self._print_summary(summary, world)
            if o.keep_running:
                self._keep_running()
        finally:
            self._stop_all()
            sink.stop()
            engine.dispose()
        return summary

    def _play(
        self,
        env: dict[str, str],
        world: World,
        server: SimServer,
        profiles: dict[str, Any],
        sessions: Any,
        started: list[float],
    ) -> str:
        """Start the cloud and the agents, play the simulated period; the metrics URL."""
        o, p = self.o, self.plan
        logs = o.out / "logs"
        endpoints: dict[str, str | int] = {
            gw: server.endpoint(gw).address
            if server.endpoint(gw).transport == "rtu"
            else int(server.endpoint(gw).port)  # type: ignore[attr-defined]
            for gw in server.endpoints
        }
        metrics_port = _free_port()
        if o.mqtt:
            uplink = {
                "mqtt": {
                    "host": o.mqtt[0],
                    "port": o.mqtt[1],
                    "tls": None,
                    "batch": {"max_delay_s": 0.5},
                }
            }
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        else:
            uplink = {
                "https": {
                    "url": f"http://127.0.0.1:{o.port}",
                    "timeout_s": 10,
                    "batch": {"max_delay_s": 0.5},
                }
            }
            metrics_url = f"http://127.0.0.1:{o.port}/metrics"
        configs = gateway_configs(o.out / "gateways", world, profiles, endpoints, o.speed, uplink)
        self._spawn("api", run_api, env, o.port, logs / "api.log")
        if o.mqtt:
            self._spawn("ingest", run_ingest, env, metrics_port, logs / "ingest.log")
        span = (p.start.timestamp(), p.end.timestamp())
        gates: list[Gate] = []
        for gw, path in configs.items():
            gates.append(gate := self._gate())
            self._spawn(f"agent {gw}", run_agent, path, gate, span, o.speed, logs / f"{gw}.log")
        gates.append(gate := self._gate())
        self._spawn(
            "scorer", run_workers, env, gate, span, o.speed, BASELINE_DAYS, logs / "workers.log"
        )
        api = f"http://127.0.0.1:{o.port}"
        self._wait("the API", lambda: _http_get(f"{api}/readyz")[0] == 200, READY_TIMEOUT_S)
        self._wait("the agents and the scorer", lambda: all(g.ready.is_set() for g in gates),
                   READY_TIMEOUT_S)  # fmt: skip
        origin = time.monotonic() + 0.5
        for g in gates:
            g.origin.value = origin
            g.go.set()
        started[0] = origin
        self.origin = origin
        self.print(f"    dashboard {api}/ui (logins at the end); logs in {logs}")
        wall_s = p.days * 86400 / o.speed
        next_status = origin
        while (now := time.monotonic()) < origin + wall_s:
            dead = [n for n, c in self.children.items() if not c.is_alive()]
            if dead:
                raise DemoError(f"{', '.join(dead)} stopped; see {logs}")
            if now >= next_status:
                self._status(metrics_url, sessions)
                next_status += o.status_every_s
            time.sleep(0.1)
        self._status(metrics_url, sessions)
        return metrics_url

    def _finish(self, metrics_url: str, sessions: Any) -> dict[str, Any]:
        """Ship what the agents still hold, stop them, let the desk get the last orders."""
        t0 = time.monotonic()
        drained = self._drain(metrics_url)
        for name in [n for n in self.children if n.startswith("agent")]:
            self._stop(name)
        self._wait_deliveries(sessions)
        records = _records(metrics_url)
        self.print(
            f"    the agents' buffers {'drained' if drained else 'did NOT drain'} in "
            f"{time.monotonic() - t0:.0f} s: {sum(records.values()):,} records stored"
        )
        return {"records": records, "drained": drained, "metrics_url": metrics_url}

    def sim_now(self) -> datetime:
        if self.origin is None:
            return self.plan.start
        t = self.plan.start + timedelta(seconds=(time.monotonic() - self.origin) * self.o.speed)
        return min(t, self.plan.end)

    def _status(self, metrics_url: str, sessions: Any) -> None:
        records = _records(metrics_url)
        with sessions() as s:
            orders = s.scalar(select(func.count()).select_from(WorkOrder)) or 0
        day = (self.sim_now() - self.plan.start) / timedelta(days=1)
        self.print(
            f"    day {day:4.1f} {self.sim_now():%Y-%m-%d %H:%M}  records "
            f"{sum(records.values()):>7,}  alarm events {records.get('alarm', 0):>3}  "
            f"failures {len(self.failures)}  work orders {orders}"
        )

    def _drain(self, metrics_url: str) -> bool:
        """Wait until the records stored stop growing (the agents' buffers are empty)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        last, still = -1, 0
        while time.monotonic() < deadline:
            total = sum(_records(metrics_url).values())
            still = still + 1 if total == last else 0
            if still >= 4:
                return True
            last = total
            time.sleep(0.5)
        return False

    def _wait_deliveries(self, sessions: Any) -> None:
        deadline = time.monotonic() + 30
        time.sleep(1.0)  # the scorer's last requests
        while time.monotonic() < deadline:
            with sessions() as s:
                if pending(s) == 0:
                    return
            time.sleep(0.2)

    # ---- report and summary ---------------------------------------------------------------------

    def _report(self, settings: Settings, sessions: Any, world: World) -> dict[str, Any]:
        if not self.o.report:
            return {"reports": {}}
        from cloud.reports.render import write_csv_dir

        self.print(f"==> energy reports for {self.plan.month}")
        store = open_store(settings)
        out: dict[str, Any] = {}
        try:
            for key, client_id in world.clients.items():
                t0 = time.monotonic()
                result = generate_now(
                    sessions, store, client_id, str(self.plan.month),
                    ReportOptions.from_settings(settings, baseline=False),
                )  # fmt: skip
                if result.content is None or result.outputs is None:
                    raise DemoError(f"the report for {CLIENTS[key]} failed: {result.error}")
                folder = self.o.out / "reports" / key
                folder.mkdir(parents=True, exist_ok=True)
                for name, data in (
                    ("report.html", result.outputs.html),
                    ("report.pdf", result.outputs.pdf),
                    ("report.json", result.outputs.json),
                ):
                    (folder / name).write_bytes(data)
                write_csv_dir(result.content, folder / "csv")
                out[key] = {
                    "id": result.report_id,
                    "folder": str(folder),
                    "seconds": round(time.monotonic() - t0, 1),
                }
                self.print(f"    {CLIENTS[key]}: {folder / 'report.pdf'}")
        finally:
            store.close()
        return {"reports": out}

    def _summary(self, sessions: Any, world: World, sink: WebhookSink) -> dict[str, Any]:
        names = {v: k for k, v in world.devices.items()}
        with sessions() as s:
            orders = list(s.scalars(select(WorkOrder).order_by(WorkOrder.opened_at)))
            devices = {d.id: d for d in s.scalars(select(Device))}
        failed = {e.device_id: e for e in self.failures}
        units = []
        for site, unit in failing_units():
            event = failed.get(unit.id)
            first = next((o for o in orders if names.get(o.device_id) == unit.id), None)
            opened = first.opened_at.replace(tzinfo=UTC) if first else None
            failed_at = event.time if event else None
            lead = (
                (failed_at - opened) / timedelta(hours=1)
                if opened and failed_at and opened < failed_at
                else None
            )
            units.append(
                {
                    "device": unit.id,
                    "site": site.name,
                    "fault": unit.fault,
                    "failed_at": failed_at,
                    "order_fault": first.fault if first else None,
                    "order_opened_at": opened,
                    "warned": lead is not None,
                    "lead_h": round(lead, 1) if lead is not None else None,
                }
            )
        healthy = {u.id for s in SITES for u in s.units if u.fault is None}
        return {
            "plan": {"start": self.plan.start, "end": self.plan.end, "month": str(self.plan.month)},
            "failures_scheduled": len(units),
            "failures": len(self.failures),
            "units": units,
            "work_orders": [
                {
                    "device": names.get(o.device_id, o.device_id),
                    "fault": o.fault,
                    "source": str(o.source),
                    "priority": o.priority,
                    "opened_at": o.opened_at,
                    "healthy_unit": names.get(o.device_id) in healthy,
                }
                for o in orders
            ],
            "tickets": [
                {"ref": t.ref, "device": t.device, "fault": t.fault, "events": t.events}
                for t in sink.tickets.values()
            ],
            "sink_refused": sink.refused,
            "devices": len(devices),
        }

    def _print_summary(self, summary: dict[str, Any], world: World) -> None:
        o, p = self.o, self.plan
        api = f"http://127.0.0.1:{o.port}"
        units = summary["units"]
        warned = [u for u in units if u["warned"]]
        self.print("==> summary")
        self.print(
            f"    failures scheduled {summary['failures_scheduled']}, happened "
            f"{summary['failures']}, warned before failing {len(warned)}"
        )
        for u in units:
            if u["warned"]:
                what = f"work order ({u['order_fault']}) {u['lead_h']:.1f} h before the failure"
            elif u["failed_at"] is None:
                what = "did not fail within the simulated days"
            elif u["order_opened_at"] is not None:
                what = f"work order ({u['order_fault']}) only after the failure"
            else:
                what = "no work order"
            self.print(f"      {u['device']:<11} {u['fault']:<23} {what}")
        orders = summary["work_orders"]
        false = [w for w in orders if w["healthy_unit"]]
        self.print(
            f"    work orders {len(orders)} ({len(false)} on healthy units), tickets at the "
            f"desk {len(summary['tickets'])}, records stored {sum(summary['records'].values()):,}"
        )
        for key, r in summary["reports"].items():
            self.print(f"    report {CLIENTS[key]}: {r['folder']}/report.html, .pdf, .json, csv/")
        self.print(f"    dashboard {api}/ui  (summary in {o.out / 'summary.json'})")
        for login in world.logins:
            self.print(f"      {login.role:<17} {login.email:<28} password {login.password}")
        site = SITES[0].units[0].id
        self.print(
            f"    device page: {api}/ui/devices/{world.devices[site]}?start="
            f"{p.start.timestamp():.0f}&end={p.end.timestamp():.0f}"
        )
        if o.keep_running:
            self.print("    the cloud keeps running: Ctrl-C stops it")
        else:
            self.print(
                "    everything has stopped. The dashboard again, on what this run stored:\n"
                f"      {Path(sys.executable).parent / 'edgewatch-cloud'} --env-file "
                f"{self.env_file} api   (Ctrl-C stops it)"
            )

    def _keep_running(self) -> None:
        stop = threading.Event()
        try:
            while not stop.wait(1.0):
                if not all(c.is_alive() for c in self.children.values()):
                    raise DemoError("a cloud process stopped; see the logs")
        except KeyboardInterrupt:
            self.print("==> stopping")

    # ---- stopping -----------------------------------------------------------------------------

    def _stop(self, name: str) -> None:
        proc = self.children.pop(name)
        if proc.is_alive():
            proc.terminate()
        proc.join(20)
        if proc.is_alive():
            proc.kill()
            proc.join(5)

    def _stop_all(self) -> None:
        for name in list(self.children):
            self._stop(name)
