"""The SQL registry's engine, sessions, migrations and error translation.

SQLite by default (one file, for the embedded demo and the unit tests), PostgreSQL in
production (``postgresql+psycopg://``; a plain ``postgresql://`` or ``postgres://`` URL is
taken to mean psycopg 3, the driver the project installs).

- :func:`create_engine_from_settings` / :func:`make_engine`: on SQLite every connection
  turns foreign keys on (SQLite ignores them otherwise, and ``ON DELETE`` rules with
  them), uses WAL (readers do not block the writer) and waits for a lock instead of
  failing at once.
- :func:`make_sessionmaker`: sessions that keep loaded values after commit, so routes can
  build their responses from objects after the unit of work ended.
- :func:`session_scope` and :func:`translate_errors`: ``IntegrityError`` becomes
  :class:`cloud.errors.Conflict` (409), ``DataError`` (a value the column cannot hold,
  such as a NUL character in PostgreSQL text) :class:`cloud.errors.InvalidInput` (422),
  ``OperationalError`` (cannot connect, database locked, gone)
  :class:`cloud.errors.RegistryUnavailable` (503). Messages name the
  constraint or the database, never the URL's password.
- :func:`migrate`: Alembic, run programmatically to ``head``; the scripts live in the
  package (``cloud/migrations``), so no ``alembic.ini`` is needed at run time. To write a
  new revision, change ``cloud/registry/models.py`` and run::

      python -c "from alembic import command; from cloud.db import alembic_config; \\
      command.revision(alembic_config('sqlite:///dev.db'), 'what changed', \\
      autogenerate=True)"

  against a database migrated to the previous head; then review the generated script
  (``tests/unit/cloud/test_migrations.py`` proves models and migrations agree).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from cloud.errors import ConfigError, Conflict, InvalidInput, RegistryUnavailable
from cloud.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000

_CONSTRAINT_RE = re.compile(
    r'(?:constraint\s+"?(?P<pg>[A-Za-z0-9_]+)"?|(?P<lite>(?:UNIQUE|FOREIGN KEY|NOT NULL|CHECK)'
    r" constraint failed(?::\s*[A-Za-z0-9_.,\s]+)?))",
    re.IGNORECASE,
)


def normalize_url(url: str | URL) -> URL:
    """``url`` as a SQLAlchemy URL, with PostgreSQL pinned to psycopg 3.

    Raises :class:`ConfigError` (``EDGEWATCH_CLOUD_DATABASE_URL``) for a URL SQLAlchemy
    cannot parse or a database other than SQLite and PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError("EDGEWATCH_CLOUD_DATABASE_URL", f"not a database URL: {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if backend == "postgres" or driver in ("", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise ConfigError(
            "EDGEWATCH_CLOUD_DATABASE_URL",
            f"{backend!r} is not supported; use sqlite:///path or postgresql+psycopg://...",
        )
    return parsed


def describe(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for ``url`` (see the module docstring for what SQLite connections get)."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        if in_memory:
            # One shared connection, or every session would see its own empty database.
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"check_same_thread": False}
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect(wal=not in_memory))
        return engine
    kwargs["pool_pre_ping"] = True
    return create_engine(parsed, **kwargs)


def _sqlite_on_connect(*, wal: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    return on_connect


def create_engine_from_settings(settings: Settings) -> Engine:
    """The registry engine for ``settings.database_url``."""
    return make_engine(settings.database_url)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine``; loaded attributes survive commit (``expire_on_commit=False``)."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


def _constraint_of(exc: IntegrityError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    match = _CONSTRAINT_RE.search(text)
    if match is None:
        return "a registry constraint"
    return (match.group("pg") or match.group("lite") or "a registry constraint").strip()


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLAlchemy's integrity and operational errors into the cloud's error tree."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"conflicts with existing data ({_constraint_of(exc)})") from exc
    except DataError as exc:
        # e.g. a NUL character PostgreSQL cannot store, a number out of a column's range
        reason = " ".join(str(exc.orig or exc).split())[:200]
        raise InvalidInput("value", f"the database cannot store it: {reason}") from exc
    except OperationalError as exc:
        reason = " ".join(str(exc.orig or exc).split())[:300]
        raise RegistryUnavailable(f"the registry database is unavailable: {reason}") from exc


def flush(session: Session) -> None:
    """``session.flush()`` with :func:`translate_errors`: a duplicate surfaces here as
    :class:`Conflict`, inside the service that caused it."""
    with translate_errors():
        session.flush()


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends normally, roll back otherwise."""
    session = factory()
    try:
        with translate_errors():
            yield session
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# ---- migrations ----------------------------------------------------------------------------


def alembic_config(url: str | URL) -> Config:
    """An Alembic config for ``url`` pointing at the package's migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a '%' in a password would be read as a reference.
    full = normalize_url(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", full.replace("%", "%%"))
    return cfg


def migrate(target: Settings | str | URL, revision: str = "head") -> None:
    """Bring the registry at ``target`` (settings or a URL) to ``revision`` (default head).

    Idempotent: an up-to-date database is left alone. Raises
    :class:`RegistryUnavailable` when the database cannot be reached."""
    url = target.database_url if isinstance(target, Settings) else target
    engine = make_engine(url)
    try:
        with translate_errors(), engine.begin() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
    log.info("registry %s migrated to %s", describe(normalize_url(url)), revision)


def current_revision(target: Settings | str | URL) -> str | None:
    """The revision the registry at ``target`` is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    url = target.database_url if isinstance(target, Settings) else target
    engine = make_engine(url)
    try:
        with translate_errors(), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision the package's scripts define."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return head
