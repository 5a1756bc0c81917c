"""The records that flow between stages, and their Arrow schemas.

Every stage boundary is a Parquet table whose columns are declared here. Records are plain dataclasses in Python;
on disk they are flat columns (``meta`` is a JSON string so heterogeneous fields survive Parquet).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa


@dataclass
class Problem:
    """One math problem with its parsed gold answer (``answer`` is None when the source has none)."""

    id: str
    question: str
    answer: str | None = None
    solution: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["meta"] = json.dumps(self.meta, sort_keys=True, ensure_ascii=False)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Problem":
        meta = row.get("meta") or "{}"
        return cls(
            id=row["id"],
            question=row["question"],
            answer=row.get("answer"),
            solution=row.get("solution"),
            source=row.get("source") or "",
            meta=json.loads(meta) if isinstance(meta, str) else dict(meta),
        )


PROBLEM_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("solution", pa.string()),
        ("source", pa.string()),
        ("meta", pa.string()),
    ]
)


@dataclass
class Sample:
    """One model-written solution to a problem; verdict columns are filled by the verify stage."""

    id: str
    problem_id: str
    question: str
    gold: str | None
    teacher: str
    model: str
    sample_index: int
    prompt_key: str
    request_key: str
    text: str
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    round: int = 0
    parent: str | None = None
    # verdict
    extracted: str | None = None
    normalized: str | None = None
    correct: bool | None = None
    method: str | None = None
    extractor: str | None = None
    reason: str | None = None

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Sample":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


SAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("gold", pa.string()),
        ("teacher", pa.string()),
        ("model", pa.string()),
        ("sample_index", pa.int32()),
        ("prompt_key", pa.string()),
        ("request_key", pa.string()),
        ("text", pa.string()),
        ("finish_reason", pa.string()),
        ("tokens_in", pa.int64()),
        ("tokens_out", pa.int64()),
        ("round", pa.int32()),
        ("parent", pa.string()),
        ("extracted", pa.string()),
        ("normalized", pa.string()),
        ("correct", pa.bool_()),
        ("method", pa.string()),
        ("extractor", pa.string()),
        ("reason", pa.string()),
    ]
)

# A rejected record is any record's row (as JSON) plus where and why it was dropped.
REJECTED_SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("record_id", pa.string()),
        ("record", pa.string()),
    ]
)
