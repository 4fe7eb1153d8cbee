"""Child processes for end-to-end tests: the cloud's CLIs run as they run in production,
each with its output in a log file the test can show when something goes wrong."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies, so a test
    run killed without teardown (SIGKILL, an OOM kill) leaves no server or worker behind.

    The kernel signals when the *thread* that started the child ends, so a child started
    from another thread (which may end first) is left without it (None)."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig


class Process:
    """A child process with its output in a log file."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv, self.log, self.env = argv, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=die_with_parent(),
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait(self, timeout: float) -> str:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        text = self.log.read_text(errors="replace")
        assert code == 0, f"{self.argv[:3]} exited with {code}:\n{text[-3000:]}"
        return text

    def tail(self) -> str:
        """The end of the log."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def scrape(port: int) -> str | None:
    """The Prometheus text a process serves on ``port``, None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return str(r.read().decode())
    except OSError:
        return None


def ingest_worker(env: dict[str, str], log: Path, metrics_port: int, workers: int = 1) -> Process:
    """``edgewatch-cloud ingest`` with ``env``'s settings, once it serves its metrics (it
    connects and subscribes right after). With ``workers`` > 1, its worker processes serve
    theirs on ``metrics_port`` + their index."""
    argv = [sys.executable, "-m", "cloud.cli", "ingest", "--workers", str(workers),
            "--metrics-port", str(metrics_port)]  # fmt: skip
    proc = Process(argv, log, env)
    proc.start()
    deadline = time.monotonic() + 20
    while scrape(metrics_port) is None:
        assert proc.proc is not None and proc.proc.poll() is None, proc.tail()
        assert time.monotonic() < deadline, f"ingest did not start:\n{proc.tail()}"
        time.sleep(0.1)
    time.sleep(0.5)  # connected and subscribed shortly after the metrics port is up
    return proc
