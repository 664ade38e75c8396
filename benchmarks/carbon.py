"""Replay a carbon trace with the "Let's Wait Awhile" ML-job scenario through the submitter's policy.

    python -m benchmarks.carbon [--trace ../shared/data/carbon/gb_2020_ci.csv] [--seeds 3]

Scenario (Wiesner et al., Middleware 2021, doi 10.1145/3464298.3493399): jobs arrive on workdays
(Mon-Fri) between 09:00 and 17:00, last 4 to 90 minutes, and must finish by the next workday's
09:00; forecasts carry 5% error. Emissions are integrated over the recorded (actual) intensity; the
policy sees only the noisy forecast. Savings are against starting every job on arrival.

The policy is `training.carbon.policy` itself (`plan_start`, `plan_interruptible`), not a copy.
Any CSV with the trace's columns (`Time`, `Carbon Intensity`) works.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from training.carbon.forecast import Forecast
from training.carbon.policy import plan_interruptible, plan_start
from training.carbon.providers import load_trace
from training.errors import CarbonDataError

DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared/data/carbon/gb_2020_ci.csv"
PAPER_SAVED_PCT = {"non-interruptible": 6.56, "interruptible": 9.03}


@dataclass(frozen=True)
class Job:
    arrival_s: float
    duration_s: float
    deadline_s: float


def _next_workday_9am(day: datetime) -> datetime:
    nxt = day + timedelta(days=1)
    while nxt.weekday() >= 5:
        nxt += timedelta(days=1)
    return nxt.replace(hour=9, minute=0, second=0, microsecond=0)


def make_jobs(trace: Forecast, n_jobs: int, rng: np.random.Generator) -> list[Job]:
    """`n_jobs` arrivals spread uniformly over the trace's workday 09:00-17:00 hours."""
    first = datetime.fromtimestamp(trace.start_s, tz=timezone.utc).replace(hour=0, minute=0)
    last = datetime.fromtimestamp(trace.end_s, tz=timezone.utc)
    workdays = []
    day = first
    while day < last:
        # Keep days whose deadline (next workday 09:00) is still inside the trace.
        if day.weekday() < 5 and _next_workday_9am(day).timestamp() <= trace.end_s \
                and day.replace(hour=9).timestamp() >= trace.start_s:
            workdays.append(day)
        day += timedelta(days=1)
    if not workdays:
        raise CarbonDataError("the trace covers no complete workday")
    jobs = []
    for _ in range(n_jobs):
        day = workdays[int(rng.integers(len(workdays)))]
        arrival = day.replace(hour=9).timestamp() + float(rng.uniform(0, 8 * 3600))
        duration_s = float(rng.uniform(4, 90)) * 60
        jobs.append(Job(arrival, duration_s, _next_workday_9am(day).timestamp()))
    return sorted(jobs, key=lambda j: j.arrival_s)


def replay(trace: Forecast, jobs: list[Job], forecast_error: float, rng: np.random.Generator,
           threshold_g_per_kwh: float | None = None) -> dict[str, float]:
    """Total emissions (in g/kWh * s, i.e. per kW of job power) for each strategy."""
    totals = {"baseline": 0.0, "non-interruptible": 0.0, "interruptible": 0.0}
    for job in jobs:
        actual = trace.window(job.arrival_s, job.deadline_s)
        noise = 1.0 + rng.normal(0.0, forecast_error, len(actual))
        forecast = actual.scaled(noise)
        now_actual = actual.value_at(job.arrival_s)
        totals["baseline"] += trace.integral(job.arrival_s, job.arrival_s + job.duration_s)
        decision = plan_start(forecast, job.arrival_s, job.deadline_s, job.duration_s,
                              threshold_g_per_kwh, current_g_per_kwh=now_actual)
        totals["non-interruptible"] += trace.integral(decision.start_s,
                                                      decision.start_s + job.duration_s)
        windows = plan_interruptible(forecast, job.arrival_s, job.deadline_s, job.duration_s,
                                     threshold_g_per_kwh)
        totals["interruptible"] += sum(trace.integral(w.start_s, w.end_s) for w in windows)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--jobs", type=int, default=3387, help="jobs per seed (paper: 3,387)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--forecast-error", type=float, default=0.05)
    parser.add_argument("--threshold", type=float, default=None,
                        help="also report the policy with this start-now threshold (g/kWh)")
    args = parser.parse_args(argv)
    try:
        trace = load_trace(args.trace)
    except CarbonDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rows = [("lowest forecast (paper setting)", None)]
    if args.threshold is not None:
        rows.append((f"threshold {args.threshold:g} g/kWh, else lowest forecast", args.threshold))
    print(f"trace: {args.trace.name}, {len(trace)} slots; {args.jobs} jobs x {args.seeds} seeds, "
          f"forecast error {args.forecast_error:.0%}\n")
    print("| policy | saved, non-interruptible | saved, interruptible |")
    print("| --- | --- | --- |")
    for label, threshold in rows:
        saved = {"non-interruptible": [], "interruptible": []}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            jobs = make_jobs(trace, args.jobs, rng)
            totals = replay(trace, jobs, args.forecast_error, rng, threshold)
            for mode in saved:
                saved[mode].append(100 * (1 - totals[mode] / totals["baseline"]))
        cells = [f"{np.mean(v):.2f}% (±{np.std(v):.2f})" for v in saved.values()]
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    print(f"| Wiesner et al. 2021, same trace | {PAPER_SAVED_PCT['non-interruptible']:.2f}% | "
          f"{PAPER_SAVED_PCT['interruptible']:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
