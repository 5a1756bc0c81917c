"""MathQA (Amini et al., 2019): GRE/GMAT-style multiple choice; the gold is the correct option's letter."""

from __future__ import annotations

import ast
import re
from typing import Any

from mathforge.datasets.base import Loader, RowError, rest, text_field
from mathforge.records import Problem

# "a ) 12 , b ) 16 , ..." — an option runs until the next ", <letter> )". Some rows repeat the marker
# ("a ) a ) 1055"), which the optional back-reference swallows.
_OPTION = re.compile(r"(?:^|,)\s*([a-e])\s*\)\s*(?:\1\s*\)\s*)?(.*?)\s*(?=,\s*[a-e]\s*\)|$)", re.S)


def parse_options(options: str) -> dict[str, str]:
    """``"a ) 12 , b ) 16"`` (or the same as a Python list literal, as in a few rows) -> ``{"a": "12", "b": "16"}``."""
    text = options.strip()
    if text.startswith("["):
        try:
            text = " , ".join(str(item) for item in ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return {}
    return {letter: value for letter, value in _OPTION.findall(text)}


class MathQA(Loader):
    name = "mathqa"
    description = "MathQA multiple choice (options a-e); gold = the correct letter, its text in meta"
    hub_id = "allenai/math_qa"
    default_split = "test"
    prompt = "cot-choice"
    answer_style = "choice"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        # The hub copy capitalises Problem/Rationale and calls "type" "category"; the GitHub files do not.
        question = text_field(row, "problem", "Problem")
        if isinstance(row.get("options"), list):  # some copies hold the options as a list of "a ) 12" strings
            row = {**row, "options": " , ".join(map(str, row["options"]))}
        options = text_field(row, "options")
        choices = parse_options(options)
        if len(choices) < 2:
            raise RowError(f"cannot parse options {options!r}", field="options")
        correct = text_field(row, "correct").lower()
        if correct not in choices:
            raise RowError(f"correct option {correct!r} is not one of {', '.join(choices)}", field="correct")
        rationale = text_field(row, "rationale", "Rationale", required=False)
        solution = rationale.strip('"').strip() if rationale else None  # rationales come wrapped in quotes
        meta = rest(row, {"problem", "Problem", "options", "correct", "rationale", "Rationale"})
        meta.update(choices=choices, answer_value=choices[correct], answer_style=self.answer_style)
        return Problem(key, question, correct, solution, self.dataset, meta)
