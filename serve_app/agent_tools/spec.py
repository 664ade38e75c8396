"""A tool: a callable named by import path, its arguments a pydantic model derived from type hints."""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from common.errors import ConfigError, InvalidArguments

__all__ = ["ToolSpec", "load_tool", "tool_spec"]

# OpenAI function names: letters, digits, underscores and dashes, at most 64.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ARG_LINE_RE = re.compile(r"^(\*{0,2}\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """What the pool, the ingress and a model need to know about one tool.

    Attributes:
        name: the function name models and the API use.
        description: first paragraph of the docstring.
        target: the function, or the class instantiated once per actor with `init_kwargs`.
        args_model: pydantic model of the call's arguments (extra keys forbidden).
        init_kwargs: constructor arguments when `target` is a class.
        import_path: "package.module:attribute" when loaded by path.
    """

    name: str
    description: str
    target: Callable[..., Any]
    args_model: type[BaseModel]
    init_kwargs: Mapping[str, Any] = field(default_factory=dict)
    import_path: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # The args model is created at run time and cannot be pickled by reference; rebuild it
        # from the target on the other side (an actor receives specs this way).
        return (_rebuild, (self.target, self.name, self.description, dict(self.init_kwargs),
                           self.import_path))

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.target)

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON schema of the arguments, in the OpenAI function-calling `parameters` format."""
        schema = self.args_model.model_json_schema()
        return _strip_titles(schema)

    def openai_tool(self) -> dict[str, Any]:
        """The `tools[]` entry of an OpenAI chat request for this tool."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.parameters}}

    def validate(self, arguments: Any) -> BaseModel:
        """Validate call arguments into the args model.

        Raises:
            InvalidArguments: 422; `param` names the first offending field (`arguments.x`).
        """
        if isinstance(arguments, BaseModel) and isinstance(arguments, self.args_model):
            return arguments
        if not isinstance(arguments, Mapping):
            raise InvalidArguments(f"arguments of tool '{self.name}' must be a JSON object, "
                                   f"got {type(arguments).__name__}", param="arguments")
        try:
            return self.args_model.model_validate(dict(arguments))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            param = ".".join(str(part) for part in first["loc"]) or "arguments"
            raise InvalidArguments(f"{param}: {first['msg']}", param=f"arguments.{param}") from None

    def instantiate(self) -> Callable[..., Any]:
        """The callable to invoke: the function itself, or a new instance of the class."""
        if self.is_class:
            return self.target(**self.init_kwargs)
        return self.target

    async def invoke(self, instance: Callable[..., Any], arguments: Any) -> Any:
        """Validate `arguments`, call `instance` with them and await the result if needed."""
        model = self.validate(arguments)
        result = instance(**{name: getattr(model, name) for name in type(model).model_fields})
        if inspect.isawaitable(result):
            result = await result
        return result


def tool_spec(target: Callable[..., Any], *, name: str | None = None,
              description: str | None = None, init_kwargs: Mapping[str, Any] | None = None,
              import_path: str | None = None) -> ToolSpec:
    """Describe a function, or a class with `__call__`, as a tool.

    Args:
        target: the function or class; every call parameter needs a type hint.
        name: tool name (default: the attribute name, snake_case).
        description: default: the first paragraph of the docstring.
        init_kwargs: constructor arguments of a class target.
        import_path: recorded for display and for the config.

    Raises:
        ConfigError: the target is not callable, a parameter lacks a type hint or is *args/**kwargs,
            or the name is not a valid function name.
    """
    if not callable(target):
        raise ConfigError(f"tool {target!r} is not callable")
    if init_kwargs and not inspect.isclass(target):
        raise ConfigError(f"tool {_qualname(target)}: init_kwargs are only for class tools")
    function = target.__call__ if inspect.isclass(target) else target
    if inspect.isclass(target) and function is object.__call__:
        raise ConfigError(f"tool class {_qualname(target)} has no __call__ method")
    name = name or _snake(getattr(target, "__name__", type(target).__name__))
    if not _NAME_RE.match(name):
        raise ConfigError(f"tool name must match {_NAME_RE.pattern}, got {name!r}")
    doc = inspect.getdoc(target) or ""
    call_doc = inspect.getdoc(function) if inspect.isclass(target) else doc
    arg_docs = _arg_docs(call_doc or "")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"tool {name}: cannot resolve type hints: {exc}") from exc
    fields: dict[str, Any] = {}
    for index, param in enumerate(inspect.signature(function).parameters.values()):
        if inspect.isclass(target) and index == 0:
            continue  # self
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {name}: *args/**kwargs are not allowed ({param.name})")
        if param.name not in hints:
            raise ConfigError(f"tool {name}: parameter '{param.name}' has no type hint")
        default = ... if param.default is param.empty else param.default
        annotation = hints[param.name]
        if param.name in arg_docs:
            annotation = typing.Annotated[annotation, _described(arg_docs[param.name])]
        fields[param.name] = (annotation, default)
    model = create_model(f"{_camel(name)}Arguments",
                         __config__=ConfigDict(extra="forbid"), **fields)
    summary = description if description is not None else doc.split("\n\n")[0].replace("\n", " ")
    return ToolSpec(name=name, description=summary.strip(), target=target, args_model=model,
                    init_kwargs=dict(init_kwargs or {}), import_path=import_path)


def load_tool(path: str, *, name: str | None = None,
              init_kwargs: Mapping[str, Any] | None = None,
              description: str | None = None) -> ToolSpec:
    """Import "package.module:attribute" and describe it as a tool.

    Raises:
        ConfigError: a malformed path, a module that does not import, a missing attribute,
            or a target `tool_spec` refuses.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"tool path must look like 'package.module:attribute', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"tool path {path!r}: cannot import module '{module_name}': {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"tool path {path!r}: module '{module_name}' has no attribute "
                              f"'{attribute}'")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"tool path {path!r} names a {type(target).__name__}, not a callable")
    return tool_spec(target, name=name or _snake(attribute.split(".")[-1]),
                     description=description, init_kwargs=init_kwargs, import_path=path)


def _rebuild(target: Any, name: str, description: str, init_kwargs: dict[str, Any],
             import_path: str | None) -> ToolSpec:
    return tool_spec(target, name=name, description=description, init_kwargs=init_kwargs,
                     import_path=import_path)


def _described(text: str) -> Any:
    from pydantic import Field

    return Field(description=text)


def _arg_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style "Args:" section."""
    out: dict[str, str] = {}
    in_args, current, indent = False, None, None
    for raw in doc.splitlines():
        line = raw.strip()
        if line in ("Args:", "Arguments:"):
            in_args, current, indent = True, None, None
            continue
        if not in_args:
            continue
        if not line:
            continue
        this_indent = len(raw) - len(raw.lstrip())
        if indent is None:
            indent = this_indent
        if this_indent < indent or (line.endswith(":") and this_indent == 0):
            break
        match = _ARG_LINE_RE.match(line)
        if this_indent == indent and match:
            current = match.group(1)
            out[current] = match.group(2)
        elif current is not None:
            out[current] = f"{out[current]} {line}".strip()
    return out


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items()
                if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _snake(text: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", text).lower()


def _camel(text: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_-]", text))


def _qualname(target: Any) -> str:
    return getattr(target, "__qualname__", repr(target))
