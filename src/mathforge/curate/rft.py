"""RFT selection (Yuan et al. 2023): per problem, keep correct solutions whose reasoning paths are distinct.

A GSM8K-style path is the list of equations a solution computes: its ``<<a*b=c>>`` calculator annotations, or, when
it has none, the arithmetic written inline as ``a x b = c``. Equations are normalised (spaces, ``x``/``×``/``\\times``,
thousands separators, ``$``, trailing zeros) and, like RFT, compared as a multiset unless order is asked for. Every
equation can be checked with the safe evaluator; a path with a wrong step is dropped. Solutions without equations
(LaTeX proofs) fall back to a normalised step signature or to word n-gram similarity against the paths kept so far.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Literal

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.curate.arith import Refused, evaluate, result_matches

PathMode = Literal["auto", "equations", "steps", "ngram"]

_ANNOTATION = re.compile(r"<<([^<>=]{1,200})=([^<>]{1,60})>>")
_NUM = r"\$?\d[\d,]*(?:\.\d+)?%?"
_OPERAND = rf"\(*{_NUM}\)*"
_OP = r"(?:[-+*/×÷·^]|\\times|\\cdot|\\div|(?<=[\d\s)])x(?=[\s\d(]))"
# The lookaheads reject at once every position that does not start a number with an "=" later on its line, which
# keeps the scan linear in practice (without them the nested operand/space quantifiers backtrack for milliseconds).
_INLINE = re.compile(
    rf"(?<![\w.])(?=[\d($])(?=[^=\n]{{0,160}}=)({_OPERAND}(?:[ \t]*{_OP}[ \t]*{_OPERAND})+)"
    rf"[ \t]*=[ \t]*(-?\$?\d[\d,]*(?:\.\d+)?)(?!\d)"
)
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\[(.+?)\\\]|\\\((.+?)\\\)", re.DOTALL)
_LATEX_NOISE = re.compile(r"\\(?:left|right|!|,|;|:|quad|qquad)|\s+")
_WORD = re.compile(r"\w+")


class RFTConfig(StrictModel):
    enabled: bool = Field(True, description="keep only distinct reasoning paths per problem (off: keep every sample)")
    path: PathMode = Field(
        "auto",
        description="how a path is read: equations (<<a*b=c>> or inline a x b = c), steps (normalised LaTeX "
        "equalities), ngram (word 3-gram Jaccard below ngram_similarity), or auto (equations, else ngram)",
    )
    ordered: bool = Field(False, description="paths with the same equations in another order count as distinct")
    check_steps: bool = Field(True, description="evaluate every equation safely and drop paths with a wrong step")
    ngram_similarity: float = Field(
        0.7, ge=0, le=1, description="ngram paths: a solution this similar (Jaccard) to a kept one is the same path"
    )
    max_per_problem: int | None = Field(None, ge=1, description="cap of paths kept per problem (None: all distinct)")


@dataclass(frozen=True)
class Equation:
    """One computed step: the expression as written, the result as written, and its normalised form."""

    lhs: str
    rhs: str

    @property
    def key(self) -> str:
        return f"{normalize_expression(self.lhs)}={normalize_number(self.rhs)}"


def normalize_number(text: str) -> str:
    """``$1,200.50`` -> ``1200.5``; ``18.00`` -> ``18``."""
    s = text.strip().replace("$", "").replace(",", "").replace("−", "-")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s.lstrip("+") or "0"


@lru_cache(maxsize=1 << 16)
def normalize_expression(text: str) -> str:
    """One spelling per expression: no spaces, ``$`` or thousands commas; ``x``/``×``/``\\times`` -> ``*``."""
    s = text.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    s = s.replace("×", "*").replace("·", "*").replace("÷", "/").replace("−", "-")
    s = re.sub(r"(?<=[\d\s)])x(?=[\s\d(])", "*", s)
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s).replace("$", "")
    s = re.sub(r"\s+", "", s)
    return re.sub(r"(\d+\.\d*?)0+\b", lambda m: m.group(1).rstrip("."), s)


def extract_equations(text: str) -> list[Equation]:
    """The equations of a solution: ``<<lhs=rhs>>`` annotations if any, else inline ``a op b = c`` arithmetic."""
    found = [Equation(m.group(1), m.group(2)) for m in _ANNOTATION.finditer(text)]
    if found:
        return found
    return [Equation(m.group(1).strip(), m.group(2)) for m in _INLINE.finditer(text)]


def wrong_step(equations: Iterable[Equation]) -> str | None:
    """The first equation whose written result disagrees with its exact value, described; None if all agree."""
    for eq in equations:
        bad = _check(normalize_expression(eq.lhs), eq.rhs.strip())
        if bad:
            return bad
    return None


@lru_cache(maxsize=1 << 16)
def _check(lhs: str, rhs: str) -> str | None:
    """One equation's verdict (cached: the samples of a problem repeat the same few equations)."""
    try:
        value = evaluate(lhs)
    except Refused:
        return None  # not plain arithmetic (units, variables): cannot be checked, so not held against the path
    if result_matches(value, rhs):
        return None
    shown = float(value) if value.denominator != 1 else int(value)
    return f"{lhs} = {rhs} (it is {_short(shown)})"


def _short(value: float | int) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def step_signature(text: str) -> tuple[str, ...]:
    """The normalised equalities of a LaTeX solution's math spans, in order (empty when it writes none)."""
    out = []
    for m in _MATH_SPAN.finditer(text):
        span = next(g for g in m.groups() if g is not None)
        if "=" not in span:
            continue
        s = _LATEX_NOISE.sub("", span).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
        out.append(s.replace("\\cdot", "*").replace("\\times", "*"))
    return tuple(out)


def word_shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(zip(*(words[i:] for i in range(n))))


def path_key(text: str, cfg: RFTConfig, equations: list[Equation] | None = None) -> tuple[str, tuple[str, ...]] | None:
    """(kind, signature) of a solution's path; None when it has to be compared by n-gram similarity."""
    if cfg.path in ("auto", "equations"):
        eqs = [e.key for e in (extract_equations(text) if equations is None else equations)]
        if eqs or cfg.path == "equations":
            return "equations", tuple(eqs if cfg.ordered else sorted(eqs))
    if cfg.path == "steps":
        return "steps", step_signature(text)
    return None


def _teacher_round_robin(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Interleave teachers (each in sample order) so that a cap keeps paths from every teacher, as RFT-U13B pools."""
    by_teacher: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.get("sample_index") or 0, r.get("round") or 0, str(r.get("id")))):
        by_teacher[str(r.get("teacher"))].append(r)
    queues = [by_teacher[t] for t in sorted(by_teacher)]
    out = []
    for i in range(max(map(len, queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def select_paths(
    rows: list[dict[str, Any]], cfg: RFTConfig
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Keep the distinct reasoning paths of each problem; return (kept, [(row, reason)]) with reasons that say why."""
    if not cfg.enabled:
        return rows, []
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r["problem_id"])].append(r)
    kept, rejected = [], []
    for group in groups.values():
        k, rj = _select_group(_teacher_round_robin(group), cfg)
        kept.extend(k)
        rejected.extend(rj)
    return kept, rejected


def _select_group(rows: list[dict[str, Any]], cfg: RFTConfig) -> tuple[list[dict[str, Any]], list[tuple[dict, str]]]:
    kept: list[dict[str, Any]] = []
    rejected: list[tuple[dict[str, Any], str]] = []
    seen: dict[tuple[str, tuple[str, ...]], str] = {}
    wrong: dict[tuple[str, tuple[str, ...]] | None, str] = {}
    shingles: list[tuple[frozenset, str]] = []
    for r in rows:
        text = r.get("text") or ""
        equations = extract_equations(text)
        key = path_key(text, cfg, equations)
        # A path seen before is the same path whatever its steps; its step check was done the first time.
        if key is not None and key in seen:
            rejected.append((r, f"same-path: as {seen[key]} ({_describe(key)})"))
            continue
        if key is not None and key in wrong:
            rejected.append((r, wrong[key]))
            continue
        if cfg.check_steps:
            bad = wrong_step(equations)
            if bad:
                wrong[key] = f"wrong-step: {bad}"
                rejected.append((r, wrong[key]))
                continue
        if key is None:
            sh = word_shingles(text)
            twin = next(((sid, j) for s, sid in shingles if (j := _jaccard(sh, s)) >= cfg.ngram_similarity), None)
            if twin:
                rejected.append((r, f"same-path: as {twin[0]} (word 3-gram Jaccard {twin[1]:.2f})"))
                continue
        if cfg.max_per_problem is not None and len(kept) >= cfg.max_per_problem:
            rejected.append((r, f"over-cap: {cfg.max_per_problem} distinct paths already kept for this problem"))
            continue
        kept.append(r)
        if key is not None:
            seen[key] = str(r.get("id"))
        else:
            shingles.append((sh, str(r.get("id"))))
    return kept, rejected


def _describe(key: tuple[str, tuple[str, ...]]) -> str:
    kind, sig = key
    if not sig:
        return f"no {kind}"
    shown = "; ".join(sig[:4]) + ("; …" if len(sig) > 4 else "")
    return f"{kind}: {shown}"


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


