"""Entry point of the ``mathforge`` command. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mathforge.errors import MathforgeError
from mathforge.masking import mask_text

app = typer.Typer(
    name="mathforge",
    help="Make mathematical-reasoning training data and prove that it works.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


@app.command()
def run(
    recipe: str = typer.Argument(..., help="a recipe YAML path, or the name of a bundled recipe (see `mathforge recipes`)"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="run directory (default: the recipe's, else runs/<name>)"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only these stages (by name or id); repeatable"),
) -> None:
    """Run a recipe: every stage in order, resuming from the run directory's ledger and tables."""
    from mathforge.pipeline.recipe import load_recipe, run_recipe
    from mathforge.summary import print_summary

    summary = run_recipe(load_recipe(recipe), run_dir, only=only)
    print_summary(summary, console)


@app.command()
def recipes() -> None:
    """List the recipes bundled with mathforge."""
    from mathforge.config import load_yaml
    from mathforge.pipeline.recipe import bundled_recipes

    t = Table("name", "stages", "description")
    for name, path in sorted(bundled_recipes().items()):
        data = load_yaml(path.read_text(), str(path)) or {}
        stages = " → ".join(next(iter(s)) for s in data.get("stages", []) if isinstance(s, dict))
        t.add_row(name, stages, data.get("description", ""))
    console.print(t)


def _mount(name: str, module: str) -> None:
    """Add a subcommand module: a Typer with one command becomes ``mathforge NAME``, a larger one a group."""
    sub: typer.Typer = importlib.import_module(module).app
    if len(sub.registered_commands) == 1 and sub.registered_callback is None and not sub.registered_groups:
        cmd = sub.registered_commands[0]
        app.command(name, help=cmd.help)(cmd.callback)
    else:
        app.add_typer(sub, name=name)


for _name, _module in [
    ("datasets", "mathforge.cli.datasets"),
    ("verify", "mathforge.cli.verify"),
    ("refine", "mathforge.cli.refine"),
    ("synthesize", "mathforge.cli.synthesize"),
    ("curate", "mathforge.cli.curate"),
    ("export", "mathforge.cli.export"),
    ("retry", "mathforge.cli.retry"),
    ("status", "mathforge.cli.status"),
    ("eval", "mathforge.cli.evaluate"),
    ("report", "mathforge.cli.report"),
    ("view", "mathforge.cli.view"),
    ("train", "mathforge.cli.train"),
]:
    _mount(_name, _module)


def main() -> None:
    try:
        app()
    except MathforgeError as exc:
        code = getattr(exc, "exit_code", 2)
        label = "[bold yellow]in flight:[/]" if code == 75 else "[bold red]error:[/]"  # 75: engine.batch.EXIT_IN_FLIGHT
        Console(stderr=True).print(f"{label} {mask_text(str(exc))}", highlight=False)
        sys.exit(code)


if __name__ == "__main__":
    main()
