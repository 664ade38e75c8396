"""Role-based access control in one policy: role → scopes, route → scope, tenant → models."""

from __future__ import annotations

import fnmatch

from security.identity import Identity
from security.settings import RBACSettings
from common.errors import PermissionDenied


class Policy:
    """The single permission check used by every route.

    Args:
        settings: role scopes, route scopes (exact paths or fnmatch patterns) and tenant model lists.
    """

    def __init__(self, settings: RBACSettings) -> None:
        self._role_scopes = {role: frozenset(scopes) for role, scopes in settings.role_scopes.items()}
        self._exact = {r: s for r, s in settings.route_scopes.items() if not any(c in r for c in "*?[")}
        self._patterns = [(r, s) for r, s in settings.route_scopes.items() if any(c in r for c in "*?[")]
        self._tenant_models = {t: frozenset(m) for t, m in settings.tenant_models.items()}
        self._canonical: dict[str, str] = {}

    def set_model_aliases(self, aliases: dict[str, str]) -> None:
        """Alias → model name, so a tenant allowed a model may use it by any of its aliases."""
        self._canonical = dict(aliases)

    def model_allowed(self, tenant: str, model: str) -> bool:
        """Whether the tenant's allow-list (if any) names the model or the model an alias stands for."""
        allowed = self._tenant_models.get(tenant)
        return allowed is None or model in allowed or self._canonical.get(model, model) in allowed

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self._role_scopes)

    def scope_for(self, route: str) -> str | None:
        """The scope a route needs; None for routes the policy does not know."""
        if route in self._exact:
            return self._exact[route]
        for pattern, scope in self._patterns:
            if fnmatch.fnmatchcase(route, pattern):
                return scope
        return None

    def has_scope(self, identity: Identity, scope: str) -> bool:
        scopes = self._role_scopes.get(identity.role, frozenset())
        return "*" in scopes or scope in scopes

    def may_use_tool(self, identity: Identity, tool: str) -> bool:
        """Whether the role has `tool:<name>` (or `tool:*`)."""
        return self.has_scope(identity, f"tool:{tool}") or self.has_scope(identity, "tool:*")

    def authorize_tool(self, identity: Identity, tool: str) -> None:
        """Raises PermissionDenied (403) unless the role may use `tool`."""
        if not self.may_use_tool(identity, tool):
            raise PermissionDenied(f"Role '{identity.role}' may not use tool '{tool}'.",
                                   param="name", code="tool_not_allowed")

    def authorize(self, identity: Identity, route: str, model: str | None = None) -> None:
        """Allow the call or raise.

        Unknown routes are denied to everyone but admins: a new route must be added to the policy
        before non-admins can reach it (deny by default).

        Raises:
            PermissionDenied: missing scope, or model outside the tenant's allow-list.
        """
        scope = self.scope_for(route)
        if scope is None:
            scope = "admin"
        if not self.has_scope(identity, scope):
            raise PermissionDenied(f"Role '{identity.role}' lacks scope '{scope}' for {route}.")
        if model is not None:
            if not self.model_allowed(identity.tenant, model) and not self.has_scope(identity, "*"):
                raise PermissionDenied(
                    f"Tenant '{identity.tenant}' may not use model '{model}'.", param="model", code="model_not_allowed"
                )
