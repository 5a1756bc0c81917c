"""arith: the seeded word-problem family of ``mathforge.synth.family`` (one- and two-step, small numbers).

Rows are GSM8K-shaped (``question``, ``answer`` ending in ``#### N``) plus the problem's ``kind``, ``steps`` and
``numbers``; the bundled copies are ``bundled:arith-train`` and ``bundled:arith-test`` (seed 0, 200 train and 300
test problems, disjoint in their arithmetic), and ``write_family`` makes other seeds and sizes.
"""

from __future__ import annotations

from typing import Any

from mathforge.datasets.base import rest
from mathforge.datasets.gsm8k import GSM8K
from mathforge.records import Problem


class Arith(GSM8K):
    """GSM8K's row shape and gold parser, with the family's own ids and its kind, steps and numbers in meta."""

    name = "arith"
    description = "synthetic one/two-step word problems (mathforge.synth.family); gold after '####'"
    hub_id = None
    hub_configs = (None,)
    default_split = "train"
    id_field = "id"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        problem = super().parse(row, key)
        problem.id = str(row.get("id") or key)
        problem.meta.update(rest(row, {"id", "question", "answer"}))
        return problem
