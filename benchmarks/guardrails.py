"""Guardrail benchmark: injection TPR/FPR on the held-out split, CPU latency, redaction precision/recall.

Run: `python -m benchmarks.guardrails [--candidate-head PATH] [--no-baseline]` (~20 min; writes benchmarks/results/guardrails.json,
prints markdown).
The corpus is generated from templates (research/guardrails/corpus.py): numbers here show how the
layers separate those families, and overstate accuracy on real-world traffic. The real sets read
beside it: fresh and third (real attacks and benign prompts from packages the corpus does not use),
tasks (real task instructions, benign only: FPR), RAG (real prompt templates, each fill with an
attack twin) and labelled (two public injection datasets' test splits, labelled by their authors).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).with_name("results") / "guardrails.json"
_CANDIDATE = "heuristics+classifier, candidate"  # the name prefix of a --candidate-head scanner


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


BASELINE = "jailguard 0.1.2 (third-party baseline)"


def build_scanners(candidate_head: Path | None = None, baseline: bool = True) -> dict:
    """The scanners compared, built once: heuristics alone, the shipped scanner, its head on a float32
    encoder, given `candidate_head` a retrained head on the shipped int8 encoder, and with `baseline`
    the detector a user might pick instead (jailguard: an MLP over the same MiniLM's embeddings)."""
    import torch

    # One thread per scan: the ingress scans requests concurrently, one per worker thread, and on
    # a shared 2-core machine more threads per scan only add contention (AEGIS_BENCH_THREADS overrides).
    torch.set_num_threads(int(os.environ.get("AEGIS_BENCH_THREADS", "1")))
    from security.guardrails.classifier import EmbeddingHeadClassifier, SentenceEncoder
    from security.guardrails.scanner import PromptScanner
    from security.settings import InjectionSettings

    shipped = InjectionSettings()
    candidate = {}
    if candidate_head is not None:
        # Scored in the same run as the shipped head, so a retrained head is compared side by side.
        candidate[f"{_CANDIDATE} {candidate_head.name}"] = PromptScanner.from_settings(
            InjectionSettings(head_path=str(candidate_head)))
    return {
        "heuristics": PromptScanner(InjectionSettings(classifier="none")),
        "heuristics+classifier": PromptScanner.from_settings(shipped),
        # The same head on torch's float32 encoder (what a GPU runs): what int8 on ONNX Runtime buys
        # in latency and costs in accuracy.
        "heuristics+classifier, float32 encoder": PromptScanner(
            shipped, EmbeddingHeadClassifier(SentenceEncoder(quantization="none"))),
        **candidate,
        **({BASELINE: _baseline()} if baseline else {}),
    }


def _baseline():
    from benchmarks.jailguard_baseline import JailguardScanner, prepare_model_dir

    # Its model is the bundled MiniLM exported to ONNX here, once: jailguard's own download is not reachable offline.
    return JailguardScanner(prepare_model_dir())


def injection_benchmark(scanners: dict) -> dict:
    """Scan every held-out example with each scanner."""
    import torch

    from research.guardrails.corpus import CORPUS_PATH
    from research.guardrails.corpus_sources import read_jsonl

    test = [r for r in read_jsonl(CORPUS_PATH) if r["split"] == "test"]
    out: dict = {"examples": len(test), "attacks": sum(r["label"] for r in test), "torch_threads": torch.get_num_threads()}
    head_scores: list[tuple[bool, float, int]] = []  # (decided by a strong heuristic, head score, label)
    for name, scanner in scanners.items():
        scanner.scan("warm-up text")
        results, out[name] = _scan_set(scanner, test)
        by_variant: Counter[str] = Counter()
        missed_variant: Counter[str] = Counter()
        for r, result in zip(test, results):
            if name == "heuristics+classifier":
                head_scores.append((result.layer == "heuristics", result.score, r["label"]))
            if r["label"]:
                by_variant[r["variant"]] += 1
                missed_variant[r["variant"]] += not result.is_injection
        out[name]["missed_by_variant"] = {v: f"{missed_variant[v]}/{n}" for v, n in sorted(by_variant.items())}
    # The same scores at the thresholds the training report gives for other out-of-fold FPR targets:
    # the trade-off, shown, not used to pick the shipped threshold (that rule is fixed in training).
    from security.guardrails.classifier import load_report

    out["other_operating_points"] = {}
    for target, threshold in load_report().get("threshold_for_out_of_fold_fpr", {}).items():
        flagged = [(strong or score >= threshold, label) for strong, score, label in head_scores]
        out["other_operating_points"][f"oof_fpr<={target}"] = {
            "threshold": threshold,
            "tpr": sum(f for f, label in flagged if label) / out["attacks"],
            "fpr": sum(f for f, label in flagged if not label) / (len(test) - out["attacks"]),
        }
    # A candidate head or the baseline sits at its own operating point; compare the shipped head at the same FPR.
    for name in [n for n in out if n.startswith(_CANDIDATE) or n == BASELINE]:
        tpr, fpr = shipped_tpr_at_fpr(head_scores, out[name]["fpr"])
        out[name]["shipped_at_same_fpr"] = {"tpr": tpr, "fpr": fpr}
    return out


def shipped_tpr_at_fpr(scored: list[tuple[bool, float, int]], max_fpr: float) -> tuple[float, float]:
    """The highest (TPR, its FPR) over thresholds on `scored` rows (decided by a strong heuristic,
    head score, label) whose FPR is at most `max_fpr`; rows a strong heuristic decided are always flagged."""
    attacks = sum(label for _, _, label in scored)
    benign = len(scored) - attacks
    tp = sum(label for strong, _, label in scored if strong)
    fp = sum(1 - label for strong, _, label in scored if strong)
    best = (tp / attacks, fp / benign) if fp / benign <= max_fpr else (0.0, 0.0)
    ranked = sorted(((score, label) for strong, score, label in scored if not strong), reverse=True)
    for i, (score, label) in enumerate(ranked):
        tp, fp = tp + label, fp + 1 - label
        # A threshold flags every row with an equal score, so only the last of a tie is a point.
        if (i + 1 == len(ranked) or ranked[i + 1][0] != score) and fp / benign <= max_fpr:
            best = max(best, (tp / attacks, fp / benign))
    return best


def eval_set_benchmark(scanners: dict, path: Path, registered: tuple[str, ...] = (), known: tuple[str, ...] = ()) -> dict:
    """Scan one of the evaluation sets outside the corpus: the fresh and third sets, built from
    packages the corpus does not use and decontaminated against it (`corpus_sources_fresh.py`,
    `corpus_sources_third.py`), or the RAG set, real prompt templates filled with documents, each
    fill with an attack twin (`corpus_sources_rag.py`).

    The scanners named in `registered` scan the set a second time with each row's template
    registered (`injection.templates`), as an application that registers its template gets; those
    named in `known`, with every library of `injection.known_templates` enabled instead.
    """
    from research.guardrails.corpus_sources import read_jsonl

    rows = read_jsonl(path)
    attacks = sum(r["label"] for r in rows)
    out: dict = {"examples": len(rows), "attacks": attacks}
    for name, scanner in scanners.items():
        out[name] = _scan_set(scanner, rows)[1]
    for name in registered:
        out[f"{name}, template registered"] = _scan_set(scanners[name], rows, _own_template())[1]
    every_known = _known() if known else ()
    for name in known:
        out[f"{name}, known templates"] = _scan_set(scanners[name], rows, lambda r: every_known)[1]
    return out


def _own_template():
    """row -> (its `template`, registered), each template parsed once."""
    from security.guardrails.prompt_templates import PromptTemplate

    parsed: dict[str, PromptTemplate] = {}

    def templates(row: dict) -> tuple:
        if row["template"] not in parsed:
            parsed[row["template"]] = PromptTemplate.parse(row["group"], row["template"])
        return (parsed[row["template"]],)

    return templates


@lru_cache(maxsize=1)
def _known() -> tuple:
    """Every shipped known template (`injection.known_templates` with all its libraries), in matching order."""
    from security.guardrails.prompt_templates import compile_templates, known_libraries, known_templates

    return tuple(compile_templates(known_templates(list(known_libraries()))).values())


def known_template_matches(texts: list[str]) -> int:
    """How many of `texts` fill a known template (string matching only: no scanner reads them)."""
    from security.guardrails.prompt_templates import split_templates

    return len(split_templates(texts, _known())[1])


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate: the third set has few attacks, so its TPR is shown with one."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _scan_set(scanner, rows: list[dict], templates_of=None) -> tuple[list, dict]:
    """Each row's scan result, and TPR, FPR, latency and flagged counts per source (`source (attack|benign)`).

    With `templates_of` (row -> registered templates), each row is scanned with those templates; a
    template's own text is then left out of the scan wherever the row fills it (`template_matched`
    counts those rows).
    """
    results, latencies_ms = [], []
    flagged: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for r in rows:
        templates = templates_of(r) if templates_of else None
        started = time.perf_counter()
        results.append(scanner.scan_texts([r["text"]], "messages", templates) if templates_of else scanner.scan(r["text"]))
        latencies_ms.append((time.perf_counter() - started) * 1000)
        source = f"{r['source']} ({'attack' if r['label'] else 'benign'})"
        seen[source] += 1
        flagged[source] += results[-1].is_injection
    attacks = sum(r["label"] for r in rows)
    tp = sum(flagged[s] for s in seen if s.endswith("(attack)"))
    fp = sum(flagged[s] for s in seen if s.endswith("(benign)"))
    benign = len(rows) - attacks
    matched = {"template_matched": sum(bool(r.templates) for r in results)} if templates_of else {}
    # A benign-only set (the task-prompt set) has no TPR to report.
    return results, {**matched, "tpr": tp / attacks if attacks else None, "fpr": fp / benign, "false_positives": fp, "missed": attacks - tp,
                     "tpr_95ci": wilson_interval(tp, attacks) if attacks else None, "fpr_95ci": wilson_interval(fp, benign),
                     "p50_ms": statistics.median(latencies_ms), "p99_ms": _percentile(latencies_ms, 99),
                     "flagged_by_source": {s: f"{flagged[s]}/{n}" for s, n in sorted(seen.items())}}


def _redaction_set(seed: int = 7, n: int = 400) -> list[tuple[str, list[tuple[str, str]]]]:
    """Sentences with planted values of known type, plus distractors that must not be redacted."""
    rng = random.Random(seed)

    def card() -> str:
        digits = [rng.choice("3456")] + [str(rng.randrange(10)) for _ in range(14)]
        for check in range(10):
            from security.redaction import luhn_ok

            if luhn_ok("".join(digits) + str(check)):
                raw = "".join(digits) + str(check)
                return " ".join(raw[i : i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else raw
        raise AssertionError

    def iban() -> str:
        bban = "".join(str(rng.randrange(10)) for _ in range(18))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
        raw = f"DE{check:02d}{bban}"
        return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.5 else raw

    def word(k: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(k))

    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    makers = {
        "EMAIL": lambda: f"{word(6)}.{word(4)}@{word(7)}.{rng.choice(['com', 'org', 'io', 'co.uk'])}",
        "PHONE": lambda: rng.choice([f"+1 {rng.randrange(200, 999)}-{rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}",
                                      f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}",
                                      f"({rng.randrange(200, 999)}) {rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}",
                                      f"{rng.randrange(200, 999)}-{rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}"]),
        "CREDIT_CARD": card,
        "IBAN": iban,
        "US_SSN": lambda: f"{rng.randrange(1, 665):03d}-{rng.randrange(1, 99):02d}-{rng.randrange(1, 9999):04d}",
        "IP_ADDRESS": lambda: rng.choice([".".join(str(rng.randrange(256)) for _ in range(4)),
                                           f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}"]),
        "API_KEY": lambda: rng.choice(["AKIA" + "".join(rng.choice(alnum[:26] + alnum[52:]) for _ in range(16)),
                                        "ghp_" + "".join(rng.choice(alnum) for _ in range(36)),
                                        "sk-" + "".join(rng.choice(alnum) for _ in range(48)),
                                        "xoxb-" + "-".join(str(rng.randrange(10**11, 10**12)) for _ in range(2)) + "-" + word(24)]),
        "JWT": lambda: "eyJhbGciOiJIUzI1NiJ9.eyJ" + "".join(rng.choice(alnum) for _ in range(30)) + "." + "".join(rng.choice(alnum) for _ in range(43)),
    }
    distractors = ["order 48213", "version 2.3.1", "on 2024-05-01", "room 1204", "ISBN 978-3-16-148410-0",
                   "build 1.2.3.4.5", "total 1234.56 EUR", "ticket #99812", "commit 3f2a9c1b", "at 10:30"]
    templates = ["Please contact {v} about {d}.", "The value {v} appeared in the log next to {d}.",
                 "Note {d}: forward to {v} asap.", "{d} - customer gave {v} on the phone."]
    items = []
    for _ in range(n):
        entity = rng.choice(sorted(makers))
        value = makers[entity]()
        items.append((rng.choice(templates).format(v=value, d=rng.choice(distractors)), [(entity, value)]))
    return items


def redaction_benchmark() -> dict:
    """Per-type precision and recall: a planted value counts as found when its placeholder replaces it whole."""
    from security.redaction import Redactor

    redactor = Redactor()
    tp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    latencies_ms = []
    for text, planted in _redaction_set():
        started = time.perf_counter()
        out, counts = redactor.redact(text)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        for entity, value in planted:
            hit = value not in out and f"[{entity}]" in out
            tp[entity] += hit
            fn[entity] += not hit
            extra = counts[entity] - (1 if hit else 0)
            fp[entity] += max(0, extra)
        for entity, n in counts.items():
            if all(entity != e for e, _ in planted):
                fp[entity] += n
    per_type = {}
    for entity in sorted(set(tp) | set(fn) | set(fp)):
        p = tp[entity] / max(1, tp[entity] + fp[entity])
        r = tp[entity] / max(1, tp[entity] + fn[entity])
        per_type[entity] = {"precision": p, "recall": r, "support": tp[entity] + fn[entity]}
    return {"per_type": per_type, "p50_ms": statistics.median(latencies_ms), "engine": "own recognizers (regex + Luhn/mod-97/SSA/ipaddress validation)"}


def scanners_in(injection: dict) -> list[str]:
    return [name for name, m in injection.items() if isinstance(m, dict) and "p50_ms" in m]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate-head", type=Path, help="a head from train_classifier.py to score beside the shipped one")
    parser.add_argument("--no-baseline", action="store_true", help=f"leave out {BASELINE} (~20 ms a prompt here: ~4 min a run)")
    args = parser.parse_args(argv)
    if args.candidate_head is not None and not args.candidate_head.is_file():
        parser.error(f"--candidate-head {args.candidate_head}: no such file")
    load_at_start = os.getloadavg()[0]
    scanners = build_scanners(args.candidate_head, baseline=not args.no_baseline)
    injection = injection_benchmark(scanners)
    from research.guardrails import (corpus_sources_fresh, corpus_sources_labelled, corpus_sources_rag, corpus_sources_tasks,
                                     corpus_sources_third)

    # The real sets scanned as sent; the RAG set also with its templates registered, below.
    plain_sets = {"fresh": corpus_sources_fresh.OUT_PATH, "third": corpus_sources_third.OUT_PATH,
                  "tasks": corpus_sources_tasks.OUT_PATH, "labelled": corpus_sources_labelled.OUT_PATH}
    sets = {**{key: eval_set_benchmark(scanners, path) for key, path in plain_sets.items()},
            "rag": eval_set_benchmark(scanners, corpus_sources_rag.OUT_PATH, registered=("heuristics", "heuristics+classifier"),
                                      known=("heuristics+classifier",))}
    # Would enabling every known template change what the other sets' scans read? (string matching only)
    from research.guardrails.corpus import CORPUS_PATH
    from research.guardrails.corpus_sources import read_jsonl

    held_out = [r["text"] for r in read_jsonl(CORPUS_PATH) if r["split"] == "test"]
    known_matches = {"held_out": known_template_matches(held_out),
                     **{key: known_template_matches([r["text"] for r in read_jsonl(path)]) for key, path in plain_sets.items()}}
    redaction = redaction_benchmark()
    result = {"injection": injection, **sets, "known_template_matches": known_matches, "redaction": redaction, "cpu_count": os.cpu_count(),
              "load_average_1m_at_start": load_at_start, "load_average_1m_at_end": os.getloadavg()[0]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Prompt injection, held-out split ({injection['examples']} prompts, {injection['attacks']} attacks; CPU, {injection['torch_threads']} torch threads)\n")
    print("| layers | TPR | FPR | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- |")
    for name in scanners_in(injection):
        m = injection[name]
        print(f"| {name} | {m['tpr']:.1%} | {m['fpr']:.1%} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    for name, m in injection["other_operating_points"].items():
        print(f"| heuristics+classifier, threshold {m['threshold']:.3f} ({name}) | {m['tpr']:.1%} | {m['fpr']:.1%} | | |")
    for name in [n for n in injection if n.startswith(_CANDIDATE) or n == BASELINE]:
        m = injection[name]["shipped_at_same_fpr"]
        print(f"| heuristics+classifier at the held-out FPR of {name} | {m['tpr']:.1%} | {m['fpr']:.1%} | | |")
    int8, float32 = injection["heuristics+classifier"], injection["heuristics+classifier, float32 encoder"]
    print(f"\nint8 ONNX Runtime encoder vs torch float32, p50: {float32['p50_ms'] / int8['p50_ms']:.2f}x faster; "
          f"p99: {float32['p99_ms'] / int8['p99_ms']:.2f}x")
    titles = {"fresh": "fresh set ({} real prompts from packages the corpus does not use, {} attacks",
              "third": "third set ({} real prompts from packages the corpus does not use, {} attacks",
              "tasks": "task-prompt set ({} real promptsource (P3) task templates with corpus text in their slots, {} attacks",
              "labelled": "labelled set ({} prompts of two public injection datasets' test splits, neuralchemy and S-Labs, {} attacks",
              "rag": "RAG set ({} real llama-index and langchain prompt templates filled with documents, {} of them with a planted instruction"}
    for key, title in titles.items():
        m_set = sets[key]
        print(f"\nPrompt injection, {title.format(m_set['examples'], m_set['attacks'])}; 95% Wilson intervals)\n")
        print("| layers | TPR | FPR | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- |")
        for name in scanners_in(m_set):
            m = m_set[name]
            (fl, fh) = m["fpr_95ci"]
            tpr = "n/a" if m["tpr"] is None else f"{m['tpr']:.1%} ({m['tpr_95ci'][0]:.1%}-{m['tpr_95ci'][1]:.1%})"
            print(f"| {name} | {tpr} | {m['fpr']:.1%} ({fl:.1%}-{fh:.1%}) | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
        for name in [n for n in scanners_in(m_set) if "template_matched" in m_set[n]]:
            print(f"\n{name}: {m_set[name]['template_matched']}/{m_set['examples']} prompts matched a registered template")
    print(f"\nPrompts of the other sets that fill a known template (string matching only): {known_matches}")
    print("\nRedaction (generated labelled set)\n\n| type | precision | recall | n |\n| --- | --- | --- | --- |")
    for entity, m in redaction["per_type"].items():
        print(f"| {entity} | {m['precision']:.1%} | {m['recall']:.1%} | {m['support']} |")
    print(f"\n1-minute load average: {load_at_start:.1f} at the start, {result['load_average_1m_at_end']:.1f} at the end, on {os.cpu_count()} CPUs")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
