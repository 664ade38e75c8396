"""search_documents with the real all-MiniLM-L6-v2: relevant documents first, persisted to a file."""

from __future__ import annotations

import pytest

from serve_app.agent_tools.search_documents import DocumentSearch
from common.errors import ToolError

DOCS = [
    {"id": "ray", "text": "Ray is a framework for scaling Python applications across a cluster.",
     "metadata": {"topic": "computing"}},
    {"id": "bread", "text": "Knead the dough for ten minutes, then let it rise before baking.",
     "metadata": {"topic": "cooking"}},
    {"id": "tide", "text": "Ocean tides are caused by the gravitational pull of the moon.",
     "metadata": {"topic": "science"}},
]


@pytest.fixture
def embed(minilm):
    return lambda texts: minilm.embed(texts).vectors


async def test_ranks_by_meaning_and_survives_a_restart(embed, tmp_path):
    tool = DocumentSearch(embed, directory=tmp_path)
    added = await tool.add_documents(DOCS, collection="kb")
    assert added == {"collection": "kb", "added": 3, "count": 3}
    found = await tool("how do I bake bread at home?", top_k=2, collection="kb")
    assert [r["id"] for r in found["results"]][0] == "bread"
    assert found["results"][0]["metadata"] == {"topic": "cooking"}
    assert found["results"][0]["score"] > found["results"][1]["score"]

    restarted = DocumentSearch(embed, directory=tmp_path)  # a new process would do exactly this
    again = await restarted("what makes the sea rise and fall?", top_k=1, collection="kb")
    assert again["results"][0]["id"] == "tide"
    assert await restarted.count("kb") == 3
    assert await restarted.count("other") == 0


async def test_upsert_replaces_by_id_and_delete_removes(embed, tmp_path):
    tool = DocumentSearch(embed, directory=tmp_path)
    await tool.add_documents(DOCS)
    await tool.add_documents([{"id": "ray", "text": "A recipe for sourdough with a long rise."}])
    assert await tool.count() == 3
    top = await tool("sourdough recipe", top_k=3)
    assert top["results"][0]["id"] == "ray"  # the replaced text is what is searched
    assert (await tool.delete_documents(["ray", "missing"]))["deleted"] == 1
    assert {r["id"] for r in (await tool("anything", top_k=5))["results"]} == {"bread", "tide"}


async def test_second_instance_sees_writes_of_the_first(embed, tmp_path):
    # Two actors of one pool share the directory: a reader must not serve a stale copy.
    reader, writer = DocumentSearch(embed, directory=tmp_path), DocumentSearch(embed, directory=tmp_path)
    await writer.add_documents(DOCS[:1])
    assert await reader.count() == 1
    await writer.add_documents(DOCS[1:])
    assert await reader.count() == 3


async def test_empty_collection_returns_nothing(embed, tmp_path):
    assert (await DocumentSearch(embed, directory=tmp_path)("anything"))["results"] == []


@pytest.mark.parametrize("documents, param", [
    ([], "documents"),
    ([{"id": "", "text": "x"}], "documents.0.id"),
    ([{"id": "a", "text": "   "}], "documents.0.text"),
    ([{"id": "a", "text": "x", "metadata": ["not", "an", "object"]}], "documents.0.metadata"),
    ([{"id": "a", "text": "x", "metadata": {"when": object()}}], "documents.0.metadata"),
    ([{"id": "a", "text": "x", "vector": [1.0]}], "documents.0"),
    ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "documents"),
])
async def test_bad_documents_are_refused_naming_the_field(tmp_path, documents, param):
    tool = DocumentSearch(lambda texts: [[1.0, 0.0]] * len(texts), directory=tmp_path)
    with pytest.raises(ToolError) as err:
        await tool.add_documents(documents)
    assert err.value.param == param


async def test_collection_names_cannot_escape_the_directory(tmp_path):
    tool = DocumentSearch(lambda texts: [[1.0, 0.0]] * len(texts), directory=tmp_path / "d")
    with pytest.raises(ToolError) as err:
        await tool("q", collection="../../etc/passwd")
    assert err.value.code == "invalid_collection"


async def test_async_embedder_and_dimension_mismatch(tmp_path):
    async def embed2(texts):
        return [[1.0, float(i)] for i, _ in enumerate(texts)]

    tool = DocumentSearch(embed2, directory=tmp_path)
    await tool.add_documents([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    assert (await tool("q", top_k=1))["results"][0]["id"] == "a"  # [1,0] is the query's vector
    other = DocumentSearch(lambda texts: [[1.0, 0.0, 0.0]] * len(texts), directory=tmp_path)
    with pytest.raises(ToolError) as err:
        await other.add_documents([{"id": "c", "text": "z"}])
    assert err.value.code == "dimension_mismatch"
