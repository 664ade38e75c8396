"""Replaces PII and secrets with typed placeholders, on whole texts and on streams of chunks."""

from __future__ import annotations

from collections import Counter

from security.redaction.recognizers import find_spans
from security.settings import REDACTION_TYPES, RedactionSettings

# Emitted text is cut only at whitespace and never inside a recognised value, so a value without
# spaces (e-mail, API key, JWT) is held whole until it is complete, however it is split. Values
# that contain spaces could be cut between their parts before they are recognisable; the tail
# held back covers the longest of them (an IBAN in groups of four: 43 chars; a card with
# separators: 37; a phone number: under 25). Private-key blocks are held until their END line.
# The cost is latency: the first text of a stream waits until ~64 chars have been generated.
_HOLDBACK_CHARS = 64
_PEM_BEGIN = "-----BEGIN"


class Redactor:
    """Redacts a configured set of entity types.

    Args:
        types: entity types to redact (see `security.settings.REDACTION_TYPES`).
    """

    def __init__(self, types: list[str] | tuple[str, ...] = REDACTION_TYPES) -> None:
        self.types = frozenset(types)

    @classmethod
    def for_tenant(cls, settings: RedactionSettings, tenant: str | None) -> Redactor:
        """Tenant-specific types when configured, else the default list."""
        return cls(settings.tenant_types.get(tenant or "", settings.types))

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """Return the redacted text and how many values of each type were replaced."""
        spans = find_spans(text, self.types)
        if not spans:
            return text, Counter()
        out: list[str] = []
        pos = 0
        counts: Counter[str] = Counter()
        for span in spans:
            out.append(text[pos : span.start])
            out.append(f"[{span.entity}]")
            counts[span.entity] += 1
            pos = span.end
        out.append(text[pos:])
        return "".join(out), counts

    def stream(self) -> StreamingRedactor:
        """A fresh streaming redactor with these types (one per response stream)."""
        return StreamingRedactor(self)


class StreamingRedactor:
    """Redacts a stream of text chunks, holding back a short tail so split values are still caught.

    Call `feed(chunk)` per chunk and emit what it returns; call `flush()` at the end and emit that.
    Emitted text never changes afterwards, so it is safe to send as SSE deltas.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._buffer = ""
        self.counts: Counter[str] = Counter()

    def feed(self, chunk: str) -> str:
        """Add a chunk; return the text now safe to emit (possibly empty)."""
        self._buffer += chunk
        raw = self._buffer
        cut = len(raw) - _HOLDBACK_CHARS
        pem = raw.find(_PEM_BEGIN)
        if pem != -1 and "-----END" not in raw[pem:]:
            cut = min(cut, pem)  # an open private-key block is held until its END line arrives
        if cut <= 0:
            return ""
        # Cut at whitespace, then never inside a value recognised in the whole buffer.
        cut = max(raw.rfind(" ", 0, cut), raw.rfind("\n", 0, cut)) + 1
        for span in find_spans(raw, self._redactor.types):
            if span.start < cut < span.end:
                cut = span.start
        if cut <= 0:
            return ""
        self._buffer = raw[cut:]
        emitted, counts = self._redactor.redact(raw[:cut])
        self.counts.update(counts)
        return emitted

    def flush(self) -> str:
        """Redact and return whatever is still held back."""
        redacted, counts = self._redactor.redact(self._buffer)
        self._buffer = ""
        self.counts.update(counts)
        return redacted
