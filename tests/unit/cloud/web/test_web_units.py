"""The dashboard's pure parts: chart data, local days, CSRF and flash tokens, formatting."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cloud.tsdb.base import SiteRollup
from cloud.web import charts, formatting, session
from cloud.web.views import BoardFilter, risk_band, window_for

SECRET = "s" * 40


# ---- chart data ------------------------------------------------------------------------------


def test_resample_keeps_few_points_and_breaks_the_line_at_gaps() -> None:
    ts = [0.0, 60.0, 120.0, 180.0, 900.0, 960.0]
    xs, (ys,) = charts.resample(ts, [[1.0, 2.0, None, 4.0, 5.0, float("nan")]], 0, 1000)
    assert xs == [0.0, 60.0, 120.0, 180.0, 540.0, 900.0, 960.0]
    assert ys == [1.0, 2.0, None, 4.0, None, 5.0, None]


def test_resample_averages_many_points_into_buckets() -> None:
    ts = [float(t) for t in range(1000)]
    xs, (ys,) = charts.resample(ts, [[1.0 if t < 500 else 3.0 for t in range(1000)]], 0, 2000, 10)
    assert len(xs) == len(ys) == 10
    assert xs[0] == 100.0 and xs[-1] == 1900.0
    assert ys[:5] == [1.0, 1.0, 2.0, 3.0, 3.0]  # the third bucket spans both halves
    assert ys[5:] == [None] * 5  # nothing after t = 999: a gap, not a zero


def test_a_month_is_split_at_the_sites_local_midnights() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # +05:30: hourly rollups would straddle midnight
    now = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    start, end = charts.month_to_date(now, kolkata)
    assert start == datetime(2026, 3, 1, tzinfo=kolkata) and end == now
    assert charts.rollup_interval(kolkata, start, end) == 900
    assert charts.rollup_interval(ZoneInfo("Europe/Berlin"), start, end) == 3600
    days = charts.local_days(start, end, kolkata)
    assert days == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]

    def row(at: datetime, kwh: float, alarms: int = 0) -> SiteRollup:
        return SiteRollup(at.timestamp(), 2, kwh, 4, 1, 0.5, 0.9, alarms)

    rows = [
        row(datetime(2026, 3, 1, 18, 15, tzinfo=UTC), 2.0),  # 23:45 on the 1st in Kolkata
        row(datetime(2026, 3, 1, 18, 30, tzinfo=UTC), 3.0, alarms=1),  # 00:00 on the 2nd
        row(datetime(2026, 2, 28, 12, 0, tzinfo=UTC), 99.0),  # before the month: ignored
    ]
    daily = charts.daily_totals(rows, kolkata, days)
    assert daily.energy_kwh == [2.0, 3.0, None]
    assert daily.alarms == [0, 1, None]
    assert daily.x[0] == datetime(2026, 3, 1, tzinfo=kolkata).timestamp()
    assert daily.total(daily.energy_kwh) == 5.0 and daily.has_data


def test_a_dst_change_keeps_every_local_day() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # clocks go forward on 29 March 2026
    start, end = charts.month_to_date(datetime(2026, 3, 31, 12, tzinfo=UTC), berlin)
    days = charts.local_days(start, end, berlin)
    assert len(days) == 31
    starts = [charts.day_start(d, berlin) for d in days]
    assert starts[29] - starts[28] == 23 * 3600  # the short day


def test_key_signals_follow_the_asset_type_and_what_the_device_reports() -> None:
    candidates = charts.candidate_signals("compressor", "ew-cc100")
    assert candidates[:3] == ["discharge_pressure", "suction_pressure", "discharge_temp"]
    assert "ambient_temp" in candidates and "energy" not in candidates  # counters are not charted
    reported = ["superheat__mean", "vibration_rms__mean", "ambient_temp__mean", "superheat__std"]
    assert charts.key_signals(candidates, reported) == [
        "superheat",
        "vibration_rms",
        "ambient_temp",
    ]
    units = charts.signal_units("compressor", None)
    assert units["discharge_pressure"] == "bar" and units["discharge_temp"] == "°C"
    # an asset type without a profile: the device's own means
    unknown = charts.candidate_signals("chiller", None, ["flow__mean", "flow__max", "dp__mean"])
    assert unknown == ["dp", "flow"]
    assert charts.signal_title("flow", "") == "Flow"


def test_the_device_window_is_a_span_or_an_evidence_links_period() -> None:
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert window_for(None, None, None, now).key == "7d"
    day = window_for("24h", None, None, now)
    assert (day.start, day.end) == (now - timedelta(hours=24), now)
    start, end = now - timedelta(days=3), now - timedelta(days=1)
    custom = window_for(None, str(start.timestamp()), str(end.timestamp()), now)
    assert (custom.key, custom.start, custom.end) == ("custom", start, end)
    assert window_for(None, "nonsense", "1e300", now).key == "7d"
    assert window_for(None, "0", str(now.timestamp()), now).key == "7d"  # too long a period


def test_board_filters_fall_back_to_defaults() -> None:
    f = BoardFilter.parse("bogus", " site ", "7", "x" * 200, "bogus")
    assert (f.state, f.site_id, f.priority, len(f.fault), f.sort) == (
        "open",
        "site",
        None,
        96,
        "priority",
    )
    f = BoardFilter.parse("final", None, "2", None, "sla")
    assert f.order_filter().open is False and f.order_filter().priority_max == 2
    assert f.query() == "state=final&priority=2&sort=sla"
    assert BoardFilter.parse("in_progress", None, None, None, None).order_filter().state == (
        "in_progress",
    )


@pytest.mark.parametrize(
    ("p72", "band"),
    [(None, "unknown"), (0.05, "low"), (0.2, "elevated"), (0.5, "high"), (0.8, "critical")],
)
def test_risk_bands(p72: float | None, band: str) -> None:
    assert risk_band(p72) == band


# ---- sessions --------------------------------------------------------------------------------


def test_csrf_tokens_belong_to_one_session_and_one_key() -> None:
    token = session.csrf_token(SECRET, "session-a")
    assert session.csrf_valid(SECRET, "session-a", token)
    assert not session.csrf_valid(SECRET, "session-b", token)
    assert not session.csrf_valid("k" * 40, "session-a", token)
    assert not session.csrf_valid(SECRET, "session-a", "")
    assert not session.csrf_valid(SECRET, "session-a", None)
    nonce = session.new_login_nonce()
    assert session.login_token_valid(SECRET, nonce, session.login_token(SECRET, nonce))
    assert not session.login_token_valid(SECRET, None, session.login_token(SECRET, nonce))
    assert session.login_token(SECRET, nonce) != session.csrf_token(SECRET, nonce)


def test_flash_messages_are_signed() -> None:
    value = session.encode_flash(SECRET, session.Flash("error", "WO-000001 was not changed: ü"))
    assert session.decode_flash(SECRET, value) == session.Flash(
        "error", "WO-000001 was not changed: ü"
    )
    payload, mac = value.rsplit(".", 1)
    forged = session.encode_flash("k" * 40, session.Flash("ok", "Your account is locked"))
    for bad in (forged, payload + ".0", "garbage", "", None, f"{payload}x.{mac}"):
        assert session.decode_flash(SECRET, bad) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/work-orders?state=all", "/ui/work-orders?state=all"),
        ("/ui", "/ui"),
        ("/ui?x=1", "/ui?x=1"),
        ("/uix", "D"),
        ("/v1/me", "D"),
        ("https://evil.example/ui/", "D"),
        ("//evil.example/ui", "D"),
        ("/ui//evil.example", "D"),
        ("/ui/\\evil", "D"),
        ("/ui/\r\nSet-Cookie: x", "D"),
        (None, "D"),
    ],
)
def test_redirects_stay_in_the_dashboard(target: str | None, expected: str) -> None:
    assert session.safe_next(target, "/ui", "D") == expected


# ---- formatting ------------------------------------------------------------------------------


def test_times_are_written_in_the_sites_zone() -> None:
    at = datetime(2026, 1, 15, 13, 0, tzinfo=UTC)
    assert formatting.fmt_datetime(at, "Asia/Dubai") == "15 Jan 2026, 17:00"
    assert formatting.fmt_short(at, "Europe/Lisbon") == "15 Jan, 13:00 WET"
    assert formatting.fmt_datetime(at.timestamp(), "America/New_York", zone_name=True) == (
        "15 Jan 2026, 08:00 EST"
    )
    assert formatting.fmt_datetime(None, "UTC") == "–"
    assert formatting.zone_label("Asia/Dubai", at) == "Asia/Dubai (+04)"
    assert formatting.zone_label("UTC", at) == "UTC"
    assert formatting.to_local(at, "No/Such_Zone") == at  # an unknown zone reads as UTC


def test_durations_numbers_and_names() -> None:
    now = datetime(2026, 1, 15, 12, tzinfo=UTC)
    assert formatting.fmt_due(now + timedelta(hours=3), now) == "in 3 h"
    assert formatting.fmt_due(now - timedelta(days=3), now) == "overdue by 3 days"
    assert formatting.fmt_ago(now - timedelta(seconds=10), now) == "just now"
    assert formatting.fmt_ago(now - timedelta(minutes=5), now) == "5 min ago"
    assert formatting.fmt_ago(None, now) == "never"
    assert formatting.fmt_pct(0.724) == "72%"
    assert formatting.fmt_kwh(1234.56) == "1,235 kWh"
    assert formatting.fmt_kwh(12.34) == "12.3 kWh"
    assert formatting.humanize("alarm:high_pressure") == "Alarm: high pressure"
    assert formatting.unit("degC") == "°C"
