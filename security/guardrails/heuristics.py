"""Regex heuristics for prompt injection and jailbreaks, grouped by attack family.

Families follow the literature the corpus cites: goal hijacking and prompt leaking (Perez &
Ribeiro 2022), indirect injection in retrieved content (Greshake et al. 2023), role-play /
privilege-escalation jailbreaks (Liu et al. 2023, Shen et al. 2023 "Do Anything Now"), and
encoded or obfuscated payloads (Wei et al. 2023 "Jailbroken").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from security.guardrails.normalize import Normalized

_OBJ = r"(?:instructions?|rules|directions|guidelines|prompts?|directives|commands|context|constraints|programming|orders|policies|restrictions|system prompt|guardrails)"
_ANY = r"(?:all|any|every|each|the|your|my|these|those|its)"
_PRIOR = r"(?:previous|prior|preceding|above|earlier|former|original|initial|old|existing|given|system|safety|developer|default)"


@dataclass(frozen=True)
class Rule:
    """One pattern; `strong` rules alone are enough to call the input an injection."""

    reason: str
    pattern: re.Pattern[str]
    strong: bool = True


def _r(reason: str, regex: str, strong: bool = True) -> Rule:
    return Rule(reason, re.compile(regex, re.IGNORECASE | re.DOTALL), strong)


RULES: tuple[Rule, ...] = (
    # Goal hijacking: "ignore the previous instructions and ..."
    _r("instruction_override", rf"\b(?:ignore|disregard|forget|override|bypass|skip|neglect|abandon|drop|discard|overlook|set aside|throw out|pay no attention to|do not (?:follow|obey|listen to))\b.{{0,40}}?\b(?:{_ANY}\s+)?(?:(?:{_PRIOR}|above|previous)\s+)(?:\w+\s+){{0,2}}?{_OBJ}"),
    _r("instruction_override", rf"\b(?:ignore|disregard|forget|override|bypass|discard)\s+{_ANY}\s+(?:\w+\s+)?{_OBJ}\b"),
    _r("instruction_override", r"\b(?:ignore|disregard|forget)\s+(?:everything|all(?: of it| that)?|what(?:ever)? (?:you were|i) (?:told|said))\b.{0,30}\b(?:before|above|earlier|previously|so far|up to now)"),
    _r("instruction_override", r"\b(?:new|updated|revised|real|true|actual)\s+(?:system\s+)?instructions?\s*(?::|follow|are|from now)"),
    _r("instruction_override", r"\bfrom now on,?\s+(?:you|u)\s+(?:will|must|shall|are|have to|should)\b.{0,60}\b(?:ignore|no longer|not|without|only|never|unrestricted|unfiltered|respond)"),
    _r("instruction_override", r"\b(?:your|the)\s+(?:previous|prior|original|old)\s+(?:instructions?|rules|prompt)\s+(?:are|were|is|have been)\s+(?:void|cancel+ed|obsolete|revoked|replaced|no longer|null|outdated|wrong)"),
    _r("instruction_override", r"\bstop\s+(?:being|acting as)\s+(?:an?\s+)?(?:assistant|ai|chatbot|helpful)\b.{0,40}\b(?:instead|and)\b"),
    # Prompt leaking: "print your system prompt", "repeat the text above".
    _r("system_prompt_extraction", r"\b(?:reveal|show|print|repeat|output|display|leak|dump|give me|tell me|share|disclose|write out|spell out|recite|list|return|echo|expose|what (?:is|are|was|were))\b.{0,40}?\b(?:your|the|its|my)\s+(?:\w+\s+){0,2}?(?:system|initial|hidden|original|secret|internal|pre-?prompt|developer|confidential|starting|first)\s+(?:prompt|instructions?|message|rules|directives|guidelines)"),
    _r("system_prompt_extraction", r"\b(?:repeat|print|output|copy|reproduce|recite|echo)\s+(?:back\s+)?(?:everything|all|the (?:text|words|content|message)s?|all the words)\s+(?:above|before|preceding|prior|written above|that came before)"),
    _r("system_prompt_extraction", r"\bwhat\s+(?:were|are)\s+you\s+(?:told|instructed|programmed)\s+(?:to do\s+)?(?:before|at the start|initially|earlier|originally)"),
    _r("system_prompt_extraction", r"\b(?:begin|start) your (?:reply|response|answer) with\b.{0,40}\b(?:system prompt|instructions|you are)"),
    # Role-play and privilege-escalation jailbreaks.
    _r("roleplay_jailbreak", r"\b(?:do anything now|dan mode|\bdan\b.{0,30}\b(?:jailbreak|anything|mode)|developer mode (?:enabled|on|output|activated)|jailbreak(?:ed)? mode|god mode|sudo mode|unrestricted mode|opposite mode|evil (?:mode|confidant|twin)|aim mode|anti-?dan|betterdan|stan mode|dude mode)\b"),
    _r("roleplay_jailbreak", r"\b(?:pretend|imagine|act|behave|roleplay|role-play|play the role|you are now|you're now|from now on you are|become|simulate)\b.{0,80}\b(?:no|without|free (?:of|from)|not bound by|ignor\w+|any)\s+(?:\w+\s+){0,2}(?:restrictions|rules|filters|limits|limitations|guidelines|censorship|ethics|morals|moral|policies|safeguards|content polic\w+|boundaries)"),
    _r("roleplay_jailbreak", r"\b(?:you are|you're)\s+(?:no longer|not)\s+(?:an?\s+)?(?:ai|assistant|language model|chatbot|bound|restricted|limited|claude|chatgpt|gpt)\b"),
    _r("roleplay_jailbreak", r"\b(?:unfiltered|uncensored|unrestricted|unaligned|amoral|unethical)\s+(?:ai|assistant|model|chatbot|version|persona|character|mode|llm)\b"),
    _r("roleplay_jailbreak", r"\b(?:never|don't|do not|will not|won't)\s+(?:refuse|decline|say (?:no|you can't|sorry|i can't)|add (?:warnings|disclaimers))\b.{0,60}\b(?:any|no matter|regardless|whatever|request|question)"),
    _r("roleplay_jailbreak", r"\b(?:stay in character|remain in character|break character)\b", strong=False),
    # Role / delimiter tags that pretend to be the system turn.
    _r("role_tag_injection", r"(?:<\|?im_start\|?>\s*system|<\|system\|>|\[/?(?:system|inst)\]|<</?sys>>|###\s*(?:system|instruction)s?\s*:|^\s*system\s*:|\n\s*system\s*:|\[system\]\(#)"),
    # Indirect injection aimed at the model reading retrieved content.
    _r("indirect_injection", r"\b(?:if you are|to|attention|note to|message (?:for|to)|instructions? (?:for|to))\s+(?:an?\s+|the\s+)?(?:ai|llm|language model|assistant|chatbot|gpt|bot)\b.{0,30}\b(?:reading|processing|summari[sz]ing|parsing|that reads|ignore|you must|you should|do not|instead)"),
    _r("indirect_injection", r"!\[[^\]]*\]\(https?://[^)]*(?:\?|&)[^)]*=\s*(?:\{|\$|<|%7b)"),
    _r("indirect_injection", r"<!--.{0,200}\b(?:ai|assistant|llm|model)\b.{0,200}-->"),
    # Weak signals: common in injections, also in benign text; only count with other evidence.
    _r("override_vocabulary", r"\b(?:ignore|disregard|override|bypass)\b.{0,40}\b(?:instructions?|rules|prompt|filters?|safety)\b", strong=False),
    _r("prefix_injection", r"\b(?:start|begin) (?:your (?:reply|response|answer)|by saying|with)\s*(?:with\s*)?[\"'“](?:sure|absolutely|of course|certainly)", strong=False),
)


@dataclass(frozen=True)
class HeuristicResult:
    """Reasons found and whether any strong rule fired."""

    reasons: tuple[str, ...]
    strong: bool

    @property
    def score(self) -> float:
        """1.0 for a strong hit, 0.5 for weak-only evidence, else 0."""
        return 1.0 if self.strong else (0.5 if self.reasons else 0.0)


def _match(text: str) -> tuple[set[str], bool]:
    reasons: set[str] = set()
    strong = False
    for rule in RULES:
        if rule.pattern.search(text):
            reasons.add(rule.reason)
            strong = strong or rule.strong
    return reasons, strong


def scan_heuristics(norm: Normalized) -> HeuristicResult:
    """Run every rule on every view of a normalised input.

    A hit that appears only in a decoded, rot13 or de-spaced view adds `encoded_payload`; a hit
    on text that needed homoglyph or zero-width folding adds `obfuscation`.
    """
    reasons, strong = _match(norm.text)
    for name, view in norm.views + norm.decoded:
        view_reasons, view_strong = _match(view)
        if view_strong:
            strong = True
            reasons |= view_reasons
            if name != "leet":
                reasons.add("encoded_payload")
    if strong and norm.flags & {"homoglyph", "zero_width"}:
        reasons.add("obfuscation")
    return HeuristicResult(tuple(sorted(reasons)), strong)
