"""The select stage: score the samples (or problems) table, keep the best under a budget, reject the rest."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mathforge.pipeline.stages import Stage
from mathforge.select.config import SelectConfig
from mathforge.select.select import select_rows


class SelectStageConfig(SelectConfig):
    table: Literal["samples", "problems"] = Field("samples", description="which table to select from")


class SelectStage(Stage):
    name = "select"
    Config = SelectStageConfig
    writes = "samples"
    stage_id = "select"

    def run(self, ctx: Any, cfg: SelectStageConfig) -> dict[str, Any]:
        rows = ctx.samples() if cfg.table == "samples" else [p.to_row() for p in ctx.problems()]
        result = select_rows(rows, cfg, ctx.seed)
        if cfg.table == "samples":
            ctx.write_samples(self.stage_id, result.kept)
        else:
            from mathforge.records import Problem

            kept = [Problem.from_row(r) for r in result.kept]
            for p, r in zip(kept, result.kept):
                p.meta["select_score"] = r["select_score"]
            ctx.write_problems(self.stage_id, kept)
        ctx.reject(self.stage_id, result.rejected)
        return result.metrics
