"""Fixtures of the dashboard's tests: ``create_app`` on the two-tenant registry with work
orders, risk history and readings relative to now (:mod:`unit.cloud.web.dashboard_world`),
seeded once per session and copied for each test, driven through FastAPI's TestClient.

``browser(email)`` signs a user in through the login form (the way a browser does: the
form's CSRF token from the page, the cookies in the client's jar) and returns the client.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.registry_world import PASSWORD, World, copy_sqlite, settings_for
from unit.cloud.web.dashboard_world import Dashboard, seed_dashboard

from cloud.app import create_app
from cloud.settings import Settings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Template:
    registry: Path
    store: Path
    dashboard: Dashboard


@pytest.fixture(scope="session")
def dashboard_template(
    world_template: tuple[Path, World], tmp_path_factory: pytest.TempPathFactory
) -> Template:
    path, world = world_template
    folder = tmp_path_factory.mktemp("dashboard")
    url = copy_sqlite(path, folder / "registry.db")
    dashboard = seed_dashboard(dataclasses.replace(world, url=url), folder / "ts.db")
    return Template(folder / "registry.db", folder / "ts.db", dashboard)


@pytest.fixture
def dash(dashboard_template: Template, tmp_path: Path) -> Dashboard:
    """The seeded world in this test's own copies of the registry and the store."""
    url = copy_sqlite(dashboard_template.registry, tmp_path / "registry.db")
    shutil.copyfile(dashboard_template.store, tmp_path / "ts.db")
    d = dashboard_template.dashboard
    return dataclasses.replace(d, world=dataclasses.replace(d.world, url=url))


@pytest.fixture
def web_settings(dash: Dashboard, tmp_path: Path) -> Settings:
    return settings_for(dash.world.url, tmp_path / "ts.db", secret_key="w" * 40)


@pytest.fixture
def web_app(web_settings: Settings) -> FastAPI:
    return create_app(web_settings)


@pytest.fixture
def anonymous(web_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(web_app) as c:
        yield c


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> object:
    """Post the login form as a browser would; the response (not followed)."""
    form = client.get("/ui/login")
    assert form.status_code == 200, form.text
    return client.post(
        "/ui/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )


@pytest.fixture
def browser(web_app: FastAPI) -> Iterator[Callable[[str], TestClient]]:
    """A signed-in client per email (each its own cookie jar)."""
    clients: list[TestClient] = []

    def open_as(email: str) -> TestClient:
        client = TestClient(web_app)
        client.__enter__()
        clients.append(client)
        r = sign_in(client, email)
        assert getattr(r, "status_code", None) == 303, getattr(r, "text", r)
        return client

    try:
        yield open_as
    finally:
        for c in clients:
            c.__exit__(None, None, None)
