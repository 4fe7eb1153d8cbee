"""Storing reports: claims and leases, the monthly schedule (once, not twice; retries with
back-off), and the command line (``edgewatch-cloud report`` and ``reports --once``)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support.report_world import NOW
from unit.cloud.reports.conftest import Env

from cloud.cli import main
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.errors import ConfigError
from cloud.reports import service
from cloud.reports.collect import Options
from cloud.reports.models import Report, ReportStatus
from cloud.reports.period import Month
from cloud.reports.render import TABLES, Outputs
from cloud.settings import load_settings

DELAY = timedelta(hours=6)
RETRY_S = 900.0


@pytest.fixture
def sessions(env: Env, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A copy of the module's registry (the store is shared: nothing here writes to it)."""
    target = tmp_path / "registry.db"
    source = sqlite3.connect(env.url.removeprefix("sqlite:///"))
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    engine = make_engine(f"sqlite:///{target}")
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def quick_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of the bookkeeping only: outputs without WeasyPrint's seconds."""
    monkeypatch.setattr(
        service, "render", lambda content: Outputs(b"<html>", b"%PDF-", b"{}", b"PK")
    )


def rows(sessions: sessionmaker[Session]) -> list[Report]:
    with sessions() as s:
        return list(s.scalars(select(Report).order_by(Report.month)))


def test_a_claim_keeps_others_out_until_its_lease_runs_out(
    env: Env, sessions: sessionmaker[Session], quick_render: None
) -> None:
    month = Month(2026, 10)
    with session_scope(sessions) as s:
        first = service.claim(s, env.world.client_id, month, "schedule", NOW)
    assert first.attempt == 1
    busy = pytest.raises(service.ReportBusy, match="is being generated")
    with busy, session_scope(sessions) as s:
        service.claim(s, env.world.client_id, month, "cli", NOW + timedelta(hours=1))
    later = NOW + service.LEASE + timedelta(minutes=1)  # the first generator died
    with session_scope(sessions) as s:
        second = service.claim(s, env.world.client_id, month, "cli", later)
    assert (second.report_id, second.attempt) == (first.report_id, 2)
    stale = service.generate(sessions, env.store, first, env.world.options(), now=lambda: later)
    assert stale.status is ReportStatus.READY  # made, but not stored: not its claim any more
    (row,) = rows(sessions)
    assert (row.status, row.attempts, row.generated_at) == (ReportStatus.GENERATING, 2, None)
    done = service.generate(sessions, env.store, second, env.world.options(), now=lambda: later)
    assert done.status is ReportStatus.READY
    (row,) = rows(sessions)
    assert (row.status, row.requested_by, row.locked_until) == (ReportStatus.READY, "cli", None)
    assert row.summary is not None and row.summary["devices"] == 5


def test_the_schedule_makes_last_months_report_once_not_twice(
    env: Env, sessions: sessionmaker[Session]
) -> None:
    options = env.world.options()
    stats = service.schedule_pass(
        sessions, env.store, options, delay=DELAY, retry_s=RETRY_S, now=NOW
    )
    assert (stats.clients, stats.generated, stats.failed, stats.waiting) == (1, 1, 0, 0)
    (row,) = rows(sessions)
    assert (row.month, row.status, row.attempts, row.requested_by) == (
        "2026-10",
        ReportStatus.READY,
        1,
        "schedule",
    )
    with sessions() as s:
        stored = s.get(Report, row.id)
        assert stored is not None and stored.output_pdf is not None
        assert stored.output_pdf.startswith(b"%PDF-")
        assert json.loads(stored.output_json or b"")["month"] == "2026-10"
    again = service.schedule_pass(
        sessions, env.store, options, delay=DELAY, retry_s=RETRY_S, now=NOW + timedelta(hours=1)
    )
    assert (again.generated, again.failed, again.waiting) == (0, 0, 1)
    (row,) = rows(sessions)
    assert row.attempts == 1


def test_a_failed_month_is_retried_with_back_off(env: Env, sessions: sessionmaker[Session]) -> None:
    options = env.world.options()
    now = datetime(2027, 2, 10, 9, 0, tzinfo=UTC)  # January 2027: no readings at all

    def run(at: datetime) -> service.ScheduleStats:
        return service.schedule_pass(
            sessions, env.store, options, delay=DELAY, retry_s=RETRY_S, now=at
        )

    first = run(now)
    assert first.failed == 1 and "no energy-counter reading" in first.errors[0]
    (row,) = rows(sessions)
    assert (row.month, row.status, row.attempts) == ("2027-01", ReportStatus.FAILED, 1)
    assert row.error is not None and row.error.startswith("month: no energy-counter reading")
    assert run(now + timedelta(minutes=10)).waiting == 1  # retried after 15 minutes
    assert run(now + timedelta(minutes=16)).failed == 1
    assert rows(sessions)[0].attempts == 2
    assert run(now + timedelta(minutes=16 + 20)).waiting == 1  # then after 30
    assert run(now + timedelta(minutes=16 + 31)).failed == 1
    assert rows(sessions)[0].attempts == 3


def test_due_month_waits_for_the_clients_last_site() -> None:
    zones = ["Asia/Dubai", "America/Los_Angeles"]
    # 1 November 05:00 UTC: October is over in Dubai (09:00) but not in LA (22:00, 31 Oct)
    at = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    assert service.due_month(zones, at, timedelta(0)) == Month(2026, 9)
    assert service.due_month(zones, at + timedelta(hours=2), timedelta(0)) == Month(2026, 10)
    assert service.due_month(zones, at + timedelta(hours=2), DELAY) == Month(2026, 9)
    assert service.retry_after(1, 900) == timedelta(minutes=15)
    assert service.retry_after(30, 900) == timedelta(days=1)


# ---- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli_env(env: Env, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> Env:
    for key in list(os.environ):
        if key.startswith("EDGEWATCH_CLOUD_"):
            monkeypatch.delenv(key)
    engine = sessions.kw["bind"]
    monkeypatch.setenv("EDGEWATCH_CLOUD_DATABASE_URL", str(engine.url))
    monkeypatch.setenv("EDGEWATCH_CLOUD_TSDB", "sqlite")
    monkeypatch.setenv("EDGEWATCH_CLOUD_TSDB_SQLITE_PATH", str(env.store_path))
    monkeypatch.setenv("EDGEWATCH_CLOUD_REPORT_BASELINE", "false")
    monkeypatch.setenv(
        "EDGEWATCH_CLOUD_REPORT_GRID_FACTORS", json.dumps({env.world.old_town_id: 0.05})
    )
    return env


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_writes_the_report_files(
    cli_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, text, err = run(
        capsys, "report", "--client", "Harbour Hotels", "--month", "2026-10", "--out", str(out)
    )
    assert code == 0, err
    assert "Harbour Hotels, 2026-10" in text and str(out) in text
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert b"Harbour Hotels" in (out / "report.html").read_bytes()
    doc = json.loads((out / "report.json").read_text())
    assert doc["totals"]["co2_kg"] == pytest.approx(4463.4 * 0.4 + 1117.5 * 0.05)
    assert sorted(p.stem for p in (out / "csv").iterdir()) == sorted(TABLES)
    for path in [out / "report.html", out / "report.pdf", out / "report.json"]:
        assert f"  {path}" in text.splitlines()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--client", "Nope Hotels", "--month", "2026-10"], 1,
         "no client with id or name 'Nope Hotels'"),
        (["--client", "Harbour Hotels", "--month", "2026-13"], 2,
         "--month: '2026-13': month 13 is not 01 to 12"),
        (["--client", "Harbour Hotels", "--month", "2026-08"], 2,
         "month: no energy-counter reading from any of 'Harbour Hotels''s 5 devices in 2026-08"),
        (["--client", "Harbour Hotels", "--month", "2099-01"], 2,
         "month: 2099-01 has not ended yet at site 'Marina' (Asia/Dubai)"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_naming_what_is_wrong(
    cli_env: Env,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    got, out, err = run(capsys, "report", *argv, "--out", str(tmp_path / "out"))
    assert got == code and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("edgewatch-cloud: error: "), err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_reports_once_runs_one_schedule_pass(
    cli_env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    quick_render: None,
) -> None:  # fmt: skip
    monkeypatch.setattr(service, "_now", lambda: NOW)
    assert run(capsys, "reports", "--once") == (
        0, "reports: 1 clients, 1 generated, 0 failed, 0 left as they are\n", ""
    )  # fmt: skip
    code, text, _ = run(capsys, "reports", "--once")
    assert (code, text) == (0, "reports: 1 clients, 0 generated, 0 failed, 1 left as they are\n")


def test_report_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"EDGEWATCH_CLOUD_REPORT_GRID_FACTORS.*between 0 and 2"):
        load_settings(report_grid_factors={"site-1": 450.0})  # g/kWh given as kg/kWh
    with pytest.raises(ConfigError, match=r"EDGEWATCH_CLOUD_REPORT_WEATHER_DIR.*not a directory"):
        load_settings(report_weather_dir=tmp_path / "missing")
    settings = load_settings(
        report_grid_factor=0.25, report_grid_factors={"site-1": 0.05}, report_weather_dir=tmp_path
    )
    options = Options.from_settings(settings, baseline=False)
    assert options.grid_factors.for_site("site-1") == 0.05
    assert options.grid_factors.for_site("other") == 0.25
    assert (options.baseline, options.weather_dir) == (False, tmp_path)
