"""API keys: created once in plaintext, stored only as keyed digests, verified in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass

from security.identity import Identity
from security.store.base import SharedStore

KEY_PREFIX = "aegis-"
_KEYS_HASH = "apikeys"
_BOOTSTRAP_HASH = "bootstrap"
# aegis-<12 hex key id>-<43 urlsafe chars = 256 random bits>. The fixed prefix lets secret
# scanners (and our own redactor) recognise a leaked key; the id lets us look the record up
# without a digest index, and is safe to log.
_KEY_RE = re.compile(r"^aegis-([0-9a-f]{12})-([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class KeyRecord:
    """What the store keeps per key: never the key itself."""

    key_id: str
    digest: str
    role: str
    tenant: str
    name: str
    created_at: float
    revoked: bool = False

    def public(self) -> dict[str, object]:
        """The record without its digest, for listing."""
        data = asdict(self)
        data.pop("digest")
        return data


class KeyStore:
    """Create, list, revoke and verify API keys held in a `SharedStore`.

    Digest choice: HMAC-SHA256(pepper, key). The keys carry 256 random bits, so a fast hash is
    already infeasible to invert and a slow KDF (bcrypt, argon2) would only add milliseconds to
    every request. The optional pepper (AEGIS_KEY_PEPPER) lives outside the store, so a leaked Redis
    dump alone cannot even confirm a guessed key. Changing the pepper invalidates every key.

    Args:
        store: the shared store (Redis or embedded).
        pepper: HMAC key; empty bytes means plain keyed-with-nothing HMAC (still one-way).
        roles: allowed role names.
    """

    def __init__(self, store: SharedStore, pepper: bytes = b"", roles: frozenset[str] | None = None) -> None:
        self._store = store
        self._pepper = pepper
        self._roles = roles

    def _digest(self, plaintext: str) -> str:
        return hmac.new(self._pepper, plaintext.encode("utf-8"), hashlib.sha256).hexdigest()

    async def create(self, role: str, tenant: str, name: str = "") -> tuple[str, str]:
        """Create a key; returns (key_id, plaintext). The plaintext is not recoverable later.

        Raises:
            ValueError: unknown role or empty tenant.
        """
        if self._roles is not None and role not in self._roles:
            raise ValueError(f"role must be one of {sorted(self._roles)}, got {role!r}")
        if not tenant or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", tenant):
            raise ValueError(f"tenant must be 1-64 chars of [A-Za-z0-9_.-], got {tenant!r}")
        key_id = secrets.token_hex(6)
        plaintext = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, self._digest(plaintext), role, tenant, name, time.time())
        await self._store.hset(_KEYS_HASH, key_id, json.dumps(asdict(record)))
        return key_id, plaintext

    async def list(self) -> list[KeyRecord]:
        """Every key record (including revoked ones), oldest first."""
        rows = await self._store.hgetall(_KEYS_HASH)
        return sorted((KeyRecord(**json.loads(v)) for v in rows.values()), key=lambda r: r.created_at)

    async def revoke(self, key_id: str) -> bool:
        """Mark a key revoked (kept for audit); returns False when no such key exists."""
        raw = await self._store.hget(_KEYS_HASH, key_id)
        if raw is None:
            return False
        data = json.loads(raw)
        data["revoked"] = True
        await self._store.hset(_KEYS_HASH, key_id, json.dumps(data))
        return True

    async def verify(self, plaintext: str) -> Identity | None:
        """The identity a key stands for, or None when it is malformed, unknown or revoked."""
        match = _KEY_RE.match(plaintext)
        if match is None:
            return None
        raw = await self._store.hget(_KEYS_HASH, match.group(1))
        # Digest computed even for unknown ids so timing does not reveal which ids exist.
        digest = self._digest(plaintext)
        if raw is None:
            secrets.compare_digest(digest, "0" * 64)
            return None
        record = KeyRecord(**json.loads(raw))
        if not secrets.compare_digest(digest, record.digest) or record.revoked:
            return None
        claims = {"name": record.name} if record.name else {}
        return Identity(f"key:{record.key_id}", record.role, record.tenant, "api_key", record.key_id, claims)

    async def bootstrap_admin(self, tenant: str = "default") -> tuple[str, str] | None:
        """On first start with no keys, create one admin key; returns (key_id, plaintext) or None.

        Safe to call from every replica at once: only the caller that wins `hsetnx` on the
        bootstrap marker creates the key, so exactly one key is made and printed.
        """
        if await self._store.hgetall(_KEYS_HASH):
            return None
        if not await self._store.hsetnx(_BOOTSTRAP_HASH, "admin_key", str(time.time())):
            return None
        return await self.create("admin", tenant, name="bootstrap-admin")
