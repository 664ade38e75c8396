"""Typed configuration of the serving application: `applications[].args` of the Serve config.

Everything a user can put under `args:` in `cluster/serve_config.yaml` is validated here, once, at
start-up; a bad value fails with a message that names the field (for example
`models.0.batching.max_batch_size: Input should be greater than or equal to 1`).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from security.settings import default_model_cache_dir
from common.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchingConfig(_Strict):
    """Live-tunable batching knobs: sent as the deployment's `user_config`, applied by `reconfigure()`."""

    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)


class AutoscalingConfig(_Strict):
    """Ray Serve autoscaling on ongoing requests per replica."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(8.0, gt=0)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        return self


class ActorOptions(_Strict):
    """The subset of `ray_actor_options` Aegis passes through."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_bytes: int | None = Field(None, ge=0)

    def to_ray(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes is not None:
            options["memory"] = self.memory_bytes
        return options


class DeploymentOptions(_Strict):
    """Replica count, autoscaling and back-pressure for one deployment."""

    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingConfig | None = None
    # Requests a replica works on at once; for model replicas this bounds the batch it can form.
    max_ongoing_requests: int = Field(64, ge=1)
    # Requests waiting in callers' queues before the next one is refused with 503 (-1: unbounded).
    max_queued_requests: int = Field(128, ge=-1)
    ray_actor_options: ActorOptions = ActorOptions()
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)

    def to_serve_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": self.ray_actor_options.to_ray(),
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.num_replicas
        return options


class ModelConfig(_Strict):
    """One served model.

    `source` says where the weights are:
      - `package:NAME`: files shipped inside the installed Python package NAME (offline defaults);
      - a local directory (safetensors + config) or a `.gguf` file path;
      - `s3://bucket/prefix`: downloaded once to the cache and verified;
      - a Hugging Face hub id (`org/name`), when the hub is reachable.
    """

    name: str
    task: Literal["generate", "embed"]
    source: str
    gguf_file: str | None = None
    aliases: tuple[str, ...] = ()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # Pickle checkpoints (*.bin, *.pt) execute code when loaded; refused unless allowed here.
    allow_pickle: bool = False
    trust_remote_code: bool = False
    revision: str | None = None
    # torch intra-op threads on CPU; None means every core of the node (see deployments/).
    cpu_threads: int | None = Field(None, ge=1)
    s3_endpoint_url: str | None = None
    max_prompt_tokens: int = Field(2048, ge=1)
    default_max_tokens: int = Field(256, ge=1)
    max_tokens_limit: int = Field(1024, ge=1)
    # Embedding models: inputs longer than this are truncated, as sentence-transformers does.
    max_input_tokens: int = Field(256, ge=1)
    batching: BatchingConfig = BatchingConfig()
    deployment: DeploymentOptions = DeploymentOptions()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"model name must match {_NAME_RE.pattern}, got {value!r}")
        return value

    @field_validator("aliases")
    @classmethod
    def _valid_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alias in value:
            if not _NAME_RE.match(alias):
                raise ValueError(f"alias must match {_NAME_RE.pattern}, got {alias!r}")
        return value

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _token_bounds(self) -> ModelConfig:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) must be <= "
                f"max_tokens_limit ({self.max_tokens_limit})"
            )
        return self

    @property
    def deployment_name(self) -> str:
        return f"{'Generate' if self.task == 'generate' else 'Embed'}-{self.name}"


class LimitsConfig(_Strict):
    """Request limits enforced at the ingress before any model work."""

    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_messages: int = Field(256, ge=1)
    max_n: int = Field(8, ge=1)
    max_embedding_inputs: int = Field(256, ge=1)
    # How long the ingress waits for a model before answering 503.
    request_timeout_s: float = Field(300.0, gt=0)
    ready_timeout_s: float = Field(10.0, gt=0)


class ToolConfig(_Strict):
    """One agent tool: a callable or class by import path (or a built-in's name), run in its own actors.

    `pool` holds the actors' resources and limits (`serve_app.agent_tools.pool_config.ToolPoolConfig`:
    num_cpus, num_gpus, memory_bytes, pool_size, max_concurrency, max_queued_calls, timeout_s,
    cancel_grace_s, max_restarts), validated at start-up.
    """

    # "package.module:attribute", or a built-in: calculator, http_fetch, search_documents, call_model.
    path: str
    description: str | None = None
    init_kwargs: dict[str, Any] = Field(default_factory=dict)
    pool: dict[str, Any] = Field(default_factory=dict)

    @field_validator("pool")
    @classmethod
    def _valid_pool(cls, value: dict[str, Any]) -> dict[str, Any]:
        from serve_app.agent_tools.pool_config import ToolPoolConfig

        try:
            ToolPoolConfig.model_validate(value)
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, prefix="pool")) from None
        return value

    def import_path(self) -> str:
        from serve_app.agent_tools.builtins import BUILTIN_TOOLS

        return BUILTIN_TOOLS.get(self.path, self.path)


class AppConfig(_Strict):
    """`applications[].args` of the Aegis Serve application."""

    models: tuple[ModelConfig, ...]
    limits: LimitsConfig = LimitsConfig()
    ingress: DeploymentOptions = DeploymentOptions(max_ongoing_requests=256, max_queued_requests=-1)
    router: DeploymentOptions = DeploymentOptions(max_ongoing_requests=1024, max_queued_requests=-1)
    # The deployment that owns the tool pools; the tools' own actors take `tools.*.pool` resources.
    tool_runner: DeploymentOptions = DeploymentOptions(
        max_ongoing_requests=1024, max_queued_requests=-1,
        ray_actor_options=ActorOptions(num_cpus=0.05))
    # Converted (dequantized GGUF) and downloaded (s3://) weights are cached here.
    model_cache_dir: str = Field(default_factory=default_model_cache_dir)
    # The security layer (`security.settings.SecuritySettings`): these values override the
    # AEGIS_* environment. Auth, rate limits, injection blocking, redaction and audit are on
    # unless turned off here or in the environment.
    security: dict[str, Any] = Field(default_factory=dict)
    # Agent tools by name (`GET /v1/tools`), each in its own Ray actors; empty: no tool routes.
    tools: dict[str, ToolConfig] = Field(default_factory=dict)
    # Workflows (`serve_app.workflows`), inline and/or from a YAML file with a `workflows:` mapping
    # (a relative path is read from the working directory, as Serve's import_path is).
    workflows: dict[str, Any] = Field(default_factory=dict)
    workflows_file: str | None = None

    @field_validator("tools")
    @classmethod
    def _valid_tools(cls, value: dict[str, ToolConfig]) -> dict[str, ToolConfig]:
        from serve_app.agent_tools.spec import load_tool

        for name, tool in value.items():
            if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
                raise ValueError(f"tool name must match ^[A-Za-z0-9_-]{{1,64}}$, got {name!r}")
            from serve_app.agent_tools.builtins import BUILTIN_TOOLS

            if ":" not in tool.path and tool.path not in BUILTIN_TOOLS:
                raise ValueError(f"{name}.path: {tool.path!r} is neither a built-in tool "
                                 f"({', '.join(sorted(BUILTIN_TOOLS))}) nor 'package.module:attribute'")
            # Importing the target here turns a typo in a path into a start-up error.
            try:
                spec = load_tool(tool.import_path(), name=name, description=tool.description)
            except ConfigError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if tool.init_kwargs and not spec.is_class:
                raise ValueError(f"{name}: init_kwargs are only for class tools")
            if spec.is_class:
                try:  # the Router handle is injected at run time, so it may be missing here
                    inspect.signature(spec.target).bind_partial(**tool.init_kwargs)
                except TypeError as exc:
                    raise ValueError(f"{name}.init_kwargs: {exc}") from None
        return value

    @field_validator("security")
    @classmethod
    def _valid_security(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "key_pepper" in value:
            raise ValueError("key_pepper is a secret: set it in the environment (AEGIS_KEY_PEPPER), "
                             "not in the Serve config")
        if "@" in str(value.get("redis_url") or ""):
            raise ValueError("redis_url carries credentials: set it in the environment (REDIS_URL), "
                             "not in the Serve config")
        from security.settings import load_security_settings

        try:
            load_security_settings(**value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _valid_workflows(self) -> AppConfig:
        if not (self.workflows or self.workflows_file):
            return self
        from serve_app.workflows import check_workflows

        models = {name for m in self.models if m.task == "generate" for name in (m.name, *m.aliases)}
        try:
            check_workflows(self.load_workflows(), set(self.tools), models)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def load_workflows(self) -> dict[str, Any]:
        """The configured workflows (`serve_app.workflows.WorkflowSpec` by name)."""
        from serve_app.workflows import load_workflows

        path = self.workflows_file
        if path and not Path(path).is_absolute() and not Path(path).exists():
            # Replicas do not always start in the directory `serve deploy` ran from.
            bundled = Path(__file__).resolve().parent.parent / path
            path = str(bundled) if bundled.exists() else path
        return load_workflows(self.workflows or None, path)

    def security_settings(self, overlay: dict[str, Any] | None = None) -> Any:
        """The validated `SecuritySettings`: the environment, overridden by `security:`.

        The injection scanner's int8 encoder is built into `model_cache_dir` unless its own
        `encoder_cache_dir` is set (in `security:` or AEGIS_INJECTION__ENCODER_CACHE_DIR).

        Args:
            overlay: live policy merged over `security:` (`security.settings.overlay_live_security`):
                the `security` entry of the Ingress's `user_config`.

        Raises:
            ConfigError: the settings are invalid, or `overlay` names a field that is not live.
        """
        from security.settings import load_security_settings, overlay_live_security

        security = self.security
        if overlay:
            try:
                security = overlay_live_security(self.security, overlay)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        settings = load_security_settings(**security)
        if "encoder_cache_dir" in settings.injection.model_fields_set:
            return settings
        injection = settings.injection.model_copy(update={"encoder_cache_dir": self.model_cache_dir})
        return settings.model_copy(update={"injection": injection})

    @field_validator("models")
    @classmethod
    def _at_least_one(cls, value: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        if not value:
            raise ValueError("at least one model must be configured")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        seen: dict[str, str] = {}
        for index, model in enumerate(self.models):
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ValueError(
                        f"models.{index}: name or alias {name!r} is already used by "
                        f"{seen[name]!r}"
                    )
                seen[name] = model.name
        return self


def load_app_config(args: dict[str, Any] | None) -> AppConfig:
    """Validate raw `args` into an `AppConfig`, raising `ConfigError` that names each bad field."""
    try:
        return AppConfig.model_validate(args or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="args")) from None


def format_validation_error(exc: ValidationError, *, prefix: str) -> str:
    lines = [f"invalid configuration ({exc.error_count()} error(s)):"]
    for error in exc.errors():
        location = ".".join(str(part) for part in (prefix, *error["loc"]))
        lines.append(f"  {location}: {error['msg']}")
    return "\n".join(lines)


def ingress_live_policy(user_config: Any) -> dict[str, Any]:
    """The `security` overlay of the Ingress's `user_config` (`{security: {...}}`; None: none).

    Raises:
        ConfigError: not a mapping, or a key other than `security`.
    """
    if user_config is None:
        return {}
    if not isinstance(user_config, dict) or set(user_config) - {"security"}:
        raise ConfigError(f"the Ingress user_config takes one key, 'security', got {user_config!r}")
    overlay = user_config.get("security") or {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"the Ingress user_config's 'security' must be a mapping, got {overlay!r}")
    return overlay
