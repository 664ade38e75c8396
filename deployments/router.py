"""Router: how agent tools and workflows reach the models, through the replicas' typed requests.

Client requests do not pass through here: the ingress resolves `model` to its deployment itself.
Tools (`call_model`, `search_documents`) and workflows hold this handle instead of one per
model, and ask by model name.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from common.errors import find_aegis_error
from serve_app.model_registry import ModelRegistry, ModelRoute
from serve_app.pipeline import FilterChain, RequestContext
from serve_app.protocol import ChatCompletionRequest, new_id
from serve_app.replica_api import EmbedRequest, GenerateRequest
from serve_app.serving import collect

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Router")
class Router:
    """Resolves model names for internal callers and calls the model deployments.

    Args:
        routes: every configured model (`ModelRegistry.from_models(config.models).routes`).
        handles: `{deployment name: DeploymentHandle}`, one per model deployment.
    """

    def __init__(self, routes: list[ModelRoute], handles: dict[str, DeploymentHandle]) -> None:
        self._registry = ModelRegistry(routes)
        self._handles = handles

    async def check_health(self) -> None:
        if self._registry.missing_deployments(self._handles):
            raise RuntimeError("router is missing a handle for a configured model")

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming chat completion for internal callers (tools, workflows).

        `body` is an OpenAI chat request (`model`, `messages`, `max_tokens`, `temperature`);
        the answer is an OpenAI `chat.completion` object. Internal callers are already
        authorised at the ingress, and the ingress filters what reaches the client.
        """
        # Internal callers build valid bodies; a ValidationError here is a bug, reported as such.
        chat = ChatCompletionRequest.model_validate(body)
        route = self._registry.resolve(chat.model, "generate")
        # The request the ingress builds for /v1/chat/completions, with one choice and no tools.
        request = GenerateRequest.chat(chat, n=1)
        events = self._handles[route.deployment].options(stream=True).stream.remote(request)
        ctx = RequestContext(request_id=new_id("internal"), route="internal:chat", headers={})
        try:
            return await collect(events, kind="chat", model=chat.model, choices=1, ctx=ctx,
                                 open_filters=lambda: FilterChain([]))
        except Exception as exc:
            raise find_aegis_error(exc) or exc from None

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embedding vectors of `texts` on `model`, for internal callers (document search)."""
        route = self._registry.resolve(model, "embed")
        try:
            result = await self._handles[route.deployment].embed.remote(EmbedRequest(tuple(texts)))
        except Exception as exc:
            raise find_aegis_error(exc) or exc from None
        return result.vectors
