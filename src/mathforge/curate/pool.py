"""Sample tables from files and other runs, and their union (RFT-U13B pools the correct paths of several models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathforge.errors import ConfigError, DataError
from mathforge.store import read_rows

REQUIRED = ("id", "problem_id", "question", "text")


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Sample rows of a run directory (its latest samples table), a Parquet file or a JSONL file."""
    p = Path(path)
    if p.is_dir():
        from mathforge.pipeline.state import RunState

        ref = RunState(p).latest("samples")  # the run's final samples table in its lineage
        if ref is None:
            raise ConfigError(f"{p}: not a run directory with a samples table (state.json names none)")
        return read_rows(p / ref.path)
    if not p.exists():
        raise ConfigError(f"{p}: no such samples file or run directory")
    if p.suffix == ".parquet":
        rows = read_rows(p)
    elif p.suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(p, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON: {exc.msg}", file=str(p), line=line_no) from None
    else:
        raise ConfigError(f"{p}: samples must be a run directory, .parquet or .jsonl")
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED if row.get(k) is None]
        if missing:
            raise DataError(f"sample lacks {', '.join(missing)}", file=str(p), line=i + 1, field=missing[0])
    return rows


def union(
    tables: list[tuple[str, list[dict[str, Any]]]]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Rows of every (source, rows) table in order; a sample id seen before is rejected, naming the first source."""
    seen: dict[str, str] = {}
    kept, rejected = [], []
    for source, rows in tables:
        for row in rows:
            sid = str(row["id"])
            if sid in seen:
                rejected.append((row, f"duplicate-id: sample {sid} of {source} is already pooled from {seen[sid]}"))
                continue
            seen[sid] = source
            kept.append(row)
    return kept, rejected
