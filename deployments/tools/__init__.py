"""Agent tools: specs derived from type hints and the built-in tools (no Ray; see `pool` for actors)."""

from deployments.tools.calculator import Calculator, calculator
from deployments.tools.call_model import CallModel
from serve_app.errors import ToolCrashed, ToolError, ToolFailed, ToolTimeout
from deployments.tools.http_fetch import HttpFetch, HttpFetchSettings
from deployments.tools.search_documents import DocumentSearch
from deployments.tools.spec import ToolSpec, load_tool, tool_spec

__all__ = [
    "Calculator",
    "CallModel",
    "DocumentSearch",
    "HttpFetch",
    "HttpFetchSettings",
    "ToolCrashed",
    "ToolError",
    "ToolFailed",
    "ToolSpec",
    "ToolTimeout",
    "calculator",
    "load_tool",
    "tool_spec",
]
