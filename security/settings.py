"""Typed, validated settings for every security component (env prefix `AEGIS_`, nesting with `__`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal, get_origin

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from security.guardrails.prompt_templates import compile_templates, known_libraries, known_templates

FailMode = Literal["open", "closed"]
InjectionAction = Literal["block", "flag", "off"]

# Values people paste from examples; refused outside dev mode because they are public.
_PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "password", "placeholder", "xxx", "todo"}
)

REDACTION_TYPES = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "API_KEY",
    "JWT",
    "PRIVATE_KEY",
)


class OIDCSettings(BaseModel):
    """An OIDC issuer whose JWTs are accepted as bearer tokens."""

    issuer: str = Field(description="Expected `iss` claim, e.g. https://login.example.com/.")
    audience: str = Field(description="Expected `aud` claim.")
    jwks_url: str = Field(description="URL of the issuer's JSON Web Key Set.")
    # Pinned here, never read from the token header (the alg-confusion attack).
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_cache_ttl_s: float = Field(default=600.0, gt=0)
    # An unknown `kid` triggers a refetch (key rotation), but at most this often so a flood of
    # forged kids cannot turn us into a DoS amplifier against the issuer.
    jwks_min_refetch_interval_s: float = Field(default=30.0, ge=0)
    http_timeout_s: float = Field(default=5.0, gt=0)
    role_claim: str = Field(default="role", description="Claim holding the role; dotted path allowed.")
    tenant_claim: str = Field(default="tenant", description="Claim holding the tenant; dotted path allowed.")
    default_role: str | None = Field(default=None, description="Role when the claim is absent; None rejects.")

    @field_validator("algorithms")
    @classmethod
    def _no_symmetric_or_none(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        bad = [alg for alg in value if alg not in allowed]
        if not value or bad:
            raise ValueError(f"oidc.algorithms must be asymmetric JWS algorithms from {sorted(allowed)}, got {value}")
        return value


class AuthSettings(BaseModel):
    """Who may call the API."""

    api_keys_enabled: bool = True
    oidc: OIDCSettings | None = None
    bootstrap_admin_key: bool = Field(
        default=True, description="Create and print one admin key on first start when none exist."
    )


_USER_TOOL_SCOPES = ("tools:read", "tools:invoke", "workflows:run", "documents:read",
                     "tool:calculator", "tool:search_documents", "tool:call_model")


class RBACSettings(BaseModel):
    """Role → scopes, route → scope, tenant → allowed models."""

    role_scopes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "admin": ["*"],
            # Tools: `tool:<name>` per tool; http_fetch reaches the network, so only admins by default.
            "user": ["inference", "models:read", *_USER_TOOL_SCOPES],
            "trainer": ["inference", "models:read", "training", *_USER_TOOL_SCOPES, "documents:write",
                        "tool:index_document"],
            "readonly": ["models:read", "tools:read"],
        }
    )
    route_scopes: dict[str, str] = Field(
        default_factory=lambda: {
            "/v1/chat/completions": "inference",
            "/v1/completions": "inference",
            "/v1/embeddings": "inference",
            "/v1/models": "models:read",
            "/admin/*": "admin",
            "/v1/training/*": "training",
            # Tool and workflow routes, by their templates; each tool also needs `tool:<name>`
            # and a workflow needs the scopes of every tool it uses.
            "/v1/tools": "tools:read",
            "/v1/tools/{name}/invoke": "tools:invoke",
            "/v1/tools/{name}/collections/{collection}": "documents:read",
            "/v1/tools/{name}/collections/{collection}/documents": "documents:write",
            "/v1/tools/{name}/collections/{collection}/documents/{document_id}": "documents:write",
            "/v1/workflows": "tools:read",
            "/v1/workflows/{name}/run": "workflows:run",
        }
    )
    # Tenant → model ids it may use; a tenant absent from the map may use every model.
    tenant_models: dict[str, list[str]] = Field(default_factory=dict)


class LimitSpec(BaseModel):
    """A rate: `per_minute` units sustained, up to `burst` units at once."""

    per_minute: float = Field(gt=0)
    burst: float = Field(gt=0)


class RateLimitSettings(BaseModel):
    """Per-key and per-tenant request and token rates (None disables that limit)."""

    enabled: bool = True
    key_requests: LimitSpec | None = LimitSpec(per_minute=60, burst=20)
    key_tokens: LimitSpec | None = LimitSpec(per_minute=100_000, burst=20_000)
    tenant_requests: LimitSpec | None = LimitSpec(per_minute=600, burst=100)
    tenant_tokens: LimitSpec | None = LimitSpec(per_minute=1_000_000, burst=200_000)
    # Per-role overrides of the per-key limits, e.g. {"admin": {...}}.
    role_key_requests: dict[str, LimitSpec] = Field(default_factory=dict)
    role_key_tokens: dict[str, LimitSpec] = Field(default_factory=dict)


class InputLimitSettings(BaseModel):
    """Hard size limits checked before anything expensive (413 when exceeded)."""

    max_body_bytes: int = Field(default=1_000_000, ge=1)
    max_messages: int = Field(default=256, ge=1)
    max_prompt_tokens: int = Field(default=8192, ge=1)


def default_model_cache_dir() -> str:
    """AEGIS_MODEL_CACHE_DIR, else ~/.cache/aegis/models: converted and downloaded weights, the int8 encoder graph."""
    return os.environ.get("AEGIS_MODEL_CACHE_DIR", str(Path.home() / ".cache" / "aegis" / "models"))


class InjectionSettings(BaseModel):
    """Prompt-injection scanning: heuristics, then a classifier, with a per-route/tenant policy."""

    action: InjectionAction = "block"
    route_actions: dict[str, InjectionAction] = Field(default_factory=dict)
    tenant_actions: dict[str, InjectionAction] = Field(default_factory=dict)
    classifier: Literal["embedding_head", "hf_sequence", "none"] = "embedding_head"
    # Directory of the sentence encoder (all-MiniLM-L6-v2); None finds the bundled package.
    encoder_path: str | None = None
    head_path: str | None = Field(default=None, description="safetensors head; None uses the shipped one.")
    hf_model: str | None = Field(default=None, description="HF sequence-classification model id or path.")
    hf_positive_label: str = Field(default="INJECTION", description="Label name meaning injection.")
    threshold: float | None = Field(default=None, ge=0, le=1, description="None uses the trained threshold.")
    # Chat and completion prompts stay far under it: input_limits counts ~4 characters a token, so
    # the default max_prompt_tokens (8192) admits at most ~32.8k characters.
    max_scan_chars: int = Field(
        default=100_000,
        ge=1,
        description="Most characters one scan reads (a request's texts, or a tool's output, summed); "
        "every one is scanned, and more is refused with code scan_limit_exceeded, never cut.",
    )
    device: str = "cpu"
    encoder_quantization: Literal["int8", "none"] = Field(
        default="int8",
        description="int8: the MiniLM encoder runs on ONNX Runtime with int8 linear layers (CPU only, ~1.8x faster "
        "than torch float32), built once into encoder_cache_dir; the shipped head was trained on its embeddings. "
        "Use 'none' (torch) on a GPU.",
    )
    encoder_cache_dir: str = Field(
        default_factory=default_model_cache_dir,
        description="Where the int8 encoder graph is built once and shared by replicas; the app passes its model_cache_dir.",
    )
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Registered prompt templates, name -> str.format template ('...{context}...Question: {question}'): "
        "a user turn or completion prompt that fills one is scanned as its slot values, without the template's own text.",
    )
    known_templates: list[str] = Field(
        default_factory=list,
        description="Libraries whose default prompt templates are registered too (llama-index-core, langchain-classic, "
        "langchain-community; the versions data/known_templates.json names), each under its name 'library:path:line'.",
    )
    tenant_templates: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Which templates a tenant may fill: names of registered templates, names of shipped known templates, "
        "or a library name (every known template of it, whether or not known_templates lists it); a tenant not listed "
        "may fill everything `templates` and `known_templates` register.",
    )

    @property
    def needs_classifier(self) -> bool:
        """Whether any route or tenant scans with the learned classifier (some action is not `off`)."""
        actions = {self.action, *self.route_actions.values(), *self.tenant_actions.values()}
        return self.classifier != "none" and actions != {"off"}

    def all_templates(self) -> dict[str, str]:
        """name -> template, in matching order: `templates` first (the operator's own win a shared
        name), then the known libraries' templates, most specific first."""
        return self._in_order(known_templates(self.known_templates))

    def tenant_template_sets(self) -> dict[str, dict[str, str]]:
        """tenant -> name -> template for each tenant in `tenant_templates`, in `all_templates` order.

        An entry is an `injection.templates` name, a shipped known template's name, or a library
        name standing for all of that library's known templates; so one tenant can have a
        library's templates without turning them on for every tenant.

        Raises:
            ValueError: an entry that is none of those.
        """
        libraries = known_libraries()
        shipped = known_templates(list(libraries))
        sets = {}
        for tenant, entries in self.tenant_templates.items():
            unknown = sorted(set(entries) - self.templates.keys() - shipped.keys() - libraries.keys())
            if unknown:
                raise ValueError(f"injection.tenant_templates[{tenant!r}] names unregistered templates {unknown}; an entry is "
                                 f"a name in injection.templates {sorted(self.templates)}, a library {sorted(libraries)}, "
                                 "or a known template's 'library:path:line'")
            named = set(entries)
            wanted = {name: t for name, t in shipped.items() if name in named or name.split(":", 1)[0] in named}
            sets[tenant] = {name: t for name, t in self._in_order(wanted).items() if name in named or name in wanted}
        return sets

    def _in_order(self, known: dict[str, str]) -> dict[str, str]:
        # The operator's own templates win a shared name and are tried first; `known` keeps the
        # file's order (most literal text first).
        return {**self.templates, **{name: t for name, t in known.items() if name not in self.templates}}

    @model_validator(mode="after")
    def _hf_needs_model(self) -> InjectionSettings:
        if self.classifier == "hf_sequence" and not self.hf_model:
            raise ValueError("injection.hf_model is required when injection.classifier is 'hf_sequence'")
        if self.classifier == "embedding_head" and self.encoder_quantization == "int8" and self.device != "cpu":
            raise ValueError(f"injection.encoder_quantization 'int8' runs on the CPU only; set it to 'none' for device {self.device!r}")
        compile_templates(self.templates)  # TemplateError is a ValueError: start-up names the bad template
        clash = sorted(self.templates.keys() & known_libraries().keys())
        if clash:
            raise ValueError(f"injection.templates names {clash} are library names, which tenant_templates reads as "
                             "all of that library's known templates; rename them")
        self.all_templates()  # ValueError for a library whose templates do not ship
        self.tenant_template_sets()  # ValueError for a tenant entry that names nothing
        return self


class RedactionSettings(BaseModel):
    """PII / secret redaction on outputs (and optionally on inputs)."""

    output_enabled: bool = True
    input_enabled: bool = False
    types: list[str] = Field(default_factory=lambda: list(REDACTION_TYPES))
    tenant_types: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(REDACTION_TYPES))
        if unknown:
            raise ValueError(f"redaction.types has unknown types {unknown}; known: {list(REDACTION_TYPES)}")
        return value

    @field_validator("tenant_types")
    @classmethod
    def _known_tenant_types(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for tenant, types in value.items():
            unknown = sorted(set(types) - set(REDACTION_TYPES))
            if unknown:
                raise ValueError(f"redaction.tenant_types[{tenant!r}] has unknown types {unknown}")
        return value


class AuditSettings(BaseModel):
    """Where one-record-per-request audit goes."""

    enabled: bool = True
    jsonl_path: str | None = Field(default=None, description="None: <state_dir>/audit.jsonl.")
    redis_stream: str = "aegis:audit"
    redis_stream_maxlen: int = Field(default=1_000_000, ge=1)
    include_prompt_text: bool = False


class SecuritySettings(BaseSettings):
    """Everything `security/` needs, read from `AEGIS_*` env vars (nested with `__`) or passed in.

    Examples: `AEGIS_DEV_MODE=1`, `AEGIS_FAIL_MODE=closed`, `REDIS_URL=redis://host:6379/0`,
    `AEGIS_RATE_LIMIT__KEY_REQUESTS__PER_MINUTE=120`, `AEGIS_INJECTION__ACTION=flag`.
    """

    model_config = SettingsConfigDict(
        env_prefix="AEGIS_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    dev_mode: bool = Field(default=False, description="Allows auth off and placeholder secrets; announced loudly.")
    auth_disabled: bool = Field(default=False, description="Only honoured in dev mode.")
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AEGIS_REDIS_URL", "REDIS_URL", "redis_url")
    )
    redis_prefix: str = "aegis"
    # Per-operation timeout: a dead or starved Redis must fall into `fail_mode` fast, but a
    # timeout shorter than a loaded host's scheduling delay turns a healthy Redis into an outage.
    redis_timeout_s: float = Field(default=0.5, gt=0, le=30)
    # What happens when the shared store (Redis) or the audit sink is unreachable.
    fail_mode: FailMode = "open"
    state_dir: str = Field(default=".aegis", description="Embedded-store file and default audit log.")
    key_pepper: SecretStr | None = Field(default=None, description="HMAC key mixed into API-key digests.")
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rbac: RBACSettings = Field(default_factory=RBACSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    input_limits: InputLimitSettings = Field(default_factory=InputLimitSettings)
    injection: InjectionSettings = Field(default_factory=InjectionSettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)

    @model_validator(mode="after")
    def _secure_unless_dev(self) -> SecuritySettings:
        if self.dev_mode:
            return self
        if self.auth_disabled:
            raise ValueError("auth_disabled=true requires dev_mode=true (AEGIS_DEV_MODE=1)")
        if self.key_pepper is not None and self.key_pepper.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("key_pepper is a placeholder value; set a random secret or use dev_mode")
        if not self.auth.api_keys_enabled and self.auth.oidc is None:
            raise ValueError("auth: api_keys_enabled=false and no oidc issuer leaves no way to log in")
        return self

    @property
    def state_path(self) -> Path:
        """The state directory as a Path."""
        return Path(self.state_dir)

    def embedded_store_path(self) -> Path:
        """File the embedded store persists API-key records to (shared by the CLI and the cluster)."""
        return self.state_path / "store.json"

    def live_digest(self) -> str:
        """A short digest of the live policy (`LIVE_SECURITY_FIELDS`): the audit's `policy_version`."""
        live = self.model_dump(mode="json", include=live_security_fields())
        return hashlib.sha256(json.dumps(live, sort_keys=True).encode()).hexdigest()[:12]

    def audit_jsonl_path(self) -> Path:
        """Where the JSON Lines audit sink appends."""
        return Path(self.audit.jsonl_path) if self.audit.jsonl_path else self.state_path / "audit.jsonl"


def load_security_settings(**overrides: object) -> SecuritySettings:
    """Build settings from the environment plus overrides, raising ConfigError that names the field.

    Raises:
        common.errors.ConfigError: when any field is invalid.
    """
    from pydantic import ValidationError

    from common.errors import ConfigError

    try:
        return SecuritySettings(**overrides)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            parts.append(f"{field}: {err['msg']}")
        raise ConfigError("invalid security settings: " + "; ".join(parts)) from None


# What running ingress replicas take through `user_config` and `reconfigure()`: policy and limits,
# which an operator changes in an incident (block -> flag, a tenant's rate) and which need no
# model load. Everything else (auth, keys, the store, audit sinks, the classifier and its
# threshold, which is trained with it) is read at start-up: changing it restarts the replicas.
LIVE_SECURITY_FIELDS: dict[str, tuple[str, ...] | None] = {
    "rate_limit": None,  # None: the whole section
    "input_limits": None,
    "redaction": None,
    "injection": ("action", "route_actions", "tenant_actions", "max_scan_chars",
                  "templates", "known_templates", "tenant_templates"),
}


def overlay_live_security(security: dict, overlay: dict) -> dict:
    """`security` (a `security:` mapping) with `overlay` merged in: mappings key by key, at any
    depth, anything else (a number, a list, null) replacing what was there.

    This is how the Ingress's `user_config: {security: ...}` applies on top of `args.security`, so
    an operator writes only what changes (`{injection: {tenant_actions: {acme: flag}}}`).

    In a map keyed by name (a tenant, route, role or template: `_named_maps`), `null` removes the
    entry, as in a JSON merge patch (RFC 7386): `{injection: {templates: {old_rag: null}}}` drops a
    template that `args` registers, `{tenant_actions: {acme: null}}` gives acme the default action
    again. No such map takes null as a value, so nothing else could be meant. Elsewhere null stays a
    value: `rate_limit.key_requests: null` means no limit.

    Raises:
        ValueError: `overlay` names a field that is not live (`LIVE_SECURITY_FIELDS`).
    """
    for section, value in overlay.items():
        if section not in LIVE_SECURITY_FIELDS:
            raise ValueError(f"security.{section} cannot change on running replicas; live: {sorted(LIVE_SECURITY_FIELDS)}")
        fields = LIVE_SECURITY_FIELDS[section]
        if fields is not None:
            if not isinstance(value, dict):
                raise ValueError(f"security.{section} must be a mapping, got {type(value).__name__}")
            extra = sorted(set(value) - set(fields))
            if extra:
                raise ValueError(f"security.{section}.{extra[0]} cannot change on running replicas; live: {list(fields)}")
    return _deep_merge(security, overlay, _named_maps())


def _named_maps() -> set[tuple[str, ...]]:
    """(section, field) of each live field that is a map keyed by name (`dict[str, ...]`)."""
    maps = set()
    for section, fields in LIVE_SECURITY_FIELDS.items():
        model = SecuritySettings.model_fields[section].annotation
        maps |= {(section, name) for name, field in model.model_fields.items()
                 if get_origin(field.annotation) is dict and (fields is None or name in fields)}
    return maps


def _deep_merge(base: dict, overlay: dict, named_maps: set[tuple[str, ...]], path: tuple[str, ...] = ()) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if value is None and path in named_maps:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key, {}), dict):
            # A map `args` leaves out is merged into an empty one, so a null in it removes nothing.
            merged[key] = _deep_merge(merged.get(key, {}), value, named_maps, (*path, key))
        else:
            merged[key] = value
    return merged


def live_security_fields() -> dict:
    """`LIVE_SECURITY_FIELDS` as a pydantic `include` / `exclude` argument."""
    return {section: True if fields is None else set(fields) for section, fields in LIVE_SECURITY_FIELDS.items()}
