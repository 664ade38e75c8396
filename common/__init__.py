"""What every Aegis package may import: the error tree. Depends on no other Aegis package."""

from common.errors import (
    AegisError, AuthenticationFailed, ConfigError, ContentBlocked, InvalidArguments, InvalidRequest,
    ModelNotFound, NotFound, Overloaded, PayloadTooLarge, PermissionDenied, RateLimited, ToolCrashed,
    ToolError, ToolFailed, ToolTimeout, WorkflowStepFailed, WorkflowTimeout, find_aegis_error)

__all__ = [
    "AegisError", "AuthenticationFailed", "ConfigError", "ContentBlocked", "InvalidArguments",
    "InvalidRequest", "ModelNotFound", "NotFound", "Overloaded", "PayloadTooLarge",
    "PermissionDenied", "RateLimited", "ToolCrashed", "ToolError", "ToolFailed", "ToolTimeout",
    "WorkflowStepFailed", "WorkflowTimeout", "find_aegis_error",
]
