"""Benchmark: backlog drain after an outage, with live records flowing during the drain.

Buffers ``--backlog`` records while the uplink is down (the "outage"), then starts the
MQTT uplink and the forwarder against a private Mosquitto and an acking stand-in ingest
(``tests/support/cloud_stub.py``, its own process). Measures the drain rate
(records acked per second until the buffer holds no backlog) and the latency of live
records appended during the drain (append to stored-at-the-ingest: p50/p99/max; the goal
is < 2 s). Prints the figures and writes ``tests/bench/results/backlog_drain.json``.
Not a pass/fail test.

    .venv/bin/python tests/bench/bench_backlog_drain.py --backlog 100000 --live-rate 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from edge_agent.config import BatchSettings, BufferSettings, MqttSettings
from edge_agent.forwarder import Forwarder
from edge_agent.store import RecordStore
from edge_agent.uplink.mqtt import MqttUplink

RESULTS = Path(__file__).parent / "results" / "backlog_drain.json"
GW = "gw-bench-1"


def _load_stub() -> ModuleType:
    """The stand-in cloud (``tests/support/cloud_stub.py``), as the tests import it."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from support import cloud_stub  # type: ignore[import-not-found]

    return cloud_stub  # type: ignore[no-any-return]


def body(i: int) -> dict[str, object]:
    """A features record of realistic size (about 20 features)."""
    return {f"f{k}": round(i * 0.001 + k * 1.37, 4) for k in range(20)} | {"window_s": 60}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--live-rate", type=float, default=50.0, help="live records/s")
    parser.add_argument("--max-records", type=int, default=500)
    parser.add_argument("--compression", choices=["zlib", "none"], default="zlib")
    args = parser.parse_args()
    stub = _load_stub()

    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-") as tmp:
        work = Path(tmp)
        broker = stub.Broker(work)
        broker.start()
        cloud = stub.Cloud(work, "mqtt", "--port", str(broker.port))
        cloud.start()
        store = RecordStore(BufferSettings(path=work / "buffer.sqlite", max_bytes=1 << 30))
        try:
            t = time.perf_counter()
            for start in range(0, args.backlog, 1000):
                n = min(1000, args.backlog - start)
                now = time.time()
                store.append([(now, "features", "cc-1", body(start + j)) for j in range(n)])
            fill_s = time.perf_counter() - t
            backlog_last = store.last_seq()
            print(f"outage: buffered {args.backlog} records in {fill_s:.1f} s")

            settings = BatchSettings(max_records=args.max_records, compression=args.compression)
            uplink = MqttUplink(GW, MqttSettings(host=broker.host, port=broker.port, tls=None))
            forwarder = Forwarder(store, uplink, settings, ack_timeout_s=30.0)
            stop_live = threading.Event()
            live_seqs: list[int] = []

            def live() -> None:
                period = 1.0 / args.live_rate
                next_t = time.monotonic()
                while not stop_live.is_set():
                    live_seqs.extend(store.append([(time.time(), "score", "cc-1", {"s": 0.5})]))
                    forwarder.notify()
                    next_t += period
                    time.sleep(max(0.0, next_t - time.monotonic()))

            uplink.start()
            forwarder.start()
            while not uplink.connected:
                time.sleep(0.01)
            t0 = time.perf_counter()
            live_thread = threading.Thread(target=live, daemon=True)
            live_thread.start()
            while store.count(up_to_seq=backlog_last) > 0:
                time.sleep(0.02)
            drain_s = time.perf_counter() - t0
            time.sleep(2.0)  # live keeps flowing after the drain
            stop_live.set()
            live_thread.join()
            deadline = time.monotonic() + 30
            while store.depth() > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            stats = forwarder.stats()
            forwarder.stop()
            uplink.stop()
        finally:
            cloud.stop()
            broker.stop()
            store.close()

        arrivals = cloud.arrivals()
        first_seen: dict[int, tuple[float, float]] = {}
        for a in arrivals:
            first_seen.setdefault(a.seq, (a.ts, a.arrival))
        live_set = set(live_seqs)
        latencies = [arr - ts for seq, (ts, arr) in first_seen.items() if seq in live_set]
        missing = sorted(set(range(1, store_last(live_seqs, backlog_last) + 1)) - set(first_seen))

    result = {
        "benchmark": "backlog_drain",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "settings": {
            "backlog_records": args.backlog,
            "live_rate_per_s": args.live_rate,
            "max_records_per_batch": args.max_records,
            "compression": args.compression,
            "broker": "mosquitto (private, loopback)",
        },
        "drain_s": round(drain_s, 3),
        "drain_records_per_s": round(args.backlog / drain_s, 1),
        "live_records": len(latencies),
        "live_latency_s": {
            "p50": round(statistics.median(latencies), 4) if latencies else None,
            "p99": round(pct(latencies, 0.99), 4) if latencies else None,
            "max": round(max(latencies), 4) if latencies else None,
        },
        "duplicates_on_wire": len(arrivals) - len(first_seen),
        "missing": len(missing),
        "forwarder": {
            "sent_batches": stats.sent_batches,
            "resent_batches": stats.resent_batches,
            "lanes": stats.lanes,
        },
        "goal": {"drain_records_per_s": 2000, "live_latency_max_s": 2.0},
    }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    if missing:
        sys.exit(f"{len(missing)} records never arrived")


def store_last(live_seqs: list[int], backlog_last: int) -> int:
    return max([backlog_last, *live_seqs])


if __name__ == "__main__":
    main()
