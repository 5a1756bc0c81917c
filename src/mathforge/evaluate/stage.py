"""The eval stage of a recipe: score models (recipe teachers or named backends) on benchmarks into ``<stage_id>/``."""

from __future__ import annotations

from typing import Any

from mathforge.evaluate.config import BenchmarkSpec, EvalConfig
from mathforge.evaluate.runner import run_eval
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage

__all__ = ["BenchmarkSpec", "EvalConfig", "EvalStage"]


class EvalStage(Stage):
    name = "eval"
    Config = EvalConfig
    inputs = {"model": Port("model", optional=True)}  # a student trained earlier in the run (adapters resolve there)
    outputs = {"results": Port("eval", folder=True, file="{id}")}
    stage_id = "eval"

    def run(self, ctx: RunContext, cfg: EvalConfig) -> dict[str, Any]:
        doc = run_eval(ctx, cfg, ctx.output_in_place("results"))
        gen = doc["generation"]
        headline = {
            f"{r['model']}/{r['benchmark']}": {m: round(s["value"], 4) for m, s in r["metrics"].items()}
            for r in doc["results"]
        }
        return {
            "requests": gen["requests"], "sent": gen["sent"], "cached": gen["cached"],
            "new_tokens_out": gen.get("new_tokens_out", 0), "tokens_per_s": gen.get("tokens_per_s"),
            "results": headline,
        }
