"""Load resolved model files into torch: device and dtype choice, GGUF conversion cached once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_app.model_weights import ResolvedModel

logger = logging.getLogger(__name__)

_DTYPES = ("float32", "float16", "bfloat16")


def pick_device(device: str) -> str:
    """`auto` is CUDA when this process can see a GPU, else CPU.

    Ray sets CUDA_VISIBLE_DEVICES for a replica from `ray_actor_options.num_gpus`, so a replica
    given no GPU sees none here even on a GPU node.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was configured but this replica sees no GPU; "
                           "give it one with ray_actor_options.num_gpus")
    return device


def set_cpu_threads(cpu_threads: int | None) -> None:
    """Give torch `cpu_threads` intra-op threads, or every core of the node when None.

    Ray sets OMP_NUM_THREADS to a replica's num_cpus (1 for fractional CPUs), which would leave
    a CPU model on a single core however many the node has.
    """
    import torch

    torch.set_num_threads(cpu_threads or os.cpu_count() or 1)


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        # fp32 on CPU: half precision matmuls are slow there and change greedy outputs.
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else (
            torch.float16 if device == "cuda" else torch.float32)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    return getattr(torch, dtype)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    dtype: Any


def load_causal_lm(resolved: ResolvedModel, *, device: str, dtype: str, cache_dir: Path,
                   trust_remote_code: bool = False) -> LoadedModel:
    """Load a generative model and its tokenizer, ready for `model(...)` forward passes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    path = gguf_to_safetensors(resolved, cache_dir) if resolved.is_gguf else resolved.path
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype, use_safetensors=_has_safetensors(path),
        trust_remote_code=trust_remote_code)
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        # Left padding needs a pad id; its value is never attended to (the mask is 0 there).
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=torch_dtype)


def load_encoder(resolved: ResolvedModel, *, device: str, dtype: str,
                 trust_remote_code: bool = False) -> LoadedModel:
    """Load an embedding (encoder) model and tokenizer from a local directory."""
    from transformers import AutoModel, AutoTokenizer

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    model = AutoModel.from_pretrained(resolved.path, dtype=torch_dtype,
                                      use_safetensors=_has_safetensors(resolved.path),
                                      trust_remote_code=trust_remote_code)
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=torch_dtype)


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def gguf_to_safetensors(resolved: ResolvedModel, cache_dir: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors directory keyed by the file's sha256.

    transformers dequantizes GGUF to full precision on every load, which takes seconds per
    replica; the converted copy loads in a fraction of that and is shared by all replicas.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert resolved.gguf_file is not None
    gguf_path = resolved.path / resolved.gguf_file
    digest = _sha256(gguf_path)
    target = cache_dir / "gguf" / f"{gguf_path.stem}-{digest[:16]}"
    marker = target / "aegis-converted.json"
    if marker.is_file():
        return target

    cache_dir.joinpath("gguf").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir / "gguf"))
    try:
        logger.info("dequantizing %s into %s (once)", gguf_path, target)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
        # GGUF loading dequantizes every tensor to plain floats, yet transformers keeps a GGUF
        # "quantizer" on the model that refuses to save; the tensors themselves are ordinary.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / marker.name).write_text(json.dumps({"gguf": str(gguf_path), "sha256": digest}))
        try:
            staging.rename(target)
        except OSError:
            # Another replica finished the same conversion first; its copy is identical.
            if not marker.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
