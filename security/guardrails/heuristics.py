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
    _r("instruction_override", rf"\b(?:ignore|disregard|forget|neglect|abandon|discard|overlook|set aside|throw out|never ?mind|pay no attention to|do not (?:follow|obey|listen to))\b.{{0,40}}?\b(?:{_ANY}\s+)?(?:(?:{_PRIOR}|above|previous)\s+)(?:\w+\s+){{0,2}}?{_OBJ}"),
    _r("instruction_override", rf"\b(?:ignore|disregard|forget|discard)\s+{_ANY}\s+(?:\w+\s+)?{_OBJ}\b"),
    # "override" and "bypass" are everyday words in code and CSS ("override the rules set by a class"),
    # so only a possessive or quantified object counts: "override your rules", "bypass all safety filters".
    _r("instruction_override", rf"\b(?:override|bypass|circumvent|disable|turn off|switch off|deactivate)\s+(?:all|any|every|your|its|these)\s+(?:\w+\s+){{0,2}}?(?:{_OBJ}|filters|safeguards|safety (?:features|measures|checks)|content polic\w+|censorship)\b"),
    _r("instruction_override", r"\b(?:ignore|disregard|forget)\s+(?:everything|all(?: of it| that)?|what(?:ever)? you (?:were|have been) (?:told|given|instructed))\b(?!\s+(?:i|we)\s+(?:said|wrote|asked|mentioned|told))(?!\s+about\b).{0,30}\b(?:before|above|earlier|previously|so far|up to now)"),
    _r("instruction_override", r"\b(?:new|updated|revised|real|true|actual)\s+(?:system\s+)?instructions?\s*(?::|follow|are|from now)"),
    _r("instruction_override", r"\bfrom now on,?\s+(?:you|u)\s+(?:will|must|shall|are|have to|should)\b.{0,60}\b(?:ignore|no longer|not|without|only|never|unrestricted|unfiltered|respond)"),
    # "your earlier guidelines are void", "the previous rules are revoked"
    _r("instruction_override", rf"\b(?:your|the|all|any|my)\s+(?:{_PRIOR}|current)\s+(?:\w+\s+)?{_OBJ}\s+(?:are|were|is|have been|has been)\s+(?:now\s+)?(?:void|cancel+ed|obsolete|revoked|replaced|no longer|null|outdated|wrong|lifted|suspended|removed|disabled|invalid|overridden|superseded)"),
    _r("instruction_override", r"\bstop\s+(?:being|acting as)\s+(?:an?\s+)?(?:assistant|ai|chatbot|helpful)\b.{0,40}\b(?:instead|and)\b"),
    # "your new objective overrides all previous ones", "this supersedes your earlier instructions"
    _r("instruction_override", r"\b(?:your|this|my|the)\s+(?:new\s+|real\s+|updated\s+|actual\s+)?(?:objective|task|goal|instructions?|message|prompt|directive|order|command|mission|request)\s+(?:overrides|supersedes|takes precedence over|replaces|cancels)\s+(?:all\s+|any\s+|the\s+|your\s+)*(?:previous|prior|earlier|other|original|above|existing|system)\b"),
    # "the task has changed: ...", "new task: ...", "the real task: ..."
    _r("instruction_override", r"\b(?:the|your)\s+(?:task|objective|goal|instructions?|assignment|mission)\s+(?:has|have)\s+(?:now\s+)?changed\b"),
    _r("instruction_override", r"\b(?:new|real|actual|true|updated|revised)\s+(?:task|objective|goal|mission|directive|priority|assignment)\s*(?::|is to\b|overrides?)"),
    # "ignore the summary task. Instead ...": dropping the stated task and substituting another
    _r("instruction_override", r"\b(?:ignore|disregard|forget|skip|abandon|drop)\s+(?:the|this|that|your|my)\s+(?:\w+\s+)?(?:task|request|question|query|assignment)\b[.,;:!]?\s*(?:and\s+)?(?:instead|rather|the (?:real|new|actual) task|your (?:real|new) task)\b"),
    _r("instruction_override", r"\binstead of (?:doing )?(?:that|this|the (?:above|previous|original) (?:task|request))\b.{0,40}\b(?:print|repeat|output|reveal|say|tell|write|ignore)\b"),
    # Prompt leaking: "print your system prompt", "repeat the text above".
    _r("system_prompt_extraction", r"\b(?:reveal|show|print|repeat|output|display|leak|dump|give me|tell me|share|disclose|write out|spell out|recite|list|return|echo|expose|what (?:is|are|was|were))\b.{0,40}?\b(?:your|the|its|my)\s+(?:\w+\s+){0,2}?(?:system|initial|hidden|original|secret|internal|pre-?prompt|developer|confidential|starting|first)\s+(?:prompt|instructions?|message|rules|directives|guidelines)"),
    _r("system_prompt_extraction", r"\b(?:repeat|print|output|copy|reproduce|recite|echo)\s+(?:back\s+)?(?:everything|all|the (?:text|words|content|message)s?|all the words)\s+(?:above|before|preceding|prior|written above|that came before)"),
    _r("system_prompt_extraction", r"\bwhat\s+(?:were|are)\s+you\s+(?:told|instructed|programmed)\s+(?:to do\s+)?(?:before|at the start|initially|earlier|originally)"),
    _r("system_prompt_extraction", r"\b(?:begin|start) your (?:reply|response|answer) with\b.{0,40}\b(?:system prompt|instructions|you are)"),
    # "spell-check and print the previous instructions", "translate your initial instructions"
    _r("system_prompt_extraction", r"\b(?:print|repeat|output|spell[- ]?check|recite|reveal|show|display|copy|dump|leak|encode|translate|echo)\b.{0,30}?\b(?:the|your|its|all)\s+(?:\w+\s+)?(?:previous|prior|above|preceding|initial|original|earlier|hidden|secret|system|starting|first)\s+(?:instructions?|prompts?|directions|directives|guidelines|system message)\b"),
    # Role-play and privilege-escalation jailbreaks.
    _r("roleplay_jailbreak", r"\b(?:do anything now|dan mode|\bdan\b.{0,30}\b(?:jailbreak|anything|mode)|developer mode (?:enabled|on|output|activated)|jailbreak(?:ed)? mode|god mode|sudo mode|unrestricted mode|opposite mode|evil (?:mode|confidant|twin)|aim mode|anti-?dan|betterdan|stan mode|dude mode)\b"),
    _r("roleplay_jailbreak", r"\b(?:pretend|imagine|act|behave|roleplay|role-play|play the role|you are now|you're now|from now on you are|become|simulate)\b.{0,80}\b(?:no|without|free (?:of|from)|not bound by|ignor\w+|any)\s+(?:\w+\s+){0,2}(?:restrictions|rules|filters|limits|limitations|guidelines|censorship|ethics|morals|moral|policies|safeguards|content polic\w+|boundaries)"),
    _r("roleplay_jailbreak", r"\b(?:you are|you're)\s+(?:no longer|not)\s+(?:an?\s+)?(?:ai|assistant|language model|chatbot|bound|restricted|limited|claude|chatgpt|gpt)\b"),
    _r("roleplay_jailbreak", r"\b(?:unfiltered|uncensored|unrestricted|unaligned|amoral|unethical|jailbroken)\s+(?:ai|assistant|model|chatbot|version|persona|character|mode|llm|bot)\b"),
    # An AI, persona or answer "without any restrictions", "not bound by OpenAI rules", "free from all rules".
    _r("roleplay_jailbreak", r"\b(?:ai|assistant|model|chatbot|bot|llm|persona|gpt|answers?|respond\w*|repl(?:y|ies))\b.{0,40}?\b(?:free (?:of|from)|freed from|broken free of|without|with no|not bound by|unbound by|released from|liberated from|not restricted by|not limited by)\s+(?:all\s+|any\s+|the\s+|its\s+|their\s+|your\s+|openai(?:'s)?\s+|ethical\s+|moral\s+|safety\s+)*(?:restrictions|rules|filters|limits|limitations|censorship|ethics|morals|guidelines|content polic\w+|safeguards|constraints|policies|programming)\b(?!-)"),
    _r("roleplay_jailbreak", r"\b(?:two|both|dual)\s+(?:personas|personalities|responses|answers|modes)\b.{0,80}\b(?:normal|classic|standard|regular)\b.{0,80}\b(?:jailbr\w*|unfiltered|uncensored|unrestricted|dan|evil|developer mode|without (?:any )?(?:restrictions|rules|filters))"),
    # Refusal suppression (Wei et al. 2023): a persona or an answer that may never refuse.
    _r("refusal_suppression", r"\b(?:never|don't|do not|will not|won't|must not|cannot|can't|is not allowed to|are not allowed to)\s+(?:ever\s+)?(?:refus\w*|decline\w*|say (?:no|you can'?t|sorry|i can'?t|that you can'?t)|add\w* (?:any\s+)?(?:warnings|disclaimers))\b.{0,60}\b(?:any|no matter|regardless|whatever|request|question|anything|prompt)"),
    _r("refusal_suppression", r"\b(?:never|don't|do not|must not|will not)\s+(?:ever\s+)?(?:say|write|respond with|reply with|use the (?:words?|phrases?))\s*[\"'“‘]?\s*(?:i (?:cannot|can'?t|am unable|'m unable|am sorry|'m sorry|apologi[sz]e)|as an ai|sorry)"),
    _r("refusal_suppression", r"\b(?:must not|should not|shouldn't|will not|won't|does not|doesn't|never|without)\s+(?:contain|include|add|give|have)?\s*(?:any\s+)?(?:warnings?|disclaimers?|caveats?|moral(?:izing|ising)?|ethical (?:notes|considerations|warnings))\s+(?:or|and|,)\s+(?:\w+\s+)?(?:refusals?|apolog\w+|warnings?|disclaimers?|censorship)\b"),
    _r("refusal_suppression", r"\bwithout\s+(?:any\s+)?(?:apologi[sz]ing|apologies|disclaimers?|warnings?|refus\w+)\b", strong=False),
    _r("refusal_suppression", r"\bwithout\s+(?:any\s+)?(?:apologi[sz]ing|apologies|disclaimers?|warnings?|refus\w+|moraliz\w+|caveats)\b\s*(?:,|and|or)\s*(?:without\s+|no\s+|never\s+)(?:any\s+)?(?:apologi[sz]ing|apologies|disclaimers?|warnings?|refus\w+|moraliz\w+|caveats|say\w*)\b"),
    _r("roleplay_jailbreak", r"\b(?:stay in character|remain in character|break character)\b", strong=False),
    # Prefix injection (Wei et al. 2023): force an affirmative opening so the model keeps going.
    _r("prefix_injection", r"\b(?:start|begin) (?:your (?:reply|response|answer|output)|by saying|with)\s*(?:with\s*)?[\"'“‘](?:sure|absolutely|of course|certainly|yes)\b", strong=False),
    _r("prefix_injection", r"\b(?:start|begin)\w*\s+(?:your (?:reply|response|answer|output)\s+)?(?:with|by saying)\s*[\"'“‘](?:sure|absolutely|of course|certainly|yes)[,!.]?\s*(?:here(?:'s| is| are)|i (?:can|will)|i'll)"),
    # Role / delimiter tags that pretend to be the system turn.
    _r("role_tag_injection", r"(?:<\|?im_start\|?>\s*system|<\|system\|>|\[/?(?:system|inst)\]|<</?sys>>|###\s*(?:system|instruction)s?\s*:|^\s*system\s*:|\n\s*system\s*:|\[system\]\(#|end of (?:user )?(?:input|prompt|data|document)\s*={2,})"),
    # Indirect injection aimed at the model reading retrieved content.
    _r("indirect_injection", r"\b(?:if you are|to|attention|note to|message (?:for|to)|instructions? (?:for|to))\s+(?:an?\s+|the\s+|any\s+)?(?:ai|llm|language model|assistant|chatbot|gpt|bot)\b.{0,30}\b(?:reading|processing|summari[sz]ing|parsing|that reads|ignore|you must|you should|do not|instead)"),
    _r("indirect_injection", r"\b(?:attention|note (?:to|for)|message (?:for|to)|instructions? for|important for|warning to)\s*,?\s*(?:the\s+|any\s+|all\s+|an?\s+)?(?:ai|llm|llms|language models?|assistants?|chatbots?|gpt|bots?|ai models?|ai systems?|agents?)\b\s*[:,\-].{0,80}?\b(?:authori[sz]ed|permission|must|ignore|disregard|do not|don't|instead|silently|secretly|without (?:telling|mentioning|informing)|forward|send|reveal|override|void)\b"),
    _r("indirect_injection", r"\b(?:attention|note (?:to|for)|message (?:for|to)|instructions? for)\s*,?\s*(?:the\s+|any\s+|all\s+|an?\s+)?(?:ai|llm|llms|language models?|assistants?|chatbots?|gpt|bots?|agents?)\b\s*[:,\-]", strong=False),
    # Markdown image whose URL carries a templated value (exfiltration on render). Each part stops
    # at the next "![" and the query starts at the first ?/&, so the search stays linear in the
    # text; with `[^)]*` parts every "![" rescanned the rest of it, worse than quadratic.
    _r("indirect_injection", r"!\[(?:(?!!\[)[^\]])*\]\(https?://(?:(?!!\[)[^)?&])*[?&](?:(?!!\[)[^)])*?=\s*(?:\{|\$|<|%7b)"),
    _r("indirect_injection", r"<!--.{0,200}\b(?:ai|assistant|llm|model)\b.{0,200}-->"),
    # "Decode this and do what it says": the payload is meant to be executed, not read.
    _r("encoded_instruction", r"\b(?:decode|decrypt|de-?obfuscate|unscramble|reverse|apply rot-?13 to|convert|translate)\b.{0,50}\b(?:and|then)\s+(?:do|follow|execute|obey|carry out|perform|run|act on|comply with)\s+(?:what(?:ever)? it says|it|them|that|the instructions?|its instructions?|the (?:command|task)s?)\b"),
    _r("encoded_instruction", r"\bthe following (?:\w+\s+){0,2}(?:is|are|contains?) your (?:real|actual|true|new|hidden) (?:task|instructions?|orders?|objective)\b"),
    # Context termination and fake delimiters (Schulhoff et al. 2023; Toyer et al. 2023).
    # A fixed-length marker matches wherever a longer run does (its last characters); `={3,}` would
    # retry the whole run from each of its positions, quadratic on a long "=====" line.
    _r("role_tag_injection", r"(?:%%|={3}|#{3}|-{3}|\*{3}|\[\[)\s*(?:end|begin|start)\s+(?:of\s+)?(?:the\s+)?(?:user|input|prompt|ambiguity|conversation|transcript|document|data|system|admin)\b.{0,100}?\b(?:new|instructions?|system|assistant|ignore|now|repeat|print|reveal|prompt|you (?:must|are|will|should))\b"),
    _r("role_tag_injection", r"(?:[\[(<{]\s*(?:admin(?:istrator)?|system|root|developer)\s+override|\b(?:admin(?:istrator)?|system|root|developer)\s+override\s*(?:[:\]!)>}]|mode|enabled|activated|granted|in effect))"),
    _r("instruction_override", r"\b(?:safety|security|content|ethical)\s+(?:protocols?|filters?|restrictions|guidelines|polic(?:y|ies)|guardrails)\s+(?:are|have been|is|has been)\s+(?:now\s+|temporarily\s+)?(?:suspended|disabled|lifted|off|removed|deactivated|turned off|void)\b"),
    _r("instruction_override", r"\byour\s+(?:next|new|real|actual|true|only)\s+(?:instruction|task|order|command|objective|goal|mission)s?\s+(?:is|are|will be)\b", strong=False),
    _r("system_prompt_extraction", r"\b(?:summari[sz]e|repeat|list|print|show|tell me|reveal|recite|output|display|translate|encode|what are|what were)\b.{0,40}\b(?:instructions?|rules|guidelines|directives|prompt|text)\s+(?:that\s+)?you\s+(?:were|have been|got|received)\b(?!(?:\s+\w+)?\s+(?:in|by|from)\s+(?:the|this|that|my|your)\s+(?:\w+\s+)?(?:document|email|e-mail|file|text|article|message|letter|manual|boss|manager|teacher|hr|team))"),
    _r("system_prompt_extraction", r"\b(?:repeat|print|output|show|reveal|recite)\s+(?:me\s+)?(?:your|the)\s+(?:prompt|instructions|configuration|conversation)\s+(?:so far|up to (?:here|now)|from the (?:start|beginning))"),
    _r("system_prompt_extraction", r"\b(?:system_?prompt|sys_prompt|initial_prompt|systemPrompt)\b", strong=False),
    # Indirect injection addressed to whatever model reads the content.
    _r("indirect_injection", r"\b(?:ai|llm|assistant|agent|model|bot|chatbot)\s+(?:that is\s+|who is\s+)?(?:reading|reviewing|processing|summari[sz]ing|parsing|analy[sz]ing|that reads|who reads|scanning)\s+(?:this|these)\b"),
    _r("indirect_injection", r"\bhidden\s+(?:text|instructions?|message|note|prompt)s?\s*:", strong=False),
    _r("indirect_injection", r"\b(?:use|call|invoke|run)\s+the\s+\w+\s+tool\b.{0,60}\b(?:send|forward|transfer|upload|post|delete|e-?mail)\b", strong=False),
    # Payload splitting (Kang et al. 2023): an instruction assembled from variables, then obeyed.
    _r("encoded_instruction", r"\b(?:do|follow|execute|obey|carry out)\s+(?:what(?:ever)?\s+)?\w{1,3}\s*\+\s*\w{1,3}\s+(?:says|said|spells)\b"),
    _r("encoded_instruction", r"\b(?:join|combine|concatenate|merge|put together)\b.{0,40}\b(?:into|as)\s+(?:one|a single|a complete|the full)\s+(?:instruction|request|prompt|command|question)\b.{0,40}\b(?:carry|do|follow|execute|answer|respond)"),
    _r("encoded_instruction", r"\b(?:respond|reply|answer|write your (?:answer|response))\s+(?:only\s+)?in\s+(?:base64|base 64|hex|rot-?13|binary|morse)\b", strong=False),
    # Many-shot jailbreaking (Anil et al. 2024): faux turns where the assistant already complied.
    _r("prefix_injection", r"(?:assistant|ai|gpt|bot)\s*:\s*(?:sure|absolutely|of course|certainly)[,!.]?\s+here(?:'s| is| are)\b.{0,400}?(?:assistant|ai|gpt|bot)\s*:\s*(?:sure|absolutely|of course|certainly)[,!.]?\s+here"),
    # Emotional or authority pressure not to refuse (Zeng et al. 2024), the grandma exploit.
    _r("refusal_suppression", r"\b(?:please\s+)?(?:don'?t|do not)\s+refuse\b|\brefusing\s+(?:would|will|is going to)\b|\byou are required to\b", strong=False),
    _r("refusal_suppression", r"\bnever\s+(?:use|say|write|output)\s+the\s+(?:words?|phrases?)\s+[\"'“‘]?(?:cannot|can'?t|sorry|unable|unfortunately|no)\b"),
    _r("roleplay_jailbreak", r"\b(?:act|pretend|roleplay|role-play|play|behave)\s+(?:as|to be|like)\s+my\s+(?:late|deceased|dead|departed|dying)\s+(?:grand\w+|mother|father|mom|dad|aunt|uncle)"),
    _r("roleplay_jailbreak", r"\b(?:openai|anthropic|chatgpt)(?:'s)?\s+(?:content\s+|usage\s+)?(?:polic\w+|rules|guidelines|restrictions|filters|limitations)\b", strong=False),
    _r("roleplay_jailbreak", r"\bfrom now on\s+[\"'“‘]?\w+[\"'”’]?\s+(?:means|stands for|refers to)\b", strong=False),
    _r("instruction_override", r"\bspecial\s+(?:instruction|case|rule)s?\s*:", strong=False),
    # Weak signals: common in injections, also in benign text; only count with other evidence.
    _r("override_vocabulary", r"\b(?:ignore|disregard|override|bypass|never ?mind)\b.{0,40}\b(?:instructions?|rules|prompt|filters?|safety|question|task)\b", strong=False),
)


# Rule families, in the order the classifier head reads them as 0/1 features.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(rule.reason for rule in RULES))


@dataclass(frozen=True)
class HeuristicResult:
    """Reasons found and whether any strong rule fired."""

    reasons: tuple[str, ...]
    strong: bool

    @property
    def score(self) -> float:
        """1.0 for a strong hit, 0.5 for weak-only evidence, else 0."""
        return 1.0 if self.strong else (0.5 if self.reasons else 0.0)

    def features(self) -> list[float]:
        """One 0/1 value per entry of `FAMILIES`: whether any of its rules (strong or weak) fired."""
        return [1.0 if family in self.reasons else 0.0 for family in FAMILIES]


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
