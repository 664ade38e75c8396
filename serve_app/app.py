"""Application builder: `import_path: serve_app.app:build_app` in the Serve config."""

from __future__ import annotations

import functools
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ray.serve import Application

from serve_app.config import AppConfig, ModelConfig, load_app_config

try:
    _PACKAGE_VERSION = version("aegis")
except PackageNotFoundError:  # running from a source tree that was never installed
    _PACKAGE_VERSION = "dev"
_ROOT = Path(__file__).resolve().parent.parent
# What the deployments run: their code and the guardrail's run-time data (the shipped head).
_SOURCES = ("serve_app/**/*.py", "deployments/**/*.py", "security/**/*.py",
            "security/guardrails/data/injection_head.safetensors", "security/guardrails/data/known_templates.json")


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the Aegis application from `applications[].args`, validated first.

    Raises:
        ConfigError: the args are invalid; the message names each bad field.
    """
    return build_from_config(load_app_config(args))


def build_from_config(config: AppConfig) -> Application:
    from deployments.embedder import EmbeddingModel
    from deployments.generator import GenerativeModel
    from deployments.ingress import Ingress
    from deployments.router import Router

    handles: dict[str, Application] = {}
    routes: dict[str, dict[str, Any]] = {}
    for model in config.models:
        deployment_cls = GenerativeModel if model.task == "generate" else EmbeddingModel
        handles[model.deployment_name] = deployment_cls.options(
            name=model.deployment_name,
            version=_code_version(model),
            user_config=model.batching.model_dump(),
            **_model_options(model),
        ).bind(model.model_dump(mode="json"), config.model_cache_dir)
        routes[model.name] = {"task": model.task, "aliases": list(model.aliases),
                              "deployment": model.deployment_name}

    router = Router.options(**config.router.to_serve_options()).bind(routes, handles)
    tool_runner = None
    if config.tools:
        from deployments.tool_runner import ToolRunner

        from deployments.tools.pool import LIVE_POOL_FIELDS

        # Live pool knobs go in user_config (reconfigure, actors keep running); the rest in the
        # constructor arguments, so changing them restarts the tool's actors.
        live = {name: {k: v for k, v in tool.pool.items() if k in LIVE_POOL_FIELDS}
                for name, tool in config.tools.items()}
        built = {name: {**tool.model_dump(mode="json"),
                        "pool": {k: v for k, v in tool.pool.items() if k not in LIVE_POOL_FIELDS}}
                 for name, tool in config.tools.items()}
        tool_runner = ToolRunner.options(user_config=live,
                                         **config.tool_runner.to_serve_options()).bind(built, router)
    # Live security policy goes in user_config (reconfigure, replicas keep serving); the version
    # leaves it out, so changing only that part of `security:` never restarts the ingress.
    return Ingress.options(version=_ingress_version(config), user_config={"security": config.live_security()},
                           **config.ingress.to_serve_options()).bind(
        router, handles, config.model_dump(mode="json"), tool_runner=tool_runner)


def _code_version(model: ModelConfig) -> str:
    """A version that changes with everything except the live-tunable batching knobs.

    Serve restarts replicas when a deployment's version changes and only calls reconfigure()
    when it does not; without an explicit version every `serve.run` restarts them.
    """
    fields = model.model_dump(mode="json", exclude={"batching"})
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return f"{_PACKAGE_VERSION}-{_source_digest()}-{digest[:12]}"


@functools.cache
def _source_digest() -> str:
    """A digest of `_SOURCES`: an editable install keeps its package version through code edits,
    and an explicit deployment version that ignored them would keep old code running after a deploy."""
    digest = hashlib.sha256()
    for path in sorted({p for pattern in _SOURCES for p in _ROOT.glob(pattern) if "__pycache__" not in p.parts}):
        digest.update(path.relative_to(_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def _ingress_version(config: AppConfig) -> str:
    """A version that changes with everything the ingress reads at start-up, not its live policy."""
    from security.settings import split_live_security

    fields = config.model_dump(mode="json")
    fields["security"] = split_live_security(config.security)[0]
    # The workflows file is read at start-up; a new one under the same path must restart.
    fields["workflows_loaded"] = {name: spec.model_dump(mode="json") for name, spec in config.load_workflows().items()}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return f"{_PACKAGE_VERSION}-{_source_digest()}-{digest[:12]}"


def _model_options(model: ModelConfig) -> dict[str, Any]:
    options = model.deployment.to_serve_options()
    # @serve.batch can only fill a batch with requests the replica is allowed to hold at once.
    options["max_ongoing_requests"] = max(options["max_ongoing_requests"],
                                          model.batching.max_batch_size)
    return options
