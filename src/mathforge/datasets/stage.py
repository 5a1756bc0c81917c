"""The load stage's config (one typed model for YAML, CLI and Python) and the function the pipeline calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from mathforge.config import StrictModel
from mathforge.datasets.loading import load
from mathforge.datasets.readers import MAX_ROW_BYTES
from mathforge.datasets.registry import ALIASES, LOADERS
from mathforge.records import Problem

# Options that only the generic loader takes; on any other dataset they are an error, never silently ignored.
GENERIC_OPTIONS = (
    "question_field",
    "answer_field",
    "solution_field",
    "id_field",
    "answer_parser",
    "answer_style",
    "source",
)


class LoadConfig(StrictModel):
    """What to load and how strictly: a built-in dataset or ``generic`` with a field mapping."""

    dataset: str = Field(description="dataset name: gsm8k, math, math500, numinamath, mathqa, svamp or generic")
    path: str | None = Field(
        None,
        description="file, directory of split files, 'bundled:NAME' or hub id; empty = the dataset's default hub id",
    )
    split: str | None = Field(None, description="split to read (train, test, ...); default: the dataset's own")
    limit: int | None = Field(None, ge=0, description="at most this many problems (after offset); empty = all")
    offset: int = Field(0, ge=0, description="skip this many source rows first")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="a malformed row stops the load ('error') or goes to rejected.parquet ('skip')"
    )
    config: str | None = Field(None, description="hub config name (hub ids only)")
    max_row_bytes: int = Field(
        MAX_ROW_BYTES, ge=1, description="a row larger than this (bytes of text) is a bad row; default 1 MiB"
    )
    question_field: str | None = Field(None, description="generic: field holding the question (default 'question')")
    answer_field: str | None = Field(None, description="generic: field holding the gold answer (default 'answer')")
    solution_field: str | None = Field(None, description="generic: field holding a reference solution")
    id_field: str | None = Field(None, description="generic: field holding the row's own id (default: split/index)")
    answer_parser: Literal["raw", "gsm8k", "boxed"] | None = Field(
        None, description="generic: how to read the gold: as is, after '####', or the last \\boxed{} (default raw)"
    )
    answer_style: Literal["number", "latex", "choice"] | None = Field(
        None, description="generic: kind of answer, which picks the default prompt (default from answer_parser)"
    )
    source: str | None = Field(None, description="generic: Problem.source and id prefix (default 'generic')")

    @field_validator("dataset")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in LOADERS and value not in ALIASES:
            raise ValueError(f"unknown dataset '{value}'; valid datasets: {', '.join(LOADERS)}")
        return value

    @field_validator(*GENERIC_OPTIONS)
    @classmethod
    def _generic_only(cls, value: Any, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        if value is not None and dataset is not None and ALIASES.get(dataset, dataset) != "generic":
            raise ValueError(f"applies only to dataset 'generic', not '{dataset}'")
        return value

    def loader_options(self) -> dict[str, Any]:
        """The generic field mapping as loader keyword arguments (only what was set, so loader defaults apply)."""
        return {k: getattr(self, k) for k in GENERIC_OPTIONS if getattr(self, k) is not None}


def iter_load_stage(cfg: LoadConfig, rejected: list[tuple[dict[str, Any], str]],
                    imap: Any = None) -> Iterator[Problem]:
    """The configured dataset's Problems one at a time; bad rows skipped by ``on_bad_row`` go to ``rejected``;
    ``imap``: an executor's ordered map that reads and parses the source's pieces where it runs (see ``load``)."""
    return load(
        cfg.dataset,
        cfg.path,
        split=cfg.split,
        limit=cfg.limit,
        offset=cfg.offset,
        on_bad_row=cfg.on_bad_row,
        rejected=rejected,
        config=cfg.config,
        max_row_bytes=cfg.max_row_bytes,
        imap=imap,
        **cfg.loader_options(),
    )


def run_load_stage(cfg: LoadConfig) -> tuple[list[Problem], list[tuple[dict[str, Any], str]]]:
    """Load the configured dataset completely; returns the problems and the ``(raw_row, reason)`` rejects."""
    rejected: list[tuple[dict[str, Any], str]] = []
    problems = list(iter_load_stage(cfg, rejected))
    return problems, rejected
