"""InfluxStore against a real InfluxDB 1.x: the conformance suite, plus schema management,
rollups, batching, error translation (unreachable, slow, refused) and a crash of the
server (SIGKILL) in the middle of writing.

Every test gets a database of its own on the session's ``influxdb`` server; the crash
test starts a private server (:class:`support.influx.RestartableInflux`).
"""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from support.influx import RestartableInflux, free_port
from unit.cloud.tsdb.conformance import (
    DAY,
    HOUR,
    T0,
    StoreConformance,
    alarm,
    energy_pt,
    feats,
    health,
    pt,
    score,
)

from cloud.errors import StoreError, StoreUnavailable
from cloud.settings import Settings
from cloud.tsdb import open_store
from cloud.tsdb.base import SiteRollup
from cloud.tsdb.influx import ROLLUP_RP, InfluxStore, Results, select
from cloud.tsdb.influx_writes import Answer

pytestmark = pytest.mark.timeout(120)


def fresh_name() -> str:
    return f"edgewatch_test_{uuid.uuid4().hex[:12]}"


def drop_database(url: str, name: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        client.post("/query", data={"q": f'DROP DATABASE "{name}"'})


@pytest.fixture
def database(influxdb: object) -> Iterator[tuple[str, str]]:
    """``(url, database name)``: a database name no other test uses, dropped afterwards."""
    url: str = influxdb.url  # type: ignore[attr-defined]
    name = fresh_name()
    try:
        yield url, name
    finally:
        drop_database(url, name)


class TestInfluxStore(StoreConformance):
    @pytest.fixture
    def store(self, database: tuple[str, str]) -> Iterator[InfluxStore]:
        url, name = database
        store = InfluxStore(url, name, timeout_s=10)
        try:
            yield store
        finally:
            store.close()


def rows(results: Results, statement: int = 0) -> list[dict[str, object]]:
    return [record for series in results.get(statement, []) for record in series.records()]


# ---- schema -------------------------------------------------------------------------------


def test_retention_policies_created_and_altered_as_configured(database: tuple[str, str]) -> None:
    url, name = database
    store = InfluxStore(url, name, retention="30d", rollup_retention="520w")
    try:
        assert store.count("score") == 0  # the first call sets the schema up
        policies = {r["name"]: r for r in rows(store.query("SHOW RETENTION POLICIES"))}
        assert policies["raw"]["duration"] == "720h0m0s"
        assert policies["raw"]["default"] is True
        assert policies["rollup"]["duration"] == f"{520 * 7 * 24}h0m0s"
        assert policies["rollup"]["default"] is False
        store.write([score(T0, 0.5, False)])
        # The points went into "raw" by name, not into whatever the default is.
        raw = rows(store.query('SELECT count("score") FROM "raw"."score"'))
        assert raw[0]["count"] == 1
    finally:
        store.close()
    # Opening it again with other durations alters the policies (1.x keeps the database).
    again = InfluxStore(url, name, retention="60d", rollup_retention="INF")
    try:
        assert again.count("score") == 1
        policies = {r["name"]: r for r in rows(again.query("SHOW RETENTION POLICIES"))}
        assert policies["raw"]["duration"] == "1440h0m0s"
        assert policies["rollup"]["duration"] == "0s"  # INF
    finally:
        again.close()


def test_without_schema_management_an_unknown_database_holds_writes_until_it_exists(
    database: tuple[str, str],
) -> None:
    """A missing database is the deployment's fault, not the points': the write is
    unavailable (ingest acknowledges nothing and retries) rather than refused (ingest
    would reject the points and the gateways delete them). Once an operator creates
    it, the same write goes through."""
    url, name = database
    store = InfluxStore(url, name, manage_schema=False)
    try:
        with pytest.raises(StoreUnavailable, match=r"no such database.*database not found"):
            store.write([score(T0, 0.5, False)])
        with pytest.raises(StoreError, match="database not found"):
            store.count("score")
        assert store.stats().write_errors == 1
        store.query(f'CREATE DATABASE "{name}"', modify=True)
        store.write([score(T0, 0.5, False)])
        assert store.count("score") == 1
    finally:
        store.close()


# ---- rollups ------------------------------------------------------------------------------


def rollup_data() -> list[object]:
    d2 = {"gateway": "gw-2", "device": "dev-2"}
    points = [energy_pt(T0 - 600, {"energy": 10.0, "runtime_hours": 100.0})]
    for h in range(5):
        base = T0 + h * HOUR
        points += [
            score(base + 60, 0.1 * h, h % 2 == 1),
            score(base + 1800, 0.05 + 0.1 * h, False, **d2),
            energy_pt(base + 900, {"energy": 10.0 + 2.0 * h + 1.0, "runtime_hours": 100.0 + h}),
            energy_pt(base + 3000, {"energy": 10.0 + 2.0 * h + 2.0}),
            feats(base + 300, {"x__mean": float(h)}, **d2),
        ]
        if h == 3:
            points += [energy_pt(base + 3500, {"energy": 1.0}, **d2)]
            points += [alarm(base + 100, "raised"), alarm(base + 200, "cleared")]
    points += [energy_pt(T0 + 4 * HOUR + 100, {"energy": 4.0}, **d2)]
    points += [health(T0 + 2 * HOUR + 7)]
    points += [score(T0 + 60, 0.99, True, site="site-2", gateway="gw-9", device="dev-9")]
    return points


def assert_same_rollups(a: list[SiteRollup], b: list[SiteRollup]) -> None:
    assert [r.start for r in a] == [r.start for r in b]
    for x, y in zip(a, b, strict=True):
        assert (x.devices_reporting, x.windows, x.anomalous_windows, x.alarms_raised) == (
            y.devices_reporting,
            y.windows,
            y.anomalous_windows,
            y.alarms_raised,
        )
        assert x.energy_kwh == pytest.approx(y.energy_kwh)
        assert x.max_score == pytest.approx(y.max_score)
        assert x.mean_score == pytest.approx(y.mean_score)


def test_rollup_matches_raw_queries_and_is_idempotent(database: tuple[str, str]) -> None:
    url, name = database
    store = InfluxStore(url, name)
    try:
        store.write(rollup_data())  # type: ignore[arg-type]
        assert store.site_rollup_from_rollups("site-1", T0, T0 + 5 * HOUR) == []  # not run yet
        written = store.rollup(T0 - HOUR, T0 + 5 * HOUR)
        assert written > 0
        raw = store.site_rollup("site-1", T0, T0 + 5 * HOUR, HOUR)
        assert len(raw) == 5 and raw[0].devices_reporting == 2
        assert sum(r.alarms_raised for r in raw) == 1
        assert sum(r.energy_kwh for r in raw) > 0
        rolled = store.site_rollup_from_rollups("site-1", T0, T0 + 5 * HOUR, HOUR)
        assert_same_rollups(rolled, raw)
        # Coarser intervals aggregate the hours the same way the raw points do.
        for interval in (2 * HOUR, DAY):
            assert_same_rollups(
                store.site_rollup_from_rollups("site-1", T0, T0 + 5 * HOUR, interval),
                store.site_rollup("site-1", T0, T0 + 5 * HOUR, interval),
            )
        # The per-device energy aggregate is the last reading of each counter in the hour.
        energy = rows(
            store.query(
                select(
                    "*",
                    f'"{ROLLUP_RP}"."energy_1h"',
                    ["\"device\" = 'dev-1'", f"time >= {T0 * 10**9}"],
                )
            )
        )
        assert [(r["energy"], r["runtime_hours"]) for r in energy][:2] == [
            (12.0, 100.0),
            (14.0, 101.0),
        ]

        def stored() -> dict[str, int]:
            answer = store.query(select("count(*)", f'"{ROLLUP_RP}"./.*/', group_by="*"))
            counts: dict[str, int] = {}
            for series in answer.get(0, []):
                for _, values in series.rows():
                    counts[series.name] = counts.get(series.name, 0) + max(values.values())
            return counts

        before = stored()
        assert set(before) == {"activity_1h", "energy_1h", "score_1h", "alarm_1h"}
        assert store.rollup(T0 - HOUR, T0 + 5 * HOUR) == written  # again: the same points
        assert stored() == before
        assert_same_rollups(store.site_rollup_from_rollups("site-1", T0, T0 + 5 * HOUR), raw)
        # A late record changes its hour when the rollup runs again.
        store.write([score(T0 + 4 * HOUR + 10, 0.95, True, device="dev-late")])
        store.rollup(T0 + 4 * HOUR, T0 + 5 * HOUR)
        late = store.site_rollup_from_rollups("site-1", T0 + 4 * HOUR, T0 + 5 * HOUR)
        assert (late[0].devices_reporting, late[0].windows, late[0].max_score) == (3, 3, 0.95)
    finally:
        store.close()


def test_site_rollup_reads_rollups_beyond_the_raw_retention(database: tuple[str, str]) -> None:
    url, name = database
    writer = InfluxStore(url, name)  # raw kept 400 days: the data is recent enough
    try:
        writer.write(rollup_data())  # type: ignore[arg-type]
        writer.rollup(T0 - HOUR, T0 + 5 * HOUR)
        raw = writer.site_rollup("site-1", T0, T0 + 5 * HOUR, HOUR)
        for measurement in ("features", "score", "alarm", "energy", "health"):
            writer.query(f'DROP MEASUREMENT "{measurement}"', modify=True)
        assert writer.site_rollup("site-1", T0, T0 + 5 * HOUR, HOUR) == []  # raw is gone
        # A store told that raw points live only an hour reads ten-day-old intervals from
        # the rollups; intervals shorter than an hour still come from raw points.
        short = InfluxStore(url, name, retention="1h", manage_schema=False)
        try:
            assert_same_rollups(short.site_rollup("site-1", T0, T0 + 5 * HOUR, HOUR), raw)
            assert short.site_rollup("site-1", T0, T0 + 5 * HOUR, 1800) == []
        finally:
            short.close()
    finally:
        writer.close()


# ---- batching -----------------------------------------------------------------------------


def test_a_write_larger_than_a_batch_arrives_complete(
    database: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, name = database
    sizes: list[int] = []
    store = InfluxStore(url, name, batch_points=7)
    direct = store._direct  # writes go on the store's own keep-alive connections
    assert direct is not None
    post = direct.post

    def count_lines(target: str, body: bytes) -> Answer:
        sizes.append(len(body.splitlines()))
        return post(target, body)

    monkeypatch.setattr(direct, "post", count_lines)
    try:
        points = [score(T0 + k, k / 100, k % 3 == 0) for k in range(50)]
        store.write(points)
        assert sizes == [7] * 7 + [1]
        assert store.count("score") == 50
        (row,) = store.site_rollup("site-1", T0, T0 + HOUR, HOUR)
        assert row.windows == 50 and row.anomalous_windows == 17
        stats = store.stats()
        assert (stats.points_written, stats.write_batches, stats.write_errors) == (50, 8, 0)
    finally:
        store.close()


# ---- errors -------------------------------------------------------------------------------


def test_unreachable_server_is_unavailable_promptly() -> None:
    port = free_port()  # nothing listens there
    store = InfluxStore(f"http://127.0.0.1:{port}", fresh_name(), timeout_s=2)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            store.write([score(T0, 0.5, False)])
        with pytest.raises(StoreUnavailable):
            store.feature_history("dev-1", T0, T0 + HOUR)
        assert store.ping() is False
        assert time.monotonic() - t0 < 2.0
    finally:
        store.close()


def test_a_server_that_does_not_answer_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        store = InfluxStore(f"http://127.0.0.1:{port}", fresh_name(), timeout_s=0.5)
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"did not answer .* within 0.5 s"):
                store.write([score(T0, 0.5, False)])
            elapsed = time.monotonic() - t0
            assert 0.4 < elapsed < 2.5
        finally:
            store.close()


def test_refusals_raise_store_error_naming_the_problem(database: tuple[str, str]) -> None:
    url, name = database
    store = InfluxStore(url, name)
    try:
        store.write([score(T0, 0.5, False)])
        # The same field with another type: InfluxDB refuses that point (partial write).
        conflicting = pt("score", T0 + 1, {"score": "high"})
        with pytest.raises(StoreError, match=r"partial write.*field type conflict") as info:
            store.write([conflicting, score(T0 + 2, 0.25, False)])
        assert not isinstance(info.value, StoreUnavailable)
        assert store.count("score") == 2  # the good point of that batch was stored
        with pytest.raises(StoreError, match="error parsing query"):
            store.query("SELEC nothing")
    finally:
        store.close()


def test_a_failure_after_some_batches_says_what_was_stored(database: tuple[str, str]) -> None:
    url, name = database
    store = InfluxStore(url, name, batch_points=2)
    try:
        store.write([score(T0, 0.5, False)])
        points = [score(T0 + 1, 0.1, False), score(T0 + 2, 0.2, False)]
        points += [pt("score", T0 + 3, {"score": "bad"})]
        with pytest.raises(StoreError, match=r"the first 2 of 3 points were stored"):
            store.write(points)
    finally:
        store.close()


# ---- authentication (the header only: a mock transport is enough) ------------------------


def recording_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/query":
            return httpx.Response(200, text='{"results":[{"statement_id":0}]}\n')
        return httpx.Response(204)

    return httpx.MockTransport(handler)


def test_token_is_sent_as_authorization_header() -> None:
    seen: list[httpx.Request] = []
    settings = Settings(
        tsdb="influxdb",
        influx_url="http://influx.invalid:8086",
        influx_token=SecretStr("s3cr3t-t0ken"),
        influx_manage_schema=True,
    )
    store = InfluxStore.from_settings(settings, transport=recording_transport(seen))
    try:
        store.write([score(T0, 0.5, False)])
        assert store.count("score") == 0
        assert store.ping() is True
    finally:
        store.close()
    paths = [r.url.path for r in seen]
    assert "/write" in paths and "/query" in paths and "/ping" in paths
    for request in seen:
        assert request.headers["Authorization"] == "Token s3cr3t-t0ken"
        assert "s3cr3t" not in str(request.url)


def test_username_and_password_use_basic_auth() -> None:
    seen: list[httpx.Request] = []
    store = InfluxStore(
        "http://influx.invalid:8086",
        "db",
        username="reader",
        password="pa:ss",  # noqa: S106 - a fake server
        manage_schema=False,
        transport=recording_transport(seen),
    )
    try:
        store.write([score(T0, 0.5, False)])
    finally:
        store.close()
    expected = "Basic " + base64.b64encode(b"reader:pa:ss").decode()
    assert [r.headers["Authorization"] for r in seen] == [expected]
    assert seen[0].url.params["db"] == "db" and "rp" not in seen[0].url.params


def test_open_store_picks_influx() -> None:
    store = open_store(Settings(tsdb="influxdb", influx_url="http://influx.invalid:8086"))
    try:
        assert isinstance(store, InfluxStore)
        assert store.url == "http://influx.invalid:8086"
    finally:
        store.close()


# ---- a crash of the server ----------------------------------------------------------------


def test_kill_9_write_fails_then_restart_keeps_points(tmp_path: Path) -> None:
    try:
        server = RestartableInflux(tmp_path / "influx")
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":  # as tests/conftest.py: in CI, a failure
            pytest.fail(f"{exc} (CI=true: a missing server is a failure)")
        pytest.skip(str(exc))
    server.start()
    store = InfluxStore(server.url, "edgewatch", timeout_s=3)
    try:
        before = [score(T0 + k, k / 10, False) for k in range(5)]
        store.write(before)
        server.kill()
        with pytest.raises(StoreUnavailable):
            store.write([score(T0 + 10, 0.5, True)])
        assert store.ping() is False
        server.start()  # same port, same data directory
        assert store.ping() is True
        assert store.count("score") == 5
        (row,) = store.site_rollup("site-1", T0, T0 + HOUR, HOUR)
        assert row.windows == 5 and row.max_score == pytest.approx(0.4)
        store.write([score(T0 + 10, 0.5, True)])  # the write ingest retries
        assert store.count("score") == 6
        assert server.starts == 2
    finally:
        store.close()
        server.stop()
