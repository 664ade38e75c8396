"""`search_documents`: cosine top-k over an embedded, persisted document collection."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from serve_app.agent_tools.document_store import (
    Document,
    DocumentStore,
    FileDocumentStore,
    RedisDocumentStore,
    check_collection_name,
)
from common.errors import ToolError

__all__ = ["DocumentSearch"]

Embed = Callable[[list[str]], "list[list[float]] | np.ndarray | Awaitable[Any]"]


class DocumentSearch:
    """Semantic search over a document collection: the documents closest in meaning to a query."""

    def __init__(self, embed: Embed, *, store: DocumentStore | None = None,
                 directory: str | os.PathLike[str] | None = None, redis_url: str | None = None,
                 redis_prefix: str = "aegis:docs", max_documents_per_add: int = 256,
                 max_text_chars: int = 20_000) -> None:
        """Args:
            embed: `embed(texts) -> vectors` (sync or async), e.g. the embedding deployment.
            store: a ready store; otherwise Redis when `redis_url` is given, else a directory.
            directory: where the file store keeps `<collection>.npz` (default ./.aegis/documents).
            redis_url: use Redis, keys under `redis_prefix`.
            max_documents_per_add: documents one `add_documents` call may carry.
            max_text_chars: longest document text accepted.
        """
        self._embed = embed
        if store is None:
            store = (RedisDocumentStore(redis_url, redis_prefix) if redis_url
                     else FileDocumentStore(directory or os.path.join(".aegis", "documents")))
        self.store = store
        self._max_add = max_documents_per_add
        self._max_chars = max_text_chars

    async def __call__(self, query: Annotated[str, Field(min_length=1, max_length=2000)],
                       top_k: Annotated[int, Field(ge=1, le=50)] = 5,
                       collection: str = "default") -> dict[str, Any]:
        """Find the documents most similar in meaning to the query.

        Args:
            query: what to look for, in natural language.
            top_k: how many documents to return.
            collection: the document collection to search.
        """
        data = await self.store.load(check_collection_name(collection))
        if not data.documents:
            return {"collection": collection, "results": []}
        query_vector = (await self._vectors([query]))[0]
        if query_vector.shape[0] != data.vectors.shape[1]:
            raise ToolError(f"query embedding has dimension {query_vector.shape[0]}, the "
                            f"collection {data.vectors.shape[1]}", code="dimension_mismatch")
        scores = data.vectors @ query_vector
        k = min(top_k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return {"collection": collection,
                "results": [{"id": data.documents[i].id, "score": float(scores[i]),
                             "text": data.documents[i].text,
                             "metadata": data.documents[i].metadata} for i in top]}

    async def add_documents(self, documents: Sequence[Mapping[str, Any] | Document],
                            collection: str = "default") -> dict[str, Any]:
        """Embed and store documents (an existing id is replaced); the collection's new size.

        Raises:
            ToolError: too many documents, a missing or duplicate id, an empty or too long text,
                or metadata that is not a JSON object.
        """
        check_collection_name(collection)
        docs = [self._document(d, i) for i, d in enumerate(documents)]
        if not docs:
            raise ToolError("documents must not be empty", param="documents", code="invalid_documents")
        if len(docs) > self._max_add:
            raise ToolError(f"{len(docs)} documents in one call; the limit is {self._max_add}",
                            param="documents", code="invalid_documents")
        if len({d.id for d in docs}) != len(docs):
            raise ToolError("document ids must be unique within a call", param="documents",
                            code="invalid_documents")
        vectors = await self._vectors([d.text for d in docs])
        count = await self.store.upsert(collection, docs, vectors)
        return {"collection": collection, "added": len(docs), "count": count}

    async def delete_documents(self, ids: Sequence[str], collection: str = "default") -> dict[str, Any]:
        """Remove documents by id; how many were there."""
        removed = await self.store.delete(check_collection_name(collection), list(ids))
        return {"collection": collection, "deleted": removed}

    async def count(self, collection: str = "default") -> int:
        return len((await self.store.load(check_collection_name(collection))).documents)

    async def close(self) -> None:
        await self.store.close()

    async def _vectors(self, texts: list[str]) -> np.ndarray:
        result = self._embed(texts)
        if inspect.isawaitable(result):
            result = await result
        vectors = np.asarray(result, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ToolError(f"the embedder returned shape {vectors.shape} for {len(texts)} texts",
                            code="embedding_failed")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # Unit rows make the dot product the cosine; a zero vector stays zero (score 0).
        return vectors / np.maximum(norms, 1e-12)

    def _document(self, raw: Mapping[str, Any] | Document, index: int) -> Document:
        doc = raw if isinstance(raw, Document) else None
        if doc is None:
            if not isinstance(raw, Mapping):
                raise ToolError(f"documents.{index} must be an object", param=f"documents.{index}",
                                code="invalid_documents")
            unknown = set(raw) - {"id", "text", "metadata"}
            if unknown:
                raise ToolError(f"documents.{index}: unknown fields {sorted(unknown)}",
                                param=f"documents.{index}", code="invalid_documents")
            doc = Document(raw.get("id"), raw.get("text"), raw.get("metadata") or {})
        if not isinstance(doc.id, str) or not 1 <= len(doc.id) <= 256:
            raise ToolError(f"documents.{index}.id must be a string of 1 to 256 characters",
                            param=f"documents.{index}.id", code="invalid_documents")
        if not isinstance(doc.text, str) or not doc.text.strip() or len(doc.text) > self._max_chars:
            raise ToolError(f"documents.{index}.text must be non-empty and at most "
                            f"{self._max_chars} characters", param=f"documents.{index}.text",
                            code="invalid_documents")
        try:
            if not isinstance(doc.metadata, dict):
                raise TypeError
            json.dumps(doc.metadata)
        except (TypeError, ValueError):
            raise ToolError(f"documents.{index}.metadata must be a JSON object",
                            param=f"documents.{index}.metadata", code="invalid_documents") from None
        return doc
