"""Tool errors, each an AegisError so the ingress answers it with the OpenAI envelope.

    AegisError (serve_app.errors)
    ├── InvalidRequest              400
    │   └── ToolError               400 invalid_request_error / code = reason (the tool refused
    │                                   its input: bad expression, blocked address, ...)
    ├── ToolFailed                  502 tool_error (the tool raised something unexpected; the
    │   │                               message names the tool, never its internals)
    │   ├── ToolCrashed             502 tool_error / code tool_crashed (its actor died mid-call)
    │   └── ToolTimeout             504 tool_error / code tool_timeout (the call was cancelled)
    └── Overloaded                  503 (every actor of the pool busy and the queue full)

Argument validation errors are plain InvalidRequest with `param` set to the field.
"""

from __future__ import annotations

from serve_app.errors import AegisError, InvalidRequest

__all__ = ["ToolCrashed", "ToolError", "ToolFailed", "ToolTimeout"]


class ToolError(InvalidRequest):
    """The tool refused its input; `code` names the reason (e.g. blocked_address)."""

    default_code = "tool_error"


class ToolFailed(AegisError):
    status_code = 502
    error_type = "tool_error"
    default_code = "tool_failed"


class ToolCrashed(ToolFailed):
    default_code = "tool_crashed"


class ToolTimeout(ToolFailed):
    status_code = 504
    default_code = "tool_timeout"
