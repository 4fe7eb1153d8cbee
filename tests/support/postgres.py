"""Fresh databases on the machine's PostgreSQL, for the ``postgres_db`` fixture
(``tests/conftest.py``) and for benchmarks that run against PostgreSQL.

The server is reached as the current OS user over the unix socket (``make services``
creates that role and lets it create databases), or through ``EDGEWATCH_TEST_PG_ADMIN_DSN``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


class PostgresUnavailable(Exception):
    """The server cannot be reached, or the role may not create databases."""


def admin_dsn() -> str:
    """libpq parameters of the database the fresh ones are created from."""
    override = os.environ.get("EDGEWATCH_TEST_PG_ADMIN_DSN")
    if override:
        return override
    if "PGHOST" not in os.environ and os.path.isdir("/var/run/postgresql"):
        return "host=/var/run/postgresql dbname=postgres"
    return "dbname=postgres"


def postgres_url(params: dict[str, Any]) -> str:
    """A ``postgresql://`` URL for libpq keyword parameters (psycopg and SQLAlchemy read it)."""
    rest = {key: str(value) for key, value in params.items() if value is not None}
    user = rest.pop("user", "")
    password = rest.pop("password", "")
    dbname = rest.pop("dbname", "")
    host = rest.pop("host", "")
    port = rest.pop("port", "")
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    if auth:
        auth += "@"
    netloc = ""
    if host.startswith("/") or "," in host:
        # A unix socket directory (or a host list) goes into the query string.
        rest = {"host": host, **({"port": port} if port else {}), **rest}
    elif host:
        netloc = f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    url = f"postgresql://{auth}{netloc}/{quote(dbname, safe='')}"
    return f"{url}?{urlencode(rest)}" if rest else url


@contextmanager
def fresh_database(prefix: str = "edgewatch_test") -> Iterator[str]:
    """A new, empty database; yields its ``postgresql://`` URL (for SQLAlchemy replace the
    scheme with ``postgresql+psycopg://``) and drops it afterwards, whoever is still
    connected. :class:`PostgresUnavailable` when it cannot be created."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    dsn = admin_dsn()
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise PostgresUnavailable(f"PostgreSQL is not reachable with {dsn!r}: {reason}") from None
    with admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PostgresUnavailable(
                f"role {admin.info.user!r} may not create databases: {exc}"
            ) from None
        params = conninfo_to_dict(dsn)
        params.setdefault("user", admin.info.user)
        params.setdefault("host", admin.info.host)
        params.setdefault("port", admin.info.port)
        params["dbname"] = name
    try:
        yield postgres_url(params)
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextmanager
def bench_registry(url: str | None, postgres: bool, folder: Path) -> Iterator[str]:
    """The registry a benchmark runs on: ``url`` when given, else a fresh PostgreSQL
    database with ``postgres``, else SQLite in ``folder``."""
    if url:
        yield url
    elif postgres:
        with fresh_database("edgewatch_bench") as fresh:
            yield fresh
    else:
        yield f"sqlite:///{folder / 'registry.db'}"


def server_version(sessions: sessionmaker[Session]) -> str:
    """The registry's database and version, for a benchmark's results."""
    from sqlalchemy import text

    with sessions() as s:
        if s.get_bind().dialect.name == "sqlite":
            return "SQLite " + str(s.execute(text("SELECT sqlite_version()")).scalar())
        return str(s.execute(text("SELECT version()")).scalar()).split(" on ")[0]
