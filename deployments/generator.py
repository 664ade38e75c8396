"""Generative model replicas: chat and text completions, batched with @serve.batch, streamed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve

from serve_app.config import BatchingConfig, ModelConfig
from common.errors import InvalidRequest, PayloadTooLarge
from serve_app.generation import DecodeLoop, GenerationRequest, SamplingParams, StepOutput
from serve_app.live import LiveUpdates
from serve_app.loading import load_causal_lm, set_cpu_threads
from serve_app.metrics import ModelMetrics
from serve_app.model_weights import resolve_model
from serve_app.function_calling import TemplateSupport, render_chat_prompt
from serve_app.replica_api import GenerateRequest, StreamDelta, StreamEvent, StreamStart

logger = logging.getLogger("ray.serve")

# A decode step that takes longer than this means the replica is wedged, not busy.
_STALL_TIMEOUT_S = 120.0
# Admission groups that may be in flight at once. Groups do not wait for each other: they all
# feed one DecodeLoop, which merges them between steps (continuous batching). With Serve's
# default of 1, a group formed while another decodes would wait for that whole batch to end.
_MAX_CONCURRENT_GROUPS = 64


@dataclass
class _Pending:
    """A GenerationRequest and the choice index its outputs go to."""

    request: GenerationRequest
    index: int


@serve.deployment(name="GenerativeModel")
class GenerativeModel:
    """Serves one causal LM. Every request, streamed or not, goes through one batch queue."""

    def __init__(self, model_config: dict[str, Any], model_cache_dir: str) -> None:
        self._cfg = ModelConfig.model_validate(model_config)
        set_cpu_threads(self._cfg.cpu_threads)
        cache_dir = Path(model_cache_dir)
        resolved = resolve_model(
            self._cfg.source, cache_dir=cache_dir, gguf_file=self._cfg.gguf_file,
            allow_pickle=self._cfg.allow_pickle, revision=self._cfg.revision,
            s3_endpoint_url=self._cfg.s3_endpoint_url)
        loaded = load_causal_lm(resolved, device=self._cfg.device, dtype=self._cfg.dtype,
                                cache_dir=cache_dir, trust_remote_code=self._cfg.trust_remote_code)
        self._tokenizer = loaded.tokenizer
        # Whether the chat template renders tools itself or needs the Hermes fallback.
        self._template = TemplateSupport.probe(loaded.tokenizer)
        self._model = loaded.model
        self._device = loaded.device
        self._batching = BatchingConfig()
        self._loop = DecodeLoop(loaded.model, loaded.tokenizer, loaded.device,
                                max_rows=self._batching.max_batch_size)
        self._routes: dict[int, tuple[asyncio.Queue, int]] = {}  # id(request) -> (group, slot)
        self._wakeup = asyncio.Event()
        self._driver: asyncio.Task | None = None
        self._metrics = ModelMetrics(self._cfg.name)
        self._last_step_at: float | None = None  # set while the loop has work
        # batches: admission groups; steps / row_steps: decode steps and rows decoded in them.
        self._stats = {"batches": 0, "cancelled_rows": 0, "max_batch_seen": 0, "steps": 0,
                       "row_steps": 0}
        self._loaded_at = time.time()
        self._live = LiveUpdates(f"model {self._cfg.name} batching")
        logger.info("model %s loaded on %s (%s); chat template renders tools: %s", self._cfg.name,
                    loaded.device, loaded.dtype, self._template.tools)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply live batching knobs from `user_config` (validated, swapped in one assignment); a
        bad one is refused on a running replica (`LiveUpdates`)."""
        self._live.apply(lambda: self._set_batching(BatchingConfig.model_validate(user_config or {})))

    def _set_batching(self, batching: BatchingConfig) -> None:
        self._decode_batch.set_max_batch_size(batching.max_batch_size)
        self._decode_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        self._loop.max_rows = batching.max_batch_size
        self._batching = batching

    async def check_health(self) -> None:
        """Unhealthy if a decode step has hung, or if an idle forward pass fails."""
        if self._last_step_at is not None and not self._loop.idle:
            stalled_s = time.monotonic() - self._last_step_at
            if stalled_s > _STALL_TIMEOUT_S:
                raise RuntimeError(f"decode step stalled for {stalled_s:.0f}s")
            return
        await asyncio.to_thread(self._probe_forward)

    def _probe_forward(self) -> None:
        import torch

        with torch.inference_mode():
            ids = torch.tensor([[self._tokenizer.pad_token_id]], device=self._device)
            logits = self._model(input_ids=ids).logits
        if not torch.isfinite(logits).all():
            raise RuntimeError("model produced non-finite logits")

    # -- public methods called through DeploymentHandles -------------------------------------

    async def info(self) -> dict[str, Any]:
        return {"name": self._cfg.name, "task": "generate", "device": self._device,
                "loaded_at": self._loaded_at, "batching": self._batching.model_dump(),
                **self._stats}

    async def stream(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        """Stream a `StreamStart`, then `StreamDelta`s, for a chat or completion request.

        Errors in the request (prompt too long, bad max_tokens) raise before the first event.
        """
        started = time.monotonic()
        prompts, prefill = self._prompts(request)
        params = self._sampling(request)
        n = request.n
        pending = [
            _Pending(GenerationRequest(ids, _with_seed(params, choice)), index=p * n + choice)
            for p, ids in enumerate(prompts) for choice in range(n)]
        prompt_tokens = sum(len(ids) for ids in prompts)
        self._metrics.tokens(prompt=prompt_tokens, generated=0)
        yield StreamStart(prompt_tokens=prompt_tokens, prefill=prefill)

        queue: asyncio.Queue[tuple[int, StepOutput | BaseException | None]] = asyncio.Queue()
        tasks = [asyncio.create_task(self._pump(item, queue)) for item in pending]
        open_streams, generated, first_token_at = len(tasks), 0, None
        outcome = "error"
        try:
            while open_streams:
                index, item = await queue.get()
                if item is None:
                    open_streams -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                if first_token_at is None and item.text:
                    first_token_at = time.monotonic()
                    self._metrics.first_token(first_token_at - started)
                if item.finish_reason is not None:
                    generated += item.completion_tokens
                yield StreamDelta(index=index, text=item.text, finish_reason=item.finish_reason,
                                  completion_tokens=item.completion_tokens)
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            # The client is gone or we failed: stop every row of this request at the next step.
            for item in pending:
                item.request.cancelled = True
            for task in tasks:
                task.cancel()
            self._metrics.tokens(prompt=0, generated=generated)
            self._metrics.request("generate", outcome)
            self._metrics.latency("generate", time.monotonic() - started)

    async def count_tokens(self, request: GenerateRequest) -> int:
        return sum(len(ids) for ids in self._prompts(request)[0])

    # -- batching ------------------------------------------------------------------------------

    async def _pump(self, item: _Pending, queue: asyncio.Queue) -> None:
        try:
            async for output in self._decode_batch(item):
                if output is not None:
                    await queue.put((item.index, output))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced to the caller through the queue
            await queue.put((item.index, exc))
        await queue.put((item.index, None))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01,
                 max_concurrent_batches=_MAX_CONCURRENT_GROUPS)
    async def _decode_batch(self, items: list[_Pending]) -> AsyncIterator[list[Any]]:
        """One admission group: hand it to the decode loop, relay each row's outputs.

        Yields one list per step in which any row of the group produced something, aligned with
        `items`; a row's slot holds StopIteration once it has finished, as @serve.batch expects.
        """
        self._stats["batches"] += 1
        group: asyncio.Queue[dict[int, StepOutput | None] | BaseException] = asyncio.Queue()
        for slot, item in enumerate(items):
            self._routes[id(item.request)] = (group, slot)
        self._loop.submit([item.request for item in items])
        self._wakeup.set()
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())
        finished = [False] * len(items)
        try:
            while not all(finished):
                step = await group.get()
                if isinstance(step, BaseException):
                    raise step
                results: list[Any] = []
                for slot, item in enumerate(items):
                    if finished[slot]:
                        results.append(StopIteration)
                        continue
                    output = step.get(slot)
                    if output is not None and output.finish_reason is not None:
                        finished[slot] = True
                        if output.finish_reason == "cancelled":
                            self._stats["cancelled_rows"] += 1
                    results.append(output)
                yield results
        finally:
            for slot, item in enumerate(items):
                if not finished[slot]:  # the group was abandoned: free its rows at the next step
                    item.request.cancelled = True
                self._routes.pop(id(item.request), None)

    async def _drive(self) -> None:
        """Run decode steps while the loop has work; sleep on `_wakeup` when it has none."""
        while True:
            if self._loop.idle:
                self._last_step_at = None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._last_step_at = time.monotonic()
            try:
                outputs = await asyncio.to_thread(self._loop.step)
            except Exception as exc:  # a failed step fails the rows in it, not the replica
                logger.exception("decode step failed")
                for request in self._loop.abort():
                    route = self._routes.get(id(request))
                    if route is not None:
                        route[0].put_nowait(exc)
                continue
            self._last_step_at = time.monotonic()
            rows = len(outputs)
            self._stats["max_batch_seen"] = max(self._stats["max_batch_seen"], rows)
            self._stats["steps"] += 1
            self._stats["row_steps"] += rows
            self._metrics.batch(rows)
            for request in self._loop.last_admitted:
                self._metrics.queue_wait(request.admitted_at - request.submitted_at)
            by_group: dict[int, tuple[asyncio.Queue, dict[int, StepOutput | None]]] = {}
            for request, output in outputs:
                route = self._routes.get(id(request))
                if route is None:
                    continue
                queue, slot = route
                by_group.setdefault(id(queue), (queue, {}))[1][slot] = output
            for queue, step in by_group.values():
                queue.put_nowait(step)

    # -- request shaping -----------------------------------------------------------------------

    def _prompts(self, request: GenerateRequest) -> tuple[list[list[int]], str]:
        """The token ids of each prompt, and the prefill the chat prompt ends with ("" if none)."""
        prefill = ""
        if request.kind == "chat":
            text, prefill = render_chat_prompt(
                self._tokenizer, list(request.messages),
                tools=list(request.tools) if request.tools is not None else None,
                tool_choice=request.tool_choice, support=self._template)
            prompts = [self._encode(text)]
        else:
            prompts = [self._encode(text) for text in request.prompts]
        for ids in prompts:
            if len(ids) > self._cfg.max_prompt_tokens:
                raise PayloadTooLarge(
                    f"prompt is {len(ids)} tokens; this model accepts at most "
                    f"{self._cfg.max_prompt_tokens}", param=request.prompt_param,
                    code="prompt_too_long")
            if not ids:
                raise InvalidRequest("prompt must not be empty", param="prompt")
        return prompts, prefill

    def _encode(self, text: str) -> list[int]:
        # The chat template already holds the special tokens; plain prompts get none added.
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def _sampling(self, request: GenerateRequest) -> SamplingParams:
        sampling = request.sampling
        max_tokens = sampling.max_tokens or self._cfg.default_max_tokens
        if max_tokens > self._cfg.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens must be <= {self._cfg.max_tokens_limit} for model "
                f"{self._cfg.name}, got {max_tokens}", param="max_tokens")
        return SamplingParams(max_tokens=max_tokens, temperature=sampling.temperature,
                              top_p=sampling.top_p, seed=sampling.seed, stop=sampling.stop)


def _with_seed(params: SamplingParams, choice: int) -> SamplingParams:
    # n > 1 with one seed: each choice gets its own reproducible stream.
    if params.seed is None or choice == 0:
        return params
    return SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature,
                          top_p=params.top_p, seed=params.seed + choice, stop=params.stop)
