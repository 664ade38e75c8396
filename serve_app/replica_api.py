"""The typed contract between the ingress (and the Router) and a model replica.

One request type per call and one event type per stream item, built once from the OpenAI
protocol models. Sampling defaults live here and nowhere else: the protocol models, the
replica and the decoder all read them from this module.

    GenerateRequest  → GenerativeModel.stream → StreamStart, then StreamDelta...
    EmbedRequest     → EmbeddingModel.embed   → EmbedResult

They are plain dataclasses: Ray pickles them across the handle call, and no replica needs to
know the HTTP layer that built them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from common.errors import InvalidRequest

if TYPE_CHECKING:  # only for annotations: the protocol models import this module's defaults
    from serve_app.function_calling import ToolPlan
    from serve_app.protocol import ChatCompletionRequest, CompletionRequest

__all__ = [
    "DEFAULT_TEMPERATURE", "DEFAULT_TOP_P", "EmbedRequest", "EmbedResult", "GenerateRequest",
    "Sampling", "StreamDelta", "StreamEvent", "StreamStart",
]

# OpenAI's defaults: sample at temperature 1 over the whole distribution.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


@dataclass(frozen=True)
class Sampling:
    """A request's sampling fields as the client gave them; `max_tokens=None` is the model's default."""

    max_tokens: int | None = None
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerateRequest:
    """One chat (`messages`) or completion (`prompts`, one choice set per prompt) request.

    Attributes:
        kind: "chat" renders `messages` with the model's chat template; "completion" encodes
            each prompt as it is.
        n: choices per prompt.
        messages: chat messages as `function_calling.template_messages` makes them.
        tools / tool_choice: what the chat template shows the model (`ToolPlan.payload`).
    """

    kind: Literal["chat", "completion"]
    sampling: Sampling = field(default_factory=Sampling)
    n: int = 1
    messages: tuple[dict[str, Any], ...] = ()
    prompts: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: Any = "auto"

    @property
    def prompt_param(self) -> str:
        """The request field a prompt error names."""
        return "messages" if self.kind == "chat" else "prompt"

    @classmethod
    def chat(cls, body: ChatCompletionRequest, tools: ToolPlan | None = None, *,
             n: int | None = None) -> GenerateRequest:
        """The replica request for a chat body (after the ingress checks, which may redact it)."""
        from serve_app.function_calling import template_messages

        _refuse_unsupported(body)
        sampling = body.sampling_request()
        request = cls(kind="chat", sampling=sampling, n=body.n if n is None else n,
                      messages=tuple(template_messages(body.messages)))
        if tools is None:
            return request
        payload = tools.payload()
        return replace(request, tools=tuple(payload["tools"]), tool_choice=payload["tool_choice"],
                       sampling=replace(sampling, stop=sampling.stop + tools.stop()))

    @classmethod
    def completion(cls, body: CompletionRequest) -> GenerateRequest:
        _refuse_unsupported(body)
        return cls(kind="completion", sampling=body.sampling_request(), n=body.n,
                   prompts=tuple(body.prompts()))

    @property
    def choices(self) -> int:
        """Choices in the answer: `n` for chat, `n` per prompt for completions."""
        return self.n if self.kind == "chat" else self.n * len(self.prompts)


def _refuse_unsupported(body: ChatCompletionRequest | CompletionRequest) -> None:
    """An OpenAI field this contract cannot carry, set to a value that would change the answer.

    Raises:
        InvalidRequest: 400 `unsupported_field`, `param` naming the first such field.
    """
    fields = body.unsupported_fields()
    if fields:
        raise InvalidRequest(f"{fields[0]} is not supported by this server; leave it unset",
                             param=fields[0], code="unsupported_field")


@dataclass(frozen=True)
class StreamStart:
    """First event of a generation stream, sent once the prompt is accepted.

    `prefill`: the start of a forced tool call written into the assistant turn; the generated
    text continues it, so it goes in front of every choice.
    """

    prompt_tokens: int
    prefill: str = ""


@dataclass(frozen=True)
class StreamDelta:
    """New text of choice `index`; `finish_reason` and `completion_tokens` are set on its last."""

    index: int
    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


StreamEvent = StreamStart | StreamDelta


@dataclass(frozen=True)
class EmbedRequest:
    texts: tuple[str, ...]


@dataclass(frozen=True)
class EmbedResult:
    vectors: list[list[float]]
    prompt_tokens: int
