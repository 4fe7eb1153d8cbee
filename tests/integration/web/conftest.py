"""Fixtures of the dashboard's browser tests: the real service and a real headless browser.

- ``dashboard_server``: ``edgewatch-cloud api`` (uvicorn, as in production) in a child
  process on a free loopback port, on a SQLite registry and a SQLite store in a temporary
  folder, seeded with two clients, their sites, devices, feature history, risk scores and
  work orders (:mod:`unit.cloud.web.dashboard_world`).
- ``page``: a page of Debian's chromium (``/usr/bin/chromium``) driven by Playwright; it
  records console errors, failed asset loads, and every request that does not go to the
  server under test (and blocks those).
  Nothing is downloaded: a missing chromium fails the test with how to install it.
- ``shoot(page, name)``: a full-page screenshot into ``tests/artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.ports import free_port
from support.processes import Process
from support.registry_world import seed_world
from unit.cloud.web.dashboard_world import Dashboard, seed_dashboard

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0


@dataclass
class Server:
    base_url: str
    dashboard: Dashboard
    process: Process


@dataclass
class BrowserLog:
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:  # noqa: S310 - loopback
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("dashboard-server")
    world = seed_world(f"sqlite:///{folder / 'registry.db'}")
    dashboard = seed_dashboard(world, folder / "ts.db")
    port = free_port()
    env = {
        **os.environ,
        "EDGEWATCH_CLOUD_DATABASE_URL": world.url,
        "EDGEWATCH_CLOUD_TSDB": "sqlite",
        "EDGEWATCH_CLOUD_TSDB_SQLITE_PATH": str(folder / "ts.db"),
        "EDGEWATCH_CLOUD_SECRET_KEY": "b" * 48,
    }
    argv = [sys.executable, "-m", "cloud.cli", "api", "--host", LOOPBACK, "--port", str(port)]
    process = Process(argv, folder / "api.log", env)
    process.start()
    base_url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not _healthy(base_url):
            assert process.proc is not None and process.proc.poll() is None, process.tail()
            assert time.monotonic() < deadline, f"the API did not start:\n{process.tail()}"
            time.sleep(0.1)
        yield Server(base_url, dashboard, process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright (never a downloaded browser)."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Debian's chromium is not installed at {CHROMIUM}: `make system-deps` installs it "
            "(apt-get install chromium); the dashboard's browser tests need it",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev dependency
        pytest.fail("playwright is not installed: run `make venv`", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def page(chromium: Any, dashboard_server: Server, browser_log: BrowserLog) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(10_000)

    def console(m: Any) -> None:
        # A page answered with 401 or 404 on purpose is logged as "Failed to load resource":
        # the test checks the pages' statuses itself; assets are checked below.
        if m.type in ("error", "warning") and not m.text.startswith("Failed to load resource"):
            browser_log.errors.append(f"console {m.type}: {m.text}")

    def response(r: Any) -> None:
        if r.status >= 400 and r.request.resource_type != "document":
            browser_log.errors.append(f"{r.status} for {r.request.resource_type} {r.url}")

    page.on("console", console)
    page.on("response", response)
    page.on("pageerror", lambda e: browser_log.errors.append(f"page error: {e}"))

    def route(r: Any) -> None:
        if r.request.url.startswith(dashboard_server.base_url):
            r.continue_()
        else:
            browser_log.foreign.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def shoot() -> Callable[[Any, str], Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def screenshot(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"dashboard-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return screenshot
