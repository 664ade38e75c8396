"""Builds every security component from one settings object: what the ingress holds."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import cached_property

from security.audit import AuditLogger, JsonlSink, RedisStreamSink
from security.authn import Authenticator
from security.counters import Counters
from security.guardrails.limits import InputLimits
from security.guardrails.scanner import PromptScanner, build_classifier
from security.keys import KeyStore
from security.oidc import OIDCVerifier
from security.ratelimit import RateLimiter
from security.rbac import Policy
from security.redaction import Redactor
from security.settings import SecuritySettings, live_security_fields
from security.store.base import SharedStore
from security.store.redis_store import RedisStore

log = logging.getLogger(__name__)


@dataclass
class SecurityLayer:
    """The components, in request order: authenticator → policy → limits → limiter → scanner →
    (model) → redactor → audit."""

    settings: SecuritySettings
    store: SharedStore
    counters: Counters
    keys: KeyStore
    authenticator: Authenticator
    policy: Policy
    input_limits: InputLimits
    limiter: RateLimiter
    scanner: PromptScanner
    audit: AuditLogger

    @cached_property
    def policy_version(self) -> str:
        """Digest of the live policy this layer enforces (`retune` makes a new layer)."""
        return self.settings.live_digest()

    def redactor(self, tenant: str | None) -> Redactor:
        """The redactor for a tenant's configured types."""
        return Redactor.for_tenant(self.settings.redaction, tenant)


def build_security(settings: SecuritySettings, store: SharedStore, load_classifier: bool = True) -> SecurityLayer:
    """Wire the components (loads the classifier weights: call in a deployment's __init__).

    Args:
        settings: validated settings.
        store: a `RedisStore`, an `EmbeddedStore`, or a proxy to one hosted in a Ray actor.
        load_classifier: False runs injection heuristics only (fast start, tests).
    """
    counters = Counters()
    policy = Policy(settings.rbac)
    pepper = settings.key_pepper.get_secret_value().encode() if settings.key_pepper else b""
    keys = KeyStore(store, pepper, policy.roles)
    oidc = OIDCVerifier(settings.auth.oidc, policy.roles) if settings.auth.oidc else None
    authenticator = Authenticator(
        keys if settings.auth.api_keys_enabled else None, oidc, settings.dev_mode and settings.auth_disabled, counters
    )
    classifier = build_classifier(settings.injection) if load_classifier and settings.injection.needs_classifier else None
    sinks = []
    if settings.audit.enabled:
        sinks.append(JsonlSink(settings.audit_jsonl_path()))
        if isinstance(store, RedisStore):
            sinks.append(RedisStreamSink(store, settings.audit.redis_stream, settings.audit.redis_stream_maxlen))
    if settings.dev_mode:
        log.warning("AEGIS DEV MODE: placeholder secrets allowed%s", "; AUTHENTICATION IS OFF" if settings.auth_disabled else "")
    return SecurityLayer(
        settings=settings,
        store=store,
        counters=counters,
        keys=keys,
        authenticator=authenticator,
        policy=policy,
        input_limits=InputLimits(settings.input_limits),
        limiter=RateLimiter(store, settings.rate_limit, settings.fail_mode, counters),
        scanner=PromptScanner(settings.injection, classifier),
        audit=AuditLogger(sinks, settings.fail_mode, settings.audit.include_prompt_text, counters),
    )


def retune(layer: SecurityLayer, settings: SecuritySettings, load_classifier: bool = True) -> SecurityLayer:
    """`layer` with `settings`' live policy (`LIVE_SECURITY_FIELDS`): new limits, limiter, scanner and
    redaction over the same store, keys, authenticator, audit and classifier.

    The limiter's counters live in the store, so a client's spent budget carries over and a new
    rate applies to it at once. The classifier is loaded only if the old policy had every action
    `off` and the new one scans (call this off the event loop).

    Raises:
        ValueError: `settings` differs from the layer's in a field that is not live.
    """
    exclude = live_security_fields()
    if settings.model_dump(exclude=exclude) != layer.settings.model_dump(exclude=exclude):
        raise ValueError("only the live security fields (LIVE_SECURITY_FIELDS) can change on a running layer")
    classifier = layer.scanner.classifier
    if classifier is None and load_classifier and settings.injection.needs_classifier:
        classifier = build_classifier(settings.injection)
    return replace(
        layer,
        settings=settings,
        input_limits=InputLimits(settings.input_limits),
        limiter=layer.limiter.with_limits(settings.rate_limit),
        scanner=PromptScanner(settings.injection, classifier),
    )
