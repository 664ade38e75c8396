"""PII / secret redaction: recognizers with checksums, tenant types, and the streaming redactor."""

from __future__ import annotations

import pytest

from security.redaction import Redactor, iban_ok, luhn_ok
from security.settings import RedactionSettings

ALL = Redactor()


@pytest.mark.parametrize(
    "value, entity",
    [
        ("jane.doe+work@example.co.uk", "EMAIL"),
        ("+1 415-555-0100", "PHONE"),
        ("(030) 1234 5678", "PHONE"),
        ("4111 1111 1111 1111", "CREDIT_CARD"),
        ("5500-0000-0000-0004", "CREDIT_CARD"),
        ("GB82 WEST 1234 5698 7654 32", "IBAN"),
        ("DE89370400440532013000", "IBAN"),
        ("123-45-6789", "US_SSN"),
        ("192.168.10.254", "IP_ADDRESS"),
        ("2001:db8::8a2e:370:7334", "IP_ADDRESS"),
        ("AKIAIOSFODNN7EXAMPLE", "API_KEY"),
        ("ghp_" + "a1B2" * 9, "API_KEY"),
        ("xoxb-123456789012-abcdefghijkl", "API_KEY"),
        ("sk-proj-" + "Xy7" * 10, "API_KEY"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlX3ZhbHVl", "JWT"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----", "PRIVATE_KEY"),
    ],
)
def test_each_type_is_replaced_by_its_placeholder(value, entity):
    text, counts = ALL.redact(f"value: {value} end")
    assert text == f"value: [{entity}] end"
    assert counts == {entity: 1}


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "iban GB83 WEST 1234 5698 7654 32",  # fails mod-97
        "ssn 000-12-3456",  # area 000 is never issued
        "version 1.2.3.4.5 and 999.1.1.1",
        "order 12345 shipped on 2024-05-01",
    ],
)
def test_invalid_or_lookalike_values_are_kept(text):
    assert ALL.redact(text)[0] == text


def test_checksums():
    assert luhn_ok("4539 1488 0343 6467") and not luhn_ok("4539 1488 0343 6468")
    assert iban_ok("FR14 2004 1010 0505 0001 3M02 606") and not iban_ok("FR15 2004 1010 0505 0001 3M02 606")


def test_tenant_types():
    settings = RedactionSettings(tenant_types={"acme": ["EMAIL"]})
    text = "mail a@b.io from 10.0.0.1"
    assert Redactor.for_tenant(settings, "acme").redact(text)[0] == "mail [EMAIL] from 10.0.0.1"
    assert Redactor.for_tenant(settings, "other").redact(text)[0] == "mail [EMAIL] from [IP_ADDRESS]"
    with pytest.raises(ValueError, match="unknown types"):
        RedactionSettings(types=["EMAIL", "DNA"])


def _stream(chunks: list[str]) -> tuple[str, dict]:
    stream = ALL.stream()
    out = "".join(stream.feed(c) for c in chunks) + stream.flush()
    return out, dict(stream.counts)


@pytest.mark.parametrize("split_at", range(1, 20))
def test_value_split_across_chunks_is_caught(split_at):
    text = "Sure! Write to john.smith@example.com or call +44 20 7946 0958 today. " + "More words follow here. " * 10
    chunks = [text[:split_at + 20], text[split_at + 20 : split_at + 45], text[split_at + 45 :]]
    out, counts = _stream(chunks)
    assert out == ALL.redact(text)[0]
    assert counts == {"EMAIL": 1, "PHONE": 1}


def test_token_by_token_stream_matches_whole_text():
    text = ("Your card 4111 1111 1111 1111 and key AKIAIOSFODNN7EXAMPLE were leaked; contact ops@corp.example. " * 5).strip()
    words = [w + " " for w in text.split(" ")]
    words[-1] = words[-1].rstrip()
    tokens = [piece for w in words for piece in (w[: len(w) // 2], w[len(w) // 2 :]) if piece]
    out, counts = _stream(tokens)
    assert out == ALL.redact(text)[0]
    assert counts == {"CREDIT_CARD": 5, "API_KEY": 5, "EMAIL": 5}


def test_private_key_block_is_held_until_complete():
    key = "-----BEGIN PRIVATE KEY-----\n" + ("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n" * 20) + "-----END PRIVATE KEY-----"
    stream = ALL.stream()
    emitted = "".join(stream.feed(line + "\n") for line in ("here it is:\n" + key + "\ndone").split("\n"))
    emitted += stream.flush()
    assert "QUJD" not in emitted and "[PRIVATE_KEY]" in emitted


@pytest.mark.parametrize("chunk_chars", [1, 7, 129, 300])
def test_secret_longer_than_the_holdback_is_caught_in_any_chunking(chunk_chars):
    # 600+ characters without whitespace: the stream cuts only at whitespace, so the whole token
    # is held until it is complete, however it is split.
    jwt = "eyJhbGciOiJSUzI1NiJ9." + "eyJzdWIiOi" + "x" * 300 + "." + "s" * 300
    text = "Here is the token " + jwt + " and some text after it. " * 3
    out, counts = _stream([text[i:i + chunk_chars] for i in range(0, len(text), chunk_chars)])
    assert jwt[:30] not in out and out == ALL.redact(text)[0]
    assert counts == {"JWT": 1}


@pytest.mark.parametrize("value, entity", [
    ("GB82 WEST 1234 5698 7654 32", "IBAN"),
    ("MT84 MALT 0110 0001 2345 MTLC AST0 01S", "IBAN"),  # 31 characters, the longest format
    ("4111 1111 1111 1111", "CREDIT_CARD"),
    ("+44 20 7946 0958", "PHONE"),
])
def test_values_with_spaces_are_caught_wherever_the_stream_splits_them(value, entity):
    text = "Here are the details you asked for: " + value + " and that is all for now, thanks."
    for cut in range(1, len(text)):
        out, counts = _stream([text[:cut], text[cut:]])
        assert out == ALL.redact(text)[0], cut
        assert counts == {entity: 1}, cut
