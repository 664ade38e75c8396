"""API keys over the embedded store: hashing, verification, revocation, bootstrap, the CLI."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from security import keys_cli
from security.keys import KeyStore
from security.store.embedded import EmbeddedStore

ROLES = frozenset({"admin", "user", "trainer", "readonly"})


async def test_create_verify_and_revoke(tmp_path):
    store = EmbeddedStore(tmp_path / "store.json")
    keys = KeyStore(store, b"pepper", ROLES)
    key_id, plaintext = await keys.create("user", "acme", "ci")
    assert plaintext.startswith(f"aegis-{key_id}-")
    identity = await keys.verify(plaintext)
    assert (identity.role, identity.tenant, identity.key_id, identity.method) == ("user", "acme", key_id, "api_key")
    assert plaintext not in (tmp_path / "store.json").read_text()  # only the digest is stored
    assert await keys.verify(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert await keys.revoke(key_id)
    assert await keys.verify(plaintext) is None
    assert not await keys.revoke("000000000000")


async def test_pepper_change_invalidates_keys():
    store = EmbeddedStore()
    _, plaintext = await KeyStore(store, b"one", ROLES).create("user", "acme")
    assert await KeyStore(store, b"two", ROLES).verify(plaintext) is None


async def test_rejects_unknown_role_and_bad_tenant():
    keys = KeyStore(EmbeddedStore(), b"", ROLES)
    with pytest.raises(ValueError, match="role must be one of"):
        await keys.create("root", "acme")
    with pytest.raises(ValueError, match="tenant must be"):
        await keys.create("user", "acme corp")


async def test_bootstrap_creates_exactly_one_admin_key_under_concurrency(tmp_path):
    stores = [EmbeddedStore(tmp_path / "store.json") for _ in range(4)]  # four replicas, one file
    results = await asyncio.gather(*(KeyStore(s, b"", ROLES).bootstrap_admin() for s in stores))
    made = [r for r in results if r is not None]
    assert len(made) == 1
    assert len(await KeyStore(stores[0], b"", ROLES).list()) == 1
    assert await KeyStore(stores[1], b"", ROLES).bootstrap_admin() is None


async def test_cli_and_running_store_share_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("AEGIS_STATE_DIR", str(tmp_path))
    running = KeyStore(EmbeddedStore(tmp_path / "store.json"), b"", ROLES)  # what the actor holds
    out = io.StringIO()
    assert await asyncio.to_thread(keys_cli.main, ["create", "--role", "user", "--tenant", "acme"], out) == 0
    plaintext = out.getvalue().split("store it now): ")[1].strip()
    identity = await running.verify(plaintext)
    assert identity is not None and identity.tenant == "acme"
    out = io.StringIO()
    assert await asyncio.to_thread(keys_cli.main, ["list", "--json"], out) == 0
    listed = json.loads(out.getvalue())
    assert listed[0]["key_id"] == identity.key_id and "digest" not in listed[0]
    assert await asyncio.to_thread(keys_cli.main, ["revoke", identity.key_id], io.StringIO()) == 0
    assert await running.verify(plaintext) is None  # revocation seen by the running store at once
    err = io.StringIO()
    assert await asyncio.to_thread(keys_cli.main, ["revoke", "nope"], io.StringIO(), err) == 1
    assert "no key with id" in err.getvalue()


async def test_cli_reads_the_store_location_from_a_serve_config(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("AEGIS_STATE_DIR", raising=False)
    state = tmp_path / "state"
    config = tmp_path / "serve.yaml"
    config.write_text(f"applications:\n  - name: aegis\n    args:\n      security: {{state_dir: '{state}'}}\n")
    out = io.StringIO()
    args = ["--config", str(config), "create", "--role", "user", "--tenant", "acme"]
    assert await asyncio.to_thread(keys_cli.main, args, out) == 0
    plaintext = out.getvalue().split("store it now): ")[1].strip()
    assert (await KeyStore(EmbeddedStore(state / "store.json"), b"", ROLES).verify(plaintext)) is not None
    err = io.StringIO()
    assert await asyncio.to_thread(keys_cli.main, ["--config", str(config), "--app", "other", "list"],
                                   io.StringIO(), err) == 2
    assert "no application 'other'" in err.getvalue()
    assert await asyncio.to_thread(keys_cli.main, ["--config", str(tmp_path / "missing.yaml"), "list"],
                                   io.StringIO(), err) == 2
