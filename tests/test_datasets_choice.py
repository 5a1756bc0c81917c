"""Generic files with an `options` field (AQuA-RAT style) are multiple choice without extra flags; `datasets show`
takes --answer-style and --prompt like a recipe."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mathforge.cli.datasets import app
from mathforge.datasets import load
from mathforge.errors import DataError
from mathforge.prompts import build_messages, get_prompt

AQUA = [
    {"question": "Two trains leave at once; one at 20 km/h. How far apart after 2 h?",
     "options": ["A)10", "B)20", "C)40", "D)60", "E)80"], "rationale": "20 x 2 = 40\nANSWER:C", "correct": "C"},
    {"question": "What is 3 squared?", "options": ["A) 6", "B) 9", "C) 12"], "rationale": "3*3=9", "correct": "B"},
]


def write(tmp_path, rows, name="aqua.jsonl"):
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f


def test_aqua_style_rows_get_letter_gold_and_the_choice_prompt(tmp_path):
    problems = list(load("generic", str(write(tmp_path, AQUA))))
    p = problems[0]
    assert p.answer == "c" and p.solution.startswith("20 x 2")
    assert p.meta["choices"] == {"a": "10", "b": "20", "c": "40", "d": "60", "e": "80"}
    assert p.meta["answer_value"] == "40" and p.meta["answer_style"] == "choice" and p.meta["prompt"] == "cot-choice"
    user = build_messages(get_prompt(p.meta["prompt"]), p)[-1]["content"]
    assert "Options: a) 10, b) 20, c) 40" in user
    assert problems[1].answer == "b" and problems[1].meta["answer_value"] == "9"


def test_plain_rows_are_unchanged_and_a_number_style_ignores_options(tmp_path):
    plain = list(load("generic", str(write(tmp_path, [{"question": "1+1?", "answer": "2"}]))))[0]
    assert plain.answer == "2" and "choices" not in plain.meta and "prompt" not in plain.meta
    f = write(tmp_path, [{**AQUA[0], "answer": "40"}], "with-answer.jsonl")
    numeric = list(load("generic", str(f), answer_style="number"))[0]
    assert numeric.answer == "40" and "choices" not in numeric.meta


def test_bad_choice_rows_name_file_row_and_field(tmp_path):
    f = write(tmp_path, [AQUA[0], {**AQUA[1], "correct": "F"}])
    with pytest.raises(DataError, match=r"aqua.jsonl.*line 2.*correct.*'F' is not one of a, b, c"):
        list(load("generic", str(f)))
    f = write(tmp_path, [{**AQUA[1], "options": ["six", "nine"]}], "bad-options.jsonl")
    with pytest.raises(DataError, match="options"):
        list(load("generic", str(f)))


def test_datasets_show_takes_answer_style_and_prompt(tmp_path):
    f = write(tmp_path, AQUA)
    r = CliRunner().invoke(app, ["show", "generic", "--path", str(f), "--prompt", "cot-choice", "-n", "1"])
    assert r.exit_code == 0, r.output
    assert "prompt:   cot-choice" in r.output and "The answer is X." in r.output and "a) 10, b) 20" in r.output
    f2 = write(tmp_path, [{"question": "1+1?", "answer": "2"}], "plain.jsonl")
    r = CliRunner().invoke(app, ["show", "generic", "--path", str(f2), "--answer-style", "number"])
    assert r.exit_code == 0, r.output
    assert "prompt:   cot" in r.output and "cot-boxed" not in r.output
    r = CliRunner().invoke(app, ["show", "generic", "--path", str(f2), "--prompt", "nope"])
    assert r.exit_code != 0 and "valid prompts" in (r.output + str(r.exception))
