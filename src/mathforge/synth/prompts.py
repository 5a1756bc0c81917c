"""Education levels and synthesis methods, each with its prompt, and the prompts that ask for one new problem.

A method keeps the key points of a seed problem (the quantities, relations and steps a solver needs) and changes
something else; ``from_text`` writes a problem that tests the key ideas of a passage of math text. A level says who
the problem is for and which solving prompt (answer format) its pseudo-gold answer is drawn with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["grade_school", "middle_school", "high_school", "competition", "college"]
Method = Literal["rewrite", "change_numbers", "add_step", "change_context"]


@dataclass(frozen=True)
class LevelSpec:
    audience: str
    solve_prompt: str  # prompt template key used to solve (and later to generate for) problems of this level


LEVELS: dict[str, LevelSpec] = {
    "grade_school": LevelSpec(
        "a grade-school word problem (ages 8-12): everyday quantities, the four operations, 2 to 8 steps, "
        "and a single whole-number answer", "cot"),
    "middle_school": LevelSpec(
        "a middle-school problem (ages 11-14): fractions, decimals, percentages, ratios, simple equations or basic "
        "geometry, with a single numeric answer", "cot"),
    "high_school": LevelSpec(
        "a high-school problem: algebra, functions, geometry, trigonometry, sequences or probability, with a single "
        "exact answer (a number or a simple expression)", "cot-boxed"),
    "competition": LevelSpec(
        "a competition problem in the style of AMC or AIME: number theory, combinatorics, algebra or geometry that "
        "needs an insight, with a single exact answer", "cot-boxed"),
    "college": LevelSpec(
        "a college-level problem: calculus, linear algebra, differential equations, discrete math or probability, "
        "with a single exact answer", "cot-boxed"),
}

METHODS: dict[str, str] = {
    "rewrite": "Rewrite it as a new problem in different words. Keep its key points: the same quantities, relations "
               "and steps.",
    "change_numbers": "Write a new problem with the same structure and key points but different numbers, chosen so "
                      "that it still has exactly one clean answer.",
    "add_step": "Write a harder new problem that keeps its key points and needs one more reasoning step.",
    "change_context": "Write a new problem that keeps its key points and its mathematics but is set in a different "
                      "situation, with different people or objects.",
}
FROM_TEXT = "from_text"

SYSTEM = (
    "You write new math problems for students. Write {audience}. The problem must be self-contained, unambiguous and "
    "have exactly one correct answer. Do not include the solution, the answer or hints. Reply in exactly this form:\n"
    "Problem: <the new problem>"
)
FROM_SEED = "Original problem:\n{question}\n\nTask: {method}"
FROM_PASSAGE = "Math text:\n{passage}\n\nTask: Write one new problem that tests the key ideas of this text."


def seed_messages(question: str, method: str, level: str) -> list[dict[str, str]]:
    """Chat asking for one new problem from a seed problem by ``method`` at ``level``."""
    return [
        {"role": "system", "content": SYSTEM.format(audience=LEVELS[level].audience)},
        {"role": "user", "content": FROM_SEED.format(question=question.strip(), method=METHODS[method])},
    ]


def passage_messages(passage: str, level: str) -> list[dict[str, str]]:
    """Chat asking for one new problem on the key ideas of a passage of math text, at ``level``."""
    return [
        {"role": "system", "content": SYSTEM.format(audience=LEVELS[level].audience)},
        {"role": "user", "content": FROM_PASSAGE.format(passage=passage.strip())},
    ]
