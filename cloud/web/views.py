"""The dashboard's pages as data: what the fleet, site, device, board and order pages show.

Everything is read through the registry's and the work orders' services with the caller's
:class:`~cloud.auth.principal.Principal` (``services.list_sites``, ``get_site``,
``device_context``, ``queries.site_risk``, ``queries.device_risk``, ``service.list_orders``,
``queries.order_detail`` …), so tenant isolation is theirs and never re-implemented here:
another client's object is :class:`~cloud.errors.NotFound` and never in a list. Names of
devices on the board are looked up by the ids of orders the service already returned.

No FastAPI here; :mod:`cloud.web.routes` renders these with the templates. The store is
read through :class:`Readings`: when it cannot answer, a page still shows risk, orders and
the registry, and says that readings are unavailable.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal, TypeVar
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.auth.principal import Principal
from cloud.errors import CloudError, StoreError
from cloud.registry import services
from cloud.registry.models import Client, Device, DeviceEvent, Gateway, Site
from cloud.risk.models import RiskScore
from cloud.tsdb.base import AlarmEvent, Latest, SiteRollup, TimeSeriesStore
from cloud.web.baseline import BaselineSource
from cloud.web.charts import (
    DEFAULT_SPAN,
    MAX_CUSTOM_SPAN,
    MEAN,
    PALETTE,
    SPANS,
    Chart,
    DailyTotals,
    Series,
    candidate_signals,
    daily_totals,
    describe,
    key_signals,
    local_days,
    month_to_date,
    resample,
    rollup_interval,
    signal_title,
    signal_units,
)
from cloud.web.formatting import fmt_date, fmt_kwh, humanize, zone
from cloud.workorders import queries, service
from cloud.workorders.catalogue import DEFAULTS as FAULT_DEFAULTS
from cloud.workorders.models import Technician, WorkOrder
from cloud.workorders.policy import TRANSITIONS, State
from cloud.workorders.service import DESK_ROLES, OrderFilter, may_move, order_number

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE: Final = 1000
"""Rows per call of a paged service (their maximum)."""
MAX_ROWS: Final = 10_000
"""Rows a page reads of one list at most."""
BOARD_ROWS: Final = 300
"""Orders the board shows at most (after filtering and sorting)."""
DUE_SOON: Final = timedelta(hours=4)
MAX_CANDIDATE_SIGNALS: Final = 24
EVENTS_SHOWN: Final = 100
ALERTS_SHOWN: Final = 20
ALARMS_SHOWN: Final = 200
"""Alarm events the device page lists at most (the newest; it says when there were more)."""
WARRANTY_WARNING_DAYS: Final = 60

RISK_ELEVATED: Final = 0.2
RISK_HIGH: Final = 0.5
RISK_CRITICAL: Final = 0.8

RiskBand = Literal["critical", "high", "elevated", "low", "unknown"]
BAND_LABELS: Final[Mapping[str, str]] = {
    "critical": "Critical",
    "high": "High",
    "elevated": "Elevated",
    "low": "Low",
    "unknown": "Not scored",
}


def risk_band(p72: float | None) -> RiskBand:
    """How worrying P(failure within 72 h) is: ≥ 80 % critical, ≥ 50 % high (a work order
    opens around here), ≥ 20 % elevated, else low."""
    if p72 is None or not math.isfinite(p72):
        return "unknown"
    if p72 >= RISK_CRITICAL:
        return "critical"
    if p72 >= RISK_HIGH:
        return "high"
    return "elevated" if p72 >= RISK_ELEVATED else "low"


# ---- helpers --------------------------------------------------------------------------------


def _all(fetch: Callable[[int, int], Sequence[T]], cap: int = MAX_ROWS) -> list[T]:
    """Every row of a paged service call (``fetch(limit, offset)``), up to ``cap``."""
    out: list[T] = []
    offset = 0
    while offset < cap:
        page = fetch(PAGE, offset)
        out.extend(page)
        if len(page) < PAGE:
            break
        offset += PAGE
    return out


def _orders(session: Session, p: Principal, f: OrderFilter) -> list[WorkOrder]:
    return _all(
        lambda limit, offset: service.list_orders(
            session, p, dataclasses.replace(f, limit=limit, offset=offset)
        )
    )


def _sites(session: Session, p: Principal) -> list[Site]:
    return _all(lambda limit, offset: services.list_sites(session, p, limit=limit, offset=offset))


def _site_risk(session: Session, p: Principal, site_id: str) -> list[queries.DeviceRiskRow]:
    return _all(
        lambda limit, offset: queries.site_risk(session, p, site_id, limit=limit, offset=offset)
    )


class Readings:
    """The time-series store for one page: a call that fails with a
    :class:`~cloud.errors.StoreError` answers None, is logged (the first at WARNING) and
    marks the page, which then says that readings are unavailable."""

    def __init__(self, store: TimeSeriesStore) -> None:
        self.store = store
        self.failed = False

    def call(self, what: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except StoreError as exc:
            level = logging.DEBUG if self.failed else logging.WARNING
            log.log(level, "dashboard: the time-series store failed %s: %s", what, exc)
            self.failed = True
            return None


class Repeats:
    """Failures that repeat on every request while they last, logged as the style guide
    asks: the first of a run at WARNING, the repeats at DEBUG with their count. A success
    ends the run, so the next failure warns again. Shared by every request (thread-safe);
    remembers at most ``max_keys`` keys (beyond them, every failure warns)."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._runs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def failed(self, key: str) -> int:
        """This failure's place in the run of ``key``'s failures (1: the first)."""
        with self._lock:
            n = self._runs.get(key, 0) + 1
            if n > 1 or len(self._runs) < self._max_keys:
                self._runs[key] = n
            return n

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._runs.pop(key, None)


NO_BASELINE: Final = Repeats()
"""Sites whose baseline is unavailable (one warning per site until it is available again)."""


def _last_seen(latest: Mapping[str, Latest] | None) -> float | None:
    return max((row.ts for row in latest.values()), default=None) if latest else None


def _device_last_seen(readings: Readings, device_id: str) -> float | None:
    """When the device's newest point of any kind was taken."""
    return _last_seen(
        readings.call(
            f"reading the latest points of device {device_id}",
            lambda: readings.store.latest(device_id),
        )
    )


# ---- energy this month ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnergyMonth:
    """A site's energy use this local month to date, against its baseline."""

    label: str
    """``November 2026``"""
    start: datetime
    end: datetime
    kwh: float | None
    """None: no readings this month."""
    baseline_kwh: float | None
    baseline_unavailable: bool = False

    @property
    def vs_baseline(self) -> float | None:
        """(used − expected) / expected; None without both."""
        if self.kwh is None or self.baseline_kwh is None or self.baseline_kwh <= 0:
            return None
        return (self.kwh - self.baseline_kwh) / self.baseline_kwh

    @property
    def meter_max(self) -> float:
        """The scale of the page's ``<meter>``: the larger of use and expectation."""
        return max(self.kwh or 0.0, (self.baseline_kwh or 0.0) * 1.25, 1.0)

    @property
    def summary(self) -> str:
        if self.kwh is None:
            return "no energy readings this month"
        if self.baseline_kwh is None:
            return f"{fmt_kwh(self.kwh)}, no baseline yet"
        delta = self.vs_baseline
        if delta is None:
            return fmt_kwh(self.kwh)
        word = "above" if delta > 0 else "below"
        expected = fmt_kwh(self.baseline_kwh)
        return f"{fmt_kwh(self.kwh)}, {abs(delta) * 100:.0f}% {word} the expected {expected}"


def _month(
    readings: Readings, baselines: BaselineSource, site: Site, now: datetime
) -> tuple[EnergyMonth, list[SiteRollup]]:
    tz = zone(site.timezone)
    start, end = month_to_date(now, tz)
    interval = rollup_interval(tz, start, end)
    rows = readings.call(
        f"reading the rollup of site {site.id}",
        lambda: readings.store.site_rollup(site.id, start.timestamp(), end.timestamp(), interval),
    )
    rows = rows or []
    kwh = sum(r.energy_kwh for r in rows) if rows else None
    unavailable = False
    try:
        baseline = baselines.expected_kwh(site, start, end)
    except CloudError as exc:
        n = NO_BASELINE.failed(site.id)
        if n == 1:
            log.warning("dashboard: no baseline for site %s: %s", site.id, exc)
        else:
            log.debug("dashboard: still no baseline for site %s (%d times): %s", site.id, n, exc)
        baseline, unavailable = None, True
    else:
        NO_BASELINE.succeeded(site.id)
    label = f"{start:%B %Y}"
    return EnergyMonth(label, start, end, kwh, baseline, unavailable), rows


# ---- fleet ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: Device
    risk: RiskScore | None
    band: RiskBand
    open_orders: int = 0
    last_seen: float | None = None


@dataclass(frozen=True, slots=True)
class SiteCard:
    site: Site
    tz: str
    devices: int
    top: DeviceRow | None
    """The device with the highest P72 (None: no device scored yet)."""
    at_risk: int
    """Devices with P72 ≥ 50 %."""
    open_by_priority: dict[int, int]
    overdue: int
    energy: EnergyMonth
    last_seen: datetime | None
    """The newest uplink of any of the site's gateways."""

    @property
    def open_total(self) -> int:
        return sum(self.open_by_priority.values())


@dataclass(frozen=True, slots=True)
class ClientGroup:
    client: Client | None
    cards: list[SiteCard]


@dataclass(frozen=True, slots=True)
class FleetView:
    groups: list[ClientGroup]
    grouped: bool
    """Sites of several clients (admin): one heading per client."""
    sites: int
    devices: int
    at_risk: int
    open_orders: int
    overdue: int
    store_failed: bool


def fleet_view(
    session: Session,
    store: TimeSeriesStore,
    p: Principal,
    baselines: BaselineSource,
    now: datetime,
) -> FleetView:
    """The caller's sites (a facility manager: their client's; an admin: every client's,
    grouped by client), riskiest first."""
    readings = Readings(store)
    sites = _sites(session, p)
    clients = {
        c.id: c
        for c in _all(
            lambda limit, offset: services.list_clients(session, p, limit=limit, offset=offset)
        )
    }
    open_orders = _orders(session, p, OrderFilter(open=True))
    by_priority: dict[str, Counter[int]] = {}
    overdue: Counter[str] = Counter()
    for o in open_orders:
        by_priority.setdefault(o.site_id, Counter())[o.priority] += 1
        if o.sla_due_at < now:
            overdue[o.site_id] += 1
    seen: dict[str, datetime] = {}
    gateways = _all(
        lambda limit, offset: services.list_gateways(session, p, limit=limit, offset=offset)
    )
    for g in gateways:
        if g.last_seen_at is not None and (
            g.site_id not in seen or g.last_seen_at > seen[g.site_id]
        ):
            seen[g.site_id] = g.last_seen_at
    cards: list[SiteCard] = []
    for site in sites:
        rows = _site_risk(session, p, site.id)
        scored = [r for r in rows if r.risk is not None]
        top = scored[0] if scored else None
        energy, _ = _month(readings, baselines, site, now)
        prio = by_priority.get(site.id, Counter())
        cards.append(
            SiteCard(
                site=site,
                tz=site.timezone,
                devices=len(rows),
                top=None
                if top is None or top.risk is None
                else DeviceRow(top.device, top.risk, risk_band(top.risk.p72)),
                at_risk=sum(1 for r in scored if r.risk is not None and r.risk.p72 >= RISK_HIGH),
                open_by_priority={k: prio.get(k, 0) for k in (1, 2, 3, 4)},
                overdue=overdue.get(site.id, 0),
                energy=energy,
                last_seen=seen.get(site.id),
            )
        )
    cards.sort(
        key=lambda c: (-(c.top.risk.p72 if c.top and c.top.risk else -1.0), c.site.name.lower())
    )
    grouped = p.tenant is None and len({c.site.client_id for c in cards}) > 1
    groups: list[ClientGroup] = []
    if grouped:
        by_client: dict[str, list[SiteCard]] = {}
        for c in cards:
            by_client.setdefault(c.site.client_id, []).append(c)
        for client_id, group in sorted(
            by_client.items(),
            key=lambda kv: clients[kv[0]].name.lower() if kv[0] in clients else "",
        ):
            groups.append(ClientGroup(clients.get(client_id), group))
    else:
        only = clients.get(cards[0].site.client_id) if cards else None
        if only is None and p.tenant is not None:
            only = clients.get(p.tenant)
        groups.append(ClientGroup(only, cards))
    return FleetView(
        groups=groups,
        grouped=grouped,
        sites=len(cards),
        devices=sum(c.devices for c in cards),
        at_risk=sum(c.at_risk for c in cards),
        open_orders=len(open_orders),
        overdue=sum(overdue.values()),
        store_failed=readings.failed,
    )


# ---- site --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteView:
    site: Site
    client: Client
    tz: str
    devices: list[DeviceRow]
    orders: list[WorkOrder]
    """Open orders at the site, most urgent first."""
    device_names: dict[str, str]
    energy: EnergyMonth
    daily: DailyTotals
    energy_chart: Chart
    events_chart: Chart
    gateways: list[Gateway]
    store_failed: bool

    @property
    def anomalies(self) -> float | None:
        return self.daily.total(self.daily.anomalous)

    @property
    def alarms(self) -> float | None:
        return self.daily.total(self.daily.alarms)


def site_view(
    session: Session,
    store: TimeSeriesStore,
    p: Principal,
    baselines: BaselineSource,
    site_id: str,
    now: datetime,
) -> SiteView:
    site = services.get_site(session, p, site_id)
    client = services.get_client(session, p, site.client_id)
    readings = Readings(store)
    tz = zone(site.timezone)
    orders = _orders(session, p, OrderFilter(open=True, site_id=site.id))
    orders.sort(key=lambda o: (o.priority, o.sla_due_at, o.number))
    per_device = Counter(o.device_id for o in orders)
    rows = _site_risk(session, p, site.id)
    devices = [
        DeviceRow(
            device=r.device,
            risk=r.risk,
            band=risk_band(None if r.risk is None else r.risk.p72),
            open_orders=per_device.get(r.device.id, 0),
            last_seen=_device_last_seen(readings, r.device.id),
        )
        for r in rows
    ]
    energy, rollups = _month(readings, baselines, site, now)
    days = local_days(energy.start, energy.end, tz)
    daily = daily_totals(rollups, tz, days)
    month = energy.label
    energy_chart = Chart(
        id="chart-energy",
        title=f"Energy per day, {month}",
        tz=site.timezone,
        x=daily.x,
        series=[Series("Energy", list(daily.energy_kwh), PALETTE[0], "kWh")],
        kind="bars",
        y_min=0,
        y_label="kWh",
        summary=(
            f"Energy per day in {month}: {energy.summary}."
            if daily.has_data
            else f"No energy readings in {month}."
        ),
    )
    events_chart = Chart(
        id="chart-events",
        title=f"Anomalous windows and alarms per day, {month}",
        tz=site.timezone,
        x=daily.x,
        series=[
            Series("Anomalous windows", [_f(v) for v in daily.anomalous], PALETTE[1]),
            Series("Alarms raised", [_f(v) for v in daily.alarms], PALETTE[4]),
        ],
        kind="bars",
        y_min=0,
        y_label="count",
        summary=(
            f"In {month}: {int(daily.total(daily.anomalous) or 0)} anomalous windows and "
            f"{int(daily.total(daily.alarms) or 0)} alarms."
        ),
    )
    device_ids = {r.device.id: r.device.name for r in rows}
    gateways = services.list_gateways(session, p, site_id=site.id, limit=services.MAX_LIMIT)
    return SiteView(
        site=site,
        client=client,
        tz=site.timezone,
        devices=devices,
        orders=orders,
        device_names=device_ids,
        energy=energy,
        daily=daily,
        energy_chart=energy_chart,
        events_chart=events_chart,
        gateways=gateways,
        store_failed=readings.failed,
    )


def _f(v: int | None) -> float | None:
    return None if v is None else float(v)


# ---- device ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The span the device page charts."""

    key: str
    """A key of :data:`~cloud.web.charts.SPANS`, or ``custom``."""
    label: str
    start: datetime
    end: datetime


def _epoch(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def window_for(span: str | None, start: str | None, end: str | None, now: datetime) -> Window:
    """``span`` (24h, 7d, 30d; default 7d), or the ``start``/``end`` epoch seconds of a
    work order's evidence link (at most :data:`MAX_CUSTOM_SPAN`). Values that make no
    sense fall back to the default rather than fail."""
    begin, stop = _epoch(start), _epoch(end)
    if span not in SPANS and (begin is not None or stop is not None):
        stop = stop or now
        begin = begin or stop - SPANS[DEFAULT_SPAN][1]
        if begin < stop and stop - begin <= MAX_CUSTOM_SPAN:
            return Window("custom", "the chosen period", begin, stop)
    key = span if span is not None and span in SPANS else DEFAULT_SPAN
    label, length = SPANS[key]
    return Window(key, label, now - length, now)


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    name: str
    state: str
    severity: str
    at: float
    value: float | None = None
    detail: str | None = None

    @classmethod
    def of(cls, event: AlarmEvent) -> AlarmInfo:
        return cls(event.name, event.state, event.severity, event.ts, event.value, event.detail)


@dataclass(frozen=True, slots=True)
class Warranty:
    status: Literal["active", "expiring", "expired", "unknown"]
    text: str


def warranty(device: Device, today: date) -> Warranty:
    end = device.warranty_end
    if end is None:
        return Warranty("unknown", "No warranty date recorded")
    days = (end - today).days
    if days < 0:
        return Warranty("expired", f"Expired {fmt_date(end)}")
    if days <= WARRANTY_WARNING_DAYS:
        return Warranty("expiring", f"Ends {fmt_date(end)} (in {days} days)")
    return Warranty("active", f"Until {fmt_date(end)}")


@dataclass(frozen=True, slots=True)
class DeviceView:
    device: Device
    gateway: Gateway
    site: Site
    client: Client
    tz: str
    window: Window
    latest_risk: RiskScore | None
    band: RiskBand
    signal_charts: list[Chart]
    risk_chart: Chart
    risk_points: int
    alerts: list[RiskScore]
    """Assessments in the window that raised an alert, newest first."""
    last_alarm: AlarmInfo | None
    alarm_history: list[AlarmInfo] | None
    """Alarm events in the window, newest first, at most :data:`ALARMS_SHOWN`; None: the
    store did not answer."""
    alarms_capped: bool
    """There were more events in the window than :data:`ALARMS_SHOWN`."""
    orders: list[WorkOrder]
    events: list[DeviceEvent]
    last_seen: float | None
    warranty: Warranty
    store_failed: bool
    spans: Mapping[str, tuple[str, timedelta]] = field(default_factory=lambda: SPANS)


def device_view(
    session: Session,
    store: TimeSeriesStore,
    p: Principal,
    device_id: str,
    window: Window,
    now: datetime,
) -> DeviceView:
    ctx = services.device_context(session, p, device_id)
    device, site = ctx.device, ctx.site
    tz = zone(site.timezone)
    readings = Readings(store)
    start, end = window.start.timestamp(), window.end.timestamp()

    latest = (
        readings.call(
            f"reading the latest points of device {device.id}", lambda: store.latest(device.id)
        )
        or {}
    )
    reported = list(latest["features"].fields) if "features" in latest else []
    candidates = candidate_signals(device.asset_type, device.profile, reported)
    names = [f"{s}{MEAN}" for s in candidates[:MAX_CANDIDATE_SIGNALS]]
    rows = (
        readings.call(
            f"reading the feature history of device {device.id}",
            lambda: store.feature_history(device.id, start, end, names=names),
        )
        or []
    )
    available = sorted({name for r in rows for name in r.features})
    units = signal_units(device.asset_type, device.profile)
    charts: list[Chart] = []
    for i, signal in enumerate(key_signals(candidates, available)):
        feature = f"{signal}{MEAN}"
        points = [(r.ts, r.features[feature]) for r in rows if feature in r.features]
        xs, (ys,) = resample([t for t, _ in points], [[v for _, v in points]], start, end)
        u = units.get(signal, "")
        title = signal_title(signal, u)
        charts.append(
            Chart(
                id=f"chart-signal-{i}",
                title=title,
                tz=site.timezone,
                x=xs,
                series=[Series(humanize(signal), ys, PALETTE[i % len(PALETTE)], u)],
                y_label=u,
                x_min=start,
                x_max=end,
                summary=describe(humanize(signal), ys, u, window.label),
            )
        )

    risk = queries.device_risk(session, p, device.id, window.start, window.end)
    history = risk.history
    xs, (p72, p24, health) = resample(
        [r.ts.timestamp() for r in history],
        [
            [r.p72 * 100 for r in history],
            [r.p24 * 100 for r in history],
            [float(r.health) for r in history],
        ],
        start,
        end,
    )
    latest_risk = risk.latest
    risk_summary = f"Failure risk over the last {window.label}: {len(history)} assessments" + (
        f"; latest P72 {latest_risk.p72 * 100:.0f}%, health {latest_risk.health}."
        if latest_risk is not None
        else "."
    )
    risk_chart = Chart(
        id="chart-risk",
        title="Failure risk and health",
        tz=site.timezone,
        x=xs,
        series=[
            Series("P(failure within 72 h)", p72, PALETTE[4], "%"),
            Series("P(failure within 24 h)", p24, PALETTE[1], "%"),
            Series("Health", health, PALETTE[3], "/100"),
        ],
        y_min=0,
        y_max=100,
        y_label="% · health",
        x_min=start,
        x_max=end,
        summary=risk_summary,
    )
    alerts = [r for r in reversed(history) if r.alert][:ALERTS_SHOWN]
    alarm = latest.get("alarm")
    last_alarm = None
    if alarm is not None:
        value = alarm.fields.get("value")
        last_alarm = AlarmInfo(
            name=alarm.tags.get("name", ""),
            state=str(alarm.fields.get("state", "")),
            severity=str(alarm.fields.get("severity", "")),
            at=alarm.ts,
            value=float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else None,
            detail=str(alarm.fields["detail"]) if "detail" in alarm.fields else None,
        )
    found = readings.call(
        f"reading the alarms of device {device.id}",
        lambda: store.alarms(device.id, start, end, limit=ALARMS_SHOWN + 1),
    )
    alarm_history = None if found is None else [AlarmInfo.of(e) for e in found[:ALARMS_SHOWN]]
    orders = _orders(session, p, OrderFilter(device_id=device.id))
    events = services.list_device_events(session, p, device.id, limit=EVENTS_SHOWN)
    return DeviceView(
        device=device,
        gateway=ctx.gateway,
        site=site,
        client=ctx.client,
        tz=site.timezone,
        window=window,
        latest_risk=latest_risk,
        band=risk_band(None if latest_risk is None else latest_risk.p72),
        signal_charts=charts,
        risk_chart=risk_chart,
        risk_points=len(history),
        alerts=alerts,
        last_alarm=last_alarm,
        alarm_history=alarm_history,
        alarms_capped=found is not None and len(found) > ALARMS_SHOWN,
        orders=orders,
        events=events,
        last_seen=_last_seen(latest),
        warranty=warranty(device, now.astimezone(tz).date()),
        store_failed=readings.failed,
    )


# ---- work orders --------------------------------------------------------------------------------

STATE_ORDER: Final = (
    State.WAITING_APPROVAL,
    State.APPROVED,
    State.SCHEDULED,
    State.IN_PROGRESS,
    State.COMPLETE,
    State.CLOSED,
    State.CANCELLED,
)
STATE_LABELS: Final[Mapping[str, str]] = {
    State.WAITING_APPROVAL: "Waiting approval",
    State.APPROVED: "Approved",
    State.SCHEDULED: "Scheduled",
    State.IN_PROGRESS: "In progress",
    State.COMPLETE: "Complete",
    State.CLOSED: "Closed",
    State.CANCELLED: "Cancelled",
}
MOVE_LABELS: Final[Mapping[tuple[State, State], str]] = {
    (State.WAITING_APPROVAL, State.APPROVED): "Approve",
    (State.APPROVED, State.SCHEDULED): "Schedule",
    (State.SCHEDULED, State.IN_PROGRESS): "Start work",
    (State.SCHEDULED, State.APPROVED): "Unschedule",
    (State.IN_PROGRESS, State.COMPLETE): "Mark complete",
    (State.IN_PROGRESS, State.SCHEDULED): "Needs another visit",
    (State.COMPLETE, State.CLOSED): "Close",
    (State.COMPLETE, State.IN_PROGRESS): "Reopen",
}
SOURCE_LABELS: Final[Mapping[str, str]] = {
    "risk": "Risk prediction",
    "alarm": "Controller alarm",
    "manual": "Manual",
}
PRIORITY_LABELS: Final[Mapping[int, str]] = {1: "Urgent", 2: "High", 3: "Normal", 4: "Low"}
SORTS: Final[Mapping[str, str]] = {
    "priority": "Priority, then SLA due",
    "sla": "SLA due, soonest first",
    "newest": "Newest first",
}
STATE_FILTERS: Final[Mapping[str, str]] = {
    "open": "Open (not closed or cancelled)",
    **{s.value: STATE_LABELS[s] for s in STATE_ORDER},
    "final": "Closed or cancelled",
    "all": "All states",
}


@dataclass(frozen=True, slots=True)
class Move:
    target: str
    label: str


def allowed_moves(p: Principal, state: State | str) -> list[Move]:
    """The moves to offer the caller from ``state``: the life cycle's
    (:data:`~cloud.workorders.policy.TRANSITIONS`) for admin and service desk; for a
    facility manager only approving or cancelling an order that waits for approval, the
    rule ``cloud.workorders.service.transition`` enforces (the page only offers what the
    service will accept; the service decides)."""
    current = State(state)
    targets = {t for t in TRANSITIONS[current] if may_move(p, current, t)}
    return [
        Move(
            t.value,
            MOVE_LABELS.get(
                (current, t), "Cancel order" if t is State.CANCELLED else STATE_LABELS[t]
            ),
        )
        for t in STATE_ORDER
        if t in targets
    ]


def can_assign(p: Principal) -> bool:
    return p.role in DESK_ROLES


@dataclass(frozen=True, slots=True)
class BoardFilter:
    state: str = "open"
    site_id: str = ""
    priority: int | None = None
    """At least this urgent (1 = urgent only)."""
    fault: str = ""
    sort: str = "priority"

    @classmethod
    def parse(
        cls,
        state: str | None,
        site_id: str | None,
        priority: str | None,
        fault: str | None,
        sort: str | None,
    ) -> BoardFilter:
        """The filter a board URL names; values it does not know fall back to the default
        (a stale bookmark shows the board, not an error)."""
        prio = (
            int(priority) if priority and priority.isdigit() and 1 <= int(priority) <= 4 else None
        )
        return cls(
            state=state if state is not None and state in STATE_FILTERS else "open",
            site_id=(site_id or "").strip()[:64],
            priority=prio,
            fault=(fault or "").strip()[:96],
            sort=sort if sort is not None and sort in SORTS else "priority",
        )

    def order_filter(self) -> OrderFilter:
        states: tuple[State, ...] = ()
        is_open: bool | None = None
        if self.state == "open":
            is_open = True
        elif self.state == "final":
            is_open = False
        elif self.state != "all":
            states = (State(self.state),)
        return OrderFilter(
            state=states,
            open=is_open,
            site_id=self.site_id or None,
            fault=self.fault or None,
            priority_max=self.priority,
        )

    def query(self, **changes: str | int | None) -> str:
        """The board's query string for this filter with ``changes``."""
        values = {
            "state": self.state,
            "site_id": self.site_id,
            "priority": self.priority,
            "fault": self.fault,
            "sort": self.sort,
            **changes,
        }
        defaults = {"state": "open", "sort": "priority"}
        kept = {
            k: str(v) for k, v in values.items() if v not in (None, "") and defaults.get(k) != v
        }
        return urlencode(kept)


@dataclass(frozen=True, slots=True)
class OrderRow:
    order: WorkOrder
    number: str
    site: Site | None
    tz: str
    device_name: str
    client_name: str
    open: bool
    overdue: bool
    due_soon: bool
    moves: list[Move]
    assigned: str | None
    """The assigned technician's name."""
    suggested: str | None


@dataclass(frozen=True, slots=True)
class BoardView:
    filter: BoardFilter
    rows: list[OrderRow]
    matched: int
    truncated: bool
    overdue: int
    sites: list[Site]
    faults: list[str]
    technicians: list[Technician]
    """Active technicians (offered for assignment; empty unless the caller may assign)."""
    show_client: bool
    can_assign: bool


def _sort_key(sort: str) -> Callable[[WorkOrder], tuple[float, ...]]:
    if sort == "sla":
        return lambda o: (o.open_key is None, o.sla_due_at.timestamp(), o.priority, o.number)
    if sort == "newest":
        return lambda o: (-o.number,)
    return lambda o: (o.open_key is None, o.priority, o.sla_due_at.timestamp(), o.number)


def _device_names(session: Session, orders: Iterable[WorkOrder]) -> dict[str, str]:
    """Names of the devices of orders the caller was given by the service (so visible)."""
    ids = sorted({o.device_id for o in orders})
    names: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        for device_id, name in session.execute(
            select(Device.id, Device.name).where(Device.id.in_(chunk))
        ):
            names[device_id] = name
    return names


def technicians(session: Session) -> list[Technician]:
    """Technicians are the service's staff, not a client's data: everyone who may assign
    sees them all."""
    return list(session.scalars(select(Technician).order_by(Technician.name, Technician.id)))


def _row(
    p: Principal,
    o: WorkOrder,
    sites: Mapping[str, Site],
    devices: Mapping[str, str],
    clients: Mapping[str, str],
    techs: Mapping[str, str],
    now: datetime,
) -> OrderRow:
    site = sites.get(o.site_id)
    is_open = o.open_key is not None
    return OrderRow(
        order=o,
        number=order_number(o.number),
        site=site,
        tz=site.timezone if site is not None else "UTC",
        device_name=devices.get(o.device_id, o.device_id),
        client_name=clients.get(o.client_id, ""),
        open=is_open,
        overdue=is_open and o.sla_due_at < now,
        due_soon=is_open and now <= o.sla_due_at < now + DUE_SOON,
        moves=allowed_moves(p, o.state) if is_open else [],
        assigned=techs.get(o.assigned_technician_id) if o.assigned_technician_id else None,
        suggested=techs.get(o.suggested_technician_id) if o.suggested_technician_id else None,
    )


def _clients(session: Session, p: Principal) -> dict[str, str]:
    return {
        c.id: c.name
        for c in _all(
            lambda limit, offset: services.list_clients(session, p, limit=limit, offset=offset)
        )
    }


def board_view(session: Session, p: Principal, f: BoardFilter, now: datetime) -> BoardView:
    orders = _orders(session, p, f.order_filter())
    orders.sort(key=_sort_key(f.sort))
    shown = orders[:BOARD_ROWS]
    sites = _sites(session, p)
    by_id = {s.id: s for s in sites}
    staff = technicians(session)
    techs = {t.id: t.name for t in staff}
    clients = _clients(session, p)
    devices = _device_names(session, shown)
    rows = [_row(p, o, by_id, devices, clients, techs, now) for o in shown]
    faults = sorted({*FAULT_DEFAULTS, *(o.fault for o in orders), *([f.fault] if f.fault else [])})
    return BoardView(
        filter=f,
        rows=rows,
        matched=len(orders),
        truncated=len(orders) > len(shown),
        overdue=sum(1 for o in orders if o.open_key is not None and o.sla_due_at < now),
        sites=sorted(sites, key=lambda s: s.name.lower()),
        faults=faults,
        technicians=[t for t in staff if t.active] if can_assign(p) else [],
        show_client=p.tenant is None and len(clients) > 1,
        can_assign=can_assign(p),
    )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    what: str
    who: str
    note: str | None


@dataclass(frozen=True, slots=True)
class OrderView:
    detail: queries.OrderDetail
    row: OrderRow
    history: list[HistoryEntry]
    technicians: list[Technician]
    can_assign: bool


def _actor(p: Principal, actor: str) -> str:
    if actor == "scorer":
        return "Risk scorer"
    if actor == "alarm":
        return "Local alarm"
    if actor.startswith("desk:"):
        return "Service desk"
    if p.user_id and actor == f"user:{p.user_id}":
        return "You"
    if actor.startswith("user:"):
        return "A user"
    return "Operator"


def _what(kind: str, from_state: str | None, to_state: str | None) -> str:
    if kind == "state_changed" and to_state:
        before = STATE_LABELS.get(from_state or "", from_state or "?")
        return f"{before} → {STATE_LABELS.get(to_state, to_state)}"
    return {
        "opened": "Opened",
        "updated": "Risk updated",
        "commented": "Comment",
        "assigned": "Technician assigned",
        "parts_reserved": "Parts reserved",
    }.get(kind, humanize(kind))


def order_view(session: Session, p: Principal, order_id: str, now: datetime) -> OrderView:
    detail = queries.order_detail(session, p, order_id)
    o = detail.order
    site = services.get_site(session, p, o.site_id)
    staff = technicians(session)
    techs = {t.id: t.name for t in staff}
    clients = _clients(session, p)
    row = _row(p, o, {site.id: site}, {o.device_id: detail.device_name}, clients, techs, now)
    history = [
        HistoryEntry(
            at=e.at,
            what=_what(e.kind, e.from_state, e.to_state),
            who=_actor(p, e.actor),
            note=e.note
            if e.kind != "assigned"
            else (
                techs.get(str((e.detail or {}).get("technician_id")), "nobody")
                if (e.detail or {}).get("technician_id")
                else "assignment cleared"
            ),
        )
        for e in detail.events
    ]
    return OrderView(
        detail=detail,
        row=row,
        history=history,
        technicians=[t for t in staff if t.active] if can_assign(p) else [],
        can_assign=can_assign(p) and o.open_key is not None,
    )
