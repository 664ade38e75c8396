"""Router: maps a requested model name or alias to the deployment that serves it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from common.errors import InvalidRequest, ModelNotFound, find_aegis_error
from serve_app.pipeline import FilterChain, RequestContext
from serve_app.protocol import ChatCompletionRequest, new_id
from serve_app.serving import collect
from serve_app.function_calling import template_messages

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Router")
class Router:
    """Knows every configured model, its aliases and its task; resolves requests to deployments.

    Args:
        models: `{name: {"task": "generate"|"embed", "aliases": [...], "deployment": str}}`.
        handles: `{deployment name: DeploymentHandle}` for readiness checks.
    """

    def __init__(self, models: dict[str, dict[str, Any]],
                 handles: dict[str, DeploymentHandle]) -> None:
        self._models = models
        self._handles = handles
        self._names: dict[str, str] = {}
        for name, spec in models.items():
            self._names[name] = name
            for alias in spec.get("aliases", ()):
                self._names[alias] = name

    async def check_health(self) -> None:
        if set(spec["deployment"] for spec in self._models.values()) - set(self._handles):
            raise RuntimeError("router is missing a handle for a configured model")

    async def resolve(self, model: str, task: str) -> str:
        """Return the deployment name serving `model` for `task`.

        Raises:
            ModelNotFound: no model or alias has that name.
            InvalidRequest: the model exists but does another task (e.g. chat on an embedder).
        """
        name = self._names.get(model)
        if name is None:
            raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
        spec = self._models[name]
        if spec["task"] != task:
            wanted = "text generation" if task == "generate" else "embeddings"
            raise InvalidRequest(f"The model `{model}` does not support {wanted}.",
                                 param="model", code="wrong_model_task")
        return spec["deployment"]

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming chat completion for internal callers (tools, workflows).

        `body` is an OpenAI chat request (`model`, `messages`, `max_tokens`, `temperature`);
        the answer is an OpenAI `chat.completion` object. Internal callers are already
        authorised at the ingress, and the ingress filters what reaches the client.
        """
        # Internal callers build valid bodies; a ValidationError here is a bug, reported as such.
        chat = ChatCompletionRequest.model_validate(body)
        deployment = await self.resolve(chat.model, "generate")
        # The same request the ingress builds for /v1/chat/completions (one choice, no tools).
        payload = {"kind": "chat", "n": 1, **chat.sampling(),
                   "messages": template_messages(chat.messages)}
        events = self._handles[deployment].options(stream=True).stream.remote(payload)
        ctx = RequestContext(request_id=new_id("internal"), route="internal:chat", headers={})
        try:
            return await collect(events, kind="chat", model=chat.model, choices=1, ctx=ctx,
                                 open_filters=lambda: FilterChain([]))
        except Exception as exc:
            raise find_aegis_error(exc) or exc from None

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embedding vectors of `texts` on `model`, for internal callers (document search)."""
        deployment = await self.resolve(model, "embed")
        try:
            result = await self._handles[deployment].embed.remote(texts)
        except Exception as exc:
            raise find_aegis_error(exc) or exc from None
        return result["vectors"]

    async def list_models(self) -> list[dict[str, Any]]:
        """Every servable name (models and aliases), for `/v1/models`."""
        return [{"id": alias, "model": name, "task": self._models[name]["task"]}
                for alias, name in sorted(self._names.items())]

    async def readiness(self, timeout_s: float) -> dict[str, str]:
        """Ask every model deployment to answer; returns `{model: "ready" | reason}`."""
        async def probe(name: str, spec: dict[str, Any]) -> tuple[str, str]:
            handle = self._handles[spec["deployment"]]
            try:
                await asyncio.wait_for(handle.info.remote(), timeout=timeout_s)
                return name, "ready"
            except asyncio.TimeoutError:
                return name, f"no answer within {timeout_s:.0f}s"
            except Exception as exc:  # any failure means not ready; the reason is for operators
                return name, f"{type(exc).__name__}"

        results = await asyncio.gather(*(probe(n, s) for n, s in self._models.items()))
        return dict(results)
