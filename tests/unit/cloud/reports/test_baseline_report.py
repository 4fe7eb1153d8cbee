"""The weather-normalised baseline through the report: one site with 13 months of a
compressor whose use follows the outdoor temperature, using 10 % less in the report month
(the one fit of these tests), and too little data as a finding, not an error."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker
from support.report_world import MONTH, NOW
from unit.cloud.reports.conftest import Env

from cloud.auth import Principal
from cloud.db import make_engine, make_sessionmaker, migrate, session_scope
from cloud.energy.carbon import GridFactors
from cloud.registry import services
from cloud.reports.build import build
from cloud.reports.collect import Options, collect
from cloud.reports.content import Report
from cloud.reports.period import parse_month
from cloud.reports.render import to_html
from cloud.tsdb.base import Point, to_ns
from cloud.tsdb.sqlite import SQLiteStore

ZONE = "Europe/Madrid"
FIRST = datetime(2025, 9, 20, tzinfo=UTC)
REPORT_START = datetime(2026, 9, 30, 22, tzinfo=UTC)  # 1 October, Madrid
LAST = datetime(2026, 11, 5, tzinfo=UTC)
SAVING = 0.10


def celsius(t: datetime, rng: np.random.Generator) -> float:
    day = t.timetuple().tm_yday
    seasonal = 16.0 - 9.0 * math.cos(2 * math.pi * (day - 20) / 365)
    return seasonal + 4.0 * math.sin(2 * math.pi * (t.hour - 9) / 24) + rng.normal(0, 1.0)


def kwh_per_hour(temp: float) -> float:
    return 1.5 + 0.25 * max(0.0, temp - 16.0)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    folder = tmp_path_factory.mktemp("baseline")
    url = f"sqlite:///{folder / 'registry.db'}"
    migrate(url)
    engine = make_engine(url)
    store = SQLiteStore(folder / "ts.db")
    try:
        sessions: sessionmaker[Session] = make_sessionmaker(engine)
        system = Principal.system()
        with session_scope(sessions) as s:
            client = services.create_client(s, system, name="Sol Offices")
            site = services.create_site(
                s, system, client_id=client.id, name="Madrid", kind="office",
                timezone=ZONE, floor_area_m2=1200.0,
                tariff={"kind": "flat", "currency": "EUR", "price_per_kwh": 0.2},
            )  # fmt: skip
            services.create_gateway(s, system, gateway_id="gw-mad", site_id=site.id)
            device = services.create_device(
                s, system, gateway_id="gw-mad", name="cc-1", asset_type="compressor",
                profile="ew-cc100",
            )  # fmt: skip
            client_id, site_id, device_id = client.id, site.id, device.id
        tags = {"client": client_id, "site": site_id, "gateway": "gw-mad", "device": device_id}
        rng = np.random.default_rng(7)
        points, counter, t = [], 1000.0, FIRST
        while t < LAST:
            temp = celsius(t, rng)
            use = kwh_per_hour(temp) * (1 - SAVING if t >= REPORT_START else 1.0)
            counter += use
            end = t + timedelta(minutes=59)
            points.append(Point("energy", to_ns(end.timestamp()), tags, {"energy": counter}))
            points.append(
                Point("features", to_ns(end.timestamp()), {**tags, "group": "default"},
                      {"ambient_temp__mean": temp})
            )  # fmt: skip
            t += timedelta(hours=1)
        store.write(points)
        options = Options(GridFactors(0.3), baseline=True)
        with sessions() as session:
            inputs = collect(
                session, store, client_id, parse_month(MONTH), options=options, now=NOW
            )
        yield build(inputs)
    finally:
        store.close()
        engine.dispose()


def test_the_baseline_sees_the_ten_percent_saving(fitted: Report) -> None:
    (site,) = fitted.sites
    b = site.baseline
    assert b.status == "fitted", b.summary
    assert (b.model, b.period_start, b.period_end) == ("daily", "2025-10-01", "2026-10-01")
    assert b.temperature_source == "sensors: cc-1"
    assert b.devices == 1 and b.meter_share_of_month == pytest.approx(1.0)
    assert b.fit is not None and b.monthly_fit is not None
    assert b.monthly_fit.cv_rmse is not None and b.monthly_fit.cv_rmse < 0.15
    assert b.monthly_fit.cv_rmse_limit == 0.15 and b.monthly_fit.passes is True
    assert b.passes_g14 is True
    assert b.days is not None and 329 <= b.days <= 366
    s = b.savings
    assert s is not None
    assert s.avoided_percent == pytest.approx(100 * SAVING, abs=2.5)
    assert s.actual_kwh == pytest.approx(site.totals.kwh, rel=1e-6)
    assert s.avoided_cost == pytest.approx(s.avoided_kwh * 0.2)
    assert [u.confidence for u in s.uncertainty] == [0.68, 0.90]
    assert 0 < s.uncertainty[0].kwh < s.uncertainty[1].kwh
    assert s.significant is (s.avoided_kwh > s.uncertainty[0].kwh)
    assert len(b.points) == 31 and b.points[0].start == "2026-10-01"
    assert b.mean_temperature_c is not None
    assert "less in October 2026 than its baseline predicts" in b.summary
    assert fitted.totals.avoided_kwh == pytest.approx(s.avoided_kwh)
    html = to_html(fitted)
    assert "baseline prediction and actual use per day" in html and "passes" in html


def test_too_little_data_is_a_finding_with_eemeters_reasons(env: Env) -> None:
    with env.sessions() as session:
        inputs = collect(
            session, env.store, env.world.client_id, parse_month(MONTH),
            options=env.world.options(baseline=True), now=NOW,
        )  # fmt: skip
    report = build(inputs)
    marina, paris = report.sites
    assert marina.baseline.status == "insufficient_data"
    assert marina.baseline.temperature_source == "sensors: cc-1"
    names = [r.name for r in marina.baseline.reasons]
    assert names and all(n.startswith("eemeter.") for n in names), names
    assert marina.baseline.summary.startswith("Insufficient data for a daily CalTRACK baseline")
    assert paris.baseline.status == "insufficient_data"
    assert [r.name for r in paris.baseline.reasons] == ["edgewatch.temperature"]
    assert "no device of the site reports ambient_temp" in paris.baseline.summary
    assert report.totals.avoided_kwh is None
