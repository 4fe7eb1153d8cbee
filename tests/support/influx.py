"""A private InfluxDB 1.x (``influxd``) that tests can kill with SIGKILL and start again.

    server = RestartableInflux(tmp_path)      # picks a free loopback port, keeps it
    server.start()                            # returns once GET /ping answers 204
    server.kill()                             # SIGKILL: a crash, nothing flushed on purpose
    server.start()                            # same port, same meta/data/wal directories
    server.stop()                             # SIGTERM, then SIGKILL after a timeout

The configuration matches the session fixture ``influxdb`` in ``tests/conftest.py``
(loopback only, reporting and the monitor store off, no HTTP access log). The binary is
``$EDGEWATCH_INFLUXD``, else ``influxd`` on ``PATH``, else ``/usr/bin/influxd``
(Debian's ``influxdb`` package, 1.6).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from support.ports import free_port
from support.processes import die_with_parent

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
INSTALL_HINT = "apt-get install influxdb (or set EDGEWATCH_INFLUXD to the influxd binary)"


def find_influxd() -> str:
    """Path of ``influxd``; :class:`FileNotFoundError` saying how to install it."""
    override = os.environ.get("EDGEWATCH_INFLUXD")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise FileNotFoundError(f"EDGEWATCH_INFLUXD={override} is not an executable file")
    found = shutil.which("influxd")
    if found:
        return found
    if os.access("/usr/bin/influxd", os.X_OK):
        return "/usr/bin/influxd"
    raise FileNotFoundError(f"influxd is not installed: {INSTALL_HINT}")


def influxd_config(
    workdir: Path, http_port: int, rpc_port: int, data: Mapping[str, str] | None = None
) -> str:
    """An ``influxd`` 1.x configuration keeping everything under ``workdir``; ``data``:
    more ``[data]`` settings, as TOML values (e.g. ``{"cache-snapshot-memory-size": '"6m"'}``)."""
    extra = "".join(f"  {k} = {v}\n" for k, v in (data or {}).items())
    return f"""\
reporting-disabled = true
bind-address = "{LOOPBACK}:{rpc_port}"

[meta]
  dir = "{workdir / "meta"}"

[data]
  dir = "{workdir / "data"}"
  wal-dir = "{workdir / "wal"}"
  query-log-enabled = false
{extra}
[http]
  enabled = true
  bind-address = "{LOOPBACK}:{http_port}"
  log-enabled = false

[monitor]
  store-enabled = false
"""


def _ping(port: int) -> int | None:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=0.5)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class RestartableInflux:
    """One ``influxd`` on fixed loopback ports with its data in ``workdir``.

    The ports are chosen once, so clients configured with :attr:`url` reach the server
    again after :meth:`kill` and :meth:`start`. The data directories survive restarts:
    what InfluxDB acknowledged before a SIGKILL is found again (its WAL is fsynced before
    a write is answered).
    """

    def __init__(
        self, workdir: Path, http_port: int | None = None, data: Mapping[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.data = dict(data or {})
        self.binary = find_influxd()
        self.port = http_port or free_port()
        rpc_port = free_port()
        while rpc_port == self.port:
            rpc_port = free_port()
        self.rpc_port = rpc_port
        self.host = LOOPBACK
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = workdir / "influxd.log"
        self.conf_path = workdir / "influxd.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start ``influxd`` and return once ``/ping`` answers 204 on :attr:`port`.

        A port held a moment longer after a kill (or taken by another process) makes
        ``influxd`` exit; it is started again until ``timeout_s`` has passed."""
        if self.running:
            raise RuntimeError(f"influxd is already running on {self.url}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(influxd_config(self.workdir, self.port, self.rpc_port, self.data))
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while True:
            with self.log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [self.binary, "-config", str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    preexec_fn=die_with_parent(),
                )
            self.proc = proc
            while proc.poll() is None and time.monotonic() < deadline:
                if _ping(self.port) == 204:
                    return
                time.sleep(0.05)
            if proc.poll() is None:  # still running but not answering: give up
                self.kill()
                raise TimeoutError(
                    f"influxd did not answer on {self.url} within {timeout_s:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            self.proc = None
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"influxd exited with status {proc.returncode} while starting on "
                    f"{self.url}; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within the timeout."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self.proc = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def __enter__(self) -> RestartableInflux:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
