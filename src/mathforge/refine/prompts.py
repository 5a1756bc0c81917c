"""The judge's named criteria and the prompts of the critique → rewrite loop.

The judge never sees the gold answer: grading against the reference is the verifier's job, and a critique written
with the gold in view would leak it into the rewrite. The rewrite sees the gold only when the recipe sets
``reveal_gold``.
"""

from __future__ import annotations

from typing import Literal

from mathforge.errors import ConfigError
from mathforge.prompts import PROMPTS

Criterion = Literal["correctness", "completeness", "clarity", "arithmetic"]

CRITERIA: dict[str, str] = {
    "correctness": "the reasoning is valid and the final answer is right",
    "completeness": "every step needed to reach the answer is shown; nothing is skipped or assumed",
    "clarity": "the solution is easy to follow and states the final answer clearly at the end",
    "arithmetic": "every calculation is carried out correctly",
}
SCORE_MIN, SCORE_MAX = 1, 10

JUDGE_SYSTEM = (
    "You are a strict grader of step-by-step math solutions. Score the solution from {lo} (very poor) to {hi} "
    "(flawless) on each criterion:\n{criteria}\n"
    "Then write a short critique that names the specific mistakes or gaps to fix.\n"
    "Reply with only a JSON object and no other text, exactly in this form:\n{example}"
)
JUDGE_USER = "Problem:\n{question}\n\nSolution to grade:\n{solution}"

REWRITE_USER = (
    "{question}\n\nHere is an earlier attempt at this problem:\n---\n{solution}\n---\n{feedback}"
    "Write an improved, complete solution from the beginning."
)
HINT_WRONG = "The final answer of this attempt is wrong."
HINT_NO_ANSWER = "This attempt does not reach a clear final answer."
HINT_GOLD = "The correct final answer is {gold}; write a derivation that reaches it honestly."
CRITIQUE = "A reviewer's critique:\n{critique}\n"


def judge_messages(question: str, solution: str, criteria: list[str]) -> list[dict[str, str]]:
    """Chat asking for scores on ``criteria`` and a critique, as one JSON object."""
    for c in criteria:
        if c not in CRITERIA:
            raise ConfigError(f"unknown judge criterion '{c}'; valid: {', '.join(CRITERIA)}")
    fields = [f'"{c}": <{SCORE_MIN}-{SCORE_MAX}>' for c in criteria] + ['"critique": "<what to fix>"']
    example = "{" + ", ".join(fields) + "}"
    system = JUDGE_SYSTEM.format(
        lo=SCORE_MIN, hi=SCORE_MAX, criteria="\n".join(f"- {c}: {CRITERIA[c]}" for c in criteria), example=example
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": JUDGE_USER.format(question=question.strip(), solution=solution.strip())},
    ]


def rewrite_messages(
    question: str,
    solution: str,
    prompt_key: str,
    *,
    critique: str | None,
    wrong: bool,
    no_answer: bool = False,
    gold: str | None = None,
) -> list[dict[str, str]]:
    """Chat asking for a better solution; the system prompt is the original template's, so the answer format holds."""
    template = PROMPTS.get(prompt_key) or PROMPTS["cot"]
    feedback = ""
    if critique:
        feedback += CRITIQUE.format(critique=critique.strip())
    if gold is not None:
        feedback += HINT_GOLD.format(gold=gold) + "\n"
    elif wrong:
        feedback += HINT_WRONG + "\n"
    elif no_answer:
        feedback += HINT_NO_ANSWER + "\n"
    user = REWRITE_USER.format(question=question.strip(), solution=solution.strip(), feedback=feedback)
    msgs = [{"role": "system", "content": template.system}] if template.system else []
    return msgs + [{"role": "user", "content": user}]
