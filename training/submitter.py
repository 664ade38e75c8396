"""The carbon-aware submitter: hold jobs until the grid is clean or the deadline forces a start."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from training.carbon.forecast import from_epoch_s
from training.carbon.policy import StartDecision, plan_start
from training.carbon.providers import CarbonProvider
from training.clock import Clock, SystemClock
from training.errors import CarbonDataError, UnknownJob
from training.job_store import JobStore, PendingJob
from training.ray_jobs import RayJobs

logger = logging.getLogger(__name__)

# Keep the newest decisions with each job: enough to explain a wait, bounded in size.
_MAX_DECISIONS_KEPT = 50


def new_submission_id() -> str:
    return f"aegis-train-{uuid.uuid4().hex[:12]}"


class CarbonAwareSubmitter:
    """Plans each pending job with `plan_start` and submits it through `RayJobs` when due.

    Args:
        store: Where pending jobs live (survives restarts).
        jobs: Ray job API seam.
        provider: Carbon-intensity source.
        clock: Time source; the loop sleeps through it.
        recheck_s: Longest sleep between re-plans. A job waiting for a greener slot is re-planned
            at least this often, so a fresh forecast (or intensity falling below the threshold)
            is acted on before the planned slot.
    """

    def __init__(
        self,
        store: JobStore,
        jobs: RayJobs,
        provider: CarbonProvider,
        *,
        clock: Clock | None = None,
        recheck_s: float = 1800.0,
    ) -> None:
        if recheck_s <= 0:
            raise ValueError(f"recheck_s must be > 0, got {recheck_s}")
        self.store = store
        self.jobs = jobs
        self.provider = provider
        self.clock = clock or SystemClock()
        self.recheck_s = recheck_s

    def enqueue(
        self,
        entrypoint: str,
        *,
        deadline_s: float,
        duration_s: float,
        threshold_g_per_kwh: float | None,
        submission_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        metadata: dict[str, str] | None = None,
        interruptible: bool = False,
    ) -> PendingJob:
        now_s = self.clock.now_s()
        if duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s}")
        if deadline_s < now_s + duration_s:
            raise ValueError(
                f"deadline {from_epoch_s(deadline_s).isoformat()} leaves less than the expected "
                f"duration ({duration_s:.0f}s) from now"
            )
        runtime_env = dict(runtime_env or {})
        if interruptible:
            # The job's own pause gate (training.fl_job) needs the deadline the submitter holds.
            env_vars = dict(runtime_env.get("env_vars", {}))
            env_vars["AEGIS_JOB_DEADLINE"] = from_epoch_s(deadline_s).isoformat()
            runtime_env["env_vars"] = env_vars
        job = PendingJob(
            submission_id=submission_id or new_submission_id(),
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_resources=dict(entrypoint_resources or {}),
            metadata=dict(metadata or {}),
            created_s=now_s,
            deadline_s=deadline_s,
            duration_s=duration_s,
            threshold_g_per_kwh=threshold_g_per_kwh,
            interruptible=interruptible,
        )
        self.store.add(job)
        logger.info("queued %s (deadline %s, duration %.0fs): %s", job.submission_id,
                    from_epoch_s(deadline_s).isoformat(), duration_s, entrypoint)
        return job

    def cancel(self, submission_id: str) -> PendingJob:
        job = self.store.get(submission_id)
        if job.state == "submitted":
            self.jobs.stop(submission_id)
        job.state = "cancelled"
        self.store.put(job)
        return job

    def _decide(self, job: PendingJob, now_s: float) -> StartDecision:
        try:
            current = self.provider.current().g_per_kwh
            forecast = self.provider.forecast(max(job.deadline_s - now_s, job.duration_s))
        except CarbonDataError as exc:
            # No data is no reason to miss a deadline: run at the latest safe start.
            logger.warning("job %s: %s; falling back to the latest safe start",
                           job.submission_id, exc)
            latest = max(now_s, job.deadline_s - job.duration_s)
            return StartDecision(latest, "no_carbon_data", float("nan"), float("nan"),
                                 float("nan"))
        decision = plan_start(forecast, now_s, job.deadline_s, job.duration_s,
                              job.threshold_g_per_kwh, current_g_per_kwh=current)
        logger.info(
            "job %s: intensity now %.1f g/kWh, forecast %d slots %s..%s (min %.1f), "
            "expected mean %.1f if started at %s (%.1f if now): %s",
            job.submission_id, current, len(forecast),
            from_epoch_s(forecast.start_s).isoformat(), from_epoch_s(forecast.end_s).isoformat(),
            float(forecast.values.min()), decision.expected_mean_g_per_kwh,
            decision.start_at.isoformat(), decision.now_mean_g_per_kwh, decision.reason,
        )
        job.decisions = (job.decisions + [{
            "at_s": now_s,
            "provider": self.provider.name,
            "intensity_g_per_kwh": current,
            "forecast_start_s": forecast.start_s,
            "forecast_end_s": forecast.end_s,
            "forecast_min_g_per_kwh": float(forecast.values.min()),
            "planned_start_s": decision.start_s,
            "expected_mean_g_per_kwh": decision.expected_mean_g_per_kwh,
            "reason": decision.reason,
        }])[-_MAX_DECISIONS_KEPT:]
        return decision

    def step(self, job: PendingJob) -> float | None:
        """Re-plan one pending job; submit it if due. Returns when to look again (None: done)."""
        now_s = self.clock.now_s()
        decision = self._decide(job, now_s)
        job.planned_start_s = decision.start_s
        if decision.start_s > now_s:
            self.store.put(job)
            return min(decision.start_s, now_s + self.recheck_s)
        metadata = {
            "aegis_carbon_provider": self.provider.name,
            "aegis_carbon_intensity_at_start_g_per_kwh": f"{decision.now_g_per_kwh:.1f}",
            "aegis_carbon_decision": decision.reason,
            "aegis_deadline": from_epoch_s(job.deadline_s).isoformat(),
        }
        created = self.jobs.submit(job, metadata)
        job.state = "submitted"
        job.submitted_s = now_s
        job.intensity_at_start_g_per_kwh = decision.now_g_per_kwh
        self.store.put(job)
        logger.info("job %s %s at %.1f g/kWh (%s)", job.submission_id,
                    "submitted" if created else "was already submitted; recorded",
                    decision.now_g_per_kwh, decision.reason)
        return None

    def pending(self) -> list[PendingJob]:
        return [j for j in self.store.all() if j.state == "pending"]

    def run(self, only: set[str] | None = None) -> None:
        """Loop until every pending job (or every job in `only`) has been submitted or cancelled."""
        while True:
            jobs = [j for j in self.pending() if only is None or j.submission_id in only]
            if not jobs:
                return
            wake_s = []
            for job in jobs:
                # Re-read: `cancel` from another process may have changed it since listing.
                try:
                    job = self.store.get(job.submission_id)
                except UnknownJob:
                    continue
                if job.state != "pending":
                    continue
                next_s = self.step(job)
                if next_s is not None:
                    wake_s.append(next_s)
            if wake_s:
                self.clock.sleep(max(0.0, min(wake_s) - self.clock.now_s()))
