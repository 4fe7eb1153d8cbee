"""The cloud's logging: httpx's per-request lines only at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from cloud import logs


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    before = {name: logging.getLogger(name).level for name in logs.PER_REQUEST_LOGGERS}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    transport = httpx.MockTransport(lambda _request: httpx.Response(204))
    with httpx.Client(transport=transport) as client:
        client.post("http://influx.invalid:8086/write", content=b"features v=1 1")
    logging.getLogger("cloud.ingest").info("ingest worker connected")
    return [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_a_store_write_is_not_a_log_line_below_debug(
    level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logs.configure(level)
    lines = _request_lines(caplog)
    assert not [line for line in lines if "HTTP Request" in line]
    assert "ingest worker connected" in lines  # the service's own INFO lines are kept


def test_debug_shows_every_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logs.configure(logging.DEBUG)
    lines = _request_lines(caplog)
    assert any("HTTP Request: POST http://influx.invalid:8086/write" in line for line in lines)
