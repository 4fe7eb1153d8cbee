"""A private PostgreSQL cluster that a test may restart and crash at will.

The machine's own PostgreSQL (the one ``make services`` starts and ``postgres_db`` uses)
is never touched: ``initdb`` makes a new cluster in a temporary folder and ``pg_ctl`` runs
it on a free loopback port, with its unix socket in that folder. The binaries are Debian's
(``/usr/lib/postgresql/<newest version>/bin``, as ``make system-deps`` installs them), or
the folder in ``$EDGEWATCH_PG_BINDIR``.

    cluster = PrivateCluster()           # initdb; as the `postgres` user when run as root
    cluster.start()                      # pg_ctl start, returns once it accepts connections
    url = cluster.create_database("x")   # postgresql://postgres:...@127.0.0.1:PORT/x
    cluster.restart("fast")              # pg_ctl restart -m fast
    cluster.restart("immediate")         # pg_ctl stop -m immediate (no checkpoint), start
    cluster.restart("kill9")             # SIGKILL to the postmaster, then start
    cluster.destroy()                    # stop, remove the folder

PostgreSQL refuses to run as root, so as root (the Makefile's ``as_postgres`` does the
same) every ``initdb``/``pg_ctl`` runs through ``runuser -u postgres --`` and the folder
is a fresh ``mkdtemp`` under the system temporary folder, owned by ``postgres`` (pytest's
own temporary folders are private to root). The superuser ``postgres`` gets a random
password; connections over TCP must give it (``scram-sha-256``), none is trusted.

``pg_ctl`` detaches the server from the test process, so a test process that dies without
its teardown (a crash, SIGKILL) would leave it running: a small watchdog process, reading
a pipe from the test process until it closes, stops the server and removes the folder
then, unless :meth:`PrivateCluster.destroy` did already.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

LOOPBACK = "127.0.0.1"
SUPERUSER = "postgres"
INSTALL_HINT = "apt-get install postgresql (or set EDGEWATCH_PG_BINDIR to its bin folder)"
START_TIMEOUT_S = 60
RestartMode = Literal["fast", "immediate", "kill9"]
RESTART_MODES: tuple[RestartMode, ...] = ("fast", "immediate", "kill9")


_WATCHDOG = """
import os, shutil, subprocess, sys
sys.stdin.buffer.read()  # until the test process closes the pipe, or dies
data, root, *stop = sys.argv[1:]
if os.path.isdir(data):
    subprocess.run(stop, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120, check=False)
    shutil.rmtree(root, ignore_errors=True)
"""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; :class:`FileNotFoundError`
    saying how to install them."""
    override = os.environ.get("EDGEWATCH_PG_BINDIR")
    if override:
        if (Path(override) / "initdb").is_file():
            return Path(override)
        raise FileNotFoundError(f"EDGEWATCH_PG_BINDIR={override} holds no initdb")
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if found:
        return found[-1].parent
    raise FileNotFoundError(f"PostgreSQL's initdb is not installed: {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateCluster:
    """One private cluster (see the module docstring). The port is chosen once, so a
    client's URL stays valid across restarts."""

    def __init__(self, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                owner = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise FileNotFoundError(
                    f"running as root, and there is no {SUPERUSER!r} user to run PostgreSQL as: "
                    f"{INSTALL_HINT}"
                ) from None
            self.uid, self.gid = owner.pw_uid, owner.pw_gid
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
        self.root = Path(tempfile.mkdtemp(prefix="edgewatch-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log_path = self.root / "postgres.log"
        self.password = secrets.token_urlsafe(24)
        self.port = port or _free_port()
        self.host = LOOPBACK
        self.restarts = 0
        self.socket_dir.mkdir()
        stop = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        if self.as_root:
            stop = ["runuser", "-u", SUPERUSER, "--", *stop]
        self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.data), str(self.root), *stop],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the tests does not end it before they end
        )
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.as_root:
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, self.uid, self.gid)
        try:
            self._run(
                "initdb",
                "-D", str(self.data),
                "-U", SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                "--locale=C",
                timeout=120,
            )  # fmt: skip
        except BaseException:
            self.destroy()
            raise
        finally:
            pwfile.unlink(missing_ok=True)

    # ---- running the tools ---------------------------------------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 90) -> str:
        argv = [str(self.bindir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        # Output to a file, not a pipe: a server that pg_ctl starts inherits its output and
        # would hold a pipe open for as long as it runs.
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(
                argv,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            out.seek(0)
            text = out.read().decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited with {done.returncode}:\n{text[-3000:]}\n"
                f"server log:\n{self.log_tail()}"
            )
        return text

    def _options(self) -> str:
        # fsync off: the soak kills processes, never the machine, and the page cache
        # survives a killed server (what was written before the kill is found again).
        return (
            f"-c port={self.port} -c listen_addresses={LOOPBACK} "
            f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
            "-c max_connections=200"
        )

    # ---- life cycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A ``postgresql://`` URL of the ``postgres`` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        password = quote(self.password, safe="")
        return f"postgresql://{SUPERUSER}:{password}@{self.host}:{self.port}/{name}"

    def start(self) -> None:
        """``pg_ctl start``; returns once the server accepts connections. A port that a
        killed server's children still hold a moment is waited for."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w",
                    "-t", str(START_TIMEOUT_S), "-o", self._options(), "start",
                )  # fmt: skip
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None

    def restart(self, mode: RestartMode = "fast", down_s: float = 0.0) -> None:
        """``fast``: a clean restart; ``immediate``: stop without a checkpoint (crash
        recovery at start); ``kill9``: SIGKILL to the postmaster, its children left to
        notice, then start. ``immediate`` and ``kill9`` stay down ``down_s`` seconds.
        Returns once the server accepts connections again."""
        self.restarts += 1
        if mode == "fast":
            self._run(
                "pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S),
                "-m", "fast", "-l", str(self.log_path), "-o", self._options(), "restart",
            )  # fmt: skip
            return
        if mode == "immediate":
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        else:
            pid = self.postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid)
        time.sleep(down_s)
        self.start()

    @staticmethod
    def _wait_gone(pid: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.postmaster_pid() is not None and self.data.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop", timeout=60)
        pid = self.postmaster_pid()
        if pid is not None:  # did not stop in time: it is ours, end it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid)

    def destroy(self) -> None:
        """Stop the server and remove the folder (and let the watchdog go)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            assert watchdog.stdin is not None
            watchdog.stdin.close()
            try:
                watchdog.wait(30)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait(5)

    # ---- clients -------------------------------------------------------------------------

    def accepts_connections(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=3) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            return False

    def create_database(self, name: str) -> str:
        """A new database; its ``postgresql://`` URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
