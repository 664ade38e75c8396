"""`python -m serve_app`: start Aegis locally, or check a Serve config without starting anything.

    python -m serve_app serve [--config cluster/serve_config.yaml] [--ray-port 6390] [--dev-no-auth]
    python -m serve_app check-config [--config cluster/serve_config.yaml]
    python -m serve_app keys create --role user --tenant acme | list | revoke KEY_ID

`serve` starts a local Ray head (never on 6379, Redis's port), deploys the config with
`serve deploy` (the same path a user takes against a remote cluster), waits until every model
answers, prints the URL and a curl to paste (with the bootstrap admin key on first start), and
on Ctrl-C shuts Serve and Ray down. `keys` manages API keys in the same store the server uses
(Redis when REDIS_URL is set, else `<AEGIS_STATE_DIR>/store.json`, default `.aegis/`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from common.errors import ConfigError

# The composition root, as `applications[].import_path` names it in a Serve config.
AEGIS_IMPORT_PATH = "deployments.app:build_app"
_SERVE_SHUTDOWN_TIMEOUT_S = 60.0

DEFAULT_CONFIG = "cluster/serve_config.yaml"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        from security.keys_cli import main as keys_main

        try:
            return keys_main(argv[1:])
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="python -m serve_app", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="start Ray locally and deploy the Serve config")
    serve_cmd.add_argument("--config", default=DEFAULT_CONFIG)
    serve_cmd.add_argument("--ray-port", type=int, default=6390,
                           help="GCS port of the local Ray head (default 6390; 6379 is Redis's)")
    serve_cmd.add_argument("--dashboard-port", type=int, default=8265)
    serve_cmd.add_argument("--metrics-export-port", type=int, default=8081,
                           help="Prometheus endpoint of Ray, Serve and Aegis metrics")
    serve_cmd.add_argument("--ready-timeout-s", type=float, default=1800.0)
    serve_cmd.add_argument("--dev-no-auth", action="store_true",
                           help="DEV ONLY: turn authentication off (AEGIS_DEV_MODE=1, "
                                "AEGIS_AUTH_DISABLED=1); every request is served as an admin")
    commands.add_parser("keys", help="manage API keys: keys create --role R --tenant T | list | "
                                     "revoke ID (see `keys --help`)", add_help=False)

    check_cmd = commands.add_parser("check-config", help="validate a Serve config and exit")
    check_cmd.add_argument("--config", default=DEFAULT_CONFIG)

    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            apps = check_config(Path(args.config))
            print(f"{args.config}: OK ({', '.join(apps)})")
            return 0
        return serve(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def check_config(path: Path) -> list[str]:
    """Validate every Aegis application's `args` in a Serve config file; return the app names.

    Raises:
        ConfigError: unreadable YAML, not a Serve config, or invalid args (fields named).
    """
    from serve_app.config import load_app_config

    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise ConfigError(f"{path}: a Serve config needs an `applications:` list")
    names = []
    for index, app in enumerate(config["applications"]):
        name = app.get("name", f"#{index}")
        if _is_aegis(app):
            try:
                _check_overrides(load_app_config(app.get("args")), app.get("deployments") or [])
            except ConfigError as exc:
                raise ConfigError(f"{path}: application {name!r}: {exc}") from None
        names.append(name)
    return names


def _is_aegis(app: dict[str, Any]) -> bool:
    """Whether a Serve config application is built by Aegis's `build_app`."""
    return str(app.get("import_path", "")).startswith(f"{AEGIS_IMPORT_PATH.split(':')[0]}:")


def _check_overrides(config: Any, overrides: list) -> None:
    """The Serve config's per-deployment `deployments:` entries: names Aegis builds, and the
    `user_config` each one's `reconfigure()` will take (live policy and batching).

    Raises:
        ConfigError: an unknown deployment name or an invalid `user_config`.
    """
    from pydantic import ValidationError

    from serve_app.config import BatchingConfig, format_validation_error, ingress_live_policy

    models = {m.deployment_name for m in config.models}
    known = {"Ingress", "Router", *models, *(["ToolRunner"] if config.tools else [])}
    for entry in overrides:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in known:
            raise ConfigError(f"deployments: no deployment named {name!r}; this app has {sorted(known)}")
        if "user_config" not in entry:
            continue
        where = f"deployments[{name}].user_config"
        if name == "Ingress":
            try:
                config.security_settings(overlay=ingress_live_policy(entry["user_config"]))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        elif name in models:
            try:
                BatchingConfig.model_validate(entry["user_config"] or {})
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, prefix=where)) from None
        elif name == "ToolRunner":
            _check_tool_knobs(config, entry["user_config"] or {}, where)


def _check_tool_knobs(config: Any, live: Any, where: str) -> None:
    """The ToolRunner's `{tool: {timeout_s, cancel_grace_s, max_queued_calls}}`, as `ToolPool.tuned` reads it."""
    from pydantic import ValidationError

    from serve_app.agent_tools.pool_config import ToolPoolConfig, tune_pool_config
    from serve_app.config import format_validation_error

    if not isinstance(live, dict) or set(live) - set(config.tools):
        raise ConfigError(f"{where}: a mapping of configured tools ({sorted(config.tools)}) to live knobs, got {live!r}")
    for tool, knobs in live.items():
        try:
            tune_pool_config(ToolPoolConfig.model_validate(config.tools[tool].pool), knobs or {}, f"{where}.{tool}")
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix=f"{where}.{tool}")) from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def serve(args: argparse.Namespace) -> int:
    from serve_app.local_cluster import start_local_cluster, stop_local_cluster

    config_path = Path(args.config)
    # One state directory for this process, the Ray cluster it starts (replicas inherit the
    # environment of `ray start`) and `python -m serve_app keys` run from the same directory.
    os.environ.setdefault("AEGIS_STATE_DIR", str(Path(".aegis").resolve()))
    if args.dev_no_auth:
        os.environ.update({"AEGIS_DEV_MODE": "1", "AEGIS_AUTH_DISABLED": "1"})
        print("!" * 78 + "\n!! DEV MODE: AUTHENTICATION IS OFF (--dev-no-auth). Anyone who can "
              "reach\n!! the port is an admin. Never use this outside your own machine.\n"
              + "!" * 78, file=sys.stderr, flush=True)
    check_config(config_path)
    security = _security_settings(config_path)
    http = (yaml.safe_load(config_path.read_text()).get("http_options") or {})
    base_url = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 8000)}"

    print(f"starting Ray on 127.0.0.1:{args.ray_port} (dashboard :{args.dashboard_port}) ...",
          flush=True)
    try:
        cluster = start_local_cluster(port=args.ray_port, dashboard_port=args.dashboard_port,
                                      metrics_export_port=args.metrics_export_port)
    except RuntimeError as exc:
        print(f"error: {exc}\nIs another Ray already using port {args.ray_port}? "
              "Pick another with --ray-port.", file=sys.stderr)
        return 1

    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    serve_bin = str(Path(sys.executable).with_name("serve"))
    try:
        print(f"deploying {config_path} (first start dequantizes the GGUF model once) ...",
              flush=True)
        subprocess.run([serve_bin, "deploy", str(config_path), "--address", cluster.dashboard_url],
                       check=True, env=cluster.env())
        if not _wait_ready(base_url, serve_bin, cluster.dashboard_url, args.ready_timeout_s,
                           lambda: stopping):
            return 1
        _print_ready(base_url, cluster.dashboard_url, args.metrics_export_port, security)
        while not stopping:
            time.sleep(0.5)
        print("\nshutting down Serve and Ray ...", flush=True)
        try:
            subprocess.run([serve_bin, "shutdown", "-y", "--address", cluster.dashboard_url],
                           check=False, env=cluster.env(), timeout=_SERVE_SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Stopping the cluster below ends every replica anyway; say so instead of a traceback.
            print(f"`serve shutdown` did not finish within {_SERVE_SHUTDOWN_TIMEOUT_S:.0f} s; "
                  "stopping Ray, which ends every replica", file=sys.stderr, flush=True)
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"error: `serve deploy` failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    finally:
        stop_local_cluster(cluster)
        print("stopped.", flush=True)


def _wait_ready(base_url: str, serve_bin: str, dashboard_url: str, timeout_s: float,
                stopping: Any) -> bool:
    deadline = time.monotonic() + timeout_s
    last_status = ""
    while time.monotonic() < deadline and not stopping():
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=30) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        status = subprocess.run([serve_bin, "status", "--address", dashboard_url],
                                capture_output=True, text=True).stdout
        if "DEPLOY_FAILED" in status or "UNHEALTHY" in status:
            print(f"error: the application failed to deploy:\n{status}", file=sys.stderr)
            return False
        if status != last_status:
            last_status = status
        time.sleep(3)
    if not stopping():
        print(f"error: not ready after {timeout_s:.0f}s; `serve status` says:\n{last_status}",
              file=sys.stderr)
    return False


def _security_settings(config_path: Path) -> Any:
    """The security settings the deployed app will use (its `security:` args over the env)."""
    from serve_app.config import load_app_config

    config = yaml.safe_load(config_path.read_text())
    for app in config["applications"]:
        if _is_aegis(app):
            return load_app_config(app.get("args")).security_settings()
    from security.settings import load_security_settings

    return load_security_settings()


def _print_ready(base_url: str, dashboard_url: str, metrics_port: int, security: Any) -> None:
    from serve_app.security_guard import take_bootstrap_key

    body = json.dumps({"model": "smollm2-135m-instruct",
                       "messages": [{"role": "user", "content": "What is the capital of France?"}],
                       "max_tokens": 32, "temperature": 0})
    auth = ' -H "Authorization: Bearer $AEGIS_API_KEY"'
    if security.auth_disabled:
        auth, keys = "", ("  !! AUTHENTICATION IS OFF (dev mode): no key needed, anyone can call "
                          "this server.\n")
    elif (key := take_bootstrap_key(security)) is not None:
        # Read from the 0600 file the ingress wrote and deleted now: this is the only copy.
        keys = (f"  Admin API key (created on first start; shown ONCE, only its hash is stored):\n"
                f"    export AEGIS_API_KEY={key}\n"
                "  More keys: python -m serve_app keys create --role user --tenant acme\n")
    else:
        keys = ("  API keys already exist (list: python -m serve_app keys list).\n"
                "  New one:  python -m serve_app keys create --role user --tenant acme\n"
                "            export AEGIS_API_KEY=<the key it prints>\n")
    print(f"""
Aegis is ready at {base_url}  (OpenAI base_url: {base_url}/v1)
  Ray dashboard:  {dashboard_url}
  Prometheus:     http://127.0.0.1:{metrics_port}/metrics

{keys}
Try it:
  curl -s {base_url}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\
    -d '{body}'

Ctrl-C stops it.""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
