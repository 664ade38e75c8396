"""Redis backend of the shared store: hashes, one atomic GCRA Lua script, and audit streams."""

from __future__ import annotations

import json
import logging

from security.store.base import StoreUnavailable
from security.store.gcra import Bucket, BucketResult

log = logging.getLogger(__name__)

# Mirror of security.store.gcra.apply. One script so check-and-charge of every bucket is atomic
# across all replicas; the clock is Redis's own (TIME), so replica clock skew cannot matter.
# ARGV per bucket: emission_interval_ms, burst, cost, force. Floats travel as strings because
# Redis truncates Lua numbers to integers on return.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = #KEYS
local base, newtat, ok = {}, {}, {}
local all_ok = true
for i = 1, n do
  local interval = tonumber(ARGV[(i-1)*4 + 1])
  local burst = tonumber(ARGV[(i-1)*4 + 2])
  local cost = tonumber(ARGV[(i-1)*4 + 3])
  local force = ARGV[(i-1)*4 + 4] == '1'
  local stored = redis.call('GET', KEYS[i])
  local tat = now
  if stored then tat = math.max(tonumber(stored), now) end
  base[i] = tat
  newtat[i] = tat + cost * interval
  ok[i] = force or (newtat[i] - now <= burst * interval + 1e-9)
  if not ok[i] then all_ok = false end
end
local out = {}
for i = 1, n do
  local interval = tonumber(ARGV[(i-1)*4 + 1])
  local burst = tonumber(ARGV[(i-1)*4 + 2])
  local cost = tonumber(ARGV[(i-1)*4 + 3])
  local tau = burst * interval
  local effective = base[i]
  if all_ok then
    effective = newtat[i]
    if cost > 0 then
      redis.call('SET', KEYS[i], string.format('%.6f', newtat[i]), 'PX', math.max(1, math.ceil(newtat[i] - now)))
    end
  end
  local remaining = math.max(0, math.floor((tau - (effective - now)) / interval + 1e-9))
  local retry = 0
  if not ok[i] then retry = math.max(0, math.ceil(newtat[i] - tau - now)) end
  out[i] = {all_ok and 1 or 0, remaining, math.max(0, math.ceil(effective - now)), retry}
end
return out
"""


class RedisStore:
    """`SharedStore` on Redis; every key is namespaced with `prefix:`.

    Args:
        url: redis:// URL (may carry a password; never logged).
        prefix: namespace for every key this store touches.
        socket_timeout_s: per-operation timeout so a dead Redis fails fast into the fail mode.
    """

    def __init__(self, url: str, prefix: str = "aegis", socket_timeout_s: float = 0.5) -> None:
        import redis.asyncio as aioredis

        self._prefix = prefix
        self._client = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry_on_timeout=False,
        )
        self._script = self._client.register_script(_GCRA_LUA)

    def _k(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    async def _call(self, coro):
        import redis

        try:
            return await coro
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc

    async def ping(self) -> bool:
        return bool(await self._call(self._client.ping()))

    async def hget(self, name: str, field: str) -> str | None:
        return await self._call(self._client.hget(self._k(name), field))

    async def hset(self, name: str, field: str, value: str) -> None:
        await self._call(self._client.hset(self._k(name), field, value))

    async def hsetnx(self, name: str, field: str, value: str) -> bool:
        return bool(await self._call(self._client.hsetnx(self._k(name), field, value)))

    async def hdel(self, name: str, field: str) -> bool:
        return bool(await self._call(self._client.hdel(self._k(name), field)))

    async def hgetall(self, name: str) -> dict[str, str]:
        return dict(await self._call(self._client.hgetall(self._k(name))))

    async def rate_limit(self, buckets: list[Bucket]) -> list[BucketResult]:
        keys = [self._k(f"rl:{b.key}") for b in buckets]
        argv: list[str] = []
        for b in buckets:
            argv += [repr(b.emission_interval_ms), repr(float(b.burst)), repr(float(b.cost)), "1" if b.force else "0"]
        rows = await self._call(self._script(keys=keys, args=argv))
        return [
            BucketResult(
                key=b.key,
                allowed=bool(int(row[0])),
                limit=int(b.burst),
                remaining=int(row[1]),
                reset_ms=int(row[2]),
                retry_after_ms=int(row[3]),
            )
            for b, row in zip(buckets, rows)
        ]

    async def xadd(self, stream: str, record: dict, maxlen: int) -> str:
        """Append one record (as a JSON field) to a capped stream; returns the entry id."""
        return await self._call(
            self._client.xadd(self._k(stream), {"record": json.dumps(record, sort_keys=True)}, maxlen=maxlen, approximate=True)
        )

    async def close(self) -> None:
        await self._client.aclose()
