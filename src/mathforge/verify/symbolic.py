"""The symbolic layer, run inside pool workers: math-verify parse + verify, plus guards for its known false positives.

math-verify's own SIGALRM timeouts are switched off here (they fail outside the main thread and do not stop C-level
work); the pool enforces the time limit by killing the worker. Guards:
- a parse whose matched text has unbalanced braces was truncated (``1 + \\frac{1}{\\mathrm{e}}`` read as ``1``), so it
  is not trusted;
- when math-verify says equal and both sides are exact numbers (no floats, no symbols), the claim is re-checked to 30
  significant digits, relative to their size: math-verify's absolute ``chop`` makes 1/2004! equal 1/2006!.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from mathforge.verify.extract import balanced_braces
from mathforge.verify.normalize import latex_tidy, strip_emphasis
from mathforge.verify.structure import compare_sequences, has_ellipsis, solution_set

logging.getLogger("math_verify").setLevel(logging.ERROR)

_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}\s+[A-Za-z]{3,}(?![^{]*\})")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$|\\\(|\\\[")
MAX_NORMALIZED = 200
_PLAIN_CHARS = re.compile(r"[0-9A-Za-z.+\-*/^() ]+")
_PLAIN_NAMES = {
    "pi": "pi", "E": "E", "oo": "oo", "inf": "oo", "infinity": "oo", "sqrt": "sqrt", "exp": "exp", "log": "log",
    "ln": "log", "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc", "asin": "asin",
    "acos": "acos", "atan": "atan", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh",
    "cosh": "cosh", "tanh": "tanh", "abs": "Abs", "Abs": "Abs", "factorial": "factorial",
}
# Worth rewriting: a multi-letter name, "**", or a complex number written "a + bi" ("-1.0i").
_PLAIN_HINT = re.compile(r"\*\*|(?<![A-Za-z])(?:" + "|".join(sorted((n for n in _PLAIN_NAMES if len(n) > 1), key=len,
                         reverse=True)) + r")(?![A-Za-z])|\d\s*i(?![A-Za-z])")


def wrap_answer(ans: str) -> str:
    """Wrap a bare answer in ``$...$`` so math-verify's LaTeX extractor reads all of it (prose is left bare);
    a plain-text (sympy-style) answer such as ``pi/2`` or ``exp(16) - 1`` is first written as LaTeX."""
    ans = latex_tidy(strip_emphasis(ans.strip()))
    plain = plain_to_latex(ans)
    if plain is not None:
        return f"${plain}$"
    if _UNESCAPED_DOLLAR.search(ans) or _PROSE.search(ans):
        return ans
    return f"${ans}$"


def plain_to_latex(ans: str) -> str | None:
    """LaTeX for an answer written as plain text with names the LaTeX parser reads letter by letter (``pi`` as
    p*i, ``exp(16)`` as e*x*p*16) or Python operators (``**``); None for anything else.

    Read with sympy's ``parse_expr``, which evaluates Python: only digits, single letters, the whitelisted names,
    operators, spaces and parentheses get this far, and the evaluation has no builtins.
    """
    if len(ans) > MAX_NORMALIZED or not _PLAIN_CHARS.fullmatch(ans) or not _PLAIN_HINT.search(ans):
        return None
    if re.search(r"\.\s*[A-Za-z]", ans):
        return None  # a dot is a decimal point only: never attribute access
    if any(len(w) > 1 and w not in _PLAIN_NAMES for w in re.findall(r"[A-Za-z]+", ans)):
        return None  # a word: prose, not a formula
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    names: dict = {name: getattr(sympy, target) for name, target in _PLAIN_NAMES.items()}
    names.update({c: sympy.Symbol(c) for c in set(re.findall(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", ans)) - {"E"}})
    global_names = {"__builtins__": {}, **{k: getattr(sympy, k) for k in ("Integer", "Float", "Rational", "Symbol")}}
    try:
        expr = parse_expr(ans.replace("^", "**"), local_dict=names, global_dict=global_names,
                          transformations=(*standard_transformations, implicit_multiplication_application,
                                           convert_xor))
        return sympy.latex(expr) if isinstance(expr, sympy.Expr) else None
    except Exception:  # anything sympy cannot read stays with the LaTeX parser
        return None


def parse_side(text: str, raw: bool) -> list:
    """math-verify parse of one side; ``raw`` means a whole solution text (math-verify's extraction finds the answer)."""
    from math_verify import parse

    parsed = parse(latex_tidy(text) if raw else wrap_answer(text), parsing_timeout=None)  # type: ignore[arg-type]
    if not parsed and not raw:
        parsed = parse(text, parsing_timeout=None)  # type: ignore[arg-type]
    if len(parsed) == 2 and isinstance(parsed[1], str) and not balanced_braces(parsed[1]):
        return []  # truncated parse: trusting it caused 1+1/e == 1
    return parsed


def _exact_numbers_differ(a, b) -> bool:
    """True when two exact numeric sympy values differ beyond rounding noise at 30 significant digits."""
    import sympy

    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False
    if not (a.is_number and b.is_number) or a.atoms(sympy.Float) or b.atoms(sympy.Float):
        return False
    if a.is_Rational and b.is_Rational:
        return a != b
    va, vb = a.evalf(40), b.evalf(40)
    if not (va.is_number and vb.is_number):
        return False
    scale = max(abs(va), abs(vb))
    if scale == 0:
        return False
    return bool(abs(va - vb) > scale * sympy.Float("1e-30"))


def compare(pred: str, gold: str, pred_raw: bool = False, gold_raw: bool = False) -> dict:
    """Compare one prediction with one gold answer; returns the verdict fields decided by the symbolic layer."""
    if not pred_raw and not gold_raw and (has_ellipsis(pred) or has_ellipsis(gold)):
        return _compare_sequences(pred, gold, pred)
    gold_parsed = parse_side(gold, gold_raw)
    if not gold_parsed:
        return {"correct": None, "method": "math-verify", "normalized": None, "extracted": None,
                "reason": "gold answer did not parse"}
    pred_parsed = parse_side(pred, pred_raw)
    extracted = pred_parsed[1] if len(pred_parsed) == 2 and isinstance(pred_parsed[1], str) else None
    if not pred_parsed:
        method = "no-answer" if pred_raw else "math-verify"
        return {"correct": None if pred_raw else False, "method": method, "normalized": None, "extracted": None,
                "reason": "no answer found in the text" if pred_raw else "prediction did not parse"}
    if extracted is not None and not gold_raw and (has_ellipsis(extracted) or has_ellipsis(gold)):
        return _compare_sequences(extracted, gold, extracted)  # math-verify flattens a sequence to one value
    normalized = str(pred_parsed[0])[:MAX_NORMALIZED]
    equal = _verify(gold_parsed, pred_parsed)
    if equal and _exact_numbers_differ(gold_parsed[0], pred_parsed[0]):
        return {"correct": False, "method": "math-verify+exact", "normalized": normalized, "extracted": extracted,
                "reason": "math-verify said equal, but the exact values differ"}
    if not equal:
        as_sets = _same_solution_set(gold_parsed[0], pred_parsed[0])
        if as_sets is not None:
            return {"correct": as_sets[0], "method": "math-verify+sets", "normalized": as_sets[1][:MAX_NORMALIZED],
                    "extracted": extracted, "reason": as_sets[2]}
    return {"correct": bool(equal), "method": "math-verify", "normalized": normalized, "extracted": extracted,
            "reason": f"{normalized} {'==' if equal else '!='} {str(gold_parsed[0])[:MAX_NORMALIZED]}"}


def _verify(gold: Any, pred: Any) -> bool:
    from math_verify import verify

    return bool(verify(gold, pred, timeout_seconds=None))  # type: ignore[arg-type]


def _compare_sequences(pred: str, gold: str, extracted: str | None) -> dict:
    """Sequences and ratios with ellipses, item by item (math-verify on the items the cheap layers left open)."""
    from mathforge.verify.check import _cheap_equal

    def item_equal(p: str, g: str) -> bool | None:
        cheap = _cheap_equal(p, g)
        if cheap is not None:
            return cheap
        gp, pp = parse_side(g, False), parse_side(p, False)
        if not gp or not pp:
            return None
        return _verify(gp, pp) and not _exact_numbers_differ(gp[0], pp[0])

    same, why = compare_sequences(pred, gold, item_equal)
    return {"correct": same, "method": "sequence", "normalized": None, "extracted": extracted, "reason": why}


def _same_solution_set(gold: Any, pred: Any) -> tuple[bool, str, str] | None:
    """An inequality (or ``x \\in S``) against an interval or another condition, compared as solution sets."""
    import sympy

    g, p = solution_set(gold), solution_set(pred)
    if g is None and p is None:
        return None
    if g is not None and p is not None and g[0] != p[0]:
        return None  # conditions on different variables: math-verify's "not equal" stands
    gset = g[1] if g is not None else gold
    pset = p[1] if p is not None else pred
    if not (isinstance(gset, sympy.Set) and isinstance(pset, sympy.Set)):
        return None
    equal = _verify(gset, pset)
    return equal, str(pset), f"as solution sets: {pset} {'==' if equal else '!='} {gset}"


def warm() -> None:
    """Import and exercise math-verify once so the first real task in a fresh worker is not charged for it."""
    compare("1/2", "\\frac{1}{2}")
