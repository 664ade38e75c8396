"""`calculator`: arithmetic by walking a parsed AST (never `eval`), bounded in size and magnitude."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from common.errors import ToolError

__all__ = ["Calculator", "calculator"]

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos,
                                                         ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "log": math.log, "sin": math.sin, "cos": math.cos,
    "abs": abs, "round": round, "min": min, "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class Calculator:
    """Evaluate an arithmetic expression: + - * / // % **, parentheses, sqrt log sin cos abs round min max, pi e.

    Bounds keep one call cheap whatever the input: the expression's length, its number of AST
    nodes, the size of an exponent, and the magnitude of every intermediate result.
    """

    # Free-text output fields to scan for indirect prompt injection: none (a number and the
    # caller's own expression).
    untrusted_output: tuple[str, ...] = ()

    def __init__(self, *, max_expression_chars: int = 1000, max_nodes: int = 200,
                 max_exponent: float = 1000.0, max_magnitude: float = 1e100) -> None:
        for label, value in (("max_expression_chars", max_expression_chars),
                             ("max_nodes", max_nodes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        if max_exponent <= 0 or max_magnitude <= 0:
            raise ValueError("max_exponent and max_magnitude must be > 0")
        self._max_chars = max_expression_chars
        self._max_nodes = max_nodes
        self._max_exponent = max_exponent
        self._max_magnitude = max_magnitude

    def __call__(self, expression: Annotated[str, Field(min_length=1)]) -> dict[str, Any]:
        """Evaluate the expression.

        Args:
            expression: arithmetic such as "2 * (3 + 4) ** 2" or "sqrt(2) * pi".
        """
        return {"expression": expression, "result": self.evaluate(expression)}

    def evaluate(self, expression: str) -> int | float:
        """The value of `expression`.

        Raises:
            ToolError: a syntax error, an unsupported construct, or a bound exceeded; the code
                says which (invalid_expression, expression_too_large, result_too_large,
                math_error).
        """
        if len(expression) > self._max_chars:
            raise ToolError(f"expression is {len(expression)} characters; the limit is "
                            f"{self._max_chars}", param="expression", code="expression_too_large")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError as exc:
            raise ToolError(f"invalid expression: {exc.msg}", param="expression",
                            code="invalid_expression") from None
        nodes = sum(1 for _ in ast.walk(tree))
        if nodes > self._max_nodes:
            raise ToolError(f"expression has {nodes} syntax nodes; the limit is {self._max_nodes}",
                            param="expression", code="expression_too_large")
        try:
            return self._eval(tree.body)
        except ToolError:
            raise
        except ZeroDivisionError:
            raise ToolError("division by zero", param="expression", code="math_error") from None
        except (ValueError, OverflowError, TypeError) as exc:
            raise ToolError(f"math error: {exc}", param="expression", code="math_error") from None

    def _eval(self, node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise self._unsupported(f"constant {node.value!r}")
            return self._bounded(node.value)
        if isinstance(node, ast.Name):
            if node.id not in _CONSTANTS:
                raise self._unsupported(f"name '{node.id}'")
            return _CONSTANTS[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._bounded(_UNARY[type(node.op)](self._eval(node.operand)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow):
                self._check_power(left, right)
            return self._bounded(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.Call):
            if (not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS
                    or node.keywords):
                raise self._unsupported(f"call {ast.unparse(node.func)}(...)")
            args = [self._eval(arg) for arg in node.args]
            if node.func.id == "round" and len(args) == 2:
                # round(x, n) with n huge builds a huge int for ints; keep n small.
                if not isinstance(args[1], int) or abs(args[1]) > 15:
                    raise ToolError("round() digits must be an integer in [-15, 15]",
                                    param="expression", code="math_error")
            return self._bounded(_FUNCTIONS[node.func.id](*args))
        raise self._unsupported(type(node).__name__)

    def _check_power(self, base: int | float, exponent: int | float) -> None:
        # Checked before computing: 9 ** 9 ** 9 would otherwise take minutes and gigabytes.
        if abs(exponent) > self._max_exponent:
            raise ToolError(f"exponent {exponent} exceeds the limit of {self._max_exponent:g}",
                            param="expression", code="result_too_large")
        if abs(base) > 1 and abs(exponent) * math.log10(abs(base)) > math.log10(self._max_magnitude):
            raise ToolError(f"result exceeds the limit of {self._max_magnitude:g}",
                            param="expression", code="result_too_large")

    def _bounded(self, value: Any) -> int | float:
        if isinstance(value, complex):
            raise ToolError("result is a complex number", param="expression", code="math_error")
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError("result is not finite", param="expression", code="math_error")
        if abs(value) > self._max_magnitude:
            raise ToolError(f"result exceeds the limit of {self._max_magnitude:g}",
                            param="expression", code="result_too_large")
        return value

    @staticmethod
    def _unsupported(what: str) -> ToolError:
        return ToolError(f"unsupported in an expression: {what}", param="expression",
                         code="invalid_expression")


def calculator(expression: Annotated[str, Field(min_length=1)]) -> dict[str, Any]:
    """Evaluate an arithmetic expression with the default bounds.

    Args:
        expression: arithmetic such as "2 * (3 + 4) ** 2" or "sqrt(2) * pi".
    """
    return _DEFAULT(expression)


_DEFAULT = Calculator()
