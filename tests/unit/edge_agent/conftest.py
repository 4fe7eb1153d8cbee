"""Fixtures for the model tests (the builders live in ``tests/support/models.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from support.models import FEATURES, NOW, Publisher, zscore_onnx


@pytest.fixture
def publisher() -> Publisher:
    return Publisher()


@pytest.fixture
def build_zscore_onnx() -> Callable[..., bytes]:
    return zscore_onnx


@pytest.fixture
def features() -> list[str]:
    return list(FEATURES)


@pytest.fixture
def now() -> datetime:
    return NOW
