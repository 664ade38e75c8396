"""`ToolPool`: one tool served by a pool of Ray actors with their own resources and limits.

Cancellation, as Ray 2.55 defines it for actor tasks: `ray.cancel(ref)` on a running task of an
async actor cancels its `asyncio.Task` (the tool sees CancelledError at its next await);
`force=True` is refused for actor tasks. So a call that outlives `timeout_s` is cancelled with
`ray.cancel`, then given `cancel_grace_s` to stop. The actor runs a sync tool in a thread and,
when cancelled, settles the call only once that thread has returned (Python cannot stop a
thread), so a call that has not settled after the grace period is stuck for real: a sync tool
spinning, or an async one that ignores cancellation or blocks its loop. Then the pool kills the
actor with `ray.kill(no_restart=False)` and Ray restarts it. Either way the work is stopped, not
abandoned, and the caller gets ToolTimeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import os
import time
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from serve_app.agent_tools.pool_config import ToolPoolConfig, tune_pool_config
from serve_app.agent_tools.spec import ToolSpec
from common.errors import (
    Overloaded, ToolCrashed, ToolError, ToolFailed, ToolTimeout, find_aegis_error)

__all__ = ["ToolPool"]

logger = logging.getLogger("ray.serve")

_KILL_WAIT_S = 30.0
# How long a call waits for a crashed or killed actor to come back (process start + tool init,
# slow on a loaded machine) before it fails with ToolCrashed; its own timeout_s starts after.
_RESTART_WAIT_S = 30.0


class _ToolActor:
    """Holds one instance of the tool; async tools run on the loop, sync ones in threads."""

    def __init__(self, spec: ToolSpec, max_concurrency: int) -> None:
        self._spec = spec
        self._instance = spec.instantiate()
        function = self._instance if inspect.isfunction(self._instance) else getattr(
            self._instance, "__call__", self._instance)
        self._is_async = inspect.iscoroutinefunction(function)
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=max_concurrency)

    async def call(self, arguments: dict[str, Any]) -> Any:
        model = self._spec.validate(arguments)
        kwargs = {name: getattr(model, name) for name in type(model).model_fields}
        if self._is_async:
            return await self._instance(**kwargs)
        work = asyncio.get_running_loop().run_in_executor(
            self._threads, functools.partial(self._instance, **kwargs))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # Settle only when the thread is done, so the pool can tell stopped from stuck.
            with contextlib.suppress(Exception):
                await work
            raise

    async def method(self, name: str, kwargs: dict[str, Any]) -> Any:
        """Run one of the tool's declared `admin_methods` (e.g. add_documents), nothing else."""
        if name not in getattr(self._instance, "admin_methods", ()):
            raise ToolError(f"tool '{self._spec.name}' has no method '{name}'", code="unknown_method")
        return await getattr(self._instance, name)(**kwargs)

    async def pid(self) -> int:
        return os.getpid()


class ToolPool:
    """Invoke one tool through a pool of Ray actors: least-loaded pick, timeout, crash reporting."""

    def __init__(self, spec: ToolSpec, config: ToolPoolConfig | dict[str, Any] | None = None) -> None:
        """Start `pool_size` actors for `spec` (Ray must be initialised)."""
        self.spec = spec
        self.config = (config if isinstance(config, ToolPoolConfig)
                       else ToolPoolConfig.model_validate(config or {}))
        options: dict[str, Any] = {
            "num_cpus": self.config.num_cpus, "num_gpus": self.config.num_gpus,
            "max_concurrency": self.config.max_concurrency,
            "max_restarts": self.config.max_restarts,
            # A tool call is never re-run behind the caller's back: it may have side effects.
            "max_task_retries": 0,
        }
        if self.config.memory_bytes is not None:
            options["memory"] = self.config.memory_bytes
        actor_class = ray.remote(_ToolActor).options(**options)
        self._actors = [actor_class.remote(spec, self.config.max_concurrency)
                        for _ in range(self.config.pool_size)]
        self._in_flight = [0] * self.config.pool_size
        # Actors whose last call crashed: Ray is restarting them, and a call sent meanwhile can
        # fail with ActorUnavailableError although the tool is fine. Until one answers a ping
        # (`pid`, no side effects) calls wait for it rather than fail.
        self._restarting = [False] * self.config.pool_size

    def tuned(self, live: dict[str, Any]) -> ToolPoolConfig:
        """This pool's config with new values of the live knobs; assign it to `config` to apply.

        Live knobs (timeout_s, cancel_grace_s, max_queued_calls) are read at every call, so a
        new config takes effect on the next call without restarting actors.

        Raises:
            ValueError: a knob that is not live, or an invalid value.
        """
        return tune_pool_config(self.config, live, f"tool '{self.spec.name}'")

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight)

    async def ready(self, timeout_s: float = 60.0) -> list[int]:
        """Wait until every actor has started; their process ids."""
        refs = [actor.pid.remote() for actor in self._actors]
        return await asyncio.wait_for(asyncio.gather(*[_future(r) for r in refs]), timeout_s)

    async def invoke(self, arguments: Any) -> Any:
        """Validate `arguments` and run the tool on the least-loaded actor.

        Raises:
            InvalidRequest: bad arguments (before any actor is involved), `param` = the field.
            AegisError: what the tool raised (e.g. ToolError), unchanged.
            ToolTimeout: the call ran past `timeout_s` and was cancelled.
            ToolCrashed: the actor died during the call (it is restarted).
            ToolFailed: the tool raised an unexpected error (logged, not shown).
            Overloaded: every actor busy and `max_queued_calls` calls already waiting.
        """
        payload = self.spec.validate(arguments).model_dump(mode="python")
        return await self._run(lambda actor: actor.call.remote(payload))

    async def call_method(self, name: str, kwargs: dict[str, Any]) -> Any:
        """Run a declared admin method of the tool (document management) under the same limits."""
        return await self._run(lambda actor: actor.method.remote(name, kwargs))

    async def _run(self, submit: Any) -> Any:
        capacity = self.config.pool_size * self.config.max_concurrency
        if self.in_flight >= capacity + self.config.max_queued_calls:
            raise Overloaded(f"tool '{self.spec.name}' is at capacity; retry later")
        index = min(range(len(self._actors)), key=self._in_flight.__getitem__)
        actor = self._actors[index]
        self._in_flight[index] += 1
        try:
            if self._restarting[index]:
                await self._wait_restarted(actor)
                self._restarting[index] = False
            ref = submit(actor)
            result = _future(ref)
            try:
                return await asyncio.wait_for(asyncio.shield(result), self.config.timeout_s)
            except TimeoutError:
                await self._cancel(index, ref, result)
                raise ToolTimeout(f"tool '{self.spec.name}' did not finish within "
                                  f"{self.config.timeout_s:g} s and was cancelled") from None
        except (ActorDiedError, ActorUnavailableError, RayActorError):
            self._restarting[index] = True
            raise ToolCrashed(f"tool '{self.spec.name}' crashed during the call; its actor "
                              "is being restarted") from None
        except RayTaskError as exc:
            error = find_aegis_error(exc)
            if error is not None:
                raise error from None
            logger.error("tool %s failed: %s", self.spec.name, exc)
            raise ToolFailed(f"tool '{self.spec.name}' failed") from None
        finally:
            self._in_flight[index] -= 1

    async def _wait_restarted(self, actor: Any) -> None:
        """Return once a restarting actor answers; ToolCrashed if it does not within
        `_RESTART_WAIT_S` or is dead for good (`max_restarts` used up)."""
        deadline = time.monotonic() + _RESTART_WAIT_S
        while True:
            try:
                await asyncio.wait_for(_future(actor.pid.remote()), max(0.0, deadline - time.monotonic()))
                return
            except ActorUnavailableError:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.2)  # still restarting: the next ping may reach it
            except (TimeoutError, ActorDiedError, RayActorError):
                break
        raise ToolCrashed(f"tool '{self.spec.name}' is unavailable: its actor crashed and has not "
                          "come back") from None

    async def _cancel(self, index: int, ref: Any, result: asyncio.Future[Any]) -> None:
        actor = self._actors[index]
        ray.cancel(ref)
        if await _settled(result, self.config.cancel_grace_s):
            return
        logger.warning("tool %s ignored cancellation for %.1f s; restarting its actor",
                       self.spec.name, self.config.cancel_grace_s)
        ray.kill(actor, no_restart=False)
        self._restarting[index] = True
        # ray.kill only asks: wait for the call to fail with the actor's death, so the stuck
        # work has stopped (and the next call goes to the restarted actor) when we return.
        if not await _settled(result, _KILL_WAIT_S):
            logger.error("tool %s: actor still not dead %.0f s after ray.kill",
                         self.spec.name, _KILL_WAIT_S)

    def shutdown(self) -> None:
        """Kill every actor for good."""
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors = []


def _future(ref: Any) -> asyncio.Future[Any]:
    future = asyncio.wrap_future(ref.future())
    # The outcome of a timed-out call may arrive after nobody awaits it: retrieve it anyway.
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


async def _settled(future: asyncio.Future[Any], timeout_s: float) -> bool:
    """Whether `future` finished (with any outcome) within `timeout_s`."""
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except TimeoutError:
        return False
    except Exception:  # noqa: BLE001 - TaskCancelledError, ActorDiedError: settled all the same
        pass
    return True
