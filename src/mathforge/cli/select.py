"""``mathforge select``: score a run's samples (or problems) and keep the best under a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False)


@app.command()
def select(
    source: Path = typer.Argument(..., help="run directory, or a samples .parquet/.jsonl file"),
    method: Optional[str] = typer.Option(None, "--method", "-m",
                                         help="random | pass-rate | perplexity | ifd | influence"),
    keep: Optional[int] = typer.Option(None, "--keep", help="keep this many units"),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="keep this share of the units"),
    unit: Optional[str] = typer.Option(None, "--unit", help="row | problem: what the budget counts"),
    table: Optional[str] = typer.Option(None, "--table", help="samples | problems (a run directory only)"),
    target: Optional[str] = typer.Option(None, "--target", help="influence: the target examples (.jsonl/.parquet)"),
    proxy: Optional[str] = typer.Option(None, "--proxy", help="proxy model for perplexity/ifd/influence"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder for a samples file "
                                                                "(default <stem>-selected)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the select stage's config; "
                                                                       "flags override it"),
) -> None:
    """Select data by random, pass-rate, perplexity, IFD or LESS-style influence; the rest goes to rejected."""
    from mathforge.cli.curate import open_run
    from mathforge.config import load_yaml, read_text, validate
    from mathforge.select.stage import SelectStage, SelectStageConfig

    data: dict[str, Any] = (load_yaml(read_text(config), str(config)) or {}) if config else {}
    for key, value in (("method", method), ("keep", keep), ("fraction", fraction), ("unit", unit),
                       ("table", table)):
        if value is not None:
            data[key] = value
    if keep is not None and fraction is None:
        data.pop("fraction", None)  # a flag's budget replaces the file's
    if fraction is not None and keep is None:
        data.pop("keep", None)
    if target is not None:
        data.setdefault("influence", {})["target"] = target
    if proxy is not None:
        data.setdefault("proxy", {})["model"] = proxy
    cfg = validate(SelectStageConfig, data, str(config or "mathforge select"))
    ctx = open_run(source, out, "selected")
    try:
        metrics = SelectStage().run(ctx, cfg)
    finally:
        ctx.close()
    typer.echo(f"{metrics['rows_kept']:,} of {metrics['rows_in']:,} rows kept ({cfg.method}, "
               f"{metrics['seconds_per_row'] or 0:.4f} s/row) -> {ctx.path('select.parquet')}")
