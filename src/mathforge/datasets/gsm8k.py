"""GSM8K (Cobbe et al., 2021): grade-school word problems; the gold is the number after ``####``."""

from __future__ import annotations

from typing import Any

from mathforge.datasets.answers import gsm8k_gold, number_text
from mathforge.datasets.base import Loader, RowError, text_field
from mathforge.records import Problem


class GSM8K(Loader):
    name = "gsm8k"
    description = "GSM8K grade-school word problems; gold after '####', commas removed"
    hub_id = "openai/gsm8k"
    hub_configs = ("main",)
    default_split = "train"
    prompt = "cot"
    answer_style = "number"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        question = text_field(row, "question")
        solution = text_field(row, "answer")
        gold = gsm8k_gold(solution)
        if gold is None:
            raise RowError("no final answer after '####'", field="answer")
        if number_text(gold) is None:  # every GSM8K gold is a number; "#### five" is a broken row, not a gold
            raise RowError(f"the final answer after '####' is not a number: {gold!r}", field="answer")
        # The full reference (with its <<calculator>> annotations) is kept verbatim as the solution.
        return Problem(key, question, gold, solution, self.dataset, {"answer_style": self.answer_style})
