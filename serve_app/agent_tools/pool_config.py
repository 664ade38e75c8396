"""Resources and limits of one agent tool's actor pool, and which of them change without a restart."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LIVE_POOL_FIELDS", "ToolPoolConfig", "tune_pool_config"]


class ToolPoolConfig(BaseModel):
    """Resources and limits of one tool's actors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_bytes: int | None = Field(None, ge=1)
    pool_size: int = Field(1, ge=1, le=64)
    # Calls one actor runs at once; more wait in that actor's queue.
    max_concurrency: int = Field(4, ge=1, le=1000)
    # Calls waiting beyond pool_size * max_concurrency before the next is refused (503).
    max_queued_calls: int = Field(64, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    cancel_grace_s: float = Field(2.0, gt=0)
    # Restarts of one actor after crashes or kills (-1: unlimited).
    max_restarts: int = Field(3, ge=-1)


# Read at every call, so they can change while the pool runs (ToolRunner.reconfigure).
LIVE_POOL_FIELDS = ("timeout_s", "cancel_grace_s", "max_queued_calls")


def tune_pool_config(config: ToolPoolConfig, live: dict[str, Any], who: str) -> ToolPoolConfig:
    """`config` with new values of the live knobs (`LIVE_POOL_FIELDS`); `who` names the tool in errors.

    Raises:
        ValueError: a knob that is not live, or an invalid value (a pydantic ValidationError).
    """
    unknown = set(live) - set(LIVE_POOL_FIELDS)
    if unknown:
        raise ValueError(f"{who}: only {', '.join(LIVE_POOL_FIELDS)} change without a restart, got {sorted(unknown)}")
    return ToolPoolConfig.model_validate({**config.model_dump(), **live})
