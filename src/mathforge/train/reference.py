"""The ``reference_sft`` stage: a dataset's own reference solutions as SFT data (the control arm of distillation).

Each problem's reference becomes a sample (``teacher="reference"``, verified by construction) and goes through the
export stage's own writer, so ``export/`` has the same layout, splits and card as a teacher export and the two arms
differ only in the solution text.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.export import ExportConfig, export
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.records import Problem

_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations, e.g. "<<48/2=24>>"
_HASH_LINE = re.compile(r"\n?[ \t]*####[^\n]*\s*$")


class ReferenceSFTConfig(StrictModel):
    strip_calculator: bool = Field(True, description="remove GSM8K's <<a*b=c>> calculator annotations")
    final_answer: str | None = Field(
        "The answer is {answer}.",
        description="replace a trailing '#### N' line with this ({answer} = the gold answer); null keeps it verbatim",
    )
    export: ExportConfig = Field(default_factory=ExportConfig,
                                 description="how the rows are written: the export stage's settings (system_prompt, "
                                 "validation_fraction, formats, ...)")


def reference_text(problem: Problem, cfg: ReferenceSFTConfig) -> str:
    """The reference solution reshaped for training (annotations stripped, final line in the teacher's form)."""
    text = problem.solution or ""
    if cfg.strip_calculator:
        text = _CALC.sub("", text)
    if cfg.final_answer is not None and problem.answer is not None and _HASH_LINE.search(text):
        text = _HASH_LINE.sub("", text).rstrip() + "\n" + cfg.final_answer.format(answer=problem.answer)
    return text.strip()


def reference_samples(problems: list[Problem], cfg: ReferenceSFTConfig) -> tuple[list[dict[str, Any]], list]:
    """Sample-shaped records of the problems with a reference solution, and (problem row, reason) for the rest."""
    samples, rejected = [], []
    for p in problems:
        if not (p.solution or "").strip():
            rejected.append((p.to_row(), "no reference solution"))
            continue
        samples.append({"id": f"{p.id}/reference", "problem_id": p.id, "question": p.question, "gold": p.answer,
                        "teacher": "reference", "model": p.source or "reference", "text": reference_text(p, cfg),
                        "correct": True})
    return samples, rejected


class ReferenceSFTStage(Stage):
    name = "reference_sft"
    Config = ReferenceSFTConfig
    inputs = {"problems": Port("problems")}
    outputs = {"export": Port("export", folder=True)}
    stage_id = "reference_sft"

    def run(self, ctx: RunContext, cfg: ReferenceSFTConfig) -> dict[str, Any]:
        samples, rejected = reference_samples(ctx.problems(), cfg)
        ctx.reject(self.stage_id, rejected)
        out = ctx.output_dir("export", cfg.export.out_dir)
        recipe = ctx.path("recipe.yaml")
        provenance = {"name": ctx.run_dir.name, "seed": ctx.seed, "curate": None,
                      "recipe": recipe.read_text(encoding="utf-8") if recipe.exists() else None}
        counts = export(samples, out.path, cfg.export, seed=ctx.seed, provenance=provenance)
        return {"train": counts["train"]["rows"], "validation": counts["validation"]["rows"],
                "rejected": len(rejected), "out_dir": str(out.final)}
