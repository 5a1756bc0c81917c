"""arith: the seeded word-problem family of ``mathforge.synth.family`` (one- and two-step, small numbers).

Rows are GSM8K-shaped (``question``, ``answer`` ending in ``#### N``) plus the problem's ``kind``, ``steps`` and
``numbers``; the bundled copies are ``bundled:arith-train`` and ``bundled:arith-test`` (seed 0, 200 train and 300
test problems, disjoint in their arithmetic), and ``write_family`` makes other seeds and sizes.
"""

from __future__ import annotations

from typing import Any

from mathforge.datasets.answers import gsm8k_gold
from mathforge.datasets.base import Loader, RowError, rest, text_field
from mathforge.records import Problem


class Arith(Loader):
    name = "arith"
    description = "synthetic one/two-step word problems (mathforge.synth.family); gold after '####'"
    default_split = "train"
    id_field = "id"
    prompt = "cot"
    answer_style = "number"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        question = text_field(row, "question")
        solution = text_field(row, "answer")
        gold = gsm8k_gold(solution)
        if gold is None:
            raise RowError("no final answer after '####'", field="answer")
        meta = rest(row, {"id", "question", "answer"})
        meta["answer_style"] = self.answer_style
        return Problem(str(row.get("id") or key), question, gold, solution, self.dataset, meta)
