"""NuminaMath-1.5 (Project Numina, 2025): ~900k olympiad-to-school problems; gold from ``answer`` or the last box."""

from __future__ import annotations

from typing import Any

from mathforge.datasets.answers import last_boxed
from mathforge.datasets.base import Loader, RowError, rest, text_field
from mathforge.records import Problem

# Values of `answer` that mean "no final answer was extracted" rather than an answer.
_NO_ANSWER = {"", "notfound"}


class NuminaMath(Loader):
    name = "numinamath"
    description = "NuminaMath-1.5 (hub schema); gold from 'answer', else last \\boxed{}; proofs have no gold"
    hub_id = "AI-MO/NuminaMath-1.5"
    default_split = "train"
    prompt = "cot-boxed"
    answer_style = "latex"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        question = text_field(row, "problem")
        solution = text_field(row, "solution", required=False)
        answer = text_field(row, "answer", required=False) or ""
        meta = rest(row, {"problem", "solution", "answer"})
        meta["answer_style"] = self.answer_style
        if answer.lower() == "proof" or str(row.get("question_type", "")).lower() == "proof":
            # A proof has nothing to compare against: kept (answer None) so curation, not loading, decides.
            gold, meta["gold_from"] = None, "none (proof)"
        elif answer.lower() not in _NO_ANSWER:
            gold, meta["gold_from"] = answer, "answer"
        else:
            gold, meta["gold_from"] = (last_boxed(solution) if solution else None), "solution"
            if gold is None:
                raise RowError(f"answer is {answer!r} and the solution has no \\boxed{{}}", field="answer")
        return Problem(key, question, gold, solution, self.dataset, meta)
