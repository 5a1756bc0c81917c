"""``mathforge retry RUN_DIR``: re-send only the requests a run recorded as failed."""

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
    mode: Optional[str] = typer.Option(None, "--mode", help="online or batch: how API teachers re-send (default: "
                                       "each teacher's own mode)"),
) -> None:
    """Re-send the requests recorded as failed in RUN_DIR (its generate stages rerun with retry_failed)."""
    from mathforge.errors import ConfigError
    from mathforge.generate import retry_failed_requests

    if mode not in (None, "online", "batch"):
        raise ConfigError(f"--mode {mode}: choose online or batch")
    results = retry_failed_requests(run_dir, mode)
    t = Table("stage", "re-sent", "samples", "still missing", "failed again")
    for stage_id, m in results.items():
        t.add_row(stage_id, str(m.get("sent", 0)), str(m.get("samples", 0)), str(m.get("missing", 0)),
                  str(m.get("failed", 0)))
    console = Console()
    console.print(t)
    console.print("Stages after generate were not rerun: `mathforge run RECIPE -o RUN_DIR` refreshes them from the ledger.")
