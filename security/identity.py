"""Who is calling: the result of authentication, input to RBAC, rate limits and audit."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    Attributes:
        subject: stable id for limits and audit: `key:<key_id>`, `oidc:<sub>` or `dev`.
        role: RBAC role (admin, user, trainer, readonly, or a configured one).
        tenant: tenant the caller acts for; limits and model allow-lists are per tenant.
        method: how it authenticated: `api_key`, `oidc` or `dev` (auth disabled).
        key_id: API key id (never the key), when method is api_key.
        claims: extra non-secret attributes (e.g. the key's name).
    """

    subject: str
    role: str
    tenant: str
    method: str
    key_id: str | None = None
    claims: dict[str, str] = field(default_factory=dict)
