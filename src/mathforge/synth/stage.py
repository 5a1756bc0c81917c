"""The synthesize stage: new problems with pseudo-gold answers from the problems table or a file of math text.

Reads its seeds from the problems table its lineage names (the load stage before it, never its own output) and
writes ``<stage>.parquet`` as the next problems table (the new problems, plus the seeds with ``keep_seeds``) and the
rejected candidates with their reasons to rejected.parquet.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.curate.decontam import DecontamConfig, build_index
from mathforge.errors import ConfigError
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.records import Problem
from mathforge.request import SamplingConfig
from mathforge.synth.passages import chunk_passages, read_passages
from mathforge.synth.prompts import LEVELS, METHODS, Level, Method
from mathforge.synth.synthesize import SynthResult, synthesize


class SynthesizeConfig(StrictModel):
    generator: str | None = Field(None, description="teacher that writes new problems (default: the first teacher)")
    solver: str | None = Field(None, description="teacher that solves each new problem k times (default: generator)")
    passages: str | None = Field(None, description="file of math text (.txt/.md: blank-line separated passages; "
                                                   ".jsonl: one per line); when set, problems come from it, not seeds")
    passage_field: str = Field("text", description="field holding the passage in a .jsonl file")
    max_passage_chars: int = Field(2000, ge=100, description="longer passages are split into chunks of this size")
    min_passage_chars: int = Field(80, ge=1, description="shorter chunks are rejected as too short")
    methods: list[Method] = Field(list(METHODS), min_length=1, description="how seed problems are varied")
    levels: list[Level] = Field(list(LEVELS), min_length=1, description="education levels to write problems for")
    per_seed: int = Field(1, ge=1, description="new problems per seed, method and level")
    per_passage: int = Field(1, ge=1, description="new problems per passage chunk and level")
    max_seeds: int | None = Field(None, ge=1, description="use only the first N seed problems")
    k: int = Field(4, ge=1, description="solutions per new problem for the majority vote")
    min_agreement: float = Field(0.5, gt=0, le=1, description="share of the k solutions that must agree on the "
                                                              "answer for it to become the pseudo-gold")
    min_chars: int = Field(30, ge=1, description="shortest well-formed problem, in characters")
    max_chars: int = Field(2000, ge=1, description="longest well-formed problem, in characters")
    dedup_threshold: float | None = Field(0.9, ge=0, le=1, description="near-duplicate (MinHash Jaccard) of a seed "
                                                                       "or earlier new problem; None: exact only")
    decontam: DecontamConfig = Field(default_factory=DecontamConfig, description="benchmark n-gram overlap check")
    keep_seeds: bool = Field(False, description="write the seeds too, before the new problems")
    write_sampling: SamplingConfig = Field(SamplingConfig(temperature=0.8), description="sampling of problem writing")
    solve_sampling: SamplingConfig = Field(SamplingConfig(max_tokens=1024), description="sampling of solutions")
    seed: int | None = Field(None, description="sampling seed (default: the recipe's seed)")
    extractors: list[str] | None = Field(None, description="answer extractors for the vote (default: verify's)")
    retry_failed: bool = Field(False, description="re-send requests recorded as failed")


class SynthesizeStage(Stage):
    name = "synthesize"
    Config = SynthesizeConfig
    inputs = {"seeds": Port("problems", optional=True)}  # not needed when problems come from passages
    outputs = {"problems": Port("problems")}
    stage_id = "synthesize"

    def run(self, ctx: RunContext, cfg: SynthesizeConfig) -> dict[str, Any]:
        if not ctx.teachers and not cfg.generator:
            raise ConfigError("synthesize: the recipe defines no teachers")
        generator = cfg.generator or next(iter(ctx.teachers))
        index = build_index(cfg.decontam) if cfg.decontam.enabled else None  # fail before paying for requests
        passage_rejects: list[tuple[dict[str, Any], str]] = []
        if cfg.passages:
            chunks, dropped = chunk_passages(
                read_passages(cfg.passages, cfg.passage_field), cfg.max_passage_chars, cfg.min_passage_chars
            )
            passage_rejects = [({"id": p.id, "text": p.text}, reason) for p, reason in dropped]
            seeds = []
        else:
            if not ctx.has_input("seeds"):
                raise ConfigError(f"{ctx.run_dir}: synthesize needs seed problems (a load stage before it) or passages")
            seeds = [Problem.from_row(r) for r in ctx.input("seeds").to_pylist()]
            chunks, seeds = [], seeds[: cfg.max_seeds] if cfg.max_seeds else seeds
        result: SynthResult = synthesize(ctx, seeds, chunks, cfg, generator, cfg.solver or generator, index)
        ctx.output("problems").write([p.to_row() for p in (seeds if cfg.keep_seeds else []) + result.problems])
        ctx.reject(self.stage_id, passage_rejects + result.rejects)
        return result.metrics | {"passages_rejected": len(passage_rejects)}
