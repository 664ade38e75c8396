"""Tool specs: schema from type hints, loading by import path, argument validation naming the field."""

from __future__ import annotations

import pickle
from typing import Annotated

import pytest
from pydantic import Field

from serve_app.agent_tools.spec import load_tool, tool_spec
from common.errors import ConfigError, InvalidArguments


def greet(name: str, times: Annotated[int, Field(ge=1, le=3)] = 1, loud: bool = False) -> str:
    """Greet someone.

    Args:
        name: who to greet.
        times: how many greetings,
            at most three.
        loud: shout it.
    """
    text = " ".join([f"hello {name}"] * times)
    return text.upper() if loud else text


class Counter:
    """Count words with a configured separator."""

    def __init__(self, separator: str = " ") -> None:
        self.separator = separator

    async def __call__(self, text: str) -> int:
        """Args:
            text: the text to count words of.
        """
        return len([w for w in text.split(self.separator) if w])


def untyped(x):  # noqa: ANN001 - the point of the test
    return x


def test_schema_is_openai_function_parameters():
    spec = tool_spec(greet)
    assert spec.name == "greet"
    assert spec.description == "Greet someone."
    params = spec.parameters
    assert params["type"] == "object"
    assert params["required"] == ["name"]
    assert params["additionalProperties"] is False
    assert params["properties"]["times"] == {
        "type": "integer", "minimum": 1, "maximum": 3, "default": 1,
        "description": "how many greetings, at most three."}
    assert params["properties"]["name"]["description"] == "who to greet."
    assert "title" not in params
    assert spec.openai_tool()["function"]["name"] == "greet"


async def test_validation_names_the_field_and_invoke_calls_the_function():
    spec = tool_spec(greet)
    assert await spec.invoke(greet, {"name": "ada", "times": 2}) == "hello ada hello ada"
    with pytest.raises(InvalidArguments) as missing:
        spec.validate({})
    assert missing.value.param == "arguments.name"
    with pytest.raises(InvalidArguments) as bad:
        spec.validate({"name": "ada", "times": 9})
    assert bad.value.param == "arguments.times" and "less than or equal to 3" in bad.value.message
    with pytest.raises(InvalidArguments) as extra:
        spec.validate({"name": "ada", "color": "red"})
    assert extra.value.param == "arguments.color"
    with pytest.raises(InvalidArguments) as not_object:
        spec.validate(["ada"])
    assert not_object.value.param == "arguments"
    assert bad.value.envelope()["error"]["param"] == "arguments.times"
    assert bad.value.status_code == 422


async def test_class_tool_is_instantiated_with_init_kwargs_and_awaited():
    spec = tool_spec(Counter, init_kwargs={"separator": ","})
    assert spec.name == "counter"
    assert spec.parameters["properties"]["text"]["description"] == "the text to count words of."
    assert await spec.invoke(spec.instantiate(), {"text": "a,b,,c"}) == 3


def test_spec_survives_pickling_as_actors_receive_it():
    spec = pickle.loads(pickle.dumps(tool_spec(Counter, init_kwargs={"separator": ";"})))
    assert spec.init_kwargs == {"separator": ";"}
    assert spec.parameters["required"] == ["text"]


def test_load_tool_by_import_path():
    spec = load_tool("serve_app.agent_tools.calculator:calculator")
    assert spec.import_path == "serve_app.agent_tools.calculator:calculator"
    assert spec.parameters["required"] == ["expression"]


@pytest.mark.parametrize("path, message", [
    ("serve_app.agent_tools.calculator", "must look like 'package.module:attribute'"),
    ("no_such_pkg.mod:f", "cannot import module 'no_such_pkg.mod'"),
    ("serve_app.agent_tools.calculator:nope", "has no attribute 'nope'"),
    ("serve_app.agent_tools.calculator:_BINARY", "not a callable"),
])
def test_load_tool_errors_are_clear(path, message):
    with pytest.raises(ConfigError, match=message):
        load_tool(path)


def test_untyped_parameters_and_bad_names_are_refused():
    with pytest.raises(ConfigError, match="parameter 'x' has no type hint"):
        tool_spec(untyped)
    with pytest.raises(ConfigError, match="tool name must match"):
        tool_spec(greet, name="has space")
    with pytest.raises(ConfigError, match="init_kwargs are only for class tools"):
        tool_spec(greet, init_kwargs={"a": 1})
