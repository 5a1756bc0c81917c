"""Any JSONL/JSON/Parquet/CSV file or hub dataset, given which fields hold the question, answer and solution."""

from __future__ import annotations

from typing import Any, Literal, get_args

from mathforge.datasets.answers import gsm8k_gold, last_boxed, number_text
from mathforge.datasets.base import AnswerStyle, Loader, RowError, rest, text_field
from mathforge.errors import ConfigError
from mathforge.records import Problem

AnswerParser = Literal["raw", "gsm8k", "boxed"]
_STYLE_OF_PARSER: dict[str, AnswerStyle] = {"raw": "latex", "gsm8k": "number", "boxed": "latex"}
_PROMPT_OF_STYLE = {"number": "cot", "latex": "cot-boxed", "choice": "cot-choice"}


class Generic(Loader):
    name = "generic"
    description = "any JSONL/JSON/Parquet/CSV file or hub id, with a field mapping and an answer parser"
    hub_id = None
    default_split = "train"
    prompt = "cot-boxed"
    answer_style = "latex"

    def __init__(
        self,
        *,
        question_field: str = "question",
        answer_field: str | None = "answer",
        solution_field: str | None = None,
        id_field: str | None = None,
        answer_parser: AnswerParser = "raw",
        answer_style: AnswerStyle | None = None,
        source: str = "generic",
    ):
        if answer_parser not in get_args(AnswerParser):
            raise ConfigError(
                f"answer_parser must be one of {', '.join(get_args(AnswerParser))}, got {answer_parser!r}"
            )
        if answer_style is not None and answer_style not in get_args(AnswerStyle):
            raise ConfigError(f"answer_style must be one of {', '.join(get_args(AnswerStyle))}, got {answer_style!r}")
        answer_field = answer_field or None  # "" in a recipe means: this dataset has no gold
        if answer_field is None and answer_parser == "boxed" and not solution_field:
            raise ConfigError(
                "answer_parser 'boxed' without an answer_field needs a solution_field to read the box from"
            )
        self.question_field, self.answer_field, self.solution_field = question_field, answer_field, solution_field
        self.id_field, self.answer_parser, self.source_name = id_field, answer_parser, source  # type: ignore[misc]
        self.answer_style = answer_style or _STYLE_OF_PARSER[answer_parser]  # type: ignore[misc]
        self.prompt = _PROMPT_OF_STYLE[self.answer_style]  # type: ignore[misc]

    @property
    def dataset(self) -> str:
        return self.source_name

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        question = text_field(row, self.question_field)
        solution = text_field(row, self.solution_field, required=False) if self.solution_field else None
        gold = self._gold(row, solution)
        used = {self.question_field, self.answer_field, self.solution_field, self.id_field}
        meta = rest(row, used)
        meta["answer_style"] = self.answer_style
        pid = key
        if self.id_field:
            pid = f"{self.dataset}/{text_field(row, self.id_field)}"
        return Problem(pid, question, gold, solution, self.dataset, meta)

    def _gold(self, row: dict[str, Any], solution: str | None) -> str | None:
        """The parsed gold: from answer_field, or with the boxed parser and no answer_field, from the solution."""
        if self.answer_field is None:
            if self.answer_parser != "boxed":
                return None  # no gold in this dataset (e.g. problems for synthesis)
            field, text = self.solution_field, solution
        else:
            field = self.answer_field
            value = row.get(field)
            # A numeric cell (Parquet int/float) is written canonically: 51.0 -> "51".
            text = number_text(value) if isinstance(value, (int, float)) else text_field(row, field)
        if text is None:
            raise RowError("missing or empty", field=field)
        if self.answer_parser == "raw":
            return text
        gold = gsm8k_gold(text) if self.answer_parser == "gsm8k" else last_boxed(text)
        if gold is None:
            wanted = "no final answer after '####'" if self.answer_parser == "gsm8k" else "no complete \\boxed{} answer"
            raise RowError(wanted, field=field)
        if self.answer_parser == "gsm8k" and self.answer_style == "number" and number_text(gold) is None:
            raise RowError(f"the gold answer is not a number: {gold!r} (answer_style 'number')", field=field)
        return gold
