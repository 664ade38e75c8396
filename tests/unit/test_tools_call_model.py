"""call_model through a real local completion: SmolLM2 greedy decoding behind an OpenAI-shaped callable."""

from __future__ import annotations

import pytest

from serve_app.agent_tools.call_model import CallModel
from serve_app.agent_tools.spec import tool_spec
from common.errors import InvalidArguments, ModelNotFound, ToolError


def _local_completion(lm, served_model="smollm2"):
    """An async OpenAI chat-completion function over the real model, as the Router would answer."""
    import torch

    seen = []

    async def complete(request):
        seen.append(request)
        if request["model"] != served_model:
            raise ModelNotFound(f"model '{request['model']}' does not exist", param="model")
        ids = lm.tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = lm.model.generate(**ids, max_new_tokens=request["max_tokens"], do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        text = lm.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= request["max_tokens"] else "stop"
        return {"model": served_model, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": int(ids["input_ids"].shape[1]),
                      "completion_tokens": int(len(new))}}

    return complete, seen


async def test_answers_through_the_model_with_system_and_limits(smollm2):
    complete, seen = _local_completion(smollm2)
    spec = tool_spec(CallModel, init_kwargs={"complete": complete, "model": "smollm2",
                                             "max_tokens_limit": 16})
    tool = spec.instantiate()
    result = await spec.invoke(tool, {"prompt": "What is the capital of France?",
                                      "system": "Answer in one word.", "max_tokens": 8})
    assert "paris" in result["content"].lower()
    assert result["usage"]["completion_tokens"] <= 8
    assert seen[0]["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert seen[0]["model"] == "smollm2" and seen[0]["temperature"] == 0.0

    with pytest.raises(InvalidArguments) as err:
        await tool("hi", max_tokens=17)
    assert err.value.param == "arguments.max_tokens" and err.value.status_code == 422
    assert len(seen) == 1  # refused before reaching the model


async def test_errors_of_the_model_reach_the_caller(smollm2):
    complete, _ = _local_completion(smollm2, served_model="other")
    with pytest.raises(ModelNotFound):
        await CallModel(complete, model="smollm2")("hello", max_tokens=2)

    async def empty(request):
        return {"model": request["model"], "choices": []}

    with pytest.raises(ToolError) as err:
        await CallModel(empty, model="m")("hello")
    assert err.value.code == "model_error"
