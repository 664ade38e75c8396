"""When to run a job: start now when the grid is clean, else at the greenest start that meets the deadline.

Two modes, both pure functions of a forecast so that the submitter, the FL job's pause gate and
the trace replay in `benchmarks/carbon.py` share one implementation:

- `plan_start` (non-interruptible): one contiguous run of `duration_s`.
- `plan_interruptible` (rounds-based jobs): the work may be split into windows; the job pauses
  between rounds outside them.

Neither ever plans past the deadline. When the deadline can no longer be met the plan is
"start now" with reason `deadline_at_risk`, because late is still better than never.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from training.carbon.forecast import Forecast, epoch_s, from_epoch_s

# Tolerance for comparing epoch seconds; slot arithmetic on floats is not exact.
_EPS_S = 1e-6


@dataclass(frozen=True)
class StartDecision:
    """Outcome of `plan_start`, with what the policy saw (logged and stored with the job)."""

    start_s: float
    reason: str  # below_threshold | lowest_forecast | deadline | deadline_at_risk
    now_g_per_kwh: float
    expected_mean_g_per_kwh: float
    now_mean_g_per_kwh: float  # forecast mean if started now, for comparison in logs

    @property
    def start_at(self) -> datetime:
        return from_epoch_s(self.start_s)

    def wait_s(self, now_s: float) -> float:
        return max(0.0, self.start_s - now_s)


@dataclass(frozen=True)
class Window:
    """A span [start_s, end_s) in which an interruptible job runs."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _check(duration_s: float, threshold_g_per_kwh: float | None) -> None:
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if threshold_g_per_kwh is not None and threshold_g_per_kwh < 0:
        raise ValueError(f"threshold_g_per_kwh must be >= 0, got {threshold_g_per_kwh}")


def _as_s(moment: datetime | float) -> float:
    return moment if isinstance(moment, (int, float)) else epoch_s(moment)


def plan_start(
    forecast: Forecast,
    now: datetime | float,
    deadline: datetime | float,
    duration_s: float,
    threshold_g_per_kwh: float | None = None,
    current_g_per_kwh: float | None = None,
) -> StartDecision:
    """Choose the start of a non-interruptible job.

    Args:
        forecast: Intensity forecast from (at least) `now`; windows it does not cover are not
            considered, except starting now.
        now: Current time (datetime or epoch seconds).
        deadline: The job must finish by then.
        duration_s: Expected run time.
        threshold_g_per_kwh: Start at once when the current intensity is at or below it.
            None means always look for the greenest start (the paper's setting).
        current_g_per_kwh: Measured intensity now; the forecast's value at `now` if None.

    Returns:
        The decision; `start_s == now` means submit now.
    """
    _check(duration_s, threshold_g_per_kwh)
    now_s, deadline_s = _as_s(now), _as_s(deadline)
    current = current_g_per_kwh if current_g_per_kwh is not None else forecast.value_at(now_s)
    covered_now = forecast.covers(now_s, now_s + duration_s)
    now_mean = forecast.mean(now_s, now_s + duration_s) if covered_now else current

    def decide(start_s: float, reason: str, mean: float) -> StartDecision:
        return StartDecision(start_s, reason, current, mean, now_mean)

    latest_start_s = deadline_s - duration_s
    if latest_start_s <= now_s + _EPS_S:
        reason = "deadline" if latest_start_s >= now_s - _EPS_S else "deadline_at_risk"
        return decide(now_s, reason, now_mean)
    if threshold_g_per_kwh is not None and current <= threshold_g_per_kwh:
        return decide(now_s, "below_threshold", now_mean)

    # Within one slot the mean over a fixed-length window is linear in its start, so the best
    # start is at now, at a slot boundary, at a boundary minus the duration, or at the latest start.
    last_s = min(latest_start_s, forecast.end_s - duration_s)
    boundaries = np.concatenate([forecast.starts_s, forecast.ends_s])
    cands = np.concatenate([boundaries, boundaries - duration_s, [now_s, last_s]])
    cands = np.unique(cands[(cands >= now_s - _EPS_S) & (cands <= last_s + _EPS_S)])
    cands = np.clip(cands, now_s, max(now_s, last_s))
    cands = cands[(cands >= forecast.start_s) & (cands + duration_s <= forecast.end_s + _EPS_S)]
    if len(cands) == 0:
        # The forecast is too short to score any window: do not gamble with the deadline.
        return decide(now_s, "lowest_forecast", now_mean)
    means = forecast.means(np.minimum(cands, forecast.end_s - duration_s), duration_s)
    # argmin takes the first minimum: ties go to the earlier start, leaving slack for the deadline.
    i = int(np.argmin(means))
    best_s, best_mean = float(cands[i]), float(means[i])
    if covered_now and now_mean <= best_mean + 1e-9:
        return decide(now_s, "lowest_forecast", now_mean)
    return decide(best_s, "lowest_forecast", best_mean)


def plan_interruptible(
    forecast: Forecast,
    now: datetime | float,
    deadline: datetime | float,
    work_s: float,
    threshold_g_per_kwh: float | None = None,
) -> list[Window]:
    """Choose the windows an interruptible job runs in, `work_s` seconds in total.

    Slots at or below the threshold are taken first, earliest first (clean enough: do not wait);
    then the lowest-forecast slots. Windows are returned in time order, adjacent ones merged.
    When the forecast or the deadline leaves less room than `work_s`, the plan is to run from
    now without pausing, since that finishes soonest.
    """
    _check(work_s, threshold_g_per_kwh)
    now_s, deadline_s = _as_s(now), _as_s(deadline)
    horizon_s = min(deadline_s, forecast.end_s)
    if horizon_s - now_s <= work_s + _EPS_S or now_s < forecast.start_s:
        return [Window(now_s, now_s + work_s)]
    clipped = forecast.window(now_s, horizon_s)
    starts, ends, values = clipped.starts_s, clipped.ends_s, clipped.values
    if threshold_g_per_kwh is None:
        order = np.lexsort((starts, values))
    else:
        clean = values <= threshold_g_per_kwh
        # Clean slots sort first by time; others after, by intensity then time.
        key_primary = np.where(clean, 0, 1)
        key_secondary = np.where(clean, starts, values)
        order = np.lexsort((starts, key_secondary, key_primary))
    chosen: list[Window] = []
    left_s = work_s
    for i in order:
        if left_s <= _EPS_S:
            break
        take_s = min(ends[i] - starts[i], left_s)
        chosen.append(Window(float(starts[i]), float(starts[i] + take_s)))
        left_s -= take_s
    chosen.sort(key=lambda w: w.start_s)
    merged: list[Window] = []
    for w in chosen:
        if merged and abs(merged[-1].end_s - w.start_s) <= _EPS_S:
            merged[-1] = Window(merged[-1].start_s, w.end_s)
        else:
            merged.append(w)
    return merged


@dataclass(frozen=True)
class PauseDecision:
    """Whether a rounds-based job should run its next round now, or pause until `resume_s`."""

    run_now: bool
    resume_s: float
    now_g_per_kwh: float
    reason: str


def should_run_now(
    forecast: Forecast,
    now: datetime | float,
    deadline: datetime | float,
    remaining_work_s: float,
    threshold_g_per_kwh: float | None = None,
    current_g_per_kwh: float | None = None,
) -> PauseDecision:
    """The interruptible plan, seen from a round boundary: run now, or pause until the next window.

    `current_g_per_kwh` is the measured intensity now; the forecast's value at now if None.
    """
    now_s = _as_s(now)
    if current_g_per_kwh is not None:
        current = current_g_per_kwh
    else:
        current = forecast.value_at(now_s) if forecast.covers(now_s, now_s) else float("nan")
    if threshold_g_per_kwh is not None and current <= threshold_g_per_kwh:
        return PauseDecision(True, now_s, current, "below_threshold")
    windows = plan_interruptible(forecast, now_s, deadline, remaining_work_s, threshold_g_per_kwh)
    first = windows[0]
    if first.start_s <= now_s + _EPS_S:
        return PauseDecision(True, now_s, current, "in_low_carbon_window")
    return PauseDecision(False, first.start_s, current, "waiting_for_low_carbon_window")
