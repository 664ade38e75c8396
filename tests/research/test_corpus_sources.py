"""Corpus sources that need no download: the interpreter's own documentation, on the benign side."""

from __future__ import annotations

import json

from research.guardrails import corpus_sources
from research.guardrails.corpus import CORPUS_PATH


def test_reference_passages_are_whole_paragraphs_of_bounded_length_grouped_by_topic():
    from pydoc_data.topics import topics

    rows = corpus_sources.python_reference_passages(per_topic=3, min_chars=300, max_chars=700)
    assert rows and all(r["label"] == 0 and r["source"] == "python_reference" for r in rows)
    assert all(300 <= len(r["text"]) <= 700 for r in rows)
    by_group: dict[str, list[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r["text"])
    assert max(map(len, by_group.values())) <= 3 and len(by_group) > 40
    for group, texts in by_group.items():
        topic = topics[group.removeprefix("pyref-")]
        # Every paragraph of a passage is a paragraph of its own topic: nothing cut mid-sentence.
        assert all(paragraph in topic for text in texts for paragraph in text.split("\n\n"))
    assert corpus_sources.python_reference_passages(per_topic=3) == rows  # deterministic


def test_each_reference_topic_lies_on_one_side_of_the_split():
    sides: dict[str, set[str]] = {}
    for line in CORPUS_PATH.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["source"] == "python_reference":
            sides.setdefault(row["template"], set()).add(row["split"])
    assert len(sides) > 40 and all(len(s) == 1 for s in sides.values())
    assert {s for ss in sides.values() for s in ss} == {"train", "test"}
