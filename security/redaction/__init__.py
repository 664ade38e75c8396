"""PII and secret redaction with typed placeholders, for whole texts and streams."""

from security.redaction.recognizers import find_spans, iban_ok, luhn_ok
from security.redaction.redactor import Redactor, StreamingRedactor

__all__ = ["Redactor", "StreamingRedactor", "find_spans", "iban_ok", "luhn_ok"]
