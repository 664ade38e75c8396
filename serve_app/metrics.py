"""Per-model Prometheus metrics through Ray's metrics export, next to Ray Serve's own.

Ray prefixes every application metric with `ray_` on its Prometheus endpoint, so these appear
as `ray_aegis_requests_total`, `ray_aegis_time_to_first_token_s_bucket`, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

_LATENCY_BOUNDARIES_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
_BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


@dataclass(frozen=True)
class _Instruments:
    requests: Any
    prompt_tokens: Any
    generated_tokens: Any
    batch_size: Any
    queue_wait_s: Any
    ttft_s: Any
    latency_s: Any


@cache
def _instruments() -> _Instruments:
    # Built on first use inside a replica: Ray imports this module in the driver too.
    from ray.util import metrics

    return _Instruments(
        requests=metrics.Counter(
            "aegis_requests_total", "Requests handled by a model replica, by outcome.",
            tag_keys=("model", "task", "outcome")),
        prompt_tokens=metrics.Counter(
            "aegis_prompt_tokens_total", "Prompt (input) tokens processed.", tag_keys=("model",)),
        generated_tokens=metrics.Counter(
            "aegis_generated_tokens_total", "Tokens generated.", tag_keys=("model",)),
        batch_size=metrics.Histogram(
            "aegis_batch_size", "Requests decoded or embedded together in one batch.",
            boundaries=_BATCH_BOUNDARIES, tag_keys=("model",)),
        queue_wait_s=metrics.Histogram(
            "aegis_queue_wait_s", "Seconds a request waited in the replica for its batch.",
            boundaries=_LATENCY_BOUNDARIES_S, tag_keys=("model",)),
        ttft_s=metrics.Histogram(
            "aegis_time_to_first_token_s", "Seconds from arrival at the replica to first token.",
            boundaries=_LATENCY_BOUNDARIES_S, tag_keys=("model",)),
        latency_s=metrics.Histogram(
            "aegis_request_latency_s", "Seconds from arrival at the replica to the last token.",
            boundaries=_LATENCY_BOUNDARIES_S, tag_keys=("model", "task")),
    )


class ModelMetrics:
    """Metrics of one model deployment, tagged with its model name."""

    def __init__(self, model: str) -> None:
        self._tags = {"model": model}

    def request(self, task: str, outcome: str) -> None:
        _instruments().requests.inc(1, {**self._tags, "task": task, "outcome": outcome})

    def tokens(self, prompt: int, generated: int) -> None:
        if prompt:
            _instruments().prompt_tokens.inc(prompt, self._tags)
        if generated:
            _instruments().generated_tokens.inc(generated, self._tags)

    def batch(self, size: int) -> None:
        _instruments().batch_size.observe(size, self._tags)

    def queue_wait(self, seconds: float) -> None:
        _instruments().queue_wait_s.observe(seconds, self._tags)

    def first_token(self, seconds: float) -> None:
        _instruments().ttft_s.observe(seconds, self._tags)

    def latency(self, task: str, seconds: float) -> None:
        _instruments().latency_s.observe(seconds, {**self._tags, "task": task})


@cache
def _security_events() -> Any:
    from ray.util import metrics

    return metrics.Counter(
        "aegis_security_events_total",
        "Security-layer events at the ingress: auth outcomes, rate-limit allow/deny, fail-open/closed, "
        "store and audit failures, injections blocked or flagged, values redacted (by type).",
        tag_keys=("event",))


def security_event(name: str, amount: int = 1) -> None:
    """Listener for `security.Counters`: one Prometheus series per event name."""
    if amount > 0:
        _security_events().inc(amount, {"event": name})


@cache
def _tool_instruments() -> tuple[Any, Any]:
    from ray.util import metrics

    calls = metrics.Counter(
        "aegis_tool_calls_total", "Tool calls run by the ToolRunner, by tool and outcome "
        "(ok, or the error code: tool_timeout, tool_crashed, invalid_arguments, ...).",
        tag_keys=("tool", "outcome"))
    latency = metrics.Histogram(
        "aegis_tool_call_latency_s", "Seconds from a tool call's arrival at the ToolRunner to its result.",
        boundaries=_LATENCY_BOUNDARIES_S, tag_keys=("tool",))
    return calls, latency


def tool_call(tool: str, outcome: str, seconds: float) -> None:
    """Count one tool call and observe its latency."""
    calls, latency = _tool_instruments()
    calls.inc(1, {"tool": tool, "outcome": outcome})
    latency.observe(seconds, {"tool": tool})
