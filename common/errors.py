"""Aegis error hierarchy, each error knowing its OpenAI envelope and HTTP status.

    AegisError                      500 internal_error (message never carries internals)
    ├── InvalidRequest              400 invalid_request_error
    │   ├── PayloadTooLarge         413 invalid_request_error / code payload_too_large
    │   ├── ContentBlocked          400 invalid_request_error / code = guardrail reason
    │   ├── InvalidArguments        422 invalid_request_error / code invalid_arguments
    │   │                               (tool or workflow arguments against their schema; `param`
    │   │                               names the field)
    │   └── ToolError               400 invalid_request_error / code = reason (the tool refused
    │                                   its input: bad expression, blocked address, ...)
    ├── ToolFailed                  502 tool_error (the tool raised something unexpected; the
    │   │                               message names the tool, never its internals)
    │   ├── ToolCrashed             502 tool_error / code tool_crashed (its actor died mid-call)
    │   └── ToolTimeout             504 tool_error / code tool_timeout (the call was cancelled)
    ├── WorkflowStepFailed          status of the step's own error / type workflow_error; the
    │                                   message and `param` (steps.<id>) name the failing step
    ├── WorkflowTimeout             504 workflow_error / code workflow_timeout
    ├── AuthenticationFailed        401 authentication_error
    ├── PermissionDenied            403 permission_error
    ├── ModelNotFound               404 not_found_error / code model_not_found
    ├── NotFound                    404 not_found_error
    ├── RateLimited                 429 rate_limit_error (carries Retry-After)
    ├── Overloaded                  503 overloaded_error (carries Retry-After)
    └── ConfigError                 raised at start-up only; never reaches a client

Plain Python: `security/` and `training/` import it without pulling in Ray.
"""

from __future__ import annotations

from typing import Any


class AegisError(Exception):
    """Base class: an error that can be shown to a client as an OpenAI error envelope."""

    status_code: int = 500
    error_type: str = "internal_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error body: {"error": {"message", "type", "param", "code"}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(AegisError):
    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    default_code = "payload_too_large"


class ContentBlocked(InvalidRequest):
    """A guardrail refused the content; `code` names the reason (e.g. prompt_injection)."""

    default_code = "content_blocked"


class InvalidArguments(InvalidRequest):
    """Arguments that do not match a tool's or workflow's schema; `param` names the field."""

    status_code = 422
    default_code = "invalid_arguments"


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


class WorkflowStepFailed(AegisError):
    """A workflow step failed; keeps the status and code of the step's own error."""

    error_type = "workflow_error"

    def __init__(self, step: str, cause: AegisError) -> None:
        super().__init__(f"workflow step '{step}' failed: {cause.message}", param=f"steps.{step}",
                         code=cause.code or "workflow_step_failed", headers=cause.headers)
        self.step = step
        self.status_code = cause.status_code


class WorkflowTimeout(AegisError):
    status_code = 504
    error_type = "workflow_error"
    default_code = "workflow_timeout"


class AuthenticationFailed(AegisError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(AegisError):
    status_code = 403
    error_type = "permission_error"
    default_code = "insufficient_scope"


class NotFound(AegisError):
    status_code = 404
    error_type = "not_found_error"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class _RetryableError(AegisError):
    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s
        # Retry-After is whole seconds (RFC 9110); never advertise 0 for a refusal.
        self.headers.setdefault("Retry-After", str(max(1, int(-(-retry_after_s // 1)))))


class RateLimited(_RetryableError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    # True when the local fail-open limiter refused it (the shared store was down).
    degraded: bool = False


class Overloaded(_RetryableError):
    status_code = 503
    error_type = "overloaded_error"
    default_code = "overloaded"


class ConfigError(ValueError):
    """Invalid configuration, raised at start-up with the offending field in the message."""


def find_aegis_error(exc: BaseException | None) -> AegisError | None:
    """The AegisError inside `exc`, unwrapping what Ray adds on the way between deployments.

    Ray re-raises a remote exception as a RayTaskError subclass of the original type whose
    `cause` holds the original object; the wrapper lacks the original's instance attributes,
    so the cause is what we answer with.
    """
    for _ in range(5):
        if exc is None:
            return None
        cause = getattr(exc, "cause", None)
        if isinstance(cause, AegisError):
            return cause
        if isinstance(exc, AegisError) and hasattr(exc, "message"):
            return exc
        exc = cause if isinstance(cause, BaseException) else exc.__cause__
    return None
