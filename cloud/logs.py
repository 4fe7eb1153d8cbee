"""Logging of the cloud's processes: the CLI and the ingest workers it starts.

httpx logs every request it sends at INFO (``HTTP Request: POST .../write ... 204``): one
line per time-series write or query, hundreds a second from a busy ingest worker, and a
cost of its own on the write path. Below DEBUG, its loggers are held at WARNING.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PER_REQUEST_LOGGERS: Final = ("httpx", "httpcore")


def configure(level: int) -> None:
    """Log records of ``level`` and above to stderr (unless the root logger has handlers
    already: its host set it up), httpx's per-request lines only at DEBUG."""
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT)
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)


__all__ = ["FORMAT", "configure"]
