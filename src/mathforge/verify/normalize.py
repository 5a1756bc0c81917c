"""Answer-string normalisation: the exact-rational fast path and the canonical text form.

Numeric policy (documented in docs/architecture.md, tested in tests/test_verify_numeric.py):
- integers, decimals (``.5``, ``1000.0``), ``a/b``, ``\\frac{a}{b}`` (also ``\\dfrac``/``\\tfrac``/``\\cfrac``,
  ``\\frac12``) and mixed numbers ``918\\frac{1}{2}`` are read as exact rationals; leading ``+``/``-``/``−``.
- thousands separators only in groups of three: ``7,425,000``, ``1 000``, ``10{,}000``, ``900,\\!000``; a comma in any
  other place (``1000,99``, ``32, 349``) is not a number here (decimal comma and lists are left to the symbolic layer).
- a currency sign (``$``, ``\\$``, ``€``, ``£``) before or after the number is ignored; so is a trailing unit: ``%``,
  ``\\%``, ``percent``, ``pct``, degrees (``^\\circ``, ``°``), ``\\text{...}``/``\\mbox{...}`` text, or a plain word of
  two or more letters that is not a math name (``18 dollars``, ``5 cm``; never ``5x`` or ``5 pi``).
  So ``28%`` equals ``28`` and does NOT equal ``0.28``: a percent sign is a unit, not a factor of 1/100.
- comparison is exact: ``1000001 != 1000000``, ``5.001 != 5``; no relative tolerance. One exception, by rounding, not
  tolerance: a decimal with at least 6 significant digits equals a fraction that has no finite decimal expansion when it
  is that fraction rounded or truncated to the digits shown (``0.0833333333333333 == 1/12``; ``0.33 != 1/3``).
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_NUMERIC_LEN = 200  # longer strings are never plain numbers; skip the regexes

_LATEX_THOUSANDS = re.compile(r",\\!\s*(?=\d{3}(?!\d))")  # 11,\! 111,\! 100
_SPACES = re.compile(r"\\[!,;: ]|~|\\quad|\\qquad")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textrm|textit|textnormal|mathrm|mbox|mathbf|operatorname)\s*\{([^{}]*)\}")
_FRAC_CMD = re.compile(r"\\[dtc]frac")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_HALF = re.compile(r"\\frac\s*(\d)\s*(?=\{)")
_FRAC_HALF2 = re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\d)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d)")
_MATHRM_LETTER = re.compile(r"\\math(?:rm|it)\s*\{\s*([A-Za-z])\s*\}")
_PAREN_CMD = re.compile(r"\\((?:sqrt(?:\[[^\[\]{}]*\])?)|[dtc]?frac)(?=\s*\()")

_INT = r"\d{1,3}(?:,\d{3})+|\d{1,3}(?:[ ]\d{3})+|\d+"
_DEC = rf"(?:{_INT})(?:\.\d*)?|\.\d+"
_SIGNED = rf"[-+]?\s*(?:{_DEC})"
_NUMBER = re.compile(
    rf"""^(?P<sign>[-+]?)\s*(?:
        (?P<whole>\d+)\s*\\frac\{{(?P<mn>\d+)\}}\{{(?P<md>\d+)\}}            # mixed number
      | \\frac\{{(?P<fn>{_SIGNED})\}}\{{(?P<fd>{_SIGNED})\}}                # frac
      | (?P<sn>{_DEC})\s*/\s*(?P<sd>{_DEC})                                 # a/b
      | (?P<num>{_DEC})                                                     # decimal
    )$""",
    re.VERBOSE,
)
_CURRENCY = re.compile(r"^(?:\\\$|\$|€|£|USD)\s*|\s*(?:\\\$|\$|€|£)$")
_DEGREE = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree)\s*$")
_PERCENT = re.compile(r"\s*(?:\\%|%|\\percent|percent(?:age)?|pct)\s*$", re.IGNORECASE)
_UNIT_WORD = re.compile(r"\s*([A-Za-z][A-Za-z.]+(?:\s+[A-Za-z][A-Za-z.]*){0,2})\s*(?:\^\{?[23]\}?|[²³])?\s*$")
_MATH_WORDS = {
    "pi", "sqrt", "ln", "log", "sin", "cos", "tan", "sec", "csc", "cot", "exp", "mod", "pmod", "and", "or", "to",
    "infty", "inf", "times", "cdot", "frac", "dfrac", "i", "e", "x", "y", "z", "n", "k", "ie", "e.g",
}


_EMPHASIS = re.compile(r"(?<![\w)\]}])(\*\*|__)(?=\S)(.+?)(?<=\S)\1(?![\w({])")  # **73**, never x**2 + y**2
_ITALIC = re.compile(r"(?<![\w*\\])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])")  # *73*, never 2*3*4


def strip_emphasis(s: str) -> str:
    """Remove Markdown emphasis around (parts of) an answer: ``**73**``, ``*x = 2*``; stray ``**`` at the ends."""
    if "*" not in s and "__" not in s:
        return s
    s = _EMPHASIS.sub(r"\2", s)
    s = _ITALIC.sub(r"\1", s)
    return s.strip().strip("*").strip() if s.strip().startswith("**") or s.strip().endswith("**") else s


def strip_math_delims(s: str) -> str:
    """Remove Markdown emphasis, one pair of outer LaTeX math delimiters and a whole-answer ``\\boxed{}``."""
    s = strip_emphasis(s.strip())
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
            break
    if s.startswith(("\\boxed", "\\fbox")):
        from mathforge.verify.extract import boxed_contents

        boxes = boxed_contents(s)
        if len(boxes) == 1 and boxes[0][1] == 0 and boxes[0][2] >= len(s.rstrip(" .")):
            s = boxes[0][0].strip()
    return s.rstrip(" .\\").strip() if not s.endswith("\\\\") else s


def repair_parens(s: str) -> str:
    """``\\sqrt(2)`` -> ``\\sqrt{2}``, ``\\frac(a)(b)`` -> ``\\frac{a}{b}``: a command given parentheses where its
    argument needs braces. Left as is, the parser stops at ``(`` and reads ``4\\sqrt(2)`` as 4."""
    if "(" not in s or "\\" not in s:
        return s
    out, i = [], 0
    for m in _PAREN_CMD.finditer(s):
        if m.start() < i:
            continue
        args, j = [], m.end()
        for _ in range(2 if m.group(1).endswith("frac") else 1):
            k = _skip_ws(s, j)
            close = _closing_paren(s, k) if k < len(s) and s[k] == "(" else None
            if close is None:
                break
            args.append(s[k + 1 : close])
            j = close + 1
        if not args or (m.group(1).endswith("frac") and len(args) < 2):
            continue
        out.append(s[i : m.end()] + "".join("{" + a + "}" for a in args))
        i = j
    return "".join(out) + s[i:]


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] == " ":
        i += 1
    return i


def _closing_paren(s: str, i: int) -> int | None:
    """The index of the ``)`` matching the ``(`` at ``i``, or None."""
    depth = 0
    for j in range(i, min(len(s), i + MAX_NUMERIC_LEN)):
        depth += (s[j] == "(") - (s[j] == ")")
        if depth == 0:
            return j
    return None


def latex_tidy(s: str) -> str:
    """Rewrite LaTeX shorthands that the symbolic parser mishandles (``\\frac12``, ``\\tfrac``, ``\\mathrm{e}``,
    ``\\sqrt(2)``)."""
    s = repair_parens(s)
    s = _FRAC_CMD.sub(r"\\frac", s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF.sub(r"\\frac{\1}", s)
    s = _FRAC_HALF2.sub(r"\\frac\1{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _MATHRM_LETTER.sub(r"\1", s)
    return s.replace("\\left", "").replace("\\right", "").replace("\\!", "")


def _strip_unit(s: str) -> str:
    """Drop one trailing unit (percent, degrees, \\text{...} or a plain unit word) per the documented policy."""
    for pat in (_PERCENT, _DEGREE):
        s2 = pat.sub("", s)
        if s2 != s:
            return s2.strip()
    m = _UNIT_WORD.search(s)
    if m and m.start() > 0:
        words = m.group(1).lower().replace(".", " ").split()
        if words and not any(w in _MATH_WORDS for w in words):
            return s[: m.start()].strip()
    return s


def to_rational(s: str | None) -> Fraction | None:
    """Read a plain number as an exact rational under the documented policy, or None if it is not one."""
    if s is None or len(s) > MAX_NUMERIC_LEN:
        return None
    s = strip_math_delims(s).replace("−", "-").replace("{,}", ",")
    s = _LATEX_THOUSANDS.sub(",", s)
    s = _SPACES.sub(" ", s)
    s = _TEXT_CMD.sub(lambda m: " " + m.group(1) + " ", s)
    s = _FRAC_CMD.sub(r"\\frac", s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s).replace("\\frac {", "\\frac{").replace("} {", "}{")
    s = re.sub(r"\s+", " ", s).strip()
    for _ in range(2):  # "$28 %" or "28 \text{ cm}$": currency and a unit may both be present
        s = _CURRENCY.sub("", s).strip()
        s = _strip_unit(s)
    s = _CURRENCY.sub("", s).strip()
    if s.startswith("-") or s.startswith("+"):
        sign_char, rest = s[0], _CURRENCY.sub("", s[1:]).strip()  # "-$5"
        s = sign_char + rest
    m = _NUMBER.match(s)
    if not m:
        return None
    try:
        if m.group("whole") is not None:
            value = int(m.group("whole")) + Fraction(int(m.group("mn")), int(m.group("md")))
        elif m.group("fn") is not None:
            value = _dec(m.group("fn")) / _dec(m.group("fd"))
        elif m.group("sn") is not None:
            value = _dec(m.group("sn")) / _dec(m.group("sd"))
        else:
            value = _dec(m.group("num"))
    except ZeroDivisionError:
        return None
    return -value if m.group("sign") == "-" else value


def _dec(text: str) -> Fraction:
    """Parse one decimal token (commas/spaces as thousands separators already validated by the regex)."""
    text = text.replace(",", "").replace(" ", "")
    return Fraction(text if not text.endswith(".") else text[:-1])


def decimal_places(s: str) -> int | None:
    """Digits after the decimal point of the number written in ``s`` (None when it has no point)."""
    m = re.search(r"\.(\d+)(?!.*\d)", s)
    return len(m.group(1)) if m else None


def rounding_match(dec_text: str, dec_value: Fraction, exact: Fraction) -> bool:
    """True when ``dec_value`` is ``exact`` rounded or truncated to the digits shown (>= 6 significant, non-terminating)."""
    places = decimal_places(dec_text)
    if places is None or _terminates(exact):
        return False
    digits = re.sub(r"\D", "", dec_text).lstrip("0")
    if len(digits) < 6:
        return False
    return abs(dec_value - exact) < Fraction(1, 10**places)


def _terminates(q: Fraction) -> bool:
    """Whether a rational has a finite decimal expansion (denominator of the form 2^a 5^b)."""
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def canon_text(s: str) -> str:
    """Canonical text form for the string layer: LaTeX text/spacing wrappers and whitespace removed."""
    s = strip_math_delims(s)
    s = latex_tidy(s)
    for _ in range(3):
        s2 = _TEXT_CMD.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    s = _SPACES.sub("", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    m = re.fullmatch(r"\(([A-Za-z])\)", s)
    if m:
        s = m.group(1)
    if len(s) >= 2 and re.fullmatch(r"[A-Za-z:.\-]+", s):
        s = s.lower()
    return s


def format_rational(q: Fraction) -> str:
    """Write a rational as ``n`` or ``p/q`` (the normalised column of a numeric verdict)."""
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"
