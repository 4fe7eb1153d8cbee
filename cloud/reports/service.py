"""Reports as a service: request, generate, store, list and fetch; the monthly schedule.

No FastAPI here: the API (``cloud/api/reports.py``), the command line and the schedule
call these functions.

Who sees what
    As everywhere in the registry (:mod:`cloud.registry.services`): a facility manager sees
    the reports of their own client only, anything else is :class:`~cloud.errors.NotFound`;
    admins and the service desk see all. Generating on demand is for admins and the
    client's facility manager (the service desk gets :class:`~cloud.errors.Forbidden`).

Generation
    A report is *claimed* first (:func:`claim`): its row for ``(client, month)`` is
    inserted or taken over with status ``generating``, one more attempt and a lease of
    :data:`LEASE`. Only a row that is not being generated, or whose lease has run out (its
    generator died), can be claimed; otherwise :class:`~cloud.reports.errors.ReportBusy`.
    :func:`generate` then collects, builds and renders, and stores the outputs (status
    ``ready``) or the error (``failed``; earlier outputs are kept) — only if the row is
    still its claim (the attempt number), so a generator whose lease was taken over
    discards its result. Generating a month again replaces its outputs. The baseline
    models the report fitted are then kept for the dashboard
    (:func:`cloud.reports.baselines.keep_models`).

The schedule (:func:`schedule_pass`, :class:`ReportWorker`)
    A client's month is *due* once it has ended at every one of its sites, in each site's
    own time zone, plus ``report_delay_h`` for late data from buffering gateways: the due
    month is the earliest of the sites' "previous month" at ``now - delay``. Each pass
    generates each client's due month once: a ready report is left alone, a report being
    generated is left to its generator (until its lease runs out), and a failed one is
    retried after ``report_retry_s`` × 2^(attempts − 1), at most a day apart, until the
    next month becomes due (older months stay as they are; they can be made on demand).
    Several workers may run: the claim keeps them from making one report twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth.principal import Principal
from cloud.db import flush, session_scope, translate_errors
from cloud.energy.baseline import Baseline
from cloud.errors import CloudError, Conflict, Forbidden, InvalidInput, NotFound
from cloud.registry import services as registry
from cloud.registry.models import Client, Role, Site
from cloud.reports.baselines import keep_models
from cloud.reports.build import build_with_models
from cloud.reports.collect import Inputs, Options, check_month_ended, collect
from cloud.reports.content import Report as Content
from cloud.reports.errors import NoData, ReportBusy, ReportNotReady
from cloud.reports.models import OUTPUTS, Report, ReportStatus
from cloud.reports.period import Month, parse_month
from cloud.reports.render import Outputs, render, summary_of
from cloud.tsdb.base import TimeSeriesStore

log = logging.getLogger(__name__)

LEASE: Final = timedelta(hours=2)
"""A claim's lease: longer than the largest report takes (see ``tests/bench/bench_report.py``)."""
MAX_RETRY_S: Final = 86_400.0
SCHEDULE: Final = "schedule"
CLI: Final = "cli"
GENERATORS: Final = frozenset({Role.ADMIN, Role.FACILITY_MANAGER})
MAX_ERROR: Final = 2000


def _now() -> datetime:
    return datetime.now(UTC)


# ---- reading --------------------------------------------------------------------------------


def get_report(session: Session, p: Principal, report_id: str) -> Report:
    stmt = select(Report).where(Report.id == report_id)
    if p.tenant is not None:
        stmt = stmt.where(Report.client_id == p.tenant)
    report = session.scalars(stmt.limit(1)).first()
    if report is None:
        raise NotFound(f"report {report_id} not found")
    return report


def list_reports(
    session: Session, p: Principal, client_id: str, *, limit: int = 100, offset: int = 0
) -> list[Report]:
    """The client's reports, newest month first."""
    client = registry.get_client(session, p, client_id)
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit", "1 to 1000")
    if offset < 0:
        raise InvalidInput("offset", "must be >= 0")
    stmt = (
        select(Report)
        .where(Report.client_id == client.id)
        .order_by(Report.month.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(stmt))


def output(session: Session, p: Principal, report_id: str, fmt: str) -> tuple[Report, bytes]:
    """One of the report's stored outputs (:data:`~cloud.reports.models.OUTPUTS`)."""
    if fmt not in OUTPUTS:
        raise InvalidInput("format", f"{fmt!r} is not one of {', '.join(OUTPUTS)}")
    report = get_report(session, p, report_id)
    data: bytes | None = getattr(report, f"output_{fmt}")
    if data is None:
        why = f": {report.error}" if report.status is ReportStatus.FAILED and report.error else ""
        raise ReportNotReady(
            f"report {report.id} ({report.month}) has no outputs yet; it is "
            f"{report.status.value}{why}"
        )
    return report, data


# ---- claiming and generating -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed report: generate it with :func:`generate`."""

    report_id: str
    client_id: str
    month: Month
    attempt: int


def claim(
    session: Session, client_id: str, month: Month, requested_by: str, now: datetime
) -> Claim:
    """Claim ``(client, month)`` for generation (module docstring); the caller commits."""
    row = session.scalars(
        select(Report).where(Report.client_id == client_id, Report.month == str(month))
    ).first()
    lease = now + LEASE
    if row is None:
        row = Report(
            client_id=client_id,
            month=str(month),
            status=ReportStatus.GENERATING,
            requested_by=requested_by,
            attempts=1,
            started_at=now,
            locked_until=lease,
        )
        session.add(row)
        try:
            flush(session)
        except Conflict:
            raise ReportBusy(f"the {month} report of client {client_id} was just claimed") from None
        return Claim(row.id, client_id, month, 1)
    attempt = row.attempts + 1
    with translate_errors():
        taken = session.execute(
            update(Report)
            .where(
                Report.id == row.id,
                Report.attempts == row.attempts,
                (Report.status != ReportStatus.GENERATING)
                | (Report.locked_until.is_(None))
                | (Report.locked_until < now),
            )
            .values(
                status=ReportStatus.GENERATING,
                attempts=attempt,
                requested_by=requested_by,
                started_at=now,
                locked_until=lease,
                error=None,
            )
            .execution_options(synchronize_session=False)
        )
    if getattr(taken, "rowcount", 0) != 1:
        since = row.started_at.isoformat(timespec="seconds") if row.started_at else "now"
        raise ReportBusy(
            f"the {month} report of client {client_id} is being generated (since {since})"
        )
    session.expire(row)
    return Claim(row.id, client_id, month, attempt)


@dataclass(frozen=True, slots=True)
class Generated:
    """What :func:`generate` made (``content``/``outputs`` None when it failed)."""

    report_id: str
    status: ReportStatus
    error: str | None = None
    content: Content | None = None
    outputs: Outputs | None = None
    exception: CloudError | None = None
    """The error that failed it (the command line raises it)."""


def _finish(sessions: sessionmaker[Session], c: Claim, now: datetime, **values: object) -> bool:
    """Store the attempt's end, if the row is still this claim's; whether it was."""
    with session_scope(sessions) as session:
        done = session.execute(
            update(Report)
            .where(
                Report.id == c.report_id,
                Report.attempts == c.attempt,
                Report.status == ReportStatus.GENERATING,
            )
            .values(finished_at=now, locked_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        ok = getattr(done, "rowcount", 0) == 1
    if not ok:
        log.warning(
            "report %s (%s, attempt %d) was taken over by another generator; result discarded",
            c.report_id,
            c.month,
            c.attempt,
        )
    return ok


def generate(
    sessions: sessionmaker[Session],
    store: TimeSeriesStore,
    c: Claim,
    options: Options,
    *,
    now: Callable[[], datetime] = _now,
) -> Generated:
    """Collect, build, render and store the claimed report (module docstring).

    An error of the cloud's tree (no data, a month not ended, the store unavailable) is
    stored as the report's error and returned; any other exception is stored as an
    internal error, logged, and raised."""
    began = time.perf_counter()
    try:
        with session_scope(sessions) as session:
            inputs = collect(session, store, c.client_id, c.month, options=options, now=now())
        content, models = build_with_models(inputs)
        outputs = render(content)
    except CloudError as exc:
        error = " ".join(str(exc).split())[:MAX_ERROR]
        _finish(sessions, c, now(), status=ReportStatus.FAILED, error=error)
        return Generated(c.report_id, ReportStatus.FAILED, error, exception=exc)
    except Exception as exc:
        error = f"internal error ({type(exc).__name__}); see the service log"
        log.exception("report %s (%s of client %s) failed", c.report_id, c.month, c.client_id)
        _finish(sessions, c, now(), status=ReportStatus.FAILED, error=error)
        raise
    done = now()
    stored = _finish(
        sessions,
        c,
        done,
        status=ReportStatus.READY,
        error=None,
        generated_at=done,
        summary=summary_of(content),
        output_html=outputs.html,
        output_pdf=outputs.pdf,
        output_json=outputs.json,
        output_csv_zip=outputs.csv_zip,
    )
    if stored and models:
        _keep_models(sessions, c, inputs, models, done)
    log.info(
        "report %s (%s of client %s) %s in %.1f s",
        c.report_id,
        c.month,
        c.client_id,
        "generated" if stored else "generated but discarded",
        time.perf_counter() - began,
    )
    return Generated(c.report_id, ReportStatus.READY, None, content, outputs)


def _keep_models(
    sessions: sessionmaker[Session],
    c: Claim,
    inputs: Inputs,
    models: Mapping[str, Baseline],
    now: datetime,
) -> None:
    """Keep the report's fitted baselines for the dashboard (:mod:`cloud.reports.baselines`);
    the report stays ready when that fails (logged)."""
    try:
        with session_scope(sessions) as session:
            kept = keep_models(session, inputs, models, now)
    except CloudError as exc:
        log.warning(
            "report %s (%s of client %s): its baselines were not kept for the dashboard: %s",
            c.report_id,
            c.month,
            c.client_id,
            exc,
        )
        return
    log.debug("report %s: baselines kept for sites %s", c.report_id, kept)


def request_report(
    session: Session, p: Principal, client_id: str, month: str, *, now: datetime | None = None
) -> tuple[Report, Claim]:
    """Claim a report on demand (the API): :class:`NotFound` for a client the caller cannot
    see, :class:`Forbidden` for the service desk, :class:`InvalidInput` for a bad month or
    one that has not ended, :class:`NoData` for a client without sites,
    :class:`ReportBusy` while the month is being generated. Commit, then :func:`generate`."""
    client = registry.get_client(session, p, client_id)
    if p.role not in GENERATORS:
        raise Forbidden("only an admin or the client's facility manager may generate reports")
    wanted = parse_month(month)
    now = _now() if now is None else now
    _check_due(session, client, wanted, now)
    who = f"user:{p.user_id}" if p.user_id else CLI
    c = claim(session, client.id, wanted, who, now)
    return get_report(session, p, c.report_id), c


def _check_due(session: Session, client: Client, month: Month, now: datetime) -> None:
    """:class:`NoData` for a client without sites, :class:`InvalidInput` for a month that
    has not ended at one of them: checked before a claim, so neither leaves a row."""
    sites = session.scalars(select(Site).where(Site.client_id == client.id)).all()
    if not sites:
        raise NoData("client", f"{client.name!r} has no sites to report on")
    check_month_ended(month, sites, now)


def client_by_ref(session: Session, ref: str) -> Client:
    """A client by id or exact name (the command line)."""
    client = session.get(Client, ref)
    if client is not None:
        return client
    found = session.scalars(select(Client).where(Client.name == ref)).all()
    if len(found) == 1:
        return found[0]
    raise NotFound(f"no client with id or name {ref!r}")


def generate_now(
    sessions: sessionmaker[Session],
    store: TimeSeriesStore,
    client_ref: str,
    month: str,
    options: Options,
    *,
    now: datetime | None = None,
) -> Generated:
    """Generate one report at once and store it (the command line)."""
    wanted = parse_month(month, "--month")
    when = _now() if now is None else now
    with session_scope(sessions) as session:
        client = client_by_ref(session, client_ref)
        _check_due(session, client, wanted, when)
        c = claim(session, client.id, wanted, CLI, when)
    return generate(sessions, store, c, options, now=_now if now is None else lambda: when)


# ---- the schedule ------------------------------------------------------------------------------


def due_month(timezones: Sequence[str], now: datetime, delay: timedelta) -> Month:
    """The latest month that, ``delay`` ago, had ended at every one of these time zones."""
    at = now - delay
    return min(Month.of(at, tz) for tz in timezones).plus(-1)


def retry_after(attempts: int, retry_s: float) -> timedelta:
    return timedelta(seconds=min(retry_s * 2 ** max(attempts - 1, 0), MAX_RETRY_S))


@dataclass(slots=True)
class ScheduleStats:
    clients: int = 0
    generated: int = 0
    failed: int = 0
    waiting: int = 0
    """Due reports left alone: ready, being generated, or a failure not yet due for retry."""
    errors: list[str] = field(default_factory=list)


def schedule_pass(
    sessions: sessionmaker[Session],
    store: TimeSeriesStore,
    options: Options,
    *,
    delay: timedelta,
    retry_s: float,
    now: datetime | None = None,
) -> ScheduleStats:
    """Generate every client's due month that needs it (module docstring)."""
    when = _now() if now is None else now
    stats = ScheduleStats()
    with session_scope(sessions) as session:
        zones: dict[str, list[str]] = defaultdict(list)
        for client_id, timezone in session.execute(
            select(Site.client_id, Site.timezone).order_by(Site.client_id)
        ):
            zones[client_id].append(timezone)
    for client_id, timezones in zones.items():
        stats.clients += 1
        month = due_month(timezones, when, delay)
        c: Claim | None = None
        try:
            with session_scope(sessions) as session:
                row = session.scalars(
                    select(Report).where(Report.client_id == client_id, Report.month == str(month))
                ).first()
                if row is None or _needs_work(row, when, retry_s):
                    c = claim(session, client_id, month, SCHEDULE, when)
        except ReportBusy:
            c = None
        if c is None:
            stats.waiting += 1
            continue
        result = generate(sessions, store, c, options, now=_now if now is None else lambda: when)
        if result.status is ReportStatus.READY:
            stats.generated += 1
        else:
            stats.failed += 1
            stats.errors.append(f"{client_id} {month}: {result.error}")
            level = logging.WARNING if c.attempt == 1 else logging.DEBUG
            log.log(
                level,
                "report %s of client %s failed (attempt %d): %s",
                month,
                client_id,
                c.attempt,
                result.error,
            )
    return stats


def _needs_work(row: Report, now: datetime, retry_s: float) -> bool:
    if row.status is ReportStatus.READY:
        return False
    if row.status is ReportStatus.GENERATING:
        return row.locked_until is None or row.locked_until < now
    ended = row.finished_at or row.started_at or row.created_at
    return now >= ended + retry_after(row.attempts, retry_s)


class ReportWorker:
    """Runs :func:`schedule_pass` every ``poll_s`` until stopped."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: TimeSeriesStore,
        options: Options,
        *,
        delay: timedelta,
        retry_s: float,
        poll_s: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.options = options
        self.delay = delay
        self.retry_s = retry_s
        self.poll_s = poll_s
        self.clock = clock

    def run_once(self) -> ScheduleStats:
        return schedule_pass(
            self.sessions,
            self.store,
            self.options,
            delay=self.delay,
            retry_s=self.retry_s,
            now=_now() if self.clock is None else self.clock(),
        )

    def run(self, stop: threading.Event) -> None:
        """Passes every ``poll_s`` until ``stop`` is set; a store or database outage is
        logged and retried at the next pass."""
        while not stop.is_set():
            try:
                stats = self.run_once()
                if stats.generated or stats.failed:
                    log.info(
                        "report pass: %d clients, %d generated, %d failed",
                        stats.clients,
                        stats.generated,
                        stats.failed,
                    )
            except (CloudError, SQLAlchemyError) as exc:
                log.warning("report pass failed, retrying: %s", " ".join(str(exc).split())[:300])
            stop.wait(self.poll_s)
