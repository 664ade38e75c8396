"""Text no later stage can carry (a lone UTF-16 surrogate, NUL) is refused at the edge with a 400
naming the field, on every route, instead of a 500 from the scanner, the tokenizer or the store.

The bodies are raw JSON with `\\ud800` escapes, as a client sends them: a Python client could not
even encode such a string as UTF-8.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e

LONE = "\\ud800"  # JSON escape text, decoded by the server into a lone surrogate
NUL = "\\u0000"


@pytest.fixture(scope="module")
def client(default_app, make_key):
    key = make_key("admin", "hygiene")
    with httpx.Client(base_url=default_app, timeout=120,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as c:
        yield c


def _refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_text", param)


@pytest.mark.parametrize("stream", ["false", "true"])
def test_chat_with_a_lone_surrogate_is_a_400_streamed_or_not(client, stream):
    body = ('{"model": "smollm2", "max_tokens": 4, "stream": %s, "messages": '
            '[{"role": "user", "content": "hi %s there"}]}' % (stream, LONE))
    _refused(client.post("/v1/chat/completions", content=body), "messages.0.content")


def test_completions_and_embeddings_refuse_it_too(client):
    _refused(client.post("/v1/completions", content='{"model": "smollm2", "prompt": ["ok", "a%s"]}' % NUL),
             "prompt.1")
    _refused(client.post("/v1/embeddings", content='{"model": "minilm", "input": "%s"}' % LONE), "input")


def test_tool_arguments_and_workflow_inputs_refuse_it(client):
    _refused(client.post("/v1/tools/calculator/invoke",
                         content='{"arguments": {"expression": "1 + %s"}}' % LONE), "arguments.expression")
    _refused(client.post("/v1/workflows/rag_answer/run",
                         content='{"inputs": {"question": "q%s", "collection": "kb"}}' % LONE), "inputs.question")


def test_a_document_id_with_a_surrogate_never_reaches_the_collection(client):
    route = "/v1/tools/search_documents/collections/hygiene/documents"
    _refused(client.post(route, content='{"documents": [{"id": "bad%s", "text": "Paris is in France."}]}' % LONE),
             "documents.0.id")
    stored = client.post(route, json={"documents": [{"id": "good", "text": "Paris is in France."}]})
    assert stored.status_code == 200, stored.text[:300]
    search = client.post("/v1/tools/search_documents/invoke",
                         json={"arguments": {"query": "capital of France", "collection": "hygiene"}})
    assert search.status_code == 200, search.text[:300]
    assert [r["id"] for r in search.json()["result"]["results"]] == ["good"]
