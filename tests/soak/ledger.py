"""Both sides of "every record stored exactly once": what each agent produced, and what
InfluxDB holds.

*Produced.* The agent's buffer deletes a record once the cloud acknowledges it, so before
the agent first starts, :func:`add_journal` adds a table and an ``AFTER INSERT`` trigger
to its buffer file: every record the agent ever stores is copied (seq, ts, kind, device
and the tags its point will carry) in the same transaction, so the journal is exactly as
durable as the buffer, across ``kill -9``. The journal has no key: a sequence number
handed out twice would show up twice.

*Stored.* A record becomes one point whose identity is its measurement (the kind), its
tags and its timestamp (``cloud/ingest/records.py``: ``ts`` rounded to the microsecond),
so a point is matched to its record by ``(kind, device, group, name, model_id, ts_ns)``;
InfluxDB is read over its HTTP API (InfluxQL on ``/query``, the raw retention policy).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.config import BufferSettings
from edge_agent.store import DROP_REASONS, RecordStore

RAW_RP = "raw"
KIND_FIELD = {
    "energy": "*",
    "features": '"n_samples"',
    "score": '"score"',
    "alarm": '"state"',
    "health": '"uptime_s"',
}
"""A field every point of the kind has (energy: all of them), so InfluxQL returns each
point once."""
TAGS = ("device", "group", "name", "model_id")

Key = tuple[str, str, str, str, str, int]
"""``(kind, device registry id, group, name, model_id, ts_ns)``: a point's identity."""

JOURNAL_SQL = """
CREATE TABLE IF NOT EXISTS soak_journal (
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    device_id TEXT,
    grp TEXT,
    name TEXT,
    model_id TEXT
);
CREATE TRIGGER IF NOT EXISTS soak_journal_insert AFTER INSERT ON records BEGIN
    INSERT INTO soak_journal VALUES (
        NEW.seq, NEW.ts, NEW.kind, NEW.device_id,
        json_extract(NEW.body, '$.group'),
        CASE NEW.kind WHEN 'alarm' THEN json_extract(NEW.body, '$.name') END,
        json_extract(NEW.body, '$.model_id')
    );
END;
"""


def ts_ns(ts: float) -> int:
    """As ingest stamps a record's point (``cloud.ingest.records.ts_ns``)."""
    return round(ts * 1e6) * 1000


def add_journal(buffer: Path) -> None:
    """Create the agent's buffer (the agent's own schema) and the journal beside it."""
    RecordStore(BufferSettings(path=buffer)).close()
    with closing(sqlite3.connect(buffer, timeout=30)) as db:
        db.executescript(JOURNAL_SQL)
        db.commit()


@dataclass(frozen=True)
class Journal:
    """One gateway's side, read from its buffer file."""

    gateway: str
    records: list[tuple[int, float, str, str | None, str, str, str]]
    """(seq, ts, kind, device name, group, name, model_id) of every record ever stored."""
    buffered: set[int]
    """Seqs still in the buffer (not acknowledged)."""
    last_seq: int
    dropped: dict[str, int]

    @property
    def seqs(self) -> list[int]:
        return [r[0] for r in self.records]

    def reused_seqs(self) -> list[int]:
        return sorted(s for s, n in Counter(self.seqs).items() if n > 1)

    def gaps(self) -> list[int]:
        return sorted(set(range(1, self.last_seq + 1)) - set(self.seqs))

    def key(
        self, record: tuple[int, float, str, str | None, str, str, str], ids: dict[str, str]
    ) -> Key:
        _seq, ts, kind, device, group, name, model_id = record
        return (kind, ids[device] if device else "", group, name, model_id, ts_ns(ts))


def read_journal(gateway: str, buffer: Path) -> Journal:
    with closing(sqlite3.connect(buffer, timeout=30)) as db:
        rows = db.execute(
            "SELECT seq, ts, kind, device_id, COALESCE(grp, ''), COALESCE(name, ''),"
            " COALESCE(model_id, '') FROM soak_journal ORDER BY seq"
        ).fetchall()
        buffered = {int(s) for (s,) in db.execute("SELECT seq FROM records")}
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    dropped = {r: int(meta.get(f"dropped.{r}", 0)) for r in DROP_REASONS}
    return Journal(gateway, rows, buffered, int(meta.get("last_seq", 0)), dropped)


def buffer_depth(buffer: Path) -> tuple[int, int]:
    """(records waiting, last seq handed out) of a live agent's buffer (WAL: reading does
    not get in the agent's way)."""
    with closing(sqlite3.connect(buffer, timeout=30)) as db:
        (depth,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    return int(depth), int(row[0]) if row else 0


def waiting_up_to(buffer: Path, seq: int) -> int:
    """Records with a seq up to ``seq`` still waiting in a live agent's buffer."""
    with closing(sqlite3.connect(buffer, timeout=30)) as db:
        (n,) = db.execute("SELECT COUNT(*) FROM records WHERE seq <= ?", (seq,)).fetchone()
    return int(n)


# ---- InfluxDB ----------------------------------------------------------------------------


def _query(url: str, database: str, influxql: str) -> Iterator[dict[str, Any]]:
    """The series of an InfluxQL query, chunked answers joined; nothing if the database
    does not exist yet."""
    params = urllib.parse.urlencode(
        {"db": database, "q": influxql, "epoch": "ns", "chunked": "true", "chunk_size": "20000"}
    )
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=120) as resp:  # noqa: S310
        text = resp.read().decode()
    for line in text.splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        for result in doc.get("results", []):
            error = result.get("error")
            if error:
                if "database not found" in error:
                    return
                raise RuntimeError(f"InfluxDB: {error} ({influxql})")
            yield from result.get("series", [])


def stored_keys(url: str, database: str, gateway: str) -> Counter[Key]:
    """Every point of ``gateway`` in the raw retention policy, by identity (a count above
    one would be one record stored as two points)."""
    keys: Counter[Key] = Counter()
    for kind, field_expr in KIND_FIELD.items():
        tags = ", ".join(f'"{t}"' for t in TAGS)
        gw = gateway.replace("'", "\\'")
        source = f'"{database}"."{RAW_RP}"."{kind}"'
        q = f"SELECT {field_expr}, {tags} FROM {source} WHERE \"gateway\" = '{gw}'"  # noqa: S608
        for series in _query(url, database, q):
            columns = series["columns"]
            where = {t: columns.index(t) for t in TAGS if t in columns}
            for row in series.get("values", []):
                tag = {t: (row[i] or "") for t, i in where.items()}
                keys[
                    (
                        kind,
                        tag.get("device", ""),
                        tag.get("group", ""),
                        tag.get("name", ""),
                        tag.get("model_id", ""),
                        int(row[0]),
                    )
                ] += 1
    return keys


def ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=3) as resp:  # noqa: S310
            return bool(resp.status == 204)
    except OSError:
        return False


# ---- Prometheus text of the ingest workers -------------------------------------------------


def metric_values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{labels: value}`` of one metric family's samples in Prometheus text."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, labels = head.partition("{")
        if metric != name:
            continue
        pairs = []
        for part in labels.rstrip("}").split(","):
            if "=" in part:
                k, _, v = part.partition("=")
                pairs.append((k.strip(), v.strip().strip('"')))
        out[tuple(sorted(pairs))] = float(value)
    return out


@dataclass
class IngestCounts:
    """Ingest's own counters, summed over its workers."""

    batches: Counter[str]
    """By outcome: stored, rejected (a batch-level fault), unknown_gateway,
    store_unavailable."""
    rejected_records: Counter[str]
    """By reason (what the acks' rejected lists carried)."""
    records: Counter[str]
    """Stored, by kind (a record stored again after a lost ack counts again)."""
    store_errors: Counter[str]


def ingest_counts(texts: list[str]) -> IngestCounts:
    counts = IngestCounts(Counter(), Counter(), Counter(), Counter())
    for text in texts:
        for labels, v in metric_values(text, "edgewatch_ingest_batches_total").items():
            counts.batches[dict(labels)["outcome"]] += int(v)
        for labels, v in metric_values(text, "edgewatch_ingest_rejected_records_total").items():
            counts.rejected_records[dict(labels)["reason"]] += int(v)
        for labels, v in metric_values(text, "edgewatch_ingest_records_total").items():
            counts.records[dict(labels)["kind"]] += int(v)
        for labels, v in metric_values(text, "edgewatch_ingest_store_errors_total").items():
            counts.store_errors[dict(labels)["kind"]] += int(v)
    return counts
