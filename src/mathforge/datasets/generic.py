"""Any JSONL/JSON/Parquet/CSV file or hub dataset, given which fields hold the question, answer and solution.

A row with an ``options`` field (AQuA-RAT style: ``["A)21", "B)21.5", ...]`` and the letter in ``correct`` or the
answer field; or MathQA's "a ) 12 , b ) 16" string) is a multiple-choice problem without any flag: its gold is the
letter, its options go to ``meta["choices"]`` and it gets the ``cot-choice`` prompt, unless ``answer_style`` says
otherwise.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from mathforge.datasets.answers import gsm8k_gold, last_boxed, number_text
from mathforge.datasets.base import AnswerStyle, Loader, RowError, rest, text_field
from mathforge.errors import ConfigError
from mathforge.records import Problem

AnswerParser = Literal["raw", "gsm8k", "boxed"]
_STYLE_OF_PARSER: dict[str, AnswerStyle] = {"raw": "latex", "gsm8k": "number", "boxed": "latex"}
_PROMPT_OF_STYLE = {"number": "cot", "latex": "cot-boxed", "choice": "cot-choice"}
_LIST_OPTION = re.compile(r"^\s*\(?([A-Za-z])\s*[).:]\s*(.*)$", re.S)  # "A)21", "(b) 16", "C. 12"
GOLD_LETTER_FIELDS = ("correct",)  # where AQuA-RAT and MathQA keep the letter when there is no answer field
SOLUTION_FIELDS = ("rationale",)  # their worked solutions


def parse_choices(value: Any) -> dict[str, str] | None:
    """Options as {letter: text} (letters lower-cased, as MathQA's gold), from a list or a MathQA string."""
    from mathforge.datasets.mathqa import parse_options

    if isinstance(value, dict):
        return {str(k).strip().lower(): str(v).strip() for k, v in value.items()} or None
    if isinstance(value, str):
        return parse_options(value) or None
    if isinstance(value, (list, tuple)) and value:
        out = {}
        for item in value:
            m = _LIST_OPTION.match(str(item))
            if not m:
                return None
            out[m.group(1).lower()] = m.group(2).strip()
        return out if len(out) == len(value) else None
    return None


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
        options_field: str = "options",
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
        # options are read unless the user chose a non-choice answer style
        self.options_field = options_field if answer_style in (None, "choice") else None

    @property
    def dataset(self) -> str:
        return self.source_name

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        if self.options_field and row.get(self.options_field) not in (None, "", []):
            return self._parse_choice(row, key)
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

    def _parse_choice(self, row: dict[str, Any], key: str) -> Problem:
        """A multiple-choice row: the gold is the correct option's letter, the options travel in meta."""
        question = text_field(row, self.question_field)
        choices = parse_choices(row[self.options_field])
        if not choices or len(choices) < 2:
            raise RowError(f"cannot read options {row[self.options_field]!r} (expected e.g. ['A)21', 'B)22'])",
                           field=self.options_field)
        fields = [f for f in (self.answer_field, *GOLD_LETTER_FIELDS) if f and row.get(f) not in (None, "")]
        if not fields:
            wanted = " or ".join(f for f in (self.answer_field, *GOLD_LETTER_FIELDS) if f)
            raise RowError("multiple-choice row without its correct letter", field=wanted)
        field = fields[0]
        letter = str(row[field]).strip().strip("()").rstrip(").").lower()
        if letter not in choices:
            raise RowError(f"correct option {row[field]!r} is not one of {', '.join(choices)}", field=field)
        sol_field = self.solution_field or next((f for f in SOLUTION_FIELDS if row.get(f)), None)
        solution = text_field(row, sol_field, required=False) if sol_field else None
        meta = rest(row, {self.question_field, field, sol_field, self.id_field, self.options_field})
        meta.update(choices=choices, answer_value=choices[letter], answer_style="choice", prompt="cot-choice")
        pid = f"{self.dataset}/{text_field(row, self.id_field)}" if self.id_field else key
        return Problem(pid, question, letter, solution, self.dataset, meta)

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
