"""Fixed, wall-clock-aligned windows per device and poll group, staggered per device.

Most tests pin ``offset_s=0`` so that windows fall on the multiples of ``window_s``; the
stagger itself is tested at the end."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import PollGroup
from edge_agent.windows import WindowBuffer, make_buffers, window_offset

FAST = PollGroup(name="fast", period_s=1.0, window_s=60.0)


def test_windows_align_to_multiples_of_window_s() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    assert buf.window_start(1000.5) == 960.0
    assert buf.max_samples == 120
    for i in range(20):
        assert buf.append(1000.5 + i, {"t": float(i)}) is None
    assert buf.open_window == (960.0, 1020.0)
    w = buf.append(1020.0, {"t": 99.0})  # exactly at the end: belongs to the next window
    assert w is not None
    assert (w.device_id, w.group, w.start, w.end, w.duration_s) == ("cc-1", "fast", 960, 1020, 60)
    assert w.n_samples == 20
    assert w.n_missing == 40  # 60 polls expected, 20 arrived
    np.testing.assert_array_equal(w.series["t"], np.arange(20.0))
    np.testing.assert_array_equal(w.ts, 1000.5 + np.arange(20.0))
    assert buf.open_window == (1020.0, 1080.0) and buf.pending == 1


def test_a_full_window_has_nothing_missing() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    for i in range(60):
        buf.append(1020.0 + i, {"t": 1.0})
    w = buf.append(1080.0, {"t": 1.0})
    assert w is not None and (w.n_samples, w.n_missing, w.n_excess) == (60, 0, 0)


def test_points_not_read_are_nan_and_counted() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    buf.append(0.0, {"a": 1.0, "b": 2})
    buf.append(1.0, {"a": None, "b": 3, "run": True})
    buf.append(2.0, {"a": math.nan})
    buf.append(3.0, {"a": 4.0, "run": False})
    w = buf.close_due(60.0)
    assert w is not None
    np.testing.assert_array_equal(w.series["a"], [1.0, np.nan, np.nan, 4.0])
    np.testing.assert_array_equal(w.series["b"], [2.0, 3.0, np.nan, np.nan])
    np.testing.assert_array_equal(w.series["run"], [np.nan, 1.0, np.nan, 0.0])
    assert w.missing_by_point == {"a": 2, "b": 2, "run": 2}
    assert all(s.dtype == np.float64 for s in w.series.values())


def test_late_samples_are_dropped_and_counted() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    buf.append(59.0, {"a": 1.0})
    assert buf.append(60.5, {"a": 2.0}) is not None
    assert buf.append(59.9, {"a": 3.0}) is None  # finished after the boundary
    assert buf.counters.late == 1
    w = buf.close_due(120.0)
    assert w is not None and w.series["a"].tolist() == [2.0]


def test_samples_out_of_order_inside_a_window_are_sorted() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    buf.append(10.0, {"a": 10.0})
    buf.append(5.0, {"a": 5.0})
    buf.append(7.0, {"a": 7.0})
    w = buf.close_due(60.0)
    assert w is not None
    assert w.ts.tolist() == [5.0, 7.0, 10.0] and w.series["a"].tolist() == [5.0, 7.0, 10.0]


def test_excess_samples_are_dropped_and_counted() -> None:
    group = PollGroup(name="g", period_s=1.0, window_s=10.0)
    buf = WindowBuffer("cc-1", group, offset_s=0.0)
    assert buf.max_samples == 20
    for i in range(25):
        buf.append(i * 0.1, {"a": float(i)})
    w = buf.append(10.0, {"a": 0.0})
    assert w is not None
    assert (w.n_samples, w.n_excess, w.n_missing) == (20, 5, 0)
    assert w.series["a"].tolist() == [float(i) for i in range(20)]
    assert buf.counters.excess == 5
    w2 = buf.close_due(20.0)
    assert w2 is not None and w2.n_excess == 0


def test_max_samples_rounds_up() -> None:
    buf = WindowBuffer("x", PollGroup(name="g", period_s=7.0, window_s=30.0), offset_s=0.0)
    assert (buf.expected, buf.max_samples) == (5, 10)


def test_close_due_closes_on_time_when_samples_stop() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    assert buf.close_due(1000.0) is None  # nothing open
    buf.append(1000.0, {"a": 1.0})
    assert buf.close_due(1019.999) is None
    w = buf.close_due(1020.0)
    assert w is not None and w.n_samples == 1
    assert buf.close_due(1100.0) is None  # closed once
    assert buf.open_window is None
    buf.append(1130.0, {"a": 1.0})
    assert buf.open_window == (1080.0, 1140.0)


def test_a_sample_of_a_window_closed_on_time_does_not_reopen_it() -> None:
    """A poll that began before the window's end and finished after close_due closed the
    window: its sample is late (the window was yielded once), never a second window with
    the same end (found by the fault soak, tests/soak, on a loaded machine)."""
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    buf.append(1000.0, {"a": 1.0})
    w = buf.close_due(1020.3)
    assert w is not None and w.end == 1020.0
    assert buf.append(1019.9, {"a": 2.0}) is None
    assert buf.counters.late == 1
    assert buf.close_due(1100.0) is None  # nothing was reopened
    assert buf.append(1020.5, {"a": 3.0}) is None  # the next window goes on as usual
    assert buf.open_window == (1020.0, 1080.0)
    w = buf.close_due(1080.0)
    assert w is not None and (w.end, w.series["a"].tolist()) == (1080.0, [3.0])
    assert buf.counters.windows == 2


def test_a_sample_of_a_sliding_window_closed_on_time_goes_into_the_next() -> None:
    group = PollGroup(name="slide", period_s=1.0, window_s=60.0, hop_s=20.0)
    buf = WindowBuffer("cc-1", group, offset_s=0.0)
    buf.append(905.0, {"a": 1.0})  # then silence: the windows ending 920, 940, 960 hold it
    ends = [w.end for now in (920.5, 940.5, 960.5) if (w := buf.close_due(now)) is not None]
    assert ends == [920.0, 940.0, 960.0] and buf.open_window is None
    assert buf.append(959.0, {"a": 2.0}) is None  # 960 is closed; [920, 980) covers it
    assert buf.open_window == (920.0, 980.0) and buf.counters.late == 0
    assert buf.append(915.0, {"a": 3.0}) is None  # older than any window still to come
    assert buf.counters.late == 1
    w = buf.close_due(980.0)
    assert w is not None and (w.end, w.series["a"].tolist()) == (980.0, [2.0])


def test_a_gap_skips_empty_windows() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    buf.append(1000.0, {"a": 1.0})
    w = buf.append(1300.0, {"a": 2.0})
    assert w is not None and w.start == 960.0
    assert buf.open_window == (1260.0, 1320.0)
    assert buf.counters.windows == 1


def test_a_clock_stepped_back_restarts_the_window() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    buf.append(10_000.0, {"a": 1.0})
    buf.append(10_001.0, {"a": 1.0})
    assert buf.append(5_000.0, {"a": 2.0}) is None
    assert buf.counters.clock_steps == 1 and buf.counters.discarded_samples == 2
    assert buf.open_window == (4980.0, 5040.0)
    w = buf.close_due(5040.0)
    assert w is not None and w.series["a"].tolist() == [2.0]


def test_bad_input_breaks_loudly() -> None:
    buf = WindowBuffer("cc-1", FAST, offset_s=0.0)
    with pytest.raises(TypeError, match="serial"):
        buf.append(1.0, {"serial": "AB12"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="finite"):
        buf.append(math.nan, {"a": 1.0})


def test_one_buffer_per_poll_group() -> None:
    groups = [FAST, PollGroup(name="slow", period_s=60.0, window_s=900.0)]
    buffers = make_buffers("fan-1", groups)
    assert sorted(buffers) == ["fast", "slow"]
    offset = window_offset("fan-1", 900.0)
    assert buffers["slow"].offset_s == offset
    assert buffers["slow"].window_start(1000.0 + offset) == 900.0 + offset


# (device id, window_s, offset): pinned, because a change would shift every gateway's
# windows on upgrade
OFFSETS = [
    ("cc-1", 60.0, 11.458),
    ("cc-1", 300.0, 131.458),
    ("fan-1", 60.0, 24.079),
    ("fan-1", 900.0, 204.079),
    ("cc-1-001", 10.0, 2.77),
    ("fan-1-002", 10.0, 8.575),
]


@pytest.mark.parametrize(("device_id", "window_s", "offset"), OFFSETS)
def test_window_offset_is_a_stable_hash_of_the_device_id(
    device_id: str, window_s: float, offset: float
) -> None:
    assert window_offset(device_id, window_s) == offset
    group = PollGroup(name="g", period_s=1.0, window_s=window_s)
    assert WindowBuffer(device_id, group).offset_s == offset


@given(device_id=st.text(min_size=1, max_size=64), window_s=st.floats(1.0, 86400.0))
def test_window_offset_is_whole_milliseconds_inside_the_window(
    device_id: str, window_s: float
) -> None:
    offset = window_offset(device_id, window_s)
    assert 0.0 <= offset < window_s
    assert round(offset * 1000) == pytest.approx(offset * 1000, abs=1e-6)
    assert window_offset(device_id, window_s) == offset


def test_devices_windows_end_at_different_instants() -> None:
    # the benchmark's fleet: compressors and fans alternating behind 5 gateways
    ids = [f"{'cc' if u % 2 else 'fan'}-{g}-{u:03d}" for g in range(1, 6) for u in range(1, 11)]
    group = PollGroup(name="g", period_s=0.1, window_s=10.0)
    ends = sorted(WindowBuffer(d, group).window_start(1000.0) + 10.0 for d in ids)
    assert len(set(ends)) == len(ids)  # no two of these 50 devices close together
    assert ends[-1] - ends[0] > 8.0  # spread over the window, not bunched
    assert max(b - a for a, b in itertools.pairwise(ends)) < 2.0


def test_staggered_windows_are_window_s_long_and_survive_a_restart() -> None:
    offset = window_offset("cc-1", 60.0)
    assert 0.0 < offset < 60.0
    buf = WindowBuffer("cc-1", FAST)
    start = 960.0 + offset
    assert buf.window_start(start) == start
    assert buf.window_start(start - 0.001) == start - 60.0
    for i in range(60):
        assert buf.append(start + i, {"t": float(i)}) is None
    assert buf.open_window == (start, start + 60.0)
    w = buf.append(start + 60.0, {"t": 60.0})  # exactly at the end: the next window's
    assert w is not None
    assert (w.start, w.end, w.n_samples, w.n_missing) == (start, start + 60.0, 60, 0)
    assert w.duration_s == pytest.approx(60.0)
    nxt = buf.open_window
    assert nxt is not None and nxt[0] == pytest.approx(start + 60.0)  # contiguous
    # a new process (a restart) puts the same samples in the same windows
    again = WindowBuffer("cc-1", FAST)
    again.append(start + 30.0, {"t": 0.0})
    assert again.open_window == (start, start + 60.0)
    assert again.close_due(start + 59.999) is None
    closed = again.close_due(start + 60.0)
    assert closed is not None and closed.start == start


@pytest.mark.parametrize("offset_s", [-0.001, 60.0, 61.0])
def test_an_offset_outside_the_window_is_refused(offset_s: float) -> None:
    with pytest.raises(ValueError, match="offset_s"):
        WindowBuffer("cc-1", FAST, offset_s=offset_s)


SLIDING = PollGroup(name="risk", period_s=1.0, window_s=60.0, hop_s=15.0)


def test_sliding_windows_end_every_hop_and_share_their_samples() -> None:
    buf = WindowBuffer("cc-1", SLIDING, offset_s=0.0)
    assert buf.window_start(100.0) == 45.0 and buf.window_end(100.0) == 105.0
    closed = [w for i in range(200) if (w := buf.append(100.0 + i, {"t": float(i)})) is not None]
    # one window every 15 s, each the 60 s before its end
    expected = [(45.0 + 15 * k, 105.0 + 15 * k) for k in range(13)]
    assert [(w.start, w.end) for w in closed] == expected
    first, full = closed[0], closed[4]
    assert first.n_samples == 5 and first.n_missing == 55  # polling began at 100
    np.testing.assert_array_equal(full.ts, np.arange(105.0, 165.0))  # [105, 165): all 60
    np.testing.assert_array_equal(full.series["t"], np.arange(5.0, 65.0))
    assert full.n_missing == 0 and full.duration_s == 60.0
    # the next window holds the last 45 s of this one, and 15 new seconds
    np.testing.assert_array_equal(closed[5].ts, np.arange(120.0, 180.0))
    assert buf.pending <= buf.max_samples


def test_a_sliding_window_forgets_samples_older_than_its_start() -> None:
    buf = WindowBuffer("cc-1", SLIDING, offset_s=0.0)
    for i in range(60):
        buf.append(1000.0 + i, {"t": float(i)})
    assert buf.pending == 55  # the window that ends at 1065 holds [1005, 1065): 1005..1059
    assert buf.append(1000.0, {"t": -1.0}) is None  # older than the open window: late
    assert buf.counters.late == 1


def test_a_silent_device_s_sliding_windows_close_on_time_until_its_samples_age_out() -> None:
    buf = WindowBuffer("cc-1", SLIDING, offset_s=0.0)
    for i in range(30):
        buf.append(1000.0 + i, {"t": float(i)})  # 1000..1029, then silence
    ends = []
    now = 1030.0
    while now < 1200.0:
        w = buf.close_due(now)
        if w is not None:
            ends.append((w.end, w.n_samples))
        now += 1.0
    # windows ending 1035..1080 still hold some of the 30 samples; then nothing
    assert ends == [(1035.0, 30), (1050.0, 30), (1065.0, 25), (1080.0, 10)]
    assert buf.open_window is None and buf.pending == 0


def test_back_to_back_windows_are_the_default_hop() -> None:
    assert FAST.hop == 60.0 and SLIDING.hop == 15.0
    a = WindowBuffer("cc-1", FAST)
    assert a.offset_s == window_offset("cc-1", 60.0)  # unchanged for back-to-back windows
    b = WindowBuffer("cc-1", SLIDING)
    assert b.offset_s == window_offset("cc-1", 15.0) and 0 <= b.offset_s < 15.0


@pytest.mark.parametrize(
    ("hop_s", "why"),
    [(61.0, "longer than window_s"), (0.5, "shorter than period_s"), (0.0, "greater than 0")],
)
def test_a_hop_outside_period_and_window_is_refused(hop_s: float, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        PollGroup(name="g", period_s=1.0, window_s=60.0, hop_s=hop_s)
