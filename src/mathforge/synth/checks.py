"""Reading a written problem out of a reply, and the well-formedness checks it must pass before anyone solves it.

Each check returns None when the problem is fine or the reason it is not, so a rejected problem always says why.
"""

from __future__ import annotations

import re

from mathforge.verify.extract import balanced_braces

_PROBLEM = re.compile(r"(?im)^[ \t>#*_]*(?:new |rewritten |the )?problem[ \t*_]*(?:\d+[ \t]*)?:[ \t*_]*")
_END = re.compile(
    r"(?im)^[ \t>#*_]*(?:solution|answer|final answer|explanation|hints?|steps?|reasoning|note)\b[ \t*_]*[:.]"
)
_PLACEHOLDER = re.compile(r"<\s*(?:the )?new problem\s*>|\[insert|\bTODO\b|lorem ipsum", re.IGNORECASE)
_ASKS = re.compile(
    r"\?|\b(?:find|compute|calculate|determine|evaluate|simplify|solve|what|how many|how much|which|express|give)\b",
    re.IGNORECASE,
)
_PROOF = re.compile(r"\b(?:prove|show)\s+that\b", re.IGNORECASE)
_GIVEN_ANSWER = re.compile(r"\b(?:the answer is|answer\s*:|\\boxed\{)", re.IGNORECASE)


def parse_problem(text: str | None) -> str:
    """The problem a reply states: after its 'Problem:' label (when there is one), up to any solution or answer."""
    text = (text or "").strip()
    m = _PROBLEM.search(text)
    if m:
        text = text[m.end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip().strip("*_").strip()


def malformed(problem: str, *, min_chars: int, max_chars: int) -> str | None:
    """Why a problem is not well formed (too short or long, no question, a proof, an answer given...), else None."""
    if len(problem) < min_chars:
        return f"malformed: {len(problem)} characters, fewer than {min_chars}"
    if len(problem) > max_chars:
        return f"malformed: {len(problem)} characters, more than {max_chars}"
    if _PLACEHOLDER.search(problem):
        return "malformed: template placeholder left in the problem"
    if _PROOF.search(problem):
        return "malformed: a proof problem has no single answer to vote on"
    if not _ASKS.search(problem):
        return "malformed: asks nothing (no question mark or question word)"
    if _GIVEN_ANSWER.search(problem):
        return "malformed: states its own answer"
    if not balanced_braces(problem):
        return "malformed: unbalanced braces"
    return None
