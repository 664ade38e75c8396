"""Hard input size limits, checked before any scanning or model work (413 when exceeded)."""

from __future__ import annotations

from security.settings import InputLimitSettings
from common.errors import PayloadTooLarge


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish token estimate (~4 chars per token) for when no tokenizer is at hand."""
    return (len(text) + 3) // 4


class InputLimits:
    """Checks body bytes, message count and prompt tokens against configured maxima.

    Args:
        settings: the maxima.
    """

    def __init__(self, settings: InputLimitSettings) -> None:
        self._s = settings

    def check_body(self, body_bytes: int) -> None:
        """Raises PayloadTooLarge when the raw body is over `max_body_bytes`."""
        if body_bytes > self._s.max_body_bytes:
            raise PayloadTooLarge(
                f"Request body is {body_bytes} bytes; the limit is {self._s.max_body_bytes} bytes."
            )

    def check_messages(self, message_count: int) -> None:
        """Raises PayloadTooLarge when there are more than `max_messages` messages."""
        if message_count > self._s.max_messages:
            raise PayloadTooLarge(
                f"Request has {message_count} messages; the limit is {self._s.max_messages}.", param="messages"
            )

    def check_prompt_tokens(self, prompt_tokens: int) -> None:
        """Raises PayloadTooLarge when the prompt is over `max_prompt_tokens` tokens."""
        if prompt_tokens > self._s.max_prompt_tokens:
            raise PayloadTooLarge(
                f"Prompt is {prompt_tokens} tokens; the limit is {self._s.max_prompt_tokens} tokens.", param="messages"
            )
