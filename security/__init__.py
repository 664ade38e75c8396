"""Aegis security layer: auth, RBAC, shared rate limits, guardrails, redaction and audit (no Ray).

Wiring for the ingress (one `SecurityLayer` per replica, built in `__init__`, never at import):

    settings = load_security_settings()                       # AEGIS_* env; ConfigError names the field
    store = RedisStore(url) if settings.redis_url else <proxy to a named detached actor hosting
            EmbeddedStore(settings.embedded_store_path())>    # same async methods, picklable args
    sec = build_security(settings, store)
    if settings.auth.bootstrap_admin_key and (made := await sec.keys.bootstrap_admin()):
        print once: made[1]                                   # only the hash is stored

Per request, in order (each raises an `common.errors.AegisError` with its status):

    sec.input_limits.check_body(len(raw_body))                        # 413
    identity = await sec.authenticator.authenticate(request.headers.get("authorization"))  # 401/503
    sec.policy.authorize(identity, route, body.model)                 # 403
    sec.input_limits.check_messages(len(messages)); sec.input_limits.check_prompt_tokens(n)  # 413
    decision = await sec.limiter.admit(identity, prompt_tokens=n)     # 429 (+headers) / 503
    action = sec.scanner.action_for(route, identity.tenant)           # block | flag | off
    if action != "off":
        templates = sec.scanner.templates_for(identity.tenant)        # registered RAG templates
        scan = sec.scanner.scan_messages(messages, templates)         # CPU-bound: run in a thread
        flagged = sec.scanner.enforce(scan, action)                   # 400 code=prompt_injection
    redactor = sec.redactor(identity.tenant)                          # output (and input if configured)
    text, counts = redactor.redact(answer)  |  s = redactor.stream(); s.feed(delta) ... s.flush()
    await sec.limiter.charge_tokens(identity, completion_tokens)      # after the response, never raises
    await sec.audit.log(AuditRecord(...))                             # 503 when fail-closed sink fails
    response.headers.update(decision.headers())                       # RateLimit-* on every response

`sec.counters.add_listener(fn(name, amount))` maps counters onto Ray metrics.
"""

from security.audit import AuditLogger, AuditRecord, JsonlSink, RedisStreamSink
from security.authn import Authenticator
from security.counters import Counters
from security.guardrails.limits import InputLimits, estimate_tokens
from security.guardrails.scanner import PromptScanner, ScanResult
from security.identity import Identity
from security.keys import KeyStore
from security.layer import SecurityLayer, build_security, retune
from security.oidc import OIDCVerifier
from security.ratelimit import RateDecision, RateLimiter
from security.rbac import Policy
from security.redaction import Redactor, StreamingRedactor
from security.settings import SecuritySettings, load_security_settings
from security.store import Bucket, BucketResult, EmbeddedStore, RedisStore, SharedStore, StoreUnavailable, build_store

__all__ = [
    "AuditLogger", "AuditRecord", "Authenticator", "Bucket", "BucketResult", "Counters", "EmbeddedStore",
    "Identity", "InputLimits", "JsonlSink", "KeyStore", "OIDCVerifier", "Policy", "PromptScanner",
    "RateDecision", "RateLimiter", "RedisStore", "RedisStreamSink", "Redactor", "ScanResult",
    "SecurityLayer", "SecuritySettings", "SharedStore", "StoreUnavailable", "StreamingRedactor",
    "build_security", "build_store", "estimate_tokens", "load_security_settings", "retune",
]
