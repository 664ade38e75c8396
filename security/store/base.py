"""The shared-store interface that rate limits, API keys and bootstrap state go through."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from security.store.gcra import Bucket, BucketResult


class StoreUnavailable(RuntimeError):
    """The shared store could not be reached; callers apply the configured fail mode."""


@runtime_checkable
class SharedStore(Protocol):
    """Async store with hash operations and atomic multi-bucket GCRA.

    Two backends honour it with the same semantics: `RedisStore` and `EmbeddedStore` (which the
    ingress can host inside one named Ray actor so every replica shares it). Arguments and return
    values are plain, picklable Python so an actor proxy can forward calls unchanged. Any backend
    raises `StoreUnavailable` when it cannot answer.
    """

    async def ping(self) -> bool: ...

    async def hget(self, name: str, field: str) -> str | None: ...

    async def hset(self, name: str, field: str, value: str) -> None: ...

    async def hsetnx(self, name: str, field: str, value: str) -> bool: ...

    async def hdel(self, name: str, field: str) -> bool: ...

    async def hgetall(self, name: str) -> dict[str, str]: ...

    async def rate_limit(self, buckets: list[Bucket]) -> list[BucketResult]: ...

    async def close(self) -> None: ...
