"""Injection head training: flag dropout makes the embedding weights carry an attack on their own."""

from __future__ import annotations

import numpy as np

from security.guardrails import train_classifier as tc
from security.guardrails.classifier import max_per_text


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


def test_threshold_bound_rises_when_false_positives_cluster_in_few_templates():
    """40 benign templates of 20 rows; 2 of them score like attacks (mean FPR 5%, under a 10% target).
    A resampling of templates often draws such a template two or three times: with a 5% bound
    on the 95th percentile the threshold must clear both."""
    rng = np.random.default_rng(1)
    benign_groups = np.repeat([f"b{i}" for i in range(40)], 20)
    benign_scores = rng.uniform(0.0, 0.3, benign_groups.size)
    benign_scores[benign_groups == "b0"] = 0.6
    benign_scores[benign_groups == "b1"] = 0.7
    attack_scores = rng.uniform(0.5, 1.0, 400)
    oof = np.concatenate([benign_scores, attack_scores])
    y = np.concatenate([np.zeros(benign_groups.size), np.ones(400)])
    groups = np.concatenate([benign_groups, [f"a{i % 20}" for i in range(400)]])
    strong = np.zeros(y.size, bool)
    plain = tc._pick_threshold(oof, strong, y, 0.1)
    bounded, p95 = tc._pick_threshold_bounded(oof, strong, y, groups, 0.1, 0.05)
    assert plain <= 0.6
    assert bounded > 0.7 and p95 <= 0.05
    assert tc._rates(oof >= bounded, y)[1] == 0.0
    # False positives spread over every template: the bound changes nothing.
    calm = oof.copy()
    calm[: benign_groups.size] = benign_scores.clip(max=0.3)
    assert tc._pick_threshold_bounded(calm, strong, y, groups, 0.02, 0.05)[0] == tc._pick_threshold(calm, strong, y, 0.02)


def _bags(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of 300 texts: column 0 is high on an attack window, low elsewhere; column 1 a flag
    that never fires. Texts 0-99 benign (1-3 windows), 100-199 short attacks (1 window), 200-299
    long attacks of 3 windows whose instruction sits in the last (a planted instruction at the end
    of a document): their first windows look benign."""
    rng = np.random.default_rng(seed)
    sizes = [1 + i % 3 for i in range(100)] + [1] * 100 + [3] * 100
    owner = np.repeat(np.arange(300), sizes)
    attack_window = np.zeros(len(owner), bool)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    attack_window[starts[100:200]] = True
    attack_window[starts[200:] + 2] = True
    x = np.column_stack([np.where(attack_window, 1.0, -1.0) + rng.normal(0, 0.4, len(owner)), np.zeros(len(owner))])
    y = (np.arange(300) >= 100).astype(float)
    return x, owner, y


def test_window_fit_takes_the_planted_window_of_a_long_attack_as_its_positive():
    x, owner, y = _bags()
    weights = np.full(300, 1 / 300)
    w, b, positive = tc._fit_windows(x, owner, y, weights, 1e-3, flags=1, free=1)
    starts = np.concatenate([[0], np.cumsum(np.bincount(owner))[:-1]])
    assert (positive[:100] == -1).all()
    assert (positive[100:200] == starts[100:200]).all()
    assert (positive[200:] == starts[200:] + 2).all()
    text_scores = max_per_text(tc._sigmoid(x @ w + b), owner, 300)
    assert (text_scores[200:] > 0.5).mean() > 0.95 and (text_scores[:100] < 0.5).mean() > 0.95


def test_window_fit_beats_a_fit_on_first_windows_for_long_attacks():
    """The head fitted on each text's first window (what training did before) learns that the
    benign-looking opening of a long attack is an attack, and flags benign texts with it."""
    x, owner, y = _bags(1)
    weights = np.full(300, 1 / 300)
    starts = np.concatenate([[0], np.cumsum(np.bincount(owner))[:-1]])
    first_w, first_b = tc._fit_logistic(x[starts], y, 1e-3, weights, free=1)
    w, b, _ = tc._fit_windows(x, owner, y, weights, 1e-3, flags=1, free=1)
    benign_fpr = lambda wb: float((max_per_text(tc._sigmoid(x @ wb[0] + wb[1]), owner, 300)[:100] >= 0.5).mean())
    attack_tpr = lambda wb: float((max_per_text(tc._sigmoid(x @ wb[0] + wb[1]), owner, 300)[100:] >= 0.5).mean())
    assert benign_fpr((w, b)) < 0.1 and attack_tpr((w, b)) > 0.95
    assert benign_fpr((first_w, first_b)) > 0.5


def test_max_per_text_takes_each_texts_highest_window():
    assert max_per_text(np.array([0.1, 0.9, 0.3, 0.2]), np.array([0, 0, 1, 1]), 2).tolist() == [0.9, 0.3]


def test_newton_fit_stays_finite_on_separable_rows_from_a_far_start():
    """Separable rows with almost no shrinkage, refitted from a large earlier solution: a plain
    Newton step overflowed there and left a singular Hessian (a training run stopped on it)."""
    rng = np.random.default_rng(2)
    y = (np.arange(200) % 2).astype(float)
    x = np.column_stack([np.where(y == 1, 3.0, -3.0) + rng.normal(0, 0.3, 200), rng.normal(0, 1, 200)])
    weights = np.full(200, 1 / 200)
    w, b = tc._fit_logistic(x, y, 1e-8, weights, init=(np.array([400.0, -300.0], np.float32), 50.0))
    assert np.isfinite(w).all() and np.isfinite(b)
    assert ((tc._sigmoid(x @ w + b) >= 0.5) == (y == 1)).all()
