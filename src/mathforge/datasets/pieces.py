"""A file source cut into pieces that workers read and parse apart: Parquet row groups, and line-aligned byte ranges
of JSONL and CSV files.

Each piece carries the source index of its first row and, for text, the number of lines before it, so that ids
(``dataset/split/index``) and error messages (file, line) made where a piece is parsed are the ones a local read
makes. The driver finds the cut points while the workers parse: a Parquet footer gives row counts; a JSONL file is
walked line by line (``jsonl_lines``, the reader's own definition of a line, without decoding); a CSV file is
tokenised by ``csv.reader`` (in C), which is what makes a cut safe: a cut falls only after a whole record, so a
quoted field spanning lines is never split. The pieces are produced lazily (``load`` with a ``limit`` reads no further
than it must).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generator

from mathforge.datasets.readers import (
    MAX_ROW_BYTES,
    Row,
    csv_delimiter,
    jsonl_lines,
    read_csv,
    read_jsonl,
    read_parquet,
    wide_csv_fields,
)
from mathforge.errors import DataError

# Bytes of text per piece: a task parses ~1-2k rows of a typical math dataset (tens of milliseconds, well above a
# task's overhead), and the driver holds at most 16 pieces' results.
PIECE_BYTES = 2 << 20


@dataclass(frozen=True)
class Piece:
    """One part of a file source: a Parquet row group (``group`` >= 0) or a byte range of a text file (``group`` -1)
    starting at byte ``begin`` after ``line`` lines; ``start`` is the source index of its first row and ``rows`` the
    number of rows it holds (None: up to the end of the file). ``header``: a CSV file's column names."""

    file: str
    group: int
    start: int
    rows: int | None
    begin: int = 0
    line: int = 0
    header: tuple[str, ...] | None = None
    stamp: tuple[int, int] | None = None  # the driver's file: (size, mtime_ns); a worker seeing another hands it back

    def same_file_here(self) -> bool:
        """Whether this process sees the file the piece was cut from (not absent, not another version of it)."""
        try:
            st = os.stat(self.file)
        except OSError:
            return False
        return self.stamp is None or (st.st_size, st.st_mtime_ns) == self.stamp


Scan = Generator[Piece, None, "int | None"]  # yields pieces, returns the file's row count (None: unknown past an error)


def source_pieces(paths: list[Path], max_row_bytes: int = MAX_ROW_BYTES, size: int | None = None) -> Iterator[Piece]:
    """The pieces of a source's files in order, each numbered from the rows of the files before it."""
    size = size or PIECE_BYTES
    start = 0
    for path in paths:
        # Stamped: a worker elsewhere (another working directory for a relative path, a node-local copy of another
        # version) must not cut the driver's byte ranges out of a different file. The path itself stays as given:
        # it names the file in error messages, as a local load does.
        st = path.stat()
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            scan = _parquet_pieces(path, start)
        elif suffix in (".csv", ".tsv"):
            scan = _csv_pieces(path, start, csv_delimiter(path), size)
        else:
            scan = _jsonl_pieces(path, start, max_row_bytes, size)
        count = yield from _stamped(scan, (st.st_size, st.st_mtime_ns))
        if count is None:  # the file's last piece ends in an error that stops any load reaching it
            return
        start += count


def _stamped(scan: Scan, stamp: tuple[int, int]) -> Scan:
    """``scan``'s pieces carrying their file's stamp, and its row count."""
    while True:
        try:
            piece = next(scan)
        except StopIteration as stop:
            return stop.value
        yield replace(piece, stamp=stamp)


def read_piece(piece: Piece, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Row]:
    """The rows of one piece, indexed and numbered by line as in the whole source."""
    path = Path(piece.file)
    suffix = path.suffix.lower()
    if piece.group >= 0:
        return read_parquet(path, piece.start, max_row_bytes, [piece.group])
    if suffix in (".csv", ".tsv"):
        return read_csv(path, piece.start, csv_delimiter(path), max_row_bytes, piece.begin,
                         piece.line, piece.rows, piece.header)
    return read_jsonl(path, piece.start, max_row_bytes, piece.begin, piece.line, piece.rows)


def _parquet_pieces(path: Path, start: int) -> Scan:
    """The row groups of a Parquet file (from its footer)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet: {exc}", file=str(path)) from None
    count = 0
    for g in range(meta.num_row_groups):
        rows = meta.row_group(g).num_rows
        yield Piece(str(path), g, start + count, rows)
        count += rows
    return count


def _jsonl_pieces(path: Path, start: int, max_row_bytes: int, size: int) -> Scan:
    """Byte ranges of about ``size`` bytes, each ending after a row (blank lines are not rows)."""
    file, count = str(path), 0
    begin = pos = line = lines = rows = 0  # the open piece: its first byte, lines before it, its rows
    with path.open("rb") as fh:
        for chunk, taken, oversized in jsonl_lines(fh, max_row_bytes):
            if rows and pos - begin >= size:
                yield Piece(file, -1, start + count, rows, begin, line)
                count += rows
                begin, line, rows = pos, lines, 0
            pos += taken
            lines += 1
            if oversized is not None or not chunk.isspace():
                rows += 1
    if rows:
        yield Piece(file, -1, start + count, None, begin, line)
    return count + rows


def _csv_pieces(path: Path, start: int, delimiter: str, size: int) -> Scan:
    """Ranges of about ``size`` bytes, each ending after a whole record (as ``csv.reader`` reads the file, so quoted
    fields spanning lines stay whole). A file that ``csv`` cannot read ends in a piece that runs to its end: reading
    that piece raises the local error at the local place."""
    file, count = str(path), 0
    pos = [0]

    def lines(fh: Any) -> Iterator[str]:
        for text in fh:  # newline="": the lines csv sees locally; their bytes counted back from the decoded text
            pos[0] += len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))
            yield text

    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(lines(fh), delimiter=delimiter)
        try:
            with wide_csv_fields():
                header = tuple(next(reader))
        except StopIteration:
            return 0
        except csv.Error:  # the header itself: the whole file in one piece, read as locally
            yield Piece(file, -1, start, None)
            return None
        begin, line, rows = pos[0], reader.line_num, 0
        while True:
            try:
                with wide_csv_fields():  # held only between pieces: the driver may read other CSV files meanwhile
                    while not (rows and pos[0] - begin >= size):
                        record = next(reader)
                        if record:  # csv.DictReader skips empty records: they are not rows
                            rows += 1
            except StopIteration:
                break
            except csv.Error:
                yield Piece(file, -1, start + count, None, begin, line, header)
                return None
            yield Piece(file, -1, start + count, rows, begin, line, header)
            count += rows
            begin, line, rows = pos[0], reader.line_num, 0
    if rows:
        yield Piece(file, -1, start + count, None, begin, line, header)
    return count + rows
