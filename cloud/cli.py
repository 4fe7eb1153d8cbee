"""``edgewatch-cloud``: run the API or the ingest workers, migrate the registry, administer it.

    edgewatch-cloud migrate                       # the SQL registry to the newest schema
    edgewatch-cloud api                           # the REST API (uvicorn, api_host:api_port)
    edgewatch-cloud ingest --workers 4            # MQTT ingest workers
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

Settings come from ``EDGEWATCH_CLOUD_*`` variables and ``--env-file``. Admin commands act
as the operator (an admin) and print the object they made as one JSON line; secrets are
printed once, on stdout only, and never logged; passwords are read from stdin, never from
the command line (it would end up in the shell history and ``ps``).

Exit codes: 0 fine, 1 the registry refused (not found, conflict, unreachable, not
migrated), 2 a bad setting, value or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.auth.principal import Principal
from cloud.errors import CloudError, ConfigError, InvalidInput, NotFound
from cloud.registry.models import Client, Criticality, Role, SiteKind
from cloud.settings import Settings, load_settings

PROG = "edgewatch-cloud"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EdgeWatch cloud: REST API, MQTT ingest workers, registry administration.",
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
    p.add_argument("--tariff-json", help='e.g. \'{"currency": "AED", "energy_per_kwh": 0.38}\'')

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
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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


def _client_id(session: Session, ref: str) -> str:
    """A client id from an id or an exact name."""
    if session.get(Client, ref) is not None:
        return ref
    found = session.scalars(select(Client.id).where(Client.name == ref)).all()
    if len(found) == 1:
        return found[0]
    raise NotFound(f"no client with id or name {ref!r}")


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    from cloud.auth.mosquitto import DEFAULT_INGEST_USERNAME, ServiceAccount
    from cloud.db import (
        create_engine_from_settings,
        current_revision,
        head_revision,
        make_sessionmaker,
        session_scope,
    )
    from cloud.registry import services

    current, head = current_revision(settings), head_revision()
    if current != head:
        raise _NotMigrated(
            f"the registry is at revision {current}, this version needs {head}: "
            f"run `{PROG} migrate` first"
        )
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
