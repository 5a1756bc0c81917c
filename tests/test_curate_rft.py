"""RFT selection: the safe arithmetic evaluator, equation extraction, step checks and distinct-path selection."""

from __future__ import annotations

from fractions import Fraction

import pytest

from mathforge.curate.arith import Refused, evaluate, result_matches
from mathforge.curate.rft import RFTConfig, extract_equations, path_key, select_paths, step_signature, wrong_step


@pytest.mark.parametrize(
    "expr, value",
    [("16-3-4", 9), ("9*2", 18), ("3 x 4", 12), ("2^10", 1024), ("1,200 / 4", 300), ("$5 * 3", 15),
     ("0.1+0.2", Fraction(3, 10)), ("(2+3)*4", 20), ("-3 + 5", 2), ("50%*80", 40), ("7 \\times 6", 42),
     ("10 ÷ 4", Fraction(5, 2)), ("7 // 2", 3), ("7 % 4", 3)],
)
def test_evaluate_plain_arithmetic_exactly(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize(
    "expr",
    ["__import__('os').system('echo hi')", "abs(-3)", "a * 2", "(1).real", "2 ** 1000", "9 ** 9 ** 9", "1 < 2",
     "10 ** 40", "1/0", "'a' * 3", "[1, 2]", "1 if 2 else 3", "x" * 201, "+".join(["1"] * 40),
     "123456789012345678901234567890123 * 2"],
)
def test_evaluate_refuses_anything_but_bounded_arithmetic(expr):
    with pytest.raises(Refused):
        evaluate(expr)


def test_result_matches_allows_shown_rounding_only():
    assert result_matches(Fraction(10, 3), "3.33")
    assert result_matches(Fraction(2, 3), "0.66")  # truncated to the digits shown
    assert result_matches(Fraction(18), "$18.00")
    assert not result_matches(Fraction(12), "13")
    assert not result_matches(Fraction(12), "12.4")
    assert not result_matches(Fraction(12), "twelve")


def test_equations_from_calculator_annotations_take_precedence():
    text = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert [e.key for e in extract_equations(text)] == ["16-3-4=9", "9*2=18"]


def test_equations_inline_are_normalised():
    text = "She uses 3 + 4 = 7 eggs, so 16 - 7 = 9 are left. 9 x $2 = $18. In total 1,200 / 4 = 300.00 cents."
    assert [e.key for e in extract_equations(text)] == ["3+4=7", "16-7=9", "9*2=18", "1200/4=300"]
    assert extract_equations("The answer is 18. She has 3 boxes.") == []


def test_wrong_step_names_the_bad_equation_and_skips_what_it_cannot_check():
    assert wrong_step(extract_equations("So 3*4 = 13 apples.")) == "3*4 = 13 (it is 12)"
    assert wrong_step(extract_equations("<<10/3=3.33>> then <<3.33*3=9.99>>")) is None
    assert wrong_step(extract_equations("<<a*4=12>>")) is None  # a variable: not checkable, not wrong


def test_step_signature_of_latex_solutions():
    text = r"We have $x^2 = 4$, so $$x = \dfrac{4}{2}$$ and \(y\) is free."
    assert step_signature(text) == ("x^2=4", r"x=\frac{4}{2}")


def _row(i, text, pid="p1", teacher="a", index=None):
    return {"id": f"s{i}", "problem_id": pid, "teacher": teacher, "sample_index": i if index is None else index,
            "text": text, "correct": True}


def test_select_keeps_one_sample_per_distinct_equation_path():
    rows = [
        _row(0, "16 - 3 - 4 = <<16-3-4=9>>9. 9 * 2 = <<9*2=18>>18. #### 18"),
        _row(1, "She has 16-3-4=<<16-3-4=9>>9 left and earns 9*2=<<9*2=18>>18 dollars. #### 18"),  # same path
        _row(2, "3 + 4 = <<3+4=7>>7 used. 16 - 7 = <<16-7=9>>9. 9 * 2 = <<9*2=18>>18. #### 18"),  # distinct
        _row(3, "9 * 2 = <<9*2=18>>18 after 16 - 3 - 4 = <<16-3-4=9>>9. #### 18"),  # same path, other order
        _row(4, "3 + 4 = <<3+4=7>>7. 16 - 7 = <<16-7=8>>8. #### 18"),  # wrong step
    ]
    kept, rejected = select_paths(rows, RFTConfig())
    assert [r["id"] for r in kept] == ["s0", "s2"]
    reasons = {r["id"]: why for r, why in rejected}
    assert reasons["s1"].startswith("same-path: as s0")
    assert reasons["s3"].startswith("same-path: as s0")
    assert reasons["s4"] == "wrong-step: 16-7 = 8 (it is 9)"
    kept_ordered, _ = select_paths(rows, RFTConfig(ordered=True, check_steps=False))
    assert [r["id"] for r in kept_ordered] == ["s0", "s2", "s3", "s4"]


def test_cap_spreads_over_teachers_and_groups_by_problem():
    rows = [_row(i, f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}", teacher="a") for i in range(4)]
    rows += [_row(10 + i, f"{i} * 3 = <<{i}*3={3 * i}>>{3 * i}", teacher="b", index=i) for i in range(4)]
    rows += [_row(20, "2 + 2 = <<2+2=4>>4", pid="p2")]
    kept, rejected = select_paths(rows, RFTConfig(max_per_problem=4))
    assert sorted(r["id"] for r in kept if r["problem_id"] == "p1") == ["s0", "s1", "s10", "s11"]
    assert any(r["problem_id"] == "p2" for r in kept)
    assert all(why.startswith("over-cap: 4") for _, why in rejected)


def test_solutions_without_equations_fall_back_to_ngram_similarity():
    a = "First we factor the quadratic and find the roots, then we add the roots to get the final answer of five."
    b = a.replace("final answer", "answer")  # nearly the same text
    c = "Using Vieta's formulas directly, the sum of the roots equals minus b over a which is five in this case."
    kept, rejected = select_paths([_row(0, a), _row(1, b), _row(2, c)], RFTConfig())
    assert [r["id"] for r in kept] == ["s0", "s2"]
    assert rejected[0][1].startswith("same-path: as s0 (word 3-gram Jaccard")
    assert path_key(a, RFTConfig(path="equations")) == ("equations", ())


def test_disabled_rft_keeps_everything():
    rows = [_row(0, "1+1=<<1+1=2>>2"), _row(1, "1+1=<<1+1=2>>2")]
    assert select_paths(rows, RFTConfig(enabled=False)) == (rows, [])


def test_equation_scan_stays_fast_on_pathological_text():
    import time

    nasty = ("1 + 2 * 3 - 4 / 5 " * 4000) + "\n" + ("12,345,678.9 " * 5000) + "= " + "(" * 3000 + "1" + ")" * 3000
    t = time.perf_counter()
    extract_equations(nasty)
    wrong_step(extract_equations("<<" + "9*" * 60 + "9=1>> " * 50))
    assert time.perf_counter() - t < 2.0
