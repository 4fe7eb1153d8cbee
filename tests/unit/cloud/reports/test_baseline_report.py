"""The weather-normalised baseline through the report: one site with 13 months of a
compressor whose use follows the outdoor temperature, using 10 % less in the report month
(the one fit of these tests, made by the report service), the model it keeps for the
dashboard and what that predicts, and too little data as a finding, not an error."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from support.report_world import MONTH, NOW
from unit.cloud.reports.conftest import Env
from unit.cloud.web.baseline_world import eemeter_expected_kwh

from cloud.auth import Principal
from cloud.db import make_engine, make_sessionmaker, migrate, session_scope
from cloud.energy.baseline import Baseline, HourlyValues, model_timezone
from cloud.energy.carbon import GridFactors
from cloud.registry import services
from cloud.registry.models import Site
from cloud.reports import baselines, service
from cloud.reports.baselines import StoredBaselines, keep_models
from cloud.reports.build import build_with_models
from cloud.reports.collect import Inputs, Options, collect
from cloud.reports.content import Report
from cloud.reports.models import SiteBaseline
from cloud.reports.period import Month, parse_month
from cloud.reports.render import to_html
from cloud.reports.service import Generated, generate_now
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


@dataclass
class Sol:
    """The seeded registry and store, the report made of them through the service, and
    what the service handed to :func:`~cloud.reports.baselines.keep_models`."""

    sessions: sessionmaker[Session]
    store: SQLiteStore
    site_id: str
    device_id: str
    celsius: dict[int, float]
    """Hour start → the outdoor temperature written for it."""
    made: Generated
    kept: list[tuple[Inputs, dict[str, Baseline]]]


@pytest.fixture(scope="module")
def sol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sol]:
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
        written: dict[int, float] = {}
        while t < LAST:
            temp = celsius(t, rng)
            written[int(t.timestamp())] = temp
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
        kept: list[tuple[Inputs, dict[str, Baseline]]] = []

        def keep(
            session: Session, inputs: Inputs, models: Mapping[str, Baseline], now: datetime
        ) -> list[str]:
            kept.append((inputs, dict(models)))
            return keep_models(session, inputs, models, now)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(service, "keep_models", keep)
            made = generate_now(sessions, store, client_id, MONTH, options, now=NOW)
        yield Sol(sessions, store, site_id, device_id, written, made, kept)
    finally:
        store.close()
        engine.dispose()


@pytest.fixture(scope="module")
def fitted(sol: Sol) -> Report:
    assert sol.made.content is not None, sol.made.error
    return sol.made.content


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
    report, models = build_with_models(inputs)
    assert models == {}  # nothing fitted: nothing for the dashboard to keep
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


# ---- the model kept for the dashboard --------------------------------------------------------


def _row(sol: Sol) -> SiteBaseline:
    with sol.sessions() as session:
        row = session.get(SiteBaseline, sol.site_id)
        assert row is not None, "the report kept no model"
        assert row.model  # the deferred JSON, loaded while the session is open
        return row


def test_the_report_keeps_its_daily_model_for_the_dashboard(sol: Sol) -> None:
    row = _row(sol)
    madrid = ZoneInfo(ZONE)
    assert (row.month, row.kind, row.timezone) == (MONTH, "daily", ZONE)
    assert row.baseline_start == datetime(2025, 10, 1, tzinfo=madrid)
    assert row.baseline_end == datetime(2026, 10, 1, tzinfo=madrid)
    assert row.meter_devices == [sol.device_id] and row.temperature_sensors == [sol.device_id]
    assert row.temperature_source == "sensors: cc-1"
    assert row.passes_g14 is True
    assert row.monthly_cv_rmse is not None and row.monthly_cv_rmse < 0.15
    assert row.fitted_at == NOW
    assert model_timezone(row.model) == ZONE
    assert json.loads(row.model)["info"]["disqualification"] == []
    ((_, models),) = sol.kept
    assert row.model == models[sol.site_id].model.to_json()


def test_the_kept_model_predicts_what_eemeter_predicts_for_the_weather(sol: Sol) -> None:
    row = _row(sol)
    source = StoredBaselines(lambda: sol.sessions, lambda: sol.store)
    madrid = ZoneInfo(ZONE)
    start = datetime(2026, 11, 1, tzinfo=madrid)
    end = datetime(2026, 11, 4, 15, 30, tzinfo=madrid)
    with sol.sessions() as session:
        site = session.get(Site, sol.site_id)
        assert site is not None
    got = source.expected_kwh(site, start, end)
    assert got == pytest.approx(
        eemeter_expected_kwh(row.model, sol.celsius, start, end, zone=ZONE), rel=1e-9
    )
    # and it is what the compressor would have used without the saving
    hours = [h for h in sol.celsius if start.timestamp() <= h < end.timestamp()]
    assert got == pytest.approx(sum(kwh_per_hour(sol.celsius[h]) for h in hours), rel=0.1)


def test_an_older_month_leaves_a_newer_model_and_a_newer_month_replaces_it(sol: Sol) -> None:
    ((inputs, models),) = sol.kept
    later = NOW + timedelta(days=40)
    try:
        with session_scope(sol.sessions) as session:
            older = dataclasses.replace(inputs, month=Month(2026, 9))
            assert keep_models(session, older, models, later) == []
        row = _row(sol)
        assert (row.month, row.fitted_at) == (MONTH, NOW)
        with session_scope(sol.sessions) as session:
            newer = dataclasses.replace(inputs, month=Month(2026, 11))
            assert keep_models(session, newer, models, later) == [sol.site_id]
        row = _row(sol)
        assert (row.month, row.fitted_at) == ("2026-11", later)
    finally:
        with session_scope(sol.sessions) as session:
            session.execute(delete(SiteBaseline).where(SiteBaseline.site_id == sol.site_id))
        with session_scope(sol.sessions) as session:
            keep_models(session, inputs, models, NOW)


def test_a_new_hour_predicts_again_only_the_days_not_over(
    sol: Sol, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = _row(sol)
    asked: list[tuple[float, float]] = []
    real = baselines.predict_daily

    def spy(model: str, temp: HourlyValues, start: float, end: float, **kw: Any) -> Any:
        asked.append((start, end))
        return real(model, temp, start, end, **kw)

    monkeypatch.setattr(baselines, "predict_daily", spy)
    source = StoredBaselines(lambda: sol.sessions, lambda: sol.store)
    madrid = ZoneInfo(ZONE)
    start = datetime(2026, 11, 1, tzinfo=madrid)
    with sol.sessions() as session:
        site = session.get(Site, sol.site_id)
        assert site is not None
    ends = [
        datetime(2026, 11, 4, 15, 30, tzinfo=madrid),
        datetime(2026, 11, 4, 15, 50, tzinfo=madrid),  # the same hour: from the cache
        datetime(2026, 11, 4, 17, 10, tzinfo=madrid),  # a new hour: 4 November again
        datetime(2026, 11, 5, 0, 40, tzinfo=madrid),  # the next day: 4 and 5 November
    ]
    for end in ends:
        want = eemeter_expected_kwh(row.model, sol.celsius, start, end, zone=ZONE)
        assert source.expected_kwh(site, start, end) == pytest.approx(want, rel=1e-9), end
    firsts = [datetime.fromtimestamp(a, madrid) for a, _ in asked]
    assert firsts == [
        start,
        datetime(2026, 11, 4, tzinfo=madrid),
        datetime(2026, 11, 4, tzinfo=madrid),
    ]
    stats = source.stats()
    assert (stats.hits, stats.misses, stats.refreshes) == (1, 3, 2)
