"""One structured audit record per request, written to JSON Lines and/or a Redis stream."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from security.counters import Counters
from security.settings import FailMode
from common.errors import Overloaded

log = logging.getLogger(__name__)


@dataclass
class AuditRecord:
    """What happened to one request. Never holds a credential; prompt text only when configured.

    `decision` is one of: allowed, flagged, blocked, rate_limited, unauthenticated, forbidden,
    too_large, error.
    """

    request_id: str
    route: str
    decision: str
    time: float = field(default_factory=time.time)
    key_id: str | None = None
    subject: str | None = None
    tenant: str | None = None
    model: str | None = None
    status_code: int | None = None
    reason: str | None = None
    injection_score: float | None = None
    # Registered templates whose slots were scanned instead of their whole user turn.
    prompt_templates: list[str] | None = None
    # Which live policy decided (`SecuritySettings.live_digest`): it changes with each reconfigure.
    policy_version: str | None = None
    redacted_types: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    degraded: bool = False
    prompt_text: str | None = None
    # Tool and workflow calls: which one ran, and a digest of its arguments (never the values).
    tool: str | None = None
    workflow: str | None = None
    arguments_sha256: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class AuditSink(Protocol):
    async def write(self, record: dict) -> None: ...


class JsonlSink:
    """Appends one JSON object per line; opened O_APPEND so concurrent writers never interleave lines
    (each record is one `write` of under PIPE_BUF-ish size on a local file).

    Args:
        path: file to append to (created 0600, parent directories made).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    async def write(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        await asyncio.to_thread(self._append, line)


class RedisStreamSink:
    """XADDs records to a capped Redis stream through a `RedisStore`."""

    def __init__(self, store, stream: str, maxlen: int) -> None:
        self._store = store
        self._stream = stream
        self._maxlen = maxlen

    async def write(self, record: dict) -> None:
        await self._store.xadd(self._stream, record, self._maxlen)


class AuditLogger:
    """Writes each record to every sink, applying the fail mode when a sink fails.

    Fail-open: the failure is logged and counted (`audit_write_failed`), the request goes on.
    Fail-closed: also counted, then `Overloaded` (503) is raised, so nothing is served unaudited.

    Args:
        sinks: where records go.
        fail_mode: "open" or "closed".
        include_prompt_text: keep `prompt_text` in records (off by default: prompts hold PII).
        counters: where to count.
    """

    def __init__(self, sinks: list[AuditSink], fail_mode: FailMode = "open", include_prompt_text: bool = False, counters: Counters | None = None) -> None:
        self._sinks = sinks
        self._fail_mode = fail_mode
        self._include_prompt = include_prompt_text
        self.counters = counters or Counters()

    async def log(self, record: AuditRecord) -> None:
        """Write one record.

        Raises:
            Overloaded: a sink failed and fail_mode is closed.
        """
        data = record.to_dict()
        if not self._include_prompt:
            data.pop("prompt_text", None)
        failed = False
        for sink in self._sinks:
            try:
                await sink.write(data)
            except Exception as exc:  # any sink failure is handled by the one policy below
                failed = True
                self.counters.inc("audit_write_failed")
                log.error("audit sink %s failed: %s", type(sink).__name__, type(exc).__name__)
        if not failed:
            self.counters.inc("audit_written")
        elif self._fail_mode == "closed":
            raise Overloaded("Audit log unavailable, request not processed.", retry_after_s=1.0)
