"""``mathforge retry RUN_DIR``: re-send only the requests a run recorded as failed, then rerun what depends on them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer()


@app.command()
def retry(
    run_dir: Path = typer.Argument(..., help="a run directory (it holds recipe.yaml and ledger.sqlite)"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="rerun later stages even if requests fail again"),
    mode: Optional[str] = typer.Option(None, "--mode", help="online or batch: how API teachers re-send (default: "
                                       "each teacher's own mode)"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local or ray (default: the recipe's)"),
    address: Optional[str] = typer.Option(None, "--address", help="the Ray cluster to join (with --executor ray)"),
) -> None:
    """Re-send the failed requests of RUN_DIR, then rerun exactly the stages downstream of the retried ones."""
    from mathforge.errors import ConfigError
    from mathforge.pipeline.runner import retry_run
    from mathforge.summary import print_summary

    if mode not in (None, "online", "batch"):
        raise ConfigError(f"--mode {mode}: choose online or batch")
    summary = retry_run(run_dir, allow_partial=allow_partial, mode=mode, executor=executor, address=address)
    t = Table("stage", "sent", "samples", "still failed", title=f"retried {', '.join(summary['retried'])}")
    for stage_id, m in summary["stages"].items():
        t.add_row(stage_id, str(m.get("sent", "-")), str(m.get("samples", m.get("accepted", "-"))),
                  str(m.get("failed_requests", 0)))
    console = Console()
    console.print(t)
    print_summary(summary, console)
