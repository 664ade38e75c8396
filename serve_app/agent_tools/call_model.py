"""`call_model`: one chat completion on a configured model, so workflows can chain models."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import Field

from common.errors import InvalidArguments, ToolError

__all__ = ["CallModel"]

# `complete(request)`: an OpenAI chat-completion request body in, a response body out.
Complete = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class CallModel:
    """Ask a language model: a prompt (and an optional system message) in, its answer out."""

    def __init__(self, complete: Complete, *, model: str, max_tokens_limit: int = 512) -> None:
        """Args:
            complete: performs the completion; the serving wiring passes the Router's handle.
            model: the model every call goes to (callers cannot pick another one).
            max_tokens_limit: the largest `max_tokens` a call may ask for.
        """
        if not model:
            raise ValueError("model must be a non-empty string")
        if max_tokens_limit < 1:
            raise ValueError(f"max_tokens_limit must be an integer >= 1, got {max_tokens_limit}")
        self._complete = complete
        self._model = model
        self._max_tokens_limit = max_tokens_limit

    async def __call__(self, prompt: Annotated[str, Field(min_length=1, max_length=32_000)],
                       system: Annotated[str | None, Field(max_length=8_000)] = None,
                       max_tokens: Annotated[int, Field(ge=1, le=4096)] = 256,
                       temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0) -> dict[str, Any]:
        """Send the prompt to the configured model and return its reply.

        Args:
            prompt: the user message.
            system: an optional system message placed before it.
            max_tokens: the most tokens the reply may have.
            temperature: 0 for deterministic answers, higher for more varied ones.
        """
        if max_tokens > self._max_tokens_limit:
            raise InvalidArguments(f"max_tokens must be <= {self._max_tokens_limit}, got {max_tokens}",
                                   param="arguments.max_tokens")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        request = {"model": self._model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": temperature, "stream": False}
        response = await self._complete(request)
        try:
            choice = response["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ToolError(f"model '{self._model}' returned no chat choice",
                            code="model_error") from None
        if not isinstance(content, str):
            raise ToolError(f"model '{self._model}' returned non-text content", code="model_error")
        return {"model": response.get("model", self._model), "content": content,
                "finish_reason": choice.get("finish_reason"), "usage": response.get("usage")}
