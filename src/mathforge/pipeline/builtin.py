"""Stage wrappers for the load and verify libraries (their logic lives in mathforge.datasets and mathforge.verify)."""

from __future__ import annotations

from typing import Any

from mathforge.datasets import get_loader
from mathforge.datasets.stage import LoadConfig, run_load_stage
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.verify.stage import VerifyConfig, run_verify_stage


class LoadStage(Stage):
    name = "load"
    Config = LoadConfig
    outputs = {"problems": Port("problems")}
    canonical_files = {"problems": "problems.parquet"}
    stage_id = "load"

    def run(self, ctx: RunContext, cfg: LoadConfig) -> dict[str, Any]:
        problems, rejects = run_load_stage(cfg)
        # The dataset's prompt default travels with each problem, so generate picks the right template per problem.
        prompt = get_loader(cfg.dataset, **cfg.loader_options()).prompt
        for p in problems:
            p.meta.setdefault("prompt", prompt)
        ctx.output("problems").write([p.to_row() for p in problems])
        ctx.reject(self.stage_id, rejects)
        return {"problems": len(problems), "rejected": len(rejects)}


class VerifyStage(Stage):
    name = "verify"
    Config = VerifyConfig
    inputs = {"samples": Port("samples"), "problems": Port("problems", optional=True)}
    outputs = {"samples": Port("samples")}
    canonical_files = {"samples": "verified.parquet"}
    stage_id = "verify"

    def run(self, ctx: RunContext, cfg: VerifyConfig) -> dict[str, Any]:
        rows = ctx.input("samples").to_pylist()
        if ctx.has_input("problems"):  # multiple-choice options live on the problem; the verifier needs them per sample
            choices = {p.id: p.meta["choices"] for p in ctx.problems() if p.meta.get("choices")}
            if choices:
                rows = [r if r.get("choices") or r["problem_id"] not in choices
                        else {**r, "choices": _options_text(choices[r["problem_id"]])} for r in rows]
        rows = run_verify_stage(rows, cfg)
        ctx.output("samples").write(rows)
        correct = sum(1 for r in rows if r.get("correct") is True)
        wrong = sum(1 for r in rows if r.get("correct") is False)
        methods: dict[str, int] = {}
        for r in rows:
            methods[r.get("method") or "none"] = methods.get(r.get("method") or "none", 0) + 1
        return {
            "samples": len(rows),
            "correct": correct,
            "incorrect": wrong,
            "undecided": len(rows) - correct - wrong,
            "methods": methods,
        }


def _options_text(choices: dict[str, str] | str) -> str:
    """Options in MathQA's own ``a ) 12 , b ) 16`` form: a flat string column that the verifier parses back."""
    if isinstance(choices, str):
        return choices
    return " , ".join(f"{k} ) {v}" for k, v in choices.items())
