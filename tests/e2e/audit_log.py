"""Reading the default app's audit log (JSON lines in its state dir) from end-to-end tests."""

from __future__ import annotations

import json
import time


def audit(state_dir) -> list[dict]:
    """Every audit record written so far."""
    path = state_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def audit_for(state_dir, request_id: str, timeout_s: float = 10) -> list[dict]:
    """The records of one request, waiting up to `timeout_s` for the audit sink to write them."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [r for r in audit(state_dir) if r["request_id"] == request_id]
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.2)
