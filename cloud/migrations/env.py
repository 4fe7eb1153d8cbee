"""Alembic's environment for the registry: no ``alembic.ini``, no logging setup.

:func:`cloud.db.migrate` passes an open connection in ``config.attributes["connection"]``;
without one (the ``alembic`` command line with ``-x`` or a config made by
:func:`cloud.db.alembic_config`) an engine is made from ``sqlalchemy.url``. SQLite runs
in batch mode, so that later revisions can alter tables SQLite cannot ``ALTER``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from cloud.db import make_engine
from cloud.schema import metadata

config = context.config
target_metadata = metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use cloud.db.migrate()")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
