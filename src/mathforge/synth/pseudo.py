"""Pseudo-gold answers: the majority over k independent solutions, kept only when enough of them agree."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mathforge.verify import extract, majority_vote

_UNSOLVABLE = re.compile(
    r"cannot be (?:determined|found|solved)|can't be (?:determined|found)|not enough information|insufficient|"
    r"no (?:unique |real )?solution|undefined|not possible|impossible",
    re.IGNORECASE,
)


@dataclass
class PseudoGold:
    answer: str | None
    agreement: float  # votes for the answer over all k solutions (unanswered ones included)
    answered: int
    votes: int
    runner_up: int
    solution_index: int | None  # the first solution whose answer is in the winning class
    answers: list[str | None]

    def reject_reason(self, min_agreement: float) -> str | None:
        """Why the vote cannot serve as a gold answer, else None."""
        k = len(self.answers)
        if self.answer is None:
            return f"unsolved: none of the {k} solutions stated a final answer"
        if _UNSOLVABLE.search(self.answer):
            return f"unsolvable: the majority answer is {self.answer!r}"
        if self.agreement < min_agreement:
            return f"low-agreement: {self.votes} of {k} solutions agree ({self.agreement:.2f} < {min_agreement:.2f})"
        if self.runner_up == self.votes:
            return f"tied-vote: {self.votes} vs {self.runner_up} of {k} solutions"
        return None


def pseudo_gold(solutions: list[str | None], extractors: list[str] | None = None) -> PseudoGold:
    """Extract each solution's final answer (None for a missing solution) and vote over equivalent answers."""
    answers = [extract(s, extractors)[0] if s is not None else None for s in solutions]
    vote = majority_vote(answers)
    classes = vote.classes
    votes = classes[0][1] if classes else 0
    return PseudoGold(
        answer=vote.answer,
        agreement=round(vote.share, 4),
        answered=sum(a is not None and bool(a.strip()) for a in answers),
        votes=votes,
        runner_up=classes[1][1] if len(classes) > 1 else 0,
        solution_index=classes[0][2][0] if classes else None,
        answers=answers,
    )
