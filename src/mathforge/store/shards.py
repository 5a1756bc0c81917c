"""A stage's output as a set of Parquet shards plus a manifest, built aside and switched in as a whole.

Layout of a table ``<name>.parquet`` written this way (a directory that ``pyarrow.parquet.read_table``, ``datasets``
and pandas read as one table, since files starting with ``_`` or ``.`` are not data)::

    <name>.parquet/part-00000.parquet ...   the shards, in order
    <name>.parquet/_manifest.json           schema names, rows and bytes per shard, fingerprint

While the stage runs it writes into ``.<name>.parquet.staging/``. Each shard is written to a temp file, fsynced,
renamed to ``part-NNNNN.parquet`` and then marked done by ``_part-NNNNN.done`` (its row count): a shard without its
marker is unfinished and is rewritten, a marked one is never redone. The staging directory carries the fingerprint
of what produced it (config and input), so a rerun with other inputs starts clean instead of mixing shards.
``commit`` writes the manifest and switches the directory in with renames; a killed commit is finished or undone
by the next ``ShardWriter`` on the same path. Memory is bounded by one row group, never by the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mathforge.errors import DataError

MANIFEST = "_manifest.json"
ROWS_PER_SHARD = 100_000
ROW_GROUP = 10_000


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (a stage's config and what it read), to tell stale staging apart."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class ShardWriter:
    """Writes a table shard by shard into a staging directory; ``commit`` switches it in at ``path``.

    ``write(rows)`` appends rows and rolls to a new shard every ``rows_per_shard`` rows; ``write_shard(i, batches)``
    writes shard ``i`` whole (stages that map input shard i to output shard i, and skip those ``done(i)``). Only
    with ``resume=True`` are the finished shards of an earlier attempt (with the same fingerprint) kept.
    """

    def __init__(self, path: str | Path, schema: pa.Schema | None = None, *, fingerprint: str = "",
                 resume: bool = False, rows_per_shard: int = ROWS_PER_SHARD, row_group: int = ROW_GROUP):
        self.path = Path(path)
        self.schema = schema
        self.fingerprint = fingerprint
        self.rows_per_shard, self.row_group = rows_per_shard, row_group
        self.staging = self.path.parent / f".{self.path.name}.staging"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        recover(self.path)
        if not resume and self.staging.exists():  # appending writers start over; only shard-mapped ones resume
            shutil.rmtree(self.staging)
        self._open_staging()
        self._next = max(self.finished(), default=-1) + 1
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[dict[str, Any]] = []
        self._rows_in_shard = 0
        self._tmp: Path | None = None
        self.rows_written = 0
        self._committed = False

    # -- staging ---------------------------------------------------------------------------------------------------
    def _open_staging(self) -> None:
        stamp = self.staging / "_fingerprint"
        if self.staging.exists() and (not stamp.exists() or stamp.read_text() != self.fingerprint):
            shutil.rmtree(self.staging)  # produced from other inputs or settings: nothing in it may be reused
        self.staging.mkdir(exist_ok=True)
        for leftover in self.staging.glob(".*.tmp"):  # a shard being written when the last attempt was killed
            leftover.unlink()
        for part in self.staging.glob("part-*.parquet"):  # renamed but not yet marked: not trusted
            if not self._marker(int(part.stem.split("-")[1])).exists():
                part.unlink()
        if not stamp.exists():
            stamp.write_text(self.fingerprint)

    def _part(self, i: int) -> Path:
        return self.staging / f"part-{i:05d}.parquet"

    def _marker(self, i: int) -> Path:
        return self.staging / f"_part-{i:05d}.done"

    def finished(self) -> list[int]:
        """Indices of the shards written completely by this or an earlier attempt."""
        return sorted(int(m.stem.split("-")[1].split(".")[0]) for m in self.staging.glob("_part-*.done"))

    def done(self, i: int) -> bool:
        return self._marker(i).exists()

    def marker(self, i: int) -> dict[str, Any]:
        """What finished shard ``i``'s marker records: its rows, and what the stage added (see ``write_shard``)."""
        return json.loads(self._marker(i).read_text())

    def staged_batches(self, i: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of finished shard ``i`` as staged (before commit)."""
        yield from pq.ParquetFile(self._part(i), pre_buffer=False).iter_batches(self.row_group, columns=columns)

    # -- writing ---------------------------------------------------------------------------------------------------
    def write(self, rows: Iterable[dict[str, Any]] | pa.Table | pa.RecordBatch) -> None:
        """Append rows; full row groups go to disk at once, full shards are committed with their marker."""
        if isinstance(rows, (pa.Table, pa.RecordBatch)):
            rows = rows.to_pylist()
        for row in rows:
            self._buffer.append(row)
            if len(self._buffer) >= self.row_group:
                self._flush()

    def _flush(self) -> None:
        while self._buffer:
            room = self.rows_per_shard - self._rows_in_shard
            chunk, self._buffer = self._buffer[:room], self._buffer[room:]
            self._append(_to_table(chunk, self.schema))
            if self._rows_in_shard >= self.rows_per_shard:
                self._finish_shard()

    def _append(self, table: pa.Table) -> None:
        if self._writer is None:
            self._tmp = self.staging / f".part-{self._next:05d}.parquet.tmp"
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
            self.schema = self.schema or table.schema
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table, row_group_size=self.row_group)
        self._rows_in_shard += table.num_rows
        self.rows_written += table.num_rows

    def _finish_shard(self, info: dict[str, Any] | None = None) -> None:
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self._part(self._next))
        self._mark(self._next, {**(info or {}), "rows": self._rows_in_shard})
        self._writer, self._tmp, self._rows_in_shard = None, None, 0
        self._next += 1

    def _mark(self, i: int, info: dict[str, Any]) -> None:
        tmp = self.staging / f".{self._marker(i).name}.tmp"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self._marker(i))

    def write_shard(self, i: int, batches: Iterable[dict[str, Any]] | Iterable[pa.Table] | pa.Table,
                    info: Callable[[], dict[str, Any]] | None = None) -> int:
        """Write shard ``i`` whole from row dicts or Arrow tables and mark it done; returns its row count.

        ``info()``, called once the rows are written, adds to the marker what a later attempt that keeps this
        shard must know (generate: the requests it left unanswered)."""
        if self._writer is not None or self._buffer:
            raise RuntimeError("write_shard cannot be mixed with write() on one writer")
        if isinstance(batches, pa.Table):
            batches = [batches]
        self._next, buffer = i, []
        for item in batches:
            if isinstance(item, pa.Table):
                if buffer:
                    self._append(_to_table(buffer, self.schema))
                    buffer = []
                if item.num_rows:
                    self._append(item)
            else:
                buffer.append(item)
                if len(buffer) >= self.row_group:
                    self._append(_to_table(buffer, self.schema))
                    buffer = []
        if buffer or self._writer is None:
            self._append(_to_table(buffer, self.schema))  # an empty shard still says "done, nothing here"
        rows = self._rows_in_shard
        self._finish_shard(info() if info is not None else None)
        self._next = max(self.finished(), default=-1) + 1
        return rows

    def commit(self, extra: dict[str, Any] | None = None) -> Path:
        """Finish the last shard, write the manifest and switch the staging directory in at ``path``."""
        if self._committed:
            return self.path
        self._flush()
        if self._writer is not None:
            self._finish_shard()
        shards = []
        for i in self.finished():
            if not self._part(i).exists():
                raise DataError("shard marked done but missing; delete the staging directory and rerun",
                                file=str(self._part(i)))
            rows = json.loads(self._marker(i).read_text())["rows"]
            shards.append({"file": self._part(i).name, "rows": rows, "bytes": self._part(i).stat().st_size})
        if not shards:  # an empty table is still a table, with its columns
            self._append(_to_table([], self.schema))
            self._finish_shard()
            shards = [{"file": self._part(0).name, "rows": 0, "bytes": self._part(0).stat().st_size}]
        manifest = {"rows": sum(s["rows"] for s in shards), "shards": shards, "fingerprint": self.fingerprint,
                    "columns": list(self.schema.names) if self.schema is not None else [], **(extra or {})}
        tmp = self.staging / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.staging / MANIFEST)
        for m in [*self.staging.glob("_part-*.done"), self.staging / "_fingerprint"]:
            m.unlink()
        fsync_dir(self.staging)
        switch_in(self.staging, self.path)
        self.rows_written = manifest["rows"]  # shards kept from an earlier attempt included
        self._committed = True
        return self.path

    def abort(self) -> None:
        """Close an open shard file without marking it: a resuming attempt rewrites that shard and keeps the
        finished ones; an appending writer's staging is of no use to anyone and goes."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        if not self.resume and self.staging.exists():
            shutil.rmtree(self.staging)


def switch_in(staging: Path, path: Path) -> None:
    """Replace ``path`` (a file or a shard directory, or nothing) by ``staging`` with renames only.

    The old table goes to ``.<name>.old`` first; a crash in between leaves both names, which ``recover`` resolves.
    """
    old = path.parent / f".{path.name}.old"
    _remove(old)
    if path.exists():
        os.replace(path, old)
    os.replace(staging, path)
    fsync_dir(path.parent)
    _remove(old)


def recover(path: Path) -> None:
    """Finish or undo a switch that a kill interrupted: the new table is in place iff its manifest is complete."""
    old = path.parent / f".{path.name}.old"
    if old.exists() and not path.exists():
        os.replace(old, path)  # killed between the two renames: the previous table is still the table
    _remove(old)


# -- reading --------------------------------------------------------------------------------------------------------
class ShardReader:
    """A table on disk (one Parquet file, or a shard directory with its manifest) read in bounded batches."""

    def __init__(self, path: str | Path, *, name: str = "", producer: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name.removesuffix(".parquet")
        self.producer = producer  # the stage id that wrote it (lineage), None for a file given by the user
        if not self.path.exists():
            raise DataError("no such table", file=str(self.path))
        self._manifest: dict[str, Any] | None = None
        if self.path.is_dir():
            manifest = self.path / MANIFEST
            if not manifest.exists():
                raise DataError(f"shard directory without {MANIFEST}: not a finished table", file=str(self.path))
            try:
                self._manifest = json.loads(manifest.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataError(f"garbled manifest: {exc}; rerun the stage that wrote it", file=str(manifest)) from None

    def files(self) -> list[Path]:
        """The Parquet files of the table, in order."""
        if self._manifest is None:
            return [self.path]
        return [self.path / s["file"] for s in self._manifest["shards"]]

    @property
    def num_rows(self) -> int:
        if self._manifest is not None:
            return int(self._manifest["rows"])
        return self._open(self.path).metadata.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self._open(self.files()[0]).schema_arrow

    def _open(self, file: Path) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(file, pre_buffer=False)  # pre-buffering keeps every row group read (see readers)
        except Exception as exc:  # pyarrow raises several types for a truncated or non-Parquet file
            raise DataError(f"cannot read Parquet: {exc}", file=str(file)) from None

    def shard_batches(self, i: int, batch_size: int = ROW_GROUP, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of shard ``i`` only."""
        pf = self._open(self.files()[i])
        names = [c for c in columns if c in pf.schema_arrow.names] if columns else None
        yield from pf.iter_batches(batch_size=batch_size, columns=names)

    def record_batches(self, batch_size: int = ROW_GROUP, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of the whole table in order; ``columns`` limits what is read (absent ones skipped)."""
        for i in range(len(self.files())):
            yield from self.shard_batches(i, batch_size, columns)

    def batches(self, batch_size: int = ROW_GROUP, columns: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Row dicts a batch at a time (the reader protocol of ``ctx.input``)."""
        for batch in self.record_batches(batch_size, columns):
            yield batch.to_pylist()

    def rows(self, batch_size: int = ROW_GROUP, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Row dicts, one batch in memory at a time."""
        for batch in self.batches(batch_size, columns):
            yield from batch

    def identity(self) -> list[tuple[str, int, int]]:
        """(file, size, mtime in ns) of every shard: what a stage that read this table records in its fingerprint."""
        return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in self.files()]

    def to_pylist(self) -> list[dict[str, Any]]:
        return list(self.rows())

    def to_arrow(self) -> pa.Table:
        return pa.concat_tables([pa.Table.from_batches(list(self.shard_batches(i)), self.schema)
                                 for i in range(len(self))])

    def __len__(self) -> int:
        return len(self.files())


def shards_of(reader: Any) -> ShardReader:
    """A shard reader over any table reader's path (a single Parquet file is one shard)."""
    if isinstance(reader, ShardReader):
        return reader
    return ShardReader(reader.path, name=getattr(reader, "name", ""), producer=getattr(reader, "producer", None))


def map_shards(reader: ShardReader, writer: ShardWriter,
               fn: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], batch_size: int = ROW_GROUP,
               after: Callable[[pa.Table], None] | None = None) -> dict[str, int]:
    """Input shard i -> output shard i, ``fn`` applied a batch of rows at a time; shards already done are skipped
    (a killed stage resumes at its first unfinished shard). ``after`` sees each output batch as it is written.
    Returns counts of shards done now and reused."""
    reused = done = 0
    for i in range(len(reader)):
        if writer.done(i):
            reused += 1
            continue
        writer.write_shard(i, map_batches(reader.shard_batches(i, batch_size), fn, writer.schema, after))
        done += 1
    return {"shards": done, "shards_reused": reused}


def map_batches(batches: Iterable[pa.RecordBatch], fn: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
                schema: pa.Schema | None, after: Callable[[pa.Table], None] | None = None) -> Iterator[pa.Table]:
    """``fn`` over record batches as row dicts, each result as a table of ``schema`` (shown to ``after``)."""
    for b in batches:
        table = _to_table(fn(b.to_pylist()), schema)
        if after is not None:
            after(table)
        yield table


def _to_table(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.Table:
    from mathforge.store.tables import rows_to_table

    return rows_to_table(rows, schema)
