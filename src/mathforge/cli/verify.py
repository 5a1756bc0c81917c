"""``mathforge verify``: add verdict columns to a samples table (Parquet or JSONL) and print a summary."""

from __future__ import annotations

import inspect
import json
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from mathforge.cli.flags import config_command, out_option
from mathforge.verify.stage import VerifyConfig

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


def verify_command(data: dict[str, Any], *, input: Path, out: Optional[Path], output: Optional[Path],
                   config: Optional[Path]) -> None:
    """Judge every row's ``text`` against its ``gold``; write the rows with verdict columns added."""
    from mathforge.config import validate
    from mathforge.verify.stage import run_verify_stage

    if out is not None and output is not None:
        raise typer.BadParameter("give the folder (-o/--out) or the file (--output), not both", param_hint="--output")
    cfg = validate(VerifyConfig, data, str(config or "mathforge verify"))
    rows = _read(input)
    out_rows = run_verify_stage(rows, cfg)
    output = output or (out or input.parent) / f"{input.stem}.verified{input.suffix}"
    _write(output, out_rows)
    table = Table("method", "correct", "wrong", "undecided", title=f"{len(out_rows)} rows -> {output}")
    counts: Counter = Counter((r["method"], r["correct"]) for r in out_rows)
    for method in sorted({m for m, _ in counts}):
        table.add_row(method, str(counts[(method, True)]), str(counts[(method, False)]), str(counts[(method, None)]))
    console.print(table)


app.command("verify")(config_command(
    VerifyConfig,
    verify_command,
    leading=[inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                               default=typer.Argument(..., exists=True,
                                                      help="samples table with text, gold: .parquet (a file or a "
                                                      "run's shard directory) or .jsonl")),
             out_option("folder to write <input stem>.verified.<ext> into (default: the input's folder)"),
             inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                               default=typer.Option(None, "--output", dir_okay=False,
                                                    help="the output file itself, instead of -o's folder"))],
    short={"extractors": ["--extractor", "-e"]},
    doc="Judge every row's text against its gold; write the rows with verdict columns added.",
))
