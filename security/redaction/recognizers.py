"""Pattern recognizers for PII and secrets, with checksum validation where the format has one."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable


def luhn_ok(digits: str) -> bool:
    """Luhn mod-10 check used by payment card numbers."""
    nums = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(nums) <= 19:
        return False
    total = 0
    for i, n in enumerate(reversed(nums)):
        if i % 2 == 1:
            n = n * 2 - 9 if n * 2 > 9 else n * 2
        total += n
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check: move the first four chars to the end, letters to 10..35, mod 97 == 1."""
    compact = re.sub(r"[\s-]", "", text).upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
    except ValueError:
        return False


def _ssn_ok(text: str) -> bool:
    area, group, serial = re.split(r"[- ]", text)
    # SSA never issues area 000, 666 or 900-999, group 00 or serial 0000.
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _ip_ok(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _phone_ok(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 8 <= len(digits) <= 15


@dataclass(frozen=True)
class Recognizer:
    """One entity type: a regex, an optional validator, and a priority for overlaps (higher wins)."""

    entity: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    priority: int = 0


def _r(entity: str, regex: str, validate=None, priority: int = 0, flags: int = 0) -> Recognizer:
    return Recognizer(entity, re.compile(regex, flags), validate, priority)


RECOGNIZERS: tuple[Recognizer, ...] = (
    _r("PRIVATE_KEY", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|$)", priority=100),
    _r("JWT", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", priority=90),
    _r("API_KEY", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", priority=80),  # AWS access key id
    _r("API_KEY", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", priority=80),  # GitHub tokens
    _r("API_KEY", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b", priority=80),
    _r("API_KEY", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", priority=80),  # Slack
    _r("API_KEY", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b", priority=80),  # OpenAI / Anthropic style
    _r("API_KEY", r"\bAIza[0-9A-Za-z_-]{35}\b", priority=80),  # Google API key
    _r("API_KEY", r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b", priority=80),  # Stripe
    _r("API_KEY", r"\baegis-[0-9a-f]{12}-[A-Za-z0-9_-]{43}", priority=80),  # our own keys
    _r("EMAIL", r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b", priority=60),
    _r("IBAN", r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?\b", iban_ok, priority=55),
    _r("CREDIT_CARD", r"\b(?:\d[ -]?){12,18}\d\b", luhn_ok, priority=50),
    _r("US_SSN", r"\b\d{3}[- ]\d{2}[- ]\d{4}\b", _ssn_ok, priority=45),
    _r("IP_ADDRESS", r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])", _ip_ok, priority=40),
    _r("IP_ADDRESS", r"(?<![\w.])(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?!\.?\w)", _ip_ok, priority=40),
    # Phones need a shape that plain numbers, dates and versions lack: a +country code, an area
    # code in parentheses, or the NANP 3-3-4 grouping.
    _r("PHONE", r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b", _phone_ok, priority=10),
    _r("PHONE", r"(?<![\w)])\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}\b", _phone_ok, priority=10),
    _r("PHONE", r"\b\d{3}[.-]\d{3}[.-]\d{4}\b", _phone_ok, priority=10),
)


@dataclass(frozen=True)
class Span:
    """A recognised value: [start, end) in the text and its entity type."""

    start: int
    end: int
    entity: str


def find_spans(text: str, entities: frozenset[str]) -> list[Span]:
    """Non-overlapping spans of the wanted entity types, higher priority and longer first."""
    candidates: list[tuple[int, int, int, str]] = []
    for rec in RECOGNIZERS:
        if rec.entity not in entities:
            continue
        for m in rec.pattern.finditer(text):
            if m.end() > m.start() and (rec.validate is None or rec.validate(m.group(0))):
                candidates.append((rec.priority, m.end() - m.start(), m.start(), rec.entity))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))
    taken: list[Span] = []
    for _, length, start, entity in candidates:
        end = start + length
        if all(end <= s.start or start >= s.end for s in taken):
            taken.append(Span(start, end, entity))
    return sorted(taken, key=lambda s: s.start)
