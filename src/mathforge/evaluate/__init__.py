"""Evaluation: greedy accuracy, maj@k, pass@k and mean pass@1 on math benchmarks, through the generate path.

    from mathforge.evaluate import EvalConfig, run_eval
    from mathforge.pipeline.context import RunContext
    doc = run_eval(RunContext("runs/eval"), EvalConfig(models=["smollm2"], benchmarks=["gsm8k"], limit=50), "runs/eval/eval")
"""

from mathforge.evaluate.compare import comparison_rows, find_results, markdown_table
from mathforge.evaluate.config import BenchmarkSpec, EvalConfig
from mathforge.evaluate.metrics import pass_at_k, wilson_interval
from mathforge.evaluate.runner import run_eval

__all__ = ["BenchmarkSpec", "EvalConfig", "comparison_rows", "find_results", "markdown_table", "pass_at_k",
           "run_eval", "wilson_interval"]
