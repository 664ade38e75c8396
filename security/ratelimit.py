"""Per-key and per-tenant request and token limits on the shared store, with a fail mode."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from security.counters import Counters
from security.identity import Identity
from security.settings import FailMode, LimitSpec, RateLimitSettings
from security.store.base import SharedStore, StoreUnavailable
from security.store.embedded import EmbeddedStore
from security.store.gcra import Bucket, BucketResult
from common.errors import Overloaded, RateLimited

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateDecision:
    """An admission outcome, with the numbers for the RateLimit-* headers.

    Attributes:
        allowed: whether the request may proceed.
        limit: burst size of the reported bucket (RateLimit-Limit).
        remaining: units left in it now (RateLimit-Remaining).
        reset_s: seconds until it is full again (RateLimit-Reset).
        retry_after_s: seconds until a retry can succeed (0 when allowed).
        policy: which bucket the numbers describe, e.g. `key_requests`.
        degraded: decided by the local fallback limiter because the shared store was down.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: float
    policy: str
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        """RateLimit-* headers (and Retry-After when refused), for successful responses too."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


_UNLIMITED = RateDecision(True, 0, 0, 0, 0.0, "none")


class RateLimiter:
    """Admits requests and charges tokens against GCRA buckets in the shared store.

    When the store is unreachable, `fail_mode="closed"` answers 503 and `"open"` decides with an
    in-process limiter of the same algorithm (per replica, so looser than the shared one); both
    are logged and counted (`ratelimit_store_unavailable`, `ratelimit_fail_open`, `ratelimit_fail_closed`).

    Args:
        store: the shared store.
        settings: the limits.
        fail_mode: what to do when the store is down.
        counters: where to count outcomes.
    """

    def __init__(self, store: SharedStore, settings: RateLimitSettings, fail_mode: FailMode = "open", counters: Counters | None = None) -> None:
        self._store = store
        self._s = settings
        self._fail_mode = fail_mode
        self.counters = counters or Counters()
        self._local = EmbeddedStore()

    def with_limits(self, settings: RateLimitSettings) -> RateLimiter:
        """This limiter with new limits (`retune`); the fail-open limiter's buckets carry over, as the
        store's do."""
        limiter = RateLimiter(self._store, settings, self._fail_mode, self.counters)
        limiter._local = self._local
        return limiter

    def _buckets(self, identity: Identity, requests: float, tokens: float, force: bool) -> list[tuple[str, Bucket]]:
        s = self._s
        specs: list[tuple[str, str, LimitSpec | None, float]] = [
            ("key_requests", f"k:{identity.subject}:req", s.role_key_requests.get(identity.role, s.key_requests), requests),
            ("tenant_requests", f"t:{identity.tenant}:req", s.tenant_requests, requests),
            ("key_tokens", f"k:{identity.subject}:tok", s.role_key_tokens.get(identity.role, s.key_tokens), tokens),
            ("tenant_tokens", f"t:{identity.tenant}:tok", s.tenant_tokens, tokens),
        ]
        out = []
        for policy, key, spec, cost in specs:
            if spec is None or cost <= 0:
                continue
            # An admission larger than the burst could never pass; cap it so the request is judged
            # on whether the bucket has room at all (the input limits bound prompt size anyway).
            cost = cost if force else min(cost, spec.burst)
            out.append((policy, Bucket(key, spec.per_minute, spec.burst, cost, force)))
        return out

    async def _run(self, buckets: list[Bucket]) -> tuple[list[BucketResult], bool]:
        try:
            return await self._store.rate_limit(buckets), False
        except StoreUnavailable as exc:
            self.counters.inc("ratelimit_store_unavailable")
            if self._fail_mode == "closed":
                self.counters.inc("ratelimit_fail_closed")
                log.error("rate-limit store unavailable, failing closed: %s", exc)
                raise Overloaded("Rate-limit backend unavailable, retry shortly.", retry_after_s=1.0) from None
            self.counters.inc("ratelimit_fail_open")
            log.warning("rate-limit store unavailable, using local limiter: %s", exc)
            return await self._local.rate_limit(buckets), True

    async def admit(self, identity: Identity, prompt_tokens: int = 0) -> RateDecision:
        """Charge one request and the prompt tokens, or refuse.

        Returns:
            The decision; put `decision.headers()` on the response.

        Raises:
            RateLimited: over a limit (its headers carry Retry-After and RateLimit-*).
            Overloaded: store down and fail_mode is closed.
        """
        if not self._s.enabled:
            return _UNLIMITED
        # At least one token of room is needed, so a key in token debt waits even for a tiny prompt.
        named = self._buckets(identity, 1, max(1, prompt_tokens), force=False)
        if not named:
            return _UNLIMITED
        results, degraded = await self._run([b for _, b in named])
        policies = [p for p, _ in named]
        if not results[0].allowed:
            denied = [(p, r) for p, r in zip(policies, results) if r.retry_after_ms > 0] or list(zip(policies, results))
            policy, worst = max(denied, key=lambda pr: pr[1].retry_after_ms)
            decision = RateDecision(False, worst.limit, worst.remaining, math.ceil(worst.reset_ms / 1000), worst.retry_after_ms / 1000, policy, degraded)
            self.counters.inc(f"ratelimit_denied_{policy}")
            error = RateLimited(
                f"Rate limit exceeded ({policy}); retry after {decision.headers()['Retry-After']} s.",
                retry_after_s=decision.retry_after_s,
                headers=decision.headers(),
            )
            # A refusal by the local fallback limiter is marked too: the audit must show that
            # this decision was not the cluster-wide one.
            error.degraded = degraded
            raise error
        # Report the request bucket closest to empty: what a client pacing itself needs to see.
        candidates = [(p, r) for p, r in zip(policies, results) if p.endswith("requests")] or list(zip(policies, results))
        policy, best = min(candidates, key=lambda pr: pr[1].remaining / max(pr[1].limit, 1))
        self.counters.inc("ratelimit_allowed")
        return RateDecision(True, best.limit, best.remaining, math.ceil(best.reset_ms / 1000), 0.0, policy, degraded)

    async def charge_tokens(self, identity: Identity, tokens: int) -> None:
        """Charge tokens known only after the response (generated tokens), even into debt.

        Never raises: the response is already sent. A store failure is counted and, in fail-open
        mode, charged to the local limiter instead.
        """
        if not self._s.enabled or tokens <= 0:
            return
        named = self._buckets(identity, 0, tokens, force=True)
        if not named:
            return
        try:
            await self._run([b for _, b in named])
        except Overloaded:
            log.warning("could not charge %d tokens for %s: store unavailable", tokens, identity.subject)
