"""benchmarks/carbon.py: any trace with the same columns, and the submitter's own policy code."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

import benchmarks.carbon as bench
import training.carbon.policy as policy
from training.carbon.providers import load_trace


def test_benchmark_runs_the_policy_module_itself():
    assert bench.plan_start is policy.plan_start
    assert bench.plan_interruptible is policy.plan_interruptible


def test_replay_saves_emissions_on_a_day_night_trace(tmp_path, capsys):
    # Two weeks: 300 g/kWh from 08:00 to 20:00, 100 g/kWh otherwise.
    path = tmp_path / "synthetic.csv"
    t = datetime(2021, 3, 1)
    lines = ["Time,Carbon Intensity"]
    while t < datetime(2021, 3, 15):
        lines.append(f"{t:%Y-%m-%d %H:%M:%S},{300 if 8 <= t.hour < 20 else 100}")
        t += timedelta(minutes=30)
    path.write_text("\n".join(lines) + "\n")

    trace = load_trace(path)
    rng = np.random.default_rng(0)
    jobs = bench.make_jobs(trace, 200, rng)
    assert all(j.arrival_s + j.duration_s <= j.deadline_s for j in jobs)
    totals = bench.replay(trace, jobs, 0.05, rng)
    # Every job arrives in the 300 g/kWh day and can run in the 100 g/kWh night: ~2/3 saved.
    saved = {m: 1 - totals[m] / totals["baseline"] for m in ("non-interruptible", "interruptible")}
    assert 0.6 < saved["non-interruptible"] <= saved["interruptible"] + 1e-9 < 0.67

    assert bench.main(["--trace", str(path), "--jobs", "50", "--seeds", "1"]) == 0
    assert "| lowest forecast (paper setting) |" in capsys.readouterr().out
