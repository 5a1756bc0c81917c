"""Judge replies: validated JSON in, a Judgement or a reason out; the verifier's verdict replaces correctness."""

from __future__ import annotations

import pytest

from mathforge.errors import ConfigError
from mathforge.refine.judge import Judgement, apply_verifier, parse_judgement
from mathforge.refine.prompts import judge_messages, rewrite_messages

CRITERIA = ["correctness", "completeness", "clarity", "arithmetic"]
GOOD = '{"correctness": 8, "completeness": 6, "clarity": 7, "arithmetic": 9, "critique": "show the product"}'


@pytest.mark.parametrize(
    "text",
    [GOOD, f"Here is my grade:\n```json\n{GOOD}\n```\nThanks.", GOOD.replace("}", ', "overall": 7}'),
     "{not json} then " + GOOD, GOOD.replace("8", '"8"')],
)
def test_valid_replies(text):
    j, err = parse_judgement(text, CRITERIA)
    assert err is None and j is not None
    assert j.scores == {"correctness": 8, "completeness": 6, "clarity": 7, "arithmetic": 9}
    assert j.critique == "show the product" and j.score() == 7.5


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Looks great, 9/10!", "no JSON object"),
        ('{"correctness": 8, "completeness": 6', "no JSON object"),
        (GOOD.replace('"clarity": 7, ', ""), "clarity"),
        (GOOD.replace("9", "11"), "arithmetic"),
        (GOOD.replace("8", "0"), "correctness"),
        (GOOD.replace('"show the product"', '""'), "critique"),
        (GOOD.replace("6", '"six"'), "completeness"),
        (None, "no JSON object"),
    ],
)
def test_malformed_replies_name_the_problem(text, reason):
    j, err = parse_judgement(text, CRITERIA)
    assert j is None and reason in err


def test_subset_of_criteria():
    j, err = parse_judgement('{"clarity": 4, "critique": "terse"}', ["clarity"])
    assert err is None and j.score() == 4.0


def test_verifier_overrides_correctness():
    j = Judgement({"correctness": 9, "clarity": 7}, "ok")
    wrong, overridden = apply_verifier(j, False)
    assert wrong.scores["correctness"] == 1 and overridden and wrong.score() == 4.0
    right, overridden = apply_verifier(Judgement({"correctness": 9, "clarity": 7}, "ok"), True)
    assert right.scores["correctness"] == 10 and not overridden
    same, overridden = apply_verifier(j, None)
    assert same is j and not overridden


def test_prompts_keep_gold_out_unless_revealed():
    msgs = judge_messages("What is 2+3?", "2+3=6. The answer is 6.", CRITERIA)
    assert all("5" not in m["content"] for m in msgs) and "arithmetic" in msgs[0]["content"]
    hidden = rewrite_messages("What is 2+3?", "The answer is 6.", "cot", critique="check the sum", wrong=True)
    assert "wrong" in hidden[-1]["content"] and "5" not in hidden[-1]["content"]
    assert "The answer is N" in hidden[0]["content"]  # the original template's answer format
    shown = rewrite_messages("What is 2+3?", "The answer is 6.", "cot", critique=None, wrong=True, gold="5")
    assert "The correct final answer is 5" in shown[-1]["content"]
    with pytest.raises(ConfigError):
        judge_messages("q", "s", ["style"])
