"""GCRA math, the embedded store, and the rate limiter's headers and fail modes."""

from __future__ import annotations

import pytest

from security.identity import Identity
from security.ratelimit import RateLimiter
from security.settings import LimitSpec, RateLimitSettings
from security.store.base import StoreUnavailable
from security.store.embedded import EmbeddedStore
from security.store.gcra import Bucket, apply
from common.errors import Overloaded, RateLimited

ALICE = Identity("key:a1", "user", "acme", "api_key", "a1")


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000.0

    def __call__(self) -> float:
        return self.now_ms


class DownStore:
    """A store that is always unreachable, like Redis after a crash."""

    async def rate_limit(self, buckets):
        raise StoreUnavailable("redis unreachable: ConnectionError")


def test_gcra_allows_exactly_the_burst_then_refills_at_the_rate():
    bucket = Bucket("k", per_minute=60, burst=3)  # one unit per second
    tat = None
    allowed = 0
    for _ in range(5):
        new, (res,) = apply([bucket], [tat], now_ms=0.0)
        if res.allowed:
            allowed += 1
            tat = new[0]
    assert allowed == 3
    _, (res,) = apply([bucket], [tat], now_ms=0.0)
    assert not res.allowed and res.retry_after_ms == 1000
    _, (res,) = apply([bucket], [tat], now_ms=1000.0)
    assert res.allowed


def test_gcra_charges_all_buckets_or_none():
    tight = Bucket("tenant", per_minute=60, burst=1)
    loose = Bucket("key", per_minute=60, burst=10)
    new, results = apply([loose, tight], [None, 61_000.0], now_ms=60_000.0)
    assert [r.allowed for r in results] == [False, False]
    assert new == [None, None]  # the loose bucket was not charged for a refused request


async def test_embedded_store_limits_and_reports_headers():
    clock = FakeClock()
    limiter = RateLimiter(
        EmbeddedStore(clock_ms=clock),
        RateLimitSettings(key_requests=LimitSpec(per_minute=60, burst=2), key_tokens=None, tenant_requests=None, tenant_tokens=None),
    )
    first = await limiter.admit(ALICE)
    assert first.headers() == {"RateLimit-Limit": "2", "RateLimit-Remaining": "1", "RateLimit-Reset": "1"}
    await limiter.admit(ALICE)
    with pytest.raises(RateLimited) as exc:
        await limiter.admit(ALICE)
    assert exc.value.status_code == 429
    assert exc.value.headers["Retry-After"] == "1"
    assert exc.value.headers["RateLimit-Remaining"] == "0"
    clock.now_ms += 1000
    assert (await limiter.admit(ALICE)).allowed


async def test_tokens_charged_after_response_put_the_key_in_debt():
    clock = FakeClock()
    limiter = RateLimiter(
        EmbeddedStore(clock_ms=clock),
        RateLimitSettings(key_requests=None, key_tokens=LimitSpec(per_minute=600, burst=100), tenant_requests=None, tenant_tokens=None),
    )
    await limiter.admit(ALICE, prompt_tokens=50)
    await limiter.charge_tokens(ALICE, 250)  # generated tokens: 300 total, 200 over the burst
    with pytest.raises(RateLimited) as exc:
        await limiter.admit(ALICE, prompt_tokens=10)
    # 200 tokens of debt + 10 needed at 10 tokens/s: 21 s.
    assert exc.value.retry_after_s == pytest.approx(21.0, abs=0.01)


async def test_tenant_limit_applies_across_keys():
    limiter = RateLimiter(
        EmbeddedStore(),
        RateLimitSettings(key_requests=LimitSpec(per_minute=60, burst=5), tenant_requests=LimitSpec(per_minute=1, burst=2), key_tokens=None, tenant_tokens=None),
    )
    bob = Identity("key:b2", "user", "acme", "api_key", "b2")
    await limiter.admit(ALICE)
    await limiter.admit(bob)
    with pytest.raises(RateLimited, match="tenant_requests"):
        await limiter.admit(bob)


async def test_fail_closed_answers_503_and_counts():
    limiter = RateLimiter(DownStore(), RateLimitSettings(), fail_mode="closed")
    with pytest.raises(Overloaded) as exc:
        await limiter.admit(ALICE)
    assert exc.value.status_code == 503
    assert limiter.counters.get("ratelimit_fail_closed") == 1


async def test_fail_open_uses_a_local_limiter_that_still_limits():
    settings = RateLimitSettings(key_requests=LimitSpec(per_minute=1, burst=2), key_tokens=None, tenant_requests=None, tenant_tokens=None)
    limiter = RateLimiter(DownStore(), settings, fail_mode="open")
    decision = await limiter.admit(ALICE)
    assert decision.allowed and decision.degraded
    await limiter.admit(ALICE)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(ALICE)
    assert refused.value.degraded  # the local limiter refused it: the audit says so
    assert limiter.counters.get("ratelimit_fail_open") == 3
    assert limiter.counters.get("ratelimit_store_unavailable") == 3


async def test_disabled_limits_admit_everything():
    limiter = RateLimiter(EmbeddedStore(), RateLimitSettings(enabled=False))
    for _ in range(100):
        assert (await limiter.admit(ALICE)).allowed
