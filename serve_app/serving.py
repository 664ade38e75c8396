"""OpenAI response shaping for chat and text completions, streamed or whole. No FastAPI here.

The model replica yields events (`start`, then `delta`s with a choice index); these functions
turn them into OpenAI objects or SSE lines, passing each choice's text through its filter chain.
With tools, each choice's filtered text is parsed for tool calls once it is complete, so call
arguments pass the same filters (output redaction) as any other text.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import AegisError, find_aegis_error
from serve_app.pipeline import FilterChain, RequestContext
from serve_app.protocol import new_id
from serve_app.function_calling import ParsedOutput, ToolPlan, parse_tool_calls
from serve_app.replica_api import StreamEvent, StreamStart

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


def _start(event: StreamStart, state: dict[int, _Choice], ctx: RequestContext) -> None:
    ctx.prompt_tokens = event.prompt_tokens
    # A forced tool call's prefill was written by us into the assistant turn: the model's text
    # continues it, so it goes in front of every choice (through the filters, like the rest).
    prefill = event.prefill
    if prefill:
        for choice in state.values():
            choice.text.append(choice.filters.feed(prefill))


def _parse(choice: _Choice, tools: ToolPlan) -> ParsedOutput:
    return parse_tool_calls("".join(choice.text), tools.names, parallel=tools.parallel)


async def collect(events: AsyncIterator[StreamEvent], *, kind: Kind, model: str, choices: int,
                  ctx: RequestContext, open_filters: Callable[[], FilterChain],
                  tools: ToolPlan | None = None) -> dict[str, Any]:
    """Consume a whole event stream into one chat.completion / text_completion object.

    With `tools`, each choice's text is parsed for tool calls; a choice with calls gets
    `message.tool_calls` and `finish_reason: "tool_calls"`.
    """
    state = {i: _Choice(open_filters()) for i in range(choices)}
    async for event in events:
        if isinstance(event, StreamStart):
            _start(event, state, ctx)
            continue
        choice = state[event.index]
        choice.text.append(choice.filters.feed(event.text))
        if event.finish_reason is not None:
            choice.text.append(choice.filters.flush())
            choice.finish_reason = _finish(event.finish_reason)
            ctx.completion_tokens += event.completion_tokens
    created = int(time.time())
    if kind == "chat":
        body_choices = [_chat_choice(i, c, tools) for i, c in state.items()]
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        body_choices = [{"index": i, "text": "".join(c.text), "logprobs": None,
                         "finish_reason": c.finish_reason or "stop"} for i, c in state.items()]
        obj, prefix = "text_completion", "cmpl"
    return {"id": new_id(prefix), "object": obj, "created": created, "model": model,
            "choices": body_choices, "usage": usage(ctx)}


def _chat_choice(index: int, choice: _Choice, tools: ToolPlan | None) -> dict[str, Any]:
    finish_reason = choice.finish_reason or "stop"
    message: dict[str, Any] = {"role": "assistant", "content": "".join(choice.text)}
    if tools is not None:
        parsed = _parse(choice, tools)
        if parsed.tool_calls:
            message = {"role": "assistant", "content": parsed.content,
                       "tool_calls": parsed.tool_calls}
            finish_reason = "tool_calls"
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def _buffered_end(choice: _Choice, tools: ToolPlan,
                  reason: str) -> tuple[str | None, list[dict[str, Any]], str]:
    """(content, tool calls, finish reason) of a choice whose text was held back whole."""
    choice.text.append(choice.filters.flush())
    parsed = _parse(choice, tools)
    if parsed.tool_calls:
        return parsed.content, parsed.tool_calls, "tool_calls"
    return "".join(choice.text), [], _finish(reason)


async def stream_sse(events: AsyncIterator[StreamEvent], *, kind: Kind, model: str,
                     choices: int, include_usage: bool, ctx: RequestContext,
                     open_filters: Callable[[], FilterChain],
                     tools: ToolPlan | None = None) -> AsyncIterator[str]:
    """Turn an event stream into OpenAI SSE lines, ending with `data: [DONE]`.

    With `tools`, each choice's text is held until it is complete and then sent as one content
    delta or one `tool_calls` delta, before its finish chunk. A call can only be told apart
    from text, and its JSON validated, once it is whole; vLLM streams partial argument JSON
    instead, which clients must then reassemble and which cannot be taken back when the JSON
    turns out invalid. Without tools, text streams as it is made.

    An error after the stream began cannot change the HTTP status any more; it is sent as an
    `error` event in the OpenAI envelope and the stream ends, as OpenAI's own API does.
    """
    state = {i: _Choice(open_filters()) for i in range(choices)}
    created = int(time.time())
    if kind == "chat":
        obj, chunk_id = "chat.completion.chunk", new_id("chatcmpl")
    else:
        obj, chunk_id = "text_completion", new_id("cmpl")

    def chunk(index: int, text: str | None, finish_reason: str | None,
              tool_calls: list[dict[str, Any]] | None = None) -> str:
        if kind == "chat":
            delta: dict[str, Any] = {"content": text}
            if tool_calls:
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
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
            if isinstance(event, StreamStart):
                _start(event, state, ctx)
                continue
            index, state_ = event.index, state[event.index]
            if tools is not None:
                state_.text.append(state_.filters.feed(event.text))
                if event.finish_reason is not None:
                    ctx.completion_tokens += event.completion_tokens
                    content, calls, reason = _buffered_end(state_, tools, event.finish_reason)
                    if content:
                        yield chunk(index, content, None)
                    if calls:
                        yield chunk(index, None, None, calls)
                    yield chunk(index, "", reason)
                continue
            text = state_.filters.feed(event.text)
            if event.finish_reason is not None:
                text += state_.filters.flush()
                ctx.completion_tokens += event.completion_tokens
                if text:
                    yield chunk(index, text, None)
                yield chunk(index, "", _finish(event.finish_reason))
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
