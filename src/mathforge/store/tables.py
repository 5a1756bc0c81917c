"""Parquet tables written atomically (temp file + rename), so a crash never leaves a half-written stage output."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from mathforge.errors import DataError
from mathforge.records import REJECTED_SCHEMA


def write_table(path: str | Path, rows: Iterable[dict[str, Any]] | pa.Table, schema: pa.Schema | None = None) -> Path:
    """Write rows (dicts) or an Arrow table to Parquet atomically; extra columns beyond ``schema`` are kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, pa.Table):
        table = rows
    else:
        rows = list(rows)
        table = rows_to_table(rows, schema)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.Table:
    """Rows as an Arrow table in ``schema``'s columns first; columns beyond it are kept, typed by inference."""
    if schema is None:
        return pa.Table.from_pylist(rows)
    names = set(schema.names)
    extra: list[str] = []
    for row in rows:
        for k in row:
            if k not in names and k not in extra:
                extra.append(k)
    if not extra:
        return pa.Table.from_pylist(rows, schema=schema)
    base = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    for k in extra:
        base = base.append_column(k, pa.array([r.get(k) for r in rows]))
    return base


def read_table(path: str | Path) -> pa.Table:
    """A whole Parquet file; a damaged one is a ``DataError`` naming it (never a raw Arrow traceback)."""
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet table ({type(exc).__name__}: {exc}). Move it aside "
                        f"(`mv {path} {path}.bad`) and rerun the stage that writes it; answered requests stay in "
                        "the ledger", file=str(path)) from None


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return read_table(path).to_pylist()


def append_rejected(run_dir: str | Path, stage: str, items: Iterable[tuple[dict[str, Any], str]]) -> int:
    """Add (record, reason) pairs to the run's rejected.parquet; rows of the same stage written before are replaced.

    Replacing by stage keeps reruns idempotent: running a stage twice never duplicates its rejects.
    """
    path = Path(run_dir) / "rejected.parquet"
    new = [
        {
            "stage": stage,
            "reason": reason,
            "record_id": str(rec.get("id", rec.get("problem_id", ""))),
            "record": json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str),
        }
        for rec, reason in items
    ]
    old = [r for r in read_rows(path) if r["stage"] != stage] if path.exists() else []
    if not new and not old and not path.exists():
        return 0
    write_table(path, old + new, REJECTED_SCHEMA)
    return len(new)
