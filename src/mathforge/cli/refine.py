"""``mathforge refine``: judge → rewrite → re-verify rounds over a run directory or a samples file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False)


def teachers_for(
    run_dir: Path | None, recipe: Optional[str], model: Optional[str], backend: str, base_url: Optional[str],
    batch_size: Optional[int], keyless: bool = False,
) -> tuple[dict[str, Any], int]:
    """Teacher configs and seed: one teacher from ``--model``, else a recipe's, else the run directory's recipe.yaml."""
    from mathforge.backends import parse_teacher
    from mathforge.errors import ConfigError
    from mathforge.pipeline.recipe import load_recipe

    if model:
        cfg: dict[str, Any] = {"backend": backend, "model": model}
        if base_url:
            cfg["base_url"] = base_url
        if keyless:
            cfg["api_key_env"] = None
        if batch_size and backend == "local":
            cfg["batch_size"] = batch_size
        name = Path(model).stem if backend == "local" else model
        return {name: parse_teacher(name, cfg, "--model")}, 0
    spec = recipe or (str(run_dir / "recipe.yaml") if run_dir and (run_dir / "recipe.yaml").exists() else None)
    if spec is None:
        raise ConfigError("no teachers: pass --model, or --recipe with a recipe that defines teachers")
    r = load_recipe(spec)
    return r.teachers, r.seed


@app.command()
def refine(
    source: Path = typer.Argument(..., help="run directory (refined in place), or a samples .parquet/.jsonl file"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder for a samples file (default <stem>-refined)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the refine stage's config; flags override it"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="take teachers and seed from this recipe (default: the run's)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="one teacher as judge and refiner: smollm2, a path, a hub id or an API model"),
    backend: str = typer.Option("local", "--backend", help="backend of --model: local, openai or vllm"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (with --backend openai)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="prompts per forward pass (local backend)"),
    keyless: bool = typer.Option(False, "--keyless", help="the --base-url server needs no API key (local servers)"),
    judge: Optional[str] = typer.Option(None, "--judge", help="teacher that scores (default: the refiner)"),
    refiner: Optional[str] = typer.Option(None, "--refiner", help="teacher that rewrites (default: the first teacher)"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="most rewrite rounds per sample (default 2)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="mean criterion score (1-10) that ends the loop (default 8)"),
    no_critique: bool = typer.Option(False, "--no-critique", help="no judge: repair wrong samples with the verifier's hint alone"),
    only_wrong: bool = typer.Option(False, "--only-wrong", help="refine only samples the verifier marks wrong"),
    reveal_gold: bool = typer.Option(False, "--reveal-gold", help="tell the rewriter the gold answer"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="re-send requests recorded as failed"),
) -> None:
    """Score samples on named criteria, rewrite weak ones with the critique, re-verify; prints the round table."""
    from mathforge.cli.curate import open_run
    from mathforge.config import load_yaml, read_text, validate
    from mathforge.pipeline.runner import check_complete
    from mathforge.refine.stage import RefineConfig, RefineStage

    data: dict[str, Any] = (load_yaml(read_text(config), str(config)) or {}) if config else {}
    flags = {"judge": judge, "refiner": refiner, "max_rounds": rounds, "threshold": threshold}
    data.update({k: v for k, v in flags.items() if v is not None})
    for key, on in {"only_wrong": only_wrong, "reveal_gold": reveal_gold, "retry_failed": retry_failed}.items():
        if on:
            data[key] = True
    if no_critique:
        data["critique"] = False
    cfg = validate(RefineConfig, data, str(config or "refine"))
    teachers, seed = teachers_for(source if source.is_dir() else None, recipe, model, backend, base_url, batch_size,
                                  keyless)
    ctx = open_run(source, out, "refined")
    ctx.teachers, ctx.seed = teachers, seed
    try:
        metrics = RefineStage().run(ctx, cfg)
    finally:
        ctx.close()
    print_rounds(metrics)
    typer.echo(f"{metrics['accepted']:,} of {metrics['samples']:,} samples correct after refinement "
               f"(was {metrics['accepted_before']:,}) -> {ctx.path('refine.parquet')}")
    check_complete(ctx, "refine", metrics)  # failed judge/rewrite requests: exit code 3, with what to do


def print_rounds(metrics: dict[str, Any]) -> None:
    """One row per round: versions, correct, judged, judge failures, and what the rewrites fixed, broke or left."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="refine rounds")
    cols = ("round", "versions", "correct", "judged", "judge_failures", "mean_score", "rewritten", "fixed", "broke",
            "left_wrong")
    for c in cols:
        t.add_column(c.replace("_", " "), justify="right")
    for r in metrics["rounds"]:
        t.add_row(*("-" if r.get(c) is None else str(r[c]) for c in cols))
    Console().print(t)
