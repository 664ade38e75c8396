"""Router logic (the deployment's class, called directly): names, aliases, tasks, unknown models."""

from __future__ import annotations

import pytest

from deployments.router import Router
from common.errors import InvalidRequest, ModelNotFound

MODELS = {
    "chat-a": {"task": "generate", "aliases": ["default", "chat"], "deployment": "Generate-chat-a"},
    "embed-b": {"task": "embed", "aliases": ["minilm"], "deployment": "Embed-embed-b"},
}


@pytest.fixture()
def router():
    return Router.func_or_class(MODELS, handles={})


async def test_names_and_aliases_resolve_to_their_deployment(router):
    assert await router.resolve("chat-a", "generate") == "Generate-chat-a"
    assert await router.resolve("default", "generate") == "Generate-chat-a"
    assert await router.resolve("minilm", "embed") == "Embed-embed-b"


async def test_unknown_model_is_model_not_found(router):
    with pytest.raises(ModelNotFound) as info:
        await router.resolve("gpt-4", "generate")
    assert info.value.status_code == 404
    assert info.value.envelope()["error"]["param"] == "model"


async def test_wrong_task_is_a_clear_400(router):
    with pytest.raises(InvalidRequest, match="does not support embeddings") as info:
        await router.resolve("chat", "embed")
    assert info.value.code == "wrong_model_task"


async def test_list_models_includes_every_alias(router):
    listed = await router.list_models()
    assert {m["id"] for m in listed} == {"chat-a", "default", "chat", "embed-b", "minilm"}
    assert {m["model"] for m in listed if m["id"] == "chat"} == {"chat-a"}


async def test_health_check_fails_without_a_handle_per_model(router):
    with pytest.raises(RuntimeError, match="missing a handle"):
        await router.check_health()
