"""Layered prompt-injection scanning (normalise → heuristics → classifier) and its block/flag/off policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from security.guardrails.classifier import EmbeddingHeadClassifier, HFSequenceClassifier, InjectionClassifier, SentenceEncoder
from security.guardrails.heuristics import scan_heuristics
from security.guardrails.normalize import normalize
from security.guardrails.prompt_templates import PromptTemplate, compile_templates, split_templates
from security.settings import InjectionAction, InjectionSettings
from common.errors import ContentBlocked, PayloadTooLarge

# Roles whose content an attacker controls: the user, and tool/function results (indirect
# injection arrives through retrieved documents). System and assistant turns are the caller's own.
SCANNED_ROLES = frozenset({"user", "tool", "function"})


@dataclass(frozen=True)
class ScanResult:
    """Outcome of scanning one input.

    Attributes:
        verdict: `injection` or `clean`.
        score: 1.0 for a strong heuristic hit, else the classifier probability (0 without one).
        reasons: rule families that fired (plus `classifier` when the model decided).
        layer: which layer decided: `heuristics`, `classifier` or `none`.
        templates: the registered templates whose slots were scanned instead of the whole text.
    """

    verdict: Literal["injection", "clean"]
    score: float
    reasons: tuple[str, ...] = ()
    layer: str = "none"
    templates: tuple[str, ...] = ()

    @property
    def is_injection(self) -> bool:
        return self.verdict == "injection"


CLEAN = ScanResult("clean", 0.0)


def build_classifier(settings: InjectionSettings) -> InjectionClassifier | None:
    """The configured classifier (loads model weights: call from a deployment's __init__)."""
    if settings.classifier == "none":
        return None
    if settings.classifier == "hf_sequence":
        return HFSequenceClassifier(settings.hf_model or "", settings.hf_positive_label, settings.threshold or 0.5, settings.device)
    encoder = SentenceEncoder(settings.encoder_path, device=settings.device, quantization=settings.encoder_quantization,
                              cache_dir=settings.encoder_cache_dir)
    return EmbeddingHeadClassifier(encoder, settings.head_path, settings.threshold)


class PromptScanner:
    """Scans user-controlled text for prompt injection and applies the per-route/tenant policy.

    Args:
        settings: policy and scan limits.
        classifier: learned layer; None runs heuristics only.
    """

    def __init__(self, settings: InjectionSettings, classifier: InjectionClassifier | None = None) -> None:
        self._s = settings
        self.classifier = classifier
        every, per_tenant = settings.all_templates(), settings.tenant_template_sets()
        compiled = compile_templates({**every, **{n: t for chosen in per_tenant.values() for n, t in chosen.items()}})
        # Per-tenant tuples built once: templates_for runs on every request.
        self._every_template = tuple(compiled[n] for n in every)
        self._tenant_templates = {tenant: tuple(compiled[n] for n in chosen) for tenant, chosen in per_tenant.items()}

    @classmethod
    def from_settings(cls, settings: InjectionSettings) -> PromptScanner:
        return cls(settings, build_classifier(settings))

    def scan(self, text: str, param: str | None = "messages") -> ScanResult:
        """Scan one text (see `scan_texts`)."""
        return self.scan_texts([text], param)

    def templates_for(self, tenant: str | None) -> tuple[PromptTemplate, ...]:
        """The templates `tenant` may fill (its `injection.tenant_templates` entry, else all registered)."""
        return self._tenant_templates.get(tenant, self._every_template)

    def scan_texts(self, texts: Iterable[str], param: str | None = "messages",
                   templates: Sequence[PromptTemplate] = ()) -> ScanResult:
        """Scan several texts (e.g. all user turns) as one input; the worst one decides.

        Every character is scanned, except the literal text of a registered template that a text
        fills: the heuristics run over each whole text (or slot value) and its decoded payloads,
        the classifier over overlapping token windows of them.

        Args:
            texts: the attacker-controllable texts of one request.
            param: the request field they came from, named in the error when they are too long.
            templates: registered templates (see `templates_for`); a text that fills one is
                scanned as its slot values.

        Raises:
            PayloadTooLarge: 413, code `scan_limit_exceeded`, when the texts together are longer
                than `max_scan_chars`, as sent or after Unicode normalisation. Nothing is cut to
                fit: an unscanned middle is where a payload would hide.
        """
        return self._scan(list(texts), [], param, templates)

    def _scan(self, templated: list[str], plain: list[str], param: str | None,
              templates: Sequence[PromptTemplate]) -> ScanResult:
        """Scan `templated` (texts that may fill one of `templates`) and `plain` together."""
        templated, plain = [t for t in templated if t and t.strip()], [t for t in plain if t and t.strip()]
        self._check_size(sum(map(len, templated + plain)), param)
        texts, matched = split_templates(templated, templates)
        texts = [t for t in texts + plain if t.strip()]
        normalized = [normalize(t) for t in texts]
        # NFKC can expand a character up to 18-fold ("\ufdfa"): bound the work, not just the request.
        self._check_size(sum(len(n.text) for n in normalized), param, " after Unicode normalisation")
        if not normalized:
            return ScanResult("clean", 0.0, templates=tuple(matched))
        reasons: set[str] = set()
        weak = False
        results = []
        for norm in normalized:
            result = scan_heuristics(norm)
            if result.strong:
                return ScanResult("injection", 1.0, result.reasons, "heuristics", tuple(matched))
            weak = weak or bool(result.reasons)
            reasons |= set(result.reasons)
            results.append(result)
        if self.classifier is None:
            return ScanResult("clean", 0.5 if weak else 0.0, tuple(sorted(reasons)), "heuristics" if weak else "none",
                              tuple(matched))
        chunks: list[str] = []
        features: list[list[float]] = []
        for norm, result in zip(normalized, results):
            chunks += norm.classifier_chunks
            features += [result.features()] * (len(chunks) - len(features))  # weak evidence anywhere counts for each part
        score = max(self.classifier.score(chunks, features))
        if score >= self.classifier.threshold:
            return ScanResult("injection", score, tuple(sorted(reasons | {"classifier"})), "classifier", tuple(matched))
        return ScanResult("clean", score, tuple(sorted(reasons)), "classifier", tuple(matched))

    def _check_size(self, chars: int, param: str | None, how: str = "") -> None:
        limit = self._s.max_scan_chars
        if chars > limit:
            raise PayloadTooLarge(
                f"Input is {chars} characters{how}; the guardrail scans at most {limit} characters "
                "(injection.max_scan_chars).",
                param=param,
                code="scan_limit_exceeded",
            )

    def scan_messages(self, messages: list[dict], templates: Sequence[PromptTemplate] = ()) -> ScanResult:
        """Scan the attacker-controllable turns of an OpenAI `messages` list (see `scan_texts`).

        Content may be a string or a list of parts (`{"type": "text", "text": ...}`). `templates`
        apply to user turns only: tool and function results are not filled from the caller's
        templates.
        """
        user: list[str] = []
        other: list[str] = []
        for message in messages:
            role = message.get("role")
            if role not in SCANNED_ROLES:
                continue
            texts = user if role == "user" else other
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return self._scan(user, other, "messages", templates)

    def action_for(self, route: str, tenant: str | None) -> InjectionAction:
        """Tenant setting wins over route setting, which wins over the default."""
        if tenant is not None and tenant in self._s.tenant_actions:
            return self._s.tenant_actions[tenant]
        return self._s.route_actions.get(route, self._s.action)

    def enforce(self, result: ScanResult, action: InjectionAction) -> bool:
        """Apply the policy: raise on `block`, return True when the audit should flag it.

        Raises:
            ContentBlocked: injection found and the action is `block` (400, code `prompt_injection`).
        """
        if action == "off" or not result.is_injection:
            return False
        if action == "block":
            why = ", ".join(result.reasons) or "classifier"
            raise ContentBlocked(
                f"Request blocked by the input guardrail: possible prompt injection ({why}).",
                param="messages",
                code="prompt_injection",
            )
        return True
