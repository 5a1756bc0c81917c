"""Parquet tables written atomically (temp file + rename), so a crash never leaves a half-written stage output."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
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
        if path.is_dir():  # the table was a shard directory before: switch the file in with renames only
            from mathforge.store.shards import switch_in

            switch_in(Path(tmp), path)
        else:
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
        raise _unreadable(path, exc) from None


def _unreadable(path: str | Path, exc: Exception) -> DataError:
    return DataError(f"not a readable Parquet table ({type(exc).__name__}: {exc}). Move it aside "
                     f"(`mv {path} {path}.bad`) and rerun the stage that writes it; answered requests stay in "
                     "the ledger", file=str(path))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return read_table(path).to_pylist()


def append_rejected(run_dir: str | Path, stage: str, items: Iterable[tuple[dict[str, Any], str]]) -> int:
    """Add (record, reason) pairs to the run's rejected.parquet; rows of the same stage written before are replaced.

    Replacing by stage keeps reruns idempotent: running a stage twice never duplicates its rejects.
    """
    with RejectedWriter(run_dir, stage) as writer:
        writer.add(items)
    return writer.count


class RejectedWriter:
    """Streams one stage's (record, reason) pairs into rejected.parquet without holding them: they are spooled to a
    temp file, and ``close`` rewrites rejected.parquet as the other stages' rows plus these, a row group at a time."""

    BATCH = 5_000

    def __init__(self, run_dir: str | Path, stage: str):
        self.path = Path(run_dir) / "rejected.parquet"
        self.stage, self.count = stage, 0
        self._buffer: list[dict[str, Any]] = []
        self._spool: pq.ParquetWriter | None = None
        self._spool_path = self.path.parent / f".rejected.{stage}.spool.tmp"  # a kill's leftover is cleaned

    def __enter__(self) -> "RejectedWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def add(self, items: Iterable[tuple[dict[str, Any], str]]) -> None:
        for rec, reason in items:
            self._buffer.append({
                "stage": self.stage,
                "reason": reason,
                "record_id": str(rec.get("id", rec.get("problem_id", ""))),
                "record": json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str),
            })
            self.count += 1
            if len(self._buffer) >= self.BATCH:
                self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._spool is None:
            self._spool = pq.ParquetWriter(self._spool_path, REJECTED_SCHEMA)
        self._spool.write_table(pa.Table.from_pylist(self._buffer, REJECTED_SCHEMA))
        self._buffer = []

    def close(self) -> None:
        """Write rejected.parquet: earlier rows of other stages, then this stage's, switched in atomically."""
        self._flush()
        if self._spool is not None:
            self._spool.close()
        parts: list[Path] = [p for p in (self.path, self._spool_path) if p.exists()]
        if not parts:
            return
        fd, tmp = tempfile.mkstemp(prefix=".rejected.parquet.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            with pq.ParquetWriter(tmp, REJECTED_SCHEMA) as out:
                if self.path.exists():
                    for batch in _rejected_batches(self.path):
                        out.write_table(batch.filter(pc.not_equal(batch.column("stage"), self.stage)))
                if self._spool_path.exists():
                    for batch in pq.ParquetFile(self._spool_path, pre_buffer=False).iter_batches(self.BATCH):
                        out.write_table(pa.Table.from_batches([batch]))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            self._spool_path.unlink(missing_ok=True)

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
        self._spool_path.unlink(missing_ok=True)


def _rejected_batches(path: Path):
    """The existing rejected table a batch at a time, cast to the declared schema; damaged: a DataError naming it."""
    try:
        for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(RejectedWriter.BATCH):
            yield pa.Table.from_batches([batch]).select(REJECTED_SCHEMA.names).cast(REJECTED_SCHEMA)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise _unreadable(path, exc) from None
