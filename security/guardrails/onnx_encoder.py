"""The sentence encoder as an int8 ONNX Runtime graph: exported and quantized once, cached by its weights' hash."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)
ONNX_OPSET = 17
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def int8_onnx_path(model_dir: Path, cache_dir: Path) -> Path:
    """The encoder in `model_dir` as ONNX, every hidden state an output, linear weights int8 per output channel.

    Built once (~7 s: export, then ONNX Runtime's dynamic quantization) into
    `<cache_dir>/onnx/`, named by the sha256 of the weights and config and by the torch, ONNX
    Runtime and opset versions, so a new model or runtime never reads a stale graph. Replicas
    starting together each build into their own staging folder and rename into place; the last
    rename wins, and both were built from the same weights.
    """
    target = cache_dir / "onnx" / graph_name(model_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        logger.info("exporting %s to int8 ONNX at %s (once)", model_dir, target)
        _export(model_dir, staging / "float32.onnx")
        _quantize(staging / "float32.onnx", staging / "int8.onnx")
        os.replace(staging / "int8.onnx", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def graph_name(model_dir: Path) -> str:
    """`<dir name>-<sha256 of weights and config>-<torch, ORT, opset versions>-int8.onnx`."""
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json")
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise FileNotFoundError(f"no model weights (*.safetensors, *.bin) in {model_dir}")
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    versions = f"torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}-opset{ONNX_OPSET}"
    return f"{model_dir.name}-{digest.hexdigest()[:16]}-{versions}-int8.onnx"


def _export(model_dir: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    class _HiddenStates(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return tuple(self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states)

    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    layers = model.config.num_hidden_layers + 1
    example = torch.ones((1, 8), dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    axes |= {f"hidden_{i}": {0: "batch", 1: "tokens"} for i in range(layers)}
    # The TorchScript exporter: the dynamo one would add onnxscript as a dependency.
    # Its tracer warnings are about Python branches on shapes that BERT takes the same way at every length.
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(_HiddenStates(model), (example, example), str(out), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input_ids", "attention_mask"], output_names=list(axes)[2:], dynamic_axes=axes)


def _quantize(source: Path, out: Path) -> None:
    """Dynamic int8: weights per output channel (per-tensor scales cost the last layer too much, as
    they did under torch), activations scaled per run."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    hush = _DropPreprocessHint()
    root.addFilter(hush)
    try:
        quantize_dynamic(str(source), str(out), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(hush)


class _DropPreprocessHint(logging.Filter):
    # quantize_dynamic logs generic advice to run its shape pre-processing first, on every build;
    # the result is judged by its embeddings instead (tests hold them to float32's).
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


class OnnxHiddenStates:
    """Runs an exported encoder on ONNX Runtime's CPU provider: hidden states of every layer.

    Args:
        path: the graph from `int8_onnx_path`.
        threads: intra-op threads; 1 runs on the calling thread. Idle pool threads sleep rather than
            spin, since the ingress shares its cores with other replicas.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        if threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """(layers + 1) arrays of (batch, tokens, dim), the token embeddings first."""
        return self._session.run(None, {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)})
