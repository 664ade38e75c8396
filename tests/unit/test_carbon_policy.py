"""The scheduling policy: start-now threshold, greenest start, deadlines, interruptible windows."""

from __future__ import annotations

import pytest

from training.carbon.forecast import Forecast
from training.carbon.policy import plan_interruptible, plan_start, should_run_now

SLOT_S = 1800.0
T0 = 1_583_139_600.0  # 2020-03-02 09:00 UTC


def forecast(values):
    return Forecast.regular(T0, SLOT_S, values)


def test_below_threshold_starts_now_even_if_later_is_greener():
    fc = forecast([150, 40, 40, 40])
    d = plan_start(fc, T0, T0 + 4 * SLOT_S, SLOT_S, threshold_g_per_kwh=200)
    assert d.start_s == T0 and d.reason == "below_threshold"


def test_above_threshold_waits_for_lowest_forecast_window():
    fc = forecast([300, 280, 90, 95, 260, 250])
    d = plan_start(fc, T0, T0 + 6 * SLOT_S, 2 * SLOT_S, threshold_g_per_kwh=200)
    assert d.start_s == T0 + 2 * SLOT_S
    assert d.reason == "lowest_forecast"
    assert d.expected_mean_g_per_kwh == pytest.approx(92.5)


def test_never_plans_past_the_deadline_even_when_later_is_greener():
    fc = forecast([300, 290, 280, 10, 10, 10])
    # Must finish by T0 + 3 slots: the 10 g/kWh slots are too late to use.
    d = plan_start(fc, T0, T0 + 3 * SLOT_S, 2 * SLOT_S, threshold_g_per_kwh=100)
    assert d.start_s + 2 * SLOT_S <= T0 + 3 * SLOT_S
    assert d.start_s == T0 + SLOT_S  # (290 + 280) / 2 beats (300 + 290) / 2


def test_start_inside_a_slot_for_jobs_not_aligned_to_slots():
    fc = forecast([300, 100, 300, 300])
    d = plan_start(fc, T0 + 600, T0 + 4 * SLOT_S, 900.0)
    assert T0 + SLOT_S <= d.start_s <= T0 + 2 * SLOT_S - 900
    assert d.expected_mean_g_per_kwh == pytest.approx(100)


def test_no_slack_means_start_now_and_late_start_is_flagged():
    fc = forecast([500, 10, 10])
    assert plan_start(fc, T0, T0 + SLOT_S, SLOT_S).reason == "deadline"
    assert plan_start(fc, T0, T0 + 100, SLOT_S).reason == "deadline_at_risk"


def test_interruptible_takes_cheapest_slots_within_deadline():
    fc = forecast([300, 100, 250, 50, 400, 5])
    windows = plan_interruptible(fc, T0, T0 + 5 * SLOT_S, 2 * SLOT_S)
    assert [(w.start_s - T0) / SLOT_S for w in windows] == [1.0, 3.0]
    assert sum(w.duration_s for w in windows) == pytest.approx(2 * SLOT_S)
    assert all(w.end_s <= T0 + 5 * SLOT_S for w in windows)


def test_interruptible_threshold_prefers_earliest_clean_slots():
    fc = forecast([180, 300, 20, 190])
    windows = plan_interruptible(fc, T0, T0 + 4 * SLOT_S, 2 * SLOT_S, threshold_g_per_kwh=200)
    assert [(w.start_s - T0) / SLOT_S for w in windows] == [0.0, 2.0]


def test_pause_gate_pauses_until_window_then_runs():
    fc = forecast([300, 300, 60, 60])
    d = should_run_now(fc, T0, T0 + 4 * SLOT_S, SLOT_S, threshold_g_per_kwh=100)
    assert not d.run_now and d.resume_s == T0 + 2 * SLOT_S
    d = should_run_now(fc, T0 + 2 * SLOT_S, T0 + 4 * SLOT_S, SLOT_S, threshold_g_per_kwh=100)
    assert d.run_now


def test_pause_gate_runs_when_deadline_forces_it():
    fc = forecast([300, 300, 60, 60])
    d = should_run_now(fc, T0, T0 + 2 * SLOT_S, 2 * SLOT_S)
    assert d.run_now


def test_rejects_bad_arguments_with_the_field_name():
    with pytest.raises(ValueError, match="duration_s"):
        plan_start(forecast([1, 2]), T0, T0 + SLOT_S, 0)
    with pytest.raises(ValueError, match="threshold_g_per_kwh"):
        plan_start(forecast([1, 2]), T0, T0 + SLOT_S, 60, threshold_g_per_kwh=-1)
