"""Shared store backends (Redis, embedded) behind one async interface, and the GCRA math."""

from __future__ import annotations

from security.store.base import SharedStore, StoreUnavailable
from security.store.embedded import EmbeddedStore
from security.store.gcra import Bucket, BucketResult
from security.store.redis_store import RedisStore

__all__ = ["Bucket", "BucketResult", "EmbeddedStore", "RedisStore", "SharedStore", "StoreUnavailable", "build_store"]


def build_store(settings) -> SharedStore:
    """Redis when `redis_url` is set, else an `EmbeddedStore` persisting to the state dir.

    Inside a Ray cluster the ingress should not call this for the embedded case: it should host one
    `EmbeddedStore(settings.embedded_store_path())` in a named actor and pass a proxy instead.
    """
    if settings.redis_url is not None:
        return RedisStore(
            settings.redis_url.get_secret_value(), prefix=settings.redis_prefix, socket_timeout_s=settings.redis_timeout_s
        )
    return EmbeddedStore(settings.embedded_store_path())
