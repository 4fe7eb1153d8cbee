"""The risk scorer on a simulated leak: feature windows in a real (SQLite) time-series
store, the shipped models, a migrated registry; the scorer steps through the days hour by
hour, as its schedule would, and the leak gets exactly one work order before it fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from support.risk_sim import (
    DAY,
    FAIL_DAY,
    ONSET_DAY,
    SEASON_START,
    START,
    H,
    Sim,
    leak_fleet,
    season_fleet,
    store_windows,
)

from cloud.auth.principal import Principal
from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.errors import Conflict
from cloud.registry.models import Client, Device, Gateway, Site, SiteKind, site_shard
from cloud.risk.models import RiskRequest, RiskScore
from cloud.risk.requests import requests_of
from cloud.risk.scorer import DeviceRow, RiskScorer, ScorerConfig
from cloud.settings import DEFAULT_MODELS_DIR
from cloud.tsdb.base import Point
from cloud.tsdb.sqlite import SQLiteStore
from cloud.workorders.models import Source, WorkOrder
from cloud.workorders.service import OrderPolicy, Trigger, TriggerResult, transition, trigger
from models.export import load_detectors
from models.runtime import Assessment, RiskRuntime

FAIL = START + FAIL_DAY * DAY


@dataclass
class World:
    sessions: sessionmaker[Session]
    store: SQLiteStore
    runtime: RiskRuntime
    ids: dict[str, str]
    """simulated asset id → registry device id"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    return leak_fleet(tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="module")
def runtime() -> RiskRuntime:
    return RiskRuntime.load(DEFAULT_MODELS_DIR)


def _registry(
    tmp_path: Path, sim: Sim, created: float, ids: dict[str, str] | None = None
) -> tuple[sessionmaker[Session], dict[str, str], dict[str, str]]:
    """A migrated SQLite registry with one client, site and gateway and a device per
    simulated asset (with the given ids, else new ones): its sessions, the ids and the
    time-series tags."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url)
    sessions = make_sessionmaker(make_engine(url))
    out: dict[str, str] = {}
    with sessions.begin() as s:
        client = Client(name="Gulf Hotels")
        s.add(client)
        s.flush()
        site = Site(client_id=client.id, name="Dubai Marina", kind=SiteKind.HOTEL)
        s.add(site)
        s.flush()
        s.add(Gateway(id="g", site_id=site.id))
        s.flush()
        for asset, rec in sim.recs.items():
            d = Device(
                gateway_id="g",
                name=asset,
                asset_type=rec.asset_type,
                created_at=datetime.fromtimestamp(created, UTC),
            )
            if ids is not None:
                d.id = ids[asset]
            s.add(d)
            s.flush()
            out[asset] = d.id
        tags = {"client": client.id, "site": site.id, "gateway": "g"}
    return sessions, out, tags


@pytest.fixture
def world(sim: Sim, runtime: RiskRuntime, tmp_path: Path) -> Iterator[World]:
    sessions, ids, tags = _registry(tmp_path, sim, START)
    store = SQLiteStore(tmp_path / "ts.db")
    store_windows(store, sim, ids, tags)
    try:
        yield World(sessions, store, runtime, ids)
    finally:
        store.close()
        sessions.kw["bind"].dispose()


def scorer(w: World, clock: list[float], **cfg: object) -> RiskScorer:
    config = ScorerConfig(**({"baseline_days": 4} | cfg))  # type: ignore[arg-type]
    return RiskScorer(w.sessions, w.store, w.runtime, OrderPolicy(), config, clock=lambda: clock[0])


def test_the_leak_gets_one_order_before_it_fails_and_the_healthy_ones_none(world: World) -> None:
    clock = [START + 1 * DAY]  # a day of windows: too few for the devices' own baselines
    # This 15-day world allows 4 days of baseline, too few for the healthy fan's alert risk
    # to be judged against the shipped fan model's threshold (how often a model alerts
    # falsely is measured on 200-device fleets: models/artifacts/README.md); the fan's
    # opening threshold is set here as an operator would (EDGEWATCH_CLOUD_RISK_THRESHOLDS).
    sc = scorer(world, clock, thresholds={"fan": 0.99})
    assert sc.threshold("fan") == 0.99
    assert sc.threshold("compressor") == world.runtime.threshold("compressor")
    first = sc.scheduled_pass()
    assert first.devices == 3 and first.learning == 3 and first.scored == 0
    opened_at: float | None = None
    while clock[0] < FAIL:
        clock[0] += 2 * H
        stats = sc.scheduled_pass()
        assert stats.failed == 0
        assert stats.learning in (0, 3)
        if clock[0] > START + 2 * DAY:  # 20 hourly windows after the first 12 h
            assert stats.learning == 0
        if stats.triggers.get("opened") and opened_at is None:
            opened_at = clock[0]
    again = sc.scheduled_pass()  # the same windows again: nothing new to store
    assert again.scored == 0
    with world.sessions() as s:
        orders = s.scalars(select(WorkOrder)).all()
        assert [(o.device_id, o.fault) for o in orders] == [
            (world.ids["cc-leak"], "refrigerant_leak")
        ]
        order = orders[0]
        assert opened_at is not None and opened_at < FAIL
        assert opened_at > START + ONSET_DAY * DAY
        assert order.risk_at is not None and order.risk_at.timestamp() < FAIL
        assert order.opened_at == datetime.fromtimestamp(opened_at, UTC)
        assert order.evidence["top_signals"] and order.p72 is not None
        # opened on the alert horizon's risk, which the order's evidence keeps
        assert order.evidence["risk"]["p_alert"] >= sc.threshold("compressor")
        assert order.evidence["risk"]["alert_horizon_h"] in (72.0, 168.0, 336.0)
        history = s.execute(
            select(RiskScore.ts, RiskScore.p72, RiskScore.health, RiskScore.p_alert)
            .where(RiskScore.device_id == world.ids["cc-leak"])
            .order_by(RiskScore.ts)
        ).all()
        healthy, healthy_alert = s.execute(
            select(func.max(RiskScore.p72), func.max(RiskScore.p_alert)).where(
                RiskScore.device_id == world.ids["cc-ok"]
            )
        ).one()
    # every pass stored one assessment per device; risk rose and health fell before the end
    assert len(history) >= 60
    assert history[-1].p72 > 0.9 and history[-1].health <= 10
    assert max(h.p72 for h in history if h.ts.timestamp() < START + ONSET_DAY * DAY) < 0.3
    # A healthy unit never ranks as a likely failure (P72 ≥ 0.5: risk_points 2), even in
    # this 15-day world with a 4-day baseline.
    assert healthy is not None and healthy < 0.5
    assert healthy_alert is not None and healthy_alert < sc.threshold("compressor")
    assert all(h.p_alert is not None for h in history)
    lead_h = (FAIL - opened_at) / H
    assert lead_h >= 6, f"warned only {lead_h:.1f} h ahead"


class _Killed(BaseException):
    """The scorer's process dying at that instant (SIGKILL runs no handler)."""


class _DiesAtTrigger(RiskScorer):
    def _trigger(self, dev: DeviceRow, a: Assessment) -> TriggerResult:
        raise _Killed


class _TriggerFailsOnce(RiskScorer):
    failures = 0

    def _trigger(self, dev: DeviceRow, a: Assessment) -> TriggerResult:
        if not self.failures:
            self.failures += 1
            raise Conflict("the order's row was taken by another caller, five times")
        return super()._trigger(dev, a)


def test_a_scorer_killed_before_its_trigger_opens_the_order_when_it_runs_again(
    world: World,
) -> None:
    """A window counts as scored once its score is stored: the order must come first, or
    the restarted scorer finds the window done and the order waits for the next one."""
    clock = [FAIL - 3 * H]  # the leak well over its threshold
    config = ScorerConfig(baseline_days=4)
    dying = _DiesAtTrigger(
        world.sessions, world.store, world.runtime, OrderPolicy(), config, clock=lambda: clock[0]
    )
    with pytest.raises(_Killed):
        dying.scheduled_pass()
    restarted = scorer(world, clock)
    stats = restarted.scheduled_pass()
    assert stats.triggers == {"opened": 1}
    with world.sessions() as s:
        orders = [(o.device_id, o.fault) for o in s.scalars(select(WorkOrder))]
        scores = s.execute(
            select(RiskScore.device_id, func.count()).group_by(RiskScore.device_id)
        ).all()
    assert orders == [(world.ids["cc-leak"], "refrigerant_leak")]
    # every device's window scored once, whichever asset type the dying pass stored first
    assert sorted(n for _, n in scores) == [1, 1, 1]
    assert restarted.scheduled_pass().scored == 0  # now the window is done


def test_a_failed_trigger_is_tried_again_at_the_next_pass(world: World) -> None:
    clock = [FAIL - 3 * H]
    config = ScorerConfig(baseline_days=4)
    sc = _TriggerFailsOnce(
        world.sessions, world.store, world.runtime, OrderPolicy(), config, clock=lambda: clock[0]
    )
    first = sc.scheduled_pass()
    assert first.failed == 1 and first.triggers == {}
    assert first.scored == 2  # the healthy devices' scores are kept, the leak's is not
    second = sc.scheduled_pass()
    assert second.triggers == {"opened": 1} and second.scored == 1


def test_requests_score_at_once_and_raise_alarm_orders(world: World) -> None:
    clock = [START + 6 * DAY]
    sc = scorer(world, clock)
    shard = site_shard(next(iter(world.sessions().scalars(select(Site.id)))))
    with world.sessions.begin() as s:
        s.execute(
            insert(RiskRequest),
            [
                {
                    "device_id": world.ids["cc-ok"],
                    "shard": shard,
                    "reason": "anomaly",
                    "detail": {"score": 3.0},
                },
                {
                    "device_id": world.ids["fan-ok"],
                    "shard": shard,
                    "reason": "alarm",
                    "detail": {"name": "device_offline", "severity": "major", "ts": clock[0]},
                },
                {
                    "device_id": world.ids["cc-leak"],
                    "shard": shard,
                    "reason": "alarm",
                    "detail": {"name": "anomaly_sustained", "severity": "minor", "ts": clock[0]},
                },
            ],
        )
    stats = sc.request_pass()
    assert stats.devices == 3 and stats.scored == 3
    assert stats.triggers == {"opened": 1}
    with world.sessions() as s:
        (order,) = s.scalars(select(WorkOrder)).all()
        assert (order.device_id, order.fault) == (world.ids["fan-ok"], "alarm:device_offline")
        assert order.problem == "controller not answering"
        assert s.scalar(select(func.count()).select_from(RiskRequest)) == 0
    assert sc.request_pass().devices == 0


def site_id_in(partition: int, partitions: int) -> str:
    """A fresh site id whose shard falls in ``partition`` of ``partitions``."""
    while True:
        candidate = str(uuid.uuid4())
        if site_shard(candidate) % partitions == partition:
            return candidate


def test_partitions_split_the_fleet_by_site(world: World) -> None:
    with world.sessions.begin() as s:
        client_id = s.scalars(select(Client.id)).one()
        for i in range(12):
            # Ids chosen so that each partition gets sites (random ids left one empty
            # about once in a dozen runs).
            site = Site(
                id=site_id_in(i % 3, 3), client_id=client_id, name=f"site {i}",
                kind=SiteKind.OFFICE,
            )  # fmt: skip
            s.add(site)
            s.flush()
            s.add(Gateway(id=f"gw-{i}", site_id=site.id))
            s.flush()
            s.add(Device(gateway_id=f"gw-{i}", name="cc", asset_type="compressor"))
    clock = [START]
    parts = [scorer(world, clock, partition=i, partitions=3).devices() for i in range(3)]
    ids = [d.id for p in parts for d in p]
    assert len(ids) == len(set(ids)) == 15  # every device exactly once
    assert all(parts)
    by_site = {d.site_id: i for i, p in enumerate(parts) for d in p}
    assert all(by_site[d.site_id] == i for i, p in enumerate(parts) for d in p)
    with pytest.raises(ValueError, match="partition 3"):
        ScorerConfig(partition=3, partitions=3)


def test_ingest_asks_for_anomalous_windows_and_raised_alarms() -> None:
    tags = {"client": "c", "site": "s", "gateway": "g", "device": "d1"}
    t = 1_700_000_000_000_000_000
    points = [
        Point("score", t, tags | {"group": "fast"}, {"score": 1.0, "anomalous": False}),
        Point("score", t, tags | {"group": "slow"}, {"score": 4.0, "anomalous": True}),
        Point("score", t + 1, tags | {"group": "slow"}, {"score": 5.0, "anomalous": True}),
        Point(
            "alarm", t, tags | {"name": "device_offline"}, {"state": "raised", "severity": "major"}
        ),
        Point(
            "alarm",
            t,
            tags | {"name": "high_temp", "device": "d2"},
            {"state": "cleared", "severity": "major"},
        ),
        Point("features", t, tags | {"group": "slow"}, {"a__mean": 1.0}),
    ]
    rows = requests_of(points)
    assert [(r["device_id"], r["reason"]) for r in rows] == [("d1", "anomaly"), ("d1", "alarm")]
    assert rows[1]["detail"]["name"] == "device_offline" and rows[0]["shard"] == site_shard("s")
    assert requests_of(points[:1]) == []


def test_old_scores_are_pruned_alerts_kept_longer_and_only_in_the_own_partition(
    world: World,
) -> None:
    now = START + 1000 * DAY
    device = world.ids["cc-ok"]
    with world.sessions() as s:
        site_id = s.scalars(select(Site.id)).one()
    ages = [(5, False), (89, True), (91, False), (92, False), (95, False), (400, True),
            (729, True), (731, True), (900, False)]  # fmt: skip
    with world.sessions.begin() as s:
        s.execute(
            insert(RiskScore),
            [
                {
                    "device_id": device, "site_id": site_id,
                    "ts": datetime.fromtimestamp(now - age * DAY, UTC),
                    "p24": 0.1, "p72": 0.9 if alert else 0.1, "horizon_h": 72.0,
                    "fault_type": "refrigerant_leak", "fault_probs": {}, "health": 50,
                    "anomaly_score": None, "alert": alert, "top_signals": [], "model": "m",
                }
                for age, alert in ages
            ],
        )  # fmt: skip

    def left() -> list[tuple[int, bool]]:
        with world.sessions() as s:
            rows = s.execute(select(RiskScore.ts, RiskScore.alert).order_by(RiskScore.ts))
            return [(round((now - ts.replace(tzinfo=UTC).timestamp()) / DAY), a) for ts, a in rows]

    other = (site_shard(site_id) + 1) % 2
    assert scorer(world, [now], partition=other, partitions=2).prune() == 0
    assert len(left()) == len(ages)
    mine = scorer(world, [now], partition=site_shard(site_id) % 2, partitions=2, prune_rows=2)
    assert mine.prune() == 5  # 91, 92, 95 and 900 days, and the alert of 731 days
    assert left() == [(729, True), (400, True), (89, True), (5, False)]
    assert mine.prune() == 0


def test_alert_history_shorter_than_the_history_is_refused() -> None:
    with pytest.raises(ValueError, match="alert history"):
        ScorerConfig(history_days=90, alert_history_days=30)


# -- baselines through the seasons ---------------------------------------------------------
SEASON_IDS = {"cc-ok": "season-cc", "fan-ok": "season-fan"}


@dataclass
class Spring:
    sim: Sim
    store: SQLiteStore


@pytest.fixture(scope="module")
def spring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spring]:
    """150 days of a healthy compressor and fan from February, in one time-series store
    that every test's registry shares (the devices have fixed ids)."""
    path = tmp_path_factory.mktemp("season")
    sim = season_fleet(path / "sim")
    store = SQLiteStore(path / "ts.db")
    store_windows(store, sim, SEASON_IDS, {"client": "c", "site": "s", "gateway": "g"})
    try:
        yield Spring(sim, store)
    finally:
        store.close()


def _through_the_spring(
    w: World, until_day: float, clock: list[float], sc: RiskScorer, every_h: float = 6.0
) -> None:
    while clock[0] < SEASON_START + until_day * DAY:
        clock[0] += every_h * H
        assert sc.scheduled_pass().failed == 0


def _scores(w: World, asset: str, from_day: float, to_day: float) -> list[float]:
    lo = datetime.fromtimestamp(SEASON_START + from_day * DAY, UTC)
    hi = datetime.fromtimestamp(SEASON_START + to_day * DAY, UTC)
    with w.sessions() as s:
        return [
            float(v)
            for v in s.scalars(
                select(RiskScore.anomaly_score).where(
                    RiskScore.device_id == w.ids[asset], RiskScore.ts >= lo, RiskScore.ts < hi
                )
            )
        ]


def _spring_world(spring: Spring, runtime: RiskRuntime, path: Path) -> World:
    path.mkdir()
    sessions, ids, _ = _registry(path, spring.sim, SEASON_START, SEASON_IDS)
    return World(sessions, spring.store, runtime, ids)


PERIODS = ((90, 100), (100, 114), (120, 150))
"""Days since 1 February over which the tests compare anomaly scores."""


def _medians(w: World) -> dict[tuple[str, int], float]:
    return {(a, lo): float(np.median(_scores(w, a, lo, hi))) for a in w.ids for lo, hi in PERIODS}


@pytest.fixture(scope="module")
def rolling(
    spring: Spring, runtime: RiskRuntime, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, int], float]:
    """The median anomaly scores of the spring with the default rolling baseline, every
    6 h from day 1 to day 150, no orders."""
    w = _spring_world(spring, runtime, tmp_path_factory.mktemp("rolling") / "w")
    clock = [SEASON_START + DAY]
    _through_the_spring(w, 150, clock, scorer(w, clock, baseline_days=14))
    with w.sessions() as s:
        assert s.scalars(select(WorkOrder)).all() == []
    return _medians(w)


def test_a_unit_is_compared_with_its_recent_weeks_not_with_its_first(
    spring: Spring, runtime: RiskRuntime, rolling: dict[tuple[str, int], float], tmp_path: Path
) -> None:
    """From February to June a healthy unit's temperatures and pressures move far from its
    first fortnight's. Against that fortnight its typical window in June is anomalous (its
    median score is over the detector's threshold); rebuilt weekly from the windows 14-44
    days back, its baseline follows the season and the unit looks as healthy as it is."""
    w = _spring_world(spring, runtime, tmp_path / "first")
    clock = [SEASON_START + DAY]
    fixed = scorer(w, clock, baseline_days=14, baseline_refresh_days=365)
    _through_the_spring(w, 150, clock, fixed)
    first = _medians(w)
    detectors = load_detectors(DEFAULT_MODELS_DIR)
    for asset, rec in spring.sim.recs.items():
        threshold = detectors[rec.asset_type].threshold
        june = (asset, 120)
        assert first[june] > threshold, (asset, first, rolling)
        assert rolling[june] < min(threshold, 0.5 * first[june]), (asset, first, rolling)


def test_an_open_risk_order_keeps_the_baseline_and_a_repair_starts_it_again(
    spring: Spring, runtime: RiskRuntime, rolling: dict[tuple[str, int], float], tmp_path: Path
) -> None:
    """While a risk order is open the device's baseline is not rebuilt, so the fault
    under investigation cannot become its normal; a completed order (a repair) starts the
    baseline again from the first days after it, the old one serving until then."""
    w = _spring_world(spring, runtime, tmp_path / "w")
    clock = [SEASON_START + DAY]
    sc = scorer(w, clock, baseline_days=14)
    _through_the_spring(w, 60, clock, sc)
    opened = trigger(
        w.sessions,
        Trigger(w.ids["cc-ok"], "refrigerant_leak", Source.RISK,
                datetime.fromtimestamp(clock[0], UTC), p24=0.5, p72=0.97, threshold=0.95),
        OrderPolicy(),
        now=datetime.fromtimestamp(clock[0], UTC),
    )  # fmt: skip
    assert opened.outcome == "opened" and opened.order_id is not None
    _through_the_spring(w, 100, clock, sc)
    with w.sessions.begin() as s:
        for state in ("approved", "scheduled", "in_progress", "complete", "closed"):
            transition(s, Principal.system(), opened.order_id, state,
                       now=datetime.fromtimestamp(clock[0], UTC))  # fmt: skip
    _through_the_spring(w, 150, clock, sc)
    got = _medians(w)
    threshold = load_detectors(DEFAULT_MODELS_DIR)["compressor"].threshold
    # Held at its baseline of early April, the compressor's May windows look anomalous;
    # its own baseline rolled on, they would not.
    for lo in (90, 100):
        assert got[("cc-ok", lo)] > threshold > rolling[("cc-ok", lo)], (got, rolling)
    # Two weeks after the repair (day 100) the first days after it are its baseline.
    assert got[("cc-ok", 120)] < threshold
    # The fan had no order: its baseline rolled on as in the run without one.
    assert all(got[("fan-ok", lo)] == rolling[("fan-ok", lo)] for lo, _ in PERIODS)
