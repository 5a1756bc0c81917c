"""The table I/O seam: what ``ctx.input(name)`` and ``ctx.output(name)`` return.

A stage never opens a stage table by path. It reads its declared inputs through a ``TableReader`` (row batches, the
whole table, or the row count) and writes its declared outputs through a ``TableWriter`` that the runner commits as a
whole when the stage returns: rows go to a temporary file beside the final one, and the commit is one ``os.replace``.
A stage that raises (or a process that is killed) leaves the previous output in place; the temporary file is removed
on abort, and leftovers of killed processes are removed the next time a writer opens the run directory
(``clean_leftovers``). These classes hold single-file Parquet tables; a sharded store implements the same methods.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from mathforge.errors import DataError
from mathforge.store.shards import fsync_dir as _fsync_dir
from mathforge.store.tables import rows_to_table

TMP_MARK = ".mf-tmp"  # every file or folder written aside carries this in its name, so leftovers are easy to find
OLD_MARK = ".mf-old"  # a committed folder moved aside during a switch; restored if the switch was cut short
DEFAULT_BATCH = 8192


class Reader(Protocol):
    """What a stage may do with an input table."""

    path: Path
    num_rows: int

    def batches(self, batch_size: int = DEFAULT_BATCH) -> Iterator[list[dict[str, Any]]]: ...

    def to_pylist(self) -> list[dict[str, Any]]: ...


class Writer(Protocol):
    """What a stage may do with an output table; ``commit``/``abort`` belong to the runner."""

    path: Path
    rows_written: int

    def write(self, rows: Iterable[dict[str, Any]] | pa.Table | pa.RecordBatch) -> None: ...

    def commit(self) -> Path: ...

    def abort(self) -> None: ...


def _parquet_error(path: Path, exc: Exception) -> DataError:
    return DataError(f"not a readable Parquet table ({type(exc).__name__}: {exc}); it was cut short or overwritten "
                     "by something else. Move it aside and rerun the stage that writes it "
                     "(`mathforge run RECIPE -o RUN_DIR --from STAGE`); paid-for responses stay in the ledger",
                     file=str(path))


class TableReader:
    """One committed Parquet table, read in row-group batches so memory follows the batch, not the table."""

    def __init__(self, path: str | Path, *, name: str = "", producer: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.producer = producer  # the stage id that wrote it (lineage), None for a file given by the user
        try:
            # Without pre-buffering: with it, every row group read stays cached, so a pass holds the whole table.
            self._file = pq.ParquetFile(self.path, pre_buffer=False)
        except FileNotFoundError:
            raise DataError("table not found; rerun the stage that writes it", file=str(self.path)) from None
        except (pa.ArrowException, OSError) as exc:
            raise _parquet_error(self.path, exc) from None

    @property
    def num_rows(self) -> int:
        return self._file.metadata.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self._file.schema_arrow

    def record_batches(self, batch_size: int = DEFAULT_BATCH,
                       columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Arrow record batches in order; ``columns`` limits what is read (absent ones skipped, as ``ShardReader``)."""
        names = [c for c in columns if c in self.schema.names] if columns else None
        try:
            yield from self._file.iter_batches(batch_size=batch_size, columns=names)
        except (pa.ArrowException, OSError) as exc:
            raise _parquet_error(self.path, exc) from None

    def batches(self, batch_size: int = DEFAULT_BATCH) -> Iterator[list[dict[str, Any]]]:
        for batch in self.record_batches(batch_size):
            yield batch.to_pylist()

    def to_arrow(self) -> pa.Table:
        try:
            return self._file.read()
        except (pa.ArrowException, OSError) as exc:
            raise _parquet_error(self.path, exc) from None

    def to_pylist(self) -> list[dict[str, Any]]:
        return self.to_arrow().to_pylist()


def _conform(table: pa.Table, schema: pa.Schema, where: Path) -> pa.Table:
    """A later batch in the schema the first batch fixed: missing columns become nulls, unknown ones are an error."""
    if table.schema.equals(schema):
        return table
    unknown = [n for n in table.schema.names if n not in schema.names]
    if unknown:
        raise DataError(f"a later batch adds columns {unknown} that the first batch did not have", file=str(where))
    cols = [table.column(f.name).cast(f.type) if f.name in table.schema.names else pa.nulls(len(table), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


class TableWriter:
    """An output table written aside (``.<name>.<id>.mf-tmp``) and switched in by one rename on commit."""

    def __init__(self, path: str | Path, schema: pa.Schema | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}{TMP_MARK}")
        self.rows_written = 0
        self._writer: pq.ParquetWriter | None = None
        self._closed = False

    def write(self, rows: Iterable[dict[str, Any]] | pa.Table | pa.RecordBatch) -> None:
        """Append rows (dicts) or an Arrow table/batch; the first non-empty write fixes the column set."""
        if self._closed:
            raise RuntimeError(f"{self.path}: written after commit or abort")
        if isinstance(rows, pa.RecordBatch):
            table = pa.Table.from_batches([rows])
        elif isinstance(rows, pa.Table):
            table = rows
        else:
            rows = list(rows)
            if not rows:
                return
            table = rows_to_table(rows, self.schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        else:
            table = _conform(table, self._writer.schema, self.path)
        self._writer.write_table(table)
        self.rows_written += table.num_rows

    def commit(self) -> Path:
        """Finish the file, flush it to disk and switch it in; an empty output is an empty table, not no file."""
        if self._closed:
            return self.path
        if self._writer is None:
            empty = (self.schema or pa.schema([])).empty_table()
            self._writer = pq.ParquetWriter(self.tmp, empty.schema)
        self._writer.close()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        self._closed = True
        return self.path

    def abort(self) -> None:
        if self._closed:
            return
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)
        self._closed = True


class FileWriter:
    """A small output file (a JSON report) written aside at ``path`` and renamed into place on commit."""

    def __init__(self, final: str | Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}{TMP_MARK}")
        self.rows_written = 0
        self._closed = False

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        with open(self.path, "w", encoding=encoding) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self) -> Path:
        if not self._closed:
            if not self.path.exists():
                raise RuntimeError(f"{self.final}: output opened but never written")
            os.replace(self.path, self.final)
            self._closed = True
        return self.final

    def abort(self) -> None:
        if not self._closed:
            self.path.unlink(missing_ok=True)
            self._closed = True


class DirWriter:
    """An output folder (such as ``export/``) built aside and switched in whole on commit.

    The stage writes into ``path`` (the staging folder). Commit moves the committed folder aside, renames the staging
    folder into place and deletes the old one; ``clean_leftovers`` puts the old folder back if a kill landed between
    the two renames, so the final name always holds a complete folder or nothing new.
    """

    def __init__(self, final: str | Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}{TMP_MARK}")
        self.path.mkdir()
        self.rows_written = 0
        self._closed = False

    def write(self, rows: Any) -> None:  # pragma: no cover - folders are written through ``path``
        raise TypeError(f"{self.final}: a folder output is written through its .path")

    def commit(self) -> Path:
        if self._closed:
            return self.final
        _fsync_tree(self.path)
        old = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}{OLD_MARK}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        _fsync_dir(self.final.parent)
        shutil.rmtree(old, ignore_errors=True)
        self._closed = True
        return self.final

    def abort(self) -> None:
        if not self._closed:
            shutil.rmtree(self.path, ignore_errors=True)
            self._closed = True


class InPlace:
    """An output folder a stage maintains in place (training checkpoints it resumes from, eval results); commit only
    records it."""

    def __init__(self, final: str | Path):
        self.final = self.path = Path(final)
        self.path.mkdir(parents=True, exist_ok=True)
        self.rows_written = 0

    def commit(self) -> Path:
        return self.final

    def abort(self) -> None:
        """Nothing to undo: the stage resumes from what it left."""


def clean_leftovers(folder: str | Path) -> list[str]:
    """Remove what killed writers left in ``folder`` (temp tables, staging folders); restore cut-short switches.

    Only called by the process holding the run directory's lock, so nothing it removes is still being written.
    """
    folder = Path(folder)
    done: list[str] = []
    if not folder.is_dir():
        return done
    for p in sorted(folder.iterdir()):
        if p.name.endswith(OLD_MARK):
            final = p.with_name(p.name[1:].rsplit(".", 2)[0])
            if not final.exists():  # killed between the two renames of a switch: the old folder is still the truth
                os.replace(p, final)
                done.append(f"restored {final.name}")
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            done.append(f"removed {p.name}")
        elif p.name.endswith(TMP_MARK) or (p.name.startswith(".") and p.name.endswith(".tmp")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            done.append(f"removed {p.name}")
    return done


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                os.fsync(fh.fileno())
