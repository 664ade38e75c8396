"""Model names, aliases and tasks (ModelRegistry, as the ingress and the Router use it)."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequest, ModelNotFound
from deployments.router import Router
from serve_app.model_registry import ModelRegistry, ModelRoute

ROUTES = [
    ModelRoute(name="chat-a", task="generate", deployment="Generate-chat-a", aliases=("default", "chat")),
    ModelRoute(name="embed-b", task="embed", deployment="Embed-embed-b", aliases=("minilm",)),
]


@pytest.fixture()
def registry():
    return ModelRegistry(ROUTES)


def test_names_and_aliases_resolve_to_their_deployment(registry):
    assert registry.resolve("chat-a", "generate").deployment == "Generate-chat-a"
    assert registry.resolve("default", "generate").deployment == "Generate-chat-a"
    assert registry.resolve("minilm", "embed").deployment == "Embed-embed-b"


def test_unknown_model_is_model_not_found(registry):
    with pytest.raises(ModelNotFound) as info:
        registry.resolve("gpt-4", "generate")
    assert info.value.status_code == 404
    assert info.value.envelope()["error"]["param"] == "model"


def test_wrong_task_is_a_clear_400(registry):
    with pytest.raises(InvalidRequest, match="does not support embeddings") as info:
        registry.resolve("chat", "embed")
    assert info.value.code == "wrong_model_task"


def test_list_models_includes_every_alias(registry):
    listed = registry.listed()
    assert {m["id"] for m in listed} == {"chat-a", "default", "chat", "embed-b", "minilm"}
    assert {m["model"] for m in listed if m["id"] == "chat"} == {"chat-a"}
    assert registry.aliases() == {"default": "chat-a", "chat": "chat-a", "minilm": "embed-b"}


async def test_router_health_check_fails_without_a_handle_per_model():
    router = Router.func_or_class(ROUTES, handles={})
    with pytest.raises(RuntimeError, match="missing a handle"):
        await router.check_health()
