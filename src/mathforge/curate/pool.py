"""Sample tables from files and other runs, and their union (RFT-U13B pools the correct paths of several models)."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from mathforge.errors import ConfigError, DataError

REQUIRED = ("id", "problem_id", "question", "text")


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Sample rows of a run directory (its latest samples table), a Parquet file or a JSONL file."""
    return [row for batch in sample_batches(path) for row in batch]


def sample_batches(path: str | Path, batch_size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    """The same rows in batches, never the whole table at once; a row without a required field is an error."""
    from mathforge.store.shards import ShardReader

    p = Path(path)
    if p.is_dir() and not (p / "_manifest.json").exists():
        from mathforge.pipeline.state import RunState

        ref = RunState(p).latest("samples")  # the run's final samples table in its lineage
        if ref is None:
            raise ConfigError(f"{p}: not a run directory with a samples table (state.json names none)")
        p = p / ref.path
    elif not p.exists():
        raise ConfigError(f"{p}: no such samples file or run directory")
    elif p.suffix not in (".parquet", ".jsonl", ".ndjson"):
        raise ConfigError(f"{p}: samples must be a run directory, .parquet or .jsonl")
    if p.suffix == ".parquet":
        batches = ShardReader(p).batches(batch_size)
    else:
        batches = _jsonl_batches(p, batch_size)
    line = 0
    for rows in batches:
        for row in rows:
            line += 1
            missing = [k for k in REQUIRED if row.get(k) is None]
            if missing:
                raise DataError(f"sample lacks {', '.join(missing)}", file=str(p), line=line, field=missing[0])
        yield rows


def _jsonl_batches(p: Path, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    with open(p, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON: {exc.msg}", file=str(p), line=line_no) from None
            if len(rows) >= batch_size:
                yield rows
                rows = []
    if rows:
        yield rows
