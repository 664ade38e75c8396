"""In-process shared store: the no-Redis backend, meant to live in one named Ray actor."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from security.store import gcra
from security.store.gcra import Bucket, BucketResult


class EmbeddedStore:
    """Hashes and GCRA state in memory; hashes optionally persisted to a JSON file.

    Host one instance per cluster (a named, detached Ray actor) and every ingress replica sees the
    same counters and key records. With `persist_path`, hash writes go to that file under an
    exclusive `flock`, and reads reload it when its mtime changes: the `keys` CLI run as a separate
    process on the same host (no Redis) writes the same file, and the running cluster sees a new
    or revoked key on its next read. Rate-limit state is memory-only (it is short-lived by nature).
    Multi-host clusters should use Redis; the file is local to the actor's node.

    Args:
        persist_path: JSON file for hash data, created with mode 0600; None keeps all in memory.
        clock_ms: time source in epoch milliseconds (tests pass a fake clock).
    """

    def __init__(self, persist_path: str | os.PathLike[str] | None = None, clock_ms=None) -> None:
        self._path = Path(persist_path) if persist_path is not None else None
        self._clock_ms = clock_ms or (lambda: time.time() * 1000.0)
        self._hashes: dict[str, dict[str, str]] = {}
        self._tats: dict[str, tuple[float, float]] = {}  # key -> (tat_ms, expires_at_ms)
        self._loaded_stamp: tuple[int, int] | None = None
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._reload_if_changed()

    # -- persistence -------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self._path.stat()  # type: ignore[union-attr]
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _reload_if_changed(self) -> None:
        if self._path is None:
            return
        stamp = self._stamp()
        if stamp == self._loaded_stamp:
            return
        if stamp is None:
            self._hashes = {}
        else:
            with self._locked(shared=True):
                self._hashes = self._read_file()
            stamp = self._stamp()
        self._loaded_stamp = stamp

    def _read_file(self) -> dict[str, dict[str, str]]:
        try:
            text = self._path.read_text(encoding="utf-8")  # type: ignore[union-attr]
        except FileNotFoundError:
            return {}
        return json.loads(text)["hashes"] if text.strip() else {}

    @contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        lock_path = self._path.with_suffix(self._path.suffix + ".lock")  # type: ignore[union-attr]
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _mutate(self, name: str, change) -> object:
        """Read-modify-write one hash; under the file lock when persisted so CLI writes never clash."""
        if self._path is None:
            return change(self._hashes.setdefault(name, {}))
        with self._locked():
            self._hashes = self._read_file()
            result = change(self._hashes.setdefault(name, {}))
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".store-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": 1, "hashes": self._hashes}, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)  # atomic: a reader never sees half a file
            self._loaded_stamp = self._stamp()
        return result

    # -- SharedStore -------------------------------------------------------------------------

    async def ping(self) -> bool:
        return True

    async def hget(self, name: str, field: str) -> str | None:
        self._reload_if_changed()
        return self._hashes.get(name, {}).get(field)

    async def hset(self, name: str, field: str, value: str) -> None:
        self._mutate(name, lambda h: h.__setitem__(field, value))

    async def hsetnx(self, name: str, field: str, value: str) -> bool:
        def change(h: dict[str, str]) -> bool:
            if field in h:
                return False
            h[field] = value
            return True

        return bool(self._mutate(name, change))

    async def hdel(self, name: str, field: str) -> bool:
        return self._mutate(name, lambda h: h.pop(field, None) is not None) is True

    async def hgetall(self, name: str) -> dict[str, str]:
        self._reload_if_changed()
        return dict(self._hashes.get(name, {}))

    async def rate_limit(self, buckets: list[Bucket]) -> list[BucketResult]:
        # No await between read and write: atomic within the actor's event loop.
        now_ms = self._clock_ms()
        stored: list[float | None] = []
        for bucket in buckets:
            entry = self._tats.get(bucket.key)
            stored.append(entry[0] if entry and entry[1] > now_ms else None)
        new_tats, results = gcra.apply(buckets, stored, now_ms)
        for bucket, tat in zip(buckets, new_tats):
            if tat is not None:
                self._tats[bucket.key] = (tat, tat)  # state is worthless once TAT has passed
        if len(self._tats) > 100_000:
            self._tats = {k: v for k, v in self._tats.items() if v[1] > now_ms}
        return results

    async def close(self) -> None:
        return None
