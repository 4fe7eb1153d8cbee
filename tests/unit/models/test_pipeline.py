"""Which windows an asset is standardised against (:func:`models.pipeline.standardised`):
the shipped compressor detector's baseline rules on a made-up asset whose every feature
steps up by three of its typical scales on day 40."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.anomaly import MIN_ASSET_WINDOWS
from models.export import LoadedDetector, load_detectors
from models.pipeline import standardised
from models.runtime import BaselinePolicy

ARTIFACTS = Path(__file__).resolve().parents[3] / "models" / "artifacts"
DAY = 86400.0
STEP_DAY, SHIFT = 40, 3.0


@pytest.fixture(scope="module")
def det() -> LoadedDetector:
    return load_detectors(ARTIFACTS)["compressor"]


@pytest.fixture(scope="module")
def asset(det: LoadedDetector) -> tuple[np.ndarray, np.ndarray]:
    """Hourly windows over 120 days: (t, x)."""
    rng = np.random.default_rng(5)
    t = 1_767_225_600.0 + np.arange(120 * 24) * 3600.0
    assert det.scale_floor is not None
    level = np.where(t >= t[0] + STEP_DAY * DAY, SHIFT, 0.0)[:, None]
    x = det.fleet.center + det.scale_floor * (
        rng.normal(size=(t.size, det.fleet.center.size)) + level
    )
    return t, x


def _median_z(z: np.ndarray, t: np.ndarray, lo_day: float, hi_day: float) -> float:
    rows = (t >= t[0] + lo_day * DAY) & (t < t[0] + hi_day * DAY)
    return float(np.median(z[rows]))


@pytest.mark.parametrize(
    ("how", "restarts_day", "expect"),
    [
        # (days from, to, median z at least / below)
        ("training", None, [(0, 30, None, 0.5), (60, 120, 2.0, None)]),
        ("first", None, [(0, 14, None, 0.5), (60, 120, 2.0, None)]),
        # the lagged span catches up: 14 days' lag and half of a 30-day span after the step
        ("rolling", None, [(20, 40, None, 0.5), (41, 60, 2.0, None), (95, 120, None, 0.5)]),
        # a repair right after the step: its first 14 days become the baseline
        ("deployed", 41, [(41, 55, 2.0, None), (56, 70, None, 0.5), (95, 120, None, 0.5)]),
    ],
)
def test_each_reference_follows_the_asset_as_the_cloud_would(
    det: LoadedDetector,
    asset: tuple[np.ndarray, np.ndarray],
    how: str,
    restarts_day: float | None,
    expect: list[tuple[float, float, float | None, float | None]],
) -> None:
    t, x = asset
    healthy = t < t[0] + 30 * DAY  # labelled healthy training windows
    restarts = [] if restarts_day is None else [t[0] + restarts_day * DAY]
    z = standardised(det, x, t, how, healthy, restarts, BaselinePolicy())
    assert z.shape == x.shape and np.all(np.isfinite(z))
    for lo, hi, at_least, below in expect:
        m = _median_z(z, t, lo, hi)
        if at_least is not None:
            assert m >= at_least, (how, lo, hi, m)
        if below is not None:
            assert abs(m) < below, (how, lo, hi, m)


def test_rolling_ignores_maintenance_and_an_unknown_reference_is_named(
    det: LoadedDetector, asset: tuple[np.ndarray, np.ndarray]
) -> None:
    t, x = asset
    healthy = t < t[0] + 30 * DAY
    restart = [t[0] + 41 * DAY]
    rolling = standardised(det, x, t, "rolling", healthy, restart)
    np.testing.assert_array_equal(rolling, standardised(det, x, t, "rolling", healthy, []))
    assert standardised(det, x[:0], t[:0], "deployed", healthy[:0]).shape == (0, x.shape[1])
    with pytest.raises(ValueError, match="unknown reference 'latest'"):
        standardised(det, x, t, "latest", healthy)


@pytest.mark.parametrize("how", ["rolling", "deployed"])
def test_a_new_asset_is_standardised_on_what_it_has_so_far(
    det: LoadedDetector, asset: tuple[np.ndarray, np.ndarray], how: str
) -> None:
    """As the scorer does for a new device: nothing before it has enough windows of its
    own (learning), then each window against the windows up to it, never a later one."""
    t, x = asset
    healthy = t < t[0] + 30 * DAY
    z = standardised(det, x, t, how, healthy, [])
    learning = MIN_ASSET_WINDOWS - 1
    assert np.all(z[:learning] == 0.0)
    assert np.any(z[learning] != 0.0)
    later = x.copy()
    cut = int(np.searchsorted(t, t[0] + 7 * DAY))
    later[cut:] += 10 * det.scale_floor  # the unit's days after the first week change
    z_later = standardised(det, later, t, how, healthy, [])
    np.testing.assert_array_equal(z_later[:cut], z[:cut])
    assert np.median(z_later[cut]) > 2.0  # the change stands out against the first week


def test_an_asset_whose_first_days_hold_too_few_windows_learns_until_the_span_fills(
    det: LoadedDetector,
) -> None:
    """A window a day: 14 in the first 14 days, fewer than a baseline needs. The scorer
    leaves such a device learning (not scored) until the lagged span holds half of its 30
    days' windows, which the block starting on day 35 does (days 0-21)."""
    rng = np.random.default_rng(9)
    t = 1_767_225_600.0 + np.arange(120) * DAY
    assert det.scale_floor is not None
    x = det.fleet.center + det.scale_floor * rng.normal(size=(t.size, det.fleet.center.size))
    z = standardised(det, x, t, "deployed", t < t[0] + 30 * DAY, [])
    day = (t - t[0]) / DAY
    assert np.all(z[day < 35] == 0.0)
    assert np.all(np.any(z[day >= 35] != 0.0, axis=1))
