"""The security layer as request-pipeline pieces: one check, one response filter, one finisher.

    check:   authenticate → authorize (route, model) → input limits → rate-limit admission
             → prompt-injection scan (block 400 / flag) → input redaction (when configured)
    filter:  a streaming PII/secret redactor per choice
    finish:  charge generated tokens → one audit record (errors included)

`security/` stays Ray-free; this module only adapts it to `serve_app.pipeline` and builds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from security import AuditRecord, SecurityLayer, SecuritySettings, build_security, estimate_tokens, retune
from security.store import SharedStore, StoreUnavailable
from common.errors import ContentBlocked, PayloadTooLarge, RateLimited
from serve_app.pipeline import RequestContext, iter_strings

logger = logging.getLogger("ray.serve")

# Routes whose text reaches a generative model: the prompt-injection scan runs on these by
# default. Other routes (embeddings) are scanned only when `injection.route_actions` names them.
GENERATION_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})
# The `injection.route_actions` key whose action applies to tool outputs (default: `action`).
TOOL_OUTPUT_POLICY = "tool_output"
BOOTSTRAP_KEY_FILE = "bootstrap-admin-key"
_DECISIONS = {401: "unauthenticated", 403: "forbidden", 413: "too_large", 429: "rate_limited"}


def _texts(body: Any) -> tuple[list[dict[str, str]], list[str]]:
    """(chat messages as role/content dicts, other input texts) of a request body."""
    messages = getattr(body, "messages", None)
    if messages is not None:
        return [{"role": m.role, "content": m.text()} for m in messages], []
    # Only the OpenAI bodies have these methods (a workflow body's `inputs` is a plain dict).
    if callable(getattr(body, "prompts", None)):
        return [], body.prompts()
    if callable(getattr(body, "inputs", None)):
        return [], body.inputs()
    return [], []


def _text_field(body: Any) -> str:
    """The request field `_texts` read (named in a scan_limit_exceeded error)."""
    if getattr(body, "messages", None) is not None:
        return "messages"
    return "prompt" if callable(getattr(body, "prompts", None)) else "input"


class SecurityGuard:
    """`RequestCheck`, `ResponseFilter` and `Finisher` over one `SecurityLayer`.

    Args:
        layer: the replica's security layer (built by `build_guard`).
    """

    def __init__(self, layer: SecurityLayer) -> None:
        self.layer = layer

    @property
    def settings(self) -> SecuritySettings:
        return self.layer.settings

    def retune(self, settings: SecuritySettings) -> None:
        """Apply new live policy (`security.retune`; loads the classifier if it was never needed:
        call off the event loop). One assignment, so a request sees the old layer or the new one."""
        self.layer = retune(self.layer, settings)

    # -- RequestCheck ------------------------------------------------------------------------

    async def authenticate(self, ctx: RequestContext) -> None:
        """Set `ctx.identity` from the Authorization header, or raise 401 (503 if the store is down)."""
        ctx.identity = await self.layer.authenticator.authenticate(ctx.headers.get("authorization"))

    async def check(self, ctx: RequestContext) -> None:
        sec = self.layer
        # The policy this request is decided by, even if a reconfigure lands before it finishes.
        ctx.annotations["policy_version"] = sec.policy_version
        await self.authenticate(ctx)
        identity = ctx.identity
        sec.policy.authorize(identity, ctx.route, ctx.model)
        messages, texts = _texts(ctx.body)
        if messages:
            sec.input_limits.check_messages(len(messages))
        # ~4 chars a token plus a few per message for the chat template: no tokenizer here.
        estimate = sum(estimate_tokens(m["content"]) + 4 for m in messages) + sum(map(estimate_tokens, texts))
        sec.input_limits.check_prompt_tokens(estimate)
        ctx.annotations["estimated_prompt_tokens"] = estimate
        try:
            decision = await sec.limiter.admit(identity, prompt_tokens=estimate)
        except RateLimited as refused:
            if refused.degraded:
                ctx.annotations["degraded"] = True
            raise
        ctx.response_headers.update(decision.headers())
        if decision.degraded:
            ctx.annotations["degraded"] = True
        await self._scan(ctx, messages, texts, _text_field(ctx.body))
        if self.settings.redaction.input_enabled:
            self._redact_input(ctx)
        if self.settings.audit.include_prompt_text:
            ctx.annotations["prompt_text"] = "\n".join([m["content"] for m in messages] + texts)

    async def scan_model_inputs(self, ctx: RequestContext, texts: list[str], param: str = "arguments") -> None:
        """Scan caller text that a tool or workflow will put in front of a model (direct injection).

        Same policy as the chat routes: `injection.route_actions[<route template>]`, else the
        tenant's or the default action.

        Args:
            ctx: the request.
            texts: the caller's strings that reach a model.
            param: the request field they are in (`arguments`, or a workflow's `inputs`).

        Raises:
            ContentBlocked: 400, code `prompt_injection`, when the policy blocks.
            PayloadTooLarge: 413, code `scan_limit_exceeded`, when they are longer together
                than `injection.max_scan_chars`.
        """
        await self._scan(ctx, [], [t for t in texts if t], param, always=True)

    async def _scan(self, ctx: RequestContext, messages: list[dict[str, str]], texts: list[str],
                    param: str | None, always: bool = False) -> None:
        scanner = self.layer.scanner
        configured = ctx.route in self.settings.injection.route_actions
        if ctx.route not in GENERATION_ROUTES and not configured and not always:
            return
        action = scanner.action_for(ctx.route, ctx.identity.tenant)
        if action == "off" or not (messages or texts):
            return
        # The classifier is CPU-bound (tens of ms): keep the replica's event loop free.
        # Over injection.max_scan_chars the scanner raises PayloadTooLarge (413): the ingress
        # answers it in the error envelope and audits it as too_large.
        # Registered templates are for chat turns and completion prompts, not tool or workflow inputs.
        templates = () if always else scanner.templates_for(ctx.identity.tenant)
        if messages:
            result = await asyncio.to_thread(scanner.scan_messages, messages, templates)
        else:
            result = await asyncio.to_thread(scanner.scan_texts, texts, param, templates)
        ctx.annotations["injection_score"] = round(result.score, 4)
        if result.templates:
            ctx.annotations["prompt_templates"] = sorted(set(result.templates))
        try:
            flagged = scanner.enforce(result, action)
        except ContentBlocked:
            self.layer.counters.inc("injection_blocked")
            raise
        if flagged:
            self.layer.counters.inc("injection_flagged")
            ctx.annotations["flagged"] = list(result.reasons)

    def _redact_input(self, ctx: RequestContext) -> None:
        redactor = self.layer.redactor(ctx.identity.tenant)
        counts: Counter[str] = Counter()

        def clean(text: str) -> str:
            redacted, found = redactor.redact(text)
            counts.update(found)
            return redacted

        body = ctx.body
        if getattr(body, "messages", None) is not None:
            for message in body.messages:
                if message.content is not None:
                    message.content = clean(message.text())
                for call in message.tool_calls or ():  # earlier calls' arguments are input too
                    call.function.arguments = clean(call.function.arguments)
        elif hasattr(body, "prompt"):
            body.prompt = clean(body.prompt) if isinstance(body.prompt, str) else [clean(p) for p in body.prompt]
        elif hasattr(body, "input"):
            body.input = clean(body.input) if isinstance(body.input, str) else [clean(t) for t in body.input]
        if counts:
            ctx.annotations["input_redacted_types"] = dict(counts)
            for entity, n in counts.items():
                self.layer.counters.inc(f"redacted_input_{entity}", n)

    def visible_models(self, ctx: RequestContext, ids: list[str]) -> list[str]:
        """The model ids this caller's tenant may use (all of them when no allow-list is set)."""
        policy = self.layer.policy
        if ctx.identity is None or policy.has_scope(ctx.identity, "*"):
            return ids
        return [i for i in ids if policy.model_allowed(ctx.identity.tenant, i)]

    # -- tools -------------------------------------------------------------------------------------

    def authorize_tool(self, ctx: RequestContext, tool: str) -> None:
        """Raise 403 unless the caller's role may use `tool` (scope `tool:<name>` or `tool:*`)."""
        self.layer.policy.authorize_tool(ctx.identity, tool)

    def visible_tools(self, ctx: RequestContext, names: list[str]) -> list[str]:
        return [n for n in names if self.layer.policy.may_use_tool(ctx.identity, n)]

    async def inspect_tool_output(self, ctx: RequestContext, tool: str, result: Any,
                                  text_paths: list[str] | None = None) -> dict[str, Any]:
        """Scan a tool's output for indirect prompt injection before anything passes it to a model.

        `text_paths` ("text", "results.*.text") name the fields that carry free text (an empty
        list: none, nothing is scanned); without them (None) every string of three words or more
        is scanned (single words such as a finish reason are not instructions, and the classifier
        is unreliable on them). The scanner reads every character of them, so a payload deep in a
        long page is seen too; an output longer than `injection.max_scan_chars` is refused
        unscanned. The policy is `injection.route_actions["tool_output"]` (else the tenant's or
        the default action): `block` raises, `flag` lets the result through, marked in the answer
        and the audit record.

        Returns:
            `{"injection_score", "flagged", "reasons"}` for the response; empty when scanning is off.

        Raises:
            ContentBlocked: 400, code `indirect_prompt_injection`, when the policy blocks; code
                `scan_limit_exceeded` when the output is too long to scan (whatever the policy
                but `off`).
        """
        scanner = self.layer.scanner
        action = scanner.action_for(TOOL_OUTPUT_POLICY, ctx.identity.tenant if ctx.identity else None)
        found = ([t for path in text_paths for t in _strings_at(result, path.split("."))]
                 if text_paths is not None else [t for t in strings_in(result) if len(t.split()) >= 3])
        if action == "off" or not found:
            return {}
        try:
            scan = await asyncio.to_thread(scanner.scan_texts, found, "result")
        except PayloadTooLarge as too_long:
            # Blocked as a content decision (400, like an injection in an output), not 413: the
            # caller's request was within its limits. Nor 502: the tool worked, and the caller
            # can ask it for less (a smaller page, fewer results). Even `flag` must not pass on
            # what nobody read.
            self.layer.counters.inc("tool_output_blocked")
            ctx.annotations["reason"] = too_long.code
            raise ContentBlocked(f"The output of tool '{tool}' was blocked unscanned. {too_long.message}",
                                 param="result", code=too_long.code) from None
        score = round(scan.score, 4)
        ctx.annotations["injection_score"] = max(score, ctx.annotations.get("injection_score") or 0.0)
        if not scan.is_injection:
            return {"injection_score": score, "flagged": False}
        why = ", ".join(scan.reasons) or "classifier"
        if action == "block":
            self.layer.counters.inc("tool_output_blocked")
            ctx.annotations["reason"] = "indirect_prompt_injection"
            raise ContentBlocked(f"The output of tool '{tool}' was blocked by the guardrail: possible "
                                 f"indirect prompt injection ({why}).", param="result",
                                 code="indirect_prompt_injection")
        self.layer.counters.inc("tool_output_flagged")
        ctx.annotations.setdefault("flagged", []).extend(f"tool_output:{r}" for r in scan.reasons or ("classifier",))
        return {"injection_score": score, "flagged": True, "reasons": list(scan.reasons)}

    def redact_value(self, ctx: RequestContext, value: Any) -> Any:
        """`value` (any JSON) with PII and secrets redacted in every string, when output redaction is on."""
        if not self.settings.redaction.output_enabled:
            return value
        redactor = self.layer.redactor(ctx.identity.tenant if ctx.identity else None)
        counts: Counter[str] = ctx.annotations.setdefault("_value_redactions", Counter())

        def walk(node: Any) -> Any:
            if isinstance(node, str):
                text, found = redactor.redact(node)
                counts.update(found)
                return text
            if isinstance(node, dict):
                return {k: walk(v) for k, v in node.items()}
            if isinstance(node, (list, tuple)):
                return [walk(v) for v in node]
            return node

        return walk(value)

    # -- ResponseFilter ------------------------------------------------------------------------

    def open(self, ctx: RequestContext) -> Any:
        if not self.settings.redaction.output_enabled:
            return None
        stream = self.layer.redactor(ctx.identity.tenant if ctx.identity else None).stream()
        ctx.annotations.setdefault("_redactors", []).append(stream)
        return stream

    # -- Finisher --------------------------------------------------------------------------------

    async def finish(self, ctx: RequestContext, status_code: int) -> None:
        sec = self.layer
        identity = ctx.identity
        redacted: Counter[str] = Counter()
        for stream in ctx.annotations.get("_redactors", ()):
            redacted.update(stream.counts)
        redacted.update(ctx.annotations.get("_value_redactions", {}))
        for entity, n in redacted.items():
            sec.counters.inc(f"redacted_{entity}", n)
        if identity is not None:
            # Admission charged an estimate of the prompt; charge what the model really used.
            extra = max(0, ctx.prompt_tokens - ctx.annotations.get("estimated_prompt_tokens", 0))
            await sec.limiter.charge_tokens(identity, ctx.completion_tokens + extra)
        reason = ctx.annotations.get("reason") or ctx.annotations.get("stream_error")
        if status_code < 400:
            decision = "flagged" if ctx.annotations.get("flagged") else "allowed"
        elif reason in ("prompt_injection", "indirect_prompt_injection") or (
                status_code == 400 and reason == "scan_limit_exceeded"):  # a tool output too long to scan
            decision = "blocked"
        else:
            decision = _DECISIONS.get(status_code, "error")
        if ctx.annotations.get("flagged") and not reason:
            reason = "prompt_injection:" + ",".join(ctx.annotations["flagged"])
        await sec.audit.log(AuditRecord(
            request_id=ctx.request_id, route=ctx.route, decision=decision,
            key_id=getattr(identity, "key_id", None), subject=getattr(identity, "subject", None),
            tenant=getattr(identity, "tenant", None), model=ctx.model, status_code=status_code,
            reason=reason, injection_score=ctx.annotations.get("injection_score"),
            prompt_templates=ctx.annotations.get("prompt_templates"),
            policy_version=ctx.annotations.get("policy_version", sec.policy_version),
            redacted_types={**ctx.annotations.get("input_redacted_types", {}), **redacted},
            prompt_tokens=ctx.prompt_tokens, completion_tokens=ctx.completion_tokens,
            latency_ms=round((time.monotonic() - ctx.started_at) * 1000, 2),
            degraded=bool(ctx.annotations.get("degraded")),
            tool=ctx.annotations.get("tool"), workflow=ctx.annotations.get("workflow"),
            arguments_sha256=ctx.annotations.get("arguments_sha256"),
            prompt_text=ctx.annotations.get("prompt_text")))


def strings_in(value: Any) -> list[str]:
    """Every string inside a JSON value (dicts, lists), depth first."""
    return [text for _, text in iter_strings(value)]


def _strings_at(value: Any, path: list[str]) -> list[str]:
    """The strings at a dotted path of a JSON value; `*` stands for every item of a list."""
    if not path:
        return [value] if isinstance(value, str) else strings_in(value)
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(value, list):
        return [s for item in value for s in _strings_at(item, rest)]
    if isinstance(value, dict) and head in value:
        return _strings_at(value[head], rest)
    return []


def build_guard(settings: SecuritySettings, store: SharedStore) -> SecurityGuard:
    """The replica's guard over `store` (Redis, or the cluster's store actor) and every component.

    Loads the injection classifier: call it from a deployment's constructor, off the event loop.
    """
    return SecurityGuard(build_security(settings, store))


async def bootstrap_admin_key(guard: SecurityGuard) -> Path | None:
    """Create the first admin key when the store holds none; returns the file holding it.

    The plaintext goes to `<state_dir>/bootstrap-admin-key`, created exclusively with mode 0600,
    and nowhere else (not the logs, which Ray keeps on disk). `python -m serve_app serve` prints it
    once and deletes the file; without that CLI, read it once and delete it. Only the key's digest
    is in the store. Every replica may call this at once: the store lets exactly one create it.
    """
    settings = guard.settings
    if not (settings.auth.bootstrap_admin_key and settings.auth.api_keys_enabled) or settings.auth_disabled:
        return None
    try:
        made = await guard.layer.keys.bootstrap_admin()
    except StoreUnavailable as exc:
        logger.error("could not check for API keys (store unavailable: %s); no admin key bootstrapped", exc)
        return None
    if made is None:
        return None
    key_id, plaintext = made
    path = settings.state_path.resolve() / BOOTSTRAP_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (plaintext + "\n").encode())
    finally:
        os.close(fd)
    logger.warning("Created the bootstrap admin API key %s. Its plaintext is in %s (mode 0600) until "
                   "shown: `python -m serve_app serve` prints it once and deletes the file.", key_id, path)
    return path


def take_bootstrap_key(settings: SecuritySettings) -> str | None:
    """Read and delete the bootstrap key file (the CLI's one-time print); None when absent."""
    path = settings.state_path.resolve() / BOOTSTRAP_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return key or None


__all__ = ["SecurityGuard", "bootstrap_admin_key", "build_guard", "strings_in", "take_bootstrap_key"]
