"""``mathforge refine``: judge → rewrite → re-verify rounds over a run directory or a samples file. Every
RefineConfig field is a flag (nested sampling settings as ``--judge-sampling-*`` / ``--rewrite-sampling-*``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from mathforge.cli.flags import config_command, out_option, source_argument
from mathforge.cli.teachers import teacher_options, teachers_for
from mathforge.refine.stage import RefineConfig

app = typer.Typer(add_completion=False)


def refine_command(data: dict[str, Any], *, source: Path, out: Optional[Path], recipe: Optional[str],
                   model: Optional[str], backend: str, base_url: Optional[str], batch_size: Optional[int],
                   keyless: bool, config: Optional[Path]) -> None:
    """Score samples on named criteria, rewrite weak ones with the critique, re-verify; prints the round table."""
    from mathforge.cli.curate import open_run
    from mathforge.config import validate
    from mathforge.pipeline.runner import check_complete
    from mathforge.refine.stage import RefineStage

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


app.command("refine")(config_command(
    RefineConfig,
    refine_command,
    leading=[source_argument("run directory (refined in place), or a samples .parquet/.jsonl file"),
             out_option("run directory for a samples file (default <stem>-refined)")],
    trailing=teacher_options("one teacher as judge and refiner"),
    short={"max_rounds": ["--rounds"]},
    doc="Score samples on named criteria, rewrite weak ones with the critique, re-verify; prints the round table.",
))


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
