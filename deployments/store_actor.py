"""The shared store inside Ray: one named detached actor hosting `EmbeddedStore`, and its proxy.

Every ingress replica of a cluster (and every application using the same state directory) gets
the same actor by name, so API-key records and rate-limit counters are shared exactly as they
would be in Redis. With `REDIS_URL` set, `open_store` returns a `RedisStore` instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from security.settings import SecuritySettings
from security.store import Bucket, BucketResult, SharedStore, StoreUnavailable, build_store

logger = logging.getLogger("ray.serve")

STORE_NAMESPACE = "aegis"


def store_actor_name(settings: SecuritySettings) -> str:
    """The actor's name: one per store file, so two apps with different state dirs never share."""
    path = str(settings.embedded_store_path().resolve())
    return "aegis-store-" + hashlib.sha256(path.encode()).hexdigest()[:12]


class ActorStore:
    """`SharedStore` that forwards each call to the named `EmbeddedStore` actor.

    A dead actor, an unreachable node or a call slower than `timeout_s` raises `StoreUnavailable`,
    so the security layer's fail-open/closed setting applies just as it does to a Redis outage.
    After a failure the next call looks the actor up again (`get_if_exists` recreates it when it
    is gone; its key records come back from the store file).

    Args:
        settings: where the store file lives (its resolved path also names the actor).
        timeout_s: per-call limit once the actor answers.
        start_timeout_s: limit for the first call to a new handle, which may start the actor (a
            new worker process: seconds on a busy machine).
    """

    def __init__(self, settings: SecuritySettings, timeout_s: float = 5.0,
                 start_timeout_s: float = 60.0) -> None:
        self._path = str(settings.embedded_store_path().resolve())
        self._name = store_actor_name(settings)
        self._timeout_s = timeout_s
        self._start_timeout_s = start_timeout_s
        self._actor: Any = None
        self._started = False

    def _handle(self) -> Any:
        if self._actor is None:
            import ray

            from security.store import EmbeddedStore

            self._actor = ray.remote(EmbeddedStore).options(
                name=self._name, namespace=STORE_NAMESPACE, lifetime="detached",
                get_if_exists=True, num_cpus=0, max_restarts=-1,
                # One event loop, no threads: each GCRA update runs with no await inside it,
                # so it is atomic across every replica calling in.
                max_concurrency=1000,
            ).remote(self._path)
        return self._actor

    async def _call(self, method: str, *args: Any) -> Any:
        from ray.exceptions import RayActorError, RayError

        try:
            ref = getattr(self._handle(), method).remote(*args)
            timeout_s = self._timeout_s if self._started else self._start_timeout_s
            result = await asyncio.wait_for(ref, timeout=timeout_s)
            self._started = True
            return result
        except asyncio.TimeoutError as exc:
            raise StoreUnavailable(f"store actor {self._name} did not answer in time") from exc
        except (RayActorError, RayError, ConnectionError) as exc:
            # Look the actor up (or recreate it) on the next call.
            self._actor, self._started = None, False
            raise StoreUnavailable(f"store actor {self._name} unavailable: {type(exc).__name__}") from exc

    async def ping(self) -> bool:
        return bool(await self._call("ping"))

    async def hget(self, name: str, field: str) -> str | None:
        return await self._call("hget", name, field)

    async def hset(self, name: str, field: str, value: str) -> None:
        await self._call("hset", name, field, value)

    async def hsetnx(self, name: str, field: str, value: str) -> bool:
        return bool(await self._call("hsetnx", name, field, value))

    async def hdel(self, name: str, field: str) -> bool:
        return bool(await self._call("hdel", name, field))

    async def hgetall(self, name: str) -> dict[str, str]:
        return dict(await self._call("hgetall", name))

    async def rate_limit(self, buckets: list[Bucket]) -> list[BucketResult]:
        return list(await self._call("rate_limit", buckets))

    async def close(self) -> None:
        # The actor is shared and detached: it outlives any one replica.
        self._actor = None


def open_store(settings: SecuritySettings) -> SharedStore:
    """Redis when `redis_url` is set, else a proxy to the cluster's embedded-store actor."""
    if settings.redis_url is not None:
        return build_store(settings)
    return ActorStore(settings)
