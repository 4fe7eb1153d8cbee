"""Time-series store write rates: InfluxDB line protocol over HTTP, our serialisation of
it, and the SQLite store.

    .venv/bin/python tests/bench/bench_tsdb.py

Realistic EdgeWatch points: a ``features`` point (one window: ``--signals`` signals × 4
features = 100 feature fields by default, plus window metadata), a ``score`` point and an
``energy`` point (3 counters), spread over ``--devices`` devices of 10 gateways.

- ``serialise``: :func:`cloud.tsdb.influx.line_protocol` alone (influxdb-client's
  serializer), points/s and fields/s per kind; ``serialisers`` compares the ways
  influxdb-client offers on features points (the builder the store uses,
  ``Point.from_dict``, and its private helpers, which the store does not use), and
  ``point_validation`` what constructing :class:`cloud.tsdb.base.Point` costs;
- ``influx_raw``: the server's rate for pre-serialised line protocol, one ``POST /write``
  per batch (``--batches``, 1000 and 5000 by default), against a private ``influxd``
  started here (``tests/support/influx.py``; Debian's 1.6), a fresh database per run;
- ``influx_store``: ``InfluxStore.write`` end to end (serialisation + HTTP), same batches;
- ``influx_small_writes``: ``InfluxStore.write`` of ``--small-write`` score points per
  call (about what an ingest worker writes at a time at half the bench's load), 500 calls:
  the writing thread's CPU per write, serialisation included, and its wall time;
- ``sqlite_store``: ``SQLiteStore.write`` (WAL, synchronous=FULL), one call per batch.

Prints the figures and writes ``tests/bench/results/bench_tsdb.json``. Not a pass/fail
test; the machine is shared, so run it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.influx import RestartableInflux  # type: ignore[import-not-found]  # noqa: E402

from cloud.tsdb.base import Point  # noqa: E402
from cloud.tsdb.influx import InfluxStore, line_protocol, make_line  # noqa: E402
from cloud.tsdb.sqlite import SQLiteStore  # noqa: E402

FEATURES = ("mean", "standard_deviation", "maximum", "root_mean_square")
T0_NS = (int(time.time()) // 86_400 - 3) * 86_400 * 1_000_000_000


def make_points(kind: str, n: int, devices: int, signals: int, seed: int) -> list[Point]:
    """``n`` points of one kind, round-robin over devices, 60 s apart per device."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d = i % devices
        tags = {
            "client": "client-bench",
            "site": f"site-{d % 5}",
            "gateway": f"gw-{d % 10:02d}",
            "device": f"dev-{d:04d}",
        }
        ts = T0_NS + (i // devices) * 60_000_000_000 + seed
        if kind == "features":
            fields: dict[str, float | int | bool | str] = {
                f"sig{s:02d}__{f}": rng.uniform(0, 100) for s in range(signals) for f in FEATURES
            }
            fields.update(n_samples=60, n_missing=rng.randint(0, 3), start=ts / 1e9 - 300)
            out.append(Point("features", ts, {**tags, "group": "fast"}, fields))
        elif kind == "score":
            s = rng.random()
            fields = {"score": s, "threshold": 0.8, "anomalous": s > 0.8, "model_version": 3}
            out.append(Point("score", ts, tags, fields))
        else:
            fields = {
                "energy": 1000 + i * 0.01,
                "runtime_hours": 5000 + i / 60,
                "start_count": 100 + i // 50,
            }
            out.append(Point("energy", ts, tags, fields))
    return out


def n_fields(points: Sequence[Point]) -> int:
    return sum(len(p.fields) for p in points)


def rate(label: str, points: Sequence[Point], seconds: float) -> dict[str, Any]:
    fields = n_fields(points)
    result = {
        "points": len(points),
        "fields": fields,
        "seconds": round(seconds, 3),
        "points_per_s": round(len(points) / seconds),
        "fields_per_s": round(fields / seconds),
    }
    print(
        f"{label}: {len(points):,} points, {fields:,} fields in {seconds:.2f} s: "
        f"{result['points_per_s']:,} points/s, {result['fields_per_s']:,} fields/s"
    )
    return result


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare_serialisers(points: Sequence[Point]) -> dict[str, Any]:
    """The same lines from each of influxdb-client's ways to make them."""
    from influxdb_client.client.write import point as lp  # type: ignore[import-untyped]

    def from_dict(p: Point) -> str:
        doc = {"measurement": p.measurement, "tags": p.tags, "fields": p.fields, "time": p.ts_ns}
        return str(lp.Point.from_dict(doc).to_line_protocol())

    def private(p: Point) -> str:
        tags = lp._append_tags(p.tags)
        return f"{p.measurement}{tags}{lp._append_fields(p.fields, {})} {p.ts_ns}"

    def builder(p: Point) -> str:
        return make_line(p.measurement, p.tags, p.fields, p.ts_ns)

    ways: dict[str, Callable[[Point], str]] = {
        "line_protocol (used: memoised keys)": line_protocol,
        "Point builder (make_line)": builder,
        "Point.from_dict": from_dict,
        "private _append_* helpers": private,
    }
    out = {}
    for name, fn in ways.items():
        assert fn(points[0]) == line_protocol(points[0]), name
        best = min(timed(lambda f=fn: [f(p) for p in points]) for _ in range(3))
        out[name] = rate(f"serialiser {name}", points, best)
    return out


def small_writes(url: str, points: Sequence[Point], size: int, calls: int = 500) -> dict[str, Any]:
    """``InfluxStore.write`` of ``size`` points per call: CPU and wall ms per write."""
    store = InfluxStore(url, "bench_small")
    groups = [points[i : i + size] for i in range(0, len(points) - size + 1, size)]
    groups = (groups * (calls // max(len(groups), 1) + 1))[: calls + 50]
    try:
        for group in groups[:50]:  # connection, schema
            store.write(group)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        for group in groups[50:]:
            store.write(group)
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    finally:
        store.close()
    out = {"points_per_write": size, "writes": calls}
    out |= {"cpu_ms_per_write": round(cpu / calls * 1000, 3)}
    out |= {"wall_ms_per_write": round(wall / calls * 1000, 3)}
    print(
        f"InfluxStore.write of {size} score points: {out['cpu_ms_per_write']:.3f} ms CPU, "
        f"{out['wall_ms_per_write']:.3f} ms wall per write"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features-points", type=int, default=10_000)
    ap.add_argument("--small-points", type=int, default=50_000, help="score and energy points")
    ap.add_argument("--signals", type=int, default=25, help="× 4 features per features point")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--batches", default="1000,5000")
    ap.add_argument("--small-write", type=int, default=100, help="points per small write")
    ap.add_argument("--label", default="", help="a note stored with the figures")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "tests" / "bench" / "results" / "bench_tsdb.json"
    )
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    counts = {"features": args.features_points, "score": args.small_points}
    counts["energy"] = args.small_points
    result: dict[str, Any] = {"label": args.label, "batches": batches, "runs": {}}

    print("== serialisation (line_protocol: influxdb-client's escaping, memoised keys)")
    data = {kind: make_points(kind, n, args.devices, args.signals, 0) for kind, n in counts.items()}
    lines: dict[str, list[str]] = {}
    result["serialise"] = {}
    for kind, points in data.items():
        seconds = timed(
            lambda p=points, k=kind: lines.__setitem__(k, [line_protocol(x) for x in p])
        )
        result["serialise"][kind] = rate(f"serialise {kind}", points, seconds)
    result["line_bytes"] = {k: round(sum(map(len, v)) / len(v)) for k, v in lines.items()}
    result["serialisers"] = compare_serialisers(data["features"][:2000])
    sample = data["features"][:2000]
    seconds = timed(lambda: [Point(p.measurement, p.ts_ns, p.tags, p.fields) for p in sample])
    result["point_validation"] = rate("Point(...) validation, features", sample, seconds)

    with tempfile.TemporaryDirectory(prefix="bench-tsdb-") as tmp:
        server = RestartableInflux(Path(tmp) / "influx")
        server.start()
        result["influxd"] = server.binary
        try:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                for batch in batches:
                    for kind, points in data.items():
                        db = f"bench_raw_{kind}_{batch}"
                        client.post("/query", data={"q": f'CREATE DATABASE "{db}"'})
                        bodies = [
                            "\n".join(lines[kind][i : i + batch]).encode()
                            for i in range(0, len(points), batch)
                        ]

                        def post(bodies: list[bytes] = bodies, db: str = db) -> None:
                            for body in bodies:
                                resp = client.post(
                                    "/write", params={"db": db, "precision": "ns"}, content=body
                                )
                                resp.raise_for_status()

                        seconds = timed(post)
                        key = f"influx_raw_{kind}_batch{batch}"
                        result["runs"][key] = rate(
                            f"influx raw /write {kind}, batch {batch}", points, seconds
                        )
            for batch in batches:
                for kind, points in data.items():
                    store = InfluxStore(
                        server.url, f"bench_store_{kind}_{batch}", batch_points=batch
                    )
                    store.ensure_schema()
                    seconds = timed(lambda s=store, p=points: s.write(p))
                    store.close()
                    result["runs"][f"influx_store_{kind}_batch{batch}"] = rate(
                        f"InfluxStore.write {kind}, batch {batch}", points, seconds
                    )
            result["influx_small_writes"] = small_writes(
                server.url, data["score"], args.small_write
            )
        finally:
            server.stop()

        for batch in batches:
            for kind, points in data.items():
                sqlite = SQLiteStore(Path(tmp) / f"bench-{kind}-{batch}.db")

                def write_all(
                    s: SQLiteStore = sqlite, p: list[Point] = points, n: int = batch
                ) -> None:
                    for i in range(0, len(p), n):
                        s.write(p[i : i + n])

                seconds = timed(write_all)
                sqlite.close()
                result["runs"][f"sqlite_store_{kind}_batch{batch}"] = rate(
                    f"SQLiteStore.write {kind}, batch {batch}", points, seconds
                )

    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
