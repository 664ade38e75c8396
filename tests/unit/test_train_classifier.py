"""Injection head training: flag dropout makes the embedding weights carry an attack on their own."""

from __future__ import annotations

import numpy as np

from security.guardrails import train_classifier as tc


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Column 0: an embedding direction that tells attacks apart, with noise; column 1: a
    heuristic flag that fires on every attack of the training data (the rules were written on it)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    embedding = y * 1.0 + rng.normal(0, 0.6, n)
    flag = y.copy()
    return np.column_stack([embedding, flag]), y


def test_flag_dropout_doubles_rows_with_flags_zeroed_at_half_weight():
    x, y = _data(10)
    w = np.full(10, 0.1)
    xd, yd, wd = tc._with_flag_dropout(x, y, w, flags=1)
    assert xd.shape == (20, 2) and (yd == np.concatenate([y, y])).all()
    assert (xd[:10] == x).all() and (xd[10:, 0] == x[:, 0]).all() and (xd[10:, 1] == 0).all()
    assert np.isclose(wd.sum(), w.sum())
    assert tc._with_flag_dropout(x, y, w, flags=0)[0] is x


def test_an_attack_the_rules_miss_scores_higher_with_flag_dropout():
    x, y = _data()
    weights = np.full(len(y), 1.0 / len(y))
    plain = tc._fit_logistic(x, y, 1e-3, weights, free=1)
    dropped = tc._fit_logistic(*_swap(tc._with_flag_dropout(x, y, weights, flags=1)), free=1)
    missed_by_rules = np.array([[1.0, 0.0]])  # attack-like embedding, no flag
    score = lambda wb: float(tc._sigmoid(missed_by_rules @ wb[0] + wb[1])[0])
    # Flags always present: the flag explains every attack and the embedding weight stays small.
    assert score(plain) < 0.5 < score(dropped)


def _swap(parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    x, y, w = parts
    return x, y, 1e-3, w
