"""``edgewatch-sim``: play a fleet of appliance controllers over real Modbus.

Subcommands: ``serve`` (a fleet file over Modbus TCP/RTU at real or accelerated time),
``dataset`` (write a labelled telemetry dataset, no Modbus), ``replay`` (a recorded CSV
served onto a profile's registers). Run ``edgewatch-sim SUBCOMMAND --help`` for each.

Logging goes to stderr and is configured here only (``-v`` INFO, ``-vv`` DEBUG).
Exit codes: 0 done, 1 cannot serve (port taken, no pty), 2 bad arguments or bad files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import ConfigError
from firmware_sim import __version__
from firmware_sim.errors import ServeError
from firmware_sim.modbus.faults import FAULT_SYNTAX, FaultArg, parse_fault_arg
from firmware_sim.replay import MAX_ROWS

if TYPE_CHECKING:
    from firmware_sim.console import LiveReport
    from firmware_sim.modbus.server import SimServer

PROG = "edgewatch-sim"
log = logging.getLogger("firmware_sim.cli")


class UsageError(Exception):
    """A command-line value that argparse could not check on its own."""


FAULT_HELP = f"""\
protocol faults (--fault, repeatable):
  {FAULT_SYNTAX}
    GATEWAY  gateway id from the fleet file (replay: "replay")
    UNIT     unit id, or * for every unit of the gateway
    KIND     exception[:CODE]   answer exception CODE (1, 2, 3, 4, 6; default 4)
             timeout            no answer
             garbage            random bytes instead of the answer
             truncated          the answer cut short
             wrong_unit[:ID]    the answer carries unit ID (default unit+1)
             reboot[:SECONDS]   silent for SECONDS (default 5), then the device
                                restarts with its counters reset; fires once
             offline            no answer, for as long as the simulator runs
    @PROB    apply to each request with probability PROB (0 < PROB <= 1)
    xCOUNT   apply to the next COUNT requests only
  without @PROB or xCOUNT a fault applies to every request.
  examples: gw-1:3:exception:6@0.05   gw-1:*:timeout@0.01   gw-2:1:reboot:30
"""


def _iso(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def _fault(text: str) -> FaultArg:
    try:
        return parse_fault_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mapping(text: str) -> tuple[str, str]:
    col, sep, point = text.partition("=")
    if not sep or not col or not point:
        raise argparse.ArgumentTypeError(f"{text!r} is not CSVCOL=POINT")
    return col, point


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log more to stderr (-v INFO, -vv DEBUG)")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EdgeWatch fleet simulator: compressor and fan controllers, healthy and "
        "failing, over real Modbus TCP and RTU.",
        epilog="Run '%(prog)s SUBCOMMAND --help' for the options and examples of each.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr (-v INFO, -vv DEBUG)")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    serve = sub.add_parser(
        "serve", parents=[common], formatter_class=fmt,
        help="serve a fleet over Modbus TCP/RTU",
        description="Serve every gateway of a fleet file: one Modbus TCP endpoint per tcp "
        "gateway, one pty per rtu gateway. Prints one line per endpoint (gateway, transport, "
        "address, unit ids), then serves until Ctrl-C or SIGTERM.",
        epilog="examples:\n"
        "  edgewatch-sim serve --fleet firmware_sim/fleets/demo.yaml\n"
        "  edgewatch-sim serve --fleet site.yaml --speed 3600 --start 2024-06-01T00:00:00Z\n"
        "  edgewatch-sim serve --fleet site.yaml --fault gw-1:3:timeout@0.05 --duration 60\n\n"
        + FAULT_HELP,
    )
    serve.add_argument("--fleet", required=True, type=Path, metavar="FILE",
                       help="fleet file (YAML)")
    serve.add_argument("--speed", type=_positive, default=1.0,
                       help="simulated seconds per wall second (default 1; 3600 = an hour a "
                       "second)")
    serve.add_argument("--start", type=_iso, metavar="ISO",
                       help="simulated start time (default: the fleet's start)")
    serve.add_argument("--step", type=_positive, default=60.0, metavar="SECONDS",
                       help="simulation step in simulated seconds (default 60)")
    serve.add_argument("--ground-truth", type=Path, metavar="FILE",
                       default=Path("ground_truth.jsonl"),
                       help="where to write fault onsets and failures "
                       "(default ./ground_truth.jsonl)")
    serve.add_argument("--fault", type=_fault, action="append", default=[], metavar="SPEC",
                       help=f"inject a protocol fault, {FAULT_SYNTAX} (see below)")
    serve.add_argument("--refuse-unmapped", action="append", default=[], metavar="DEVICE",
                       help="this device answers exception 02 to reads touching unmapped "
                       "addresses (repeatable)")
    serve.add_argument("--duration", type=_positive, metavar="SECONDS",
                       help="stop after this many wall seconds (scripted runs)")
    serve.add_argument("--days", type=_positive, metavar="N",
                       help="stop when N simulated days have passed, with a summary")
    serve.add_argument("--status-every", type=float, default=10.0, metavar="SECONDS",
                       help="print a status line every SECONDS wall seconds (default 10; 0: "
                       "never); fault onsets, failures and repairs are printed as they happen")
    serve.add_argument("--tick", type=_positive, default=0.2, metavar="SECONDS",
                       help="wall seconds between register updates (default 0.2)")

    dataset = sub.add_parser(
        "dataset", parents=[common], formatter_class=fmt,
        help="write a labelled telemetry dataset (no Modbus)",
        description="Run the fleet's simulation for N days as fast as it goes and write "
        "telemetry and ground truth (fault onsets, failures) to DIR.",
        epilog="examples:\n"
        "  edgewatch-sim dataset --fleet firmware_sim/fleets/demo.yaml --days 30 --out data/demo\n"
        "  edgewatch-sim dataset --fleet big.yaml --days 365 --out /tmp/big --resolution 300",
    )
    dataset.add_argument("--fleet", required=True, type=Path, metavar="FILE",
                         help="fleet file (YAML)")
    dataset.add_argument("--days", required=True, type=_positive, metavar="N",
                         help="simulated days from the fleet's start")
    dataset.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    dataset.add_argument("--resolution", type=_positive, default=60.0, metavar="SECONDS",
                         help="seconds between rows (default 60)")
    dataset.add_argument("--no-progress", action="store_true", help="no progress bar")

    replay = sub.add_parser(
        "replay", parents=[common], formatter_class=fmt,
        help="serve recorded telemetry (CSV) onto a profile's registers",
        description="Serve a CSV of recorded telemetry as one device over Modbus TCP (or RTU "
        "on a pty). Columns named like the profile's points become their registers; the "
        "value at time t is the last row at or before t. The clock starts at the first row.",
        epilog="examples:\n"
        "  edgewatch-sim replay --csv unit7.csv --profile ew-cc100\n"
        "  edgewatch-sim replay --csv log.csv --profile ew-fc200 --port 5021 --speed 60 --loop\n"
        "  edgewatch-sim replay --csv log.csv --profile ew-cc100 --time-column ts \\\n"
        "      --map Psuc=suction_pressure --map Pdis=discharge_pressure --rtu\n\n"
        + FAULT_HELP,
    )
    replay.add_argument("--csv", required=True, type=Path, metavar="FILE",
                        help="recorded telemetry")
    replay.add_argument("--profile", required=True, metavar="ID|FILE",
                        help="shipped profile id (ew-cc100, ew-fc200) or a profile YAML")
    replay.add_argument("--unit-id", type=int, default=1, help="unit id to answer as (default 1)")
    replay.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    replay.add_argument("--port", type=int, default=5020,
                        help="TCP port (default 5020; 0 = any free)")
    replay.add_argument("--rtu", action="store_true",
                        help="serve Modbus RTU on a pty instead of TCP")
    replay.add_argument("--baudrate", type=int, default=19200, help="RTU baud rate (default 19200)")
    replay.add_argument("--byte-timing", action="store_true",
                        help="RTU: pace bytes at the baud rate")
    replay.add_argument("--speed", type=_positive, default=1.0,
                        help="recorded seconds per wall second (default 1)")
    replay.add_argument("--loop", action="store_true", help="start over after the last row")
    replay.add_argument("--max-rows", type=int, default=MAX_ROWS, metavar="N",
                        help=f"refuse a recording longer than N rows (default {MAX_ROWS}: the "
                        "whole recording is held in memory)")
    replay.add_argument("--time-column", default="time",
                        help="name of the time column (default time)")
    replay.add_argument("--time-format", choices=("auto", "iso", "epoch"), default="auto",
                        help="ISO-8601, epoch seconds, or guess per row (default auto)")
    replay.add_argument("--map", type=_mapping, action="append", default=[], metavar="CSVCOL=POINT",
                        help="read point POINT from column CSVCOL (repeatable)")
    replay.add_argument("--fault", type=_fault, action="append", default=[], metavar="SPEC",
                        help=f"inject a protocol fault, {FAULT_SYNTAX}, gateway 'replay'")
    replay.add_argument("--refuse-unmapped", action="store_true",
                        help="answer exception 02 to reads touching unmapped addresses")
    replay.add_argument("--duration", type=_positive, metavar="SECONDS",
                        help="stop after this many wall seconds")
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _apply_faults(server: SimServer, faults: Sequence[FaultArg]) -> None:
    for f in faults:
        if f.gateway not in server.endpoints:
            raise UsageError(
                f"--fault {f.gateway}:...: no gateway {f.gateway!r} "
                f"(gateways: {', '.join(server.endpoints)})"
            )
        try:
            server.faults(f.gateway).add(f.unit_id, f.kind, f.arg, count=f.count,
                                         probability=f.probability)
        except ValueError as exc:
            raise UsageError(f"--fault {f.gateway}:{f.unit_id}:{f.kind.value}: {exc}") from None


async def _serve(
    server: SimServer,
    duration: float | None,
    report: LiveReport | None = None,
    status_every: float = 0.0,
    until: datetime | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    printer = None
    try:
        for ep in server.endpoints.values():
            print(ep.describe(), flush=True)
        if report is not None:
            printer = asyncio.create_task(
                _print_report(server, report, status_every, until, stop)
            )
        if duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=duration)
    finally:
        if printer is not None:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
        await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _print_report(
    server: SimServer,
    report: LiveReport,
    status_every: float,
    until: datetime | None,
    stop: asyncio.Event,
) -> None:
    """Print events as they come and, every ``status_every`` wall seconds, a status line;
    at simulated time ``until``, a last status line, then ``stop``."""
    loop = asyncio.get_running_loop()
    next_status = loop.time()
    device_ids = [u.device_id for ep in server.endpoints.values() for u in ep.config.units]
    while True:
        for line in report.drain():
            print(line, flush=True)
        done = until is not None and server.source.now >= until
        if done or (status_every > 0 and loop.time() >= next_status):
            states = (server.source.signals(d).get("run_state") for d in device_ids)
            print(report.status_line(server.source.now, states), flush=True)
            next_status += status_every
        if done:
            stop.set()
            return
        await asyncio.sleep(0.25)


def cmd_serve(args: argparse.Namespace) -> int:
    from firmware_sim.clock import SimClock
    from firmware_sim.console import LiveReport
    from firmware_sim.fleet import load_fleet, profiles_of
    from firmware_sim.modbus.server import SimServer, endpoint_configs

    fleet = load_fleet(args.fleet)
    profiles = profiles_of(fleet, base_dir=args.fleet.parent, source=str(args.fleet))
    devices = {d.id for d in fleet.devices()}
    unknown = sorted(set(args.refuse_unmapped) - devices)
    if unknown:
        raise UsageError(f"--refuse-unmapped: no device {', '.join(unknown)} in {args.fleet}")
    start = args.start or fleet.start
    if start < fleet.start:
        raise UsageError(f"--start {start.isoformat()} is before the fleet's start "
                         f"{fleet.start.isoformat()}")
    from firmware_sim.engine import FleetSimulation

    report = LiveReport()
    source = FleetSimulation(
        fleet, profiles, step_s=args.step, ground_truth=args.ground_truth,
        on_event=report.on_event,
    )
    configs = endpoint_configs(fleet.gateways(), profiles, refuse_unmapped=args.refuse_unmapped)
    until = start + timedelta(days=args.days) if args.days is not None else None
    server = SimServer(configs, source, SimClock(start, args.speed), tick_s=args.tick,
                       seed=fleet.seed, until=until)
    _apply_faults(server, args.fault)
    asyncio.run(_serve(server, args.duration, report, args.status_every, until))
    print(report.summary(source.now, args.ground_truth), flush=True)
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from firmware_sim.fleet import load_fleet, profiles_of

    fleet = load_fleet(args.fleet)
    profiles = profiles_of(fleet, base_dir=args.fleet.parent, source=str(args.fleet))
    from tqdm import tqdm

    from firmware_sim.dataset import write_dataset

    total = args.days * len(fleet.devices())
    with tqdm(total=total, unit="device-day", disable=args.no_progress, file=sys.stderr,
              dynamic_ncols=True) as bar:

        def progress(device_days: float) -> None:
            bar.update(device_days)

        summary = write_dataset(fleet, profiles, args.out, days=args.days,
                                resolution_s=int(args.resolution), progress=progress)
    print(
        f"dataset: {summary.devices} devices, {args.days:g} days, {summary.rows} rows, "
        f"{summary.failures} failures, {summary.seconds:.1f} s -> {summary.out_dir}",
        flush=True,
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from edge_agent.profiles import resolve_profile
    from firmware_sim.clock import SimClock
    from firmware_sim.modbus.endpoint import EndpointConfig, UnitConfig
    from firmware_sim.modbus.server import SimServer
    from firmware_sim.replay import ReplaySource

    if not 1 <= args.unit_id <= 247:
        raise UsageError(f"--unit-id {args.unit_id} is not within 1..247")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not within 0..65535")
    profile = resolve_profile(args.profile, Path.cwd())
    source = ReplaySource(
        args.csv, profile, device_id="replay", time_column=args.time_column,
        time_format=args.time_format, column_map=dict(args.map), loop=args.loop,
        max_rows=args.max_rows,
    )
    config = EndpointConfig(
        id="replay",
        units=(UnitConfig(args.unit_id, "replay", profile, refuse_unmapped=args.refuse_unmapped),),
        transport="rtu" if args.rtu else "tcp", host=args.host, port=args.port,
        baudrate=args.baudrate, parity="N", byte_timing=args.byte_timing,
    )
    server = SimServer([config], source, SimClock(source.start, args.speed))
    _apply_faults(server, args.fault)
    asyncio.run(_serve(server, args.duration))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(getattr(args, "verbose", 0))
    handler = {"serve": cmd_serve, "dataset": cmd_dataset, "replay": cmd_replay}[args.command]
    try:
        return handler(args)
    except (ConfigError, UsageError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ServeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
