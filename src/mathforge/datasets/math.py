"""MATH (Hendrycks et al., 2021): competition problems; the gold is the last ``\\boxed{}`` of the solution."""

from __future__ import annotations

import re
from typing import Any

from mathforge.datasets.answers import last_boxed
from mathforge.datasets.base import Loader, RowError, rest, text_field
from mathforge.records import Problem

SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

# Known defects of the MATH release: two train solutions end in an empty \boxed{}. Both are multiple choice whose
# solutions show the count is 0, option (A); the gold follows MATH's own convention for such problems. Applied only
# while the box is still empty, and marked in meta, so a corrected source wins and nothing is patched silently.
# Keyed by the start of the problem, since hub copies have no file names (train/number_theory/7115.json, 7117.json).
ERRATA = {
    "For any integer $n>1$, the number of prime numbers greater than $n!+1$ and less than $n!+n$ is:": "\\text{(A)}",
    "You are given a sequence of $58$ terms; each term has the form $P+n$": "\\text{(A)}",
}


def errata_gold(question: str, solution: str) -> str | None:
    """The corrected gold of a known-defective row, or None."""
    if "\\boxed{}" not in solution:
        return None
    return next((gold for prefix, gold in ERRATA.items() if question.startswith(prefix)), None)


def level_number(level: Any) -> Any:
    """ "Level 5" -> 5 so curation can filter by level; anything else (MATH has "Level ?") is kept as it is."""
    match = re.fullmatch(r"Level (\d+)", str(level).strip())
    return int(match.group(1)) if match else level


class MATH(Loader):
    name = "math"
    description = "MATH competition problems (7 subjects, levels 1-5); gold = last \\boxed{} of the solution"
    hub_id = "EleutherAI/hendrycks_math"
    hub_configs = SUBJECTS  # the hub copy has one config per subject and no "all"
    default_split = "train"
    id_field = "source_file"
    prompt = "cot-boxed"
    answer_style = "latex"

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        question = text_field(row, "problem")
        solution = text_field(row, "solution")
        gold = last_boxed(solution)
        source_file = row.get(self.id_field or "")
        meta = rest(row, {"problem", "solution"})
        if gold is None:
            gold = errata_gold(question, solution)
            meta["gold_from"] = "errata: empty \\boxed{} in the source"
        if gold is None:
            raise RowError("no complete \\boxed{} answer in the solution", field="solution")
        if "level" in meta:
            meta["level"] = level_number(meta["level"])
        meta["answer_style"] = self.answer_style
        # The original release names each problem by its file ("train/algebra/0.json"): the most stable id there is.
        pid = f"{self.dataset}/{source_file}" if source_file else key
        return Problem(pid, question, gold, solution, self.dataset, meta)
