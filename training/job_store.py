"""Pending jobs persisted across submitter restarts: a local JSON state file, or Redis.

A job's `submission_id` is chosen once, when it is enqueued, and stored with it. Ray refuses a
second job with the same id, so a submitter that crashes between submitting and recording the
submission re-submits the same id on restart and learns the job already exists.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol

from pydantic import BaseModel, Field

from training.errors import UnknownJob

JobState = Literal["pending", "submitted", "cancelled"]


class PendingJob(BaseModel):
    """One job the submitter owns, from enqueue until it is handed to Ray (or cancelled)."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_resources: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    created_s: float
    deadline_s: float
    duration_s: float
    threshold_g_per_kwh: float | None = None
    interruptible: bool = False
    state: JobState = "pending"
    planned_start_s: float | None = None
    submitted_s: float | None = None
    intensity_at_start_g_per_kwh: float | None = None
    decisions: list[dict[str, Any]] = Field(default_factory=list)


class JobStore(Protocol):
    def add(self, job: PendingJob) -> None: ...

    def get(self, submission_id: str) -> PendingJob: ...

    def put(self, job: PendingJob) -> None: ...

    def all(self) -> list[PendingJob]: ...


class FileJobStore:
    """Jobs in one JSON file, rewritten atomically under an exclusive lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text()) if self.path.exists() else {"jobs": {}}
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    # Write then rename: a crash mid-write leaves the old file, never half a file.
                    fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name)
                    with os.fdopen(fd, "w") as fh:
                        json.dump(data, fh, indent=1, sort_keys=True)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, job: PendingJob) -> None:
        with self._locked() as data:
            if job.submission_id in data["jobs"]:
                raise ValueError(f"a job with submission_id {job.submission_id!r} already exists")
            data["jobs"][job.submission_id] = job.model_dump(mode="json")

    def get(self, submission_id: str) -> PendingJob:
        with self._locked() as data:
            raw = data["jobs"].get(submission_id)
        if raw is None:
            raise UnknownJob(f"no job with submission_id {submission_id!r}")
        return PendingJob.model_validate(raw)

    def put(self, job: PendingJob) -> None:
        with self._locked() as data:
            data["jobs"][job.submission_id] = job.model_dump(mode="json")

    def all(self) -> list[PendingJob]:
        with self._locked() as data:
            jobs = [PendingJob.model_validate(raw) for raw in data["jobs"].values()]
        return sorted(jobs, key=lambda j: j.created_s)


class RedisJobStore:
    """Jobs in one Redis hash (field = submission_id), shared by submitters on several hosts."""

    def __init__(self, url: str, key: str = "aegis:training:jobs") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._key = key

    def add(self, job: PendingJob) -> None:
        # HSETNX: two submitters enqueueing the same id cannot both win.
        if not self._redis.hsetnx(self._key, job.submission_id, job.model_dump_json()):
            raise ValueError(f"a job with submission_id {job.submission_id!r} already exists")

    def get(self, submission_id: str) -> PendingJob:
        raw = self._redis.hget(self._key, submission_id)
        if raw is None:
            raise UnknownJob(f"no job with submission_id {submission_id!r}")
        return PendingJob.model_validate_json(raw)

    def put(self, job: PendingJob) -> None:
        self._redis.hset(self._key, job.submission_id, job.model_dump_json())

    def all(self) -> list[PendingJob]:
        jobs = [PendingJob.model_validate_json(v) for v in self._redis.hvals(self._key)]
        return sorted(jobs, key=lambda j: j.created_s)
