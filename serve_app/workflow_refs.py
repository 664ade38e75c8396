"""The `${...}` reference language of workflows: parsing, finding and rendering references.

    ${inputs.question}                   an input
    ${steps.search.results.0.text}       a step's result, by dotted keys and list indices
    ${steps.search.results[*].id}        `[*]` maps the rest of the path over a list
    ${steps.page.text|truncate:1500}     the one filter: the value as text, at most N characters
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import AegisError, InvalidArguments, ToolFailed

__all__ = ["Ref", "SpecError", "as_text", "lookup", "parse_template", "references", "render", "render_text"]

_PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")
_EXPRESSION_RE = re.compile(r"(inputs|steps)\.([A-Za-z_][A-Za-z0-9_]*)"
                            r"((?:\.[A-Za-z0-9_-]+|\[(?:\d+|\*)\])*)(?:\|(\w+)(?::(\d+))?)?")
_SEGMENT_RE = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+|\*)\]")


class SpecError(ValueError):
    """A validation error that knows which field below the validated model it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


@dataclass(frozen=True)
class Ref:
    """One parsed `${...}`: its root ("inputs" or "steps"), the input or step name, the path."""

    source: str
    root: str
    name: str
    path: tuple[str | int | None, ...]  # None stands for [*]
    truncate: int | None


def parse_template(text: str) -> list[str | Ref]:
    """Split a template string into literal parts and references."""
    parts: list[str | Ref] = []
    end = 0
    for match in _PLACEHOLDER_RE.finditer(text):
        parts.append(text[end:match.start()])
        parts.append(_parse_expression(match.group(1).strip()))
        end = match.end()
    parts.append(text[end:])
    if any(isinstance(part, str) and "${" in part for part in parts):
        raise ValueError("'${' without a closing '}'")
    return [part for part in parts if part != ""]


def _parse_expression(source: str) -> Ref:
    match = _EXPRESSION_RE.fullmatch(source)
    if match is None:
        raise ValueError(f"malformed reference ${{{source}}}: expected ${{inputs.NAME}} or "
                         f"${{steps.ID.PATH}} (PATH: .key, .0, [*]), optionally |truncate:N")
    root, name, path, filter_name, argument = match.groups()
    if filter_name is not None and (filter_name != "truncate" or argument is None
                                    or int(argument) < 1):
        raise ValueError(f"${{{source}}}: the only filter is |truncate:N with N >= 1")
    segments: list[str | int | None] = []
    for key, bracket in _SEGMENT_RE.findall(path):
        segments.append(key if key else (None if bracket == "*" else int(bracket)))
    return Ref(source, root, name, tuple(segments), int(argument) if argument else None)


def references(value: Any,
                loc: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Ref]]:
    """Every reference inside a JSON-like value, with the location of the string holding it."""
    if isinstance(value, str):
        try:
            parts = parse_template(value)
        except ValueError as exc:
            raise SpecError(loc, str(exc)) from None
        yield from ((loc, part) for part in parts if isinstance(part, Ref))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from references(item, (*loc, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from references(item, (*loc, index))


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """A JSON-like value with every template string in it rendered."""
    if isinstance(value, str):
        parts = parse_template(value)
        if len(parts) == 1 and isinstance(parts[0], Ref):
            return lookup(parts[0], context)
        return "".join(part if isinstance(part, str) else as_text(lookup(part, context))
                       for part in parts)
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [render(item, context) for item in value]
    return value


def render_text(template: str, context: Mapping[str, Any]) -> str:
    return as_text(render(template, context))


def lookup(ref: Ref, context: Mapping[str, Any]) -> Any:
    value = _walk(context[ref.root][ref.name], ref.path, ref, f"{ref.root}.{ref.name}")
    return value if ref.truncate is None else _truncate(as_text(value), ref.truncate)


def _walk(value: Any, path: tuple[str | int | None, ...], ref: Ref, where: str) -> Any:
    for index, part in enumerate(path):
        if part is None:
            if not isinstance(value, (list, tuple)):
                raise _unresolved(ref, f"{where} is not a list")
            return [_walk(item, path[index + 1:], ref, f"{where}.{n}")
                    for n, item in enumerate(value)]
        if isinstance(value, Mapping) and str(part) in value:
            value = value[str(part)]
        elif (isinstance(value, (list, tuple)) and str(part).isdigit()
              and int(part) < len(value)):
            value = value[int(part)]
        else:
            raise _unresolved(ref, f"{where} has no '{part}'")
        where = f"{where}.{part}"
    return value


def _unresolved(ref: Ref, detail: str) -> AegisError:
    message = f"${{{ref.source}}} does not resolve: {detail}"
    if ref.root == "inputs":
        # An object or array input without the expected shape is the caller's mistake.
        return InvalidArguments(message, param=f"inputs.{ref.name}")
    # An earlier step's result lacks what the workflow expects: an upstream answer of an
    # unexpected shape (502), not a server bug.
    return ToolFailed(message, code="unresolved_reference")


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return "\n\n".join(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
