"""Running a whole :class:`~edge_agent.agent.Agent` inside a test."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from edge_agent.agent import Agent


@contextmanager
def running_agent(agent: Agent) -> Iterator[threading.Thread]:
    """Run ``agent`` on its own event loop in a thread; stop it and wait on the way out."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        await agent.run()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="agent", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        while not loops and thread.is_alive():
            time.sleep(0.01)
        if loops:
            loops[0].call_soon_threadsafe(agent.stop)
        thread.join(15)
