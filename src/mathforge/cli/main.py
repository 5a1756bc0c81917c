"""Entry point of the ``mathforge`` command. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mathforge.errors import EXIT_ERROR, EXIT_IN_FLIGHT, IncompleteRunError, MathforgeError
from mathforge.masking import mask_text

app = typer.Typer(
    name="mathforge",
    help="Make mathematical-reasoning training data and prove that it works.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command that turns a MathforgeError into one clear message on stderr and its exit code (docs: Exit codes)."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MathforgeError as exc:
            if isinstance(exc, IncompleteRunError) and exc.summary:
                from mathforge.summary import print_summary

                print_summary(exc.summary, console)
            _print_error(exc)
            raise typer.Exit(getattr(exc, "exit_code", EXIT_ERROR)) from None

    return command


def _print_error(exc: MathforgeError) -> None:
    label = "[bold yellow]in flight:[/]" if getattr(exc, "exit_code", None) == EXIT_IN_FLIGHT else "[bold red]error:[/]"
    # escaped: a message naming an extra (pip install 'mathforge[ray]') must not lose "[ray]" as a markup tag
    Console(stderr=True).print(f"{label} {escape(mask_text(str(exc)))}", highlight=False)


@app.command()
@guarded
def run(
    recipe: str = typer.Argument(..., help="a recipe YAML path, or the name of a bundled recipe (see `mathforge recipes`)"),
    run_dir: Optional[Path] = typer.Option(None, "--out", "-o", "--run-dir", file_okay=False,
                                           help="run directory to write to (default: the recipe's, else runs/<name>)"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only these stages (by name or id); repeatable"),
    start: Optional[str] = typer.Option(None, "--from", help="run this stage and every stage downstream of it"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="run later stages even when requests failed "
                                       "(the exit code is still 3)"),
    new_ledger: bool = typer.Option(False, "--new-ledger", help="go on although the ledger is missing or empty: "
                                    "every request it held is paid again"),
    executor: Optional[str] = typer.Option(None, "--executor", help="where stages run: local (this process) or ray "
                                           "(a Ray cluster; needs mathforge[ray]); default: the recipe's"),
    address: Optional[str] = typer.Option(None, "--address", help="the Ray cluster to join (with --executor ray; "
                                          "default RAY_ADDRESS, else a Ray instance started here)"),
) -> None:
    """Run a recipe: every stage in order, resuming from the run directory's ledger and tables."""
    from mathforge.pipeline.recipe import load_recipe
    from mathforge.pipeline.runner import run_recipe
    from mathforge.summary import print_summary

    summary = run_recipe(load_recipe(recipe), run_dir, only=only, start=start, allow_partial=allow_partial,
                         new_ledger=new_ledger, executor=executor, address=address)
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
        app.command(name, help=cmd.help)(guarded(cmd.callback))
    else:
        app.add_typer(sub, name=name)


for _name, _module in [
    ("datasets", "mathforge.cli.datasets"),
    ("generate", "mathforge.cli.generate"),
    ("verify", "mathforge.cli.verify"),
    ("refine", "mathforge.cli.refine"),
    ("synthesize", "mathforge.cli.synthesize"),
    ("curate", "mathforge.cli.curate"),
    ("select", "mathforge.cli.select"),
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
    except MathforgeError as exc:  # raised outside a command (while the app is built)
        _print_error(exc)
        sys.exit(getattr(exc, "exit_code", EXIT_ERROR))


if __name__ == "__main__":
    main()
