"""The built-in tools as the tool runner builds them: bound to the app's Router where they need a model.

`search_documents` (and `index_document`, which writes what it searches) embeds through the Router (the embedding deployment) and `call_model` asks a
generative model through it. Tool classes that set `needs_router = True` get the Router's
`DeploymentHandle` as their `router` constructor argument from the ToolRunner; the handle is
picklable, so it reaches the tool's actors with the rest of the spec.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import Field

from serve_app.agent_tools.calculator import Calculator
from serve_app.agent_tools.call_model import CallModel
from serve_app.agent_tools.http_fetch import HttpFetch
from serve_app.agent_tools.search_documents import DocumentSearch

__all__ = ["BUILTIN_TOOLS", "Calculator", "CallModelTool", "HttpFetchTool", "IndexDocumentTool",
           "SearchDocumentsTool", "split_passages"]


class HttpFetchTool(HttpFetch):
    """Fetch a web page with GET from an allowlisted host; the text, truncated at the size cap."""

    untrusted_output = ("text",)


class SearchDocumentsTool(DocumentSearch):
    """Semantic search over a document collection: the documents closest in meaning to a query."""

    needs_router = True
    # Arguments whose values the ingress places in the caller's tenant namespace.
    tenant_scoped_arguments = ("collection",)
    # Free-text fields of the output: scanned for indirect prompt injection at the ingress.
    untrusted_output = ("results.*.text",)
    # Methods the document endpoints may run on the tool's actors (`ToolPool.call_method`).
    admin_methods = ("add_documents", "delete_documents", "count")

    def __init__(self, router: Any, *, embedding_model: str = "all-minilm-l6-v2",
                 directory: str | None = None, redis_prefix: str = "aegis:docs",
                 max_documents_per_add: int = 256, max_text_chars: int = 20_000) -> None:
        """Args:
            router: the app's Router handle (injected by the ToolRunner).
            embedding_model: the served embedding model (name or alias) documents are embedded with.
            directory: where collections are stored without Redis (default ./.aegis/documents).
            redis_prefix: key prefix when REDIS_URL is set (collections then live in Redis).
        """
        super().__init__(lambda texts: router.embed.remote(embedding_model, list(texts)),
                         directory=directory, redis_url=os.environ.get("REDIS_URL") or None,
                         redis_prefix=redis_prefix, max_documents_per_add=max_documents_per_add,
                         max_text_chars=max_text_chars)


class IndexDocumentTool(SearchDocumentsTool):
    """Add a text to a document collection, split into passages, so search_documents can find it."""

    # Returns counts and names only: nothing free-text to scan.
    untrusted_output: tuple[str, ...] = ()
    admin_methods: tuple[str, ...] = ()

    async def __call__(self, document_id: Annotated[str, Field(min_length=1, max_length=240)],
                       text: Annotated[str, Field(min_length=1, max_length=500_000)],
                       collection: str = "default",
                       passage_chars: Annotated[int, Field(ge=200, le=4000)] = 800) -> dict[str, Any]:
        """Split the text into passages and index them; indexing the same document again replaces it.

        Args:
            document_id: a name for the text (e.g. its URL); passages get ids `<document_id>#<n>`.
            text: the text to index.
            collection: the document collection to add it to.
            passage_chars: the longest passage, in characters (embeddings see ~256 tokens).
        """
        passages = split_passages(text, passage_chars)
        documents = [{"id": f"{document_id}#{n}", "text": passage,
                      "metadata": {"document_id": document_id, "passage": n}}
                     for n, passage in enumerate(passages)]
        count = 0
        for start in range(0, len(documents), self._max_add):
            count = (await self.add_documents(documents[start:start + self._max_add], collection))["count"]
        # A shorter new version leaves passages of the old one behind: remove them.
        current = {d["id"] for d in documents}
        stale = [d.id for d in (await self.store.load(collection)).documents
                 if d.metadata.get("document_id") == document_id and d.id not in current]
        if stale:
            await self.delete_documents(stale, collection)
            count -= len(stale)
        return {"collection": collection, "document_id": document_id, "passages": len(documents),
                "count": count}


def split_passages(text: str, max_chars: int) -> list[str]:
    """`text` as passages of at most `max_chars`: sentences packed within a paragraph, never across
    paragraphs (a passage keeps to one topic), over-long sentences cut at the last space that fits."""
    passages: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        current = ""
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
            while len(sentence) > max_chars:
                cut = sentence.rfind(" ", 0, max_chars + 1)
                cut = cut if cut > 0 else max_chars
                if current:
                    passages.append(current)
                    current = ""
                passages.append(sentence[:cut])
                sentence = sentence[cut:].lstrip()
            if not sentence:
                continue
            if current and len(current) + 1 + len(sentence) > max_chars:
                passages.append(current)
                current = ""
            current = f"{current} {sentence}" if current else sentence
        if current:
            passages.append(current)
    return passages

class CallModelTool(CallModel):
    """Ask a language model: a prompt (and an optional system message) in, its answer out."""

    needs_router = True
    untrusted_output = ("content",)
    # Caller text placed in front of the model: the ingress scans it like a chat message.
    model_input_arguments = ("prompt", "system")

    def __init__(self, router: Any, *, model: str = "smollm2-135m-instruct",
                 max_tokens_limit: int = 512) -> None:
        """Args:
            router: the app's Router handle (injected by the ToolRunner).
            model: the served generative model every call goes to.
            max_tokens_limit: the largest `max_tokens` a call may ask for.
        """
        super().__init__(lambda body: router.chat.remote(body), model=model,
                         max_tokens_limit=max_tokens_limit)


# Short names usable as a tool's `path` in the Serve config.
BUILTIN_TOOLS = {
    "calculator": "serve_app.agent_tools.calculator:Calculator",
    "http_fetch": "serve_app.agent_tools.builtins:HttpFetchTool",
    "search_documents": "serve_app.agent_tools.builtins:SearchDocumentsTool",
    "index_document": "serve_app.agent_tools.builtins:IndexDocumentTool",
    "call_model": "serve_app.agent_tools.builtins:CallModelTool",
}
