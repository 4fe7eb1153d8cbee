"""Children of a test run that dies without teardown do not outlive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]  # tests/

PARENT = """
import subprocess, sys, threading
from support.processes import die_with_parent
def spawn():
    return subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent())
main = spawn()
box = []
t = threading.Thread(target=lambda: box.append(spawn()))
t.start(); t.join()
print(main.pid, box[0].pid, flush=True)
sys.stdin.read()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it waits only for its (new) parent to reap it.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_child_started_from_the_main_thread_dies_with_its_parent() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(HERE)},
    ) as parent:
        assert parent.stdout is not None
        main_child, thread_child = (int(x) for x in parent.stdout.readline().split())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    try:
        deadline = time.monotonic() + 10
        while alive(main_child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(main_child), "the server outlived the killed test process"
        # A child started from a thread that ended would have been signalled at once by
        # the kernel (it tracks the thread): it is started without the request instead.
        assert alive(thread_child)
    finally:
        for pid in (main_child, thread_child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
