"""The ingress request pipeline: checks before the model, text filters after, finishers last.

    request ─► check₁ ─► check₂ ─► … ─► model ─────────► filter chain per choice ─► finishers
               (raise AegisError to refuse)            (feed/flush, streams too)  (audit, always)

The security layer plugs in here: authentication, RBAC, rate limits and prompt scanning are
`RequestCheck`s, PII redaction is a `ResponseFilter`, audit is a `Finisher`. Plain Python.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from serve_app.config import LimitsConfig
from common.errors import InvalidRequest, PayloadTooLarge


@dataclass
class RequestContext:
    """What the pipeline knows about one request; checks may add to it (identity, flags)."""

    request_id: str
    route: str
    headers: Mapping[str, str]
    client_host: str | None = None
    model: str | None = None
    body: Any = None
    identity: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Headers every response to this request carries (e.g. RateLimit-*), errors included.
    response_headers: dict[str, str] = field(default_factory=dict)
    # Facts for the audit record: decisions, flags, redacted types.
    annotations: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    # Set by RequestPipeline.finish: finishers (audit) run exactly once per request.
    finished: bool = False


class RequestCheck(Protocol):
    async def check(self, ctx: RequestContext) -> None:
        """Return to let the request through; raise an `AegisError` to refuse it."""


class TextFilter(Protocol):
    """Per-choice stateful filter over generated text, fed in pieces as they stream."""

    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


class ResponseFilter(Protocol):
    def open(self, ctx: RequestContext) -> TextFilter | None:
        """A fresh filter for one choice of this request, or None to leave text untouched."""


class Finisher(Protocol):
    async def finish(self, ctx: RequestContext, status_code: int) -> None:
        """Called once per request after the response (or the error) is complete."""


class FilterChain:
    """Filters applied in order; what a filter holds back is flushed through the later ones."""

    def __init__(self, filters: Sequence[TextFilter]) -> None:
        self._filters = list(filters)

    def feed(self, text: str) -> str:
        for f in self._filters:
            text = f.feed(text)
        return text

    def flush(self) -> str:
        text = ""
        for f in self._filters:
            text = f.feed(text) + f.flush()
        return text


class RequestPipeline:
    """The ordered checks, filters and finishers of the ingress."""

    def __init__(self, checks: Sequence[RequestCheck] = (), filters: Sequence[ResponseFilter] = (),
                 finishers: Sequence[Finisher] = ()) -> None:
        self.checks = list(checks)
        self.filters = list(filters)
        self.finishers = list(finishers)

    async def before(self, ctx: RequestContext) -> None:
        for check in self.checks:
            await check.check(ctx)

    def open_filters(self, ctx: RequestContext) -> FilterChain:
        return FilterChain([f for rf in self.filters if (f := rf.open(ctx)) is not None])

    async def finish(self, ctx: RequestContext, status_code: int) -> None:
        """Run the finishers once; later calls for the same request (error handlers) do nothing."""
        if ctx.finished:
            return
        ctx.finished = True
        for finisher in self.finishers:
            await finisher.finish(ctx, status_code)


# A lone UTF-16 surrogate (JSON's "\ud800") cannot be encoded as UTF-8: tokenizers, the audit
# log, Redis and the response encoder each fail on it later, as a 500. NUL ends strings in C code.
_BAD_TEXT = re.compile("[\ud800-\udfff\x00]")


def iter_strings(value: Any, *, keys: bool = False,
                 path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string inside a JSON-like value (mappings, lists, pydantic models), depth first, with
    its path (`("messages", "0", "content")`); with `keys`, mapping keys too, at their mapping's path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, BaseModel):
        for name, item in value:
            yield from iter_strings(item, keys=keys, path=(*path, name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if keys:
                yield from iter_strings(key, path=path)
            yield from iter_strings(item, keys=keys, path=(*path, str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from iter_strings(item, keys=keys, path=(*path, str(index)))


def check_text(body: Any) -> None:
    """Refuse a body holding a string no later stage can carry, naming the field.

    Raises:
        InvalidRequest: a lone surrogate or a NUL character anywhere in the body.
    """
    # Keys too: tool arguments and document metadata are free-form.
    for path, text in iter_strings(body, keys=True):
        match = _BAD_TEXT.search(text)
        if match is not None:
            param = ".".join(path) or None
            what = "a NUL character" if match.group() == "\x00" else "a lone UTF-16 surrogate"
            raise InvalidRequest(f"{param or 'body'}: text holds {what} (at character {match.start()}); "
                                 "send valid Unicode", param=param, code="invalid_text")


class RequestLimits:
    """Shape limits the ingress enforces before any model work (body bytes are checked earlier)."""

    def __init__(self, limits: LimitsConfig) -> None:
        self._limits = limits

    async def check(self, ctx: RequestContext) -> None:
        check_text(ctx.body)
        body, limits = ctx.body, self._limits
        messages = getattr(body, "messages", None)
        if messages is not None and len(messages) > limits.max_messages:
            raise PayloadTooLarge(
                f"{len(messages)} messages; at most {limits.max_messages} are allowed",
                param="messages")
        n = getattr(body, "n", 1)
        if n > limits.max_n:
            raise InvalidRequest(f"n must be <= {limits.max_n}, got {n}", param="n")
        inputs = getattr(body, "input", None)
        if isinstance(inputs, list) and len(inputs) > limits.max_embedding_inputs:
            raise PayloadTooLarge(
                f"{len(inputs)} inputs; at most {limits.max_embedding_inputs} per request",
                param="input")
        prompt = getattr(body, "prompt", None)
        if isinstance(prompt, list) and len(prompt) * n > limits.max_n * 4:
            raise InvalidRequest(
                f"{len(prompt)} prompts x n={n} is more than {limits.max_n * 4} sequences",
                param="prompt")
