"""OpenAI response shaping for chat and text completions, streamed or whole. No FastAPI here.

The model replica yields events (`start`, then `delta`s with a choice index); these functions
turn them into OpenAI objects or SSE lines, passing each choice's text through its filter chain.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from serve_app.errors import AegisError, find_aegis_error
from serve_app.pipeline import FilterChain, RequestContext
from serve_app.protocol import new_id

Kind = Literal["chat", "completion"]


@dataclass
class _Choice:
    filters: FilterChain
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    started: bool = False


def _finish(reason: str | None) -> str:
    # "cancelled" only happens when the client is gone; anything else a client sees is OpenAI's.
    return "length" if reason == "length" else "stop"


async def collect(events: AsyncIterator[dict[str, Any]], *, kind: Kind, model: str, choices: int,
                  ctx: RequestContext, open_filters: Callable[[], FilterChain]) -> dict[str, Any]:
    """Consume a whole event stream into one chat.completion / text_completion object."""
    state = {i: _Choice(open_filters()) for i in range(choices)}
    async for event in events:
        if event["type"] == "start":
            ctx.prompt_tokens = event["prompt_tokens"]
            continue
        choice = state[event["index"]]
        choice.text.append(choice.filters.feed(event["text"]))
        if event["finish_reason"] is not None:
            choice.text.append(choice.filters.flush())
            choice.finish_reason = _finish(event["finish_reason"])
            ctx.completion_tokens += event["completion_tokens"]
    created = int(time.time())
    if kind == "chat":
        body_choices = [{"index": i, "message": {"role": "assistant", "content": "".join(c.text)},
                         "logprobs": None, "finish_reason": c.finish_reason or "stop"}
                        for i, c in state.items()]
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        body_choices = [{"index": i, "text": "".join(c.text), "logprobs": None,
                         "finish_reason": c.finish_reason or "stop"} for i, c in state.items()]
        obj, prefix = "text_completion", "cmpl"
    return {"id": new_id(prefix), "object": obj, "created": created, "model": model,
            "choices": body_choices, "usage": usage(ctx)}


async def stream_sse(events: AsyncIterator[dict[str, Any]], *, kind: Kind, model: str,
                     choices: int, include_usage: bool, ctx: RequestContext,
                     open_filters: Callable[[], FilterChain]) -> AsyncIterator[str]:
    """Turn an event stream into OpenAI SSE lines, ending with `data: [DONE]`.

    An error after the stream began cannot change the HTTP status any more; it is sent as an
    `error` event in the OpenAI envelope and the stream ends, as OpenAI's own API does.
    """
    state = {i: _Choice(open_filters()) for i in range(choices)}
    created = int(time.time())
    if kind == "chat":
        obj, chunk_id = "chat.completion.chunk", new_id("chatcmpl")
    else:
        obj, chunk_id = "text_completion", new_id("cmpl")

    def chunk(index: int, text: str, finish_reason: str | None) -> str:
        if kind == "chat":
            delta: dict[str, Any] = {"content": text}
            if not state[index].started:
                delta["role"] = "assistant"
                state[index].started = True
            choice = {"index": index, "delta": delta, "logprobs": None,
                      "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text, "logprobs": None,
                      "finish_reason": finish_reason}
        body = {"id": chunk_id, "object": obj, "created": created, "model": model,
                "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return _sse(body)

    try:
        async for event in events:
            if event["type"] == "start":
                ctx.prompt_tokens = event["prompt_tokens"]
                continue
            index, state_ = event["index"], state[event["index"]]
            text = state_.filters.feed(event["text"])
            if event["finish_reason"] is not None:
                text += state_.filters.flush()
                ctx.completion_tokens += event["completion_tokens"]
                if text:
                    yield chunk(index, text, None)
                yield chunk(index, "", _finish(event["finish_reason"]))
            elif text:
                yield chunk(index, text, None)
    except Exception as exc:  # noqa: BLE001 - the stream must end in an envelope, not a reset
        error = find_aegis_error(exc) or AegisError(
            f"internal error (request id {ctx.request_id})")
        ctx.annotations["stream_error"] = error.error_type
        yield _sse(error.envelope())
        return
    if include_usage:
        yield _sse({"id": chunk_id, "object": obj, "created": created, "model": model,
                    "choices": [], "usage": usage(ctx)})
    yield "data: [DONE]\n\n"


def usage(ctx: RequestContext) -> dict[str, int]:
    return {"prompt_tokens": ctx.prompt_tokens, "completion_tokens": ctx.completion_tokens,
            "total_tokens": ctx.prompt_tokens + ctx.completion_tokens}


def embeddings_response(vectors: list[list[float]], *, model: str, prompt_tokens: int,
                        encoding_format: str) -> dict[str, Any]:
    import base64

    import numpy as np

    data = []
    for index, vector in enumerate(vectors):
        if encoding_format == "base64":
            # What the openai SDK decodes: little-endian float32 bytes, base64.
            value: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        else:
            value = vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
