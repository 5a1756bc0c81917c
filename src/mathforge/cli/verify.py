"""``mathforge verify``: add verdict columns to a samples table (Parquet or JSONL) and print a summary."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Verify model answers against gold answers.", add_completion=False)
console = Console()


def _read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        from mathforge.store.tables import read_rows

        return read_rows(path)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".parquet":
        from mathforge.records import SAMPLE_SCHEMA
        from mathforge.store.tables import write_table

        schema = SAMPLE_SCHEMA if set(SAMPLE_SCHEMA.names) <= set(rows[0] if rows else ()) else None
        write_table(path, rows, schema)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


@app.command()
def verify(
    input: Path = typer.Argument(..., exists=True, dir_okay=False, help="samples table: .parquet or .jsonl with text, gold"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="where to write (default: <input>.verified.<ext>)"),
    timeout: float = typer.Option(5.0, help="hard limit in seconds for one symbolic check"),
    workers: Optional[int] = typer.Option(None, help="worker processes for symbolic checks (default: all cores)"),
    extractor: Optional[list[str]] = typer.Option(None, "--extractor", "-e", help="extractor to try, in order; repeatable"),
    sandbox: Optional[str] = typer.Option(
        None, help="how `-e pot` runs model code: bwrap (default) or unsafe-no-isolation (no isolation at all)"
    ),
) -> None:
    """Judge every row's ``text`` against its ``gold``; write the rows with verdict columns added."""
    from mathforge.verify.stage import VerifyConfig, run_verify_stage

    cfg = VerifyConfig(timeout=timeout, workers=workers, extractors=extractor or None, sandbox=sandbox)
    rows = _read(input)
    out_rows = run_verify_stage(rows, cfg)
    output = output or input.with_name(f"{input.stem}.verified{input.suffix}")
    _write(output, out_rows)
    table = Table("method", "correct", "wrong", "undecided", title=f"{len(out_rows)} rows -> {output}")
    counts: Counter = Counter((r["method"], r["correct"]) for r in out_rows)
    for method in sorted({m for m, _ in counts}):
        table.add_row(method, str(counts[(method, True)]), str(counts[(method, False)]), str(counts[(method, None)]))
    console.print(table)
