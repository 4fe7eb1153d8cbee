"""Energy this month against the baseline: the stored models the reports fitted, predicted
for the month's outdoor temperature (:mod:`cloud.reports.baselines`), on the pages.

The pages run on a fixed clock (the dashboard world's ``now``); each tenant's compressor
reports an hourly outdoor temperature over the month so far, Bravo's 7 °C warmer than
Alpha's, and both sites are in Dubai, so one daily model serves both.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from unit.cloud.web.baseline_world import (
    ZONE,
    eemeter_expected_kwh,
    fit_dubai_model,
    store_model,
    write_temperatures,
)
from unit.cloud.web.dashboard_world import Dashboard

from cloud.db import make_engine, make_sessionmaker
from cloud.energy.baseline import DailyPrediction
from cloud.registry.models import Site
from cloud.reports import baselines
from cloud.reports.baselines import StoredBaselines
from cloud.reports.errors import BaselineUnavailable
from cloud.web import routes
from cloud.web.formatting import fmt_kwh

Browser = Callable[[str], TestClient]
Temperatures = dict[str, dict[int, float]]
MODEL_MONTH = "2026-01"
BROKEN_MODEL = '{"submodels": {"fw-su_sh_wi": {}}, "info": {"baseline_timezone": "Asia/Dubai"}}'


def alpha_celsius(hour: int) -> float:
    local_hour = (hour // 3600 + 4) % 24
    return 24.0 + 6.0 * math.sin(2 * math.pi * (local_hour - 9) / 24) + 0.02 * (hour // 86_400 % 7)


def bravo_celsius(hour: int) -> float:
    return alpha_celsius(hour) + 7.0


CELSIUS = {"alpha": alpha_celsius, "bravo": bravo_celsius}


@pytest.fixture(scope="module")
def dubai_model() -> str:
    return fit_dubai_model()


@pytest.fixture
def now(dash: Dashboard, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The pages' clock: the world's ``now``."""
    monkeypatch.setattr(routes, "_now", lambda: dash.now)
    return dash.now


def month_start(now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(ZONE))
    return datetime(local.year, local.month, 1, tzinfo=ZoneInfo(ZONE))


@pytest.fixture
def temperatures(dash: Dashboard, now: datetime, web_settings: Any) -> Temperatures:
    """Each tenant's hourly outdoor temperature from two days before the month to now."""
    out = {}
    for word, celsius in CELSIUS.items():
        t = dash.world.tenants[word]
        tags = {
            "client": t.client_id,
            "site": t.site_id,
            "gateway": t.gateway_id,
            "device": t.device_id,
        }
        first = month_start(now) - timedelta(days=2)
        out[word] = write_temperatures(web_settings.tsdb_sqlite_path, tags, celsius, first, now)
    return out


def store_for(dash: Dashboard, word: str, model: str) -> None:
    t = dash.world.tenants[word]
    store_model(dash.world.url, t.site_id, model, [t.device_id], MODEL_MONTH)


def expected(model: str, temps: Temperatures, word: str, now: datetime) -> float:
    return eemeter_expected_kwh(model, temps[word], month_start(now), now)


def site_of(dash: Dashboard, word: str) -> Site:
    engine = make_engine(dash.world.url)
    try:
        with make_sessionmaker(engine)() as s:
            site = s.get(Site, dash.world.tenants[word].site_id)
            assert site is not None
            return site
    finally:
        engine.dispose()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every prediction a page asks eemeter for (the model's first characters); not the
    start-up warm-up's, which waits for eemeter without a limit."""
    made: list[str] = []
    real = baselines.predict_daily

    def counted(model: str, *args: Any, **kwargs: Any) -> DailyPrediction:
        if kwargs.get("wait_s") is not None:
            made.append(model[:20])
        return real(model, *args, **kwargs)

    monkeypatch.setattr(baselines, "predict_daily", counted)
    yield made


# ---- the figures ----------------------------------------------------------------------------


def test_the_expectation_is_eemeters_prediction_for_the_months_temperatures(
    web_app: FastAPI,
    browser: Browser,
    dash: Dashboard,
    dubai_model: str,
    temperatures: Temperatures,
    now: datetime,
) -> None:
    store_for(dash, "alpha", dubai_model)
    want = expected(dubai_model, temperatures, "alpha", now)
    assert want > 0
    fm = browser(dash.world.a.manager_email)
    fleet = fm.get("/ui/").text
    assert f"Energy this month against the expected {fmt_kwh(want)}" in fleet
    assert "no baseline yet" not in fleet and "baseline unavailable" not in fleet
    source = web_app.state.baselines
    assert isinstance(source, StoredBaselines)
    got = source.expected_kwh(site_of(dash, "alpha"), month_start(now), now)
    assert got == pytest.approx(want, rel=1e-9)
    # the same figure at an hour of the month the test picks, through the source alone
    later = month_start(now) + timedelta(hours=7, minutes=20)
    if later < now:
        assert source.expected_kwh(
            site_of(dash, "alpha"), month_start(now), later
        ) == pytest.approx(eemeter_expected_kwh(dubai_model, temperatures["alpha"],
                                                month_start(now), later), rel=1e-9)  # fmt: skip


def test_a_site_without_a_stored_model_has_no_baseline_yet(
    browser: Browser, dash: Dashboard, dubai_model: str, temperatures: Temperatures, now: datetime
) -> None:
    store_for(dash, "alpha", dubai_model)
    fm = browser(dash.world.b.manager_email)
    assert "no baseline yet" in fm.get("/ui/").text
    assert "No baseline yet" in fm.get(f"/ui/sites/{dash.world.b.site_id}").text
    admin = browser(dash.world.admin_email).get("/ui/").text
    alpha = f"the expected {fmt_kwh(expected(dubai_model, temperatures, 'alpha', now))}"
    assert alpha in admin and "no baseline yet" in admin  # Bravo's card


def test_a_failing_prediction_says_the_baseline_is_unavailable(
    browser: Browser, dash: Dashboard, dubai_model: str, now: datetime, web_settings: Any
) -> None:
    # Alpha: a model eemeter cannot read; Bravo: a good model but no outdoor temperature
    store_for(dash, "alpha", BROKEN_MODEL)
    store_for(dash, "bravo", dubai_model)
    for word in ("alpha", "bravo"):
        t = dash.world.tenants[word]
        fm = browser(t.manager_email)
        fleet = fm.get("/ui/")
        assert fleet.status_code == 200
        assert "baseline unavailable" in fleet.text, word
        assert "the expected" not in fleet.text
        site = fm.get(f"/ui/sites/{t.site_id}")
        assert site.status_code == 200
        assert "The baseline is unavailable right now." in site.text, word


def test_a_second_request_in_the_hour_is_served_from_the_cache(
    web_app: FastAPI,
    browser: Browser,
    dash: Dashboard,
    dubai_model: str,
    temperatures: Temperatures,
    now: datetime,
    calls: list[str],
) -> None:
    store_for(dash, "alpha", dubai_model)
    fm = browser(dash.world.a.manager_email)
    first = fm.get("/ui/").text
    source = web_app.state.baselines
    assert isinstance(source, StoredBaselines)
    assert len(calls) == 1 and source.stats().hits == 0
    second = fm.get("/ui/").text
    site = fm.get(f"/ui/sites/{dash.world.a.site_id}").text
    assert len(calls) == 1, "the cached days were predicted again"
    assert source.stats().hits == 2
    figure = f"the expected {fmt_kwh(expected(dubai_model, temperatures, 'alpha', now))}"
    assert figure in first and figure in second
    # a new model (a newer report) is used from the next request on
    store_for(dash, "alpha", dubai_model)
    fm.get("/ui/")
    assert len(calls) == 2
    assert "Expected" in site or "expected" in site


def test_a_facility_manager_never_sees_another_clients_expectation(
    browser: Browser, dash: Dashboard, dubai_model: str, temperatures: Temperatures, now: datetime
) -> None:
    for word in ("alpha", "bravo"):
        store_for(dash, word, dubai_model)
    figures = {
        word: f"the expected {fmt_kwh(expected(dubai_model, temperatures, word, now))}"
        for word in CELSIUS
    }
    assert figures["alpha"] != figures["bravo"]
    for word, other in (("alpha", "bravo"), ("bravo", "alpha")):
        t, o = dash.world.tenants[word], dash.world.tenants[other]
        fm = browser(t.manager_email)
        pages = [fm.get("/ui/"), fm.get(f"/ui/sites/{t.site_id}")]
        assert all(p.status_code == 200 for p in pages)
        assert figures[word] in pages[0].text
        theirs = fm.get(f"/ui/sites/{o.site_id}")
        assert theirs.status_code == 404
        for page in [*pages, theirs]:
            assert figures[other] not in page.text, f"{word} sees {other}'s expectation"
    admin = browser(dash.world.admin_email).get("/ui/").text
    assert figures["alpha"] in admin and figures["bravo"] in admin


# ---- the source alone -------------------------------------------------------------------------


def test_days_count_for_their_share_of_the_period_and_gaps_are_filled_in_proportion() -> None:
    day = 86_400
    prediction = DailyPrediction(
        ("2026-03-01", "2026-03-02", "2026-03-03"),
        np.array([0, day, 2 * day]),
        np.array([day, 2 * day, 3 * day]),
        np.array([24.0, math.nan, 48.0]),
    )
    assert prediction.over(0, day) == (24.0, 1.0)
    kwh, covered = prediction.over(12 * 3600, 2 * day + 6 * 3600)  # half, none, a quarter
    assert kwh == pytest.approx(12.0 + 12.0)
    assert covered == pytest.approx((12 + 6) / (12 + 24 + 6))
    assert prediction.over(day, 2 * day) == (0.0, 0.0)
    assert prediction.over(5, 5) == (0.0, 0.0)


def test_too_little_temperature_makes_the_baseline_unavailable(
    dash: Dashboard, dubai_model: str, web_settings: Any
) -> None:
    from cloud.tsdb.sqlite import SQLiteStore

    now = dash.now
    start = month_start(now) - timedelta(days=10)  # a period of which the test knows the days
    t = dash.world.a
    tags = {
        "client": t.client_id,
        "site": t.site_id,
        "gateway": t.gateway_id,
        "device": t.device_id,
    }
    # temperature for the last 3 of the 10 days only
    write_temperatures(
        web_settings.tsdb_sqlite_path, tags, alpha_celsius, start + timedelta(days=7), now
    )
    store_for(dash, "alpha", dubai_model)
    engine = make_engine(dash.world.url)
    store = SQLiteStore(web_settings.tsdb_sqlite_path)
    try:
        sessions = make_sessionmaker(engine)
        source = StoredBaselines(lambda: sessions, lambda: store)
        site = site_of(dash, "alpha")
        with pytest.raises(BaselineUnavailable, match="outdoor temperature for only"):
            source.expected_kwh(site, start, start + timedelta(days=10))
        assert source.expected_kwh(site, start + timedelta(days=7), start + timedelta(days=9)) > 0
        assert source.expected_kwh(site_of(dash, "bravo"), start, now) is None
    finally:
        store.close()
        engine.dispose()


def test_the_warm_up_predicts_once_in_the_background_when_a_model_is_stored(
    dash: Dashboard, dubai_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(baselines, "prediction_ready", lambda: False)
    engine = make_engine(dash.world.url)
    try:
        sessions = make_sessionmaker(engine)

        def no_store() -> Any:
            raise AssertionError("the warm-up reads no readings")

        source = StoredBaselines(lambda: sessions, no_store)
        assert source.warm_up_in_background() is None  # no model stored: nothing to warm up
        store_for(dash, "alpha", dubai_model)
        thread = source.warm_up_in_background()
        assert thread is not None
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert source.stats().entries == 0  # it fills no cache
    finally:
        engine.dispose()


def test_a_failure_is_kept_for_a_while_and_a_busy_eemeter_is_not_waited_for_twice(
    dash: Dashboard,
    dubai_model: str,
    web_settings: Any,
    now: datetime,
    temperatures: Temperatures,
    calls: list[str],
) -> None:
    from cloud.energy import baseline as energy_baseline
    from cloud.tsdb.sqlite import SQLiteStore

    store_for(dash, "alpha", BROKEN_MODEL)
    store_for(dash, "bravo", dubai_model)
    clock = [1000.0]
    engine = make_engine(dash.world.url)
    store = SQLiteStore(web_settings.tsdb_sqlite_path)
    try:
        sessions = make_sessionmaker(engine)
        source = StoredBaselines(
            lambda: sessions, lambda: store, clock=lambda: clock[0], wait_s=0.2
        )
        alpha, bravo = site_of(dash, "alpha"), site_of(dash, "bravo")
        start = month_start(now)
        for _ in range(2):
            with pytest.raises(BaselineUnavailable, match="eemeter could not predict"):
                source.expected_kwh(alpha, start, now)
        assert len(calls) == 1  # the failure was kept
        clock[0] += baselines.ERROR_TTL_S
        with pytest.raises(BaselineUnavailable):
            source.expected_kwh(alpha, start, now)
        assert len(calls) == 2  # and tried again once it ran out

        # eemeter held by a fit in another thread: one wait, then no more until the back-off
        held, release = threading.Event(), threading.Event()

        def fit() -> None:
            with energy_baseline._LOCK:
                held.set()
                release.wait(10)

        fitter = threading.Thread(target=fit)
        fitter.start()
        try:
            assert held.wait(10)
            began = time.perf_counter()
            with pytest.raises(BaselineUnavailable, match="busy"):
                source.expected_kwh(bravo, start, now)
            assert time.perf_counter() - began >= 0.2
            began = time.perf_counter()
            with pytest.raises(BaselineUnavailable, match="busy"):
                source.expected_kwh(bravo, start, now)
            assert time.perf_counter() - began < 0.2  # no second wait
        finally:
            release.set()
            fitter.join()
        clock[0] += baselines.BUSY_BACKOFF_S
        want = expected(dubai_model, temperatures, "bravo", now)
        assert source.expected_kwh(bravo, start, now) == pytest.approx(want, rel=1e-9)
    finally:
        store.close()
        engine.dispose()
