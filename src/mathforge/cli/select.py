"""``mathforge select``: score a run's samples (or problems) and keep the best under a budget. Every SelectConfig
field is a flag (nested ones as ``--proxy-model``, ``--influence-target``), ``--config`` YAML can hold any of them,
and flags override the file."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from mathforge.cli.flags import config_command, out_option, source_argument
from mathforge.select.config import SelectConfig

app = typer.Typer(add_completion=False)


def select_command(data: dict[str, Any], *, source: Path, out: Path | None, table: str, config: Path | None) -> None:
    from mathforge.cli.curate import open_run
    from mathforge.config import validate
    from mathforge.select.stage import SelectProblemsStage, SelectStage

    if "keep" in data and "fraction" in data and config is not None:
        # a budget flag replaces the file's budget rather than clashing with it
        from mathforge.config import load_yaml, read_text

        in_file = load_yaml(read_text(config), str(config)) or {}
        data.pop("fraction" if "keep" not in in_file else "keep", None)
    cfg = validate(SelectConfig, data, str(config or "mathforge select"))
    if table not in ("samples", "problems"):
        raise typer.BadParameter("samples or problems", param_hint="--table")
    stage = SelectProblemsStage() if table == "problems" else SelectStage()
    ctx = open_run(source, out, "selected")
    try:
        metrics = stage.run(ctx, cfg)
    finally:
        ctx.close()
    typer.echo(f"{metrics['rows_kept']:,} of {metrics['rows_in']:,} rows kept ({cfg.method}, "
               f"{metrics['seconds_per_row'] or 0:.4f} s/row) -> {ctx.path(stage.output_file(next(iter(stage.outputs))))}")


TABLE = inspect.Parameter("table", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Option("samples", "--table", help="samples | problems (a run directory)"))
app.command("select")(config_command(
    SelectConfig, select_command, leading=[source_argument("run directory, or a samples .parquet/.jsonl file")],
    trailing=[out_option(), TABLE], short={"method": ["-m"]},
    doc="Select data by random, pass-rate, perplexity, IFD or LESS-style influence; the rest goes to rejected."))
