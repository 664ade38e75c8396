"""BatchDecoder on the real SmolLM2 weights: batching must not change what a request gets."""

from __future__ import annotations

import pytest

from serve_app.generation import (
    BatchDecoder, GenerationRequest, SamplingParams, _stop_prefix_overlap, _top_p_filter)

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about the sea.",
    "Name three primary colors.",
    "Explain in one sentence what a CPU does.",
]


def _ids(lm, text: str) -> list[int]:
    chat = lm.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                            add_generation_prompt=True, tokenize=False)
    return lm.tokenizer(chat, add_special_tokens=False)["input_ids"]


def _run(decoder: BatchDecoder, requests: list[GenerationRequest]) -> list[tuple[str, str, int]]:
    texts = [""] * len(requests)
    final: list[tuple[str, int] | None] = [None] * len(requests)
    for step in decoder.generate(requests):
        assert len(step) == len(requests)
        for i, out in enumerate(step):
            if out is None:
                continue
            assert final[i] is None, "a request produced output after its final step"
            texts[i] += out.text
            if out.finish_reason is not None:
                final[i] = (out.finish_reason, out.completion_tokens)
    assert all(f is not None for f in final)
    return [(texts[i], final[i][0], final[i][1]) for i in range(len(requests))]


@pytest.fixture(scope="module")
def decoder(smollm2) -> BatchDecoder:
    return BatchDecoder(smollm2.model, smollm2.tokenizer, smollm2.device)


def test_greedy_batched_equals_each_request_alone(smollm2, decoder):
    # Prompts of different lengths, so the batch really is left-padded.
    ids = [_ids(smollm2, p) for p in PROMPTS]
    assert len({len(i) for i in ids}) > 1
    greedy = SamplingParams(max_tokens=16, temperature=0.0)
    alone = [_run(decoder, [GenerationRequest(i, greedy)])[0] for i in ids]
    together = _run(decoder, [GenerationRequest(i, greedy) for i in ids])
    assert together == alone
    assert "Paris" in alone[0][0]


def test_max_tokens_gives_length_and_exact_count(smollm2, decoder):
    [(text, reason, count)] = _run(decoder, [GenerationRequest(
        _ids(smollm2, "Write a long story about a dragon."), SamplingParams(max_tokens=7, temperature=0))])
    assert reason == "length"
    assert count == 7
    assert text


def test_eos_gives_stop_before_max_tokens(smollm2, decoder):
    [(text, reason, count)] = _run(decoder, [GenerationRequest(
        _ids(smollm2, PROMPTS[0]), SamplingParams(max_tokens=200, temperature=0))])
    assert reason == "stop"
    assert count < 200
    assert "Paris" in text


def test_stop_string_truncates_and_finishes(smollm2, decoder):
    ids = _ids(smollm2, PROMPTS[0])
    [(full, _, _)] = _run(decoder, [GenerationRequest(ids, SamplingParams(max_tokens=24, temperature=0))])
    assert " is " in full
    [(text, reason, _)] = _run(decoder, [GenerationRequest(
        ids, SamplingParams(max_tokens=24, temperature=0, stop=(" is ",)))])
    assert reason == "stop"
    assert text == full[: full.index(" is ")]


def test_seeded_sampling_is_reproducible_and_batch_independent(smollm2, decoder):
    ids = [_ids(smollm2, p) for p in PROMPTS[:3]]
    sampled = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, seed=1234)
    greedy = SamplingParams(max_tokens=16, temperature=0.0)
    alone = _run(decoder, [GenerationRequest(ids[1], sampled)])[0]
    # The same seeded request inside a batch with a greedy and a differently seeded request.
    mixed = _run(decoder, [GenerationRequest(ids[0], greedy), GenerationRequest(ids[1], sampled),
                           GenerationRequest(ids[2], SamplingParams(max_tokens=16, temperature=1.2, seed=7))])
    assert mixed[1] == alone
    assert mixed[0] == _run(decoder, [GenerationRequest(ids[0], greedy)])[0]
    other_seed = _run(decoder, [GenerationRequest(ids[1], SamplingParams(
        max_tokens=16, temperature=0.9, top_p=0.9, seed=4321))])[0]
    assert other_seed[0] != alone[0]


def test_cancelled_row_leaves_the_batch_and_others_continue(smollm2, decoder):
    ids = [_ids(smollm2, "Write a long story about a dragon."), _ids(smollm2, PROMPTS[0])]
    requests = [GenerationRequest(ids[0], SamplingParams(max_tokens=60, temperature=0)),
                GenerationRequest(ids[1], SamplingParams(max_tokens=60, temperature=0))]
    reasons: dict[int, str] = {}
    steps = 0
    for step in decoder.generate(requests):
        steps += 1
        if steps == 3:
            requests[0].cancelled = True
        for i, out in enumerate(step):
            if out is not None and out.finish_reason:
                reasons[i] = out.finish_reason
    assert reasons[0] == "cancelled"
    assert reasons[1] == "stop"


def test_sampling_params_are_checked():
    with pytest.raises(ValueError, match="max_tokens must be an integer >= 1, got 0"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(max_tokens=1, top_p=0.0)


def test_stop_prefix_overlap_holds_back_partial_stop_strings():
    assert _stop_prefix_overlap("Hello wor", ("world",)) == 3
    assert _stop_prefix_overlap("Hello", ("world",)) == 0
    assert _stop_prefix_overlap("ab", ("bc", "abc")) == 2


def test_extreme_sampling_values_still_sample(smollm2, decoder):
    ids = _ids(smollm2, PROMPTS[0])
    greedy = _run(decoder, [GenerationRequest(ids, SamplingParams(max_tokens=6, temperature=0))])[0]
    for params in (SamplingParams(max_tokens=6, temperature=1e-300),
                   SamplingParams(max_tokens=6, temperature=1.0, top_p=1e-300, seed=1)):
        # Both degenerate to the most likely token at every step: the greedy answer.
        assert _run(decoder, [GenerationRequest(ids, params)])[0] == greedy


def test_top_p_keeps_smallest_prefix_reaching_mass():
    import torch

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = _top_p_filter(probs, 0.75)
    assert kept[2] == 0 and kept[3] == 0
    assert torch.isclose(kept.sum(), torch.tensor(1.0))
    assert torch.isclose(kept[0] / kept[1], torch.tensor(0.5 / 0.3))


def _drain(loop, outputs: dict) -> None:
    for request, out in loop.step():
        if out is not None:
            text, _ = outputs.get(id(request), ("", None))
            outputs[id(request)] = (text + out.text, out.finish_reason)


def test_rows_joining_a_running_batch_decode_as_if_alone(smollm2, decoder):
    from serve_app.generation import DecodeLoop

    greedy = SamplingParams(max_tokens=14, temperature=0.0)
    requests = [GenerationRequest(_ids(smollm2, p), greedy) for p in PROMPTS]
    alone = [_run(decoder, [GenerationRequest(r.prompt_ids, greedy)])[0][0] for r in requests]
    loop = DecodeLoop(smollm2.model, smollm2.tokenizer, smollm2.device, max_rows=8)
    outputs: dict = {}
    loop.submit(requests[:1])
    for _ in range(3):  # the first row is 3 tokens in, with a KV cache of its own length
        _drain(loop, outputs)
    loop.submit(requests[1:3])
    _drain(loop, outputs)
    _drain(loop, outputs)
    loop.submit(requests[3:])
    while not loop.idle:
        _drain(loop, outputs)
    assert [outputs[id(r)][0] for r in requests] == alone


def test_max_rows_caps_the_running_batch_and_queued_rows_wait(smollm2):
    from serve_app.generation import DecodeLoop

    loop = DecodeLoop(smollm2.model, smollm2.tokenizer, smollm2.device, max_rows=2)
    params = SamplingParams(max_tokens=4, temperature=0.0)
    requests = [GenerationRequest(_ids(smollm2, p), params) for p in PROMPTS[:3]]
    requests[2].cancelled = True  # cancelled while queued: must never be prefilled
    loop.submit(requests)
    outputs: dict = {}
    peak = 0
    while not loop.idle:
        _drain(loop, outputs)
        peak = max(peak, loop.active_rows)
    assert peak == 2
    assert outputs[id(requests[2])] == ("", "cancelled")
    assert requests[2].admitted_at is None
    assert all(outputs[id(r)][1] in ("length", "stop") for r in requests[:2])
