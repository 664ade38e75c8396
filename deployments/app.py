"""The composition root: `import_path: deployments.app:build_app` in the Serve config."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.config import AppConfig, ModelConfig, load_app_config
from serve_app.model_registry import ModelRegistry


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
    for model in config.models:
        deployment_cls = GenerativeModel if model.task == "generate" else EmbeddingModel
        # No explicit `version`: Ray 2.55 deprecates it, ignores it for `serve deploy` (the code
        # version there is a hash of `args`), and drops `num_replicas` given with it. Live knobs
        # change through the Serve config's `deployments:` entry instead (`_model_options`).
        handles[model.deployment_name] = deployment_cls.options(
            name=model.deployment_name,
            user_config=model.batching.model_dump(),
            **_model_options(model),
        ).bind(model.model_dump(mode="json"), config.model_cache_dir)

    # Client requests go from the ingress straight to the model deployments; the Router is the
    # one handle that tools and workflows use to reach models by name.
    routes = ModelRegistry.from_models(config.models).routes
    router = Router.options(**config.router.to_serve_options()).bind(routes, handles)
    tool_runner = None
    if config.tools:
        from deployments.tool_runner import ToolRunner

        from serve_app.agent_tools.pool_config import LIVE_POOL_FIELDS

        # Live pool knobs go in user_config (reconfigure, actors keep running); the rest in the
        # constructor arguments, so changing them restarts the tool's actors.
        live = {name: {k: v for k, v in tool.pool.items() if k in LIVE_POOL_FIELDS}
                for name, tool in config.tools.items()}
        built = {name: {**tool.model_dump(mode="json"),
                        "pool": {k: v for k, v in tool.pool.items() if k not in LIVE_POOL_FIELDS}}
                 for name, tool in config.tools.items()}
        tool_runner = ToolRunner.options(user_config=live,
                                         **config.tool_runner.to_serve_options()).bind(built, router)
    # No user_config here: the live security policy an operator sets in the Serve config's
    # `deployments: [{name: Ingress, user_config: {security: ...}}]` reaches `Ingress.reconfigure`
    # on top of `args.security`, and changing only it does not restart the ingress.
    return Ingress.options(**config.ingress.to_serve_options()).bind(
        router, handles, config.model_dump(mode="json"), tool_runner=tool_runner)


def _model_options(model: ModelConfig) -> dict[str, Any]:
    options = model.deployment.to_serve_options()
    # @serve.batch can only fill a batch with requests the replica is allowed to hold at once.
    options["max_ongoing_requests"] = max(options["max_ongoing_requests"],
                                          model.batching.max_batch_size)
    return options
