"""The built-in tools as the tool runner builds them: bound to the app's Router where they need a model.

`search_documents` embeds through the Router (the embedding deployment) and `call_model` asks a
generative model through it. Tool classes that set `needs_router = True` get the Router's
`DeploymentHandle` as their `router` constructor argument from the ToolRunner; the handle is
picklable, so it reaches the tool's actors with the rest of the spec.
"""

from __future__ import annotations

import os
from typing import Any

from deployments.tools.calculator import Calculator
from deployments.tools.call_model import CallModel
from deployments.tools.http_fetch import HttpFetch
from deployments.tools.search_documents import DocumentSearch

__all__ = ["BUILTIN_TOOLS", "Calculator", "CallModelTool", "HttpFetchTool", "SearchDocumentsTool"]


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


class CallModelTool(CallModel):
    """Ask a language model: a prompt (and an optional system message) in, its answer out."""

    needs_router = True
    untrusted_output = ("content",)

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
    "calculator": "deployments.tools.calculator:Calculator",
    "http_fetch": "deployments.tools.builtins:HttpFetchTool",
    "search_documents": "deployments.tools.builtins:SearchDocumentsTool",
    "call_model": "deployments.tools.builtins:CallModelTool",
}
