"""``mathforge report``: a static HTML report, a Markdown summary and plots of one or more runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False)
console = Console()


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="run directories; the first is the main one, the others are compared"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", file_okay=False, help="output folder (default: <first run>/report)"),
    title: Optional[str] = typer.Option(None, "--title", help="page title"),
    base: Optional[str] = typer.Option(None, "--base", help="model the eval deltas are measured against"),
    contrast: list[str] = typer.Option([], "--contrast", help="A:B — also report the paired difference of model A "
                                       "minus model B (repeatable), e.g. --contrast rft:control"),
) -> None:
    """Write index.html, summary.md, metrics.json and PNG plots; print the eval comparison table."""
    from mathforge.errors import ConfigError
    from mathforge.evaluate.compare import comparison_rows, find_results
    from mathforge.report import build_report

    for r in runs:
        if not r.is_dir():
            raise ConfigError(f"{r}: not a run directory")
    pairs = []
    for c in contrast:
        a, sep, b = c.partition(":")
        if not sep or not a or not b:
            raise ConfigError(f"--contrast {c!r}: expected MODEL_A:MODEL_B")
        pairs.append((a, b))
    target = out or runs[0] / "report"
    metrics = build_report(runs, target, title=title, base=base, contrasts=pairs)
    rows = comparison_rows([s for r in runs for s in find_results(r)], base)
    if rows:
        from mathforge.cli.evaluate import print_table

        print_table(rows, title="eval comparison")
    for c in metrics["contrasts"]:
        console.print(f"{c['a']} − {c['b']} on {c['benchmark']}: {100 * c['delta']:+.1f} pts"
                      + (f" [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]" if c.get("ci_low") is not None else ""))
    console.print(f"report: {target / 'index.html'} ({len(metrics['plots'])} plots); markdown: {target / 'summary.md'}")
