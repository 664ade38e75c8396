"""`index_document`: passages, re-indexing, and what `search_documents` then finds (no Ray)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from serve_app.agent_tools.builtins import IndexDocumentTool, SearchDocumentsTool, split_passages
from serve_app.agent_tools.spec import tool_spec


class _Remote:
    def __init__(self, function):
        self.remote = function


class FakeRouter:
    """The Router's `embed` as the tools call it: `router.embed.remote(model, texts)`, awaitable.

    Bag-of-words vectors: texts that share words are close, which is all retrieval needs here.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

        async def embed(model: str, texts: list[str]) -> list[list[float]]:
            self.calls.append((model, len(texts)))
            vectors = np.zeros((len(texts), 256), dtype=np.float32)
            for row, text in enumerate(texts):
                for word in text.lower().split():
                    word = word.strip(".,?!")
                    vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 256] += 1.0
            return vectors.tolist()

        self.embed = _Remote(embed)


def test_passages_respect_the_limit_and_keep_every_word():
    text = ("Ray Serve scales models. " * 30 + "\n\n" + "Flower federates learning! " * 30
            + "\n\n" + "x" * 2500)
    passages = split_passages(text, 400)
    assert all(0 < len(p) <= 400 for p in passages)
    assert "".join("".join(passages).split()) == "".join(text.split())  # nothing lost, nothing added
    assert not any("Ray" in p and "Flower" in p for p in passages)  # never across a paragraph
    assert sum("Ray" in p for p in passages) == 2  # 750 chars of sentences: two full passages
    assert split_passages("short.", 400) == ["short."]
    assert split_passages("  \n\n  ", 400) == []


async def test_indexed_passages_are_found_and_reindexing_replaces_them(tmp_path):
    router = FakeRouter()
    index = IndexDocumentTool(router, embedding_model="minilm", directory=str(tmp_path))
    search = SearchDocumentsTool(router, embedding_model="minilm", directory=str(tmp_path))
    page = ("Paris is the capital of France. " * 20 + "\n\n" + "Green tea comes from Camellia sinensis. " * 20)
    first = await index(document_id="https://example.org/page", text=page, collection="web",
                        passage_chars=300)
    assert first["passages"] > 2 and first["count"] == first["passages"]
    assert router.calls[0][0] == "minilm"

    found = await search(query="capital of France", top_k=1, collection="web")
    top = found["results"][0]
    assert top["id"].startswith("https://example.org/page#") and "Paris" in top["text"]
    assert top["metadata"]["document_id"] == "https://example.org/page"

    second = await index(document_id="https://example.org/page", text="Only tea now.", collection="web")
    assert second == {"collection": "web", "document_id": "https://example.org/page", "passages": 1, "count": 1}
    assert (await search(query="capital of France", collection="web"))["results"][0]["text"] == "Only tea now."


def test_the_tool_schema_is_what_a_model_or_client_sees():
    spec = tool_spec(IndexDocumentTool, name="index_document")
    params = spec.parameters
    assert params["required"] == ["document_id", "text"]
    assert params["properties"]["passage_chars"]["maximum"] == 4000
    with pytest.raises(Exception) as err:
        spec.validate({"document_id": "a", "text": "x", "passage_chars": 10})
    assert getattr(err.value, "param", None) == "arguments.passage_chars"
