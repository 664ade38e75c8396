"""Integration-tier fixtures shared by the Redis-backed tests."""

from __future__ import annotations

import uuid

import pytest

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
async def prefix():
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    import redis.asyncio as aioredis

    name = f"aegis-test-{uuid.uuid4().hex[:10]}"
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception:
        pytest.fail("Redis at 127.0.0.1:6379 is required for integration tests")
    yield name
    keys = [k async for k in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
