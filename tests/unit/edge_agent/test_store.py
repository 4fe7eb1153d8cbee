"""The SQLite buffer: sequence numbers, pending/ack, the full policies, age, crash safety."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import BufferSettings
from edge_agent.errors import ProtocolError, StoreError
from edge_agent.store import DROP_REASONS, ROW_OVERHEAD, RecordStore

T0 = 1_718_000_000.0
MIB = 1 << 20


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def item(i: int = 0, pad: int = 0, ts: float = T0) -> tuple[float, str, str | None, dict[str, Any]]:
    return (ts, "features", "cc-1", {"i": f"{i:06d}", "p": "x" * pad})  # a fixed size


def size_of(it: tuple[float, str, str | None, dict[str, Any]]) -> int:
    body = json.dumps(it[3], separators=(",", ":"), ensure_ascii=False)
    return len(body.encode()) + len(it[1]) + len(it[2] or "") + ROW_OVERHEAD


def open_store(tmp_path: Path, **kw: Any) -> RecordStore:
    clock = kw.pop("clock", Clock())
    return RecordStore(BufferSettings(path=tmp_path / "buffer.sqlite", **kw), clock=clock)


def test_sequence_is_monotonic_across_reopen_and_never_reused(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.last_seq() == 0
        assert store.append([item(1), item(2)]) == [1, 2]
        assert store.append([item(3)]) == [3]
        assert store.ack([(1, 3)]) == 3
        assert store.depth() == 0
    with open_store(tmp_path) as store:
        assert store.last_seq() == 3
        assert store.append([item(4)]) == [4]
    with open_store(tmp_path) as store:
        assert store.append([item(5), item(6)]) == [5, 6]
        assert store.stats().depth == 3


def test_waiting_counts_what_pending_chooses_from(tmp_path: Path) -> None:
    one = size_of(item(0))
    with open_store(tmp_path) as store:
        assert store.waiting() == (0, 0)
        store.append([item(i) for i in range(10)])
        assert store.waiting() == (10, 10 * one)
        assert store.waiting(after_seq=7) == (3, 3 * one)
        assert store.waiting(after_seq=10) == (0, 0)
        store.ack([(8, 8)])
        assert store.waiting(after_seq=7) == (2, 2 * one)  # acked records are gone
        assert [r.seq for r in store.pending(100, after_seq=7)] == [9, 10]


def test_pending_and_ack(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        seqs = store.append([item(i, ts=T0 + i) for i in range(10)])
        assert seqs == list(range(1, 11))
        got = store.pending(4)
        assert [r.seq for r in got] == [1, 2, 3, 4]
        assert got[0].body == {"i": "000000", "p": ""}
        assert got[0].ts == T0
        assert got[0].device_id == "cc-1"
        assert got[0].kind.value == "features"
        assert [r.seq for r in store.pending(3, after_seq=4)] == [5, 6, 7]
        assert [r.seq for r in store.pending(3, newest_first=True)] == [10, 9, 8]
        assert [r.seq for r in store.pending(100, after_seq=2, up_to_seq=5)] == [3, 4, 5]
        one = size_of(item(0))
        assert len(store.pending(100, max_bytes=3 * one)) == 3
        assert len(store.pending(100, max_bytes=1)) == 1  # always at least one
        assert store.ack([(2, 3), (9, 12)]) == 4
        assert store.ack([(2, 3)]) == 0  # already gone
        assert [r.seq for r in store.pending(100)] == [1, 4, 5, 6, 7, 8]
        assert store.count() == 6
        assert store.count(after_seq=4, up_to_seq=7) == 3
        assert store.oldest_ts() == T0
        assert store.size_bytes() == sum(size_of(item(i)) for i in (0, 3, 4, 5, 6, 7))


def test_invalid_items_store_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        for bad in [
            (T0, "features", "cc-1", {"x": float("nan")}),
            (T0, "nope", "cc-1", {}),
            (float("nan"), "score", None, {}),
            (T0, "score", "bad id", {}),
        ]:
            with pytest.raises((ProtocolError, ValueError)):
                store.append([item(1), bad])  # type: ignore[list-item]
        assert store.depth() == 0
        assert store.append([item(1)]) == [1]


def fill(store: RecordStore, n: int, pad: int, per_call: int = 10) -> list[int]:
    seqs: list[int] = []
    for start in range(0, n, per_call):
        seqs += store.append([item(i, pad) for i in range(start, min(n, start + per_call))])
    return seqs


@pytest.mark.parametrize("policy", ["drop_oldest", "thin", "refuse_new"])
def test_full_policy_holds_and_counts_exactly(tmp_path: Path, policy: Any) -> None:
    pad = 1000
    with open_store(tmp_path, max_bytes=MIB, policy=policy) as store:
        one = size_of(item(0, pad))
        fits = MIB // one
        appended = fill(store, 3 * fits, pad)
        stats = store.stats()
        assert stats.bytes <= MIB
        assert stats.bytes == stats.depth * one
        stored = [r.seq for r in store.pending(10 * fits)]
        assert len(stored) == stats.depth
        reason = {
            "drop_oldest": "full_drop_oldest",
            "thin": "full_thin",
            "refuse_new": "refused_new",
        }[policy]
        assert {k: v for k, v in stats.dropped.items() if v} == {reason: 3 * fits - stats.depth}
        if policy == "drop_oldest":
            # The newest records, contiguous.
            assert stored == list(range(3 * fits - len(stored) + 1, 3 * fits + 1))
            assert len(stored) >= fits - 10
        elif policy == "thin":
            # The newest records are all kept; older history survives, thinned out.
            assert stored[-1] == 3 * fits
            assert stored[0] < fits
            gaps = sum(1 for a, b in itertools.pairwise(stored) if b - a > 1)
            assert gaps > 10
        else:
            # The oldest records, contiguous; refused ones got no seq (no gap on the wire).
            assert stored == list(range(1, fits + 1))
            assert appended == stored
            assert store.append([item(0, pad)]) == []
            assert store.stats().dropped["refused_new"] == 2 * fits + 1
            store.ack([(1, 5)])
            assert store.append([item(0, pad)]) == [fits + 1]
    with open_store(tmp_path, max_bytes=MIB, policy=policy) as store:
        assert store.stats().dropped == stats.dropped | (
            {"refused_new": 2 * fits + 1} if policy == "refuse_new" else {}
        )


def test_refuse_new_stores_the_leading_items_that_fit(tmp_path: Path) -> None:
    pad = 1000
    with open_store(tmp_path, max_bytes=MIB, policy="refuse_new") as store:
        one = size_of(item(0, pad))
        fits = MIB // one
        assert store.append([item(i, pad) for i in range(fits - 2)]) == list(range(1, fits - 1))
        assert store.append([item(i, pad) for i in range(5)]) == [fits - 1, fits]
        assert store.stats().dropped["refused_new"] == 3


def test_one_call_larger_than_the_buffer_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path, max_bytes=MIB) as store, pytest.raises(StoreError, match="exceed"):
        store.append([item(i, 10_000) for i in range(200)])


def test_age_bound_expires_and_counts(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, max_age_s=60, clock=clock) as store:
        store.append([item(i, ts=T0 + i) for i in range(10)])
        clock.t = T0 + 65.5  # records with ts < T0 + 5.5 are too old
        assert store.expire() == 6
        assert [r.seq for r in store.pending(100)] == [7, 8, 9, 10]
        clock.t = T0 + 200
        store.append([item(99, ts=T0 + 190)])  # append expires too
        assert [r.seq for r in store.pending(100)] == [11]
        assert store.stats().dropped["expired"] == 10
    with open_store(tmp_path, max_age_s=60, clock=clock) as store:
        assert store.stats().dropped["expired"] == 10


def test_reject_is_counted(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.append([item(i) for i in range(5)])
        assert store.reject([2, 4, 99]) == 2
        assert store.stats().dropped == dict.fromkeys(DROP_REASONS, 0) | {"rejected": 2}


def test_wal_and_full_sync(tmp_path: Path) -> None:
    import sqlite3

    with open_store(tmp_path) as store:
        store.append([item(1)])
        db = sqlite3.connect(tmp_path / "buffer.sqlite")
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edge_agent.config import BufferSettings
    from edge_agent.store import RecordStore
    store = RecordStore(BufferSettings(path=Path(sys.argv[1])))
    i = 0
    while True:
        seqs = store.append([(time.time(), "energy", "cc-1", {"kwh": i + k}) for k in range(3)])
        i += 3
        sys.stdout.write(f"{seqs[-1]}\\n")
        sys.stdout.flush()
    """
)


def test_records_survive_kill_9_right_after_append(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    confirmed = 0
    for round_ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for lines, line in enumerate(proc.stdout, start=1):
            confirmed = max(confirmed, int(line))
            if lines >= 50 + 37 * round_:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(10)
        proc.stdout.close()
        with open_store(tmp_path) as store:
            seqs = [r.seq for r in store.pending(1_000_000)]
            # Every append that returned is there, in one piece, without gaps.
            assert seqs[-1] >= confirmed
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) % 3 == 0
            assert store.last_seq() == len(seqs)
