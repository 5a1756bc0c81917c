"""Named extractors: anchors, precedence, nesting, multiple choice, and linear time on huge inputs."""

import json
import time
from pathlib import Path

import pytest

from mathforge.verify import extract, parse_options

FIXTURES = Path(__file__).parent / "fixtures" / "verify"


def test_gsm8k_hash_wins_over_dollar_amounts():
    text = "She sells eggs for $2 each.\nShe makes 9 * 2 = $<<9*2=18>>18 a day, or $126 a week.\n#### 18"
    assert extract(text) == ("18", "gsm8k-hash")


def test_gsm8k_hash_must_start_a_line():
    assert extract("we write #### 5 inline", ["gsm8k-hash"]) == (None, None)


@pytest.mark.parametrize(
    "text, answer, name",
    [
        ("So x = 3. The answer is 42.", "42", "answer-is"),
        ("The answer is $\\frac{1}{2}$.", "$\\frac{1}{2}$", "answer-is"),
        ("The answer is 2.5.", "2.5", "answer-is"),
        ("Final Answer: The final answer is $(0,1)$. I hope it is correct.", "$(0,1)$", "final-answer"),
        ("Thus $\\boxed{\\frac{\\sqrt{2}}{2}}$ is it.", "\\frac{\\sqrt{2}}{2}", "boxed"),
        ("First \\boxed{1}. Then, after more work, \\fbox{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),
        ("roots are \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}.", "-2, 1", "boxed"),
    ],
)
def test_named_extractors(text, answer, name):
    assert extract(text) == (answer, name)


def test_final_answer_beats_an_earlier_box():
    text = "We get $\\boxed{14{,}940}$ first. Final Answer: The final answer is $14{,}916$. I hope it is correct."
    assert extract(text) == ("$14{,}916$", "final-answer")


def test_last_number_and_explicit_order():
    text = "It costs $5 and then 1,250 more, so 1,255."
    assert extract(text, ["last-number"]) == ("1,255", "last-number")
    assert extract(text, ["boxed"]) == (None, None)
    with pytest.raises(ValueError, match="unknown extractor"):
        extract(text, ["nope"])


def test_gsm8k_fixture_solutions_all_extract():
    for line in open(FIXTURES / "gsm8k_test_slice.jsonl", encoding="utf-8"):
        sol = json.loads(line)["answer"]
        ans, name = extract(sol)
        assert name == "gsm8k-hash" and ans == sol.rsplit("####", 1)[1].strip()


def test_mathqa_options_and_choice_letter():
    row = json.loads(open(FIXTURES / "mathqa_test_slice.jsonl", encoding="utf-8").readline())
    options = parse_options(row["options"])
    assert options == {"a": "12", "b": "16", "c": "18", "d": "24", "e": "26"}
    assert extract("log x = log 12 answer : a", ["choice"]) == ("a", "choice")
    assert extract("Therefore the answer is (C).", ["choice"]) == ("c", "choice")
    assert extract("so we pick \\boxed{D}", ["choice"]) == ("d", "choice")


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 14000,  # 100 KB of unclosed boxes
        "\\boxed{" + "{" * 50000 + "1" + "}" * 50000 + "}",  # deep nesting
        "The answer is " + "9" * 100_000,
        "lorem ipsum 3 " * 8000,
    ],
)
def test_extractors_are_fast_on_huge_inputs(text):
    t = time.perf_counter()
    for name in ("gsm8k-hash", "final-answer", "boxed", "answer-is", "last-number", "choice"):
        extract(text, [name])
    assert time.perf_counter() - t < 1.0
