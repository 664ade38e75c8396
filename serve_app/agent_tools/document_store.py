"""Where `search_documents` keeps its collections: a local .npz file (default) or Redis."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.errors import ToolError

__all__ = ["Collection", "Document", "DocumentStore", "FileDocumentStore", "RedisDocumentStore",
           "check_collection_name"]

_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_-]{1,96}$")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Collection:
    """Documents and their unit-norm vectors, row i of `vectors` belonging to `documents[i]`."""

    documents: list[Document]
    vectors: np.ndarray  # (n, dim) float32

    @classmethod
    def empty(cls) -> Collection:
        return cls([], np.zeros((0, 0), dtype=np.float32))


class DocumentStore(Protocol):
    async def load(self, collection: str) -> Collection: ...

    async def upsert(self, collection: str, documents: Sequence[Document],
                     vectors: np.ndarray) -> int: ...

    async def delete(self, collection: str, ids: Sequence[str]) -> int: ...

    async def close(self) -> None: ...


def check_collection_name(name: str) -> str:
    """The name, if it is safe as a file name and a Redis key part.

    Raises:
        ToolError: the name has characters other than letters, digits, _ and -, or is too long.
    """
    if not isinstance(name, str) or not _COLLECTION_RE.match(name):
        raise ToolError(f"collection must match {_COLLECTION_RE.pattern}, got {name!r}",
                        param="collection", code="invalid_collection")
    return name


def _merge(existing: Collection, documents: Sequence[Document], vectors: np.ndarray) -> Collection:
    if existing.documents and existing.vectors.shape[1] != vectors.shape[1]:
        raise ToolError(f"embedding dimension {vectors.shape[1]} differs from the collection's "
                        f"{existing.vectors.shape[1]}", code="dimension_mismatch")
    new_ids = {d.id for d in documents}
    keep = [i for i, d in enumerate(existing.documents) if d.id not in new_ids]
    docs = [existing.documents[i] for i in keep] + list(documents)
    old = existing.vectors[keep] if keep else np.zeros((0, vectors.shape[1]), dtype=np.float32)
    return Collection(docs, np.concatenate([old, vectors.astype(np.float32)]))


class FileDocumentStore:
    """One `<collection>.npz` per collection in `directory`, replaced atomically on each write.

    Several actors on one node may share the directory: writers serialise on a lock file and
    re-read before merging; readers reload when the file's mtime or size changes.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, tuple[tuple[int, int], Collection]] = {}

    def _path(self, collection: str) -> Path:
        return self._dir / f"{check_collection_name(collection)}.npz"

    async def load(self, collection: str) -> Collection:
        path = self._path(collection)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return Collection.empty()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(collection)
        if cached and cached[0] == stamp:
            return cached[1]
        with np.load(path, allow_pickle=False) as data:
            records = json.loads(data["records"].tobytes().decode("utf-8"))
            vectors = data["vectors"].astype(np.float32)
        loaded = Collection([Document(**r) for r in records], vectors)
        self._cache[collection] = (stamp, loaded)
        return loaded

    async def upsert(self, collection: str, documents: Sequence[Document],
                     vectors: np.ndarray) -> int:
        with self._locked(collection):
            merged = _merge(await self.load(collection), documents, vectors)
            self._write(collection, merged)
        return len(merged.documents)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        with self._locked(collection):
            current = await self.load(collection)
            drop = set(ids)
            keep = [i for i, d in enumerate(current.documents) if d.id not in drop]
            self._write(collection, Collection([current.documents[i] for i in keep],
                                               current.vectors[keep] if keep else current.vectors[:0]))
        return len(current.documents) - len(keep)

    async def close(self) -> None:
        self._cache.clear()

    def _locked(self, collection: str) -> Any:
        return _FileLock(self._dir / f"{check_collection_name(collection)}.lock")

    def _write(self, collection: str, data: Collection) -> None:
        records = json.dumps([{"id": d.id, "text": d.text, "metadata": d.metadata}
                              for d in data.documents]).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self._dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, vectors=data.vectors.astype(np.float32),
                         records=np.frombuffer(records, dtype=np.uint8))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path(collection))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._cache.pop(collection, None)


class _FileLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: Any = None

    def __enter__(self) -> None:
        self._handle = open(self._path, "a")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


class RedisDocumentStore:
    """A hash `<prefix>:<collection>:docs` (id -> JSON with a base64 float32 vector) per collection.

    A counter `<prefix>:<collection>:version`, bumped in the same transaction as each write,
    lets every reader keep a decoded copy and re-read only after a change.
    """

    def __init__(self, url: str, prefix: str = "aegis:docs") -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url)
        self._prefix = prefix
        self._cache: dict[str, tuple[bytes | None, Collection]] = {}

    def _keys(self, collection: str) -> tuple[str, str]:
        base = f"{self._prefix}:{check_collection_name(collection)}"
        return f"{base}:docs", f"{base}:version"

    async def load(self, collection: str) -> Collection:
        docs_key, version_key = self._keys(collection)
        version = await self._redis.get(version_key)
        cached = self._cache.get(collection)
        if cached and version is not None and cached[0] == version:
            return cached[1]
        raw = await self._redis.hgetall(docs_key)
        documents, rows = [], []
        for doc_id in sorted(raw):  # a stable order, so equal scores rank the same every time
            record = json.loads(raw[doc_id])
            documents.append(Document(doc_id.decode("utf-8"), record["text"], record["metadata"]))
            rows.append(np.frombuffer(base64.b64decode(record["vector"]), dtype=np.float32))
        loaded = (Collection(documents, np.stack(rows)) if rows else Collection.empty())
        self._cache[collection] = (version, loaded)
        return loaded

    async def upsert(self, collection: str, documents: Sequence[Document],
                     vectors: np.ndarray) -> int:
        existing = await self.load(collection)
        _merge(existing, [], vectors)  # dimension check before writing anything
        docs_key, version_key = self._keys(collection)
        mapping = {
            d.id: json.dumps({"text": d.text, "metadata": d.metadata,
                              "vector": base64.b64encode(v.astype(np.float32).tobytes()).decode()})
            for d, v in zip(documents, vectors, strict=True)
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(docs_key, mapping=mapping)
            pipe.incr(version_key)
            pipe.hlen(docs_key)
            _, _, count = await pipe.execute()
        return int(count)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        docs_key, version_key = self._keys(collection)
        if not ids:
            return 0
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(docs_key, *ids)
            pipe.incr(version_key)
            removed, _ = await pipe.execute()
        return int(removed)

    async def close(self) -> None:
        await self._redis.aclose()
