"""Response shaping and the request pipeline, on event streams shaped like the replica's."""

from __future__ import annotations

import json

import pytest

from serve_app.config import LimitsConfig
from common.errors import InvalidRequest, PayloadTooLarge
from serve_app.pipeline import FilterChain, RequestContext, RequestLimits, RequestPipeline
from serve_app.protocol import ChatCompletionRequest, EmbeddingRequest
from serve_app.serving import collect, embeddings_response, stream_sse
from serve_app.replica_api import StreamDelta, StreamStart


class _Upper:
    """A filter that holds back the last character until flushed (like a redactor's tail)."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = text[-1:] if text else ""
        return text[:-1].upper() if text else ""

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held.upper()


async def _events(*deltas):
    yield StreamStart(prompt_tokens=5)
    for index, text, reason, count in deltas:
        yield StreamDelta(index=index, text=text, finish_reason=reason, completion_tokens=count)


def _ctx() -> RequestContext:
    return RequestContext(request_id="r1", route="/v1/chat/completions", headers={})


async def test_collect_builds_chat_completion_with_usage_and_filters():
    ctx = _ctx()
    result = await collect(
        _events((0, "Par", None, 1), (1, "a", None, 1), (0, "is.", "stop", 2), (1, "b", "length", 2)),
        kind="chat", model="m", choices=2, ctx=ctx,
        open_filters=lambda: FilterChain([_Upper()]))
    assert result["object"] == "chat.completion"
    assert [c["message"]["content"] for c in result["choices"]] == ["PARIS.", "AB"]
    assert [c["finish_reason"] for c in result["choices"]] == ["stop", "length"]
    assert result["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


async def test_stream_sse_chunks_role_usage_and_done():
    ctx = _ctx()
    lines = [line async for line in stream_sse(
        _events((0, "Hel", None, 1), (0, "lo", "stop", 2)), kind="chat", model="m", choices=1,
        include_usage=True, ctx=ctx, open_filters=lambda: FilterChain([]))]
    assert lines[-1] == "data: [DONE]\n\n"
    bodies = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert bodies[0]["choices"][0]["delta"] == {"content": "Hel", "role": "assistant"}
    assert "".join(b["choices"][0]["delta"]["content"] for b in bodies if b["choices"]) == "Hello"
    assert bodies[-2]["choices"][0]["finish_reason"] == "stop"
    assert bodies[-1]["choices"] == [] and bodies[-1]["usage"]["total_tokens"] == 7


async def test_stream_error_mid_stream_ends_with_envelope_not_reset():
    async def failing():
        yield StreamStart(prompt_tokens=1)
        yield StreamDelta(index=0, text="a", finish_reason=None, completion_tokens=1)
        raise RuntimeError("secret internal detail")

    lines = [line async for line in stream_sse(failing(), kind="completion", model="m", choices=1,
                                               include_usage=False, ctx=_ctx(),
                                               open_filters=lambda: FilterChain([]))]
    last = json.loads(lines[-1].removeprefix("data: "))
    assert last["error"]["type"] == "internal_error"
    assert "secret" not in lines[-1]


def test_filter_chain_flushes_held_text_through_later_filters():
    chain = FilterChain([_Upper(), _Upper()])
    out = chain.feed("abc") + chain.feed("de") + chain.flush()
    assert out == "ABCDE"


def test_embeddings_base64_is_little_endian_float32():
    import base64

    import numpy as np

    body = embeddings_response([[0.5, -1.0]], model="e", prompt_tokens=3, encoding_format="base64")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert np.frombuffer(raw, dtype="<f4").tolist() == [0.5, -1.0]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_request_limits():
    limits = RequestLimits(LimitsConfig(max_messages=2, max_n=2, max_embedding_inputs=2))
    pipeline = RequestPipeline(checks=[limits])
    many = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}] * 3)
    with pytest.raises(PayloadTooLarge, match="3 messages"):
        await pipeline.before(RequestContext("r", "/", {}, body=many))
    too_many_n = ChatCompletionRequest(model="m", n=3, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(InvalidRequest, match="n must be <= 2"):
        await pipeline.before(RequestContext("r", "/", {}, body=too_many_n))
    inputs = EmbeddingRequest(model="e", input=["a", "b", "c"])
    with pytest.raises(PayloadTooLarge, match="3 inputs"):
        await pipeline.before(RequestContext("r", "/", {}, body=inputs))
    fine = ChatCompletionRequest(model="m", n=2, messages=[{"role": "user", "content": "x"}] * 2)
    await pipeline.before(RequestContext("r", "/", {}, body=fine))


def test_protocol_rejects_bad_fields():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], temperature=3)
    with pytest.raises(ValidationError):
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}],
                              stream_options={"include_usage": True})
    with pytest.raises(ValidationError, match="at most 4 stop"):
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}],
                              stop=["a", "b", "c", "d", "e"])


# -- text hygiene: what no later stage can carry is refused at the edge, naming the field --------


@pytest.mark.parametrize("body, param", [
    (ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "ok"},
                                    {"role": "user", "content": [{"type": "text", "text": "x\ud800"}]}]}),
     "messages.1.content.0.text"),
    (EmbeddingRequest.model_validate({"model": "m", "input": ["fine", "nul\x00"]}), "input.1"),
    ({"arguments": {"city": "Paris", "nested": [{"deep": "\udfff"}]}}, "arguments.nested.0.deep"),
    ({"documents": [{"id": "a", "metadata": {"k\ud800": "v"}}]}, "documents.0.metadata"),
])
async def test_lone_surrogates_and_nul_are_refused_with_the_field_named(body, param):
    ctx = RequestContext(request_id="r1", route="/x", headers={}, body=body)
    with pytest.raises(InvalidRequest) as info:
        await RequestLimits(LimitsConfig()).check(ctx)
    assert (info.value.status_code, info.value.param, info.value.code) == (400, param, "invalid_text")


async def test_ordinary_unicode_passes_the_text_check():
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "Grüße, 東京, emoji 🙂, tab\there, newline\n"}]})
    await RequestLimits(LimitsConfig()).check(RequestContext(request_id="r1", route="/x", headers={}, body=body))


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "x"}], "presence_penalty": -1.0}, "presence_penalty"),
    ({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]}, "functions"),
    ({"prompt": "x", "suffix": "end"}, "suffix"),
    ({"prompt": "x", "logprobs": 3}, "logprobs"),
])
def test_fields_the_replica_cannot_carry_are_refused_by_name(body, param):
    from serve_app.protocol import CompletionRequest
    from serve_app.replica_api import GenerateRequest

    if "prompt" in body:
        build = lambda: GenerateRequest.completion(CompletionRequest.model_validate({"model": "m", **body}))  # noqa: E731
    else:
        build = lambda: GenerateRequest.chat(ChatCompletionRequest.model_validate({"model": "m", **body}))  # noqa: E731
    with pytest.raises(InvalidRequest) as info:
        build()
    assert (info.value.status_code, info.value.param, info.value.code) == (400, param, "unsupported_field")
