"""Fixtures of the report tests: a migrated registry and a SQLite store holding the
October of ``support.report_world``, and the report made of it (once per module: the
collect, build and render steps are the slow part)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support.report_world import MONTH, NOW, ReportWorld, seed_report_world

from cloud.db import make_engine, make_sessionmaker, migrate
from cloud.reports.build import build
from cloud.reports.collect import Inputs, collect
from cloud.reports.content import Report
from cloud.reports.period import parse_month
from cloud.reports.render import Outputs, render
from cloud.tsdb.sqlite import SQLiteStore


@dataclass
class Env:
    url: str
    store_path: Path
    sessions: sessionmaker[Session]
    store: SQLiteStore
    world: ReportWorld


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{folder / 'registry.db'}"
    migrate(url)
    engine = make_engine(url)
    store = SQLiteStore(folder / "ts.db")
    try:
        sessions = make_sessionmaker(engine)
        world = seed_report_world(sessions, store)
        yield Env(url, folder / "ts.db", sessions, store, world)
    finally:
        store.close()
        engine.dispose()


@pytest.fixture(scope="module")
def inputs(env: Env) -> Inputs:
    with env.sessions() as session:
        return collect(
            session,
            env.store,
            env.world.client_id,
            parse_month(MONTH),
            options=env.world.options(),
            now=NOW,
        )


@pytest.fixture(scope="module")
def report(inputs: Inputs) -> Report:
    return build(inputs)


@pytest.fixture(scope="module")
def outputs(report: Report) -> Outputs:
    return render(report)
