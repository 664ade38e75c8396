"""The seam around Ray's `JobSubmissionClient`: submit idempotently by submission id."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from training.errors import SubmissionError
from training.job_store import PendingJob

logger = logging.getLogger(__name__)

# Ray's job API answers this (HTTP 500) while no node's dashboard agent can take a job yet: just
# after `ray start`, or while a loaded node's agent is slow to report. Ray says to retry.
_NO_AGENT = "No available agent"


class RayJobs:
    """`ray job submit` semantics for the submitter, against the dashboard at `address`."""

    def __init__(self, address: str | None = None, *, agent_wait_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, client: Any = None) -> None:
        """`client`: a `JobSubmissionClient`, made for `address` when None."""
        from ray.job_submission import JobSubmissionClient

        self._agent_wait_s = agent_wait_s
        self._sleep = sleep
        if client is not None:
            self._client = client
            return
        try:
            self._client = JobSubmissionClient(address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SubmissionError(f"cannot reach the Ray job API at {address}: {exc}") from exc

    def exists(self, submission_id: str) -> bool:
        try:
            self._client.get_job_info(submission_id)
        except RuntimeError:
            return False
        return True

    def status(self, submission_id: str) -> str:
        return str(self._client.get_job_status(submission_id).value)

    def submit(self, job: PendingJob, extra_metadata: dict[str, str]) -> bool:
        """Submit `job` under its submission id; False when Ray already had it (no second job)."""
        if self.exists(job.submission_id):
            return False
        waited_s, pause_s = 0.0, 1.0
        while True:
            try:
                self._client.submit_job(
                    entrypoint=job.entrypoint,
                    submission_id=job.submission_id,
                    runtime_env=job.runtime_env or None,
                    metadata={**job.metadata, **extra_metadata},
                    entrypoint_num_cpus=job.entrypoint_num_cpus,
                    entrypoint_resources=job.entrypoint_resources or None,
                )
                return True
            except RuntimeError as exc:
                # A concurrent submitter may have won the race; Ray's refusal is then our answer.
                if self.exists(job.submission_id):
                    return False
                if _NO_AGENT not in str(exc) or waited_s >= self._agent_wait_s:
                    raise SubmissionError(f"Ray refused job {job.submission_id}: {exc}") from exc
                # The same submission id again: Ray never runs it twice.
                logger.info("no Ray agent can take job %s yet; retrying in %.0f s", job.submission_id, pause_s)
                self._sleep(pause_s)
                waited_s, pause_s = waited_s + pause_s, min(pause_s * 2, 8.0)

    def stop(self, submission_id: str) -> bool:
        return bool(self._client.stop_job(submission_id))
