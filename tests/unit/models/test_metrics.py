"""Evaluation metrics, table-tested against hand-counted cases."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import AnomalyReport, Confusion, detection_delays, pr_auc, risk_metrics

NAN = float("nan")


def test_confusion_pools_rows_and_leaves_unknown_labels_out() -> None:
    c = Confusion()
    c.add(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 0, 1, NAN]))
    c.add(np.array([0, 1], bool), np.array([0.0, 1.0]))
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 2, 1)
    s = c.summary()
    assert s["f1"] == pytest.approx(2 / (2 + (1 + 1) / 2))
    assert s["false_alarm_rate"] == pytest.approx(1 / 3)
    assert s["missed_alarm_rate"] == pytest.approx(1 / 3)


def test_ratios_without_a_denominator_are_none() -> None:
    c = Confusion()
    c.add(np.zeros(3, bool), np.zeros(3))
    s = c.summary()
    assert s["f1"] is None and s["missed_alarm_rate"] is None and s["false_alarm_rate"] == 0


def test_detection_delay_per_segment() -> None:
    t = np.arange(10) * 60.0
    label = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0], float)
    decision = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 1], bool)
    segs = detection_delays(t, label, decision)
    assert [(s.start, s.end, s.delay_s) for s in segs] == [(60, 180, 120), (360, 420, None)]
    r = AnomalyReport()
    r.add("f", t, label, decision, failures=[(400.0, "valve_wear"), (150.0, "leak")])
    summary = r.summary()
    assert summary["per_fault_type"] == {
        "leak": {"rows_recall": 1 / 3, "segments": 1, "segments_detected": 1,
                 "median_delay_s": 120, "max_delay_s": 120},
        "valve_wear": {"rows_recall": 0.0, "segments": 1, "segments_detected": 0,
                       "median_delay_s": None, "max_delay_s": None},
    }
    assert summary["segments"] == 2 and summary["segments_detected"] == 1
    assert summary["median_delay_s"] == 120


H = 3600.0


@pytest.mark.parametrize(
    ("alerts", "failures", "expect"),
    [
        # raised 80 h before the failure and standing until it: warned 80 h ahead
        (
            {"a": [(0.0, 80 * H)]},
            {"a": [80 * H]},
            {"recall@72h": 1.0, "ahead@72h": 1.0, "median_lead_h@72h": 80.0,
             "precision@72h": 1.0, "recall@24h": 1.0, "ahead@24h": 1.0},
        ),
        # raised 80 h before but cleared 5 h later: nothing stood in the 72 h before, and
        # no failure followed within 72 h of its clearing
        (
            {"a": [(0.0, 5 * H)]},
            {"a": [80 * H]},
            {"recall@72h": 0.0, "ahead@72h": 0.0, "precision@72h": 0.0,
             "median_lead_h@72h": None},
        ),
        # ... but a failure 60 h after it cleared: right at 72 h, late at 48 h
        (
            {"a": [(0.0, 20 * H)]},
            {"a": [80 * H]},
            {"recall@72h": 1.0, "ahead@72h": 1.0, "precision@72h": 1.0,
             "recall@48h": 0.0, "precision@48h": 0.0},
        ),
        # two alerts standing before one failure: the lead is from the earlier
        (
            {"a": [(10 * H, 30 * H), (70 * H, 80 * H)]},
            {"a": [80 * H]},
            {"recall@24h": 1.0, "recall@72h": 1.0, "median_lead_h@72h": 70.0,
             "median_lead_h@24h": 10.0, "ahead@72h": 0.0, "ahead@24h": 0.0,
             "precision@24h": 0.5, "precision@72h": 1.0},
        ),
        # an alert on another asset does not warn of this one's failure
        (
            {"a": [(10 * H, 20 * H)], "b": [(5 * H, 6 * H)]},
            {"a": [20 * H]},
            {"recall@24h": 1.0, "precision@24h": 0.5, "failures": 1, "alerts": 2},
        ),
        # an alert standing through a failure ends there: it does not warn of the next one
        (
            {"a": [(0.0, 200 * H)]},
            {"a": [80 * H, 190 * H]},
            {"recall@72h": 0.5, "ahead@72h": 0.5, "precision@72h": 1.0, "alerts": 1},
        ),
        # raised after the failure: no warning, and not right
        ({"a": [(2 * H, 3 * H)]}, {"a": [H]}, {"recall@72h": 0.0, "precision@72h": 0.0}),
        ({}, {"a": [H]}, {"recall@72h": 0.0, "ahead@72h": 0.0, "precision@72h": None}),
    ],
)
def test_risk_event_metrics(
    alerts: dict[str, list[tuple[float, float]]],
    failures: dict[str, list[float]],
    expect: dict[str, object],
) -> None:
    observed = {"a": 30 * 86400.0, "b": 30 * 86400.0}
    m = risk_metrics(alerts, failures, observed)
    for k, v in expect.items():
        assert m[k] == (pytest.approx(v) if isinstance(v, float) else v), k


def test_false_alerts_per_100_asset_months() -> None:
    m = risk_metrics({"a": [(0.0, H), (H, 2 * H)]}, {"a": []},
                     {"a": 30 * 86400.0, "b": 30 * 86400.0})
    assert m["false_alerts_per_100_asset_months@72h"] == pytest.approx(100.0 * 2 / 2)


def test_pr_auc() -> None:
    assert pr_auc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0], bool)) == 1.0
    assert pr_auc(np.array([0.9, 0.8, 0.1]), np.array([0, 1, 1], bool)) == pytest.approx(
        (1 / 2 + 2 / 3) / 2
    )
    assert pr_auc(np.array([0.1]), np.array([1], bool)) is None


@pytest.mark.parametrize(
    ("alert", "failures", "right_censored_false"),
    [
        # standing at the end of the recording, no failure seen: unknowable
        ((900 * H, 1000 * H), [], (0, 1, 0)),
        # cleared 50 h before the end: a failure could still come within 72 h of it
        ((900 * H, 950 * H), [], (0, 1, 0)),
        # cleared 80 h before the end with no failure since: false
        ((900 * H, 920 * H), [], (0, 0, 1)),
        # a failure inside the recording followed it: right, whatever the end
        ((900 * H, 1000 * H), [990 * H], (1, 0, 0)),
        # a failure long before it does not make it right, nor judged
        ((900 * H, 1000 * H), [100 * H], (0, 1, 0)),
    ],
)
def test_an_alert_judged_past_the_end_of_the_recording_is_censored_not_false(
    alert: tuple[float, float], failures: list[float], right_censored_false: tuple[int, int, int]
) -> None:
    """A recording ends; its units do not. An alert whose failure could come after the
    data ends is neither right nor false: it is counted apart and left out of precision
    and false alerts."""
    right, censored, false = right_censored_false
    observed = {"a": 1000 * H}
    m = risk_metrics({"a": [alert]}, {"a": failures}, observed, observed_until=observed)
    assert m["censored_alerts@72h"] == censored
    assert m["alerts"] == 1
    assert m["precision@72h"] == (None if censored else float(right))
    months = 1000 * H / (30 * 86400.0)
    assert m["false_alerts_per_100_asset_months@72h"] == pytest.approx(100.0 * false / months)
    # without the end of observation every unconfirmed alert counts as false
    plain = risk_metrics({"a": [alert]}, {"a": failures}, observed)
    assert plain["censored_alerts@72h"] == 0
    assert plain["false_alerts_per_100_asset_months@72h"] == pytest.approx(
        100.0 * (1 - right) / months
    )
