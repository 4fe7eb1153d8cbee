"""Shared pytest fixtures: private real servers for the integration tests.

Each session fixture starts its own server on free loopback ports in a temporary
directory and stops it at the end of the session:

- ``mosquitto_broker``: a private ``mosquitto`` (the machine's broker on 1883 is never used);
- ``influxdb``: a private ``influxd`` (InfluxDB 1.x, v1 HTTP API);
- ``postgres_db``: a fresh database on the machine's PostgreSQL, dropped afterwards.

A missing server skips the tests that need it, with the command that installs it; when
``CI=true`` it fails them instead: in CI a missing server is a failure, never a skip.
``make test`` installs and starts everything.

Environment overrides:
  EDGEWATCH_MOSQUITTO, EDGEWATCH_INFLUXD   path of the server binary to run
  EDGEWATCH_TEST_PG_ADMIN_DSN              libpq DSN used to create and drop the test
                                           database (default: the unix socket, as the
                                           current OS user, database ``postgres``)
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from support.ports import free_port
from support.postgres import PostgresUnavailable, fresh_database
from support.processes import die_with_parent

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3
LOG_TAIL_LINES = 25

SERVER_FIXTURES = frozenset({"mosquitto_broker", "influxdb", "postgres_db"})


# ---- results handed to the tests ---------------------------------------------------------


@dataclass(frozen=True)
class MosquittoBroker:
    host: str
    port: int
    log_path: Path


@dataclass(frozen=True)
class InfluxServer:
    url: str
    host: str
    port: int
    log_path: Path


# ---- availability: skip outside CI, fail in CI ---------------------------------------------


def _os_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class _Binary:
    name: str
    env_var: str
    package: str
    fallback_paths: tuple[str, ...]


MOSQUITTO = _Binary("mosquitto", "EDGEWATCH_MOSQUITTO", "mosquitto", ("/usr/sbin/mosquitto",))
INFLUXD = _Binary("influxd", "EDGEWATCH_INFLUXD", "influxdb", ("/usr/bin/influxd",))


def _find_binary(binary: _Binary) -> str:
    """Path of the server binary, or skip/fail with the way to install it."""
    install_hint = f"run `make test` (installs it) or `apt-get install {binary.package}`"
    override = os.environ.get(binary.env_var)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        _unavailable(
            f"{binary.name} not found at {override} (set by {binary.env_var}); "
            f"unset {binary.env_var} or {install_hint}"
        )
    found = shutil.which(binary.name)
    if found:
        return found
    for path in binary.fallback_paths:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    _unavailable(f"{binary.name} is not installed; {install_hint}")


# ---- processes -----------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    """A server process exited or did not become ready in time."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, and kill if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


def start_process(
    argv: list[str],
    *,
    name: str,
    log_path: Path,
    cwd: Path,
    is_ready: Callable[[], bool],
    timeout_s: float = START_TIMEOUT_S,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with output appended to ``log_path``; return once ``is_ready()``."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            preexec_fn=die_with_parent(),
        )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            code = proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"{name} exited with status {code} while starting; "
                    f"log {log_path}:\n{log_tail(log_path)}",
                    exited=True,
                )
            if is_ready():
                return proc
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{name} was not ready after {timeout_s:.0f} s; "
                    f"log {log_path}:\n{log_tail(log_path)}",
                    exited=False,
                )
            time.sleep(0.05)
    except BaseException:
        stop_process(proc)
        raise


def start_with_retries(
    start: Callable[[int], tuple[subprocess.Popen[bytes], Any]], name: str
) -> tuple[subprocess.Popen[bytes], Any]:
    """Call ``start(attempt)``; retry when the process exited early (a port got taken)."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start(attempt)
        except ServerStartError as exc:
            if not exc.exited or attempt == START_ATTEMPTS:
                pytest.fail(f"could not start {name}: {exc}", pytrace=False)
    raise AssertionError("unreachable")


def _accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _log_has(path: Path, *needles: str) -> bool:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return all(needle in text for needle in needles)


def _http_status(host: str, port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(host, port, timeout=0.5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# ---- mosquitto ----------------------------------------------------------------------------


def _mosquitto_config(port: int, log_path: Path) -> str:
    # Run as the current user: as root, mosquitto would otherwise switch to the
    # `mosquitto` user, which cannot write into the private temporary directory.
    return "\n".join(
        [
            f"listener {port} {LOOPBACK}",
            "allow_anonymous true",
            "persistence false",
            f"user {_os_user()}",
            f"log_dest file {log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "",
        ]
    )


@pytest.fixture(scope="session")
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A private Mosquitto broker on a free loopback port, anonymous, no persistence."""
    binary = _find_binary(MOSQUITTO)
    workdir = tmp_path_factory.mktemp("mosquitto")

    def start(attempt: int) -> tuple[subprocess.Popen[bytes], MosquittoBroker]:
        port = free_port()
        log_path = workdir / f"mosquitto-{attempt}.log"
        conf_path = workdir / f"mosquitto-{attempt}.conf"
        conf_path.write_text(_mosquitto_config(port, log_path))
        proc = start_process(
            [binary, "-c", str(conf_path)],
            name="mosquitto",
            log_path=log_path,
            cwd=workdir,
            # The log line proves that this broker, not another process, holds the port.
            is_ready=lambda: (
                _log_has(log_path, "mosquitto version", " running") and _accepts_tcp(LOOPBACK, port)
            ),
        )
        return proc, MosquittoBroker(host=LOOPBACK, port=port, log_path=log_path)

    proc, broker = start_with_retries(start, "mosquitto")
    try:
        yield broker
    finally:
        stop_process(proc)


# ---- influxd ------------------------------------------------------------------------------


def _influxd_config(workdir: Path, http_port: int, rpc_port: int) -> str:
    meta, data, wal = workdir / "meta", workdir / "data", workdir / "wal"
    return f"""\
reporting-disabled = true
bind-address = "{LOOPBACK}:{rpc_port}"

[meta]
  dir = "{meta}"

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "{LOOPBACK}:{http_port}"
  log-enabled = false

[monitor]
  store-enabled = false
"""


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """A private InfluxDB 1.x (``influxd``) with its HTTP API on a free loopback port."""
    binary = _find_binary(INFLUXD)
    workdir = tmp_path_factory.mktemp("influxdb")

    def start(attempt: int) -> tuple[subprocess.Popen[bytes], InfluxServer]:
        http_port = free_port()
        rpc_port = free_port()
        while rpc_port == http_port:
            rpc_port = free_port()
        log_path = workdir / f"influxd-{attempt}.log"
        conf_path = workdir / f"influxd-{attempt}.conf"
        conf_path.write_text(_influxd_config(workdir, http_port, rpc_port))
        proc = start_process(
            [binary, "-config", str(conf_path)],
            name="influxd",
            log_path=log_path,
            cwd=workdir,
            is_ready=lambda: (
                _log_has(log_path, f"addr={LOOPBACK}:{http_port} ")
                and _http_status(LOOPBACK, http_port, "/ping") == 204
            ),
        )
        server = InfluxServer(
            url=f"http://{LOOPBACK}:{http_port}", host=LOOPBACK, port=http_port, log_path=log_path
        )
        return proc, server

    proc, server = start_with_retries(start, "influxd")
    try:
        yield server
    finally:
        stop_process(proc)


# ---- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL; yields its ``postgresql://`` DSN.

    For SQLAlchemy, replace the scheme with ``postgresql+psycopg://``.
    """
    try:
        import psycopg  # noqa: F401 - only whether it is installed
    except ImportError:
        _unavailable("psycopg is not installed; run `make venv` (pip install -e '.[dev,all]')")
    hint = (
        "run `make services` (starts the local PostgreSQL and creates a role for "
        f"{_os_user()!r} that may create databases; `make test` does it too), "
        "or `apt-get install postgresql` first, or point EDGEWATCH_TEST_PG_ADMIN_DSN at a server"
    )
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_database())
        except PostgresUnavailable as exc:
            _unavailable(f"{exc}; {hint}")
        yield url


# ---- markers ------------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a real server carries the ``integration`` marker."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
