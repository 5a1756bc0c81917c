"""``load()``: read a dataset into normalised Problems, failing on or setting aside bad rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mathforge.datasets.base import Loader, RowError
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
    **options: Any,
) -> Iterator[Problem]:
    """Yield the Problems of dataset ``name`` read from ``path`` (file, directory, ``bundled:NAME``, hub id, or None
    for the dataset's hub id).

    ``offset`` skips that many source rows; ``limit`` caps the Problems yielded. A bad row raises DataError naming
    file, line and field, or with ``on_bad_row="skip"`` is appended to ``rejected`` as ``(raw_row, reason)``.
    ``config`` is the hub config name; ``options`` go to the loader (the field mapping of ``generic``).
    A row of more than ``max_row_bytes`` bytes is a bad row; a source without any row is an error.
    Name, path and options are checked here, before the first row is read.
    """
    if on_bad_row not in ("error", "skip"):
        raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if (limit is not None and limit < 0) or offset < 0:
        raise ConfigError("limit and offset must not be negative")
    if max_row_bytes < 1:
        raise ConfigError("max_row_bytes must be positive")
    loader = get_loader(name, **options)
    source = open_source(loader, path, split, config, streaming=limit is not None, max_row_bytes=max_row_bytes)
    return _problems(loader, source, limit, offset, on_bad_row, rejected)


def _problems(
    loader: Loader,
    source: Source,
    limit: int | None,
    offset: int,
    on_bad_row: OnBadRow,
    rejected: list[tuple[dict[str, Any], str]] | None,
) -> Iterator[Problem]:
    if limit == 0:
        return
    seen: dict[str, int] = {}  # id -> its line, or -(row number): never the row itself, so memory stays small
    yielded, read = 0, 0
    for row in source.rows():
        read += 1
        if row.index < offset:
            continue
        try:
            problem = _parse(loader, source, row, seen)
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


def _parse(loader: Loader, source: Source, row: Row, seen: dict[str, int]) -> Problem:
    if row.data is None:
        raise RowError(row.error or "undecodable row", field=row.field)
    problem = loader.parse(row.data, f"{loader.dataset}/{source.split}/{row.index}")
    if problem.id in seen:
        first = seen[problem.id]
        where = f"line {first}" if first > 0 else f"row {-first}"
        raise RowError(f"duplicate id '{problem.id}' (first at {where})", field=loader.id_field or "id")
    return problem


def _data_error(row: Row, exc: RowError) -> DataError:
    """A DataError naming file, line and field; rows without lines (Parquet, hub) are named by 1-based row number."""
    return DataError(exc.message, file=row.file, line=row.line, field=exc.field, row=row.index + 1)
