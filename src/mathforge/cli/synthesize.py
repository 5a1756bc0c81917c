"""``mathforge synthesize``: new problems with pseudo-gold answers from seed problems or a file of math text."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False)


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip().replace("-", "_") for v in value.split(",") if v.strip()] if value else None


@app.command()
def synthesize(
    run_dir: Path = typer.Argument(..., help="run directory: its problems table holds the seeds, and the new problems go there"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="load seeds from this dataset first (gsm8k, math, generic, ...)"),
    path: Optional[str] = typer.Option(None, "--path", help="file, directory, bundled:NAME or hub id of --dataset"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N seed problems"),
    passages: Optional[Path] = typer.Option(None, "--passages", help="write problems from this file of math text instead of seeds"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the synthesize stage's config; flags override it"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="take teachers and seed from this recipe (default: the run's)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="one teacher as writer and solver: smollm2, a path, a hub id or an API model"),
    backend: str = typer.Option("local", "--backend", help="backend of --model: local, openai or vllm"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (with --backend openai)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="prompts per forward pass (local backend)"),
    keyless: bool = typer.Option(False, "--keyless", help="the --base-url server needs no API key (local servers)"),
    levels: Optional[str] = typer.Option(None, "--levels", help="comma-separated: grade_school,middle_school,high_school,competition,college"),
    methods: Optional[str] = typer.Option(None, "--methods", help="comma-separated: rewrite,change_numbers,add_step,change_context"),
    k: Optional[int] = typer.Option(None, "--k", help="solutions per new problem for the vote (default 4)"),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", help="share of solutions that must agree (default 0.5)"),
    benchmark: Optional[list[str]] = typer.Option(None, "--benchmark", "-b", help="benchmark NAME or NAME=PATH to decontaminate against; repeatable"),
    no_decontam: bool = typer.Option(False, "--no-decontam", help="skip decontamination"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="re-send requests recorded as failed"),
) -> None:
    """Write new problems at named education levels, solve each k times, keep majority answers that agree enough."""
    from mathforge.cli.curate import _benchmark
    from mathforge.cli.refine import teachers_for
    from mathforge.config import load_yaml, read_text, validate
    from mathforge.datasets import load
    from mathforge.pipeline.context import RunContext
    from mathforge.pipeline.runner import check_complete
    from mathforge.synth.stage import SynthesizeConfig, SynthesizeStage

    data: dict[str, Any] = (load_yaml(read_text(config), str(config)) or {}) if config else {}
    flags = {"levels": _csv(levels), "methods": _csv(methods), "k": k, "min_agreement": min_agreement,
             "passages": str(passages) if passages else None}
    data.update({key: v for key, v in flags.items() if v is not None})
    decontam = data.setdefault("decontam", {})
    if benchmark:
        decontam["benchmarks"] = [_benchmark(b) for b in benchmark]
    if no_decontam:
        decontam["enabled"] = False
    if retry_failed:
        data["retry_failed"] = True
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


def print_levels(metrics: dict[str, Any]) -> None:
    """One row per education level: candidates, kept, yield and the main reject reasons."""
    from rich.console import Console
    from rich.table import Table

    t = Table("level", "candidates", "kept", "yield", "rejected", title="synthesis by level")
    for level, m in metrics["levels"].items():
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(m["rejected"].items(), key=lambda kv: -kv[1]))
        t.add_row(level, str(m["candidates"]), str(m["kept"]), f"{m['yield']:.1%}", rejected or "-")
    Console().print(t)
