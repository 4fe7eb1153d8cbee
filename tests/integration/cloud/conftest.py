"""Fixtures of the cloud's integration tests that need more than ``tests/conftest.py``.

- ``pg_schema_url``: a ``postgresql+psycopg://`` URL on the session's test database whose
  connections (in this process, in spawned processes and in ``edgewatch-cloud``
  subprocesses alike) use a fresh schema of their own, dropped afterwards; migrate it
  with :func:`cloud.db.migrate`.
- ``spawn``: a ``multiprocessing`` spawn context whose children can import the test
  modules (by their package name, ``tests.integration...``) to run a function of theirs.
"""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import Iterator
from multiprocessing.context import SpawnContext
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql


@pytest.fixture
def pg_schema_url(postgres_db: str) -> Iterator[str]:
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in postgres_db else "?"
    url = postgres_db.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(postgres_db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def spawn(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SpawnContext:
    """Spawned children get the parent's ``sys.path``: with the project's root on it they
    import ``tests.integration.cloud.test_...`` (pytest's name for the module under
    ``--import-mode=importlib``) to find their target function."""
    monkeypatch.syspath_prepend(str(request.config.rootpath))
    return multiprocessing.get_context("spawn")
