"""The ``synth_compare`` stage: compare the problem sets of several synthesize stages (teacher vs distilled model)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field
from rich.table import Table

from mathforge.config import StrictModel
from mathforge.errors import ConfigError
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import WHOLE_RUN, Port, Stage
from mathforge.records import Problem
from mathforge.store import read_rows
from mathforge.synth.compare import set_metrics, solve_rate, teacher_requests


class SynthCompareConfig(StrictModel):
    sets: dict[str, str] = Field(description="label -> id of the synthesize stage that made the set "
                                             "(e.g. {teacher: synthesize, student: synthesize-2})", min_length=1)
    teacher: str = Field(description="the expensive teacher whose requests are counted")
    solver: str | None = Field(None, description="fixed solver for difficulty (greedy solve rate); None: skip")
    training_data_from: list[str] = Field(
        default_factory=list, description="synthesize stages whose teacher requests made the distilled "
                                          "synthesiser's training data (charged to sets not written by the teacher)")
    max_tokens: int = Field(256, ge=1, description="solver's token limit")
    near_threshold: float = Field(0.7, gt=0, le=1, description="MinHash Jaccard of a near-duplicate problem")


def _synth_metrics(ctx: RunContext, stage_id: str) -> dict[str, Any]:
    if stage_id in ctx.metrics:
        return ctx.metrics[stage_id]
    summary = ctx.path("summary.json")
    if summary.exists():
        stages = json.loads(summary.read_text(encoding="utf-8")).get("stages", {})
        if stage_id in stages:
            return stages[stage_id]
    raise ConfigError(f"synth_compare: no metrics of stage '{stage_id}' in this run; run it first")


class SynthCompareStage(Stage):
    name = "synth_compare"
    Config = SynthCompareConfig
    inputs = {"run": Port(WHOLE_RUN)}  # the problem sets of the synthesize stages named in the config
    outputs = {"report": Port("synth-compare", file="{id}.json")}
    stage_id = "synth_compare"

    def run(self, ctx: RunContext, cfg: SynthCompareConfig) -> dict[str, Any]:
        from mathforge.pipeline.progress import console

        teacher_model = ctx.backend(cfg.teacher).identity()[0]
        training_cost = sum(teacher_requests(_synth_metrics(ctx, s), True, True) for s in cfg.training_data_from)
        out: dict[str, Any] = {}
        for label, stage_id in cfg.sets.items():
            produced = (ctx.state.stages.get(stage_id) or {}).get("outputs", {}).get("problems")
            path = ctx.path(produced["path"]) if produced else None
            if path is None or not path.exists():
                raise ConfigError(f"synth_compare: set '{label}': stage '{stage_id}' has written no problems in "
                                  f"{ctx.run_dir} (run it first)")
            problems = [p for p in map(Problem.from_row, read_rows(path)) if p.source == "synth"]
            synth = _synth_metrics(ctx, stage_id)
            writers = {p.meta.get("writer_model") for p in problems}
            by_teacher = writers == {teacher_model}
            solvers = {p.meta.get("solver") for p in problems}
            m = set_metrics(problems, synth, cfg.near_threshold)
            own = teacher_requests(synth, by_teacher, solvers == {teacher_model})
            m["teacher_requests"] = own + (0 if by_teacher else training_cost)
            m["teacher_requests_per_problem"] = round(m["teacher_requests"] / len(problems), 3) if problems else None
            m["solve_rate"] = solve_rate(ctx, problems, cfg.solver, cfg.max_tokens, ctx.seed) if cfg.solver else None
            m["written_by_teacher"] = by_teacher
            out[label] = m
        ctx.output_file("report").write_text(json.dumps(out, indent=1), encoding="utf-8")
        table = Table(title="synthesised problems compared")
        keys = [k for k in next(iter(out.values()))]
        table.add_column("metric")
        for label in out:
            table.add_column(label, justify="right")
        for k in keys:
            table.add_row(k, *[str(out[label][k]) for label in out])
        console.print(table)
        return {"sets": out}
