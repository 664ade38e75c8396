"""How every deployment takes a live `user_config` update: refuse a bad one, keep the last good one."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


class LiveUpdates:
    """The `reconfigure()` discipline for live knobs, as Envoy NACKs a bad xDS update.

    A bad `user_config` raised from `reconfigure()` on a running replica makes Serve replace it
    with replicas that fail the same way: one typo in a live knob takes every replica of the
    deployment down (measured on the Ingress: DEPLOY_FAILED, 503 for every request). So a running
    replica refuses the update, keeps what it runs, logs an error and calls `on_refused`. A
    replica's first `reconfigure()` (right after `__init__`) raises instead: it has no setting it
    was told to keep, and Serve reports the failed start with the message.

    Args:
        what: the deployment, named in the log.
        on_refused: called with no arguments when an update is refused (a metric).
    """

    def __init__(self, what: str, on_refused: Callable[[], None] | None = None) -> None:
        self._what = what
        self._on_refused = on_refused
        self.applied = False
        # The latest refused update, `{"time": unix s, "error": message}`, until one is applied.
        self.last_refused: dict[str, Any] | None = None

    def apply(self, update: Callable[[], T]) -> T | None:
        """Run `update` (which validates, then swaps); None if a running replica refused it."""
        try:
            return self._accept(update())
        except Exception as exc:
            return self._refuse(exc)

    async def apply_async(self, update: Callable[[], Awaitable[T]]) -> T | None:
        """`apply` for an update that awaits (e.g. loads a model off the event loop)."""
        try:
            return self._accept(await update())
        except Exception as exc:
            return self._refuse(exc)

    def _accept(self, result: T) -> T:
        self.applied, self.last_refused = True, None
        return result

    def _refuse(self, exc: Exception) -> None:
        if not self.applied:
            raise exc
        logger.error("%s: live update refused, the running settings stay: %s", self._what, exc)
        self.last_refused = {"time": time.time(), "error": str(exc)}
        if self._on_refused is not None:
            self._on_refused()
        return None
