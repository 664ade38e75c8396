"""OpenAI-compatible request and response models (the subset Aegis serves), pydantic v2."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
    model_validator)

from serve_app.replica_api import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, Sampling


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _non_empty_list(value: str | list[str], field: str) -> str | list[str]:
    if isinstance(value, list) and not value:
        raise ValueError(f"{field} list must not be empty")
    return value


class _Request(BaseModel):
    # OpenAI clients send fields Aegis does not act on (user, logit_bias, ...): accept them
    # rather than break SDKs, but never pass unknown fields anywhere.
    model_config = ConfigDict(extra="ignore")


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(_Request):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    top_p: float = Field(DEFAULT_TOP_P, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # OpenAI fields the replica contract (`replica_api`) cannot carry yet. Typed loosely so any
    # value parses; set to anything that would change the answer, they are refused with a 400
    # naming them (`unsupported_fields`) instead of being dropped in silence.
    logprobs: Any = None
    top_logprobs: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def unsupported_fields(self) -> list[str]:
        """Fields set to a value this server would otherwise ignore, in declaration order."""
        return [name for name, no_op in self._NO_OP.items()
                if getattr(self, name, None) not in no_op]

    # Per field, the values that change nothing (what a client sends when it means "off").
    _NO_OP: ClassVar[dict[str, tuple[Any, ...]]] = {
        "logprobs": (None, False), "top_logprobs": (None, 0), "frequency_penalty": (None, 0),
        "presence_penalty": (None, 0), "logit_bias": (None, {})}

    def sampling_request(self) -> Sampling:
        """The sampling fields as the replica takes them (`replica_api.Sampling`)."""
        return Sampling(max_tokens=self._max_tokens(), temperature=self.temperature,
                        top_p=self.top_p, seed=self.seed, stop=tuple(self.stop or ()))

    def _max_tokens(self) -> int | None:
        return self.max_tokens


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


_MAX_TOOLS = 128
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionDefinition(_Request):
    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class _FunctionName(_Request):
    name: str = Field(pattern=_FUNCTION_NAME)


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: _FunctionName


class FunctionCall(_Request):
    name: str = Field(min_length=1, max_length=64)
    arguments: str  # JSON text, as OpenAI sends it; not necessarily valid JSON


class ToolCall(_Request):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns only
    tool_call_id: str | None = Field(None, max_length=256)  # tool turns only

    @model_validator(mode="after")
    def _tool_fields_match_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls is only allowed on assistant messages")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("tool messages need the tool_call_id they answer")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    # Function calling (serve_app.function_calling). `tools` is declared before `tool_choice` so that
    # the latter's validator sees it; without tools, tool_choice is refused as OpenAI does.
    tools: list[ToolDefinition] | None = Field(None, min_length=1, max_length=_MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: Any = None
    functions: Any = None  # the deprecated form of `tools`
    function_call: Any = None

    _NO_OP: ClassVar[dict[str, tuple[Any, ...]]] = {
        **_SamplingFields._NO_OP, "response_format": (None, {"type": "text"}), "functions": (None,),
        "function_call": (None,)}

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, tools: list[ToolDefinition] | None) -> list[ToolDefinition] | None:
        names = [tool.function.name for tool in tools or ()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"function names must be unique, got {', '.join(duplicates)} twice")
        return tools

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice_shape(cls, choice: Any) -> Any:
        # Checked here so that any error names `tool_choice` itself, not a branch of the union.
        if choice is None or isinstance(choice, NamedToolChoice) or choice in _TOOL_CHOICE_MODES:
            return choice
        if isinstance(choice, dict):
            try:
                return NamedToolChoice.model_validate(choice)
            except ValidationError:
                pass
        raise ValueError('tool_choice must be "none", "auto", "required" or '
                         '{"type": "function", "function": {"name": ...}}')

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(cls, choice: Any, info: ValidationInfo) -> Any:
        if choice is None:
            return None
        if "tools" not in info.data:  # tools itself was invalid; that error is reported
            return choice
        tools = info.data["tools"]
        if not tools:
            raise ValueError("tool_choice is only allowed when tools are given")
        if isinstance(choice, NamedToolChoice):
            name = choice.function.name
            if name not in {tool.function.name for tool in tools}:
                raise ValueError(f"tool_choice names function {name!r}, which is not in tools")
        return choice

    def _max_tokens(self) -> int | None:
        # OpenAI's newer name wins when both are given.
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(...)
    echo: bool = False
    best_of: Any = None
    suffix: Any = None

    _NO_OP: ClassVar[dict[str, tuple[Any, ...]]] = {
        **_SamplingFields._NO_OP, "best_of": (None, 1), "suffix": (None, "")}

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        return _non_empty_list(value, "prompt")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        return _non_empty_list(value, "input")

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "aegis"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
