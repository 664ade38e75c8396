"""The official openai SDK against the default application over real HTTP."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

CAPITAL = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def api_key(make_key) -> str:
    return make_key("user", "e2e-sdk")


@pytest.fixture(scope="module")
def client(default_app, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{default_app}/v1", api_key=api_key, max_retries=0, timeout=300)


def _ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def test_greedy_chat_answers_paris(client):
    response = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=_ask(CAPITAL), temperature=0, max_tokens=40)
    choice = response.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert response.usage.prompt_tokens > 10
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_returns_the_same_text_as_non_streaming(client):
    kwargs = {"model": "smollm2", "messages": _ask("Name three fruits."), "temperature": 0,
              "max_tokens": 20}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_length_finish_n_choices_and_stop(client):
    response = client.chat.completions.create(
        model="smollm2", messages=_ask("Write a poem about rain."), temperature=0.8, seed=3,
        n=2, max_tokens=5)
    assert [c.index for c in response.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in response.choices)
    assert response.usage.completion_tokens == 10
    stopped = client.chat.completions.create(model="smollm2", messages=_ask(CAPITAL),
                                             temperature=0, max_tokens=40, stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def test_text_completions_list_prompt_and_stream(client):
    response = client.completions.create(model="smollm2", prompt=["The sky is", "Water is"],
                                         max_tokens=6, temperature=0)
    assert len(response.choices) == 2 and all(c.text for c in response.choices)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="smollm2", prompt="The sky is", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == response.choices[0].text


def test_embeddings_paraphrases_are_closer(client):
    response = client.embeddings.create(model="all-minilm-l6-v2", input=[
        "How do I reset my password?", "What are the steps to change my password?",
        "The stock market fell sharply today."], encoding_format="float")
    a, b, c = (d.embedding for d in response.data)

    def cos(x, y):
        return sum(i * j for i, j in zip(x, y)) / math.sqrt(sum(i * i for i in x) * sum(j * j for j in y))

    assert cos(a, b) > cos(a, c)
    assert response.usage.prompt_tokens > 0
    # The SDK's default asks for base64 and decodes it: the same vectors must come back.
    decoded = client.embeddings.create(model="minilm", input="How do I reset my password?")
    assert max(abs(x - y) for x, y in zip(decoded.data[0].embedding, a)) < 1e-5


def test_models_lists_names_and_aliases(client):
    ids = {m.id for m in client.models.list()}
    assert {"smollm2-135m-instruct", "smollm2", "all-minilm-l6-v2", "minilm"} <= ids


def test_unknown_model_is_404_envelope(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=_ask("hi"))
    assert info.value.body["code"] == "model_not_found"
    assert info.value.body["param"] == "model"


def test_bad_field_is_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=_ask("hi"), temperature=7)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="smollm2", input="hi")
    assert info.value.body["code"] == "wrong_model_task"


def test_prompt_over_limit_is_413(client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="smollm2", messages=_ask("word " * 3000), max_tokens=1)
    assert info.value.status_code == 413
    assert info.value.body["code"] == "prompt_too_long"


def test_max_tokens_over_limit_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=_ask("hi"), max_tokens=100_000)
    assert info.value.body["param"] == "max_tokens"


def test_raw_http_errors_use_the_envelope(default_app, api_key):
    with httpx.Client(base_url=default_app, timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"}) as http:
        bad_json = http.post("/v1/chat/completions", content=b"{nope",
                             headers={"content-type": "application/json"})
        assert bad_json.status_code == 400
        assert bad_json.json()["error"]["code"] == "invalid_json"
        missing = http.post("/v1/chat/completions", json={"model": "smollm2"})
        assert missing.status_code == 400
        assert missing.json()["error"]["param"] == "messages"
        huge = http.post("/v1/embeddings", content=b"x" * 1_500_000,
                         headers={"content-type": "application/json"})
        assert huge.status_code == 413
        assert huge.json()["error"]["type"] == "invalid_request_error"
        nowhere = http.get("/v1/nothing-here")
        assert nowhere.status_code == 404 and "error" in nowhere.json()
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert set(ready.json()["models"].values()) == {"ready"}
        assert ready.headers.get("x-request-id")


@pytest.mark.parametrize("create, extra", [
    ("chat", {"response_format": {"type": "json_object"}}),
    ("chat", {"logprobs": True, "top_logprobs": 2}),
    ("chat", {"frequency_penalty": 0.5}),
    ("chat", {"logit_bias": {"1": -100}}),
    ("completion", {"best_of": 3}),
])
def test_fields_it_cannot_honour_are_refused_not_dropped(client, create, extra):
    with pytest.raises(openai.BadRequestError) as info:
        if create == "chat":
            client.chat.completions.create(model="smollm2", max_tokens=4, messages=_ask("Hi"), **extra)
        else:
            client.completions.create(model="smollm2", max_tokens=4, prompt="Hi", **extra)
    assert (info.value.body["code"], info.value.body["param"]) == ("unsupported_field", next(iter(extra)))
    # Their "off" values still work, as SDKs and clients send them.
    if create == "chat":
        client.chat.completions.create(model="smollm2", max_tokens=2, messages=_ask("Hi"), logprobs=False,
                                       frequency_penalty=0, response_format={"type": "text"})
