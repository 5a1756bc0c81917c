"""SVAMP (Patel et al., 2021): one-step word problems with varied structure; the gold is a number."""

from __future__ import annotations

from typing import Any

from mathforge.datasets.answers import number_text
from mathforge.datasets.base import Loader, RowError, rest, text_field
from mathforge.records import Problem


class SVAMP(Loader):
    name = "svamp"
    description = "SVAMP word problems (Body + Question); numeric Answer normalised (51.0 -> 51)"
    hub_id = "ChilleD/SVAMP"
    default_split = "train"
    file_names = ("SVAMP.json",)  # the original release: one JSON array of all 1,000 problems
    id_field = "ID"
    prompt = "cot"
    answer_style = "number"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        body = text_field(row, "Body")
        question = text_field(row, "Question")
        if row.get("Answer") is None:
            raise RowError("missing or empty", field="Answer")
        gold = number_text(row["Answer"])
        if gold is None:
            raise RowError(f"answer {row['Answer']!r} is not a number", field="Answer")
        meta = rest(row, {"Body", "Question", "Answer"})
        meta["answer_style"] = self.answer_style
        own = row.get(self.id_field or "")
        pid = f"{self.dataset}/{own}" if own else key
        return Problem(pid, f"{body} {question}", gold, None, self.dataset, meta)
