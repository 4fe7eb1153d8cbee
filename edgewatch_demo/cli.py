"""``edgewatch-demo``: the whole system on one machine, on embedded defaults.

    edgewatch-demo                                 # 14 simulated days in about 2 minutes
    edgewatch-demo --keep-running                  # then leave the dashboard up (Ctrl-C)
    edgewatch-demo --mqtt 127.0.0.1:1883           # agents ship over MQTT to a broker
    edgewatch-demo --influx http://127.0.0.1:8086 --database-url postgresql+psycopg://...

Exit status: 0 done; 1 the demo could not run (the message says why); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent.config import MIN_PERIOD_S
from edgewatch_demo.fleet import DEFAULT_DAYS
from edgewatch_demo.world import POLL_S

MAX_SPEED = POLL_S / MIN_PERIOD_S

PROG = "edgewatch-demo"


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not positive")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the whole EdgeWatch system on one machine: a simulated fleet over "
        "Modbus, one agent per gateway, the cloud (SQLite stores, HTTPS uplink), risk "
        "scoring, work orders to a local service desk, and the month's energy report.",
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR",
                        help="where state, logs, reports and summary.json go (default out/demo;"
                        " its state/ is wiped at the start)")  # fmt: skip
    parser.add_argument("--days", type=_positive, default=DEFAULT_DAYS,
                        help=f"simulated days (default {DEFAULT_DAYS:g}; at least 10 for the "
                        "faults to develop and fail)")  # fmt: skip
    parser.add_argument(
        "--speed",
        type=_positive,
        default=10_000.0,
        help="simulated seconds per second (default 10000)",
    )
    parser.add_argument("--port", type=int, default=8000, help="the API and dashboard port")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the summary, keep the cloud and dashboard up until Ctrl-C",
    )
    parser.add_argument(
        "--mqtt",
        type=_hostport,
        metavar="HOST:PORT",
        help="ship over this MQTT broker (plain TCP; it must accept the "
        "gateways' credentials or anonymous clients) and run an ingest worker",
    )
    parser.add_argument("--influx", metavar="URL",
                        help="store time series in this InfluxDB (v1 HTTP API), database "
                        "edgewatch_demo")  # fmt: skip
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="an empty PostgreSQL database (SQLAlchemy URL) for the registry",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the energy reports")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the terminal too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.days <= 27:
        print(f"{PROG}: --days {args.days:g}: expected 1 to 27", file=sys.stderr)
        return 2
    if args.speed > MAX_SPEED:
        print(
            f"{PROG}: --speed {args.speed:g}: at most {MAX_SPEED:g} (the agents poll every "
            f"{POLL_S:g} simulated seconds, and an agent's shortest period is "
            f"{MIN_PERIOD_S:g} s)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    from cloud.errors import CloudError
    from edgewatch_demo.run import Demo, DemoError, DemoOptions

    options = DemoOptions(
        out=args.out.resolve(),
        days=args.days,
        speed=args.speed,
        port=args.port,
        keep_running=args.keep_running,
        mqtt=args.mqtt,
        influx_url=args.influx,
        database_url=args.database_url,
        report=not args.no_report,
    )
    try:
        Demo(options).run()
    except (DemoError, CloudError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
