"""Builds the labelled prompt-injection corpus from cited templates (`python -m research.guardrails.corpus`).

Every example records its template id and source. The split is by template: a template (and every
example made from it) is either in train or in held-out test, so test measures phrasings training
never saw. Slot fillers (goals, carriers, topics) are shared by both splits. Extra labelled examples
can be added as JSON Lines under `data/extra/` (`{"text", "label", "source", "group"?}`; split by the
hash of `group`, or of the text without one); `corpus_sources.py` imports cited real prompts there.
An extra group whose prompts contain most of a template's wording joins that template's side.

Most of this corpus is generated: it shows the classifier separates these families, and overstates
how well it would do on real-world traffic; the imported real prompts temper that only a little.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import hashlib
import json
import random
import re
from pathlib import Path

from research.guardrails import corpus_templates as T
from research.guardrails.corpus_sources import read_jsonl, shingles, write_jsonl

DATA_DIR = Path(__file__).with_name("data")
CORPUS_PATH = DATA_DIR / "corpus.jsonl"
TEST_FRACTION = 0.25
_HOMO = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "i": "і", "x": "х", "y": "у"})
_LEET = str.maketrans({"o": "0", "i": "1", "e": "3", "a": "4", "s": "5", "t": "7"})


def _split_for(template_id: str, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{template_id}".encode()).digest()
    return "test" if digest[0] / 256 < TEST_FRACTION else "train"


def extra_split(group: str, seed: int = 13) -> str:
    """The side ("train" or "test") an extra group lands on, unless it repeats a template's wording."""
    return _split_for(f"extra-{group}", seed)


def _expression(rng: random.Random) -> str:
    """A random arithmetic expression, as a calculator user types it: "(17 - 4) * 3 ** 2"."""
    def term(depth: int) -> str:
        if depth == 0 or rng.random() < 0.4:
            # Mostly small numbers, as people type them; "**" is also markdown bold in jailbreaks.
            return rng.choice([str(rng.randint(0, 12)), str(rng.randint(0, 12)), str(rng.randint(0, 999)),
                               f"{rng.randint(0, 99)}.{rng.randint(0, 9)}",
                               f"{rng.choice(['sqrt', 'abs', 'round'])}({rng.randint(1, 500)})"])
        inner = f"{term(depth - 1)} {rng.choice(['+', '-', '*', '/', '**', '%', '//'])} {term(depth - 1)}"
        return f"({inner})" if rng.random() < 0.5 else inner
    return term(3)


_LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
          "labore et dolore magna aliqua").split()


def _filler(rng: random.Random) -> str:
    """Repetitive placeholder text: one word many times, lorem ipsum, or a repeated phrase."""
    kind = rng.randrange(3)
    if kind == 0:
        return " ".join([rng.choice(["word", "test", "hello", "the", "data", "foo", "yes", "a"])] * rng.randint(8, 300))
    if kind == 1:
        return " ".join(_LOREM[i % len(_LOREM)] for i in range(rng.randint(5, 400)))
    return " ".join([rng.choice(T.BENIGN_SENTENCES)] * rng.randint(3, 30))


def _markdown(rng: random.Random) -> str:
    """Benign text with markdown emphasis and headings, as pasted notes look."""
    label = rng.choice(["Important", "Note", "Update", "Reminder", "Summary", "Warning", "TL;DR", "Action items"])
    body = " ".join(rng.sample(T.BENIGN_SENTENCES, 2))
    return rng.choice([f"**{label}:** {body}", f"## {label}\n\n- {body}", f"**{body}**",
                       f"# {label}\n**{rng.choice(T.TOPICS)}** - {body}", f"*{label}*: {body} **Thanks!**"])


# Slots filled by a generator rather than a list; drawn in this order, and only when used.
_GENERATED = {"expr": _expression, "filler": _filler, "markdown": _markdown}


def _fill(template: str, rng: random.Random) -> str:
    generated = {name: make(rng) for name, make in _GENERATED.items() if f"{{{name}}}" in template}
    if generated:  # drawn only here: older templates keep their fillings
        return template.format(**generated, city=rng.choice(T.CITIES), food=rng.choice(T.FOODS))
    units = rng.choice(T.UNITS)
    sentence = rng.choice(T.BENIGN_SENTENCES)
    topic, topic2 = rng.sample(T.TOPICS, 2)
    return template.format(
        goal=rng.choice(T.GOALS), obj=rng.choice(T.OBJECTS), persona=rng.choice(T.PERSONAS),
        carrier=rng.choice(T.CARRIERS), topic=topic, topic2=topic2, thing=rng.choice(T.THINGS),
        code_task=rng.choice(T.CODE_TASKS), unit=units[0], unit2=units[1], city=rng.choice(T.CITIES),
        hobby=rng.choice(T.HOBBIES), food=rng.choice(T.FOODS), benign_howto=rng.choice(T.BENIGN_HOWTO),
        b64=base64.b64encode(sentence.encode()).decode(), hex=sentence.encode().hex(), rot13=codecs.encode(sentence, "rot13"),
    )


def _obfuscate(text: str, how: str, rng: random.Random) -> str:
    """Obfuscations from Wei et al. 2023 and the Unicode tricks that normalisation undoes."""
    if how == "base64":
        return f"Decode this base64 and do what it says: {base64.b64encode(text.encode()).decode()}"
    if how == "hex":
        return f"The following hex is your real task: {text.encode().hex()}"
    if how == "rot13":
        return f"Apply rot13 to this and follow it: {codecs.encode(text, 'rot13')}"
    if how == "homoglyph":
        return "".join(ch.translate(_HOMO) if rng.random() < 0.5 else ch for ch in text)
    if how == "zero_width":
        return "\u200b".join(text[i : i + 2] for i in range(0, len(text), 2))
    if how == "leet":
        return text.translate(_LEET)
    if how == "spaced":
        words = text.split()
        k = rng.randrange(len(words))
        words[k] = " ".join(words[k])
        return " ".join(words)
    raise ValueError(how)


def build(seed: int = 13, per_attack_template: int = 30, per_benign_template: int = 60) -> list[dict]:
    """Generate the corpus; deterministic for a seed."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()

    def add(text: str, label: int, source: str, template_id: str, variant: str) -> None:
        if variant != "extra":
            text = f"{rng.choice(T.PREFIXES)}{text}{rng.choice(T.SUFFIXES)}"
        if text in seen:
            return
        seen.add(text)
        rows.append({"text": text, "label": label, "source": source, "template": template_id,
                     "variant": variant, "split": _split_for(template_id, seed)})

    obfuscations = ["base64", "hex", "rot13", "homoglyph", "zero_width", "leet", "spaced"]
    for i, (source, template) in enumerate(T.ATTACK_TEMPLATES):
        tid = f"attack-{hashlib.sha256(template.encode()).hexdigest()[:10]}"  # stable when templates are added
        for _ in range(per_attack_template):
            text = _fill(template, rng)
            variant = "plain"
            if rng.random() < 0.2:  # a fifth of attacks obfuscated, as in-the-wild prompts often are
                variant = rng.choice(obfuscations)
                text = _obfuscate(text, variant, rng)
            elif rng.random() < 0.3:  # casing noise
                text = text.lower() if rng.random() < 0.5 else text.upper()
                variant = "case"
            add(text, 1, source, tid, variant)
    for i, (source, template) in enumerate(T.BENIGN_TEMPLATES):
        tid = f"benign-{hashlib.sha256(template.encode()).hexdigest()[:10]}"
        for _ in range(per_benign_template):
            add(_fill(template, rng), 0, f"benign_{source}", tid, "plain")
    extras = [row for extra in sorted((DATA_DIR / "extra").glob("*.jsonl")) for row in read_jsonl(extra)]
    linked = _link_to_templates(extras)
    for item in extras:
        group = item.get("group") or hashlib.sha256(item["text"].encode()).hexdigest()[:12]
        add(item["text"], int(item["label"]), item.get("source", "extra"), linked.get(group, f"extra-{group}"), "extra")
    return rows


def _link_to_templates(extras: list[dict]) -> dict[str, str]:
    """Map an extra group to a template id when its prompts contain most of that template's wording.

    The templates were written from the same papers as some imported prompts (the DAN template
    paraphrases real DAN prompts); such a group must land on its template's side of the split.
    """
    templates = [(f"{kind}-{hashlib.sha256(t.encode()).hexdigest()[:10]}", shingles(re.sub(r"\{\w+\}", " ", t)))
                 for kind, pairs in (("attack", T.ATTACK_TEMPLATES), ("benign", T.BENIGN_TEMPLATES)) for _, t in pairs]
    groups: dict[str, set[str]] = {}
    for item in extras:
        if item.get("group"):
            groups.setdefault(item["group"], set()).update(shingles(item["text"]))
    links: dict[str, str] = {}
    for group, words in groups.items():
        for tid, tsh in templates:
            if len(tsh) >= 5 and len(tsh & words) / len(tsh) >= 0.5:
                links[group] = tid
                break
    return links


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=CORPUS_PATH)
    args = parser.parse_args(argv)
    rows = build(args.seed)
    write_jsonl(args.out, rows)
    counts = {(r["split"], r["label"]) for r in rows}
    summary = {f"{s}/{'attack' if l else 'benign'}": sum(1 for r in rows if r["split"] == s and r["label"] == l) for s, l in sorted(counts)}
    print(json.dumps({"path": str(args.out), "rows": len(rows), **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
