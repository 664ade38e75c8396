"""The Redis backend against the real Redis on 127.0.0.1:6379 (db 15, a unique prefix per run)."""

from __future__ import annotations

import asyncio
import json

import pytest

from security.audit import AuditLogger, AuditRecord, JsonlSink, RedisStreamSink
from security.identity import Identity
from security.keys import KeyStore
from security.ratelimit import RateLimiter
from security.settings import LimitSpec, RateLimitSettings
from security.store.base import StoreUnavailable
from security.store.embedded import EmbeddedStore
from security.store.gcra import Bucket
from security.store.redis_store import RedisStore
from common.errors import Overloaded, RateLimited

REDIS_URL = "redis://127.0.0.1:6379/15"
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
ALICE = Identity("key:a1", "user", "acme", "api_key", "a1")


def _settings(burst: float) -> RateLimitSettings:
    return RateLimitSettings(key_requests=LimitSpec(per_minute=6, burst=burst), key_tokens=None, tenant_requests=None, tenant_tokens=None)


async def test_limit_is_exact_across_replicas_and_concurrent_clients(prefix):
    """Four 'replicas' (separate connections) x 25 concurrent requests: exactly the burst gets in."""
    # A generous timeout and fail-closed: on a loaded CI host a 0.5 s timeout once sent half the
    # calls to each replica's local fail-open limiter, which measures the fallback, not Redis.
    # Closed turns any such timeout into an Overloaded error here instead of a wrong count.
    replicas = [RedisStore(REDIS_URL, prefix=prefix, socket_timeout_s=10.0) for _ in range(4)]
    limiters = [RateLimiter(store, _settings(burst=10), fail_mode="closed") for store in replicas]

    async def one(limiter: RateLimiter) -> bool:
        try:
            await limiter.admit(ALICE)
            return True
        except RateLimited:
            return False

    # 6/min refills one request per 10 s, so within this test at most burst (+1 if a refill lands).
    outcomes = await asyncio.gather(*(one(limiters[i % 4]) for i in range(100)))
    assert 10 <= sum(outcomes) <= 11
    for store in replicas:
        await store.close()


async def test_redis_and_embedded_give_the_same_answers(prefix):
    """Same sequence of mixed-cost calls: same allow/deny pattern and remaining counts."""
    redis_store = RedisStore(REDIS_URL, prefix=prefix)
    embedded = EmbeddedStore()
    sequence = [1, 3, 2, 5, 1, 1, 4, 2]
    answers = []
    for store in (redis_store, embedded):
        seen = []
        for i, cost in enumerate(sequence):
            (res,) = await store.rate_limit([Bucket("tok", per_minute=1, burst=8, cost=cost)])
            seen.append((res.allowed, res.remaining, res.limit))
        answers.append(seen)
    assert answers[0] == answers[1]
    assert [a for a, _, _ in answers[0]] == [True, True, True, False, True, True, False, False]
    await redis_store.close()


async def test_all_buckets_charged_atomically(prefix):
    store = RedisStore(REDIS_URL, prefix=prefix)
    tight = Bucket("tenant", per_minute=1, burst=1)
    loose = Bucket("key", per_minute=1, burst=5)
    assert all(r.allowed for r in await store.rate_limit([loose, tight]))
    refused = await store.rate_limit([loose, tight])
    assert not refused[0].allowed and refused[1].retry_after_ms > 50_000
    (loose_now,) = await store.rate_limit([Bucket("key", per_minute=1, burst=5, cost=0)])
    assert loose_now.remaining == 4  # the refused call did not spend the loose bucket
    await store.close()


async def test_keys_shared_through_redis(prefix):
    cli_side = KeyStore(RedisStore(REDIS_URL, prefix=prefix), b"pep")
    replica = KeyStore(RedisStore(REDIS_URL, prefix=prefix), b"pep")
    key_id, plaintext = await cli_side.create("user", "acme")
    assert (await replica.verify(plaintext)).key_id == key_id
    await cli_side.revoke(key_id)
    assert await replica.verify(plaintext) is None


async def test_unreachable_redis_fail_closed_and_fail_open():
    dead = RedisStore(DEAD_URL, prefix="x", socket_timeout_s=0.2)
    with pytest.raises(StoreUnavailable):
        await dead.ping()
    closed = RateLimiter(dead, _settings(burst=1), fail_mode="closed")
    with pytest.raises(Overloaded):
        await closed.admit(ALICE)
    assert closed.counters.get("ratelimit_fail_closed") == 1
    opened = RateLimiter(dead, _settings(burst=1), fail_mode="open")
    assert (await opened.admit(ALICE)).degraded
    with pytest.raises(RateLimited):  # the local limiter still enforces the limit
        await opened.admit(ALICE)
    assert opened.counters.get("ratelimit_fail_open") == 2
    await dead.close()


async def test_audit_goes_to_jsonl_and_redis_stream(prefix, tmp_path):
    import redis.asyncio as aioredis

    store = RedisStore(REDIS_URL, prefix=prefix)
    logger = AuditLogger([JsonlSink(tmp_path / "audit.jsonl"), RedisStreamSink(store, "audit", 1000)])
    record = AuditRecord("req-1", "/v1/chat/completions", "allowed", key_id="a1", tenant="acme", model="m",
                         redacted_types={"EMAIL": 1}, prompt_tokens=5, completion_tokens=7, latency_ms=12.5, prompt_text="secret prompt")
    await logger.log(record)
    line = json.loads((tmp_path / "audit.jsonl").read_text())
    assert line["key_id"] == "a1" and line["redacted_types"] == {"EMAIL": 1}
    assert "prompt_text" not in line  # prompts stay out unless configured
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    entries = await client.xrange(f"{prefix}:audit")
    assert json.loads(entries[0][1]["record"])["request_id"] == "req-1"
    await client.aclose()
    await store.close()


async def test_audit_sink_failure_follows_fail_mode(tmp_path):
    dead = RedisStore(DEAD_URL, prefix="x", socket_timeout_s=0.2)
    record = AuditRecord("req-2", "/v1/models", "allowed")
    opened = AuditLogger([JsonlSink(tmp_path / "a.jsonl"), RedisStreamSink(dead, "audit", 10)], fail_mode="open")
    await opened.log(record)
    assert opened.counters.get("audit_write_failed") == 1
    assert (tmp_path / "a.jsonl").read_text().count("\n") == 1  # the healthy sink still got it
    closed = AuditLogger([RedisStreamSink(dead, "audit", 10)], fail_mode="closed")
    with pytest.raises(Overloaded):
        await closed.log(record)
    await dead.close()
