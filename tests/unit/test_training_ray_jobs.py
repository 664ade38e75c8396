"""RayJobs against a client that answers as Ray's job API does, without a cluster."""

from __future__ import annotations

import pytest

from training.errors import SubmissionError
from training.job_store import PendingJob
from training.ray_jobs import RayJobs

NO_AGENT = RuntimeError("Request failed with status code 500: No available agent to submit job, "
                        "please try again later..")


class FakeJobApi:
    """`JobSubmissionClient`'s submit/get_job_info: refuses `refusals` times, then accepts once."""

    def __init__(self, refusals: list[Exception]) -> None:
        self.refusals = list(refusals)
        self.jobs: dict[str, str] = {}
        self.attempts = 0

    def get_job_info(self, submission_id: str) -> str:
        if submission_id not in self.jobs:
            raise RuntimeError(f"Job {submission_id} does not exist")
        return self.jobs[submission_id]

    def submit_job(self, *, entrypoint: str, submission_id: str, **_: object) -> str:
        self.attempts += 1
        if self.refusals:
            raise self.refusals.pop(0)
        if submission_id in self.jobs:
            raise RuntimeError(f"Job with submission_id {submission_id} already exists")
        self.jobs[submission_id] = entrypoint
        return submission_id


def _job() -> PendingJob:
    return PendingJob(submission_id="aegis-train-1", entrypoint="python -m training.fl_job",
                      created_s=0.0, deadline_s=3600.0, duration_s=60.0)


def test_no_agent_yet_is_retried_with_the_same_submission_id():
    api, slept = FakeJobApi([NO_AGENT, NO_AGENT]), []
    jobs = RayJobs(client=api, sleep=slept.append)
    assert jobs.submit(_job(), {}) is True
    assert api.attempts == 3 and api.jobs == {"aegis-train-1": "python -m training.fl_job"}
    assert slept == [1.0, 2.0]


def test_no_agent_for_longer_than_the_wait_is_a_submission_error():
    api, slept = FakeJobApi([NO_AGENT] * 10), []
    jobs = RayJobs(client=api, sleep=slept.append, agent_wait_s=5.0)
    with pytest.raises(SubmissionError, match="No available agent"):
        jobs.submit(_job(), {})
    assert sum(slept) >= 5.0 and api.jobs == {}


def test_other_refusals_are_not_retried():
    api = FakeJobApi([RuntimeError("Request failed with status code 400: bad runtime_env")])
    with pytest.raises(SubmissionError, match="bad runtime_env"):
        RayJobs(client=api, sleep=lambda s: pytest.fail("slept")).submit(_job(), {})
    assert api.attempts == 1


def test_a_job_ray_already_has_is_not_submitted_again():
    api = FakeJobApi([])
    jobs = RayJobs(client=api, sleep=lambda s: None)
    assert jobs.submit(_job(), {}) is True
    assert jobs.submit(_job(), {}) is False
    assert api.attempts == 1
