"""The select stages: score the samples (``select``) or problems (``select_problems``) table, keep the best under a
budget, reject the rest."""

from __future__ import annotations

from typing import Any

from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.records import Problem
from mathforge.select.config import SelectConfig
from mathforge.select.select import select_rows


class SelectStage(Stage):
    name = "select"
    Config = SelectConfig
    inputs = {"samples": Port("samples")}
    outputs = {"samples": Port("samples")}
    stage_id = "select"

    def run(self, ctx: RunContext, cfg: SelectConfig) -> dict[str, Any]:
        result = select_rows(ctx.input("samples").to_pylist(), cfg, ctx.seed)
        ctx.output("samples").write(result.kept)
        ctx.reject(self.stage_id, result.rejected)
        return result.metrics


class SelectProblemsStage(Stage):
    """The same on problems, scored on question + reference solution; the score lands in ``meta.select_score``."""

    name = "select_problems"
    Config = SelectConfig
    inputs = {"problems": Port("problems")}
    outputs = {"problems": Port("problems")}
    stage_id = "select_problems"

    def run(self, ctx: RunContext, cfg: SelectConfig) -> dict[str, Any]:
        result = select_rows(ctx.input("problems").to_pylist(), cfg, ctx.seed)
        kept = []
        for row in result.kept:
            p = Problem.from_row(row)
            p.meta["select_score"] = row["select_score"]
            kept.append(p.to_row())
        ctx.output("problems").write(kept)
        ctx.reject(self.stage_id, result.rejected)
        return result.metrics
