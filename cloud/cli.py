"""``edgewatch-cloud``: run the API, the ingest workers or the risk scorer, migrate the
registry, administer it.

    edgewatch-cloud migrate                       # the SQL registry to the newest schema
    edgewatch-cloud api                           # the REST API (uvicorn, api_host:api_port)
    edgewatch-cloud ingest --workers 4            # MQTT ingest workers
    edgewatch-cloud scorer --partition 0/2        # risk scorer for half the sites' shards
    edgewatch-cloud deliver --workers 4           # work-order changes to the service desks
    edgewatch-cloud reports                       # each client's monthly energy report
    edgewatch-cloud report --client "Jumeirah Hotels" --month 2026-10 --out reports/2026-10
    edgewatch-cloud backup --out backups/2026-11-24        # the registry and the time series
    edgewatch-cloud restore --from backups/2026-11-24      # into an empty registry and store
    edgewatch-cloud admin create-client "Jumeirah Hotels"
    edgewatch-cloud admin create-site --client "Jumeirah Hotels" --name Marina --kind hotel
    edgewatch-cloud admin create-user --email fm@example.com --role facility_manager \\
        --client "Jumeirah Hotels" --password-stdin < password.txt
    edgewatch-cloud admin create-gateway --site SITE_ID gw-dxb-1
    edgewatch-cloud admin create-device --gateway gw-dxb-1 --name cc-dxb-01 --asset-type compressor
    edgewatch-cloud admin gateway-credentials gw-dxb-1          # rotate; prints the secret once
    edgewatch-cloud admin revoke-credential gw-dxb-1 CREDENTIAL_ID
    edgewatch-cloud admin mosquitto-files --password-file /etc/mosquitto/edgewatch.passwd \\
        --acl-file /etc/mosquitto/edgewatch.acl --ingest-password-stdin < ingest.pw
    SN_TOKEN=... edgewatch-cloud admin create-desk --client "Jumeirah Hotels" --kind servicenow \\
        --url https://jumeirah.service-now.com --username edgewatch --token-env SN_TOKEN \\
        --option assignment_group=facilities          # prints the signing secret once
    edgewatch-cloud admin create-depot --name "Dubai depot" --lat 25.2 --lon 55.3
    edgewatch-cloud admin create-technician --name "Omar Saleh" --skills refrigeration,f-gas \\
        --depot "Dubai depot" --lat 25.1 --lon 55.2 --email omar@example.com
    edgewatch-cloud admin create-part --number RFG-R410A-5KG --name "R410A 5 kg" --unit-cost 120
    edgewatch-cloud admin stock --depot "Dubai depot" --part RFG-R410A-5KG --on-hand 4

Settings come from ``EDGEWATCH_CLOUD_*`` variables and ``--env-file``. Admin commands act
as the operator (an admin) and print the object they made as one JSON line; secrets are
printed once, on stdout only, and never logged; passwords are read from stdin, never from
the command line (it would end up in the shell history and ``ps``); a desk's API token is
read from the environment variable ``--token-env`` names, for the same reason.

Exit codes: 0 fine, 1 the registry refused (not found, conflict, unreachable, not
migrated) or a backup or restore failed, 2 a bad setting, value or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import logs
from cloud.auth.principal import Principal
from cloud.errors import CloudError, ConfigError, InvalidInput, NotFound
from cloud.registry.models import SHARDS, Client, Criticality, Role, SiteKind
from cloud.settings import Settings, load_settings

if TYPE_CHECKING:
    from cloud.risk.scorer import PassStats

PROG = "edgewatch-cloud"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EdgeWatch cloud: REST API, MQTT ingest workers, risk scorer, registry "
        "administration.",
    )
    parser.add_argument(
        "--env-file", type=Path, metavar="FILE", help="read EDGEWATCH_CLOUD_* settings from FILE"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more to stderr (-v INFO, -vv DEBUG)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    api = sub.add_parser("api", help="serve the REST API", description="serve the REST API")
    api.add_argument("--host", help="listen address (default: settings api_host)")
    api.add_argument("--port", type=int, help="listen port (default: settings api_port)")

    mig = sub.add_parser(
        "migrate", help="migrate the SQL registry", description="migrate the SQL registry"
    )
    mig.add_argument("--revision", default="head", help="target revision (default: head)")

    ing = sub.add_parser("ingest", help="run MQTT ingest workers", description="ingest workers")
    ing.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ing.add_argument(
        "--metrics-port", type=int, help="serve each worker's metrics on PORT + worker index"
    )

    sco = sub.add_parser(
        "scorer",
        help="run the risk scorer",
        description="score every device of a partition of the sites every scorer_interval_s, "
        "and anomaly and alarm requests as they come; open and raise work orders",
    )
    sco.add_argument(
        "--partition",
        default="0/1",
        metavar="I/N",
        help="take the sites with shard %% N == I (default 0/1: all); run N scorers, I = 0..N-1",
    )
    sco.add_argument(
        "--once",
        action="store_true",
        help="one scheduled pass and one request pass, print a summary line, exit",
    )

    dlv = sub.add_parser(
        "deliver",
        help="run the service-desk delivery workers",
        description="send the outbox's work-order changes to the clients' service desks "
        "(retried for delivery_max_age_h; any number of these processes may run)",
    )
    dlv.add_argument("--workers", type=int, default=1, help="worker threads (default 1)")
    dlv.add_argument(
        "--once", action="store_true", help="deliver what is due now, print a summary, exit"
    )

    rep = sub.add_parser(
        "report",
        help="make one client's energy report of a month now",
        description="make a client's energy-efficiency report of a month, store it in the "
        "registry and write report.html, report.pdf, report.json and csv/*.csv into --out",
    )
    rep.add_argument("--client", required=True, help="client id or exact name")
    rep.add_argument("--month", required=True, metavar="YYYY-MM", help="e.g. 2026-10")
    rep.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write to")
    rep.add_argument(
        "--no-baseline", action="store_true", help="skip the weather-normalised baseline"
    )

    reps = sub.add_parser(
        "reports",
        help="run the monthly report schedule",
        description="make each client's report of the month that ended (at all its sites, "
        "report_delay_h ago), once; retry failed ones (report_retry_s, doubling)",
    )
    reps.add_argument(
        "--once",
        action="store_true",
        help="one pass, print a summary line, exit (1 when a report failed)",
    )

    bak = sub.add_parser(
        "backup",
        help="back up the SQL registry and the time series into a folder",
        description="write every table of the registry (one consistent snapshot), its schema "
        "revision and every point of the time-series store into a new folder: gzip'd JSON "
        "lines, a manifest with counts and sha256 of every file; backend-neutral (a SQLite "
        "backup restores into PostgreSQL + InfluxDB). Progress on stderr",
    )
    bak.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="a new (or empty) folder"
    )

    res = sub.add_parser(
        "restore",
        help="restore a backup into an empty registry and time-series store",
        description="check every file of the backup, migrate the registry to the backup's "
        "revision, insert the rows and write the points (the SQL rows are committed only "
        "when everything was written and counted), then migrate to this version's head. "
        "Progress on stderr",
    )
    res.add_argument(
        "--from", dest="source", required=True, type=Path, metavar="DIR", help="the backup"
    )
    res.add_argument(
        "--force",
        action="store_true",
        help="restore into targets that hold data: drop every table of the registry first "
        "(its data is lost) and write the points over the store's",
    )
    res.add_argument(
        "--check", action="store_true", help="only check the backup's files, restore nothing"
    )

    admin = sub.add_parser("admin", help="administer the registry", description="registry admin")
    asub = admin.add_subparsers(dest="admin_command", metavar="ADMIN_COMMAND", required=True)

    p = asub.add_parser("create-client", help="create a client (tenant)")
    p.add_argument("name")

    p = asub.add_parser("create-site", help="create a site of a client")
    p.add_argument("--client", required=True, help="client id or exact name")
    p.add_argument("--name", required=True)
    p.add_argument("--kind", required=True, choices=[k.value for k in SiteKind])
    p.add_argument("--floor-area", type=float, help="m²")
    p.add_argument("--lat", type=float)
    p.add_argument("--lon", type=float)
    p.add_argument("--address")
    p.add_argument("--timezone", default="UTC", help="IANA name, e.g. Asia/Dubai")
    p.add_argument(
        "--tariff-json",
        help='e.g. \'{"kind": "flat", "currency": "AED", "price_per_kwh": 0.38}\' (or kind tou)',
    )

    p = asub.add_parser("create-user", help="create a user")
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--client", help="client id or exact name (facility managers)")
    p.add_argument("--name")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )

    p = asub.add_parser("create-gateway", help="register a gateway at a site")
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--name")
    p.add_argument("gateway_id", metavar="GATEWAY_ID")

    p = asub.add_parser("create-device", help="register a device on a gateway")
    p.add_argument("--gateway", required=True, help="gateway id")
    p.add_argument("--name", required=True, help="the device's id in the gateway config")
    p.add_argument("--asset-type", required=True, help="e.g. compressor, fan")
    p.add_argument("--profile")
    p.add_argument("--make")
    p.add_argument("--model")
    p.add_argument("--serial")
    p.add_argument("--install-date", type=date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument("--warranty-end", type=date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument(
        "--criticality", default=Criticality.MEDIUM.value, choices=[c.value for c in Criticality]
    )
    p.add_argument("--location", help='where in the building, e.g. "roof, plant room 2"')
    p.add_argument(
        "--occupant-flag",
        action="append",
        default=[],
        dest="occupant_flags",
        help="e.g. vulnerable_occupant (repeat for several)",
    )

    p = asub.add_parser(
        "gateway-credentials",
        help="issue (rotate) a gateway credential; prints the secret once",
    )
    p.add_argument("gateway_id", metavar="GATEWAY_ID")
    p.add_argument(
        "--grace-s", type=int, help="older credentials stay valid this long (default: settings)"
    )

    p = asub.add_parser("revoke-credential", help="revoke a gateway credential at once")
    p.add_argument("gateway_id", metavar="GATEWAY_ID")
    p.add_argument("credential_id", metavar="CREDENTIAL_ID")

    p = asub.add_parser(
        "mosquitto-files", help="write Mosquitto's password_file and acl_file from the registry"
    )
    p.add_argument("--password-file", required=True, type=Path)
    p.add_argument("--acl-file", required=True, type=Path)
    p.add_argument(
        "--ingest-user", help="the ingest workers' broker username (default: settings or _ingest)"
    )
    p.add_argument(
        "--ingest-password-stdin",
        action="store_true",
        help="read the ingest account's password from stdin (default: settings mqtt_password)",
    )
    p.add_argument("--no-ingest", action="store_true", help="no ingest account in the files")

    p = asub.add_parser(
        "create-desk", help="connect a client's service desk; prints its signing secret once"
    )
    p.add_argument("--client", required=True, help="client id or exact name")
    p.add_argument("--kind", required=True, choices=["webhook", "servicenow", "jira", "zendesk"])
    p.add_argument("--url", required=True, help="the desk's base URL (webhook: the endpoint)")
    p.add_argument("--username", default="", help="ServiceNow user, Jira or Zendesk email")
    p.add_argument(
        "--token-env",
        metavar="VAR",
        help="the environment variable that holds the desk's password or API token",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        dest="options",
        metavar="KEY=VALUE",
        help="e.g. assignment_group=facilities, service_desk_id=4 (repeat for several)",
    )

    p = asub.add_parser("create-depot", help="create a parts depot")
    p.add_argument("--name", required=True)
    p.add_argument("--lat", required=True, type=float)
    p.add_argument("--lon", required=True, type=float)

    p = asub.add_parser("create-technician", help="create a technician based at a depot")
    p.add_argument("--name", required=True)
    p.add_argument("--skills", required=True, help="comma-separated, e.g. refrigeration,f-gas")
    p.add_argument("--depot", required=True, help="depot id or exact name")
    p.add_argument("--lat", required=True, type=float, help="where their rounds start")
    p.add_argument("--lon", required=True, type=float)
    p.add_argument("--email")

    p = asub.add_parser("create-part", help="create a spare part")
    p.add_argument("--number", required=True, help="the part number, e.g. RFG-R410A-5KG")
    p.add_argument("--name", required=True)
    p.add_argument("--unit-cost", type=float)

    p = asub.add_parser("stock", help="set what a depot holds of a part (a count)")
    p.add_argument("--depot", required=True, help="depot id or exact name")
    p.add_argument("--part", required=True, help="part number")
    p.add_argument("--on-hand", required=True, type=int)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logs.configure(level)


def _settings(env_file: Path | None) -> Settings:
    if env_file is not None and not env_file.is_file():
        raise ConfigError("--env-file", f"{env_file} is not a file")
    return load_settings(env_file)


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=str, sort_keys=False))


def _read_stdin_secret(what: str) -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidInput(what, "stdin gave an empty line")
    return line


# ---- commands -------------------------------------------------------------------------------


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from cloud.app import create_app

    host = args.host or settings.api_host
    port = args.port or settings.api_port
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.db import current_revision, describe, migrate

    migrate(settings, args.revision)
    print(f"registry {describe(settings.database_url)} at revision {current_revision(settings)}")
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.ingest.worker import run

    return run(settings, workers=args.workers, metrics_port=args.metrics_port)


def _partition(value: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)`` with ``0 <= I < N <= SHARDS``."""
    match = re.fullmatch(r"(\d{1,6})/(\d{1,6})", value.strip())
    if match is not None:
        i, n = int(match.group(1)), int(match.group(2))
        if 0 <= i < n <= SHARDS:
            return i, n
    raise InvalidInput(
        "--partition", f"{value!r}: expected I/N with 0 <= I < N <= {SHARDS}, e.g. 0/4"
    )


def cmd_scorer(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.db import create_engine_from_settings, make_sessionmaker
    from cloud.risk.scorer import RiskScorer, config_from, order_policy
    from cloud.tsdb import open_store
    from models.errors import ModelsError
    from models.runtime import RiskRuntime

    partition, partitions = _partition(args.partition)
    _require_migrated(settings)
    try:
        runtime = RiskRuntime.load(settings.models_dir)
    except ModelsError as exc:
        raise ConfigError("EDGEWATCH_CLOUD_MODELS_DIR", str(exc)) from None
    orders = order_policy(settings)
    engine = create_engine_from_settings(settings)
    store = open_store(settings)
    try:
        scorer = RiskScorer(
            make_sessionmaker(engine),
            store,
            runtime,
            orders,
            config_from(settings, partition, partitions),
        )
        label = f"scorer {partition}/{partitions}"
        if args.once:
            scheduled = scorer.scheduled_pass()
            requests = scorer.request_pass()
            print(
                f"{label}: scheduled pass {_stats(scheduled)}; request pass {_stats(requests)}; "
                f"{scheduled.seconds + requests.seconds:.2f} s"
            )
            return 0
        stop = _stop_on_signals()
        types = ", ".join(runtime.asset_types)
        log.info("%s: scoring %s every %.0f s", label, types, settings.scorer_interval_s)
        scorer.run(stop)
        log.info("%s: stopped", label)
        return 0
    finally:
        store.close()
        engine.dispose()


def cmd_deliver(settings: Settings, args: argparse.Namespace) -> int:
    import os
    import socket
    from datetime import timedelta

    from cloud.db import create_engine_from_settings, make_sessionmaker
    from cloud.delivery.worker import DeliveryWorker, pending

    if not 1 <= args.workers <= 64:
        raise InvalidInput("--workers", f"{args.workers}: expected 1 to 64")
    _require_migrated(settings)
    engine = create_engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    host = f"{socket.gethostname()}:{os.getpid()}"
    workers = [
        DeliveryWorker(
            sessions,
            name=f"{host}:{i}",
            max_age=timedelta(hours=settings.delivery_max_age_h),
            lease_s=settings.delivery_lease_s,
            timeout_s=settings.delivery_timeout_s,
        )
        for i in range(args.workers)
    ]
    try:
        if args.once:
            tried = 0
            while (n := workers[0].run_once()) > 0:
                tried += n
            with sessions() as session:
                left = pending(session)
            print(f"deliver: {tried} messages tried, {left} pending")
            return 0
        stop = _stop_on_signals()
        threads = [
            threading.Thread(target=w.run, args=(stop, settings.delivery_idle_s), name=w.name)
            for w in workers
        ]
        for t in threads:
            t.start()
        log.info("deliver: %d workers", len(workers))
        for t in threads:
            t.join()
        return 0
    finally:
        for w in workers:
            w.close()
        engine.dispose()


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.db import create_engine_from_settings, make_sessionmaker
    from cloud.reports.collect import Options
    from cloud.reports.render import write_csv_dir
    from cloud.reports.service import generate_now
    from cloud.tsdb import open_store

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise InvalidInput("--out", f"{out} exists and is not a folder")
    _require_migrated(settings)
    options = Options.from_settings(settings, baseline=False if args.no_baseline else None)
    engine = create_engine_from_settings(settings)
    store = open_store(settings)
    try:
        result = generate_now(make_sessionmaker(engine), store, args.client, args.month, options)
    finally:
        store.close()
        engine.dispose()
    if result.exception is not None:
        raise result.exception
    if result.content is None or result.outputs is None:  # pragma: no cover - failed above
        raise CloudError(f"report {result.report_id} failed: {result.error}")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in (
        ("report.html", result.outputs.html),
        ("report.pdf", result.outputs.pdf),
        ("report.json", result.outputs.json),
    ):
        (out / name).write_bytes(data)
        files.append(out / name)
    files += write_csv_dir(result.content, out / "csv")
    print(
        f"report {result.report_id}: {result.content.client_name}, {result.content.month}; "
        f"{len(files)} files in {out}"
    )
    for path in files:
        print(f"  {path}")
    return 0


def cmd_reports(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from cloud.db import create_engine_from_settings, make_sessionmaker
    from cloud.energy.baseline import warm_up
    from cloud.reports.collect import Options
    from cloud.reports.service import ReportWorker
    from cloud.tsdb import open_store

    _require_migrated(settings)
    options = Options.from_settings(settings)
    engine = create_engine_from_settings(settings)
    store = open_store(settings)
    try:
        worker = ReportWorker(
            make_sessionmaker(engine),
            store,
            options,
            delay=timedelta(hours=settings.report_delay_h),
            retry_s=settings.report_retry_s,
            poll_s=settings.report_poll_s,
        )
        if args.once:
            stats = worker.run_once()
            print(
                f"reports: {stats.clients} clients, {stats.generated} generated, "
                f"{stats.failed} failed, {stats.waiting} left as they are"
            )
            for error in stats.errors:
                print(f"  failed: {error}")
            return 1 if stats.failed else 0
        if options.baseline:
            warm_up()  # eemeter's first fit compiles (numba): pay it at start-up
        stop = _stop_on_signals()
        log.info("reports: a pass every %.0f s", settings.report_poll_s)
        worker.run(stop)
        log.info("reports: stopped")
        return 0
    finally:
        store.close()
        engine.dispose()


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.backup import backup

    result = backup(settings, args.out, progress=_progress)
    m = result.manifest
    print(
        f"backup of revision {m.revision} in {result.path}: {len(m.tables)} tables, "
        f"{result.rows:,} rows ({m.source['sql']['dialect']}), {result.points:,} points "
        f"({m.source['timeseries']['backend']}); {result.bytes:,} bytes in {result.seconds:.1f} s"
    )
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.backup import check_revision, restore, verify
    from cloud.db import describe

    if args.check:
        m = verify(args.source)
        check_revision(m)
        print(
            f"{args.source}: a complete backup of revision {m.revision} made {m.created_at}: "
            f"{len(m.tables)} tables, {sum(t.rows for t in m.tables):,} rows, "
            f"{sum(s.points for s in m.series):,} points; all {len(m.files())} files match"
        )
        return 0
    r = restore(settings, args.source, force=args.force, progress=_progress)
    print(
        f"restored {args.source} (revision {r.manifest.revision}) into "
        f"{describe(settings.database_url)} and the {settings.tsdb} store: "
        f"{len(r.rows)} tables, {sum(r.rows.values()):,} rows, "
        f"{sum(r.points.values()):,} points in {r.seconds:.1f} s (checking {r.verify_seconds:.1f}"
        f" s, rows {r.sql_seconds:.1f} s, points {r.series_seconds:.1f} s)"
    )
    if r.dropped:
        print(f"  dropped first (--force): {', '.join(r.dropped)}")
    if r.sequences:
        print(f"  sequences moved past the restored ids: {', '.join(r.sequences)}")
    if r.migrated_to:
        print(f"  migrated from revision {r.manifest.revision} to {r.migrated_to}")
    return 0


def _stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set."""
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _stats(s: PassStats) -> str:
    orders = ", ".join(f"{k} {v}" for k, v in sorted(s.triggers.items())) or "none"
    return (
        f"{s.devices} devices, {s.scored} scored, {s.learning} learning, "
        f"{s.no_data} without data, {s.failed} failed, orders: {orders}"
    )


def _client_id(session: Session, ref: str) -> str:
    """A client id from an id or an exact name."""
    if session.get(Client, ref) is not None:
        return ref
    found = session.scalars(select(Client.id).where(Client.name == ref)).all()
    if len(found) == 1:
        return found[0]
    raise NotFound(f"no client with id or name {ref!r}")


def _require_migrated(settings: Settings) -> None:
    from cloud.db import current_revision, head_revision

    current, head = current_revision(settings), head_revision()
    if current != head:
        raise _NotMigrated(
            f"the registry is at revision {current}, this version needs {head}: "
            f"run `{PROG} migrate` first"
        )


def _token_from_env(var: str | None) -> str:
    if var is None:
        return ""
    value = os.environ.get(var, "")
    if not value:
        raise InvalidInput("--token-env", f"the environment variable {var} is not set or empty")
    return value


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.auth.mosquitto import DEFAULT_INGEST_USERNAME, ServiceAccount
    from cloud.db import create_engine_from_settings, make_sessionmaker, session_scope
    from cloud.registry import services
    from cloud.workorders import admin

    _require_migrated(settings)
    system = Principal.system()
    engine = create_engine_from_settings(settings)
    command = args.admin_command
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            if command == "create-client":
                client = services.create_client(session, system, name=args.name)
                _print({"id": client.id, "name": client.name})
            elif command == "create-site":
                tariff = None
                if args.tariff_json is not None:
                    try:
                        tariff = json.loads(args.tariff_json)
                    except json.JSONDecodeError as exc:
                        raise InvalidInput("--tariff-json", f"not JSON: {exc}") from None
                site = services.create_site(
                    session,
                    system,
                    client_id=_client_id(session, args.client),
                    name=args.name,
                    kind=args.kind,
                    floor_area_m2=args.floor_area,
                    latitude=args.lat,
                    longitude=args.lon,
                    address=args.address,
                    timezone=args.timezone,
                    tariff=tariff,
                )
                _print({"id": site.id, "client_id": site.client_id, "name": site.name})
            elif command == "create-user":
                password = _read_stdin_secret("password") if args.password_stdin else None
                user = services.create_user(
                    session,
                    system,
                    email=args.email,
                    role=args.role,
                    client_id=None if args.client is None else _client_id(session, args.client),
                    name=args.name,
                    password=password,
                )
                _print(
                    {
                        "id": user.id,
                        "email": user.email,
                        "role": user.role.value,
                        "client_id": user.client_id,
                    }
                )
            elif command == "create-gateway":
                gateway = services.create_gateway(
                    session, system, gateway_id=args.gateway_id, site_id=args.site, name=args.name
                )
                _print({"id": gateway.id, "site_id": gateway.site_id})
            elif command == "create-device":
                device = services.create_device(
                    session,
                    system,
                    gateway_id=args.gateway,
                    name=args.name,
                    asset_type=args.asset_type,
                    profile=args.profile,
                    make=args.make,
                    model=args.model,
                    serial=args.serial,
                    install_date=args.install_date,
                    warranty_end=args.warranty_end,
                    criticality=args.criticality,
                    location=args.location,
                    occupant_flags=args.occupant_flags,
                )
                _print({"id": device.id, "gateway_id": device.gateway_id, "name": device.name})
            elif command == "gateway-credentials":
                grace = (
                    settings.gateway_credential_grace_s if args.grace_s is None else args.grace_s
                )
                issued = services.rotate_gateway_credentials(
                    session, system, args.gateway_id, grace_s=grace
                )
                _print(
                    {
                        "gateway_id": args.gateway_id,
                        "credential_id": issued.credential.id,
                        "mqtt_username": issued.username,
                        "secret": issued.secret,
                        "note": "shown once; then regenerate the broker files "
                        f"({PROG} admin mosquitto-files) and reload the broker",
                    }
                )
            elif command == "revoke-credential":
                cred = services.revoke_gateway_credential(
                    session, system, args.gateway_id, args.credential_id
                )
                _print({"credential_id": cred.id, "revoked_at": cred.revoked_at})
            elif command == "mosquitto-files":
                from cloud.auth.mosquitto import mosquitto_files, write_files

                accounts: list[ServiceAccount] = []
                if not args.no_ingest:
                    username = args.ingest_user or settings.mqtt_username or DEFAULT_INGEST_USERNAME
                    if args.ingest_password_stdin:
                        password = _read_stdin_secret("ingest password")
                    elif settings.mqtt_password is not None:
                        password = settings.mqtt_password.get_secret_value()
                    else:
                        raise InvalidInput(
                            "ingest password",
                            "give --ingest-password-stdin, set EDGEWATCH_CLOUD_MQTT_PASSWORD, "
                            "or --no-ingest",
                        )
                    accounts.append(ServiceAccount.ingest(username, password))
                files = mosquitto_files(session, accounts)
                write_files(files, args.password_file, args.acl_file)
                _print(
                    {
                        "password_file": str(args.password_file),
                        "acl_file": str(args.acl_file),
                        "gateway_usernames": files.gateway_usernames,
                        "service_accounts": files.service_accounts,
                        "note": "reload the broker (SIGHUP) to apply",
                    }
                )
            elif command == "create-desk":
                created = admin.create_desk(
                    session,
                    client_id=_client_id(session, args.client),
                    kind=args.kind,
                    url=args.url,
                    username=args.username,
                    token=_token_from_env(args.token_env),
                    options=admin.parse_options(args.options),
                )
                desk = created.desk
                _print(
                    {
                        "id": desk.id,
                        "client_id": desk.client_id,
                        "kind": desk.kind,
                        "url": desk.url,
                        "options": desk.options,
                        "secret": created.secret,
                        "note": "shown once: give it to the desk, which verifies our "
                        "signatures with it and signs its status updates to us",
                    }
                )
            elif command == "create-depot":
                depot = admin.create_depot(
                    session, name=args.name, latitude=args.lat, longitude=args.lon
                )
                _print(
                    {
                        "id": depot.id,
                        "name": depot.name,
                        "latitude": depot.latitude,
                        "longitude": depot.longitude,
                    }
                )
            elif command == "create-technician":
                tech = admin.create_technician(
                    session,
                    name=args.name,
                    skills=[s for s in args.skills.split(",") if s.strip()],
                    depot=args.depot,
                    latitude=args.lat,
                    longitude=args.lon,
                    email=args.email,
                )
                _print(
                    {
                        "id": tech.id,
                        "name": tech.name,
                        "skills": tech.skills,
                        "depot_id": tech.depot_id,
                        "email": tech.email,
                    }
                )
            elif command == "create-part":
                part = admin.create_part(
                    session, number=args.number, name=args.name, unit_cost=args.unit_cost
                )
                _print({"number": part.number, "name": part.name, "unit_cost": part.unit_cost})
            elif command == "stock":
                stock = admin.set_stock(
                    session, depot=args.depot, part_number=args.part, on_hand=args.on_hand
                )
                _print(
                    {
                        "depot_id": stock.depot_id,
                        "part_number": stock.part_number,
                        "on_hand": stock.on_hand,
                        "reserved": stock.reserved,
                    }
                )
            else:  # pragma: no cover - argparse restricts the choices
                raise InvalidInput("command", f"unknown admin command {command}")
    finally:
        engine.dispose()
    return 0


class _NotMigrated(CloudError):
    """The registry's schema is not the one this version needs."""


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "api": cmd_api,
    "migrate": cmd_migrate,
    "ingest": cmd_ingest,
    "scorer": cmd_scorer,
    "deliver": cmd_deliver,
    "report": cmd_report,
    "reports": cmd_reports,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "admin": _admin,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        settings = _settings(args.env_file)
        return COMMANDS[args.command](settings, args)
    except (ConfigError, InvalidInput) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except CloudError as exc:  # not found, conflict, unreachable, not migrated, refused
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
