"""check(): the symbolic layer, known false positives, hard timeouts, threads/asyncio, batch API and majority vote."""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mathforge.records import SAMPLE_SCHEMA
from mathforge.verify import check, majority_vote, verify_rows
from mathforge.verify.check import VERDICT_COLUMNS, acheck

FIXTURES = Path(__file__).parent / "fixtures" / "verify"


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("The answer is $\\boxed{\\frac{1}{2004!}}$.", "\\frac{1}{2006!}"),
        ("The answer is $\\boxed{\\frac{1}{2^{99}}}$.", "\\frac{1}{2^{98}}"),
        ("$1 + \\frac{1}{\\mathrm{e}}$", "$1 - \\frac{1}{\\mathrm{e}}$"),
        ("\\boxed{1 + \\frac{1}{e}}", "1 - \\frac{1}{e}"),
    ],
)
def test_known_math_verify_false_positives_are_unequal(pred, gold):
    assert check(pred, gold).correct is False


@pytest.mark.parametrize(
    "pred, gold, correct",
    [
        ("\\boxed{\\{1, 2, 3\\}}", "\\{3, 2, 1\\}", True),  # set
        ("\\boxed{(1, 2)}", "(2, 1)", False),  # tuple order matters
        ("\\boxed{[0, 1)}", "[0,1)", True),  # interval
        ("\\boxed{(0, 1]}", "[0,1)", False),
        ("\\boxed{\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}}", "\\begin{bmatrix}1&0\\\\0&1\\end{bmatrix}", True),
        ("\\boxed{y = 2x + 1}", "y = 1 + 2x", True),  # equation
        ("\\boxed{90^\\circ}", "90", True),  # degrees
        ("\\boxed{\\frac{\\sqrt{3}}{3}}", "\\frac{1}{\\sqrt{3}}", True),
        ("\\boxed{x^2 + 2x + 1}", "(x+1)^2", True),
        ("\\boxed{x^3 + 2x + 1}", "x^2+2x+1", False),
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", True),  # text
    ],
)
def test_symbolic_layer(pred, gold, correct):
    v = check(pred, gold)
    assert v.correct is correct, v
    assert v.extractor == "boxed"


def test_verdict_records_layer_and_extractor():
    v = check("Janet makes $18 a day.\n#### 18", "18")
    assert (v.correct, v.method, v.extractor, v.extracted, v.normalized) == (True, "numeric-exact", "gsm8k-hash", "18", "18")
    v = check("The answer is $x \\in [2, 5]$.", "[2,5]")
    assert v.method.startswith("math-verify") and v.extractor == "answer-is" and v.reason
    assert check("no digits here at all, sorry", "5", extractors=["boxed"]).method == "no-answer"
    assert check("\\boxed{5}", None).method == "no-gold"


def test_unanchored_text_falls_back_to_math_verify_extraction():
    v = check("We find that $x \\geq 5$ is the solution\nof the inequality.", "x >= 5")
    assert (v.correct, v.extractor) == (True, "math-verify")


def test_audited_cases_slice_has_no_false_positive():
    rows = [json.loads(line) for line in open(FIXTURES / "cases_slice.jsonl", encoding="utf-8")]
    got = verify_rows([{"text": r["pred"], "gold": r["gold"]} for r in rows])
    fp = [r["id"] for r, g in zip(rows, got) if g["correct"] and not r["equal"]]
    agree = sum(bool(g["correct"]) == r["equal"] for r, g in zip(rows, got))
    assert fp == []
    assert agree >= 0.95 * len(rows)


def test_timeout_kills_worker_and_pool_keeps_going():
    t = time.perf_counter()
    v = check("The answer is $\\boxed{5^{5^{5^{5^5}}}}$.", "5", timeout=1.0)
    assert time.perf_counter() - t < 2.0
    assert (v.correct, v.method) == (None, "timeout")
    assert check("\\boxed{\\sqrt{4}}", "2").correct is True  # the pool still answers


def test_check_from_threads_and_asyncio():
    cases = [("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", True), ("\\boxed{\\pi}", "3.14", False)] * 3
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda c: check(c[0], c[1], timeout=10).correct, cases))
    assert got == [c[2] for c in cases]

    async def main():
        return await asyncio.gather(*(acheck(p, g, timeout=10) for p, g, _ in cases))

    assert [v.correct for v in asyncio.run(main())] == [c[2] for c in cases]


def test_verify_rows_adds_the_schema_columns():
    assert set(VERDICT_COLUMNS) <= set(SAMPLE_SCHEMA.names)
    rows = [
        {"id": "a", "text": "so \\boxed{\\frac{\\pi}{2}}", "gold": "\\pi/2"},
        {"id": "b", "text": "#### 7", "gold": "8"},
        {"id": "c", "text": "answer : b", "gold": "b", "meta": json.dumps({"options": "a ) 12 , b ) 16"})},
        {"id": "d", "text": "The answer is 16.", "gold": "b", "choices": {"a": "12", "b": "16"}},
        {"id": "e", "text": "\\boxed{(10^{10})!}", "gold": "3"},
    ]
    out = verify_rows(rows, workers=2, timeout=1.0)
    assert [r["id"] for r in out] == ["a", "b", "c", "d", "e"]
    assert [r["correct"] for r in out] == [True, False, True, True, None]
    assert [r["method"] for r in out][1:] == ["numeric-exact", "choice", "choice", "timeout"]
    assert all(set(VERDICT_COLUMNS) <= set(r) for r in out)


def test_majority_vote_groups_by_equivalence():
    res = majority_vote(["1/2", "0.5", "\\frac{1}{2}", "3", None, "x+1", "1+x"])
    assert res.answer == "1/2" and res.share == pytest.approx(3 / 7)
    assert [(c[1], c[2]) for c in res.classes] == [(3, [0, 1, 2]), (2, [5, 6]), (1, [3])]
    assert majority_vote([None, None]).answer is None
