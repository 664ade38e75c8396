"""ToolRunner: owns one `ToolPool` per configured tool, so tools keep resources of their own.

The ingress decides who may call what (RBAC, tenant namespaces, output scanning); this
deployment only runs calls. Each tool's actors have their own CPUs, concurrency limit, timeout
and restarts (`deployments.tool_pool`), so a slow or hostile tool cannot starve a model replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.tool_pool import ToolPool
from serve_app.agent_tools.spec import load_tool
from serve_app.config import ToolConfig
from common.errors import AegisError, NotFound
from serve_app.live import LiveUpdates
from serve_app.metrics import tool_call

logger = logging.getLogger("ray.serve")

_READY_TIMEOUT_S = 120.0


@serve.deployment(name="ToolRunner")
class ToolRunner:
    """Runs tool calls on each tool's actor pool.

    Args:
        tools: `{name: ToolConfig as a dict}` from the app config.
        router: the Router handle, given to tools that declare `needs_router`.
    """

    async def __init__(self, tools: dict[str, dict[str, Any]], router: DeploymentHandle) -> None:
        self._pools: dict[str, ToolPool] = {}
        for name, raw in tools.items():
            config = ToolConfig.model_validate(raw)
            spec = load_tool(config.import_path(), name=name, description=config.description,
                             init_kwargs=config.init_kwargs)
            if getattr(spec.target, "needs_router", False):
                spec = dataclasses.replace(spec, init_kwargs={**spec.init_kwargs, "router": router})
            self._pools[name] = ToolPool(spec, config.pool)
        # A tool whose actors cannot start (a bad init_kwarg, no room for its resources) fails
        # the deployment now rather than the first call.
        await asyncio.gather(*(pool.ready(_READY_TIMEOUT_S) for pool in self._pools.values()))
        self._live = LiveUpdates("ToolRunner")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs per tool, `{name: {timeout_s, cancel_grace_s, max_queued_calls}}`.

        Everything is validated before any pool changes, so a bad value leaves every tool as it
        was; on a running replica it is refused rather than raised (`LiveUpdates`).
        """
        self._live.apply(lambda: self._tune(user_config))

    def _tune(self, user_config: dict[str, Any]) -> None:
        unknown = set(user_config) - set(self._pools)
        if unknown:
            raise ValueError(f"user_config names tools that are not configured: {sorted(unknown)}")
        tuned = {name: self._pools[name].tuned(live) for name, live in user_config.items()}
        for name, config in tuned.items():
            self._pools[name].config = config  # one assignment: a call sees old or new, never a mix

    async def check_health(self) -> None:
        await asyncio.gather(*(pool.ready(30.0) for pool in self._pools.values()))

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool: name, description, JSON-schema parameters, and what the ingress needs to know."""
        return [{"name": name, "description": pool.spec.description,
                 "parameters": pool.spec.parameters,
                 "tenant_scoped_arguments": list(getattr(pool.spec.target, "tenant_scoped_arguments", ())),
                 "admin_methods": list(getattr(pool.spec.target, "admin_methods", ())),
                 "model_input_arguments": list(getattr(pool.spec.target, "model_input_arguments", ())),
                 # None: the tool did not say, so the ingress scans every sentence-like string.
                 "untrusted_output": _optional_list(getattr(pool.spec.target, "untrusted_output", None))}
                for name, pool in self._pools.items()]

    async def invoke(self, name: str, arguments: Any) -> Any:
        """Run tool `name` with `arguments` (validated against its schema first).

        Raises:
            NotFound: no tool of that name.
            AegisError: see `ToolPool.invoke` (422 arguments, 400 refused, 502 crash, 504 timeout).
        """
        pool = self._pool(name)
        started, outcome = time.monotonic(), "error"
        try:
            result = await pool.invoke(arguments)
            outcome = "ok"
            return result
        except AegisError as exc:
            outcome = exc.code or exc.error_type
            raise
        finally:
            tool_call(name, outcome, time.monotonic() - started)

    async def call_method(self, name: str, method: str, kwargs: dict[str, Any]) -> Any:
        """Run a declared admin method of tool `name` (e.g. search_documents.add_documents)."""
        return await self._pool(name).call_method(method, kwargs)

    def _pool(self, name: str) -> ToolPool:
        pool = self._pools.get(name)
        if pool is None:
            raise NotFound(f"The tool `{name}` does not exist.", param="name", code="tool_not_found")
        return pool

    def __del__(self) -> None:
        for pool in self._pools.values():
            pool.shutdown()


def _optional_list(value: Any) -> list[str] | None:
    return None if value is None else list(value)
