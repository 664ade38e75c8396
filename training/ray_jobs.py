"""The seam around Ray's `JobSubmissionClient`: submit idempotently by submission id."""

from __future__ import annotations

import logging

from training.errors import SubmissionError
from training.job_store import PendingJob

logger = logging.getLogger(__name__)


class RayJobs:
    """`ray job submit` semantics for the submitter, against the dashboard at `address`."""

    def __init__(self, address: str | None = None) -> None:
        from ray.job_submission import JobSubmissionClient

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
        try:
            self._client.submit_job(
                entrypoint=job.entrypoint,
                submission_id=job.submission_id,
                runtime_env=job.runtime_env or None,
                metadata={**job.metadata, **extra_metadata},
                entrypoint_num_cpus=job.entrypoint_num_cpus,
                entrypoint_resources=job.entrypoint_resources or None,
            )
        except RuntimeError as exc:
            # A concurrent submitter may have won the race; Ray's refusal is then our answer.
            if self.exists(job.submission_id):
                return False
            raise SubmissionError(f"Ray refused job {job.submission_id}: {exc}") from exc
        return True

    def stop(self, submission_id: str) -> bool:
        return bool(self._client.stop_job(submission_id))
