"""Generated documents with planted instructions: twins, formats, groups, determinism."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from research.guardrails import corpus_documents as docs


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(line == other for other in it) for line in short)


@pytest.mark.parametrize("kind", sorted(docs.KINDS))
def test_each_kind_plants_one_instruction_in_its_own_format(kind):
    rng = random.Random(kind)
    for _ in range(20):
        attacked, clean = docs._document_pair(kind, "PLANTED {goal}.", rng)
        added = [line for line in attacked.splitlines() if "PLANTED" in line]
        assert len(added) == 1, attacked
        # The clean twin is the same document, line for line, without the planted line.
        assert _is_subsequence(clean.splitlines(), attacked.splitlines())
        assert len(attacked.splitlines()) == len(clean.splitlines()) + 1
        assert len(attacked) <= docs.MAX_CHARS or len(attacked.splitlines()) <= 4
    if kind == "code":
        assert added[0].lstrip().startswith("# PLANTED")
    if kind == "api_json":
        assert added[0].strip().startswith('"alert": "PLANTED')


def test_build_is_deterministic_and_grouped_by_kind_and_style():
    rows = docs.build(seed=3, per_group=2)
    assert rows == docs.build(seed=3, per_group=2)
    groups = Counter(r["group"] for r in rows)
    assert len(groups) == len(docs.KINDS) * len(docs.INJECTIONS)
    assert {r["source"] for r in rows} == {docs.SOURCE}
    by_group: dict[str, set[int]] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["label"])
    assert all(1 in labels for labels in by_group.values())
    # Twins sit in their attack's group; a clean document already written (a short README or
    # recipe repeats) is kept once, in the group that wrote it first.
    assert sum(labels == {0, 1} for labels in by_group.values()) >= 0.9 * len(by_group)
    assert len({r["text"] for r in rows}) == len(rows)
    json.dumps(rows)


def test_human_notes_appear_on_both_sides():
    """Notes to people ('please ignore my previous e-mail') are in clean documents too, so they are no cue."""
    rows = docs.build(seed=5, per_group=3)
    starts = tuple(n.split("{")[0][:25] for n in docs.HUMAN_NOTES)
    with_note = Counter(r["label"] for r in rows if any(s in r["text"] for s in starts))
    assert with_note[0] > 50 and with_note[1] > 50
