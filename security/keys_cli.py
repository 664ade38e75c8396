"""`python -m serve_app keys create|list|revoke`: API-key administration against the shared store."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from security.keys import KeyStore
from security.settings import load_security_settings
from security.store import build_store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve_app keys", description="Manage Aegis API keys.")
    parser.add_argument("--config", help="a Serve config (e.g. cluster/serve_config.yaml): use the "
                        "`security:` settings of its application (state_dir, roles) over the environment")
    parser.add_argument("--app", help="the application in --config (default: the first)")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", required=True)
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    sub.add_parser("list", help="list keys (ids, roles, tenants; never the keys)").add_argument("--json", action="store_true")
    sub.add_parser("revoke", help="revoke a key by id").add_argument("key_id")
    return parser


def _config_overrides(path: str, app: str | None) -> dict:
    """The `security:` mapping of one application in a Serve config file.

    Raises:
        ValueError: unreadable file, or no such application.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    apps = config.get("applications") or []
    chosen = next((a for a in apps if app is None or a.get("name") == app), None)
    if chosen is None:
        raise ValueError(f"{path} has no application {app!r}" if app else f"{path} has no applications")
    return dict((chosen.get("args") or {}).get("security") or {})


async def _run(args: argparse.Namespace, out, err) -> int:
    try:
        overrides = _config_overrides(args.config, args.app) if args.config else {}
        settings = load_security_settings(**overrides)
    except ValueError as exc:  # ConfigError is a ValueError too
        print(f"error: {exc}", file=err)
        return 2
    from security.rbac import Policy

    store = build_store(settings)
    keys = KeyStore(store, (settings.key_pepper.get_secret_value().encode() if settings.key_pepper else b""), Policy(settings.rbac).roles)
    try:
        if args.command == "create":
            try:
                key_id, plaintext = await keys.create(args.role, args.tenant, args.name)
            except ValueError as exc:
                print(f"error: {exc}", file=err)
                return 2
            print(f"key id: {key_id}\nrole: {args.role}  tenant: {args.tenant}", file=out)
            print(f"api key (shown once, store it now): {plaintext}", file=out)
            return 0
        if args.command == "list":
            records = [r.public() for r in await keys.list()]
            if args.json:
                print(json.dumps(records, indent=2), file=out)
            else:
                for r in records:
                    state = "revoked" if r["revoked"] else "active"
                    print(f"{r['key_id']}  {r['role']:<9} {r['tenant']:<16} {state:<8} {r['name']}", file=out)
            return 0
        if await keys.revoke(args.key_id):
            print(f"revoked {args.key_id}", file=out)
            return 0
        print(f"error: no key with id {args.key_id!r}", file=err)
        return 1
    finally:
        await store.close()


def main(argv: list[str] | None = None, out=None, err=None) -> int:
    """Run the keys CLI; returns the process exit code.

    The store is Redis when `REDIS_URL` / `AEGIS_REDIS_URL` is set, else the embedded store's file
    `<state_dir>/store.json` (`security.state_dir` of `--config`'s application, else
    `AEGIS_STATE_DIR`, default `.aegis`), which the cluster's store actor
    re-reads when it changes, so a key created or revoked here is live on the next request.
    """
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args, out or sys.stdout, err or sys.stderr))


if __name__ == "__main__":
    raise SystemExit(main())
