"""GCRA (generic cell rate algorithm) over several buckets at once: the one rate-limit math.

The Redis backend runs the same steps in one Lua script (`redis_store._GCRA_LUA`); the embedded
store and the local fail-open limiter call `apply` here. Keep the two in step.

A bucket allows `burst` units at once and refills at `per_minute` units per minute. Its only state
is the theoretical arrival time (TAT, epoch milliseconds): the moment it would be full again.
A request of `cost` units moves TAT forward by `cost * emission_interval`; it is allowed when the
new TAT is no further than `burst * emission_interval` ahead of now. All buckets of one call are
charged together or not at all, so a per-key pass never spends quota when the per-tenant check
then refuses. `force` charges even over the limit (tokens counted after a response: the debt makes
later requests wait).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """One limit to check: `key` names the shared state; units per minute with a burst."""

    key: str
    per_minute: float
    burst: float
    cost: float = 1.0
    force: bool = False

    @property
    def emission_interval_ms(self) -> float:
        return 60_000.0 / self.per_minute


@dataclass(frozen=True)
class BucketResult:
    """Outcome for one bucket; integer fields map straight onto RateLimit-* headers."""

    key: str
    allowed: bool
    limit: int
    remaining: int
    reset_ms: int
    retry_after_ms: int


def apply(
    buckets: list[Bucket], tats_ms: list[float | None], now_ms: float
) -> tuple[list[float | None], list[BucketResult]]:
    """Run GCRA for all buckets against their stored TATs.

    Args:
        buckets: limits to check, in order.
        tats_ms: stored TAT per bucket (None when the bucket has no state yet).
        now_ms: current time in epoch milliseconds, from the store's own clock.

    Returns:
        The TATs to store (None: leave unchanged) and a result per bucket.
    """
    new_tats: list[float] = []
    oks: list[bool] = []
    for bucket, stored in zip(buckets, tats_ms):
        interval = bucket.emission_interval_ms
        tau = bucket.burst * interval
        tat = max(stored if stored is not None else now_ms, now_ms)
        new_tat = tat + bucket.cost * interval
        new_tats.append(new_tat)
        oks.append(bucket.force or new_tat - now_ms <= tau + 1e-9)
    all_ok = all(oks)
    to_store: list[float | None] = []
    results: list[BucketResult] = []
    for bucket, stored, new_tat, ok in zip(buckets, tats_ms, new_tats, oks):
        interval = bucket.emission_interval_ms
        tau = bucket.burst * interval
        base = max(stored if stored is not None else now_ms, now_ms)
        effective = new_tat if all_ok else base
        to_store.append(new_tat if all_ok and bucket.cost > 0 else None)
        remaining = max(0, math.floor((tau - (effective - now_ms)) / interval + 1e-9))
        retry = 0 if ok else math.ceil(new_tat - tau - now_ms)
        results.append(
            BucketResult(
                key=bucket.key,
                allowed=all_ok,
                limit=int(bucket.burst),
                remaining=remaining,
                reset_ms=max(0, math.ceil(effective - now_ms)),
                retry_after_ms=max(0, retry),
            )
        )
    return to_store, results
