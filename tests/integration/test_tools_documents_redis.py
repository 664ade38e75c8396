"""search_documents persisted in the real Redis on 127.0.0.1:6379 (db 15, a unique prefix per test)."""

from __future__ import annotations


import pytest

from serve_app.agent_tools.search_documents import DocumentSearch

REDIS_URL = "redis://127.0.0.1:6379/15"


def _embed(texts):
    # A deterministic embedder (letter counts) keeps this test about the store, not the model.
    return [[float(text.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz"] for text in texts]


async def test_redis_store_survives_a_restart_and_sees_other_writers(prefix):
    first = DocumentSearch(_embed, redis_url=REDIS_URL, redis_prefix=prefix)
    await first.add_documents([{"id": "z", "text": "zzz buzz", "metadata": {"n": 1}},
                               {"id": "a", "text": "aaa banana"}], collection="c1")
    second = DocumentSearch(_embed, redis_url=REDIS_URL, redis_prefix=prefix)
    try:
        found = await second("zzzz", top_k=1, collection="c1")
        assert found["results"][0]["id"] == "z"
        assert found["results"][0]["metadata"] == {"n": 1}
        await first.add_documents([{"id": "m", "text": "mmm hmm"}], collection="c1")
        assert await second.count("c1") == 3  # the version counter invalidated its cached copy
        assert (await second.delete_documents(["a"], collection="c1"))["deleted"] == 1
        assert await first.count("c1") == 2
    finally:
        await first.close()
        await second.close()
