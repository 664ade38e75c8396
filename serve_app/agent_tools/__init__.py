"""Agent tools: specs derived from type hints and the built-in tools (no Ray; see `pool` for actors)."""

from serve_app.agent_tools.calculator import Calculator, calculator
from serve_app.agent_tools.call_model import CallModel
from common.errors import ToolCrashed, ToolError, ToolFailed, ToolTimeout
from serve_app.agent_tools.http_fetch import HttpFetch, HttpFetchSettings
from serve_app.agent_tools.search_documents import DocumentSearch
from serve_app.agent_tools.spec import ToolSpec, load_tool, tool_spec

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
