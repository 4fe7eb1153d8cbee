"""A migrated SQLite registry with a small service business (``support.workorder_world``),
copied from a per-session template for each test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support.workorder_world import Business, seed

from cloud.db import make_engine, make_sessionmaker, migrate


@pytest.fixture(scope="session")
def business_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Business]:
    path = tmp_path_factory.mktemp("workorders") / "template.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    try:
        return path, seed(make_sessionmaker(engine))
    finally:
        engine.dispose()


@pytest.fixture
def db_url(business_template: tuple[Path, Business], tmp_path: Path) -> str:
    target = tmp_path / "registry.db"
    shutil.copyfile(business_template[0], target)
    return f"sqlite:///{target}"


@pytest.fixture
def biz(business_template: tuple[Path, Business]) -> Business:
    return business_template[1]


@pytest.fixture
def wo_sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
