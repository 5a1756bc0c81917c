"""Reading a judge's reply: one JSON object validated by a pydantic model, and the score the loop acts on.

A reply that is not valid JSON, misses a criterion or scores outside the range is a malformed judgement: the loop
asks again with a new sample index, and after the last attempt records a judge failure. Nothing here raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mathforge.refine.prompts import SCORE_MAX, SCORE_MIN


@dataclass
class Judgement:
    """Validated scores per criterion and the critique."""

    scores: dict[str, int]
    critique: str

    def score(self) -> float:
        return round(sum(self.scores.values()) / len(self.scores), 3)


@lru_cache(maxsize=None)
def reply_model(criteria: tuple[str, ...]) -> type[BaseModel]:
    """The pydantic model of a judge reply over ``criteria`` (extra keys such as 'overall' are ignored)."""
    score = (int, Field(ge=SCORE_MIN, le=SCORE_MAX))
    fields: dict[str, Any] = {c: score for c in criteria}
    fields["critique"] = (str, Field(min_length=1))
    return create_model("JudgeReply", __config__=ConfigDict(extra="ignore"), **fields)


def _json_objects(text: str):
    """Every JSON object that starts at a '{' in ``text`` (models wrap replies in prose and code fences)."""
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos != -1:
        try:
            obj, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(obj, dict):
                yield obj
        pos = text.find("{", pos + 1)


def parse_judgement(text: str | None, criteria: list[str]) -> tuple[Judgement | None, str | None]:
    """``(Judgement, None)`` for a valid reply, else ``(None, why it is malformed)``."""
    model = reply_model(tuple(criteria))
    first_error = None
    for obj in _json_objects(text or ""):
        try:
            reply = model.model_validate(obj)
        except ValidationError as exc:
            if first_error is None:
                err = exc.errors()[0]
                first_error = f"{'.'.join(map(str, err['loc'])) or 'reply'}: {err['msg']}"
            continue
        return Judgement({c: getattr(reply, c) for c in criteria}, reply.critique.strip()), None
    if first_error:
        return None, f"invalid judgement ({first_error})"
    return None, "no JSON object in the reply"


def apply_verifier(judgement: Judgement, correct: bool | None) -> tuple[Judgement, bool]:
    """Where the verifier decided, its verdict replaces the judge's correctness score; (judgement, overridden)."""
    if correct is None or "correctness" not in judgement.scores:
        return judgement, False
    forced = SCORE_MAX if correct else SCORE_MIN
    judged = judgement.scores["correctness"]
    # "overridden" means the judge disagreed with the verifier about right vs wrong, not merely the exact number.
    disagreed = (judged > (SCORE_MIN + SCORE_MAX) / 2) != correct
    return Judgement({**judgement.scores, "correctness": forced}, judgement.critique), disagreed
