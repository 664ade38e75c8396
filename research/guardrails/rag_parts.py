"""What the shipped scanner reacts to in a RAG prompt: the template's own words, or the documents?

Run: `python -m research.guardrails.rag_parts` (~1 min; prints JSON, writes nothing). On the RAG
set (`corpus_sources_rag.py`), each clean fill and attack twin is scanned four ways:

- as sent (what the guardrail benchmark's RAG row counts);
- its template's literal text alone, slots empty (clean fills only: the twins share the text;
  also counted per distinct template);
- its slot values alone (what a registered template leaves to scan);
- each blank-line paragraph alone, flagged if any is (would scoring parts apart help free-form
  prompts, where no template says what is instruction and what is document?).

Only counts are printed, never texts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RAG_SET = Path(__file__).resolve().parent / "data" / "rag_templates.jsonl"


def paragraphs(text: str) -> list[str]:
    """`text` cut at blank lines, empty parts dropped (the whole text if nothing is left)."""
    parts = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    return parts or [text]


def literal_text(template) -> str:
    """A parsed template's literal parts, joined as slot values are joined."""
    return "\n\n".join(part.strip() for part in template.literals if part.strip())


def rag_parts(scanner, rows: list[dict]) -> dict:
    """Flagged counts per way of reading, for clean fills (`benign`) and attack twins (`attack`)."""
    from benchmarks.guardrails import _own_template
    from security.guardrails.prompt_templates import split_templates

    def flagged(texts: list[str]) -> bool:
        return scanner.scan_texts(texts, "messages").is_injection

    out: dict = {}
    own_template = _own_template()  # each template parsed once
    loud: dict[str, bool] = {}  # template -> its literal text alone is flagged
    for label, side in ((0, "benign"), (1, "attack")):
        counts = {"n": 0, "as_sent": 0, "slots_only": 0, "any_paragraph": 0}
        if side == "benign":
            counts["literal_only"] = 0
        for row in (r for r in rows if r["label"] == label):
            (template,) = own_template(row)
            slots, matched = split_templates([row["text"]], [template])
            counts["n"] += 1
            counts["as_sent"] += flagged([row["text"]])
            counts["slots_only"] += bool(matched) and flagged(slots)
            counts["any_paragraph"] += any(flagged([p]) for p in paragraphs(row["text"]))
            if side == "benign":
                if row["template"] not in loud:
                    loud[row["template"]] = flagged([literal_text(template)])
                counts["literal_only"] += loud[row["template"]]
        out[side] = counts
    out["templates"] = {"n": len(loud), "flagged_alone": sum(loud.values())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rag-set", type=Path, default=RAG_SET)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from research.guardrails.corpus_sources import read_jsonl
    from security.guardrails.scanner import PromptScanner
    from security.settings import InjectionSettings

    print(json.dumps(rag_parts(PromptScanner.from_settings(InjectionSettings()), read_jsonl(args.rag_set)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
