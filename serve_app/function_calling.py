"""OpenAI function calling for chat models: tool prompts, forced calls, and parsing calls from text.

The ingress plans a request's tool use (`plan_tool_calls`), the model replica renders the prompt
(`render_chat_prompt`), and `serving` parses each choice's text (`parse_tool_calls`). Plain
Python: no Ray, no torch; the tokenizer is only used for its chat template.

Models that know tools render them with their own chat template. For the others (SmolLM2's
ChatML template ignores `tools`) the tools are described in the system prompt in the
Hermes/Qwen format that many open models were trained on, and calls are read back in it:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

CALL_START = "<tool_call>"
CALL_END = "</tool_call>"
_BLOCK = re.compile(re.escape(CALL_START) + r"(.*?)" + re.escape(CALL_END), re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
# json raises RecursionError, not ValueError, on input nested deeper than Python's stack allows.
_NOT_JSON = (ValueError, RecursionError)

_SYSTEM_BLOCK = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


# -- planning (ingress) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolPlan:
    """How one chat request uses tools, decided once at the ingress.

    Attributes:
        tools: OpenAI tool objects the model is shown.
        choice: "auto", "required" (some call), or "function" (a call of `function`).
        function: the function the model must call when `choice` is "function".
        parallel: whether more than one call per choice is kept (`parallel_tool_calls`).
    """

    tools: tuple[dict[str, Any], ...]
    choice: Literal["auto", "required", "function"] = "auto"
    function: str | None = None
    parallel: bool = True

    @property
    def names(self) -> frozenset[str]:
        return frozenset(tool["function"]["name"] for tool in self.tools)

    def payload(self) -> dict[str, Any]:
        """The fields the model replica needs: `tools` and `tool_choice` for the prompt."""
        choice: Any = {"name": self.function} if self.choice == "function" else self.choice
        return {"tools": list(self.tools), "tool_choice": choice}

    def stop(self) -> tuple[str, ...]:
        # Only the first call is kept, so decoding past its end would be wasted work.
        return () if self.parallel else (CALL_END,)


def plan_tool_calls(tools: Sequence[Any] | None, tool_choice: Any,
                    parallel_tool_calls: bool = True) -> ToolPlan | None:
    """The request's `ToolPlan`, or None when the model is shown no tools.

    Args:
        tools: the request's `tools` (protocol models or plain dicts).
        tool_choice: "none", "auto", "required", a named choice, or None (auto with tools).
        parallel_tool_calls: keep every call (True) or only the first.
    """
    if not tools or tool_choice == "none":
        return None
    dumped = tuple(_plain(tool) for tool in tools)
    if tool_choice in (None, "auto"):
        return ToolPlan(dumped, "auto", parallel=parallel_tool_calls)
    if tool_choice == "required" and len(dumped) > 1:
        return ToolPlan(dumped, "required", parallel=parallel_tool_calls)
    # With one tool, "required" can only mean that tool: name it, so the model writes arguments.
    function = (dumped[0] if tool_choice == "required" else _plain(tool_choice))["function"]["name"]
    return ToolPlan(dumped, "function", function, parallel=parallel_tool_calls)


def template_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Chat messages as Hugging Face chat templates expect them.

    Assistant `tool_calls` carry their `arguments` parsed into a dict (the JSON text is kept
    when it is not a JSON object); tool messages keep `tool_call_id`.
    """
    out = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.text()}
        if message.name:
            item["name"] = message.name
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name,
                              "arguments": _arguments_dict(call.function.arguments)}}
                for call in message.tool_calls]
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def _plain(value: Any) -> dict[str, Any]:
    return value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else dict(value)


def _arguments_dict(arguments: str) -> dict[str, Any] | str:
    try:
        value = json.loads(arguments)
    except _NOT_JSON:
        return arguments
    return value if isinstance(value, dict) else arguments


# -- prompting (model replica) --------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSupport:
    """What a tokenizer's chat template renders itself, found once by rendering probes.

    Attributes:
        tools: tool definitions passed as `tools=` appear in the prompt.
        tool_messages: assistant `tool_calls` and `role: "tool"` messages appear in the prompt.
        hermes: the template's own tool format is `<tool_call>` blocks (or we supply it).
    """

    tools: bool
    tool_messages: bool
    hermes: bool

    @classmethod
    def probe(cls, tokenizer: Any) -> TemplateSupport:
        name, result = "aegis_probe_function", "aegis probe result"
        user = [{"role": "user", "content": "hi"}]
        tool = {"type": "function", "function": {"name": name, "description": "probe",
                                                 "parameters": {"type": "object",
                                                                "properties": {}}}}
        try:
            with_tools = _apply(tokenizer, user, tools=[tool])
            tools = with_tools != _apply(tokenizer, user) and name in with_tools
        except Exception:  # templates may raise on arguments they do not know
            tools, with_tools = False, ""
        history = user + [
            {"role": "assistant", "content": "",
             "tool_calls": [{"id": "call_probe", "type": "function",
                             "function": {"name": name, "arguments": {"x": 1}}}]},
            {"role": "tool", "tool_call_id": "call_probe", "name": name, "content": result}]
        try:
            rendered = _apply(tokenizer, history)
            tool_messages = name in rendered and result in rendered
        except Exception:
            tool_messages = False
        return cls(tools=tools, tool_messages=tool_messages,
                   hermes=not tools or CALL_START in with_tools)


def render_chat_prompt(tokenizer: Any, messages: list[dict[str, Any]], *,
                       tools: list[dict[str, Any]] | None = None, tool_choice: Any = "auto",
                       support: TemplateSupport | None = None) -> tuple[str, str]:
    """The prompt text for a chat request, and the prefill it ends with.

    A forced call (`tool_choice` "required" or `{"name": ...}`) is made by writing the start of
    the call into the assistant turn, so that the model can only continue it; that prefill is
    returned so the caller can put it back in front of the generated text before parsing.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: `template_messages` output.
        tools: OpenAI tool objects to show the model, or None.
        tool_choice: "auto", "required" or `{"name": ...}`; ignored without tools.
        support: the tokenizer's `TemplateSupport` (probed here when not given).
    """
    support = support or TemplateSupport.probe(tokenizer)
    if not support.tool_messages and _has_tool_turns(messages):
        messages = _tool_turns_as_text(messages)
    if tools and not support.tools:
        messages, template_tools = _with_tools_in_system(messages, tools), None
    else:
        template_tools = tools or None
    try:
        text = _apply(tokenizer, messages, tools=template_tools)
    except Exception:
        if not _has_tool_turns(messages):
            raise
        # The template refused the structured turns (e.g. roles must alternate): use text.
        text = _apply(tokenizer, _tool_turns_as_text(messages), tools=template_tools)
    prefill = _prefill(tool_choice, tools, hermes=support.hermes) if tools else ""
    return text + prefill, prefill


def tools_system_block(tools: Sequence[dict[str, Any]]) -> str:
    """The Hermes/Qwen system-prompt section that describes `tools` to a model."""
    return _SYSTEM_BLOCK.format(tools="\n".join(json.dumps(tool, ensure_ascii=False)
                                                for tool in tools))


def format_call(name: str, arguments: Any) -> str:
    """One call as a `<tool_call>` block, as the model is asked to write it."""
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{CALL_START}\n{call}\n{CALL_END}"


def _apply(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                         tokenize=False)


def _prefill(tool_choice: Any, tools: Sequence[dict[str, Any]], *, hermes: bool) -> str:
    start = f"{CALL_START}\n" if hermes else ""
    if tool_choice == "required":
        return start + '{"name": "'
    if not isinstance(tool_choice, dict):
        return ""
    name = tool_choice["name"]
    schema = next((t["function"].get("parameters") for t in tools
                   if t["function"]["name"] == name), None)
    return start + '{"name": ' + json.dumps(name) + ', "arguments": ' + _open_arguments(schema)


def _open_arguments(schema: Any) -> str:
    """The start of the arguments object: its first required key, when the schema has one.

    Every valid call holds that key, so writing it forces nothing a correct answer would not
    contain; without it, small models tend to copy the JSON schema where the arguments belong.
    """
    required = schema.get("required") if isinstance(schema, dict) else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not (isinstance(required, list) and required and isinstance(required[0], str)):
        return "{"
    prop = properties.get(required[0]) if isinstance(properties, dict) else None
    quote = '"' if isinstance(prop, dict) and prop.get("type") == "string" else ""
    return "{" + json.dumps(required[0]) + ": " + quote


def _has_tool_turns(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def _tool_turns_as_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant calls as `<tool_call>` text; tool results as `<tool_response>` user turns.

    Consecutive tool results share one user turn, as Qwen's template renders them.
    """
    out: list[dict[str, Any]] = []
    previous_role = None
    for message in messages:
        if message["role"] == "tool":
            response = f"<tool_response>\n{message['content']}\n</tool_response>"
            if previous_role == "tool":
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response})
        elif message.get("tool_calls"):
            blocks = [format_call(call["function"]["name"], call["function"]["arguments"])
                      for call in message["tool_calls"]]
            content = "\n".join(([message["content"]] if message["content"] else []) + blocks)
            out.append({"role": "assistant", "content": content})
        else:
            out.append(message)
        previous_role = message["role"]
    return out


def _with_tools_in_system(messages: list[dict[str, Any]],
                          tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    block = tools_system_block(tools)
    if messages and messages[0]["role"] in ("system", "developer"):
        first = messages[0]
        content = f"{first['content']}\n\n{block}" if first["content"] else block
        return [{**first, "content": content}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


# -- parsing (serving) ----------------------------------------------------------------------------


@dataclass
class ParsedOutput:
    """A choice's text split into calls and what remains.

    Attributes:
        content: the text with the parsed calls removed; None when nothing else was said.
        tool_calls: OpenAI tool call objects (`arguments` is a JSON string).
    """

    content: str | None
    tool_calls: list[dict[str, Any]]


def parse_tool_calls(text: str, names: frozenset[str] | set[str], *,
                     parallel: bool = True) -> ParsedOutput:
    """Extract the calls a model wrote into `text`.

    Reads `<tool_call>` blocks, a final block cut off before its end tag (max_tokens, or the
    `</tool_call>` stop) whose JSON is complete, and, when there is no block, an output that is
    nothing but a JSON call (or list of calls). A block whose JSON is invalid or names a
    function not in `names` stays in the content: calls are never guessed.

    Args:
        text: the whole generated text, including any prefill.
        names: the functions the request offered.
        parallel: keep every call (True) or only the first.

    Returns:
        The calls and the remaining content; `text` unchanged as content when there are none.
    """
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    pos = 0
    for match in _BLOCK.finditer(text):
        found = _calls_from_json(match.group(1).strip(), names)
        if found is None:
            continue
        kept.append(text[pos:match.start()])
        calls += found
        pos = match.end()
    rest = text[pos:]
    start = rest.rfind(CALL_START)
    if start != -1 and CALL_END not in rest[start:]:
        found, tail = _unterminated(rest[start + len(CALL_START):], names)
        if found is not None:
            calls += found
            rest = rest[:start] + tail
    if calls:
        content = ("".join(kept) + rest).strip() or None
    else:
        bare = _bare_calls(text, names)
        if bare is None:
            return ParsedOutput(content=text, tool_calls=[])
        calls, content = bare, None
    if not parallel:
        calls = calls[:1]
    return ParsedOutput(content=content, tool_calls=[_call_object(*call) for call in calls])


def _unterminated(body: str, names: frozenset[str] | set[str]
                  ) -> tuple[list[tuple[str, dict]] | None, str]:
    stripped = body.lstrip()
    try:
        value, end = json.JSONDecoder().raw_decode(stripped)
    except _NOT_JSON:
        return None, body
    found = _calls_from_value(value, names)
    tail = stripped[end:]
    if CALL_END.startswith(tail.strip()):  # a cut-off end tag is not content
        tail = ""
    return found, tail


def _bare_calls(text: str, names: frozenset[str] | set[str]) -> list[tuple[str, dict]] | None:
    stripped = text.strip()
    if not stripped.startswith(("{", "[", "```")):
        return None
    fenced = _FENCE.match(stripped)
    return _calls_from_json(fenced.group(1) if fenced else stripped, names)


def _calls_from_json(raw: str, names: frozenset[str] | set[str]
                     ) -> list[tuple[str, dict]] | None:
    try:
        value = json.loads(raw)
    except _NOT_JSON:
        return None
    return _calls_from_value(value, names)


def _calls_from_value(value: Any, names: frozenset[str] | set[str]
                      ) -> list[tuple[str, dict]] | None:
    items = value if isinstance(value, list) else [value]
    calls = [_one_call(item, names) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


def _one_call(item: Any, names: frozenset[str] | set[str]) -> tuple[str, dict] | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
            or item["name"] not in names:
        return None
    # "parameters" is how Llama-style templates spell it; a call with no arguments is {}.
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except _NOT_JSON:
            return None
    if not isinstance(arguments, dict):
        return None
    return item["name"], arguments


def _call_object(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


__all__ = ["CALL_END", "CALL_START", "ParsedOutput", "TemplateSupport", "ToolPlan",
           "format_call", "parse_tool_calls", "plan_tool_calls", "render_chat_prompt",
           "template_messages", "tools_system_block"]
