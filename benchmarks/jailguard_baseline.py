"""The third-party `jailguard` injection detector (PyPI jailguard==0.1.2) as an offline baseline scanner."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# The file name jailguard looks for in JAILGUARD_MODEL_DIR. An existing file is loaded as it is:
# jailguard checks the sha256 of the Hugging Face export only on a download, which fails offline.
ONNX_FILENAME = "all-MiniLM-L6-v2.onnx"
# Ignored by git (.gitignore's .aegis-cache/), beside the other build caches of the repository.
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".aegis-cache" / "jailguard"
# jailguard's ONNX Runtime feeds these and reads the first output as (batch, tokens, 384) token
# states, as from Hugging Face's onnx/model.onnx of the same model.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
_INSTALL_HINT = "pip install 'jailguard==0.1.2' (the project's 'research' extra has it)"


def prepare_model_dir(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """The bundled all-MiniLM-L6-v2 exported to float32 ONNX where jailguard reads it, built once.

    The graph lives in `<cache_dir>/<weights dir>-<sha256 of weights and config>-<versions>/`, so
    new weights get a new export instead of a stale graph; an existing graph that ONNX Runtime
    loads with jailguard's inputs and output is kept. Export takes a few seconds.

    Args:
        cache_dir: where the export is kept; the default is under the repository's ignored
            `.aegis-cache/`.

    Returns:
        The directory to give `JailguardScanner` (it holds `all-MiniLM-L6-v2.onnx`).

    Raises:
        RuntimeError: the bundled model is missing or the export failed.
    """
    from security.guardrails.classifier import find_encoder_dir
    from security.guardrails.onnx_encoder import graph_name

    try:
        source = find_encoder_dir()
        # The int8 encoder's cache key (weights, config, torch, ONNX Runtime, opset) fits this
        # float32 graph as well.
        model_dir = Path(cache_dir) / graph_name(source).removesuffix("-int8.onnx")
    except FileNotFoundError as exc:
        raise RuntimeError(f"jailguard baseline: {exc}") from exc
    target = model_dir / ONNX_FILENAME
    if target.is_file() and _is_loadable(target):
        return model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent builders each export into their own staging folder; the last rename wins, and
    # every one was built from the same weights.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        logger.info("exporting %s to float32 ONNX at %s (once)", source, target)
        _export(source, staging / ONNX_FILENAME)
        if not _is_loadable(staging / ONNX_FILENAME):
            raise RuntimeError(f"the exported graph lacks inputs {INPUT_NAMES} or output {OUTPUT_NAME!r}")
        os.replace(staging / ONNX_FILENAME, target)
    except Exception as exc:
        raise RuntimeError(f"jailguard baseline: exporting {source} to ONNX failed ({exc}); "
                           f"delete {model_dir} and rerun") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def _is_loadable(path: Path) -> bool:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # a truncated or foreign file: rebuilt rather than handed to jailguard
        return False
    inputs = {i.name for i in session.get_inputs()}
    return inputs == set(INPUT_NAMES) and session.get_outputs()[0].name == OUTPUT_NAME


def _export(model_dir: Path, out: Path) -> None:
    import torch
    from security.guardrails.onnx_encoder import ONNX_OPSET
    from transformers import AutoModel

    class _TokenStates(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    # A padded row in the example, as jailguard pads every text to 128 tokens (its tests hold a
    # padded text's pooled states to torch's unpadded embedding).
    ids = torch.ones((2, 8), dtype=torch.int64)
    mask = torch.ones((2, 8), dtype=torch.int64)
    mask[1, 5:] = 0
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    # The TorchScript exporter, as for the int8 encoder: the dynamo one would add onnxscript as a dependency.
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TokenStates(model), (ids, mask, torch.zeros_like(ids)), str(out), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=axes)


@dataclass(frozen=True)
class JailguardVerdict:
    """One text's verdict, in the shape the guardrail benchmark reads (`is_injection`)."""

    is_injection: bool
    score: float


# jailguard loads its model once per process, from the directory named when it is first used, and
# keeps it; a second directory could not take effect, so it is refused.
_loaded_dir: Path | None = None
_load_lock = threading.Lock()


class JailguardScanner:
    """jailguard's own verdict (its MLP's score > 0.5) over the exported MiniLM, offline.

    Args:
        model_dir: a directory from `prepare_model_dir`.

    Raises:
        RuntimeError: jailguard is not installed, the directory holds no graph, jailguard cannot
            load it, or this process already loaded jailguard's model from another directory.
    """

    def __init__(self, model_dir: Path) -> None:
        global _loaded_dir
        try:
            import jailguard
        except ImportError as exc:
            raise RuntimeError(f"jailguard is not installed: {_INSTALL_HINT}") from exc
        model_dir = Path(model_dir).resolve()
        if not (model_dir / ONNX_FILENAME).is_file():
            # Without the file jailguard would try its ~90 MB download instead.
            raise RuntimeError(f"no {ONNX_FILENAME} in {model_dir}: build it with prepare_model_dir()")
        self._jailguard = jailguard
        with _load_lock:
            if _loaded_dir is None:
                self._load(model_dir)
                _loaded_dir = model_dir
            elif _loaded_dir != model_dir:
                raise RuntimeError(f"jailguard already loaded its model from {_loaded_dir} in this process; "
                                   f"use that directory or a new process")

    def _load(self, model_dir: Path) -> None:
        # An environment variable because it is jailguard's only way to be told where the model is:
        # no argument of its API takes a path. It is read once, at the first detection, so it is
        # set around that call and then restored.
        previous = os.environ.get("JAILGUARD_MODEL_DIR")
        os.environ["JAILGUARD_MODEL_DIR"] = str(model_dir)
        try:
            self._jailguard.detect("warm-up text")
        except BaseException as exc:
            # A failed load is a Rust panic, which pyo3 raises as PanicException, a BaseException.
            if type(exc).__name__ != "PanicException" and not isinstance(exc, Exception):
                raise
            raise RuntimeError(f"jailguard could not load {model_dir / ONNX_FILENAME} ({str(exc)[:200]}); rebuild it "
                               f"with prepare_model_dir() and use a new process (jailguard keeps a failed load)") from exc
        finally:
            if previous is None:
                os.environ.pop("JAILGUARD_MODEL_DIR", None)
            else:
                os.environ["JAILGUARD_MODEL_DIR"] = previous

    def scan(self, text: str) -> JailguardVerdict:
        """jailguard's verdict on `text` (it reads the first 128 tokens)."""
        result = self._jailguard.detect(text)
        return JailguardVerdict(is_injection=bool(result.is_injection), score=float(result.score))
