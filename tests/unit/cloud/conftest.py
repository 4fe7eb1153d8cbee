"""Fixtures of the registry, auth and API tests: a seeded two-tenant registry per test.

The registry is seeded once per session (scrypt hashing is the slow part) into a SQLite
template and copied for each test, so every test may change it freely.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support.registry_world import World, copy_sqlite, seed_world

from cloud.auth import Principal
from cloud.db import make_engine, make_sessionmaker
from cloud.registry.models import Role


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World]:
    path = tmp_path_factory.mktemp("registry") / "template.db"
    return path, seed_world(f"sqlite:///{path}")


@pytest.fixture
def world(world_template: tuple[Path, World], tmp_path: Path) -> World:
    template_path, template = world_template
    return dataclasses.replace(template, url=copy_sqlite(template_path, tmp_path / "registry.db"))


@pytest.fixture
def sessions(world: World) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(world.url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


@pytest.fixture
def admin(world: World) -> Principal:
    return Principal(world.admin_id, Role.ADMIN)


@pytest.fixture
def desk(world: World) -> Principal:
    return Principal(world.desk_id, Role.SERVICE_DESK)


@pytest.fixture
def fm_a(world: World) -> Principal:
    return Principal(world.a.manager_id, Role.FACILITY_MANAGER, world.a.client_id)


@pytest.fixture
def fm_b(world: World) -> Principal:
    return Principal(world.b.manager_id, Role.FACILITY_MANAGER, world.b.client_id)
