"""Registered prompt templates: scan only the text an application put into a template's slots."""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

# The libraries' own templates (built by `python -m research.guardrails.known_templates`).
KNOWN_TEMPLATES_PATH = Path(__file__).with_name("data") / "known_templates.json"
# A template must vouch for this much text, or it would exempt next to nothing while still
# matching prompts it was never written for.
MIN_LITERAL_CHARS = 20


class TemplateError(ValueError):
    """A template that cannot be registered (settings validation reports it at start-up)."""


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt template in Python `str.format` syntax, as RAG frameworks write them.

    A RAG application fills a template such as "Use the following pieces of context ...
    {context} ... Question: {question}" and sends the result as the user turn. The template's own
    instructions read like an injection to the classifier; the documents and the question are
    what an attacker can reach. A registered template's literal text is left out of the scan and
    its slot values are scanned, in order, as one text (so an instruction split across two slots
    is still read as one).

    Matching is literal: the text must start with the template's first literal part and end with
    its last (surrounding whitespace ignored), with the middle parts in order between them. What
    is left out is only ever an exact copy of the template's literal text, so an attacker gains
    nothing by imitating a template: every other character is still scanned.

    Attributes:
        name: how audit records and errors refer to it.
        literals: the literal parts, stripped of surrounding whitespace; `len(slots) + 1` of them,
            the first and last possibly empty (a template that starts or ends with a slot).
        slots: slot names in order (`""` for a positional `{}`).
    """

    name: str
    literals: tuple[str, ...]
    slots: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, template: str) -> PromptTemplate:
        """Compile `template` (`{{` and `}}` are literal braces, as in `str.format`).

        Raises:
            TemplateError: malformed braces, no slot, or under MIN_LITERAL_CHARS of literal text.
        """
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise TemplateError(f"injection.templates[{name!r}] is not a str.format template: {exc}") from None
        literals, slots = [""], []
        for literal, field, _spec, _conversion in parts:
            literals[-1] += literal
            if field is not None:
                slots.append(field)
                literals.append("")
        literals = [lit.strip() for lit in literals]
        # Slots with only whitespace between them are one stretch of caller text.
        merged_literals, merged_slots = [literals[0]], []
        for slot, literal in zip(slots, literals[1:]):
            if merged_slots and not merged_literals[-1]:
                merged_slots[-1] += f"+{slot}"
                merged_literals[-1] = literal
            else:
                merged_slots.append(slot)
                merged_literals.append(literal)
        if not merged_slots:
            raise TemplateError(f"injection.templates[{name!r}] has no {{slot}}: register only templates that take caller text")
        literal_chars = sum(len(lit) for lit in merged_literals)
        if literal_chars < MIN_LITERAL_CHARS:
            raise TemplateError(
                f"injection.templates[{name!r}] has {literal_chars} characters of literal text; "
                f"a template must have at least {MIN_LITERAL_CHARS}"
            )
        return cls(name, tuple(merged_literals), tuple(merged_slots))

    def match(self, text: str) -> list[str] | None:
        """The slot values of `text` filled from this template, or None when it is not a fill.

        Linear in the text: the middle literal parts are found leftmost-first (no backtracking,
        so no pathological inputs). When a document repeats a literal part the split can differ
        from the application's, but the characters left out are still copies of the template.
        """
        text = text.strip()
        first, *middle, last = self.literals
        if not text.startswith(first):
            return None
        end = len(text) - len(last)
        if not text.endswith(last) or end < len(first):
            return None
        values, at = [], len(first)
        for literal in middle:
            found = text.find(literal, at, end)
            if found < 0:
                return None
            values.append(text[at:found])
            at = found + len(literal)
        values.append(text[at:end])
        return values


_LLAMA_INDEX_FIELD = re.compile(r"\{([^{}]+)\}")


def from_llama_index(template: str) -> str:
    """The `str.format` form of a llama-index template.

    llama-index fills a template with its own formatter (`prompts.utils.SafeFormatter`): it
    replaces `{name}` and leaves every other brace as written, so its "{{...}}" JSON examples
    reach the model doubled, where `str.format` would halve them. Its literal braces are doubled
    here, so that `PromptTemplate.parse` and `str.format` see what llama-index sends.
    """
    out, at = [], 0
    for match in _LLAMA_INDEX_FIELD.finditer(template):
        if match.group(1).isidentifier():
            out += [template[at:match.start()].replace("{", "{{").replace("}", "}}"), match.group(0)]
            at = match.end()
    out.append(template[at:].replace("{", "{{").replace("}", "}}"))
    return "".join(out)


def library_template(template: str, library: str) -> str:
    """`template` in `str.format` form as `library` fills it: llama-index-core with its own
    formatter (`from_llama_index`), langchain with `str.format` (unchanged)."""
    return from_llama_index(template) if library == "llama-index-core" else template


def compile_templates(templates: dict[str, str]) -> dict[str, PromptTemplate]:
    """Parse every named template (raises TemplateError for the first bad one)."""
    return {name: PromptTemplate.parse(name, template) for name, template in templates.items()}


def split_templates(texts: Iterable[str], templates: Sequence[PromptTemplate]) -> tuple[list[str], list[str]]:
    """Replace each text that fills one of `templates` by its slot values, joined by blank lines.

    The first template that matches a text wins; a text that matches none is kept whole.

    Returns:
        (the texts to scan, one per text, and the names of the templates that matched, one per
        matched text).
    """
    out, matched = [], []
    for text in texts:
        for template in templates:
            values = template.match(text)
            if values is not None:
                out.append("\n\n".join(v.strip() for v in values if v.strip()))
                matched.append(template.name)
                break
        else:
            out.append(text)
    return out, matched


@lru_cache(maxsize=None)
def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def known_libraries(path: Path = KNOWN_TEMPLATES_PATH) -> dict[str, str]:
    """library -> the version whose templates ship."""
    return dict(_read(path)["libraries"])


def known_templates(libraries: list[str], path: Path = KNOWN_TEMPLATES_PATH) -> dict[str, str]:
    """name -> template for every shipped template of `libraries` (names as in `known_libraries`).

    Raises:
        ValueError: a library whose templates do not ship.
    """
    if not libraries:
        return {}
    data = _read(path)
    unknown = sorted(set(libraries) - data["libraries"].keys())
    if unknown:
        raise ValueError(f"injection.known_templates names {unknown}; templates ship for {sorted(data['libraries'])}")
    return {t["name"]: t["template"] for t in data["templates"] if t["library"] in libraries}
