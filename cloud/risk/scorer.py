"""The risk scorer: each device's recent feature history through its asset type's risk
model, the result kept, and work orders opened or raised from it.

One :class:`RiskScorer` owns the sites of one partition (``site.shard % partitions ==
partition``); several scorer processes with the same ``partitions`` and different
``partition`` share a fleet without talking to each other. Two passes:

- the *scheduled* pass scores every device of the partition every ``interval_s``;
- the *request* pass, every ``poll_s``, takes the partition's
  :class:`~cloud.risk.models.RiskRequest` rows (ingest writes them when an anomalous
  window or a local alarm arrives), scores those devices at once and opens alarm orders
  for raised alarms of a visit-worthy severity, then deletes the rows it handled.

Scoring a device: the windows of the last ``spec.history_s`` from the time-series store
(the risk model's features only), its baseline (:meth:`RiskScorer._baseline`),
:meth:`models.runtime.RiskRuntime.assess`,
:func:`cloud.workorders.service.trigger` when P(failure within the alert horizon) reaches
the asset type's threshold, then one :class:`~cloud.risk.models.RiskScore` row per window end
(a window already scored is not scored again). Every step is idempotent and a window is
done only once its score is stored, so a scorer killed midway loses nothing but time.

A device's baseline follows :class:`models.runtime.BaselinePolicy` from the device's
origin: its registration, or the close of its latest completed work order (a repair or
service changes how a unit runs). The first ``baseline_days`` of windows after the origin,
then, rebuilt every ``baseline_refresh_days``, the windows from ``baseline_lag_days +
baseline_span_days`` to ``baseline_lag_days`` back, so that a unit is compared with itself
a few weeks ago and not with its first fortnight, seasons ago. While the device has an
open risk order its baseline is not rebuilt: the fault under repair stays out of it. After
a repair the old baseline serves until the first days after it are over, open order or
not (as `models.pipeline.standardised`'s ``deployed`` reference, which evaluation and
fitting can use, does). A device that
never had a baseline of its own is *learning* (not scored) until it has
:attr:`models.runtime.InputSpec.baseline_windows` windows; until its first days are over
its baseline is rebuilt from what it has at every pass.

The history is bounded: once an hour each scorer deletes its partition's scores older than
``history_days`` (90) and its alerts older than ``alert_history_days`` (730), a few
thousand rows per transaction (:meth:`RiskScorer.prune`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Histogram
from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.errors import CloudError, RegistryUnavailable, StoreUnavailable
from cloud.registry.models import Device, Gateway, Site
from cloud.risk.models import RiskRequest, RiskScore
from cloud.tsdb.base import FeatureRow, TimeSeriesStore
from cloud.workorders.catalogue import ALARM_PREFIX
from cloud.workorders.models import Source, WorkOrder, open_key
from cloud.workorders.policy import State
from cloud.workorders.service import OrderPolicy, Trigger, TriggerResult, trigger, trigger_many
from models.anomaly import Standardizer
from models.runtime import DAY_S, Assessment, BaselinePolicy, DeviceHistory, InputSpec, RiskRuntime

log = logging.getLogger(__name__)

SCORED = Counter("edgewatch_risk_scored_total", "Device assessments", ["asset_type", "result"])
TRIGGERS = Counter("edgewatch_workorder_triggers_total", "Work-order triggers", ["outcome"])
PRUNED = Counter("edgewatch_risk_scores_pruned_total", "Risk scores deleted as too old")
PASS_SECONDS = Histogram("edgewatch_risk_pass_seconds", "Duration of a scorer pass", ["kind"])


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    partition: int = 0
    partitions: int = 1
    interval_s: float = 3600.0
    poll_s: float = 2.0
    baseline_days: float = 14.0
    """A device's first days after its origin: its baseline until a rolling one exists."""
    baseline_lag_days: float = 14.0
    baseline_span_days: float = 30.0
    baseline_refresh_days: float = 7.0
    """The rolling baseline: rebuilt this often from the windows ``lag + span`` to ``lag``
    days back (:class:`models.runtime.BaselinePolicy`)."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """P(failure within the alert horizon) that opens an order, per asset type; missing:
    the risk model's threshold."""
    alarm_severities: frozenset[str] = frozenset({"critical", "major"})
    chunk: int = 256
    """Devices per database round and per model call in the scheduled pass."""
    history_days: float = 90.0
    """Risk scores older than this are deleted ..."""
    alert_history_days: float = 730.0
    """... except alerts (over their threshold), kept this long."""
    prune_every_s: float = 3600.0
    prune_rows: int = 5000
    """Rows deleted per statement (short transactions on a large table)."""

    def __post_init__(self) -> None:
        self.policy  # noqa: B018 - validates the baseline fields
        if not 0 <= self.partition < self.partitions:
            raise ValueError(f"partition {self.partition} is not in [0, {self.partitions})")
        if self.alert_history_days < self.history_days:
            raise ValueError(
                f"alert history ({self.alert_history_days:g} days) is shorter than the "
                f"history ({self.history_days:g} days)"
            )

    @property
    def policy(self) -> BaselinePolicy:
        return BaselinePolicy(
            first_days=self.baseline_days,
            lag_days=self.baseline_lag_days,
            span_days=self.baseline_span_days,
            refresh_days=self.baseline_refresh_days,
        )


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    site_id: str
    asset_type: str
    created_at: datetime


@dataclass(slots=True)
class PassStats:
    devices: int = 0
    scored: int = 0
    """New assessments stored (a device whose newest window was scored before: not)."""
    no_data: int = 0
    learning: int = 0
    """Devices without enough windows yet for their own baseline (not scored)."""
    triggers: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0

    def count(self, result: TriggerResult) -> None:
        self.triggers[result.outcome] = self.triggers.get(result.outcome, 0) + 1
        TRIGGERS.labels(result.outcome).inc()


def _matrix(rows: Sequence[FeatureRow], names: Sequence[str]) -> npt.NDArray[np.float64]:
    """Rows × ``names`` of the windows' features; NaN where a window lacks one."""
    return np.asarray(
        [[r.features.get(n, np.nan) for n in names] for r in rows], dtype=np.float64
    ).reshape(len(rows), len(names))


def _epoch(at: datetime) -> float:
    """A database time (naive: UTC) as epoch seconds."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _hop(rows: Sequence[FeatureRow], default: float) -> float:
    """The typical spacing of the rows' window ends (``default`` for fewer than two)."""
    if len(rows) < 2:
        return default
    return float(np.median(np.diff([r.ts for r in rows])))


class _Learning(Exception):
    """The device has no baseline of its own yet."""


@dataclass(slots=True)
class _Cached:
    baseline: Standardizer
    until: float
    """Used as it is while the clock is before this (epoch s)."""
    origin: float
    """The device's origin when it was built (a repair since: the baseline is stale)."""


@dataclass(frozen=True, slots=True)
class _Service:
    """What the work orders say about devices' baselines."""

    frozen: frozenset[str] = frozenset()
    """Devices with an open risk order."""
    serviced: Mapping[str, float] = field(default_factory=dict)
    """Each device's latest completed (closed) order: when it closed (epoch s)."""


class RiskScorer:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: TimeSeriesStore,
        runtime: RiskRuntime,
        orders: OrderPolicy,
        config: ScorerConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.runtime = runtime
        self.orders = orders
        self.config = config
        self.clock = clock
        self._baselines: dict[str, _Cached] = {}

    # -- which devices -------------------------------------------------------------------
    def devices(self, ids: Iterable[str] | None = None) -> list[DeviceRow]:
        """The partition's devices whose asset type has a risk model (``ids``: only these)."""
        cfg = self.config
        stmt = (
            select(Device.id, Site.id, Device.asset_type, Device.created_at)
            .join(Gateway, Device.gateway_id == Gateway.id)
            .join(Site, Gateway.site_id == Site.id)
            .where(Device.asset_type.in_(self.runtime.asset_types))
            .order_by(Site.id, Device.id)
        )
        if cfg.partitions > 1:
            stmt = stmt.where(Site.shard % cfg.partitions == cfg.partition)
        if ids is not None:
            stmt = stmt.where(Device.id.in_(list(ids)))
        with self.sessions() as session:
            return [DeviceRow(*row) for row in session.execute(stmt)]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def threshold(self, asset_type: str) -> float:
        configured = self.config.thresholds.get(asset_type)
        return configured if configured is not None else self.runtime.threshold(asset_type)

    # -- scoring -------------------------------------------------------------------------
    def _history(self, dev: DeviceRow, now: float, service: _Service) -> DeviceHistory | None:
        baseline = self._baseline(dev, now, service)
        if baseline is None:
            raise _Learning
        spec = self.runtime.spec(dev.asset_type)
        names = list(spec.feature_names)
        rows = self.store.feature_history(dev.id, now - spec.history_s, now + 1, names=names)
        if not rows:
            return None
        t = np.asarray([r.ts for r in rows], dtype=np.float64)
        return DeviceHistory(t, _matrix(rows, names), baseline)

    def _service(self, devices: Sequence[DeviceRow], now: float) -> _Service:
        """The work-order facts for the devices whose cached baseline is due (no query when
        none is)."""
        ids = [
            d.id for d in devices if (c := self._baselines.get(d.id)) is None or now >= c.until
        ]
        if not ids:
            return _Service()
        keys = [open_key(i, "", Source.RISK) for i in ids]
        with self.sessions() as session:
            frozen = frozenset(
                session.scalars(select(WorkOrder.device_id).where(WorkOrder.open_key.in_(keys)))
            )
            closed = session.execute(
                select(WorkOrder.device_id, func.max(WorkOrder.closed_at))
                .where(WorkOrder.device_id.in_(ids), WorkOrder.state == State.CLOSED)
                .group_by(WorkOrder.device_id)
            ).all()
        serviced = {d: _epoch(at) for d, at in closed if at is not None}
        return _Service(frozen, serviced)

    def _baseline(self, dev: DeviceRow, now: float, service: _Service) -> Standardizer | None:
        """The device's baseline at ``now`` (see the module docstring); None while it is
        learning.

        The shipped models were trained against each device's own baseline: against the
        fleet's, healthy devices score P72 of 0.7-1.0. So a device is not scored at all
        until it has its own."""
        cached = self._baselines.get(dev.id)
        if cached is not None and now < cached.until:
            return cached.baseline
        spec = self.runtime.spec(dev.asset_type)
        policy = self.config.policy
        origin = dev.created_at.timestamp() - spec.window_s
        origin = max(origin, service.serviced.get(dev.id, origin))
        block = policy.block(origin, now)
        until = block + policy.refresh_days * DAY_S
        if cached is not None and dev.id in service.frozen and cached.origin == origin:
            # Kept while a risk order is open; not one from before a repair, which would
            # keep the order going on a stale baseline.
            cached.until = until
            return cached.baseline
        start, end = policy.rolling(origin, block)
        if end > start:
            rows = self._rows(dev, spec, start, end)
            if policy.enough(len(rows), _hop(rows, spec.hop_s)):
                return self._keep(dev, rows, until, origin)
        start, end = policy.first(origin)
        if end <= now:
            rows = self._rows(dev, spec, start, end)
            if len(rows) >= spec.baseline_windows:
                return self._keep(dev, rows, until, origin)
        elif cached is None:
            # A new device: its first days so far, rebuilt at every pass until they are over.
            rows = self._rows(dev, spec, start, now + 1)
            if len(rows) >= spec.baseline_windows:
                return self._build(dev, rows)
            return None
        if cached is None:
            return None
        # Back from a repair with its first days not over, or too few windows to rebuild:
        # the baseline it had.
        cached.until = min(until, end) if end > now else until
        return cached.baseline

    def _rows(self, dev: DeviceRow, spec: InputSpec, start: float, end: float) -> list[FeatureRow]:
        return self.store.feature_history(dev.id, start, end, names=list(spec.feature_names))

    def _build(self, dev: DeviceRow, rows: Sequence[FeatureRow]) -> Standardizer:
        spec = self.runtime.spec(dev.asset_type)
        kept = rows[self.config.policy.thinned(len(rows))]
        return self.runtime.baseline(dev.asset_type, _matrix(kept, spec.feature_names))

    def _keep(
        self, dev: DeviceRow, rows: Sequence[FeatureRow], until: float, origin: float
    ) -> Standardizer:
        baseline = self._build(dev, rows)
        self._baselines[dev.id] = _Cached(baseline, until, origin)
        return baseline

    def score(self, devices: Sequence[DeviceRow], stats: PassStats | None = None) -> PassStats:
        """Assess ``devices`` now, store what is new, trigger orders where risk is high."""
        stats = stats or PassStats()
        now = self.clock()
        service = self._service(devices, now)
        by_type: dict[str, list[tuple[DeviceRow, DeviceHistory]]] = {}
        for dev in devices:
            stats.devices += 1
            try:
                history = self._history(dev, now, service)
            except _Learning:
                stats.learning += 1
                SCORED.labels(dev.asset_type, "learning").inc()
                continue
            except StoreUnavailable:
                raise
            except CloudError as exc:
                stats.failed += 1
                log.error("device %s: cannot read its history: %s", dev.id, exc)
                continue
            if history is None:
                stats.no_data += 1
                SCORED.labels(dev.asset_type, "no_data").inc()
                continue
            by_type.setdefault(dev.asset_type, []).append((dev, history))
        for asset_type, items in by_type.items():
            results = self.runtime.assess_many(asset_type, [h for _, h in items], last=1)
            pairs = [(d, r[-1]) for (d, _), r in zip(items, results, strict=True) if r]
            # The orders first, then the scores: a stored score marks its window done, so
            # a scorer killed (or a trigger failing) in between must leave the window
            # unscored, to be triggered again (idempotently) by the next pass.
            done = []
            for dev, a in self._unscored(pairs):
                if a.p_alert >= self.threshold(asset_type):
                    try:
                        stats.count(self._trigger(dev, a))
                    except RegistryUnavailable:
                        raise
                    except CloudError as exc:
                        stats.failed += 1
                        log.error("device %s: trigger failed, retried next pass: %s", dev.id, exc)
                        continue
                done.append((dev, a))
            fresh = self._store_scores(asset_type, done)
            stats.scored += len(fresh)
            SCORED.labels(asset_type, "stored").inc(len(fresh))
        return stats

    def _unscored(
        self, pairs: Sequence[tuple[DeviceRow, Assessment]]
    ) -> list[tuple[DeviceRow, Assessment]]:
        """The assessments whose window end is newer than their device's newest score."""
        if not pairs:
            return []
        with self.sessions() as session:
            newest = dict(
                session.execute(
                    select(RiskScore.device_id, func.max(RiskScore.ts))
                    .where(RiskScore.device_id.in_([d.id for d, _ in pairs]))
                    .group_by(RiskScore.device_id)
                ).all()
            )
        return [
            (d, a)
            for d, a in pairs
            if newest.get(d.id) is None or newest[d.id] < datetime.fromtimestamp(a.ts, UTC)
        ]

    def _store_scores(
        self, asset_type: str, pairs: Sequence[tuple[DeviceRow, Assessment]]
    ) -> list[tuple[DeviceRow, Assessment]]:
        """Insert the assessments whose window end is new for their device; those."""
        if not pairs:
            return []
        when = {dev.id: datetime.fromtimestamp(a.ts, UTC) for dev, a in pairs}
        with self.sessions.begin() as session:
            newest = dict(
                session.execute(
                    select(RiskScore.device_id, func.max(RiskScore.ts))
                    .where(RiskScore.device_id.in_(list(when)))
                    .group_by(RiskScore.device_id)
                ).all()
            )
            fresh = [
                (d, a) for d, a in pairs if newest.get(d.id) is None or newest[d.id] < when[d.id]
            ]
            if fresh:
                model = f"{asset_type}-risk"
                session.execute(
                    insert(RiskScore),
                    [
                        {
                            "device_id": d.id,
                            "site_id": d.site_id,
                            "ts": when[d.id],
                            "computed_at": self._now(),
                            "p24": a.p24,
                            "p72": a.p72,
                            "horizon_h": a.horizon_h,
                            "p_alert": a.p_alert,
                            "alert_horizon_h": a.alert_horizon_h,
                            "fault_type": a.fault_type,
                            "fault_probs": a.fault_probs,
                            "health": a.health,
                            "anomaly_score": a.anomaly_score,
                            "alert": a.alert,
                            "top_signals": [
                                {
                                    "signal": s.signal,
                                    "share": s.share,
                                    "trend_per_day": s.trend_per_day,
                                }
                                for s in a.top_signals
                            ],
                            "model": model,
                        }
                        for d, a in fresh
                    ],
                )
        return fresh

    def _trigger(self, dev: DeviceRow, a: Assessment) -> TriggerResult:
        t = Trigger(
            device_id=dev.id,
            fault=a.fault_type,
            source=Source.RISK,
            at=datetime.fromtimestamp(a.ts, UTC),
            p24=a.p24,
            p72=a.p72,
            threshold=self.threshold(dev.asset_type),
            horizon_h=a.horizon_h,
            p_alert=a.p_alert,
            alert_horizon_h=a.alert_horizon_h,
            health=a.health,
            evidence={
                "top_signals": [
                    {
                        "signal": s.signal,
                        "share": round(s.share, 4),
                        "trend_per_day": round(s.trend_per_day, 4),
                    }
                    for s in a.top_signals
                ],
                "fault_probs": {k: round(v, 4) for k, v in a.fault_probs.items()},
                "anomaly_score": a.anomaly_score,
            },
        )
        return trigger(self.sessions, t, self.orders, now=self._now())

    # -- passes --------------------------------------------------------------------------
    def scheduled_pass(self) -> PassStats:
        """Score every device of the partition once."""
        started = time.perf_counter()
        stats = PassStats()
        devices = self.devices()
        for i in range(0, len(devices), self.config.chunk):
            self.score(devices[i : i + self.config.chunk], stats)
        stats.seconds = time.perf_counter() - started
        PASS_SECONDS.labels("scheduled").observe(stats.seconds)
        return stats

    def request_pass(self, limit: int = 1000) -> PassStats:
        """Handle the partition's pending requests (see the module docstring)."""
        started = time.perf_counter()
        stats = PassStats()
        cfg = self.config
        stmt = select(RiskRequest).order_by(RiskRequest.id).limit(limit)
        if cfg.partitions > 1:
            stmt = stmt.where(RiskRequest.shard % cfg.partitions == cfg.partition)
        with self.sessions() as session:
            requests = list(session.scalars(stmt))
        if not requests:
            return stats
        wanted = {r.device_id for r in requests}
        devices = {d.id: d for d in self.devices(wanted)}
        # A request's device exists (the foreign key cascades deletes); an alarm opens an
        # order whether or not the device's asset type has a risk model. The alarms go
        # through trigger_many: as many triggers in a row, sharing their round trips.
        alarms = [
            self._alarm_trigger(r.device_id, r.detail or {})
            for r in requests
            if r.reason == "alarm"
            and str((r.detail or {}).get("severity", "")) in cfg.alarm_severities
        ]
        for result in trigger_many(self.sessions, alarms, self.orders, now=self._now()):
            if isinstance(result, CloudError):
                raise result
            stats.count(result)
        self.score([devices[d] for d in sorted(wanted) if d in devices], stats)
        with self.sessions.begin() as session:
            session.execute(delete(RiskRequest).where(RiskRequest.id.in_([r.id for r in requests])))
        stats.seconds = time.perf_counter() - started
        PASS_SECONDS.labels("requests").observe(stats.seconds)
        return stats

    def prune(self) -> int:
        """Delete the partition's risk scores older than ``history_days`` (alerts: older
        than ``alert_history_days``), a few thousand rows per transaction; how many."""
        cfg = self.config
        now = self._now()
        old = RiskScore.ts < now - timedelta(days=cfg.history_days)
        expired = or_(
            RiskScore.alert.is_(False), RiskScore.ts < now - timedelta(days=cfg.alert_history_days)
        )
        rows = select(RiskScore.id).where(old, expired)
        if cfg.partitions > 1:
            mine = select(Site.id).where(Site.shard % cfg.partitions == cfg.partition)
            rows = rows.where(RiskScore.site_id.in_(mine))
        deleted = 0
        while True:
            with self.sessions.begin() as session:
                ids = list(session.scalars(rows.limit(cfg.prune_rows)))
                if ids:
                    session.execute(delete(RiskScore).where(RiskScore.id.in_(ids)))
            deleted += len(ids)
            if len(ids) < cfg.prune_rows:
                break
        if deleted:
            PRUNED.inc(deleted)
            log.info("pruned %d risk scores of partition %d", deleted, cfg.partition)
        return deleted

    def _alarm_trigger(self, device_id: str, detail: Mapping[str, Any]) -> Trigger:
        name = str(detail.get("name", "")) or "unnamed"
        ts = detail.get("ts")
        at = datetime.fromtimestamp(float(ts), UTC) if isinstance(ts, int | float) else self._now()
        t = Trigger(
            device_id=device_id,
            fault=ALARM_PREFIX + name,
            source=Source.ALARM,
            at=at,
            evidence={"alarm": dict(detail)},
            note=f"local alarm {name} raised ({detail.get('severity', '')})",
        )
        return t

    def run(self, stop: threading.Event) -> None:
        """Request passes every ``poll_s`` and a scheduled pass every ``interval_s`` until
        ``stop`` is set; a store or database outage is logged and retried next round (the
        scheduled pass too: it is due again until one completes)."""
        next_full = next_prune = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_prune:
                    self.prune()
                    next_prune = time.monotonic() + self.config.prune_every_s
                if time.monotonic() >= next_full:
                    stats = self.scheduled_pass()
                    next_full = time.monotonic() + self.config.interval_s
                    log.info(
                        "scheduled pass: %d devices, %d scored, %d without data, orders %s, %.1f s",
                        stats.devices,
                        stats.scored,
                        stats.no_data,
                        stats.triggers,
                        stats.seconds,
                    )
                self.request_pass()
            except (CloudError, SQLAlchemyError) as exc:
                log.warning("scorer pass failed, retrying: %s", " ".join(str(exc).split())[:300])
            stop.wait(self.config.poll_s)


def config_from(settings: Any, partition: int = 0, partitions: int = 1) -> ScorerConfig:
    """A :class:`ScorerConfig` from :class:`cloud.settings.Settings`."""
    return ScorerConfig(
        partition=partition,
        partitions=partitions,
        interval_s=settings.scorer_interval_s,
        poll_s=settings.scorer_poll_s,
        baseline_days=settings.scorer_baseline_days,
        baseline_lag_days=settings.scorer_baseline_lag_days,
        baseline_span_days=settings.scorer_baseline_span_days,
        baseline_refresh_days=settings.scorer_baseline_refresh_days,
        thresholds=dict(settings.risk_thresholds),
        alarm_severities=frozenset(settings.workorder_alarm_severities),
        history_days=settings.risk_history_days,
        alert_history_days=settings.risk_alert_history_days,
    )


def order_policy(settings: Any) -> OrderPolicy:
    from cloud.workorders.catalogue import load_catalogue

    return OrderPolicy(
        catalogue=load_catalogue(settings.fault_catalogue),
        cooldown=timedelta(hours=settings.workorder_cooldown_h),
        public_url=settings.public_url,
    )
