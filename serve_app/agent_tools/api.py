"""Request models and plain helpers of the tool, document and workflow routes (no FastAPI, no Ray)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.errors import InvalidRequest

__all__ = [
    "DocumentsAddRequest",
    "ToolInvokeRequest",
    "WorkflowRunRequest",
    "arguments_digest",
    "scope_arguments",
    "tenant_namespace",
    "unscope_result",
]

_NAMESPACED_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Body(BaseModel):
    # Unlike the OpenAI routes, these are Aegis's own: a misspelt field is an error.
    model_config = ConfigDict(extra="forbid")


class ToolInvokeRequest(_Body):
    arguments: dict[str, Any] = Field(default_factory=dict)


class DocumentsAddRequest(_Body):
    documents: list[dict[str, Any]] = Field(min_length=1, max_length=256)


class WorkflowRunRequest(_Body):
    inputs: dict[str, Any] = Field(default_factory=dict)


def tenant_namespace(tenant: str | None, value: Any, param: str) -> str:
    """The stored name of a tenant's `value` (e.g. a document collection), unique per tenant.

    Tenants share one store; a prefix derived from the tenant keeps one tenant's collections
    invisible to another whatever names they pick.

    Raises:
        InvalidRequest: `value` is not a short name of letters, digits, `_` and `-`.
    """
    if not isinstance(value, str) or not _NAMESPACED_RE.match(value):
        raise InvalidRequest(f"{param} must match {_NAMESPACED_RE.pattern}, got {value!r}",
                             param=param, code="invalid_value")
    digest = hashlib.sha256((tenant or "").encode()).hexdigest()[:10]
    return f"t{digest}-{value}"


def scope_arguments(arguments: dict[str, Any], scoped: list[str], tenant: str | None,
                    defaults: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with every tenant-scoped argument (its default too) moved into the tenant namespace."""
    scoped_args = dict(arguments)
    for name in scoped:
        value = scoped_args.get(name, defaults.get(name))
        if value is not None:
            scoped_args[name] = tenant_namespace(tenant, value, f"arguments.{name}")
    return scoped_args


def unscope_result(result: Any, scoped: list[str], arguments: dict[str, Any],
                   defaults: dict[str, Any]) -> Any:
    """Give back the caller's own names where a result echoes a tenant-scoped argument."""
    if not isinstance(result, dict):
        return result
    restored = dict(result)
    for name in scoped:
        if name in restored:
            restored[name] = arguments.get(name, defaults.get(name))
    return restored


def arguments_digest(arguments: Any) -> str:
    """sha256 of the canonical JSON of `arguments`: the audit log proves what ran without storing it."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
