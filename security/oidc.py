"""OIDC / JWT bearer tokens: JWKS fetched and cached, rotation by `kid`, claims checked strictly."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from security.identity import Identity
from security.settings import OIDCSettings

log = logging.getLogger(__name__)


class TokenInvalid(Exception):
    """The token failed verification; the message is safe to log, never shown to clients as-is."""


class JWKSCache:
    """Fetches an issuer's JWKS over HTTP and keeps it for `ttl_s`.

    An unknown `kid` forces a refetch (the issuer rotated keys), at most once per
    `min_refetch_interval_s`, so forged kids cannot make us hammer the issuer.

    Args:
        url: the JWKS endpoint.
        ttl_s: how long a fetched key set is trusted.
        min_refetch_interval_s: minimum gap between fetches triggered by unknown kids.
        timeout_s: HTTP timeout.
    """

    def __init__(self, url: str, ttl_s: float, min_refetch_interval_s: float, timeout_s: float) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_interval_s
        self._timeout_s = timeout_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    async def _fetch(self) -> None:
        import httpx
        import jwt

        async with httpx.AsyncClient(timeout=self._timeout_s) as client:
            response = await client.get(self._url)
            response.raise_for_status()
            body = response.json()
        keys: dict[str, Any] = {}
        for jwk in body.get("keys", []):
            if jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                continue
            try:
                keys[jwk["kid"]] = jwt.PyJWK.from_json(json.dumps(jwk))
            except jwt.PyJWTError as exc:  # one odd key must not hide the others
                log.warning("skipping unusable JWK kid=%s: %s", jwk.get("kid"), exc)
        self._keys = keys
        self._fetched_at = time.monotonic()
        self.fetch_count += 1

    async def get(self, kid: str) -> Any:
        """The signing key for `kid`.

        Raises:
            TokenInvalid: the kid is unknown even after an allowed refetch, or JWKS is unreachable.
        """
        async with self._lock:
            age_s = time.monotonic() - self._fetched_at
            stale = age_s > self._ttl_s
            unknown = kid not in self._keys and age_s >= self._min_refetch_s
            if stale or unknown:
                try:
                    await self._fetch()
                except Exception as exc:  # network, HTTP status, bad JSON: all mean "cannot verify"
                    log.warning("JWKS fetch from %s failed: %s", self._url, type(exc).__name__)
                    if not self._keys:
                        raise TokenInvalid("JWKS unavailable") from exc
            if kid not in self._keys:
                raise TokenInvalid(f"unknown kid {kid!r}")
            return self._keys[kid]


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class OIDCVerifier:
    """Verifies issuer JWTs and maps their claims to an `Identity`.

    Args:
        settings: issuer, audience, JWKS URL, pinned algorithms, leeway and claim names.
        roles: accepted role names; a role claim outside it is rejected.
    """

    def __init__(self, settings: OIDCSettings, roles: frozenset[str]) -> None:
        self._s = settings
        self._roles = roles
        self.jwks = JWKSCache(
            settings.jwks_url, settings.jwks_cache_ttl_s, settings.jwks_min_refetch_interval_s, settings.http_timeout_s
        )

    async def verify(self, token: str) -> Identity:
        """Verify signature, `exp`, `nbf`, `iss`, `aud` and map role/tenant claims.

        Raises:
            TokenInvalid: any check failed.
        """
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid("malformed token") from exc
        # Never trust the token's own alg: only the configured ones are even considered.
        if header.get("alg") not in self._s.algorithms:
            raise TokenInvalid(f"algorithm {header.get('alg')!r} not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenInvalid("token has no kid")
        key = await self.jwks.get(kid)
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=self._s.algorithms,
                audience=self._s.audience,
                issuer=self._s.issuer,
                leeway=self._s.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"{type(exc).__name__}: {exc}") from exc
        role = _claim(claims, self._s.role_claim)
        if isinstance(role, list):  # e.g. Keycloak-style role arrays: take the first known role
            role = next((r for r in role if r in self._roles), None)
        role = role or self._s.default_role
        if role not in self._roles:
            raise TokenInvalid(f"role {role!r} not accepted")
        tenant = _claim(claims, self._s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise TokenInvalid(f"claim {self._s.tenant_claim!r} missing")
        return Identity(f"oidc:{claims['sub']}", str(role), tenant, "oidc", None, {"iss": str(claims["iss"])})
