"""Embedding model replicas: `/v1/embeddings`, inputs of concurrent requests encoded together."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import serve

from serve_app.config import BatchingConfig, ModelConfig
from serve_app.embedding import Encoder, EmbeddingResult, read_encoder_settings
from serve_app.live import LiveUpdates
from serve_app.loading import load_encoder, set_cpu_threads
from serve_app.metrics import ModelMetrics
from serve_app.model_weights import resolve_model
from serve_app.replica_api import EmbedRequest, EmbedResult

logger = logging.getLogger("ray.serve")


@dataclass
class _Texts:
    texts: list[str]
    enqueued_at: float = field(default_factory=time.monotonic)


@serve.deployment(name="EmbeddingModel")
class EmbeddingModel:
    """Serves one encoder. A batch is a list of requests, each with one or more texts."""

    def __init__(self, model_config: dict[str, Any], model_cache_dir: str) -> None:
        self._cfg = ModelConfig.model_validate(model_config)
        set_cpu_threads(self._cfg.cpu_threads)
        resolved = resolve_model(
            self._cfg.source, cache_dir=Path(model_cache_dir), allow_pickle=self._cfg.allow_pickle,
            revision=self._cfg.revision, s3_endpoint_url=self._cfg.s3_endpoint_url)
        if resolved.is_gguf:
            raise ValueError(f"model {self._cfg.name}: GGUF embedding models are not supported")
        loaded = load_encoder(resolved, device=self._cfg.device, dtype=self._cfg.dtype,
                              trust_remote_code=self._cfg.trust_remote_code)
        self._encoder = Encoder(loaded.model, loaded.tokenizer, loaded.device,
                                read_encoder_settings(resolved.path), self._cfg.max_input_tokens)
        self._metrics = ModelMetrics(self._cfg.name)
        self._batching = BatchingConfig()
        self._live = LiveUpdates(f"model {self._cfg.name} batching")
        self._device = loaded.device
        logger.info("embedding model %s loaded on %s", self._cfg.name, loaded.device)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply live batching knobs; a bad one is refused on a running replica (`LiveUpdates`)."""
        self._live.apply(lambda: self._set_batching(BatchingConfig.model_validate(user_config or {})))

    def _set_batching(self, batching: BatchingConfig) -> None:
        self._embed_batch.set_max_batch_size(batching.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        self._batching = batching

    async def check_health(self) -> None:
        result = await asyncio.to_thread(self._encoder.embed, ["health check"])
        if not result.vectors or not all(v == v for v in result.vectors[0]):
            raise RuntimeError("encoder produced no or non-finite output")

    async def info(self) -> dict[str, Any]:
        return {"name": self._cfg.name, "task": "embed", "device": self._device,
                "batching": self._batching.model_dump()}

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        """Embed `request.texts`, batched with other callers' texts."""
        started = time.monotonic()
        try:
            result: EmbeddingResult = await self._embed_batch(_Texts(list(request.texts)))
        except Exception:
            self._metrics.request("embed", "error")
            raise
        tokens = sum(result.token_counts)
        self._metrics.tokens(prompt=tokens, generated=0)
        self._metrics.request("embed", "ok")
        self._metrics.latency("embed", time.monotonic() - started)
        return EmbedResult(vectors=result.vectors, prompt_tokens=tokens)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, requests: list[_Texts]) -> list[EmbeddingResult]:
        now = time.monotonic()
        self._metrics.batch(len(requests))
        for request in requests:
            self._metrics.queue_wait(now - request.enqueued_at)
        flat = [text for request in requests for text in request.texts]
        result = await asyncio.to_thread(self._encoder.embed, flat)
        out, start = [], 0
        for request in requests:
            end = start + len(request.texts)
            out.append(EmbeddingResult(result.vectors[start:end], result.token_counts[start:end]))
            start = end
        return out
