"""Sentence embeddings from an encoder: pooling and normalisation as sentence-transformers does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

Pooling = Literal["mean", "cls", "max"]


@dataclass(frozen=True)
class EncoderSettings:
    pooling: Pooling = "mean"
    normalize: bool = True


def read_encoder_settings(path: Path) -> EncoderSettings:
    """Read the sentence-transformers module files (1_Pooling/config.json, modules.json) if present."""
    pooling: Pooling = "mean"
    pooling_file = path / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        config = json.loads(pooling_file.read_text())
        if config.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif config.get("pooling_mode_max_tokens"):
            pooling = "max"
    normalize = True
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    return EncoderSettings(pooling=pooling, normalize=normalize)


@dataclass
class EmbeddingResult:
    vectors: list[list[float]]
    token_counts: list[int]


class Encoder:
    """Embeds batches of texts with one encoder model."""

    def __init__(self, model: Any, tokenizer: Any, device: str, settings: EncoderSettings,
                 max_input_tokens: int) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._settings = settings
        self._max_input_tokens = max_input_tokens

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        batch = self._tokenizer(list(texts), padding=True, truncation=True,
                                max_length=self._max_input_tokens, return_tensors="pt")
        batch = {k: v.to(self._device) for k, v in batch.items()}
        hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self._settings.pooling == "cls":
            pooled = hidden[:, 0]
        elif self._settings.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self._settings.normalize:
            pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)
        counts = batch["attention_mask"].sum(dim=1).tolist()
        return EmbeddingResult(vectors=pooled.float().cpu().tolist(), token_counts=counts)
