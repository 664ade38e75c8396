"""Input guardrails: size limits and layered prompt-injection detection."""
