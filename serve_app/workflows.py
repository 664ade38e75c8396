"""Workflows: YAML-declared tool and model steps, wired by `${...}` references, run concurrently.

A workflow is a list of steps. Each step calls one tool (`tool:` + `arguments:`) or asks one model
(`model:` + `prompt:`), and may use the workflow's inputs and earlier steps' results through
references in its strings:

    ${inputs.question}                   an input
    ${steps.search.results.0.text}       a step's result, by dotted keys and list indices
    ${steps.search.results[*].id}        `[*]` maps the rest of the path over a list
    ${steps.page.text|truncate:1500}     the one filter: the value as text, at most N characters

A string that is exactly one reference becomes the raw value (its type kept); a reference inside a
longer string is rendered as text (a string as it is, a list of strings joined by blank lines,
anything else as compact JSON). A step may only use steps listed before it, which rules out
cycles; it starts as soon as those have finished, so independent steps run concurrently.

Plain Python (no Ray, no FastAPI): the caller passes `call_tool` and `call_model` coroutines.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from common.errors import (
    ConfigError,
    InvalidArguments,
    ToolFailed,
    WorkflowStepFailed,
    WorkflowTimeout,
    find_aegis_error,
)

from serve_app.workflow_refs import Ref, SpecError, references, render, render_text

__all__ = ["InputSpec", "StepSpec", "WorkflowRunner", "WorkflowSpec", "check_workflows",
           "load_workflows"]

logger = logging.getLogger(__name__)

_WORKFLOW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INPUT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list, tuple), "object": (Mapping,)}

ToolCaller = Callable[[str, dict[str, Any]], Awaitable[Any]]
ModelCaller = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
OutputInspector = Callable[[str, str, Any], Awaitable[Any]]


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """One workflow input: a JSON type, a description, and a default that makes it optional."""

    type: Literal["string", "integer", "number", "boolean", "array", "object"]
    description: str = ""
    default: Any = None

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set

    @model_validator(mode="after")
    def _default_has_the_type(self) -> InputSpec:
        if not self.required and self.default is not None and not _is_type(self.default, self.type):
            raise SpecError(("default",), f"default must be of type {self.type}, "
                                           f"got {_json_type(self.default)}")
        return self


class StepSpec(_Strict):
    """One step: a tool call with `arguments`, or a chat completion on `model` with `prompt`."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    tool: str | None = Field(None, min_length=1)
    model: str | None = Field(None, min_length=1)
    arguments: dict[str, Any] = {}
    prompt: str | None = None
    system: str | None = None
    max_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    timeout_s: float = Field(60.0, gt=0)
    _refs: tuple[tuple[tuple[str | int, ...], Ref], ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _one_kind_and_its_fields(self) -> StepSpec:
        if self.tool is None and self.model is None:
            raise SpecError((), "a step needs exactly one of 'tool' or 'model'")
        if self.tool is not None and self.model is not None:
            raise SpecError(("model",), "a step has either 'tool' or 'model', not both")
        foreign = ({"prompt", "system", "max_tokens", "temperature"} if self.tool is not None
                   else {"arguments"})
        misplaced = sorted(foreign & self.model_fields_set)
        if misplaced:
            other = "model" if self.tool is not None else "tool"
            raise SpecError((misplaced[0],), f"'{misplaced[0]}' belongs to {other} steps")
        if self.model is not None and self.prompt is None:
            raise SpecError(("prompt",), "a model step needs a 'prompt'")
        fields = {"arguments": self.arguments, "prompt": self.prompt, "system": self.system}
        self._refs = tuple(references(fields, ()))
        return self

    @property
    def kind(self) -> str:
        return "tool" if self.tool is not None else "model"

    @property
    def target(self) -> str:
        """The tool or model this step calls."""
        return self.tool if self.tool is not None else self.model  # type: ignore[return-value]

    @property
    def depends_on(self) -> frozenset[str]:
        """Ids of the steps whose results this step uses."""
        return frozenset(ref.name for _, ref in self._refs if ref.root == "steps")


class WorkflowSpec(_Strict):
    """A validated workflow: every reference points at a declared input or an earlier step."""

    name: str = Field(pattern=_WORKFLOW_NAME_RE.pattern)
    description: str = ""
    timeout_s: float = Field(120.0, gt=0)
    inputs: dict[str, InputSpec] = {}
    steps: tuple[StepSpec, ...] = Field(min_length=1)
    output: Any = None

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, inputs: dict[str, InputSpec]) -> dict[str, InputSpec]:
        for name in inputs:
            if not _INPUT_NAME_RE.match(name):
                raise SpecError((name,), f"input name must match {_INPUT_NAME_RE.pattern}")
        return inputs

    @model_validator(mode="after")
    def _references_resolve(self) -> WorkflowSpec:
        position: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            if step.id in position:
                raise SpecError(("steps", index, "id"), f"duplicate step id '{step.id}' "
                                                         f"(also steps.{position[step.id]})")
            position[step.id] = index
        for index, step in enumerate(self.steps):
            for loc, ref in step._refs:
                self._check_ref(ref, ("steps", index, *loc), position, before=index)
        for loc, ref in references(self.output, ("output",)):
            self._check_ref(ref, loc, position, before=len(self.steps))
        return self

    def _check_ref(self, ref: Ref, loc: tuple[str | int, ...], position: dict[str, int],
                   before: int) -> None:
        where = f"${{{ref.source}}}"
        if ref.root == "inputs" and ref.name not in self.inputs:
            raise SpecError(loc, f"{where}: unknown input '{ref.name}'")
        if ref.root == "steps":
            if ref.name not in position:
                raise SpecError(loc, f"{where}: unknown step '{ref.name}'")
            if position[ref.name] == before:
                raise SpecError(loc, f"{where}: a step cannot use its own result")
            if position[ref.name] > before:
                # Only earlier steps may be used: that makes the list order a valid run order
                # and rules out cycles without a graph search.
                raise SpecError(loc, f"{where}: step '{ref.name}' comes later "
                                      f"(steps.{position[ref.name]}); a step may only use steps "
                                      f"listed before it, so there are no cycles")

    @property
    def uses_tools(self) -> list[str]:
        return sorted({step.tool for step in self.steps if step.tool is not None})

    @property
    def uses_models(self) -> list[str]:
        return sorted({step.model for step in self.steps if step.model is not None})

    def input_schema(self) -> dict[str, Any]:
        """The inputs as a JSON schema object (what `POST .../run` takes as `inputs`)."""
        properties: dict[str, Any] = {}
        for name, spec in self.inputs.items():
            prop: dict[str, Any] = {"type": spec.type}
            if spec.description:
                prop["description"] = spec.description
            if not spec.required:
                prop["default"] = spec.default
            properties[name] = prop
        return {"type": "object", "properties": properties,
                "required": [name for name, spec in self.inputs.items() if spec.required],
                "additionalProperties": False}

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/workflows` lists; `uses_tools` and `uses_models` are for RBAC."""
        return {"name": self.name, "description": self.description, "timeout_s": self.timeout_s,
                "inputs": self.input_schema(),
                "steps": [{"id": step.id, step.kind: step.target,
                           "depends_on": sorted(step.depends_on)} for step in self.steps],
                "uses_tools": self.uses_tools, "uses_models": self.uses_models}

    def validate_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The inputs checked against their types, with defaults filled in.

        Raises:
            InvalidArguments: 422; `param` is `inputs.<name>` (an unknown, missing or mistyped
                input) or `inputs` when they are not a JSON object.
        """
        inputs = {} if inputs is None else inputs
        if not isinstance(inputs, Mapping):
            raise InvalidArguments(f"inputs must be a JSON object, got {_json_type(inputs)}",
                                   param="inputs")
        for name in inputs:
            if name not in self.inputs:
                raise InvalidArguments(f"unknown input '{name}'; workflow '{self.name}' takes "
                                       f"{', '.join(self.inputs) or 'no inputs'}",
                                       param=f"inputs.{name}")
        values: dict[str, Any] = {}
        for name, spec in self.inputs.items():
            if name not in inputs:
                if spec.required:
                    raise InvalidArguments(f"inputs.{name} is required", param=f"inputs.{name}")
                values[name] = copy.deepcopy(spec.default)
            elif not _is_type(inputs[name], spec.type):
                raise InvalidArguments(f"inputs.{name} must be of type {spec.type}, got "
                                       f"{_json_type(inputs[name])}", param=f"inputs.{name}")
            else:
                values[name] = inputs[name]
        return values


def load_workflows(raw: Mapping[str, Any] | None = None,
                   file: str | Path | None = None) -> dict[str, WorkflowSpec]:
    """Validate workflows from a config mapping and/or a YAML file, merged by name.

    Args:
        raw: `{name: workflow}`, e.g. the `workflows:` entry of the app config.
        file: a YAML file whose top level is `workflows: {name: workflow}`.

    Raises:
        ConfigError: an unreadable file, a bad name, a name defined twice, or an invalid
            workflow; the message names the field (`workflows.<name>.steps.<i>.<field>`).
    """
    sources: list[tuple[str, Any]] = []
    if file is not None:
        try:
            document = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"workflow file {file}: {exc}") from None
        if not isinstance(document, Mapping) or set(document) != {"workflows"}:
            raise ConfigError(f"workflow file {file}: the top level must be one 'workflows:' "
                              "mapping")
        sources.append((f"{file}: ", document["workflows"] or {}))
    if raw is not None:
        sources.append(("", raw))
    workflows: dict[str, WorkflowSpec] = {}
    for origin, entries in sources:
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{origin}workflows must be a mapping of name to workflow")
        for name, body in entries.items():
            where = f"{origin}workflows.{name}"
            if not isinstance(name, str) or not _WORKFLOW_NAME_RE.match(name):
                raise ConfigError(f"{where}: workflow name must match {_WORKFLOW_NAME_RE.pattern}")
            if name in workflows:
                raise ConfigError(f"{where}: workflow '{name}' is defined twice")
            if not isinstance(body, Mapping) or "name" in body:
                raise ConfigError(f"{where}: must be a mapping (the name is its key, not a field)")
            try:
                workflows[name] = WorkflowSpec.model_validate({**body, "name": name})
            except ValidationError as exc:
                raise ConfigError(_format_errors(exc, where)) from None
    return workflows


def check_workflows(workflows: Mapping[str, WorkflowSpec], tool_names: Iterable[str],
                    model_names: Iterable[str]) -> None:
    """Check that every tool and model the workflows call is configured.

    Raises:
        ConfigError: naming `workflows.<name>.steps.<i>.tool` (or `.model`).
    """
    known = {"tool": set(tool_names), "model": set(model_names)}
    for name, spec in workflows.items():
        for index, step in enumerate(spec.steps):
            if step.target not in known[step.kind]:
                raise ConfigError(f"workflows.{name}.steps.{index}.{step.kind}: unknown "
                                  f"{step.kind} '{step.target}' (configured: "
                                  f"{', '.join(sorted(known[step.kind])) or 'none'})")


class WorkflowRunner:
    """Runs workflows: each step as soon as the steps it uses are done, under two deadlines."""

    def __init__(self, call_tool: ToolCaller, call_model: ModelCaller,
                 inspect_tool_output: OutputInspector | None = None) -> None:
        """Args:
            call_tool: `call_tool(tool_name, arguments) -> result`.
            call_model: `call_model(model, chat_request) -> chat_response`, OpenAI-shaped bodies.
            inspect_tool_output: `inspect(step_id, tool_name, result) -> result`, awaited on every
                tool result before any other step can use it; raising an AegisError fails the step.
        """
        self._call_tool = call_tool
        self._call_model = call_model
        self._inspect = inspect_tool_output

    async def run(self, spec: WorkflowSpec, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Run `spec` on `inputs`.

        Returns:
            `{"workflow", "output", "steps": {id: {"tool"|"model", "duration_ms", "result"}},
            "duration_ms"}`; `output` is the rendered `output:` template, or the last step's result.

        Raises:
            InvalidArguments: the inputs do not match the workflow's (before any step runs).
            WorkflowStepFailed: a step failed or ran past its `timeout_s`; the steps still
                running were cancelled.
            WorkflowTimeout: the workflow ran past its `timeout_s`; running steps were cancelled.
        """
        context = {"inputs": spec.validate_inputs(inputs), "steps": {}}
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.timeout_s
        waiting = list(spec.steps)
        running: dict[asyncio.Task[dict[str, Any]], StepSpec] = {}
        records: dict[str, dict[str, Any]] = {}
        try:
            while waiting or running:
                for step in [s for s in waiting if s.depends_on <= records.keys()]:
                    waiting.remove(step)
                    task = asyncio.create_task(self._run_step(step, context),
                                               name=f"workflow {spec.name} step {step.id}")
                    running[task] = step
                done, _ = await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    still = ", ".join(step.id for step in running.values())
                    raise WorkflowTimeout(f"workflow '{spec.name}' ran past its "
                                          f"{spec.timeout_s:g} s timeout; still running: {still}")
                for task in sorted(done, key=lambda t: spec.steps.index(running[t])):
                    step = running.pop(task)
                    records[step.id] = task.result()  # a failed step raises here
                    context["steps"][step.id] = records[step.id]["result"]
        finally:
            # Siblings of a failed step (or all steps, on a timeout or when the caller gives up)
            # are cancelled and awaited, so no tool call outlives the request that started it.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if spec.output is None:
            output = context["steps"][spec.steps[-1].id]
        else:
            output = render(spec.output, context)
        return {"workflow": spec.name, "output": output, "steps": records,
                "duration_ms": (time.perf_counter() - started) * 1000}

    async def _run_step(self, step: StepSpec, context: Mapping[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self._execute(step, context), step.timeout_s)
        except asyncio.TimeoutError:
            raise WorkflowStepFailed(step.id, WorkflowTimeout(
                f"ran past its {step.timeout_s:g} s timeout and was cancelled",
                code="step_timeout")) from None
        except Exception as exc:
            cause = find_aegis_error(exc)
            if cause is None:
                # The client sees only which step failed; the details go to the log.
                logger.exception("workflow step '%s' (%s %s) raised", step.id, step.kind,
                                 step.target)
                cause = ToolFailed(f"{step.kind} '{step.target}' failed unexpectedly")
            raise WorkflowStepFailed(step.id, cause) from exc
        return {step.kind: step.target, "duration_ms": (time.perf_counter() - started) * 1000,
                "result": result}

    async def _execute(self, step: StepSpec, context: Mapping[str, Any]) -> Any:
        if step.tool is not None:
            result = await self._call_tool(step.tool, render(step.arguments, context))
            if self._inspect is not None:
                result = await self._inspect(step.id, step.tool, result)
            return result
        messages = [{"role": "user", "content": render_text(step.prompt or "", context)}]
        if step.system is not None:
            messages.insert(0, {"role": "system", "content": render_text(step.system, context)})
        request = {"model": step.model, "messages": messages, "max_tokens": step.max_tokens,
                   "temperature": step.temperature, "stream": False}
        response = await self._call_model(step.model, request)  # type: ignore[arg-type]
        try:
            choice = response["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise ToolFailed(f"model '{step.model}' returned no text answer", code="model_error")
        return {"content": content, "finish_reason": choice.get("finish_reason"),
                "usage": response.get("usage"), "model": response.get("model", step.model)}


def _is_type(value: Any, json_type: str) -> bool:
    # bool is an int in Python, but true is not a JSON integer or number.
    if isinstance(value, bool) and json_type != "boolean":
        return False
    return isinstance(value, _JSON_TYPES[json_type])


def _json_type(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return "null" if value is None else type(value).__name__


def _format_errors(exc: ValidationError, prefix: str) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc, message = tuple(error["loc"]), error["msg"]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SpecError):
            loc, message = (*loc, *cause.loc), str(cause)
        lines.append(".".join(str(part) for part in (prefix, *loc)) + f": {message}")
    return "\n".join(lines)
