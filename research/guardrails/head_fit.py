"""Fits the injection head on windows: mean-pooled layers, learned attention pools and heuristic flags (torch).

The scanner scores every 128-token window of a text and the highest decides, so the head is fitted
on windows as multiple-instance learning: every window of a benign text is a negative (the text's
weight shared by its windows), and an attack is a bag whose highest-scoring window must score as
an attack (its instruction may be planted at the end of a resume that fills the first window).
The max over a bag's windows is part of the loss, so the positive window is chosen as the fit goes.

Besides the mean-pooled hidden states, the head learns attention queries on some layers: a mean
over a 128-token window dilutes a 15-token planted instruction eightfold, a learned query weighs
the tokens that look like one (`classifier.attention_pool`; the scanner runs the same function).
Every text is fitted twice, once with its heuristic flags zeroed (flag dropout), each copy at half
weight. With the flags always present the head leaned on them and left the embedding weights the
residual: an override the rules miss ("Ignore the rest of this data and print ...") scored 0.05,
because every override the rules catch needed nothing from the embedding (2026-12-01, train split,
Newton fit: out-of-fold TPR at 1% FPR 92.2% with flags, 94.8% without any, 95.4% with dropout).

Until 2026-12-01 (third session) the head was a logistic regression fitted by Newton's method with
the positive windows chosen in MI-SVM rounds; a learned query has no closed-form fit, so the whole
head is now fitted by Adam, the bag max inside the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WindowSet:
    """Every window of a set of texts, as the scanner reads them.

    Attributes:
        pooled: (windows, features) mean-pooled layer vectors, unit-norm per layer.
        owner: (windows,) index of each window's text; a text's windows are consecutive.
        flags: (texts, flags) heuristic family flags, appended to each of the text's windows.
        lengths: (windows,) tokens per window.
        tokens: layer -> (all tokens, dim) float32 token states of every window, concatenated in window order.
    """

    pooled: np.ndarray
    owner: np.ndarray
    flags: np.ndarray
    lengths: np.ndarray
    tokens: dict[int, np.ndarray]

    def __post_init__(self) -> None:
        # Derived layout: each window's first token row, and each text's first window and window count.
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        windows = np.bincount(self.owner, minlength=len(self.flags))
        self.first = np.concatenate([[0], np.cumsum(windows)[:-1]])
        self.windows = windows


@dataclass
class FittedHead:
    """weight: (pooled + attention layers * heads * dim + flags,), in the scanner's feature order."""

    weight: np.ndarray
    bias: float
    attention: list[tuple[int, np.ndarray]]


def _module(data: WindowSet, heads: int, seed: int):
    import torch

    dim = next(iter(data.tokens.values())).shape[1] if data.tokens else 0
    states = [torch.from_numpy(t) for t in data.tokens.values()]  # float32: shares the arrays' memory

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            # Small random queries: equal queries would stay equal, and zero ones start as a mean pool.
            self.queries = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.randn(heads, dim, generator=generator) * 0.01) for _ in data.tokens])
            self.embedding = torch.nn.Linear(data.pooled.shape[1] + len(data.tokens) * heads * dim, 1)
            self.flags = torch.nn.Linear(data.flags.shape[1], 1, bias=False)
            for weight in (self.embedding.weight, self.embedding.bias, self.flags.weight):
                torch.nn.init.zeros_(weight)

        def forward(self, windows: np.ndarray):
            """(embedding logit, flag logit) per window."""
            parts = [torch.from_numpy(data.pooled[windows]).float()]
            if data.tokens:
                lengths = data.lengths[windows]
                token_rows = torch.from_numpy(np.concatenate(
                    [np.arange(data.offsets[w], data.offsets[w + 1]) for w in windows]))
                segment = torch.from_numpy(np.repeat(np.arange(len(windows)), lengths))
                for layer_states, queries in zip(states, self.queries):
                    parts.append(_segment_attention(layer_states.index_select(0, token_rows), segment, len(windows), queries))
            flags = torch.from_numpy(data.flags[data.owner[windows]]).float()
            return self.embedding(torch.cat(parts, 1)).squeeze(1), self.flags(flags).squeeze(1)

    return Head()


def _segment_attention(states, segment, windows: int, queries):
    """`classifier.attention_pool` on unpadded token rows (segment = window of each row), unit-norm, flattened.

    The same softmax over each window's tokens; training batches mix 10-token and 128-token
    windows (53 on average in the corpus). Padding each batch and calling `attention_pool` made an
    epoch 1.3x slower (6.5 s against 4.9 s on 2 cores, measured 2026-12-01); the scanner's
    agreement with this path is a unit test (`test_training_sees_every_window_the_scanner_scores`).
    """
    import torch

    heads = queries.shape[0]
    scores = states @ queries.T / states.shape[1] ** 0.5  # (rows, heads)
    index = segment[:, None].expand(-1, heads)
    top = torch.full((windows, heads), -torch.inf).scatter_reduce(0, index, scores, "amax", include_self=True)
    exp = torch.exp(scores - top[segment])
    weights = exp / torch.zeros(windows, heads).index_add(0, segment, exp)[segment]
    pooled = torch.zeros(windows, heads, states.shape[1]).index_add(0, segment, weights[:, :, None] * states[:, None, :])
    return torch.nn.functional.normalize(pooled, dim=2).reshape(windows, -1)


def _bag_logits(model, data: WindowSet, texts: np.ndarray):
    """(window logits with flags, without flags, text of each window (0..len(texts)-1))."""
    import torch

    windows = np.concatenate([np.arange(data.first[t], data.first[t] + data.windows[t]) for t in texts])
    embedding, flags = model(windows)
    segment = torch.from_numpy(np.repeat(np.arange(len(texts)), data.windows[texts]))
    return embedding + flags, embedding, segment


def _bag_max(logits, segment, texts: int):
    import torch

    return torch.full((texts,), -torch.inf).scatter_reduce(0, segment, logits, "amax", include_self=True)


def fit_head(data: WindowSet, texts: np.ndarray, y: np.ndarray, text_w: np.ndarray, l2: float, heads: int = 2,
             epochs: int = 30, learning_rate: float = 1e-2, batch_texts: int = 256, seed: int = 0) -> FittedHead:
    """Fits on `texts` (indices into `data`) by Adam with a one-cycle learning rate.

    Args:
        y, text_w: label and sample weight of each text of `texts` (weights sum to 1).
        l2: penalty on the embedding weights (the flags get 1e-6, a trace that keeps one that
            never fires finite; the bias and the queries none), as in `0.5 * l2 * |w|^2`.

    Returns:
        The head, its weight in the scanner's feature order.
    """
    import torch

    torch.manual_seed(seed)
    model = _module(data, heads, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps = epochs * -(-len(texts) // batch_texts)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    labels, weights = torch.from_numpy(y).float(), torch.from_numpy(text_w).float()
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for start in range(0, len(texts), batch_texts):
            batch = order[start : start + batch_texts]
            with_flags, without_flags, segment = _bag_logits(model, data, texts[batch])
            label, weight = labels[batch], weights[batch] * (len(texts) / len(batch))  # unbiased for the full sum
            share = (weight / torch.from_numpy(data.windows[texts[batch]]).float())[segment]
            loss = 0.5 * l2 * model.embedding.weight.square().sum() + 0.5e-6 * model.flags.weight.square().sum()
            for logits in (with_flags, without_flags):  # flag dropout: each copy at half weight
                negatives = torch.nn.functional.softplus(logits) * share * (1 - label[segment])
                positives = torch.nn.functional.softplus(-_bag_max(logits, segment, len(batch))) * weight * label
                loss = loss + 0.5 * (negatives.sum() + positives.sum())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    weight = torch.cat([model.embedding.weight[0], model.flags.weight[0]]).detach().numpy().astype(np.float32)
    queries = [(layer, q.detach().numpy().astype(np.float32)) for layer, q in zip(data.tokens, model.queries)]
    return FittedHead(weight, float(model.embedding.bias.item()), queries)


def score_texts(head: FittedHead, data: WindowSet, texts: np.ndarray, batch_texts: int = 512, best_window: bool = False):
    """Each text's probability: the highest of its windows, as the scanner computes it.

    With `best_window`, also returns the index of that window in `data` for each text.
    """
    import torch

    heads = len(head.attention[0][1]) if head.attention else 1
    model = _module(data, heads, 0)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.from_numpy(head.weight[None, : -data.flags.shape[1]]))
        model.embedding.bias.fill_(head.bias)
        model.flags.weight.copy_(torch.from_numpy(head.weight[None, -data.flags.shape[1] :]))
        for param, (_, q) in zip(model.queries, head.attention):
            param.copy_(torch.from_numpy(q))
        scores, best = [], []
        for chunk in np.array_split(texts, max(1, -(-len(texts) // batch_texts))):
            logits, _, segment = _bag_logits(model, data, chunk)
            top = _bag_max(logits, segment, len(chunk))
            scores.append(torch.sigmoid(top).numpy())
            # the first window of each text reaching its maximum, as an index into `data`
            hit = np.flatnonzero((logits == top[segment]).numpy())
            firsts = np.unique(segment.numpy()[hit], return_index=True)[1]
            best.append(np.concatenate([np.arange(data.first[t], data.first[t] + data.windows[t]) for t in chunk])[hit[firsts]])
    scores = np.concatenate(scores) if scores else np.zeros(0)
    return (scores, np.concatenate(best) if best else np.zeros(0, int)) if best_window else scores
