"""Answers with a shape that the symbolic parser flattens: sequences and ratios with ellipses, and solution sets.

- ``1, 3, 5, \\ldots, 2n-1`` parses (math-verify) to a single number, so two different sequences compared equal. Here
  a sequence is compared as a sequence: same brackets, same separator, same length, ellipses in the same places, and
  every other item equal. An ellipsis inside an expression (``1 + 2 + \\cdots + n``) is not compared at all.
- ``x \\le 2`` and ``(-\\infty, 2]`` are the same set of solutions; ``m \\in [\\sqrt{2}, \\infty)`` parses to
  ``Eq(m, Interval)``. :func:`solution_set` turns a condition on one variable into its set (sympy, in the worker).
"""

from __future__ import annotations

import re
from typing import Any, Callable

ELLIPSIS = "…"
_ELLIPSIS = re.compile(r"\\(?:[lcv]?dots[cbmio]?|ldotp|cdotp)\b|\.\s*\.\s*\.|…")
_INLINE_MATH = re.compile(r"\$\$?([^$]+?)\$\$?|\\\((.+?)\\\)", re.S)
_OPEN, _CLOSE = "([{", ")]}"
_BRACKETS = (("\\{", "\\}"), ("\\left(", "\\right)"), ("\\left[", "\\right]"), ("(", ")"), ("[", "]"), ("{", "}"))
ItemEqual = Callable[[str, str], "bool | None"]


def has_ellipsis(s: str | None) -> bool:
    """Whether an answer holds an ellipsis (``\\ldots``, ``\\cdots``, ``\\dots``, ``...``, ``…``)."""
    return bool(s) and _ELLIPSIS.search(s) is not None  # type: ignore[arg-type]


def split_items(s: str) -> tuple[str, str, list[str]]:
    """``(brackets, separator, items)`` of a sequence answer; items are stripped and ellipses become ``…``."""
    from mathforge.verify.normalize import strip_math_delims

    s = strip_math_delims(s)
    math = _INLINE_MATH.findall(s) if "$" in s or "\\(" in s else []
    if math:  # prose around the answer ("The sequence is $2, 4, \ldots$."): the last formula is the answer
        s = next(m for m in math[-1] if m)
    s = _ELLIPSIS.sub(ELLIPSIS, s).strip()
    brackets = ""
    for left, right in _BRACKETS:
        if s.startswith(left) and s.endswith(right) and _top_level(s[len(left) : len(s) - len(right)]):
            brackets, s = left + right, s[len(left) : len(s) - len(right)].strip()
            break
    for sep in (",", ";", ":"):
        parts = _split_top(s, sep)
        if len(parts) > 1:
            return brackets, sep, [p.strip() for p in parts]
    return brackets, "", [s]


def _top_level(s: str) -> bool:
    """Whether brackets balance inside ``s`` (so its outer pair really encloses all of it)."""
    depth = 0
    for c in s:
        depth += (c in _OPEN) - (c in _CLOSE)
        if depth < 0:
            return False
    return depth == 0


def _split_top(s: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c == sep and depth == 0 and s[i - 1 : i] != "\\":  # "\;" and "\:" are LaTeX spaces, not separators
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def compare_sequences(pred: str, gold: str, item_equal: ItemEqual) -> tuple[bool | None, str]:
    """Compare two answers of which at least one holds an ellipsis; None when only a symbolic check could tell."""
    pb, psep, pitems = split_items(pred)
    gb, gsep, gitems = split_items(gold)
    if any(ELLIPSIS in i and i != ELLIPSIS for i in pitems + gitems):
        return None, "an ellipsis inside an expression is not compared"
    if (psep, len(pitems)) != (gsep, len(gitems)) or [i == ELLIPSIS for i in pitems] != [i == ELLIPSIS for i in gitems]:
        return False, f"different shapes: {len(pitems)} items {psep or '-'} vs {len(gitems)} items {gsep or '-'}"
    if pb != gb and pb and gb:
        return False, f"different brackets: {pb} vs {gb}"
    undecided = False
    for k, (p, g) in enumerate(zip(pitems, gitems)):
        if p == ELLIPSIS:
            continue
        same = item_equal(p, g)
        if same is False:
            return False, f"item {k + 1} differs: {p} vs {g}"
        undecided |= same is None
    if undecided:
        return None, "items need a symbolic check"
    return True, f"same sequence of {len(pitems)} items"


def solution_set(expr: Any) -> tuple[Any, Any] | None:
    """``(variable, set)`` for a condition on one variable (``x <= 2``, ``1 < x <= 3``, ``Eq(m, Interval)``, a set of
    inequalities read from "x < -1 or x > 2"), else None. Equations such as ``x = 2`` are left to math-verify."""
    import sympy

    rel = (sympy.StrictLessThan, sympy.LessThan, sympy.StrictGreaterThan, sympy.GreaterThan, sympy.Unequality)
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol) and isinstance(expr.rhs, sympy.Set):
        return expr.lhs, expr.rhs
    if isinstance(expr, sympy.FiniteSet) and expr.args and all(isinstance(a, rel) for a in expr.args):
        parts = [solution_set(a) for a in expr.args]
        if any(p is None for p in parts) or len({p[0] for p in parts}) != 1:  # type: ignore[index]
            return None
        return parts[0][0], sympy.Union(*(p[1] for p in parts))  # type: ignore[index]
    if isinstance(expr, (*rel, sympy.And, sympy.Or)) and len(expr.free_symbols) == 1:
        (var,) = expr.free_symbols
        try:
            return var, expr.as_set()
        except (NotImplementedError, TypeError, ValueError, AttributeError):
            return None
    return None
