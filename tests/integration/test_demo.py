"""``edgewatch-demo`` end to end: the whole system on one machine, as a newcomer runs it.

Runs the real command (simulator over Modbus TCP and RTU on a pty, one agent process per
gateway shipping over the HTTPS uplink, the API, the risk scorer, delivery to the demo's
service desk, the month's energy reports) for 13 simulated days at the highest speed the
agents allow, and checks what its summary and files promise.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from support.cloud_stub import free_port, wait_until
from support.postgres import fresh_database

from cloud.registry.models import Device

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_the_demo_runs_the_whole_system_and_says_what_happened(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "edgewatch_demo.cli", "--out", str(out), "--days", "13",
         "--speed", "15000", "--port", str(free_port())],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    wall = time.monotonic() - t0
    print(proc.stdout)  # noqa: T201 - the log shows the demo's own output
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())

    # the four scheduled failures, and what the system did about each
    assert summary["failures_scheduled"] == 4
    assert summary["failures"] == 4, summary["units"]
    assert summary["drained"], "the agents' buffers did not drain"
    leak = next(u for u in summary["units"] if u["fault"] == "refrigerant_leak")
    assert leak["warned"] and leak["lead_h"] > 0, leak

    # every work order reached the desk as exactly one ticket, nothing forged or lost
    orders, tickets = summary["work_orders"], summary["tickets"]
    assert orders and len(tickets) == len(orders)
    assert summary["sink_refused"] == 0
    journal = [json.loads(line) for line in (out / "tickets.jsonl").read_text().splitlines()]
    assert len({m["id"] for m in journal}) == len(journal)  # no message delivered twice

    # every kind of record arrived; the reports exist in every format
    assert {"features", "score", "energy", "health"} <= set(summary["records"])
    for key in ("acme", "northwind"):
        folder = out / "reports" / key
        assert (folder / "report.pdf").read_bytes().startswith(b"%PDF")
        content = json.loads((folder / "report.json").read_text())
        assert content["month"] == summary["plan"]["month"]
        assert any((folder / "csv").iterdir())

    # the summary tells a newcomer where to look, how to log in, and how to serve the
    # dashboard again on what the run stored: that command works with those logins, and a
    # client's facility manager sees that client's sites only
    assert "everything has stopped" in proc.stdout
    login = re.search(r"facility_manager +(fm-acme@\S+) +password (\S+)", proc.stdout)
    command = re.search(r"^ +(\S+edgewatch-cloud --env-file \S+ api)", proc.stdout, re.M)
    assert login and command, proc.stdout
    port = free_port()
    api = subprocess.Popen(
        [*command.group(1).split(), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(f"{base}/readyz"), 60, "the API")
        token = httpx.post(
            f"{base}/v1/auth/token", data={"username": login[1], "password": login[2]}
        ).json()["access_token"]
        sites = httpx.get(f"{base}/v1/sites", headers={"Authorization": f"Bearer {token}"})
        assert [s["name"] for s in sites.json()] == ["Acme Marina Hotel, Dubai"]
        assert httpx.get(f"{base}/ui/login").status_code == 200
    finally:
        api.terminate()
        api.wait(20)
    print(f"demo wall time {wall:.0f} s")  # noqa: T201


@pytest.mark.timeout(300)
def test_the_demo_runs_on_mosquitto_influxdb_and_postgresql(
    tmp_path: Path, mosquitto_broker: Any, influxdb: Any, postgres_db: str
) -> None:
    with fresh_database("edgewatch_demo") as dsn:
        url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        out = tmp_path / "demo"
        proc = subprocess.run(
            [sys.executable, "-m", "edgewatch_demo.cli", "--out", str(out), "--days", "2",
             "--speed", "15000", "--port", str(free_port()), "--no-report",
             "--mqtt", f"127.0.0.1:{mosquitto_broker.port}", "--influx", influxdb.url,
             "--database-url", url],
            capture_output=True, text=True, timeout=280,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["drained"] and summary["records"]["features"] > 0, summary["records"]
        engine = create_engine(url)
        with engine.connect() as c:
            devices = c.execute(select(func.count()).select_from(Device)).scalar_one()
        engine.dispose()
        assert devices == summary["devices"] == 8
        # what ingest acknowledged over MQTT is in InfluxDB, every features record once
        answer = httpx.get(
            f"{influxdb.url}/query",
            params={"db": "edgewatch_demo", "q": "SELECT count(score) FROM score"},
        ).json()
        (series,) = answer["results"][0]["series"]
        assert series["values"][0][1] == summary["records"]["score"]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
