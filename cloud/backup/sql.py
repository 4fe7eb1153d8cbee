"""The SQL half of a backup: every table of the registry, read in one snapshot, written back
in one transaction.

Tables and columns are reflected from the database, not taken from the models: a backup
holds whatever the migrations created at the database's revision, and a restore writes
into the tables the migrations create at the backup's revision. Each column has a *kind*
(:func:`column_kind`) that says how its values travel as JSON, the same on SQLite and
PostgreSQL:

==========  ===========================================================================
kind        value in the file
==========  ===========================================================================
text        string
int         integer
float       number (``NaN`` and infinities as Python's ``json`` writes them)
decimal     string (exact)
bool        ``true``/``false``
datetime    ISO 8601 in UTC with its offset (a time SQLite keeps without one is UTC)
date        ``YYYY-MM-DD``
json        the column's JSON text as a string; SQL ``NULL`` as ``null`` (so JSON
            ``null`` and SQL ``NULL`` stay apart)
binary      base64
==========  ===========================================================================
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import Connection, Engine

from cloud.backup.archive import JsonlWriter, Manifest, TableEntry, read_jsonl
from cloud.errors import BackupError

Progress = Callable[[str], None]

ALEMBIC_TABLE: Final = "alembic_version"
READ_ROWS: Final = 1000
"""Rows fetched at a time while reading a table (a server-side cursor on PostgreSQL)."""
READ_ROWS_BINARY: Final = 16
"""The same for tables with binary columns (report outputs are megabytes each)."""
BATCH_ROWS: Final = 1000
BATCH_BYTES: Final = 16 << 20
"""A restore inserts a table's rows in batches of at most this many rows and bytes."""


# ---- kinds ---------------------------------------------------------------------------------


def column_kind(table: str, column: sa.Column[Any]) -> str:
    """How ``column``'s values travel (see the module docstring); :class:`BackupError` for
    a type this format does not carry."""
    kind = column.type
    if isinstance(kind, sa.JSON):
        return "json"
    if isinstance(kind, sa.DateTime):
        return "datetime"
    if isinstance(kind, sa.Date):
        return "date"
    if isinstance(kind, sa.LargeBinary):
        return "binary"
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.Integer):
        return "int"
    if isinstance(kind, sa.Float):
        return "float"
    if isinstance(kind, sa.Numeric):
        return "decimal"
    if isinstance(kind, sa.String):
        return "text"
    raise BackupError(f"column {table}.{column.name} has type {kind!r}, which backups do not carry")


def encode(kind: str, value: Any) -> Any:
    """A database value as JSON (``json`` columns are read as their text already)."""
    if value is None:
        return None
    if kind == "datetime":
        moment: datetime = value
        if moment.tzinfo is None:  # SQLite: the registry stores UTC without an offset
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    if kind == "date":
        day: date = value
        return day.isoformat()
    if kind == "binary":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "decimal":
        return str(value)
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value


def decoder(kind: str, column: sa.Column[Any]) -> Callable[[Any], Any]:
    """The function that turns a file's value back into what ``column`` (of the target)
    takes."""
    if kind == "datetime":
        aware = bool(getattr(column.type, "timezone", False))

        def to_datetime(value: Any) -> Any:
            if value is None:
                return None
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC)
            return moment if aware else moment.replace(tzinfo=None)

        return to_datetime
    if kind == "date":
        return lambda value: None if value is None else date.fromisoformat(value)
    if kind == "binary":
        return lambda value: None if value is None else base64.b64decode(value, validate=True)
    if kind == "decimal":
        return lambda value: None if value is None else Decimal(value)
    if kind == "json":

        def to_json(value: Any) -> Any:
            if value is None:
                return None  # SQL NULL (the column is bound with none_as_null)
            parsed = json.loads(value)
            return sa.JSON.NULL if parsed is None else parsed

        return to_json
    return lambda value: value


def _bind_type(kind: str, column: sa.Column[Any]) -> sa.types.TypeEngine[Any]:
    if kind == "json":
        return sa.JSON(none_as_null=True)
    return column.type


# ---- reading -------------------------------------------------------------------------------


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection in one read-only transaction that sees one state of the whole database:
    ``REPEATABLE READ READ ONLY`` on PostgreSQL (a snapshot), an explicit ``BEGIN`` on
    SQLite (in WAL mode the first read fixes what the transaction sees; writers go on)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn
            return
        # pysqlite opens transactions only before writes; a read snapshot needs its own.
        conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


def revision_of(conn: Connection) -> str | None:
    """The Alembic revision of the database (``None``: never migrated)."""
    if not sa.inspect(conn).has_table(ALEMBIC_TABLE):
        return None
    found = [str(r) for r in conn.scalars(sa.text("SELECT version_num FROM alembic_version"))]
    if len(found) > 1:
        raise BackupError(f"the database is at several Alembic revisions ({found}): merge them")
    return found[0] if found else None


def tables_of(conn: Connection) -> list[sa.Table]:
    """The database's tables in foreign-key order (Alembic's own table left out)."""
    metadata = sa.MetaData()
    metadata.reflect(bind=conn)
    return [t for t in metadata.sorted_tables if t.name != ALEMBIC_TABLE]


def row_counts(conn: Connection, tables: Sequence[sa.Table]) -> dict[str, int]:
    return {
        t.name: int(conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0) for t in tables
    }


def _order(table: sa.Table, kinds: Mapping[str, str]) -> list[sa.ColumnElement[Any]]:
    """Primary key order; without a key, every column that can be compared."""
    if len(table.primary_key.columns):
        return list(table.primary_key.columns)
    return [c for c in table.columns if kinds[c.name] not in ("json", "binary")]


def dump(
    conn: Connection, folder: Path, progress: Progress
) -> tuple[list[TableEntry], dict[str, str]]:
    """Write every table into ``folder/sql/<table>.jsonl.gz``; the entries (in foreign-key
    order) and the database's description."""
    entries: list[TableEntry] = []
    for table in tables_of(conn):
        kinds = {c.name: column_kind(table.name, c) for c in table.columns}
        columns = [
            sa.cast(c, sa.Text).label(c.name) if kinds[c.name] == "json" else c
            for c in table.columns
        ]
        names = [c.name for c in table.columns]
        binary = any(k == "binary" for k in kinds.values())
        stmt = sa.select(*columns).order_by(*_order(table, kinds))
        writer = JsonlWriter(folder, f"sql/{table.name}.jsonl.gz")
        try:
            result = conn.execute(
                stmt, execution_options={"yield_per": READ_ROWS_BINARY if binary else READ_ROWS}
            )
            for row in result:
                writer.write([encode(kinds[n], v) for n, v in zip(names, row, strict=True)])
            file = writer.close()
        except BaseException:
            writer.abort()
            raise
        entries.append(
            TableEntry(table.name, tuple((n, kinds[n]) for n in names), writer.lines, file)
        )
        progress(f"sql: {table.name}: {writer.lines:,} rows")
    return entries, describe(conn)


def describe(conn: Connection) -> dict[str, str]:
    """The database's dialect and server version (no URL: it may hold a password)."""
    if conn.dialect.name == "sqlite":
        version = str(conn.scalar(sa.text("SELECT sqlite_version()")))
    else:
        version = str(conn.scalar(sa.text("SHOW server_version")))
    return {"dialect": conn.dialect.name, "version": version}


# ---- writing -------------------------------------------------------------------------------


def check_schema(tables: Sequence[sa.Table], manifest: Manifest) -> None:
    """Refuse a backup whose tables or columns are not the target's at the same revision."""
    target = {t.name: t for t in tables}
    backed = {t.name: t for t in manifest.tables}
    if set(target) != set(backed):
        only_backup = sorted(set(backed) - set(target))
        only_target = sorted(set(target) - set(backed))
        raise BackupError(
            f"the backup's tables are not those of revision {manifest.revision} here: "
            f"only in the backup {only_backup}, only in the database {only_target}"
        )
    for name, entry in backed.items():
        table = target[name]
        mine = {c.name: column_kind(name, c) for c in table.columns}
        theirs = dict(entry.columns)
        if mine != theirs:
            raise BackupError(
                f"table {name}: the backup's columns {sorted(theirs.items())} are not the "
                f"database's {sorted(mine.items())} at revision {manifest.revision}"
            )


def load(conn: Connection, folder: Path, manifest: Manifest, progress: Progress) -> dict[str, int]:
    """Insert every table's rows (foreign-key order, in batches) and check each table's
    count against the manifest; rows per table. Runs in the caller's transaction."""
    tables = tables_of(conn)
    check_schema(tables, manifest)
    backed = {t.name: t for t in manifest.tables}
    counts: dict[str, int] = {}
    for table in tables:
        entry = backed[table.name]
        names = [name for name, _ in entry.columns]
        decoders = [decoder(kind, table.c[name]) for name, kind in entry.columns]
        target = sa.table(
            table.name,
            *(sa.column(name, _bind_type(kind, table.c[name])) for name, kind in entry.columns),
        )
        insert = sa.insert(target)
        batch: list[dict[str, Any]] = []
        size = read = 0
        path = folder / entry.file.path
        for row in read_jsonl(folder, entry.file):
            read += 1
            if not isinstance(row, list) or len(row) != len(names):
                raise BackupError(f"{path}, line {read}: not a row of {len(names)} values")
            try:
                batch.append({n: d(v) for n, d, v in zip(names, decoders, row, strict=True)})
            except (ValueError, TypeError) as exc:
                raise BackupError(f"{path}, line {read}: a value cannot be read: {exc}") from None
            size += sum(len(v) for v in row if isinstance(v, str))
            if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
                conn.execute(insert, batch)
                batch, size = [], 0
        if batch:
            conn.execute(insert, batch)
        stored = int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
        if read != entry.rows or stored != entry.rows:
            raise BackupError(
                f"table {table.name}: the manifest lists {entry.rows} rows, {path} holds {read}, "
                f"the database now {stored}"
            )
        counts[table.name] = stored
        progress(f"sql: {table.name}: {stored:,} rows")
    return counts


def reset_sequences(conn: Connection) -> list[str]:
    """PostgreSQL: move every sequence that feeds a column (``SERIAL``, identity) past the
    column's largest value, so the next insert does not collide with a restored row; what
    was set, as ``sequence=next value``. Nothing to do on SQLite (``max(rowid) + 1``)."""
    if conn.dialect.name != "postgresql":
        return []
    prep = conn.dialect.identifier_preparer
    done: list[str] = []
    for table in tables_of(conn):
        for column in table.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            sequence = conn.scalar(
                sa.select(sa.func.pg_get_serial_sequence(prep.quote(table.name), column.name))
            )
            if sequence is None:
                continue
            following = sa.select(sa.func.coalesce(sa.func.max(column), 0) + 1).scalar_subquery()
            conn.execute(
                sa.select(
                    sa.func.setval(sa.cast(sa.literal(sequence), REGCLASS), following, sa.false())
                )
            )
            done.append(f"{sequence}={conn.scalar(sa.select(following))}")
    return done


def drop_everything(conn: Connection) -> list[str]:
    """Drop every table of the database (the registry's and Alembic's); their names."""
    metadata = sa.MetaData()
    metadata.reflect(bind=conn)
    names = sorted(metadata.tables)
    metadata.drop_all(bind=conn)
    return names
