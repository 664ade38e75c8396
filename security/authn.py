"""One authentication entry point: `Authorization: Bearer` → API key or OIDC JWT → Identity."""

from __future__ import annotations

import logging

from security.identity import Identity
from security.keys import KEY_PREFIX, KeyStore
from security.oidc import OIDCVerifier, TokenInvalid
from security.store.base import StoreUnavailable
from common.errors import AuthenticationFailed, Overloaded

log = logging.getLogger(__name__)

_DEV_IDENTITY = Identity(subject="dev", role="admin", tenant="dev", method="dev")


class Authenticator:
    """Turns the Authorization header into an Identity or raises 401.

    Args:
        keys: API-key store, or None when API keys are disabled.
        oidc: JWT verifier, or None when no issuer is configured.
        auth_disabled: dev mode only; every request becomes the `dev` admin identity.
        counters: optional `Counters` for auth outcomes.
    """

    def __init__(self, keys: KeyStore | None, oidc: OIDCVerifier | None, auth_disabled: bool = False, counters=None) -> None:
        self._keys = keys
        self._oidc = oidc
        self._disabled = auth_disabled
        self._counters = counters

    def _count(self, name: str) -> None:
        if self._counters is not None:
            self._counters.inc(name)

    async def authenticate(self, authorization: str | None) -> Identity:
        """Identity for the raw `Authorization` header value.

        Raises:
            AuthenticationFailed: missing, malformed, unknown, revoked or invalid credentials.
            Overloaded: the key store is unreachable (keys cannot be checked, so never fail open).
        """
        if self._disabled:
            return _DEV_IDENTITY
        if not authorization:
            self._count("auth_missing")
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            self._count("auth_invalid")
            raise AuthenticationFailed("Authorization header must be 'Bearer <key>'.")
        if credential.startswith(KEY_PREFIX) and self._keys is not None:
            try:
                identity = await self._keys.verify(credential)
            except StoreUnavailable:
                self._count("auth_store_unavailable")
                raise Overloaded("Authentication backend unavailable, retry shortly.", retry_after_s=1.0) from None
            if identity is not None:
                self._count("auth_ok_api_key")
                return identity
        elif credential.count(".") == 2 and self._oidc is not None:
            try:
                identity = await self._oidc.verify(credential)
            except TokenInvalid as exc:
                log.info("rejected JWT: %s", exc)
            else:
                self._count("auth_ok_oidc")
                return identity
        self._count("auth_invalid")
        raise AuthenticationFailed("Invalid API key or token.")
