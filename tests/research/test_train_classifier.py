"""Injection head training: multiple-instance fit on windows, flag dropout, attention pools, threshold rules."""

from __future__ import annotations

import numpy as np

from research.guardrails import train_classifier as tc
from research.guardrails.head_fit import WindowSet, fit_head, score_texts
from security.guardrails.classifier import max_per_text


def _windows(sizes: list[int], pooled: np.ndarray, flags: np.ndarray, tokens: dict[int, np.ndarray] | None = None,
             lengths: np.ndarray | None = None) -> WindowSet:
    owner = np.repeat(np.arange(len(sizes)), sizes)
    return WindowSet(pooled.astype(np.float32), owner, flags.astype(np.float32),
                     np.ones(len(owner), int) if lengths is None else lengths, tokens or {})


def _fit(data: WindowSet, y: np.ndarray, **kwargs) -> object:
    texts = np.arange(len(y))
    return fit_head(data, texts, y, np.full(len(y), 1 / len(y)), kwargs.pop("l2", 1e-3), epochs=kwargs.pop("epochs", 30),
                    batch_texts=16, **kwargs)


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


def _bags(seed: int = 0) -> tuple[WindowSet, np.ndarray]:
    """Windows of 300 texts: column 0 is high on an attack window, low elsewhere; the flag never fires.
    Texts 0-99 benign (1-3 windows), 100-199 short attacks (1 window), 200-299 long attacks of 3
    windows whose instruction sits in the last (a planted instruction at the end of a document):
    their first windows look benign."""
    rng = np.random.default_rng(seed)
    sizes = [1 + i % 3 for i in range(100)] + [1] * 100 + [3] * 100
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    attack_window = np.zeros(sum(sizes), bool)
    attack_window[starts[100:200]] = True
    attack_window[starts[200:] + 2] = True
    pooled = np.column_stack([np.where(attack_window, 1.0, -1.0) + rng.normal(0, 0.4, len(attack_window)),
                              rng.normal(0, 0.1, len(attack_window))])
    return _windows(sizes, pooled, np.zeros((300, 1))), (np.arange(300) >= 100).astype(float)


def test_window_fit_finds_the_planted_window_of_a_long_attack():
    data, y = _bags()
    head = _fit(data, y)
    scores, best = score_texts(head, data, np.arange(300), best_window=True)
    assert (scores[200:] > 0.5).mean() > 0.95 and (scores[:100] < 0.5).mean() > 0.95
    assert (best[200:] == data.first[200:] + 2).mean() > 0.95  # the planted window decides, not the opening


def test_window_fit_beats_a_fit_on_first_windows_for_long_attacks():
    """A head fitted on each text's first window (what training did before 2026-12-01) learns that
    the benign-looking opening of a long attack is an attack, and misses the planted window."""
    data, y = _bags(1)
    firsts = _windows([1] * 300, data.pooled[data.first], data.flags)
    first_head = _fit(firsts, y)
    window_head = _fit(data, y)
    attack_tpr = lambda head: float((score_texts(head, data, np.arange(300))[100:] >= 0.5).mean())
    benign_fpr = lambda head: float((score_texts(head, data, np.arange(300))[:100] >= 0.5).mean())
    assert attack_tpr(window_head) > 0.95 and benign_fpr(window_head) < 0.1
    assert attack_tpr(first_head) < 0.8 or benign_fpr(first_head) > 0.5


def test_an_attack_the_rules_miss_scores_by_its_embedding_with_flag_dropout():
    """Column 0: an embedding direction that tells attacks apart, with noise; the flag fires on every
    attack of the training data (the rules were written on it). Fitted with each text also seen
    flagless, the embedding must carry the attack alone."""
    rng = np.random.default_rng(0)
    y = (np.arange(400) % 2).astype(float)
    data = _windows([1] * 400, np.column_stack([y + rng.normal(0, 0.6, 400), np.zeros(400)]), y[:, None])
    head = _fit(data, y)
    missed_by_rules = _windows([1], np.array([[1.0, 0.0]]), np.zeros((1, 1)))
    assert score_texts(head, missed_by_rules, np.arange(1))[0] > 0.5


def _diluted(seed: int, texts: int = 400, dim: int = 8) -> tuple[WindowSet, np.ndarray]:
    """One window per text of 60-120 noise tokens; an attack's window holds 3 tokens along one
    direction: a planted instruction in a long document. The mean-pooled vector barely moves."""
    rng = np.random.default_rng(seed)
    y = (np.arange(texts) % 2).astype(float)
    lengths = rng.integers(60, 121, texts)
    rows = []
    for label, n in zip(y, lengths):
        states = rng.normal(0, 1, (n, dim))
        if label:
            states[rng.choice(n, 3, replace=False), 0] += 5.0
        rows.append(states)
    means = np.stack([r.mean(0) / np.linalg.norm(r.mean(0)) for r in rows])
    return _windows([1] * texts, means, np.zeros((texts, 1)), {6: np.concatenate(rows).astype(np.float32)}, lengths), y


def test_attention_pool_finds_a_few_planted_tokens_that_the_mean_dilutes():
    train, y = _diluted(0)
    test, y_test = _diluted(1)
    with_attention = _fit(train, y, heads=1, epochs=60, l2=1e-4)
    mean_only = _fit(WindowSet(train.pooled, train.owner, train.flags, train.lengths, {}), y, epochs=60, l2=1e-4)
    accuracy = lambda head, data: float(((score_texts(head, data, np.arange(len(y_test))) >= 0.5) == (y_test == 1)).mean())
    # measured: 0.97 against 0.73
    assert accuracy(with_attention, test) > 0.9
    assert accuracy(mean_only, WindowSet(test.pooled, test.owner, test.flags, test.lengths, {})) < accuracy(with_attention, test) - 0.1


def test_max_per_text_takes_each_texts_highest_window():
    assert max_per_text(np.array([0.1, 0.9, 0.3, 0.2]), np.array([0, 0, 1, 1]), 2).tolist() == [0.9, 0.3]


def test_cli_refuses_bad_attention_settings_before_reading_anything(capsys, tmp_path):
    """A typo in a 17-minute training run is refused at once, with the values in the message."""
    import pytest

    for argv, shown in ((["--heads", "0"], f"got 0 and {list(tc.ATTENTION_LAYERS)}"),
                        (["--attention-layers", "4", "7"], f"got {tc.HEADS} and [4, 7]"),
                        (["--attention-layers", "4", "4"], f"got {tc.HEADS} and [4, 4]")):
        with pytest.raises(SystemExit) as exit_info:
            tc.main([*argv, "--corpus", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "head.safetensors")])
        assert exit_info.value.code == 2
        assert shown in capsys.readouterr().err
    assert not (tmp_path / "head.safetensors").exists()
