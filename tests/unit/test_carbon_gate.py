"""Interruptible mode: the FL pause gate on a replayed slice of the real GB trace."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from training.carbon.providers import CsvTraceProvider
from training.carbon_gate import CarbonGate

TRACE = Path(__file__).resolve().parents[3] / "shared/data/carbon/gb_2020_ci.csv"
# 2020-01-14 15:00 UTC: ~300 g/kWh, falling to ~140 g/kWh by 23:00 (see the trace).
REPLAY_START = datetime(2020, 1, 14, 15, 0)


class ManualClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0
        self.sleeps: list[float] = []

    def now_s(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def gate(clock: ManualClock, deadline_h: float, threshold: float | None) -> CarbonGate:
    provider = CsvTraceProvider(TRACE, clock=clock, replay_start=REPLAY_START)
    return CarbonGate(provider, deadline_s=clock.now_s() + deadline_h * 3600,
                      threshold_g_per_kwh=threshold, clock=clock, max_pause_s=3600)


def test_gate_pauses_through_the_high_afternoon_and_runs_in_the_green_night():
    clock = ManualClock()
    g = gate(clock, deadline_h=10, threshold=150)
    start_intensity = g.provider.current().g_per_kwh
    ran_at = g.before_round(round_num=1, rounds_left=2, round_s=600)
    assert start_intensity > 250
    assert g.paused_s > 4 * 3600 and max(clock.sleeps) <= 3600  # re-checks at least hourly
    assert ran_at < 200
    assert clock.now_s() + 2 * 600 <= 1_700_000_000 + 10 * 3600  # still meets the deadline


def test_gate_never_pauses_past_the_deadline():
    clock = ManualClock()
    g = gate(clock, deadline_h=0.5, threshold=50)  # no slack: 3 rounds of 10 min = 30 min
    g.before_round(round_num=1, rounds_left=3, round_s=600)
    assert g.paused_s == 0.0


def test_gate_without_deadline_only_records_intensity():
    clock = ManualClock()
    provider = CsvTraceProvider(TRACE, clock=clock, replay_start=REPLAY_START)
    g = CarbonGate(provider, deadline_s=None, threshold_g_per_kwh=None, clock=clock)
    assert g.before_round(1, 5, 60) == provider.current().g_per_kwh
    assert clock.sleeps == []


def test_gate_runs_at_once_below_threshold_and_reports_the_measured_intensity(caplog):
    import logging

    clock = ManualClock()
    provider = CsvTraceProvider(TRACE, clock=clock, replay_start=datetime(2020, 1, 14, 22, 0))
    g = CarbonGate(provider, deadline_s=clock.now_s() + 3600, threshold_g_per_kwh=200,
                   clock=clock)
    with caplog.at_level(logging.INFO, logger="training.carbon_gate"):
        ran_at = g.before_round(1, 1, 600)
    assert clock.sleeps == [] and 150 < ran_at < 200
    assert "below_threshold" in caplog.text and "nan" not in caplog.text
