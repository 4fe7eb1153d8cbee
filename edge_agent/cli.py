"""``edgewatch-agent``: run the gateway agent, check a config, show the running agent's status.

    edgewatch-agent run --config /etc/edgewatch/agent.yaml
    edgewatch-agent check --config agent.yaml      # validate, read each device once, a table
    edgewatch-agent status --config agent.yaml     # buffer, devices, uplink, models

Exit codes: 0 fine, 1 a device could not be read (check) or the agent is not running
(status), 2 a bad config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.config import LoadedConfig, load_config
from edge_agent.errors import ConfigError, EdgeWatchError

PROG = "edgewatch-agent"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EdgeWatch gateway agent: polls appliance controllers over Modbus, scores "
        "them, buffers every record on disk and ships it to the cloud.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more to stderr (-v INFO, -vv DEBUG)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (
        ("run", "run the agent until SIGTERM or Ctrl-C"),
        ("check", "validate the config and read every device once; print a table"),
        ("status", "show the running agent's buffer, devices, uplink and models"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--config", required=True, type=Path, metavar="FILE", help="gateway config (YAML)"
        )
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the raw status JSON")
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if verbosity < 2:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


# -- run ------------------------------------------------------------------------------------
async def _run(loaded: LoadedConfig) -> bool:
    """Run one agent until it stops; True when it stopped to restart on a new config."""
    from edge_agent.agent import Agent

    agent = Agent(loaded)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()
    return agent.reload_requested


def cmd_run(path: Path) -> int:
    from edge_agent.configsync import effective_config

    log = logging.getLogger(__name__)
    while True:
        loaded = effective_config(path)
        log.warning(
            "gateway %s: config_version %d, %d devices on %d buses",
            loaded.config.gateway.id,
            loaded.config.config_version,
            len(loaded.config.devices),
            len(loaded.config.buses),
        )
        if not asyncio.run(_run(loaded)):
            return 0


# -- check ----------------------------------------------------------------------------------
async def _check(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """Read every block of every device once, through the agent's own read path."""
    from edge_agent.planner import decode_block, group_points, plan_reads
    from edge_agent.transport import ModbusLink

    rows: list[dict[str, Any]] = []
    links = {b.id: ModbusLink.for_bus(b) for b in loaded.config.buses}
    try:
        for d in loaded.config.devices:
            profile = loaded.profiles[d.id]
            points = [p for ps in group_points(profile, d.poll_groups).values() for p in ps]
            blocks = plan_reads(profile, points, max_gap=d.max_gap, max_registers=d.max_registers)
            ok = failed = 0
            errors: list[str] = []
            values: dict[str, Any] = {}
            t0 = time.monotonic()
            for block in blocks:
                try:
                    words = await links[d.bus].read(
                        d.unit_id, block.table, block.address, block.count
                    )
                    decoded = decode_block(block, words)
                except EdgeWatchError as exc:
                    failed += 1
                    where = f"{block.table.value} {block.address}..{block.end - 1}"
                    errors.append(f"{where}: {_kind(exc)}: {exc}")
                    continue
                ok += 1
                values.update({name: v.value for name, v in decoded.items()})
            order = {p.name: i for i, p in enumerate(profile.points)}
            first = sorted(values, key=order.__getitem__)[:3]
            rows.append(
                {
                    "device": d.id,
                    "bus": d.bus,
                    "unit": d.unit_id,
                    "profile": profile.id,
                    "blocks": len(blocks),
                    "ok": ok,
                    "failed": failed,
                    "ms": round((time.monotonic() - t0) * 1000, 1),
                    "errors": errors,
                    "sample": {k: values[k] for k in first},
                }
            )
    finally:
        for link in links.values():
            await link.close()
    return rows


def _kind(exc: EdgeWatchError) -> str:
    from edge_agent.errors import DeviceTimeout, FrameError, LinkError, ModbusException

    for cls, kind in (
        (DeviceTimeout, "timeout"),
        (ModbusException, "exception"),
        (FrameError, "bad frame"),
        (LinkError, "link down"),
    ):
        if isinstance(exc, cls):
            return kind
    return "error"


def cmd_check(loaded: LoadedConfig) -> int:
    rows = asyncio.run(_check(loaded))
    print(f"config {loaded.source}: valid; gateway {loaded.config.gateway.id}")
    header = (
        f"{'device':<18} {'bus':<14} {'unit':>4} {'profile':<10} {'blocks':>6} {'ok':>3} "
        f"{'failed':>6} {'ms':>8}  sample"
    )
    print(header)
    for r in rows:
        sample = ", ".join(f"{k}={v}" for k, v in r["sample"].items())
        print(
            f"{r['device']:<18} {r['bus']:<14} {r['unit']:>4} {r['profile']:<10} "
            f"{r['blocks']:>6} {r['ok']:>3} {r['failed']:>6} {r['ms']:>8}  {sample}"
        )
        for e in r["errors"][:3]:
            print(f"{'':<18} ! {e}")
    bad = [r["device"] for r in rows if r["failed"]]
    if bad:
        print(f"{len(bad)} of {len(rows)} devices could not be read completely: {', '.join(bad)}")
        return 1
    print(f"all {len(rows)} devices read")
    return 0


# -- status ---------------------------------------------------------------------------------
def cmd_status(loaded: LoadedConfig, as_json: bool) -> int:
    from edge_agent.agent import status_path

    path = status_path(loaded)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{PROG}: no status at {path} ({exc}); is the agent running?", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    age = time.time() - float(data.get("ts", 0))
    buf = data["buffer"]
    up = data["uplink"]
    print(
        f"gateway {data['gateway']}  agent {data['agent_version']}  up {data['uptime_s']:.0f} s"
        f"  (status written {age:.0f} s ago)"
    )
    print(f"cpu {data['cpu_s']} s  max rss {data['max_rss_mb']} MB")
    dropped = sum(buf["dropped"].values())
    print(
        f"buffer: {buf['depth']} records, {buf['bytes']} bytes, dropped {dropped} {buf['dropped']}"
    )
    print(
        f"uplink: {'connected' if up['connected'] else 'NOT connected'}; "
        + ", ".join(f"{k} {v}" for k, v in up.items() if k != "connected")
    )
    models = data["models"] or {}
    print(
        "models: "
        + (", ".join(f"{a} {m['model_id']} v{m['version']}" for a, m in models.items()) or "none")
    )
    print(
        f"{'device':<18} {'state':<12} {'requests':>8} {'ok':>8} {'rtt ms':>7} {'late ms':>7}"
        "  errors"
    )
    for dev, s in data["devices"].items():
        rtt = "-" if s["rtt_ms"] is None else s["rtt_ms"]
        late = "-" if s.get("late_ms") is None else s["late_ms"]
        errs = ", ".join(f"{k} {v}" for k, v in s["errors"].items() if v) or "-"
        print(
            f"{dev:<18} {s['state']:<12} {s['requests']:>8} {s['ok']:>8} {rtt:>7} {late:>7}"
            f"  {errs}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "run":
            return cmd_run(args.config)
        loaded = load_config(args.config)
        if args.command == "check":
            return cmd_check(loaded)
        return cmd_status(loaded, args.json)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
