"""Submitter logic without Ray: deadlines, no-data fallback, cancel, interruptible hand-off."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from training.carbon.providers import CsvTraceProvider
from training.errors import CarbonDataError
from training.job_store import FileJobStore, PendingJob
from training.submitter import CarbonAwareSubmitter

TRACE = Path(__file__).resolve().parents[3] / "shared/data/carbon/gb_2020_ci.csv"
T0 = 1_700_000_000.0


class ManualClock:
    def __init__(self) -> None:
        self.t = T0

    def now_s(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class RecordingJobs:
    """Same interface as training.ray_jobs.RayJobs; remembers what it was asked to submit."""

    def __init__(self) -> None:
        self.submitted: dict[str, tuple[PendingJob, dict[str, str], float]] = {}
        self.clock: ManualClock | None = None

    def submit(self, job: PendingJob, extra_metadata: dict[str, str]) -> bool:
        if job.submission_id in self.submitted:
            return False
        self.submitted[job.submission_id] = (job, extra_metadata, self.clock.now_s())
        return True

    def stop(self, submission_id: str) -> bool:
        return True


class DownProvider:
    name = "down"

    def current(self):
        raise CarbonDataError("API down")

    def forecast(self, horizon_s=0):
        raise CarbonDataError("API down")


def make(tmp_path, provider=None):
    clock, jobs = ManualClock(), RecordingJobs()
    jobs.clock = clock
    provider = provider or CsvTraceProvider(TRACE, clock=clock,
                                            replay_start=datetime(2020, 1, 14, 9, 0))
    return CarbonAwareSubmitter(FileJobStore(tmp_path / "jobs.json"), jobs, provider, clock=clock,
                                recheck_s=3600), jobs, clock


def test_deadline_shorter_than_duration_is_refused(tmp_path):
    sub, _, _ = make(tmp_path)
    with pytest.raises(ValueError, match="deadline"):
        sub.enqueue("echo", deadline_s=T0 + 60, duration_s=600, threshold_g_per_kwh=None)


def test_without_carbon_data_it_still_meets_the_deadline(tmp_path):
    sub, jobs, clock = make(tmp_path, DownProvider())
    job = sub.enqueue("echo", deadline_s=T0 + 4 * 3600, duration_s=3600, threshold_g_per_kwh=100)
    sub.run()
    _, meta, at = jobs.submitted[job.submission_id]
    assert at == T0 + 3 * 3600  # the latest start that still finishes on time
    assert meta["aegis_carbon_decision"] == "no_carbon_data"


def test_cancelled_job_is_never_submitted(tmp_path):
    sub, jobs, _ = make(tmp_path)
    keep = sub.enqueue("echo a", deadline_s=T0 + 8 * 3600, duration_s=600, threshold_g_per_kwh=50)
    drop = sub.enqueue("echo b", deadline_s=T0 + 8 * 3600, duration_s=600, threshold_g_per_kwh=50)
    sub.cancel(drop.submission_id)
    sub.run()
    assert set(jobs.submitted) == {keep.submission_id}
    assert sub.store.get(drop.submission_id).state == "cancelled"


def test_interruptible_job_carries_its_deadline_to_the_fl_job(tmp_path):
    sub, jobs, _ = make(tmp_path)
    job = sub.enqueue("python -m training.fl_job", deadline_s=T0 + 3600, duration_s=600,
                      threshold_g_per_kwh=None, interruptible=True,
                      runtime_env={"env_vars": {"A": "1"}})
    env = job.runtime_env["env_vars"]
    assert env["A"] == "1"
    assert datetime.fromisoformat(env["AEGIS_JOB_DEADLINE"]).timestamp() == T0 + 3600
