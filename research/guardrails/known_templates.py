"""Builds the known templates: the default prompt templates of RAG libraries (`injection.known_templates`).

Most RAG applications send their framework's default template: llama-index's query engine sends
"Context information is below. ... {context_str} ... Query: {query_str}" as the user turn. Rather
than have every operator copy those strings into `injection.templates`, the ones of pinned library
versions ship in `data/known_templates.json`, and `injection.known_templates: [llama-index-core]`
registers them all (`templates.known_templates` reads the file).

Built from the wheels (read with `ast`, nothing installed or imported) of the libraries and
versions in `corpus_sources_rag.TEMPLATE_PACKAGES` (MIT): every string constant or `"a" + "b"`
chain, anywhere in a module (module-level, a `ChatMessage(content=...)`, a `from_messages` tuple),
with a document slot (`corpus_sources_rag.DOCUMENT_SLOTS`) and only `{identifier}` slots, that
parses as a `PromptTemplate`; not docstrings, f-string parts, or messages a `raise` or a logging
call formats. Templates are stored in `str.format` form, as each library fills them: langchain
formats with `str.format`; llama-index leaves literal braces as written, so its are doubled
(`templates.from_llama_index`). A template whose literal text alone trips a strong heuristic is
left out: the guardrail must never take a library's "ignore the previous ..." wording on trust. A
template of another version of a library is not in the file and does not match; the file names
the versions.

Regenerate (pip reaches PyPI):
  pip download llama-index-core==0.14.25 langchain-classic==1.0.8 langchain-community==0.4.2 \\
      --no-deps --only-binary :all: -d wheels
  python -m research.guardrails.known_templates --wheels-dir wheels
Check another release (how many of its templates the file holds word for word):
  python -m research.guardrails.known_templates --check-wheel langchain-0.3.27-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import ast
import json
import string
import sys
import zipfile
from pathlib import Path

from security.guardrails.prompt_templates import KNOWN_TEMPLATES_PATH, PromptTemplate, TemplateError, library_template

_LOG_CALLS = {"debug", "info", "warning", "warn", "error", "exception", "critical"}


def string_value(node: ast.AST) -> str | None:
    """The value of a string constant, or of `"a" + "b"` concatenations of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = string_value(node.left), string_value(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def _fields(text: str) -> list[str] | None:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError:
        return None


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of each string expression: a constant, or a whole `"a" + "b"` chain of them;
    not docstrings, f-string parts, or what a `raise` or a logging call formats."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))  # a docstring
        # f-strings are built at run time: their constant parts are not whole templates.
        if isinstance(node, (ast.Raise, ast.JoinedStr)) or (isinstance(node, ast.Call) and getattr(node.func, "attr", "") in _LOG_CALLS):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp):
            value = string_value(node)
            if value is not None:
                skip.update(id(n) for n in ast.walk(node))  # its parts are not templates of their own
                found.append((node.lineno, value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def templates_in_module(source: str, document_slots: set[str]) -> list[tuple[int, str]]:
    """(line, text) of each string in `source` that is a prompt template with a document slot."""
    found = []
    for line, text in _strings(ast.parse(source)):
        fields = _fields(text)
        if not fields or not set(fields) & document_slots or not all(f.isidentifier() for f in fields):
            continue
        try:
            PromptTemplate.parse("candidate", text)
        except TemplateError:
            continue
        found.append((line, text))
    return found


def wheel_templates(wheel: Path, library: str) -> list[tuple[str, str]]:
    """(name, template in `str.format` form) of every prompt template with a document slot in `wheel`."""
    from research.guardrails.corpus_sources_rag import DOCUMENT_SLOTS

    found = []
    with zipfile.ZipFile(wheel) as zf:
        for path in sorted(n for n in zf.namelist() if n.endswith(".py") and "/tests/" not in n):
            for line, text in templates_in_module(zf.read(path).decode("utf-8"), DOCUMENT_SLOTS):
                found.append((f"{library}:{path}:{line}", library_template(text, library)))
    return found


def build(wheels_dir: Path) -> tuple[dict, list[str]]:
    """The file's content, and the names left out because their literal text trips a strong heuristic."""
    from research.guardrails.corpus_sources_rag import TEMPLATE_PACKAGES, TemplateError as WheelError
    from security.guardrails.heuristics import scan_heuristics
    from security.guardrails.normalize import normalize

    rows, seen, refused = [], set(), []
    for package, version in TEMPLATE_PACKAGES.items():
        library = package.replace("_", "-")
        wheel = wheels_dir / f"{package}-{version}-py3-none-any.whl"
        if not wheel.is_file():
            raise WheelError(f"{wheel} not found: pip download the wheels into {wheels_dir} (see the module docstring)")
        for name, text in wheel_templates(wheel, library):
            if text in seen:
                continue
            seen.add(text)
            literal = "\n".join(PromptTemplate.parse(name, text).literals)
            if scan_heuristics(normalize(literal)).strong:
                refused.append(name)
                continue
            rows.append({"name": name, "library": library, "template": text})
    # The most specific template first: of two that match, the one with more literal text leaves
    # out more of the library's own words.
    rows.sort(key=lambda r: -sum(map(len, PromptTemplate.parse(r["name"], r["template"]).literals)))
    libraries = {p.replace("_", "-"): v for p, v in TEMPLATE_PACKAGES.items()}
    return {"libraries": libraries, "refused_strong_heuristic": refused, "templates": rows}, refused


def coverage(wheel: Path, path: Path = KNOWN_TEMPLATES_PATH) -> dict:
    """How many of the templates in another release's `wheel` the shipped file holds word for word
    (those match as known templates; the others are scanned whole)."""
    library = wheel.name.split("-")[0].replace("_", "-")  # llama_index_core-0.12.52-... -> llama-index-core
    shipped = {t["template"] for t in json.loads(path.read_text())["templates"]}
    found = dict((text, name) for name, text in wheel_templates(wheel, library))
    missing = sorted(name for text, name in found.items() if text not in shipped)
    return {"wheel": wheel.name, "templates": len(found), "shipped": len(found) - len(missing), "not_shipped": missing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wheels-dir", type=Path, help="build the file from the TEMPLATE_PACKAGES wheels here")
    source.add_argument("--check-wheel", type=Path, action="append",
                        help="print how many of this wheel's templates the shipped file holds (repeatable)")
    parser.add_argument("--out", type=Path, default=KNOWN_TEMPLATES_PATH)
    args = parser.parse_args(argv)
    from research.guardrails.corpus_sources_rag import TemplateError as WheelError

    if args.check_wheel:
        for wheel in args.check_wheel:
            if not wheel.is_file():
                print(f"error: {wheel} not found", file=sys.stderr)
                return 2
            print(json.dumps(coverage(wheel, args.out)))
        return 0
    try:
        data, refused = build(args.wheels_dir)
    except WheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    by_library = {lib: sum(t["library"] == lib for t in data["templates"]) for lib in data["libraries"]}
    print(json.dumps({"file": str(args.out), "templates": by_library, "refused_strong_heuristic": refused}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
