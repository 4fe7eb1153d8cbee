"""What runs in the demo's child processes, one function each (``multiprocessing`` spawn).

The agents and the risk scorer keep *simulated* time: every process computes it from one
:class:`SimTime` (a start, a speed and an origin on the system's monotonic clock, which
all processes of a machine share), so a reading an agent stamps, the simulator's physics
and the scorer's "now" agree. The API, ingest and delivery keep the wall clock. Each child
logs to its own file and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud.settings import Settings


@dataclass(frozen=True, slots=True)
class SimTime:
    start_ts: float
    """Unix seconds of simulated time at ``origin``."""
    origin: float
    """``time.monotonic()`` at which simulated time is ``start_ts``."""
    speed: float
    end_ts: float
    """Simulated time stops here: the simulator's values stay as they were at the end,
    and what the agents and the scorer do after it (draining, the last requests) is
    stamped with the end."""

    def now(self) -> float:
        return min(self.end_ts, self.start_ts + (time.monotonic() - self.origin) * self.speed)

    def wall_s(self, simulated_s: float) -> float:
        return simulated_s / self.speed


def _logging(path: Path) -> None:
    logging.basicConfig(
        filename=path,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _settings(env: dict[str, str]) -> Settings:
    os.environ.update(env)
    from cloud.settings import load_settings

    return load_settings()


@dataclass(frozen=True, slots=True)
class Gate:
    """Children get ready (imports, models, connections), say so, and wait for the start;
    the parent then fixes the simulated clock's origin for all of them."""

    ready: Event
    go: Event
    origin: Synchronized[float]

    def pass_(self, start_ts: float, end_ts: float, speed: float) -> SimTime:
        self.ready.set()
        self.go.wait()
        return SimTime(start_ts, self.origin.value, speed, end_ts)


def run_agent(
    config: Path, gate: Gate, span: tuple[float, float], speed: float, log_path: Path
) -> None:
    """One gateway's agent, on simulated time, until SIGTERM."""
    _logging(log_path)
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    loaded = load_config(config)
    sim = gate.pass_(*span, speed)

    async def main() -> None:
        agent = Agent(loaded, clock=sim.now)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())


def run_api(env: dict[str, str], port: int, log_path: Path) -> None:
    """``edgewatch-cloud api``: the REST API, the HTTPS uplink and the dashboard."""
    _logging(log_path)
    import uvicorn

    from cloud.app import create_app

    app = create_app(_settings(env))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_ingest(env: dict[str, str], metrics_port: int, log_path: Path) -> None:
    """``edgewatch-cloud ingest``: one MQTT ingest worker (when the demo uses a broker)."""
    _logging(log_path)
    from cloud.ingest.worker import run

    run(_settings(env), workers=1, metrics_port=metrics_port)


def run_workers(
    env: dict[str, str],
    gate: Gate,
    span: tuple[float, float],
    speed: float,
    baseline_days: float,
    log_path: Path,
) -> None:
    """The risk scorer (on simulated time: every two simulated hours, and on anomaly
    requests) and a delivery worker (wall time), until SIGTERM."""
    _logging(log_path)
    from cloud.db import create_engine_from_settings, make_sessionmaker
    from cloud.delivery.worker import DeliveryWorker
    from cloud.risk.scorer import RiskScorer, config_from, order_policy
    from cloud.tsdb import open_store
    from models.runtime import RiskRuntime

    settings = _settings(env)
    stop = _stop_event()
    engine = create_engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    store = open_store(settings)
    runtime = RiskRuntime.load(settings.models_dir)
    sim = gate.pass_(*span, speed)
    scorer = RiskScorer(
        sessions,
        store,
        runtime,
        order_policy(settings),
        replace(
            config_from(settings),
            interval_s=sim.wall_s(2 * 3600.0),
            poll_s=0.1,
            baseline_days=baseline_days,
        ),
        clock=sim.now,
    )
    delivery = DeliveryWorker(sessions, timeout_s=settings.delivery_timeout_s)
    thread = threading.Thread(
        target=lambda: delivery.run(stop, settings.delivery_idle_s), name="delivery", daemon=True
    )
    thread.start()
    try:
        scorer.run(stop)
    finally:
        stop.set()
        thread.join(30)
        delivery.close()
        store.close()
        engine.dispose()
