"""The backup folder on disk: gzip'd JSON-lines files, the manifest and ``SHA256SUMS``.

    DIR/
      manifest.json            what the backup holds (see :class:`Manifest`)
      SHA256SUMS               sha256 of every file, manifest.json included (``sha256sum -c``)
      sql/<table>.jsonl.gz     one JSON array per row, in the manifest's column order
      ts/<measurement>.jsonl.gz  one ``[ts_ns, {tags}, {fields}]`` per point

Nothing in the format names a backend: values are JSON (times ISO 8601 UTC, bytes base64,
JSON columns as their JSON text), so a backup of SQLite restores into PostgreSQL and one
of the SQLite store into InfluxDB.

Writers hash what they write (:class:`JsonlWriter`); :func:`verify` checks every file's
size and sha256 before a restore writes anything; :func:`read_jsonl` checks the hash
again while it reads, and names the file (and line) of any error.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from cloud.errors import BackupError

FORMAT: Final = "edgewatch-backup"
FORMAT_VERSION: Final = 1
"""Raised when the layout or the encoding of values changes; a restore refuses newer ones."""
MANIFEST: Final = "manifest.json"
SUMS: Final = "SHA256SUMS"
GZIP_LEVEL: Final = 6
WRITE_BUFFER_BYTES: Final = 1 << 16
READ_CHUNK_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    """Relative to the backup folder, ``/``-separated."""
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class TableEntry:
    name: str
    columns: tuple[tuple[str, str], ...]
    """``(name, kind)`` in the order of each row's values (kinds: :mod:`cloud.backup.sql`)."""
    rows: int
    file: FileEntry


@dataclass(frozen=True, slots=True)
class SeriesEntry:
    measurement: str
    points: int
    first_ns: int | None
    last_ns: int | None
    file: FileEntry


@dataclass(frozen=True, slots=True)
class Manifest:
    created_at: str
    """When the backup started (ISO 8601, UTC)."""
    revision: str
    """The Alembic revision of the SQL schema the rows were read at."""
    source: dict[str, Any]
    """The backends the backup was read from (no credentials)."""
    tables: tuple[TableEntry, ...]
    """In foreign-key order (a table after the tables it refers to)."""
    series: tuple[SeriesEntry, ...]
    details: dict[str, Any]
    """Timings, window counts and sizes: for people, not read by a restore."""

    def files(self) -> list[FileEntry]:
        return [t.file for t in self.tables] + [s.file for s in self.series]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at,
            "alembic_revision": self.revision,
            "source": self.source,
            "sql": {
                "tables": [
                    {
                        "name": t.name,
                        "rows": t.rows,
                        "columns": [list(c) for c in t.columns],
                        **t.file.to_json(),
                    }
                    for t in self.tables
                ]
            },
            "timeseries": {
                "measurements": [
                    {
                        "name": s.measurement,
                        "points": s.points,
                        "first_ns": s.first_ns,
                        "last_ns": s.last_ns,
                        **s.file.to_json(),
                    }
                    for s in self.series
                ]
            },
            "details": self.details,
        }


# ---- writing -------------------------------------------------------------------------------


class _HashingFile:
    """A binary file that hashes and counts what is written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


class JsonlWriter:
    """One gzip'd JSON-lines file of the backup; :meth:`close` gives its entry."""

    def __init__(self, folder: Path, relative: str) -> None:
        self.relative = relative
        self.path = folder / relative
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = self.path.open("xb")
        self._hashing = _HashingFile(self._raw)
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._hashing, compresslevel=GZIP_LEVEL, mtime=0
        )
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.lines = 0

    def write(self, value: object) -> None:
        line = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        self._buffer.append(line)
        self._buffered += len(line)
        self.lines += 1
        if self._buffered >= WRITE_BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._gzip.write(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0

    def close(self) -> FileEntry:
        """Finish the gzip stream and fsync the file."""
        self._flush()
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        return FileEntry(self.relative, self._hashing.size, self._hashing.sha256.hexdigest())

    def abort(self) -> None:
        self._gzip.close()
        self._raw.close()


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """``manifest.json`` and ``SHA256SUMS`` (every file of the backup), fsynced."""
    text = json.dumps(manifest.to_json(), ensure_ascii=False, indent=2) + "\n"
    data = text.encode()
    _write_synced(folder / MANIFEST, data)
    sums = [(f.sha256, f.path) for f in manifest.files()]
    sums.append((hashlib.sha256(data).hexdigest(), MANIFEST))
    _write_synced(folder / SUMS, "".join(f"{h}  {p}\n" for h, p in sums).encode())


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading -------------------------------------------------------------------------------


def _file_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _check_file(folder: Path, entry: FileEntry) -> None:
    path = folder / entry.path
    if not path.is_file():
        raise BackupError(f"{path}: missing; the backup is incomplete")
    size, sha = _file_sha256(path)
    if size != entry.bytes:
        raise BackupError(
            f"{path}: {size} bytes, the manifest says {entry.bytes}: the file is truncated or "
            "corrupted"
        )
    if sha != entry.sha256:
        raise BackupError(
            f"{path}: sha256 {sha} is not the manifest's {entry.sha256}: the file is corrupted"
        )


def load_manifest(folder: Path) -> Manifest:
    """The backup's manifest, checked against ``SHA256SUMS``; :class:`BackupError` when it
    is missing, corrupted, malformed or of a newer format."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BackupError(f"{folder}: not a folder (a backup is a folder with {MANIFEST})")
    if not path.is_file():
        raise BackupError(f"{path}: missing; {folder} is not an EdgeWatch backup or incomplete")
    data = path.read_bytes()
    sums = folder / SUMS
    if sums.is_file():
        listed = _parse_sums(sums).get(MANIFEST)
        if listed is not None and listed != hashlib.sha256(data).hexdigest():
            raise BackupError(f"{path}: its sha256 is not the one in {sums}: it is corrupted")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path}: not JSON ({exc}): the file is corrupted") from None
    try:
        return _parse_manifest(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"{path}: not a manifest this version can read ({exc!r})") from None


def _parse_sums(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        digest, sep, name = line.partition("  ")
        if sep:
            out[name] = digest
    return out


def _file(doc: Mapping[str, Any]) -> FileEntry:
    path = str(doc["file"])
    if path.startswith("/") or ".." in Path(path).parts:
        raise ValueError(f"file {path!r} is outside the backup folder")
    return FileEntry(path, int(doc["bytes"]), str(doc["sha256"]))


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _parse_manifest(doc: Any) -> Manifest:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT!r}")
    version = doc["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(
            f"the backup's format version is {version!r}; this version of EdgeWatch reads "
            f"up to {FORMAT_VERSION}: restore it with the version that made it, or a newer one"
        )
    tables = tuple(
        TableEntry(
            name=str(t["name"]),
            columns=tuple((str(name), str(kind)) for name, kind in t["columns"]),
            rows=int(t["rows"]),
            file=_file(t),
        )
        for t in doc["sql"]["tables"]
    )
    series = tuple(
        SeriesEntry(
            measurement=str(s["name"]),
            points=int(s["points"]),
            first_ns=_optional_int(s.get("first_ns")),
            last_ns=_optional_int(s.get("last_ns")),
            file=_file(s),
        )
        for s in doc["timeseries"]["measurements"]
    )
    return Manifest(
        created_at=str(doc["created_at"]),
        revision=str(doc["alembic_revision"]),
        source=dict(doc.get("source") or {}),
        tables=tables,
        series=series,
        details=dict(doc.get("details") or {}),
    )


def verify(folder: Path) -> Manifest:
    """Check the manifest and every file it lists (present, size, sha256) before anything is
    restored; the manifest, or :class:`BackupError` naming the first bad file."""
    manifest = load_manifest(folder)
    for entry in manifest.files():
        _check_file(folder, entry)
    return manifest


class _HashingReader:
    """A binary file that hashes and counts what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def seek(self, offset: int) -> int:
        """Only to where the reader is (gzip rewinds after reading past a member's end)."""
        if offset != self.raw.tell():
            raise OSError("a backup file is read once, from its start to its end")
        return offset


def read_jsonl(folder: Path, entry: FileEntry) -> Iterator[Any]:
    """The values of one file, line by line; :class:`BackupError` naming the file (and the
    line) when it cannot be decompressed or parsed, or its hash is not the manifest's."""
    path = folder / entry.path
    number = 0
    try:
        with path.open("rb") as raw:
            hashing = _HashingReader(raw)
            with gzip.GzipFile(filename="", mode="rb", fileobj=hashing) as gz:
                for number, line in enumerate(gz, start=1):  # noqa: B007 - named in errors
                    yield json.loads(line)
            hashing.read()  # whatever follows the gzip stream is hashed too
    except (OSError, EOFError, zlib.error) as exc:
        raise BackupError(
            f"{path}: cannot decompress it after line {number} ({exc}): the file is "
            "corrupted or truncated"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path}, line {number}: not JSON ({exc})") from None
    if hashing.size != entry.bytes or hashing.sha256.hexdigest() != entry.sha256:
        raise BackupError(
            f"{path}: changed since it was verified (sha256 or size differ from the manifest)"
        )
