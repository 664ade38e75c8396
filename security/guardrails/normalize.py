"""Fast text normalisation that undoes common obfuscations before injection scanning."""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass, field

# Invisible characters used to split trigger words ("ig\u200bnore") past naive filters.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e"), None)

# Cyrillic / Greek / IPA letters that render like Latin ones (Unicode confusables, the common
# subset). NFKC does not fold these because they are distinct letters, not compatibility forms.
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ӏ": "l", "ԛ": "q",
        "ԝ": "w", "ɡ": "g", "ɑ": "a", "ı": "i", "ο": "o", "α": "a", "ν": "v", "ρ": "p", "τ": "t",
        "υ": "u", "ι": "i", "κ": "k", "ε": "e", "χ": "x", "А": "A", "В": "B", "Е": "E", "К": "K",
        "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "І": "I", "Ј": "J",
        "Ѕ": "S", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
        "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    }
)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_B64_RE = re.compile(r"(?<![A-Za-z0-9+/=_-])([A-Za-z0-9+/_-]{16,}={0,2})(?![A-Za-z0-9+/=_-])")
_HEX_RE = re.compile(r"(?<![0-9A-Fa-f])((?:[0-9A-Fa-f]{2}){8,})(?![0-9A-Fa-f])")
# "i g n o r e" or "i.g.n.o.r.e": letters separated by single spaces/dots, 4 letters or more.
_SPACED_RE = re.compile(r"\b(?:[A-Za-z][ .\-_*]){3,}[A-Za-z]\b")
_WS_RE = re.compile(r"\s+")
# A word that mixes letters with the digits leetspeak substitutes ("r3v34l", "1nstruct10ns").
_LEET_WORD_RE = re.compile(r"\b(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*[013457])[A-Za-z0-9]{3,}\b")


@dataclass
class Normalized:
    """The views of one input that scanners look at.

    Attributes:
        text: NFKC, zero-width removed, homoglyphs folded, whitespace collapsed.
        views: extra (name, text) views: leetspeak-folded, rot13, de-spaced.
        decoded: texts recovered from base64 / hex payloads inside the input.
        flags: obfuscations seen, e.g. {"zero_width", "homoglyph", "base64", "leet", "spaced"}.
    """

    text: str
    views: list[tuple[str, str]] = field(default_factory=list)
    decoded: list[tuple[str, str]] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)

    @property
    def for_classifier(self) -> str:
        """The text the classifier embeds: de-spaced and leet-folded when the input looked written that way."""
        views = dict(self.views)
        text = views.get("despaced", self.text) if "spaced" in self.flags else self.text
        return text.translate(_LEET) if "leet" in self.flags else text

    @property
    def classifier_chunks(self) -> list[str]:
        """What the classifier scores for this input, window by window: `for_classifier` and, when
        payloads were decoded, their texts joined (many small ones cost a window per ~100 tokens,
        not a forward pass each). The scanner and the head's training both read this."""
        return [self.for_classifier] + (["\n".join(decoded for _, decoded in self.decoded)] if self.decoded else [])


def _printable_ratio(text: str) -> float:
    if not text:
        return 0.0
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\t")
    return good / len(text)


def _try_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Random binary (hashes, ids) rarely decodes to mostly-letters text; real payloads do.
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    if len(text) >= 6 and _printable_ratio(text) > 0.95 and letters / len(text) > 0.7 and " " in text:
        return text
    return None


def _decode_payloads(text: str) -> list[tuple[str, str]]:
    # No cap on the count: a fixed one let decoy payloads early in a long text hide a later one,
    # and what is decoded is never longer than `text`, which the scanner already bounds.
    found: list[tuple[str, str]] = []
    for match in _B64_RE.finditer(text):
        token = match.group(1)
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_" if ("-" in token or "_" in token) else None)
        except (binascii.Error, ValueError):
            continue
        decoded = _try_text(raw)
        if decoded:
            found.append(("base64", decoded))
    for match in _HEX_RE.finditer(text):
        decoded = _try_text(bytes.fromhex(match.group(1)))
        if decoded:
            found.append(("hex", decoded))
    return found


def _clean(text: str) -> str:
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", text.translate(_ZERO_WIDTH)).translate(_HOMOGLYPHS)).strip()


def normalize(text: str) -> Normalized:
    """Normalise all of `text` and derive the views that heuristics and the classifier scan.

    Nothing is cut: the caller bounds the size (`PromptScanner` refuses inputs over
    `injection.max_scan_chars`). Every step is linear in the length of the text.

    Args:
        text: raw user-controlled text.
    """
    flags: set[str] = set()
    without_zw = text.translate(_ZERO_WIDTH)
    if len(without_zw) != len(text):
        flags.add("zero_width")
    nfkc = unicodedata.normalize("NFKC", without_zw)
    if nfkc != without_zw:
        flags.add("nfkc")
    folded = nfkc.translate(_HOMOGLYPHS)
    if folded != nfkc:
        flags.add("homoglyph")
    clean = _WS_RE.sub(" ", folded).strip()
    result = Normalized(text=clean, flags=flags)
    leet = clean.translate(_LEET)
    if leet != clean:
        result.views.append(("leet", leet))
        # Three or more letter-digit words ("1gn0r3", "pr3v10u5") is leetspeak; "mp3" or "i7" alone is not.
        if len(_LEET_WORD_RE.findall(clean)) >= 3:
            flags.add("leet")
    result.views.append(("rot13", codecs.decode(clean, "rot13")))
    despaced = _SPACED_RE.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), clean)
    if despaced != clean:
        result.views.append(("despaced", despaced))
        flags.add("spaced")
    for kind, decoded in _decode_payloads(clean):
        flags.add(kind)
        result.decoded.append((kind, _clean(decoded)))
    return result
