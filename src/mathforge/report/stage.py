"""The report stage of a recipe: write ``report/`` for this run (and any runs it is compared with)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import WHOLE_RUN, Port, Stage
from mathforge.report.build import build_report


class ReportConfig(StrictModel):
    """Where the report goes and what it is compared with."""

    compare: list[str] = Field(default_factory=list, description="other run directories shown beside this one")
    out_dir: str = Field("report", description="folder inside the run directory")
    title: str | None = Field(None, description="page title (default: the run names)")
    base: str | None = Field(None, description="model the eval deltas are measured against (default: each eval's)")
    contrasts: list[tuple[str, str]] = Field(
        default_factory=list, description="pairs of models [a, b] whose paired difference a - b is also reported"
    )


class ReportStage(Stage):
    name = "report"
    Config = ReportConfig
    inputs = {"run": Port(WHOLE_RUN)}
    outputs = {"report": Port("report", folder=True)}
    stage_id = "report"

    def run(self, ctx: RunContext, cfg: ReportConfig) -> dict[str, Any]:
        from mathforge.summary import build_summary, write_summary

        # The summary of the stages so far, so this run's own numbers are in its report.
        write_summary(ctx.run_dir, build_summary(ctx, wall=sum(m.get("seconds", 0.0) for m in ctx.metrics.values())))
        out = ctx.output_dir("report", cfg.out_dir)
        metrics = build_report([ctx.run_dir, *cfg.compare], out.path, title=cfg.title, base=cfg.base,
                               contrasts=cfg.contrasts)
        return {"out_dir": str(out.final), "plots": len(metrics["plots"]), "eval_rows": len(metrics["eval"])}
