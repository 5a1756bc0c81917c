"""``mathforge synthesize``: new problems with pseudo-gold answers from seed problems or a file of math text. Every
SynthesizeConfig field is a flag (nested settings as ``--decontam-*``, ``--solve-sampling-*``, ...)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from mathforge.cli.flags import config_command
from mathforge.cli.teachers import teacher_options, teachers_for
from mathforge.synth.stage import SynthesizeConfig

app = typer.Typer(add_completion=False)


def _names(values: list[str] | None) -> list[str] | None:
    """``--levels a,b --levels c`` and hyphens (``grade-school``) as the config's names."""
    return [v.strip().replace("-", "_") for item in values for v in item.split(",") if v.strip()] if values else None


def synthesize_command(data: dict[str, Any], *, run_dir: Path, dataset: Optional[str], path: Optional[str],
                       limit: Optional[int], benchmark: list[str] | None, recipe: Optional[str], model: Optional[str],
                       backend: str, base_url: Optional[str], batch_size: Optional[int], keyless: bool,
                       config: Optional[Path]) -> None:
    """Write new problems at named education levels, solve each k times, keep majority answers that agree enough."""
    from mathforge.cli.curate import _benchmark
    from mathforge.config import validate
    from mathforge.datasets import load
    from mathforge.pipeline.context import RunContext
    from mathforge.pipeline.runner import check_complete
    from mathforge.synth.stage import SynthesizeStage

    for key in ("levels", "methods"):
        if key in data:
            data[key] = _names(data[key])
    if benchmark:
        data.setdefault("decontam", {})["benchmarks"] = [_benchmark(b) for b in benchmark]
    cfg = validate(SynthesizeConfig, data, str(config or "synthesize"))
    teachers, seed = teachers_for(run_dir, recipe, model, backend, base_url, batch_size, keyless)
    ctx = RunContext(run_dir, teachers=teachers, seed=seed)
    try:
        if dataset:
            ctx.write_problems("problems", list(load(dataset, path, limit=limit)))
        elif not cfg.passages and not ctx.has("problems"):
            raise typer.BadParameter(f"{run_dir} has no problems table: pass --dataset or --passages")
        metrics = SynthesizeStage().run(ctx, cfg)
    finally:
        ctx.close()
    print_levels(metrics)
    typer.echo(f"{metrics['problems']:,} of {metrics['candidates']:,} new problems kept -> "
               f"{ctx.path('synthesize.parquet')} (rejects with reasons in rejected.parquet)")
    check_complete(ctx, "synthesize", metrics)  # failed requests: exit code 3, with what to do


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


app.command("synthesize")(config_command(
    SynthesizeConfig,
    synthesize_command,
    leading=[inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                               default=typer.Argument(..., help="run directory: its problems table holds the seeds, "
                                                      "and the new problems go there")),
             _param("dataset", Optional[str], typer.Option(None, "--dataset", "-d", help="load seeds from this "
                                                            "dataset first (gsm8k, math, generic, ...)")),
             _param("path", Optional[str], typer.Option(None, "--path", help="file, directory, bundled:NAME or hub "
                                                         "id of --dataset")),
             _param("limit", Optional[int], typer.Option(None, "--limit", "-n", help="first N seed problems"))],
    trailing=[_param("benchmark", Optional[list[str]], typer.Option(
                  None, "--benchmark", "-b", help="benchmark NAME or NAME=PATH to decontaminate against; repeatable")),
              *teacher_options("one teacher as writer and solver")],
    short={"decontam.enabled": ["--decontam/--no-decontam"]},
    doc="Write new problems at named education levels, solve each k times, keep majority answers that agree enough.",
))


def print_levels(metrics: dict[str, Any]) -> None:
    """One row per education level: candidates, kept, yield and the main reject reasons."""
    from rich.console import Console
    from rich.table import Table

    t = Table("level", "candidates", "kept", "yield", "rejected", title="synthesis by level")
    for level, m in metrics["levels"].items():
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(m["rejected"].items(), key=lambda kv: -kv[1]))
        t.add_row(level, str(m["candidates"]), str(m["kept"]), f"{m['yield']:.1%}", rejected or "-")
    Console().print(t)
