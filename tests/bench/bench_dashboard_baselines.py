"""Benchmark: the dashboard's fleet page with a weather-normalised baseline per site.

    .venv/bin/python tests/bench/bench_dashboard_baselines.py [--sites 20] [--day 24]
        [--repeat 10] [--out FILE]

A facility manager's client with ``--sites`` sites in Dubai, one compressor each, in a
SQLite registry and a SQLite time-series store: 5-minute ``ambient_temp`` windows and
hourly energy readings from the day before the month up to the page's clock (a fixed
``--day`` of November 2026, 10:00 UTC), and a stored daily CalTRACK model per site (one
fit of a synthetic year, :mod:`unit.cloud.web.baseline_world`). Loading is not timed.

Then the fleet page (``GET /ui/``), ``--repeat`` times after a first request, through
FastAPI's TestClient, with three baseline sources: none (``NoBaseline``), the stored
models without a cache (:class:`~cloud.reports.baselines.StoredBaselines` keeping no
entry), and the default source with its cache. And the source alone over all sites:
from its cache, without it, and in a new hour (the days not over predicted again).
Prints the figures and writes them to
``tests/bench/results/dashboard_baselines_<sites>x<day>.json`` (``--out``). Not a
pass/fail test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: support, unit

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from support.registry_world import PASSWORD, settings_for  # noqa: E402
from unit.cloud.web.baseline_world import fit_dubai_model, store_model  # noqa: E402
from unit.cloud.web.conftest import sign_in  # noqa: E402

from cloud.app import create_app  # noqa: E402
from cloud.auth import Principal  # noqa: E402
from cloud.db import make_engine, make_sessionmaker, migrate, session_scope  # noqa: E402
from cloud.registry import services  # noqa: E402
from cloud.registry.models import Site  # noqa: E402
from cloud.reports.baselines import StoredBaselines  # noqa: E402
from cloud.tsdb.base import Point, to_ns  # noqa: E402
from cloud.tsdb.sqlite import SQLiteStore  # noqa: E402
from cloud.web import routes  # noqa: E402
from cloud.web.baseline import BaselineSource, NoBaseline  # noqa: E402

RESULTS = HERE / "results"
ZONE = ZoneInfo("Asia/Dubai")
EMAIL = "fm@bench.example"


def load(folder: Path, sites: int, now: datetime) -> tuple[str, Path, int]:
    url = f"sqlite:///{folder / 'registry.db'}"
    migrate(url)
    engine = make_engine(url)
    system = Principal.system()
    ids = []
    with session_scope(make_sessionmaker(engine)) as s:
        client = services.create_client(s, system, name="Bench Hotels")
        services.create_user(
            s, system, email=EMAIL, role="facility_manager", client_id=client.id,
            name="Bench manager", password=PASSWORD,
        )  # fmt: skip
        for i in range(sites):
            site = services.create_site(
                s, system, client_id=client.id, name=f"Site {i:02d}", kind="hotel",
                timezone="Asia/Dubai",
            )  # fmt: skip
            services.create_gateway(s, system, gateway_id=f"gw-{i:02d}", site_id=site.id)
            device = services.create_device(
                s, system, gateway_id=f"gw-{i:02d}", name=f"cc-{i:02d}", asset_type="compressor"
            )  # fmt: skip
            ids.append((client.id, site.id, f"gw-{i:02d}", device.id))
    engine.dispose()
    local = now.astimezone(ZONE)
    first = datetime(local.year, local.month, 1, tzinfo=ZONE) - timedelta(days=1)
    store_path = folder / "ts.db"
    store = SQLiteStore(store_path)
    points: list[Point] = []
    for client_id, site_id, gateway, device in ids:
        tags = {"client": client_id, "site": site_id, "gateway": gateway, "device": device}
        t, k = first, 0
        while t <= now:
            celsius = 28.0 + 5.0 * math.sin(2 * math.pi * k / 288)
            points.append(
                Point("features", to_ns(t.timestamp()), {**tags, "group": "default"},
                      {"ambient_temp__mean": celsius})
            )  # fmt: skip
            if k % 12 == 0:
                points.append(Point("energy", to_ns(t.timestamp()), tags, {"energy": 1e3 + k / 6}))
            t += timedelta(minutes=5)
            k += 1
    store.write(points)
    store.close()
    model = fit_dubai_model()
    for _, site_id, _, device in ids:
        store_model(url, site_id, model, [device], "2026-10")
    return url, store_path, len(points)


def page_times(
    app: FastAPI, source: BaselineSource | None, repeat: int, sites: int
) -> dict[str, float]:
    if source is not None:
        app.state.baselines = source
    with TestClient(app) as client:
        assert getattr(sign_in(client, EMAIL), "status_code", None) == 303
        times = []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            page = client.get("/ui/")
            times.append(time.perf_counter() - t0)
            assert page.status_code == 200, page.text
        shown = page.text.count("Energy this month against the expected")
        assert shown == (0 if isinstance(source, NoBaseline) else sites), shown
    rest = times[1:]
    return {
        "first_ms": round(times[0] * 1e3, 1),
        "median_ms": round(statistics.median(rest) * 1e3, 1),
        "min_ms": round(min(rest) * 1e3, 1),
        "max_ms": round(max(rest) * 1e3, 1),
    }


def source_times(app: FastAPI, url: str, now: datetime) -> dict[str, Any]:
    with TestClient(app):
        source = app.state.baselines
        assert isinstance(source, StoredBaselines)
        engine = make_engine(url)
        with make_sessionmaker(engine)() as s:
            sites = list(s.query(Site))
        engine.dispose()
        local = now.astimezone(ZONE)
        start = datetime(local.year, local.month, 1, tzinfo=ZONE)

        def timed(fn: Callable[[], None], n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            return round((time.perf_counter() - t0) / n * 1e3, 1)

        def all_sites(end: datetime, clear: bool = False) -> None:
            if clear:
                source.clear()
            for site in sites:
                source.expected_kwh(site, start, end)

        uncached = timed(lambda: all_sites(now, clear=True), 3)
        cached = timed(lambda: all_sites(now), 10)
        hours = iter(range(1, 100))
        refresh = timed(lambda: all_sites(now + timedelta(hours=next(hours))), 3)
        return {
            "uncached_ms": uncached,
            "cached_ms": cached,
            "new_hour_ms": refresh,
            "stats": dataclasses.asdict(source.stats()),
        }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sites", type=int, default=20)
    p.add_argument("--day", type=int, default=24, help="of November 2026: the page's clock")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    now = datetime(2026, 11, args.day, 10, 0, tzinfo=UTC)
    routes._now = lambda: now  # the pages' clock
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        folder = Path(tmp)
        url, store_path, points = load(folder, args.sites, now)
        print(f"{args.sites} sites, {points} points up to {now.isoformat()}", flush=True)
        settings = settings_for(url, store_path, secret_key="b" * 40)
        pages: dict[str, dict[str, float]] = {}
        for label in ("no baseline", "baseline, no cache", "baseline, cache"):
            app = create_app(settings)
            source: BaselineSource | None = None
            if label == "no baseline":
                source = NoBaseline()
            elif label == "baseline, no cache":
                source = StoredBaselines(
                    lambda app=app: app.state.sessionmaker,
                    lambda app=app: app.state.store,
                    max_entries=0,
                )
            pages[label] = page_times(app, source, args.repeat, args.sites)
            print(f"  fleet page, {label:20s} {pages[label]}", flush=True)
        alone = source_times(create_app(settings), url, now)
        print(f"  the source alone, {args.sites} sites: {alone}")
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "points": points,
        "fleet_page": pages,
        "source": alone,
    }
    path = args.out or RESULTS / f"dashboard_baselines_{args.sites}x{args.day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
