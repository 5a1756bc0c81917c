"""``mathforge status RUN_DIR``: requests per state, provider batches (collecting finished ones) and costs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer()


@app.command()
def status(
    run_dir: Path = typer.Argument(..., help="a run directory (it holds ledger.sqlite and recipe.yaml)"),
    wait: bool = typer.Option(False, "--wait", help="poll until every batch in flight has ended"),
    collect: bool = typer.Option(True, "--collect/--no-collect", help="check batches in flight and commit results"),
) -> None:
    """Show a run's requests, batches and costs; collect provider batches that have ended (never re-submits)."""
    from mathforge.errors import EXIT_IN_FLIGHT
    from mathforge.engine.batch_status import check_run
    from mathforge.engine.cost import usd

    st = check_run(run_dir, collect=collect, wait=wait)
    console = Console()
    states = sorted({s for c in st.counts.values() for s in c})
    t = Table("teacher", *states, title="requests")
    for teacher, c in sorted(st.counts.items()):
        t.add_row(teacher, *(f"{c.get(s, 0):,}" for s in states))
    console.print(t)
    if st.batches:
        b = Table("batch", "teacher", "provider id", "state", "provider status", "requests", "created", title="batches")
        for row in st.batches[-20:]:
            b.add_row(row.id, row.teacher, row.provider_id or "-", row.state, row.provider_status or "-", str(row.n),
                      dt.datetime.fromtimestamp(row.created).strftime("%Y-%m-%d %H:%M:%S"))
        console.print(b)
    c = Table("teacher", "mode", "$/M in", "$/M out", "batch price", "answered", "spent", "in flight: projected (worst)",
              "pending: projected", "budget", title="cost (USD)")
    for tc in st.costs.values():
        c.add_row(tc.teacher, tc.mode, f"{tc.price_input_per_m:g}", f"{tc.price_output_per_m:g}",
                  f"×{tc.batch_factor:g}", f"{tc.answered:,}", usd(tc.spent),
                  f"{tc.in_flight:,}: {usd(tc.in_flight_cost)} (≤{usd(tc.in_flight_worst)})",
                  f"{tc.pending:,}: {usd(tc.pending_cost)}", "-" if tc.budget is None else usd(tc.budget))
    console.print(c)
    if st.collected:
        console.print(f"collected {st.collected:,} results; `mathforge run RECIPE -o {run_dir}` carries on from them")
    if st.open_batches:
        console.print(f"[yellow]{st.open_batches} batches still in flight; run this again later (or with --wait)")
        raise typer.Exit(EXIT_IN_FLIGHT)
