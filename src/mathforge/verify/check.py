"""``check(prediction, gold)``: extract the answer, then compare in layers, recording which extractor and layer decided.

Layers, cheapest first; each either decides or passes the case on:
1. ``no-gold`` / ``no-answer``: nothing to compare (correct=None).
2. ``choice``: multiple choice, letters compared (values mapped to letters through the options).
3. ``numeric-exact`` (and ``numeric-rounded``): both sides plain numbers under the policy in ``normalize.py``; exact.
4. ``string``: canonical text forms are identical (text answers such as ``4:30 p.m.``, ``\\text{Evelyn}``).
   Before 3-4, an answer or gold holding an ellipsis is compared as a sequence (``sequence``, see ``structure.py``);
   items the cheap layers cannot decide go to the worker.
5. ``math-verify`` (``math-verify+exact`` when our exact re-check overrules it): in a pool worker, hard time limit;
   ``timeout`` when the worker had to be killed (correct=None, never equal).
Layers 1-4 never leave the calling process.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

from mathforge.verify.extract import EXTRACTORS, extract, gold_answer, parse_options
from mathforge.verify.normalize import canon_text, format_rational, rounding_match, to_rational
from mathforge.verify.structure import compare_sequences, has_ellipsis

DEFAULT_CHAIN = ("gsm8k-hash", "final-answer", "boxed", "answer-is", "math-verify")
WHOLE_MAX = 200  # a one-line text this short with no anchor is taken as a bare answer ("whole")
VERDICT_COLUMNS = ("extracted", "normalized", "correct", "method", "extractor", "reason")


@dataclass
class Verdict:
    """The outcome of one check; ``correct`` is None when undecidable (no answer, no gold, timeout, error)."""

    correct: bool | None
    extracted: str | None
    normalized: str | None
    method: str
    extractor: str | None
    reason: str

    def to_columns(self) -> dict:
        """The verdict columns of a samples row (names as in ``records.SAMPLE_SCHEMA``)."""
        return asdict(self)


@dataclass
class SymbolicTask:
    """A case the cheap layers could not decide, to be run by ``symbolic.compare`` in a worker."""

    pred: str
    gold: str
    pred_raw: bool
    extracted: str | None
    extractor: str

    def args(self) -> tuple:
        return (self.pred, self.gold, self.pred_raw, False)


def _split_chain(extractors: list[str] | tuple[str, ...] | None) -> tuple[list[str], bool]:
    """The named extractors to run locally, and whether math-verify's own extraction is the fallback."""
    chain = list(extractors) if extractors else list(DEFAULT_CHAIN)
    for name in chain:
        if name != "math-verify" and name not in EXTRACTORS:
            raise ValueError(f"unknown extractor {name!r}; known: {', '.join([*EXTRACTORS, 'math-verify'])}")
    return [n for n in chain if n != "math-verify"], "math-verify" in chain


def _numeric(extracted: str, gold: str) -> tuple[bool, str, str] | None:
    """Exact rational comparison when both sides are plain numbers: ``(equal, method, normalized)``."""
    qp = to_rational(extracted)
    if qp is None:
        return None
    qg = to_rational(gold)
    if qg is None:
        return None
    if qp == qg:
        return True, "numeric-exact", format_rational(qp)
    if rounding_match(extracted, qp, qg) or rounding_match(gold, qg, qp):
        return True, "numeric-rounded", format_rational(qp)
    return False, "numeric-exact", format_rational(qp)


def _cheap_equal(pred: str, gold: str) -> bool | None:
    """The in-process layers on one pair of items: numbers exactly, else identical canonical text, else undecided."""
    numeric = _numeric(pred, gold)
    if numeric is not None:
        return numeric[0]
    return True if canon_text(pred) == canon_text(gold) else None


def _choice_verdict(text: str, gold: str, choices: dict | str, chain: list[str]) -> Verdict:
    """Multiple choice: compare letters; a value answer (or value gold) is mapped to its option letter."""
    options = parse_options(choices)

    def letter_of(value: str | None) -> str | None:
        if value is None:
            return None
        v = value.strip().strip("()").lower()
        if v in options:
            return v
        q, c = to_rational(value), canon_text(value)
        for letter, opt in options.items():
            if (q is not None and to_rational(opt) == q) or canon_text(opt) == c:
                return letter
        return None

    gold_letter = letter_of(gold)
    if gold_letter is None:
        return Verdict(None, None, None, "choice", None, f"gold {gold!r} is not one of the options")
    pred, name = extract(text, ["choice"])
    if pred is None or pred not in options:
        pred, name = extract(text, [*chain, "last-number"])
    letter = letter_of(pred)
    if letter is None:
        return Verdict(None, pred, None, "no-answer", name, "no option letter or option value found")
    ok = letter == gold_letter
    return Verdict(ok, pred, letter, "choice", name, f"chose ({letter}), gold is ({gold_letter})")


def local_verdict(
    text: str | None,
    gold: str | None,
    *,
    extractors: list[str] | tuple[str, ...] | None = None,
    choices: dict | str | None = None,
) -> Verdict | SymbolicTask:
    """Run every layer that stays in this process; return a Verdict, or the task the symbolic layer must decide."""
    chain, fallback = _split_chain(extractors)
    if gold is None or not str(gold).strip():
        ans, name = extract(text, chain)
        return Verdict(None, ans, None, "no-gold", name, "no gold answer to compare with")
    gold = str(gold)
    if choices:
        return _choice_verdict(text or "", gold, choices, chain)
    ans, name = extract(text, chain)
    if ans is None:
        if not (fallback and text and text.strip()):
            return Verdict(None, None, None, "no-answer", None, f"no extractor matched ({', '.join(chain)})")
        if len(text) > WHOLE_MAX or "\n" in text.strip():
            return SymbolicTask(text, gold_answer(gold)[0], True, None, "math-verify")
        ans, name = text.strip(), "whole"  # a bare answer: the cheap layers may still decide it
    gold_ans = gold_answer(gold)[0]
    if has_ellipsis(ans) or has_ellipsis(gold_ans):
        same, why = compare_sequences(ans, gold_ans, _cheap_equal)
        if same is not None or "expression" in why:
            return Verdict(same, ans, None, "sequence", name, why)
        return SymbolicTask(ans, gold_ans, False, ans, name)  # items the worker compares one by one
    numeric = _numeric(ans, gold_ans)
    if numeric is not None:
        ok, method, norm = numeric
        return Verdict(ok, ans, norm, method, name, f"{norm} {'==' if ok else '!='} {format_rational(to_rational(gold_ans))}")  # type: ignore[arg-type]
    cp, cg = canon_text(ans), canon_text(gold_ans)
    if cp and cp == cg:
        return Verdict(True, ans, cp, "string", name, "identical after removing LaTeX text and spacing wrappers")
    return SymbolicTask(ans, gold_ans, False, ans, name)


def finish(task: SymbolicTask, status: str, value: object, timeout: float) -> Verdict:
    """Turn a pool result for ``task`` into a Verdict."""
    if status == "timeout":
        return Verdict(None, task.extracted, None, "timeout", task.extractor,
                       f"symbolic check ran past {timeout:g}s; worker killed")
    if status != "ok" or not isinstance(value, dict):
        return Verdict(None, task.extracted, None, "error", task.extractor, str(value))
    extracted = value.get("extracted") if task.pred_raw else task.extracted
    extractor = task.extractor if extracted is not None or not task.pred_raw else None
    return Verdict(value["correct"], extracted, value["normalized"], value["method"], extractor, value["reason"])


def check(
    prediction_text: str | None,
    gold: str | None,
    *,
    timeout: float = 5.0,
    extractors: list[str] | None = None,
    choices: dict | str | None = None,
) -> Verdict:
    """Judge one model output against a gold answer (see the module docstring for the layers)."""
    result = local_verdict(prediction_text, gold, extractors=extractors, choices=choices)
    if isinstance(result, Verdict):
        return result
    from mathforge.verify.pool import get_pool

    status, value = get_pool().call("compare", result.args(), timeout)
    return finish(result, status, value, timeout)


async def acheck(prediction_text: str | None, gold: str | None, **kwargs) -> Verdict:
    """``check`` for asyncio code: runs in a thread, so the event loop keeps going while a worker computes."""
    return await asyncio.to_thread(check, prediction_text, gold, **kwargs)
