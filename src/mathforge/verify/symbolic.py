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

from mathforge.verify.extract import balanced_braces
from mathforge.verify.normalize import latex_tidy

logging.getLogger("math_verify").setLevel(logging.ERROR)

_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}\s+[A-Za-z]{3,}(?![^{]*\})")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$|\\\(|\\\[")
MAX_NORMALIZED = 200


def wrap_answer(ans: str) -> str:
    """Wrap a bare answer in ``$...$`` so math-verify's LaTeX extractor reads all of it (prose is left bare)."""
    ans = latex_tidy(ans.strip())
    if _UNESCAPED_DOLLAR.search(ans) or _PROSE.search(ans):
        return ans
    return f"${ans}$"


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
    from math_verify import verify

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
    normalized = str(pred_parsed[0])[:MAX_NORMALIZED]
    equal = verify(gold_parsed, pred_parsed, timeout_seconds=None)  # type: ignore[arg-type]
    if equal and _exact_numbers_differ(gold_parsed[0], pred_parsed[0]):
        return {"correct": False, "method": "math-verify+exact", "normalized": normalized, "extracted": extracted,
                "reason": "math-verify said equal, but the exact values differ"}
    return {"correct": bool(equal), "method": "math-verify", "normalized": normalized, "extracted": extracted,
            "reason": f"{normalized} {'==' if equal else '!='} {str(gold_parsed[0])[:MAX_NORMALIZED]}"}


def warm() -> None:
    """Import and exercise math-verify once so the first real task in a fresh worker is not charged for it."""
    compare("1/2", "\\frac{1}{2}")
