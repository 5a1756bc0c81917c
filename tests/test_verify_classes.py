"""Verifier classes of issue 11, each fixed as a class: Markdown emphasis, plain-text (sympy-style) answers, sequences
and ratios with ellipses, malformed LaTeX, runaway few-shot continuations, inequalities against intervals.

The held-out set ``fixtures/verify/hard_cases.jsonl`` has positive and negative cases in every class; it was written
for this issue, not taken from the public cases (whose slice is checked in test_verify_check.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mathforge.verify import check, extract
from mathforge.verify.normalize import repair_parens, strip_emphasis
from mathforge.verify.structure import compare_sequences, has_ellipsis, split_items
from mathforge.verify.symbolic import plain_to_latex

HARD = [json.loads(line) for line in open(Path(__file__).parent / "fixtures" / "verify" / "hard_cases.jsonl")]


def test_hard_set_has_both_labels_in_every_class():
    by_class = Counter((r["class"], r["equal"]) for r in HARD)
    classes = {c for c, _ in by_class}
    assert classes == {"markdown", "plain-text", "ellipsis", "malformed-latex", "runaway", "interval"}
    assert all(by_class[(c, True)] >= 3 and by_class[(c, False)] >= 3 for c in classes)


@pytest.mark.parametrize("case", HARD, ids=[r["id"] for r in HARD])
def test_hard_case(case):
    verdict = check(case["pred"], case["gold"], timeout=10.0)
    assert (verdict.correct is True) == case["equal"], verdict


# --- the pieces, on their own ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, stripped",
    [("**73**", "73"), ("**$\\frac{1}{2}$**", "$\\frac{1}{2}$"), ("*7*", "7"), ("__18__", "18"), ("** 73", "73"),
     ("x**2 + y**2", "x**2 + y**2"), ("2*3*4", "2*3*4"), ("(x+1)**2", "(x+1)**2"), ("a_1__b", "a_1__b")],
)
def test_strip_emphasis_keeps_python_powers_and_products(text, stripped):
    assert strip_emphasis(text) == stripped


def test_extracted_answer_has_no_emphasis():
    assert extract("The answer is **73**.") == ("73", "answer-is")
    assert extract("**Final Answer:** 12") == ("12", "final-answer")


@pytest.mark.parametrize(
    "text, repaired",
    [("4\\sqrt(2)", "4\\sqrt{2}"), ("\\sqrt(x+(1))", "\\sqrt{x+(1)}"), ("\\frac(1)(2)", "\\frac{1}{2}"),
     ("\\sqrt[3](8)", "\\sqrt[3]{8}"), ("\\sqrt{2}(3)", "\\sqrt{2}(3)"), ("\\sqrt(", "\\sqrt("), ("\\frac(1)", "\\frac(1)")],
)
def test_repair_parens(text, repaired):
    assert repair_parens(text) == repaired


@pytest.mark.parametrize(
    "text, latex",
    [("pi/2", "\\frac{\\pi}{2}"), ("-2*pi", "- 2 \\pi"), ("exp(16) - 1", "-1 + e^{16}"), ("sqrt(3)/2", "\\frac{\\sqrt{3}}{2}"),
     ("14.0 + -1.0i", "14.0 - 1.0 i"), ("x**2", "x^{2}")],
)
def test_plain_text_answers_become_latex(text, latex):
    assert plain_to_latex(text) == latex


@pytest.mark.parametrize(
    "text",
    ["x + 1", "\\frac{\\pi}{2}", "the answer is pi", "__import__('os').system('id')", "pi.real", "pi.n", "lambda: pi",
     "E", "2^{10}", "(1, pi)"],
)
def test_plain_text_rewrite_only_for_plain_formulas(text):
    assert plain_to_latex(text) is None  # nothing else reaches sympy's parse_expr (which evaluates Python)


def test_sequence_shapes():
    assert split_items("$(1, 2, \\ldots, n)$") == ("()", ",", ["1", "2", "…", "n"])
    assert split_items("1:2:\\cdots:n") == ("", ":", ["1", "2", "…", "n"])
    assert split_items("x \\; y") == ("", "", ["x \\; y"])
    assert has_ellipsis("1, ..., n") and has_ellipsis("1,\\dots") and not has_ellipsis("1.5, 2")


def test_sequences_compare_item_by_item():
    same = lambda p, g: p.replace(" ", "") == g.replace(" ", "")  # noqa: E731
    assert compare_sequences("1, 3, \\ldots, 2n-1", "1,3,\\dots,2n - 1", same)[0] is True
    assert compare_sequences("1, 3, 5, \\ldots, 2n-1", "1, 2, \\ldots, n", same)[0] is False
    assert compare_sequences("1, \\ldots, n", "n", same)[0] is False
    verdict, why = compare_sequences("1 + 2 + \\cdots + n", "\\frac{n(n+1)}{2}", same)
    assert verdict is None and "inside an expression" in why


def test_ellipsis_inside_an_expression_is_undecided_not_equal():
    verdict = check("1 + 2 + \\cdots + n", "n + 1 + 2")
    assert verdict.correct is None and verdict.method == "sequence"


def test_first_hash_answer_and_runaway_continuations():
    assert extract("#### 72\n#### 10") == ("72", "gsm8k-hash")
    assert extract("Question: a?\nAnswer: so 3.\n#### 3\n\nQuestion: b?\nAnswer: #### 9") == ("3", "gsm8k-hash")
    text = "The answer is 5.\n\nProblem: next one.\nThe answer is 7."
    assert extract(text) == ("5", "answer-is")
    assert extract("Problem: restated first.\nWork...\nThe answer is 7.") == ("7", "answer-is")  # no answer before


def test_interval_verdicts_name_the_layer():
    verdict = check("x \\le 2", "(-\\infty, 2]")
    assert verdict.correct is True and verdict.method == "math-verify+sets"
    assert check("x < 2", "(-\\infty, 2]").correct is False
