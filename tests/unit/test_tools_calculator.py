"""The calculator tool: correct arithmetic, no eval, and every bound enforced."""

from __future__ import annotations

import math

import pytest

from serve_app.agent_tools.calculator import Calculator, calculator
from common.errors import ToolError


@pytest.mark.parametrize("expression, expected", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("7 // 2", 3),
    ("7 % 4", 3),
    ("7 / 2", 3.5),
    ("-2 ** 2", -4),
    ("2 ** -1", 0.5),
    ("+3 - -3", 6),
    ("sqrt(16) + abs(-2)", 6.0),
    ("round(2.567, 2)", 2.57),
    ("min(3, 1, 2) + max(1, 5)", 6),
    ("log(e)", 1.0),
    ("cos(0) + sin(0)", 1.0),
    ("2 * pi", 2 * math.pi),
    ("1.5e3 + 1", 1501.0),
])
def test_arithmetic(expression, expected):
    assert calculator(expression)["result"] == pytest.approx(expected)


@pytest.mark.parametrize("expression, code", [
    ("__import__('os').system('true')", "invalid_expression"),
    ("().__class__", "invalid_expression"),
    ("x + 1", "invalid_expression"),
    ("'a' * 3", "invalid_expression"),
    ("True + 1", "invalid_expression"),
    ("[1, 2]", "invalid_expression"),
    ("sqrt(x=4)", "invalid_expression"),
    ("lambda: 1", "invalid_expression"),
    ("1 +", "invalid_expression"),
    ("1 / 0", "math_error"),
    ("sqrt(-1)", "math_error"),
    ("(-8) ** 0.5", "math_error"),
    ("9 ** 9 ** 9", "result_too_large"),
    ("2 ** 400", "result_too_large"),
    ("10.0 ** 99 * 10 ** 99", "result_too_large"),
    ("round(1, 10 ** 6)", "math_error"),
])
def test_refusals_carry_a_reason(expression, code):
    with pytest.raises(ToolError) as err:
        calculator(expression)
    assert err.value.code == code
    assert err.value.param == "expression"


def test_size_bounds():
    small = Calculator(max_expression_chars=20, max_nodes=10)
    with pytest.raises(ToolError, match="21 characters; the limit is 20"):
        small.evaluate("1+" * 10 + "1")
    with pytest.raises(ToolError, match="syntax nodes; the limit is 10"):
        small.evaluate("1+1+1+1+1+1")
    assert small.evaluate("1+1+1") == 3


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="max_nodes must be an integer >= 1, got 0"):
        Calculator(max_nodes=0)
