"""The refine stage: judge → rewrite → re-verify rounds over the samples its lineage names.

Writes ``<stage>.parquet`` (the best version of every input sample, as the next samples table) and
``<stage>-rounds.parquet`` (every version of every round with its parent, scores, critique and outcome).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.errors import ConfigError
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.refine.loop import RefineResult, refine_samples
from mathforge.refine.prompts import CRITERIA, Criterion
from mathforge.request import SamplingConfig


class RefineConfig(StrictModel):
    refiner: str | None = Field(None, description="teacher that rewrites samples (default: the recipe's first teacher)")
    judge: str | None = Field(None, description="teacher that scores samples, may be the refiner (the default)")
    critique: bool = Field(True, description="ask the judge for scores and a critique; false: repair wrong samples "
                                             "with the verifier's hint alone")
    criteria: list[Criterion] = Field(list(CRITERIA), min_length=1, description="criteria the judge scores, 1-10 each")
    threshold: float = Field(8.0, ge=1, le=10, description="mean criterion score a sample needs to leave the loop")
    max_rounds: int = Field(2, ge=0, description="most rewrite rounds per sample")
    judge_attempts: int = Field(3, ge=1, description="tries for a valid judge reply (each with a new sample index) "
                                                     "before a judge failure is recorded")
    only_wrong: bool = Field(False, description="refine only samples the verifier did not confirm (wrong answer or "
                                                "none); keep the rest unjudged")
    reveal_gold: bool = Field(False, description="tell the rewriter the gold answer (default: only that it is wrong)")
    judge_sampling: SamplingConfig = Field(
        SamplingConfig(temperature=0.3, max_tokens=256), description="sampling of judge replies"
    )
    rewrite_sampling: SamplingConfig = Field(SamplingConfig(), description="sampling of rewrites")
    seed: int | None = Field(None, description="sampling seed (default: the recipe's seed)")
    extractors: list[str] | None = Field(None, description="answer extractors for re-verification (default: verify's)")
    retry_failed: bool = Field(False, description="re-send requests recorded as failed")


def teachers_of(ctx: RunContext, cfg: RefineConfig) -> tuple[str, str]:
    """(refiner, judge) teacher names, defaulting to the recipe's first teacher."""
    if not ctx.teachers and not (cfg.refiner and cfg.judge):
        raise ConfigError("refine: the recipe defines no teachers")
    refiner = cfg.refiner or next(iter(ctx.teachers))
    return refiner, cfg.judge or refiner


def refine_metrics(result: RefineResult) -> dict[str, Any]:
    """Stage metrics: accepted before and after, per-round counts, outcomes and requests."""
    originals = [v for v in result.versions if v["lineage"] == v["id"]]
    return {
        "samples": len(result.selected),
        "accepted_before": sum(v.get("correct") is True for v in originals),
        "accepted": sum(v.get("correct") is True for v in result.selected),
        "improved": sum(v["round"] > 0 for v in result.selected),
        "versions": len(result.versions),
        "rounds": result.rounds,
        "outcomes": dict(Counter(v["outcome"] for v in result.versions)),
        "requests": result.usage,
        "sent": sum(u["sent"] for u in result.usage.values()),
    }


class RefineStage(Stage):
    name = "refine"
    Config = RefineConfig
    inputs = {"samples": Port("samples")}
    # "rounds" is its own kind: every version of every round, never read as the samples of a later stage
    outputs = {"samples": Port("samples"), "rounds": Port("refine-rounds")}
    stage_id = "refine"

    def run(self, ctx: RunContext, cfg: RefineConfig) -> dict[str, Any]:
        refiner, judge = teachers_of(ctx, cfg)
        result = refine_samples(ctx, ctx.input("samples").to_pylist(), cfg, refiner, judge)
        ctx.output("rounds").write(result.versions)
        ctx.output("samples").write(result.selected)
        return refine_metrics(result)
