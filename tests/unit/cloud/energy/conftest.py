"""Fixtures shared by the energy tests."""

from __future__ import annotations

import pytest

from cloud.energy.baseline import WarmUp, warm_up


@pytest.fixture(scope="session")
def eemeter_warm() -> WarmUp:
    """eemeter imported and its daily model compiled, once per test session (numba
    compiles on the first fit in a process: ~40 s with an empty numba cache, ~3 s with a
    filled one)."""
    return warm_up()
