"""Role-based access control in one policy: role → scopes, route → scope, tenant → models."""

from __future__ import annotations

import fnmatch

from security.identity import Identity
from security.settings import RBACSettings
from serve_app.errors import PermissionDenied


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

    def allowed_models(self, tenant: str) -> frozenset[str] | None:
        """Models a tenant may use; None means all (used to filter /v1/models)."""
        return self._tenant_models.get(tenant)

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
            allowed = self._tenant_models.get(identity.tenant)
            if allowed is not None and model not in allowed and not self.has_scope(identity, "*"):
                raise PermissionDenied(
                    f"Tenant '{identity.tenant}' may not use model '{model}'.", param="model", code="model_not_allowed"
                )
