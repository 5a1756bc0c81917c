"""MATH-500 (Lightman et al., 2023): the 500-problem PRM800K test subset of MATH, with an ``answer`` column."""

from __future__ import annotations

from typing import Any

from mathforge.datasets.answers import last_boxed
from mathforge.datasets.base import Loader, RowError, rest, text_field
from mathforge.records import Problem


class MATH500(Loader):
    name = "math500"
    description = "MATH-500 evaluation subset of MATH; gold from its answer column"
    hub_id = "HuggingFaceH4/MATH-500"
    default_split = "test"
    id_field = "unique_id"
    prompt = "cot-boxed"
    answer_style = "latex"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        question = text_field(row, "problem")
        solution = text_field(row, "solution", required=False)
        gold = text_field(row, "answer", required=False) or (last_boxed(solution) if solution else None)
        if gold is None:
            raise RowError("empty answer and no \\boxed{} in the solution", field="answer")
        meta = rest(row, {"problem", "solution", "answer", "subject"})
        if "subject" in row:
            meta["type"] = row["subject"]  # named "type" as in MATH, so both filter the same way
        meta["answer_style"] = self.answer_style
        # unique_id ("test/precalculus/807.json") is MATH's own file name: it ties MATH-500 back to MATH test.
        unique_id = row.get(self.id_field or "")
        pid = f"{self.dataset}/{unique_id}" if unique_id else key
        return Problem(pid, question, gold, solution, self.dataset, meta)
