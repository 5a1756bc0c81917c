"""The ``reference_sft`` stage: a dataset's own reference solutions as SFT chats (the control arm of distillation).

Rows have the export stage's shape (``messages``, ``id``, ``problem_id``, ``teacher="reference"``) and land in the same
``export/sft.jsonl``, so the train stage treats both arms alike and only the solution text differs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.pipeline.stages import Stage
from mathforge.records import Problem
from mathforge.store import write_table

_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations, e.g. "<<48/2=24>>"
_HASH_LINE = re.compile(r"\n?[ \t]*####[^\n]*\s*$")


class ReferenceSFTConfig(StrictModel):
    system_prompt: str | None = Field(None, description="system message of every chat (keep it equal to export's)")
    strip_calculator: bool = Field(True, description="remove GSM8K's <<a*b=c>> calculator annotations")
    final_answer: str | None = Field(
        "The answer is {answer}.",
        description="replace a trailing '#### N' line with this ({answer} = the gold answer); null keeps it verbatim",
    )
    formats: list[str] = Field(["jsonl", "parquet"], description="any of: jsonl, parquet")
    out_dir: str = Field("export", description="folder inside the run directory")


def reference_text(problem: Problem, cfg: ReferenceSFTConfig) -> str:
    """The reference solution reshaped for training (annotations stripped, final line in the teacher's form)."""
    text = problem.solution or ""
    if cfg.strip_calculator:
        text = _CALC.sub("", text)
    if cfg.final_answer is not None and problem.answer is not None and _HASH_LINE.search(text):
        text = _HASH_LINE.sub("", text).rstrip() + "\n" + cfg.final_answer.format(answer=problem.answer)
    return text.strip()


def reference_rows(problems: list[Problem], cfg: ReferenceSFTConfig) -> tuple[list[dict[str, Any]], list]:
    """SFT rows for problems with a reference solution, and (problem row, reason) for those without."""
    rows, rejected = [], []
    for p in problems:
        if not (p.solution or "").strip():
            rejected.append((p.to_row(), "no reference solution"))
            continue
        msgs = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        msgs += [{"role": "user", "content": p.question}, {"role": "assistant", "content": reference_text(p, cfg)}]
        rows.append({"id": f"{p.id}/reference", "problem_id": p.id, "teacher": "reference", "messages": msgs})
    return rows, rejected


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)


class ReferenceSFTStage(Stage):
    name = "reference_sft"
    Config = ReferenceSFTConfig
    stage_id = "reference_sft"

    def run(self, ctx: Any, cfg: ReferenceSFTConfig) -> dict[str, Any]:
        rows, rejected = reference_rows(ctx.problems(), cfg)
        ctx.reject(self.stage_id, rejected)
        out = ctx.path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if "jsonl" in cfg.formats:
            _write_jsonl(out / "sft.jsonl", rows)
        if "parquet" in cfg.formats:
            write_table(out / "sft.parquet", rows)
        return {"rows": len(rows), "rejected": len(rejected), "out_dir": str(out)}
