"""Guardrail research: corpus builders, head training, evaluation sets and the experiment history."""
