"""Batched autoregressive decoding: left padding, per-request sampling, stop strings, cancellation.

Plain torch and a transformers causal LM; no Ray. `DecodeLoop` is the engine of a replica:
requests join the running batch between decode steps and leave when done (continuous
batching). `BatchDecoder` decodes one fixed batch to completion with the same code.

Why our own loop rather than `model.generate`: requests in one batch differ in temperature,
top_p, seed, max_tokens and stop strings, finished or cancelled rows must leave the batch at
once, and each step's tokens must reach their callers as they are made.
"""

from __future__ import annotations

import inspect
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from serve_app.replica_api import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

FinishReason = Literal["stop", "length", "cancelled"]
_GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings of one request. `temperature == 0` means greedy."""

    max_tokens: int
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        # Below this, logits / temperature overflows float32; the answer is the argmax anyway.
        return self.temperature < _GREEDY_BELOW_TEMPERATURE


@dataclass(eq=False)
class GenerationRequest:
    """One sequence to decode. `cancelled` is set by the caller when its client goes away."""

    prompt_ids: list[int]
    params: SamplingParams
    cancelled: bool = False
    submitted_at: float = field(default_factory=time.monotonic)
    admitted_at: float | None = None  # monotonic time its prefill ran, for queue-wait metrics


@dataclass
class StepOutput:
    """What one request gained in one decoding step."""

    text: str                      # new text, safe to show (no partial stop string, no half char)
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0     # tokens generated so far, in total


@dataclass
class _Row:
    request: GenerationRequest
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    emitted_chars: int = 0
    finish_reason: FinishReason | None = None


class DecodeLoop:
    """Iteration-level (continuous) batching over one model: rows join and leave between steps.

    `submit` queues requests; each `step` runs one decode step for every active row, then
    prefills queued requests (up to `max_rows` active in all) and merges their KV caches into
    the running batch, left-padding whichever is shorter. Padding positions are masked out, so a
    row's tokens do not depend on which other rows it shares steps with. Rows that finish or are
    cancelled leave at the end of the step; leading cache columns no row attends to are trimmed.

    Not thread-safe except for `submit` and setting `GenerationRequest.cancelled`, which may
    happen from another thread while `step` runs.
    """

    def __init__(self, model: Any, tokenizer: Any, device: str, *, max_rows: int,
                 eos_token_ids: Sequence[int] | None = None) -> None:
        self.max_rows = max_rows
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._pad_id = tokenizer.pad_token_id
        self._eos_ids = frozenset(eos_token_ids if eos_token_ids is not None
                                  else _eos_ids(model, tokenizer))
        self._pending: deque[GenerationRequest] = deque()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None       # (rows, cache length), 1 = real token
        self._positions: torch.Tensor | None = None  # (rows,), position id of `_next_ids`
        self._next_ids: torch.Tensor | None = None   # (rows,), token to feed at the next step
        self.last_admitted: list[GenerationRequest] = []  # prefilled by the latest step
        # A prefill needs the logits of the last position only; without this the vocabulary
        # projection runs over every prompt position (tens of ms per prompt on CPU, wasted).
        accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if accepts else {}

    def submit(self, requests: Sequence[GenerationRequest]) -> None:
        self._pending.extend(requests)

    @property
    def idle(self) -> bool:
        return not self._rows and not self._pending

    @property
    def active_rows(self) -> int:
        return len(self._rows)

    def abort(self) -> list[GenerationRequest]:
        """Drop every row and queued request (after a failed step); returns them all."""
        dropped = [row.request for row in self._rows] + list(self._pending)
        self._pending.clear()
        self._reset()
        return dropped

    @torch.inference_mode()
    def step(self) -> list[tuple[GenerationRequest, StepOutput | None]]:
        """One decode step for the active rows, then admission of queued requests."""
        outputs: list[tuple[GenerationRequest, StepOutput | None]] = []
        if self._rows:
            mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=-1)
            out = self._model(input_ids=self._next_ids.unsqueeze(-1), attention_mask=mask,
                              position_ids=self._positions.unsqueeze(-1),
                              past_key_values=self._cache, use_cache=True)
            self._cache, self._mask = out.past_key_values, mask
            self._positions = self._positions + 1
            self._next_ids = self._sample(out.logits[:, -1, :], self._rows)
            outputs += [(row.request, self._advance(row, int(token)))
                        for row, token in zip(self._rows, self._next_ids.tolist())]
        admitted = self._admit(outputs)
        self.last_admitted = [row.request for row in admitted]
        if admitted:
            ids, mask = self._left_pad([row.request.prompt_ids for row in admitted])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions,
                              use_cache=True, **self._last_logits_only)
            next_ids = self._sample(out.logits[:, -1, :], admitted)
            outputs += [(row.request, self._advance(row, int(token)))
                        for row, token in zip(admitted, next_ids.tolist())]
            self._merge(admitted, out.past_key_values, mask, mask.sum(-1), next_ids)
        self._drop_finished()
        return outputs

    def _admit(self, outputs: list[tuple[GenerationRequest, StepOutput | None]]) -> list[_Row]:
        admitted: list[_Row] = []
        while self._pending and len(self._rows) + len(admitted) < self.max_rows:
            request = self._pending.popleft()
            if request.cancelled:  # its client left while it waited: never prefill it
                outputs.append((request, StepOutput("", "cancelled", 0)))
                continue
            request.admitted_at = time.monotonic()
            admitted.append(_Row(request, _make_generator(request.params)))
        return admitted

    def _merge(self, rows: list[_Row], cache: Any, mask: torch.Tensor, positions: torch.Tensor,
               next_ids: torch.Tensor) -> None:
        if not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            self._positions, self._next_ids = positions, next_ids
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad_seq(old.keys, width), _left_pad_seq(new.keys, width)])
            old.values = torch.cat([_left_pad_seq(old.values, width),
                                    _left_pad_seq(new.values, width)])
        self._mask = torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(mask, width)])
        self._positions = torch.cat([self._positions, positions])
        self._next_ids = torch.cat([self._next_ids, next_ids])
        self._rows = self._rows + rows

    def _drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if row.finish_reason is None]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self._device)
        self._cache.batch_select_indices(index)
        self._mask, self._positions, self._next_ids = (
            self._mask[index], self._positions[index], self._next_ids[index])
        self._rows = [self._rows[i] for i in keep]
        # Columns that only departed rows attended to cost compute at every later step.
        first = int((self._mask.sum(0) > 0).nonzero()[0])
        if first > 0:
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]

    def _reset(self) -> None:
        self._rows, self._cache = [], None
        self._mask = self._positions = self._next_ids = None

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt):] = 1
        return ids.to(self._device), mask.to(self._device)

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        # Greedy rows take the argmax of the raw logits: exactly what decoding them alone picks.
        chosen = logits.argmax(dim=-1)
        for slot, row in enumerate(rows):
            params = row.request.params
            if row.request.cancelled or params.greedy:
                continue
            scores = logits[slot].float() / params.temperature
            probs = torch.softmax(scores, dim=-1)
            if params.top_p < 1.0:
                probs = _top_p_filter(probs, params.top_p)
            chosen[slot] = torch.multinomial(probs.cpu(), 1, generator=row.generator).item()
        return chosen

    def _advance(self, row: _Row, token_id: int) -> StepOutput | None:
        params = row.request.params
        if row.request.cancelled:
            row.finish_reason = "cancelled"
            return StepOutput("", "cancelled", len(row.token_ids))
        if token_id in self._eos_ids:
            row.finish_reason = "stop"
        else:
            row.token_ids.append(token_id)
            if len(row.token_ids) >= params.max_tokens:
                row.finish_reason = "length"
        text = self._tokenizer.decode(row.token_ids, skip_special_tokens=True)
        if params.stop:
            start = max(0, row.emitted_chars - _longest(params.stop))
            cut = _first_stop(text, params.stop, start=start)
            if cut is not None:
                text, row.finish_reason = text[:cut], "stop"
        if row.finish_reason is None:
            # Hold back a trailing partial character and anything that may begin a stop string.
            safe_end = len(text.rstrip("\ufffd"))
            safe_end -= _stop_prefix_overlap(text[:safe_end], params.stop)
        else:
            safe_end = len(text)
        delta = text[row.emitted_chars:safe_end]
        row.emitted_chars = max(row.emitted_chars, safe_end)
        if not delta and row.finish_reason is None:
            return None
        return StepOutput(delta, row.finish_reason, len(row.token_ids))


class BatchDecoder:
    """Decodes one fixed batch to completion: `DecodeLoop` with every request admitted at once."""

    def __init__(self, model: Any, tokenizer: Any, device: str,
                 eos_token_ids: Sequence[int] | None = None) -> None:
        self._args = (model, tokenizer, device)
        self._eos_token_ids = eos_token_ids

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[StepOutput | None]]:
        """Decode `requests` together; after each step yield one item per request (or None)."""
        loop = DecodeLoop(*self._args, max_rows=max(1, len(requests)),
                          eos_token_ids=self._eos_token_ids)
        loop.submit(requests)
        slot = {id(request): i for i, request in enumerate(requests)}
        while not loop.idle:
            aligned: list[StepOutput | None] = [None] * len(requests)
            for request, output in loop.step():
                aligned[slot[id(request)]] = output
            yield aligned


def _left_pad_seq(x: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a (batch, heads, seq, dim) cache tensor with zeros to `width` positions."""
    return torch.nn.functional.pad(x, (0, 0, width - x.shape[2], 0)) if x.shape[2] < width else x


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) if mask.shape[1] < width else mask


def _make_generator(params: SamplingParams) -> torch.Generator | None:
    if params.greedy:
        return None
    generator = torch.Generator()
    generator.manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
    return generator


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_probs, order = probs.sort(descending=True)
    cumulative = sorted_probs.cumsum(-1)
    # Keep the smallest prefix whose mass reaches top_p, and always the top token (a tiny
    # top_p such as 1e-300 would otherwise drop everything and leave no distribution).
    drop = cumulative - sorted_probs >= top_p
    drop[..., 0] = False
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return filtered / filtered.sum()


def _first_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    hits = [pos for stop in stops if (pos := text.find(stop, start)) != -1]
    return min(hits) if hits else None


def _longest(stops: Sequence[str]) -> int:
    return max((len(s) for s in stops), default=0)


def _stop_prefix_overlap(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids
