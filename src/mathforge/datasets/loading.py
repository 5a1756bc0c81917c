"""``load()``: read a dataset into normalised Problems, failing on or setting aside bad rows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice, tee
from pathlib import Path
from typing import Any, Literal

from mathforge.datasets.base import Loader, RowError
from mathforge.datasets.pieces import Piece, read_piece
from mathforge.datasets.readers import MAX_ROW_BYTES, Row, Source, open_source
from mathforge.datasets.registry import get_loader
from mathforge.errors import ConfigError, DataError
from mathforge.records import Problem

log = logging.getLogger(__name__)
OnBadRow = Literal["error", "skip"]


def load(
    name: str,
    path: str | Path | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    on_bad_row: OnBadRow = "error",
    rejected: list[tuple[dict[str, Any], str]] | None = None,
    config: str | None = None,
    max_row_bytes: int = MAX_ROW_BYTES,
    imap: Callable[[Callable[[Piece], Any], Iterable[Piece]], Iterator[Any]] | None = None,
    **options: Any,
) -> Iterator[Problem]:
    """Yield the Problems of dataset ``name`` read from ``path`` (file, directory, ``bundled:NAME``, hub id, or None
    for the dataset's hub id).

    ``offset`` skips that many source rows; ``limit`` caps the Problems yielded. A bad row raises DataError naming
    file, line and field, or with ``on_bad_row="skip"`` is appended to ``rejected`` as ``(raw_row, reason)``.
    ``config`` is the hub config name; ``options`` go to the loader (the field mapping of ``generic``).
    A row of more than ``max_row_bytes`` bytes is a bad row; a source without any row is an error.
    Name, path and options are checked here, before the first row is read. ``imap``: an executor's ordered map, which
    reads and parses the pieces of local Parquet, JSONL and CSV files where it runs them (Parquet row groups, byte
    ranges of text: ``datasets/pieces.py``; the same Problems, in the same order).
    """
    if on_bad_row not in ("error", "skip"):
        raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if (limit is not None and limit < 0) or offset < 0:
        raise ConfigError("limit and offset must not be negative")
    if max_row_bytes < 1:
        raise ConfigError("max_row_bytes must be positive")
    loader = get_loader(name, **options)
    source = open_source(loader, path, split, config, streaming=limit is not None, max_row_bytes=max_row_bytes)
    return _problems(loader, source, limit, offset, on_bad_row, rejected, imap, max_row_bytes)


Parsed = tuple[Row, "Problem | RowError | None"]  # None: a row before ``offset``, not parsed


def _problems(
    loader: Loader,
    source: Source,
    limit: int | None,
    offset: int,
    on_bad_row: OnBadRow,
    rejected: list[tuple[dict[str, Any], str]] | None,
    imap: Any,
    max_row_bytes: int,
) -> Iterator[Problem]:
    if limit == 0:
        return
    seen: dict[str, int] = {}  # id -> its line, or -(row number): never the row itself, so memory stays small
    yielded, read = 0, 0
    # Iterated in place (never held in a variable): a bad row's error must not keep the reader open (a CSV reader
    # puts the process-wide field limit back when it is closed).
    for row, outcome in _parsed(loader, source, offset, imap, max_row_bytes):
        read += 1
        if row.index < offset:
            continue
        try:
            problem = _unique(loader, outcome, seen)
        except RowError as exc:
            error = _data_error(row, exc)
            if on_bad_row == "error":
                raise error from None
            log.warning("skipped: %s", error)
            if rejected is not None:
                rejected.append((row.data if row.data is not None else {"raw": row.raw}, str(error)))
            continue
        seen[problem.id] = row.line if row.line is not None else -(row.index + 1)
        yielded += 1
        yield problem
        if yielded == limit:
            return  # before reading another row: a streamed hub dataset fetches no more than it must
    if read == 0:
        # An empty file is almost always a mistake (a failed download, a wrong path): never a silent 0 problems.
        raise DataError("the source holds no rows (empty file)", file=source.name or None)


def _parsed(loader: Loader, source: Source, offset: int, imap: Any, max_row_bytes: int) -> Iterator[Parsed]:
    """Each row with its parse: here, row by row; or, for a source cut into pieces (Parquet row groups, ranges of
    JSONL and CSV files), where ``imap`` runs them (the rows before ``offset`` of a piece still come back, unparsed,
    so that a source is never mistaken for an empty one)."""
    pieces = source.pieces() if imap is not None and source.pieces is not None else iter(())
    first = list(islice(pieces, 2))
    if len(first) < 2:  # nothing to spread
        for row in source.rows():
            yield row, (None if row.index < offset else parse_row(loader, source.split, row))
        return
    parser = PieceParser(loader, source.split, offset, max_row_bytes)
    # The driver keeps the pieces in flight (tee holds them until their results come back, in order).
    sent, kept = tee(chain(first, pieces))
    for piece, got in zip(kept, imap(parser, sent)):
        for row, outcome in (got if got is not None else parser.here(piece)):
            if row is None:  # the piece ended in an error that stops the load (bad CSV), where the local read does
                raise DataError(outcome[0], **outcome[1])
            yield row, (RowError(*outcome) if isinstance(outcome, tuple) else outcome)


class PieceParser:
    """Read and parse one piece of a source (a picklable callable: the Ray executor ships it to workers once)."""

    def __init__(self, loader: Loader, split: str, offset: int, max_row_bytes: int):
        self.loader, self.split, self.offset, self.max_row_bytes = loader, split, offset, max_row_bytes

    def __call__(self, piece: Piece) -> list[tuple[Row | None, Any]] | None:
        """The rows with their Problem, (message, field) of their RowError, or None before the offset, and a last
        (None, error) when reading stopped at an error; None when this worker cannot see the file, or sees another
        version of it (then the driver reads the piece itself)."""
        if not piece.same_file_here():
            return None
        return self.here(piece)

    def here(self, piece: Piece) -> list[tuple[Row | None, Any]]:
        out: list[tuple[Row | None, Any]] = []
        try:
            for row in read_piece(piece, self.max_row_bytes):
                if row.index < self.offset:
                    out.append((row, None))
                    continue
                try:
                    out.append((row, parse_row(self.loader, self.split, row)))
                except RowError as exc:  # sent as a tuple: the exception's field would not survive pickling
                    out.append((row, (exc.message, exc.field)))
        except DataError as exc:  # the rows before it still count (a limit may end the load before the error)
            out.append((None, (exc.detail, {"file": exc.file, "line": exc.line, "field": exc.field, "row": exc.row})))
        return out


def parse_row(loader: Loader, split: str, row: Row) -> Problem | RowError:
    """The row's Problem, or the RowError saying why it has none (a pure function of the row)."""
    if row.data is None:
        return RowError(row.error or "undecodable row", field=row.field)
    try:
        return loader.parse(row.data, f"{loader.dataset}/{split}/{row.index}")
    except RowError as exc:
        return exc


def _unique(loader: Loader, outcome: Problem | RowError | None, seen: dict[str, int]) -> Problem:
    """The parsed Problem, unless it failed to parse or repeats an earlier id (RowError)."""
    if isinstance(outcome, RowError):
        raise outcome
    assert outcome is not None
    if outcome.id in seen:
        first = seen[outcome.id]
        where = f"line {first}" if first > 0 else f"row {-first}"
        raise RowError(f"duplicate id '{outcome.id}' (first at {where})", field=loader.id_field or "id")
    return outcome


def _data_error(row: Row, exc: RowError) -> DataError:
    """A DataError naming file, line and field; rows without lines (Parquet, hub) are named by 1-based row number."""
    return DataError(exc.message, file=row.file, line=row.line, field=exc.field, row=row.index + 1)
