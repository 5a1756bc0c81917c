"""Sample filters: each returns True to keep a sample or ``(False, reason)`` to drop it, and says why.

Like datatrove's filters, a filter is a small callable with a ``name``; the curate stage runs them in order,
counts what each dropped, and keeps every dropped sample in rejected.parquet with the reason.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Union

from pydantic import Field

from mathforge.config import StrictModel

Verdict = Union[bool, tuple[bool, str]]
_WORD = re.compile(r"\w+")


class FilterConfig(StrictModel):
    truncated: bool = Field(True, description="drop samples cut off by the token limit (finish_reason 'length')")
    missing_answer: bool = Field(True, description="drop samples with no extractable final answer")
    only_correct: bool = Field(True, description="drop samples the verifier did not accept (correct is not true)")
    min_words: int = Field(3, ge=0, description="drop solutions with fewer whitespace-separated words")
    max_words: int | None = Field(2048, ge=1, description="drop solutions with more words (None: no bound)")
    repetition_ngram: int = Field(10, ge=2, description="word n-gram length of the repetition check")
    max_repetition: float | None = Field(
        0.3, gt=0, le=1, description="drop solutions whose repeated n-grams exceed this share of all (None: off)"
    )


class Filter:
    """A named keep/drop decision over one sample row."""

    name: str = "filter"

    def __call__(self, row: dict[str, Any]) -> Verdict:  # pragma: no cover - interface
        raise NotImplementedError


class Truncated(Filter):
    name = "truncated"

    def __call__(self, row: dict[str, Any]) -> Verdict:
        if row.get("finish_reason") == "length":
            return False, "truncated: generation stopped at the token limit (finish_reason=length)"
        return True


class MissingAnswer(Filter):
    """No final answer: the verifier's ``extracted`` column, or the default extractors on unverified text."""

    name = "missing-answer"

    def __call__(self, row: dict[str, Any]) -> Verdict:
        if row.get("extracted"):
            return True
        if row.get("method") is None and row.get("correct") is None:  # never verified: look for an answer now
            from mathforge.verify import extract

            if extract(row.get("text") or "")[0]:
                return True
        return False, "missing-answer: no final answer could be extracted"


class OnlyCorrect(Filter):
    name = "incorrect"

    def __call__(self, row: dict[str, Any]) -> Verdict:
        correct = row.get("correct")
        if correct is True:
            return True
        if correct is False:
            gold = row.get("gold")
            return False, f"incorrect: answer {row.get('extracted')!r} does not match gold {gold!r}"
        return False, f"unverified: the verifier reached no verdict ({row.get('reason') or 'no verdict'})"


class LengthBounds(Filter):
    name = "length"

    def __init__(self, min_words: int, max_words: int | None):
        self.min_words, self.max_words = min_words, max_words

    def __call__(self, row: dict[str, Any]) -> Verdict:
        words = len((row.get("text") or "").split())
        if words < self.min_words:
            return False, f"too-short: {words} words (min {self.min_words})"
        if self.max_words is not None and words > self.max_words:
            return False, f"too-long: {words} words (max {self.max_words})"
        return True


class Repetition(Filter):
    """Degenerate loops: the share of word n-grams that repeat an earlier one (Gopher's duplicate n-gram idea)."""

    name = "repetition"

    def __init__(self, n: int, max_share: float):
        self.n, self.max_share = n, max_share

    def __call__(self, row: dict[str, Any]) -> Verdict:
        share, top = repetition(row.get("text") or "", self.n)
        if share > self.max_share:
            return False, f"repetition: {share:.0%} of {self.n}-grams repeat (max {self.max_share:.0%}), e.g. '{top}'"
        return True


def repetition(text: str, n: int) -> tuple[float, str]:
    """(share of word n-grams that repeat an earlier one, the most repeated n-gram)."""
    words = _WORD.findall(text.lower())
    grams = list(zip(*(words[i:] for i in range(n))))
    if not grams:
        return 0.0, ""
    counts = Counter(grams)
    repeats = len(grams) - len(counts)
    top = " ".join(counts.most_common(1)[0][0])
    return repeats / len(grams), top


def build_filters(cfg: FilterConfig) -> list[Filter]:
    """The filters a config asks for, cheapest first."""
    out: list[Filter] = []
    if cfg.truncated:
        out.append(Truncated())
    if cfg.missing_answer:
        out.append(MissingAnswer())
    if cfg.only_correct:
        out.append(OnlyCorrect())
    out.append(LengthBounds(cfg.min_words, cfg.max_words))
    if cfg.max_repetition is not None:
        out.append(Repetition(cfg.repetition_ngram, cfg.max_repetition))
    return out


def apply_filters(
    rows: list[dict[str, Any]], filters: list[Callable[[dict[str, Any]], Verdict]]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Run the filters in order over each row; the first that drops a row gives the reason."""
    kept, rejected = filter_positions(rows, filters)
    return [rows[i] for i in kept], [(rows[i], reason) for i, reason in rejected]


def filter_positions(
    rows: list[dict[str, Any]], filters: list[Callable[[dict[str, Any]], Verdict]]
) -> tuple[list[int], list[tuple[int, str]]]:
    """``apply_filters`` by position: the indices of the rows kept, and (index, reason) of those dropped."""
    kept, rejected = [], []
    for i, row in enumerate(rows):
        for f in filters:
            verdict = f(row)
            if verdict is True or (isinstance(verdict, tuple) and verdict[0]):
                continue
            reason = verdict[1] if isinstance(verdict, tuple) else f"{getattr(f, 'name', 'filter')}: dropped"
            rejected.append((i, reason))
            break
        else:
            kept.append(i)
    return kept, rejected
