"""A safe evaluator for the arithmetic in worked solutions: ``ast`` with a node whitelist and size limits, never eval.

Values are exact ``Fraction``s, so ``0.1 + 0.2 = 0.3`` checks out. Anything outside plain arithmetic (names, calls,
attributes, comparisons, huge literals or powers) is refused with :class:`Refused`, which callers treat as "cannot
check", not as "wrong".
"""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction
from typing import Union

MAX_CHARS = 200  # longer expressions are prose the regex swept up, not a calculator step
MAX_NODES = 64
MAX_DIGITS = 30  # of any literal and of any intermediate numerator/denominator
MAX_EXPONENT = 64

_MAX_BITS = 100  # about MAX_DIGITS decimal digits
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_SYMBOLS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"), ("÷", "/"), ("−", "-"),
            ("x", "*"), ("X", "*"), ("^", "**"), ("$", ""), ("\\left", ""), ("\\right", ""))


class Refused(ValueError):
    """The expression is not plain bounded arithmetic, so it is not evaluated."""


def to_python(expr: str) -> str:
    """Rewrite calculator notation (``3 x 4``, ``2^3``, ``1,000``, ``$5``, ``\\times``) as a Python expression."""
    s = _THOUSANDS.sub("", expr.strip())
    for old, new in _SYMBOLS:
        s = s.replace(old, new)
    s = s.replace("{", "(").replace("}", ")")
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\d(.])", r"(\1/100)", s)  # a percent, unless a modulo operand follows
    return s


def evaluate(expr: str) -> Fraction:
    """The exact value of an arithmetic expression; raises Refused for anything else or anything too large."""
    if len(expr) > MAX_CHARS:
        raise Refused(f"longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(to_python(expr), mode="eval")
    except SyntaxError:
        raise Refused("not an arithmetic expression") from None
    budget = [MAX_NODES]
    return Fraction(_eval(tree.body, budget))


Number = Union[int, Fraction]


def _eval(node: ast.AST, budget: list[int]) -> Number:
    """Walk the tree, refusing any node outside the whitelist; ints stay ints until a division needs a Fraction."""
    budget[0] -= 1
    if budget[0] < 0:
        raise Refused(f"more than {MAX_NODES} syntax nodes")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refused("only numbers are allowed")
        if isinstance(value, int):
            return _bounded(value)
        text = repr(value)
        if len(text) > MAX_DIGITS or "e" in text or "inf" in text or "nan" in text:
            raise Refused("literal too large")
        return Fraction(text)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand, budget)
        return -value if isinstance(node.op, ast.USub) else value
    if not isinstance(node, ast.BinOp) or type(node.op) not in _BINARY:
        raise Refused(f"{type(getattr(node, 'op', node)).__name__} is not allowed")
    left, right = _eval(node.left, budget), _eval(node.right, budget)
    op = type(node.op)
    if op is ast.Pow:
        return _bounded(_power(Fraction(left), Fraction(right)))
    if op in (ast.Div, ast.FloorDiv, ast.Mod) and right == 0:
        raise Refused("division by zero")
    if op is ast.Div:
        out: Number = Fraction(left, right) if isinstance(left, int) and isinstance(right, int) else left / right
    else:
        out = _BINARY[op](left, right)
    if isinstance(out, Fraction) and out.denominator == 1:
        out = out.numerator
    return _bounded(out)


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
        raise Refused("exponent must be a whole number of at most 64")
    if base == 0 and exponent < 0:
        raise Refused("division by zero")
    # Bound the result before computing it: |base|^e has about e * digits(base) digits.
    size = max(len(str(base.numerator)), len(str(base.denominator)))
    if (size - 1) * abs(int(exponent)) > MAX_DIGITS:
        raise Refused("power too large")
    return base ** int(exponent)


def _bounded(value: Number) -> Number:
    num, den = (value, 1) if isinstance(value, int) else (value.numerator, value.denominator)
    if abs(num).bit_length() > _MAX_BITS or den.bit_length() > _MAX_BITS:
        raise Refused("value too large")
    return value


def parse_number(text: str) -> Fraction | None:
    """A written result such as ``18``, ``$1,200``, ``3.33`` or ``-0.5`` as a Fraction (None if not a plain number)."""
    s = _THOUSANDS.sub("", text.strip().replace("$", "").replace("−", "-")).rstrip(".")
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", s):
        return None
    return Fraction(s)


def result_matches(value: Fraction, written: str) -> bool:
    """Whether a written result equals the exact value, allowing rounding or truncation to the digits shown."""
    stated = parse_number(written)
    if stated is None:
        return False
    s = written.strip().rstrip(".")
    places = len(s.split(".", 1)[1]) if "." in s else 0
    return abs(stated - value) < Fraction(1, 10**places)
