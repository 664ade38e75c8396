"""Encoder on the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import math


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_paraphrases_are_closer_than_unrelated(minilm):
    result = minilm.embed([
        "The cat sat on the mat.",
        "A cat was sitting on the rug.",
        "Quarterly revenue grew by eight percent.",
    ])
    a, b, c = result.vectors
    assert len(a) == 384
    assert _cos(a, b) > _cos(a, c) + 0.3
    assert abs(math.sqrt(sum(x * x for x in a)) - 1.0) < 1e-4  # normalised, as the model ships


def test_batch_does_not_change_an_embedding(minilm):
    alone = minilm.embed(["short"]).vectors[0]
    batched = minilm.embed(["short", "a much longer sentence that forces padding of the first"]).vectors[0]
    assert max(abs(x - y) for x, y in zip(alone, batched)) < 1e-5


def test_token_counts_and_truncation(minilm):
    result = minilm.embed(["hello world", "word " * 1000])
    assert result.token_counts[0] == 4  # [CLS] hello world [SEP]
    assert result.token_counts[1] == 256  # truncated at max_input_tokens
