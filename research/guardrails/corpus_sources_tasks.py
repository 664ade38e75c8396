"""Builds the task-prompt set (`python -m research.guardrails.corpus_sources_tasks --promptsource SDIST`).

A benign evaluation set of real instructions to a model about a text: what the head flags most
(the third set's document tasks, the RAG set's templates). Written to `data/tasks_eval.jsonl`, NOT
under `data/extra/`, so `corpus.py` never trains on it. Rows: `{"text", "label": 0, "source",
"group"}`, one group per dataset configuration.

  promptsource_tasks  every prompt template of promptsource 0.2.3 (BigScience; Bach et al., ACL
      2022 demo; the P3 prompts T0 was trained on, Sanh et al., ICLR 2022; Apache-2.0;
      https://pypi.org/project/promptsource/, the sdist's `promptsource/templates/**/templates.yaml`):
      2,085 templates for 279 dataset configurations, written by people for people's datasets
      ("Read the passage below and choose the right answer ...", "Summarize: ..."). A template's
      input side (its Jinja before `|||`) is rendered in a sandbox with each slot filled by real
      benign text of the corpus (SLOT_SOURCES): a passage for a slot whose name says it is a
      document (_DOCUMENT_SLOT), a sentence otherwise, chosen by a hash of the template, so a
      rebuild gives the same rows.

Like the RAG set, it is not independent of training: the fills are corpus text, which the head
sees as benign (12 of a sample of 1,000 flagged alone). What the head never saw is the instruction
around them, and that is what this set measures. The fills make no sense as answers to the tasks.

Dropped: a template that does not render with made-up slot values (loops over structured fields,
arithmetic on numbers), a rendering under MIN_CHARS, one whose template adds under MIN_FRAME_WORDS
words of its own (it would be corpus text alone), one holding an injection phrase (the benign
sources' _INJECTION), and one that repeats a row of the fresh or third evaluation set (their
NearDuplicateIndex rule).

Trained on, it does not help (research/guardrails/HISTORY.md, "Real task instructions"): built into
`data/extra/` with `--min-frame-words 0`, the head learned P3's instructions (held-out P3 datasets:
28 of 477 flagged by the shipped head, 2 by the new one) but not the third set's task prompts.

Regenerate (pip reaches PyPI; the sdist is read, never installed: it requires Python < 3.10):
  pip download promptsource==0.2.3 --no-deps --ignore-requires-python -d tasks
  python -m research.guardrails.corpus_sources_tasks --promptsource tasks/promptsource-0.2.3.tar.gz
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import yaml
from jinja2 import ChainableUndefined
from jinja2.sandbox import SandboxedEnvironment

from research.guardrails.corpus_sources import EXTRA_DIR, read_jsonl, write_extra
from research.guardrails.corpus_sources_benign import _INJECTION
from research.guardrails.corpus_sources_fresh import OUT_PATH as FRESH_PATH, NearDuplicateIndex, _h, _row
from research.guardrails.corpus_sources_third import OUT_PATH as THIRD_PATH

SOURCE = "promptsource_tasks"
OUT_PATH = EXTRA_DIR.parent / "tasks_eval.jsonl"  # never under extra/: corpus.py reads extra/*.jsonl into training
# Real benign text already in the corpus (`corpus_sources_benign`, `corpus_sources`), decontaminated
# against the evaluation sets when it was imported.
SLOT_SOURCES = ("package_readmes", "python_docs", "python_reference", "sms_chat", "vader_tweets_chat")
MIN_CHARS = 40
# A prompt whose template adds fewer words than this ("{{context}} {{question}}") is only corpus text.
MIN_FRAME_WORDS = 3
PASSAGE_CHARS = (300, 700)
SENTENCE_CHARS = (20, 200)
_DOCUMENT_SLOT = re.compile(r"context|passage|article|text|document|paragraph|story|review|dialog|content|abstract|"
                            r"support|summary|conversation|body|background|email|fact", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class _YamlLoader(yaml.SafeLoader):
    """Reads promptsource's `!Template` objects as plain mappings (no Python object is built)."""


_YamlLoader.add_multi_constructor("!", lambda loader, _tag, node: loader.construct_mapping(node, deep=True))


class FillText:
    """Real benign text to put in slots: passages of the longer rows, sentences of all."""

    def __init__(self, extra_dir: Path = EXTRA_DIR):
        self.passages: list[str] = []
        self.sentences: list[str] = []
        for source in SLOT_SOURCES:
            for row in read_jsonl(extra_dir / f"{source}.jsonl"):
                text = row["text"].strip()
                if len(text) >= PASSAGE_CHARS[0]:
                    self.passages.append(text[:PASSAGE_CHARS[1]].rsplit(" ", 1)[0])
                    self.sentences += [s for s in _SENTENCE_END.split(text) if SENTENCE_CHARS[0] <= len(s) <= SENTENCE_CHARS[1]]
                elif len(text) >= SENTENCE_CHARS[0]:
                    self.sentences.append(text)
        if not self.passages or not self.sentences:
            raise ValueError(f"no fill text under {extra_dir}: build {SLOT_SOURCES} first")
        # The texts handed out since the last render: `frame_words` takes them out to count the
        # template's own words.
        self.handed_out: list[str] = []

    def for_slot(self, name: str, rng: random.Random) -> SlotValue:
        text = rng.choice(self.passages if _DOCUMENT_SLOT.search(name) else self.sentences)
        self.handed_out.append(text)
        return SlotValue(text, self, rng)


class SlotValue(str):
    """A slot's text that also answers the structured access templates make (`example.title`
    through `_Environment.getattr`, `answers["text"][0]`, `{% for choice in choices %}`) with more
    real text, so that a template written for a nested dataset row still renders. As a list it
    holds 3 items, so `|length` is 3."""

    def __new__(cls, value: str, fill: FillText, rng: random.Random) -> SlotValue:
        obj = super().__new__(cls, value)
        obj._fill, obj._rng = fill, rng
        return obj

    def __getitem__(self, key: Any) -> SlotValue:
        return self._fill.for_slot(key if isinstance(key, str) else "", self._rng)

    def __iter__(self):
        return iter([self._fill.for_slot("", self._rng) for _ in range(len(self))])

    def __len__(self) -> int:
        return 3


class _SlotMethod(SlotValue):
    """`value.title` where a dataset row has a field named like a `str` method: printed, more real
    text (not the method's repr); called (`value.split(" ")`), the method of the slot's text."""

    def __new__(cls, value: str, fill: FillText, rng: random.Random, method: Any) -> _SlotMethod:
        obj = super().__new__(cls, value, fill, rng)
        obj._method = method
        return obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method(*args, **kwargs)


class _Environment(SandboxedEnvironment):
    """Answers a template's `slot.field` with more real text. Done here, not in
    `SlotValue.__getattr__`, so Jinja's own probes of an object (`unsafe_callable`,
    `jinja_pass_arg`) still find nothing."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if not isinstance(obj, SlotValue) or attribute.startswith("_"):
            return super().getattr(obj, attribute)
        text = obj._fill.for_slot(attribute, obj._rng)
        if hasattr(str, attribute):
            return _SlotMethod(text, obj._fill, obj._rng, super().getattr(obj, attribute))
        return text


def _environment() -> SandboxedEnvironment:
    env = _Environment(undefined=ChainableUndefined)
    # promptsource's own filters; the first item keeps a rendering deterministic.
    env.filters["choice"] = lambda seq: seq[0] if seq else ""
    env.filters["random"] = lambda seq: seq[0] if seq else ""
    return env


def templates(sdist: Path) -> list[tuple[str, str, dict]]:
    """(dataset configuration, template id, template) of every template in the promptsource sdist."""
    found = []
    with tarfile.open(sdist) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            parts = member.name.split("/promptsource/templates/", 1)
            if len(parts) != 2 or not parts[1].endswith("/templates.yaml"):
                continue
            dataset = parts[1][: -len("/templates.yaml")]
            data = yaml.load(tar.extractfile(member).read().decode("utf-8"), Loader=_YamlLoader)
            found += [(dataset, key, template) for key, template in sorted((data.get("templates") or {}).items())]
    return found


def render(template: dict, fill: FillText, rng: random.Random, env: SandboxedEnvironment) -> str | None:
    """The input side of `template` with real text in its slots, or None when it does not render."""
    source = template["jinja"].split("|||")[0]
    fill.handed_out.clear()
    names = sorted(set(re.findall(r"\b[A-Za-z_]\w*\b", source)))  # sorted: set order changes with PYTHONHASHSEED
    context: dict[str, Any] = {name: fill.for_slot(name, rng) for name in names}
    choices = template.get("answer_choices")
    # Slicing a SlotValue draws another sentence, so `[:40]` gives a whole sentence, not a prefix.
    # Kept as built: a true prefix would move the random draws and change nearly every row of the
    # committed set (measured: 1,714 of 1,757), whose figures the README reports.
    context["answer_choices"] = ([c.strip() for c in choices.split("|||")] if isinstance(choices, str) and "{" not in choices
                                 else [fill.for_slot("", rng)[:40] for _ in range(3)])
    try:
        text = env.from_string(source).render(**context)
    except Exception:  # noqa: BLE001 - a template written for fields we cannot imitate is dropped, and counted
        return None
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", text)).strip()


def frame_words(text: str, fills: Sequence[str]) -> int:
    """Words of `text` that are not fill text: the template's own instruction."""
    for fill in sorted(set(fills), key=len, reverse=True):
        text = text.replace(fill, " ")
    return len(re.findall(r"[A-Za-z]+", text))


def task_rows(sdist: Path, extra_dir: Path = EXTRA_DIR, avoid: Sequence[str] = (), counts: Counter | None = None,
              min_frame_words: int = MIN_FRAME_WORDS) -> list[dict]:
    """One benign row per template that renders; see the module docstring for what is dropped."""
    counts = counts if counts is not None else Counter()
    fill, env, avoid_index = FillText(extra_dir), _environment(), NearDuplicateIndex(list(avoid))
    rows = []
    for dataset, key, template in templates(sdist):
        rng = random.Random(_h(f"{dataset}/{key}"))
        text = render(template, fill, rng, env)
        reason = ("render" if text is None
                  else "length" if len(text) < MIN_CHARS
                  else "no_instruction" if frame_words(text, fill.handed_out) < min_frame_words
                  else "injection" if _INJECTION.search(text)
                  else "evaluation_set" if avoid_index.match(text)
                  else "")
        counts[f"dropped_{reason}" if reason else "kept"] += 1
        if not reason:
            rows.append(_row(text, 0, SOURCE, f"{SOURCE}-{dataset}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promptsource", type=Path, required=True, help="promptsource-0.2.3.tar.gz (pip download, see above)")
    parser.add_argument("--out", type=Path, default=OUT_PATH)
    parser.add_argument("--min-frame-words", type=int, default=MIN_FRAME_WORDS, help="0 keeps templates with no instruction")
    args = parser.parse_args(argv)
    if not args.promptsource.is_file():
        print(f"error: {args.promptsource} not found (see the module docstring for the pip download)", file=sys.stderr)
        return 2
    avoid = [r["text"] for path in (FRESH_PATH, THIRD_PATH) for r in read_jsonl(path)]
    counts: Counter = Counter()
    rows = task_rows(args.promptsource, avoid=avoid, counts=counts, min_frame_words=args.min_frame_words)
    write_extra(args.out, rows)
    print(json.dumps({SOURCE: dict(sorted(counts.items())), "groups": len({r["group"] for r in rows})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
