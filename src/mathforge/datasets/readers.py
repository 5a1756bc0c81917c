"""Where rows come from: a JSONL/JSON/Parquet/CSV file, a directory of split files, a bundled sample, or the hub.

Every row carries its 0-based index in the source (the basis of stable ids) and, for text files, its 1-based line,
so that a bad row can be named exactly. Rows that cannot be trusted (bad JSON, bytes that are not UTF-8, more than
``max_row_bytes``) come out as error rows, which the loader turns into an error or a reject.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from itertools import islice
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from mathforge.datasets.base import Loader
from mathforge.errors import ConfigError, DataError

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv")
# Files that can be cut into pieces read apart (a JSON array cannot: its elements are found by decoding from the start)
SPLITTABLE = (".jsonl", ".ndjson", ".parquet", ".csv", ".tsv")
SHARDED = (".parquet", ".jsonl", ".csv")  # a split in several files: [data/]<split>-*.<ext>, rows numbered across them
KNOWN_SPLITS = ("train", "test", "validation", "valid", "val", "dev")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
# A row larger than this is rejected: 1 MiB of text is past every model's context window, so such a row can only
# be a mistake (a whole file in one cell), and it would otherwise be carried through every stage.
MAX_ROW_BYTES = 1 << 20
_PREVIEW = 200  # characters of an oversized or undecodable row kept for the reject record
# What errors="surrogateescape" makes of a byte that is not UTF-8: found here, it names the field holding it.
_SURROGATE = re.compile("[\udc80-\udcff]")

# name -> (file under mathforge/data, split its rows come from)
BUNDLED: dict[str, tuple[str, str]] = {
    "gsm8k-train-50": ("gsm8k_train_sample.jsonl", "train"),
    "arith-train": ("arith_train.jsonl", "train"),  # mathforge.synth.family.write_family(seed=0)
    "arith-test": ("arith_test.jsonl", "test"),
    "svamp-100": ("svamp_sample.json", "test"),  # the first 100 records of SVAMP.json (out-of-domain check)
}


@dataclass
class Row:
    """One raw record; ``error`` is set (and ``data`` is None) when it cannot be used, ``field`` when one field is
    at fault; ``raw`` is then (a preview of) its text."""

    index: int
    file: str
    line: int | None
    data: dict[str, Any] | None
    raw: str | None = None
    error: str | None = None
    field: str | None = None


@dataclass
class Source:
    """A resolved input: which split it is (for ids), what it is called (for errors) and how to read its rows;
    ``pieces`` cuts it into parts that can be read apart, when it is made of local Parquet, JSONL or CSV files
    (``datasets/pieces.py``)."""

    split: str
    rows: Callable[[], Iterator[Row]]
    name: str = ""
    pieces: Callable[[], Iterator[Any]] | None = None


def bundled_path(name: str) -> Path:
    """The path of a sample bundled with the package, e.g. ``bundled_path("gsm8k-train-50")``."""
    if name not in BUNDLED:
        raise ConfigError(f"no bundled sample '{name}'; bundled: {', '.join(sorted(BUNDLED))}")
    return Path(str(files("mathforge") / "data" / BUNDLED[name][0]))


def open_source(
    loader: Loader,
    path: str | Path | None,
    split: str | None,
    config: str | None,
    streaming: bool,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> Source:
    """Resolve ``path`` (file, directory, ``bundled:NAME``, hub id, or None for the loader's hub id) to a Source."""
    if path is None:
        if not loader.hub_id:
            raise ConfigError(f"dataset '{loader.name}' has no default hub id: pass path= to a file or directory")
        configs = (config,) if config else loader.hub_configs
        return _hub_source(loader.hub_id, configs, split or loader.default_split, streaming, max_row_bytes)
    spec = str(path)
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        file = bundled_path(name)
        return _file_source([file], split or BUNDLED[name][1], max_row_bytes)
    if spec.startswith("hub:"):
        hub_id = spec.removeprefix("hub:")
        configs = _configs_for(loader, hub_id, config)
        return _hub_source(hub_id, configs, split or loader.default_split, streaming, max_row_bytes)
    p = Path(spec).expanduser()
    if p.is_file():
        return _file_source([p], split or split_of(p), max_row_bytes)
    if p.is_dir():
        found, chosen_split = _split_files(loader, p, split)
        return _file_source(found, chosen_split, max_row_bytes)
    if _HUB_ID.fullmatch(spec) and p.suffix.lower() not in SUFFIXES:
        configs = _configs_for(loader, spec, config)
        note = f"there is no local file or directory '{spec}', and "
        return _hub_source(spec, configs, split or loader.default_split, streaming, max_row_bytes, note)
    raise DataError("no such file or directory", file=spec)


def split_of(path: Path) -> str:
    """The split a file holds, from its name ("train.jsonl", "gsm8k_train_sample.jsonl" -> "train"), else its stem."""
    for token in re.split(r"[^a-z0-9]+", path.stem.lower()):
        if token in KNOWN_SPLITS:
            return token
    return path.stem


def _configs_for(loader: Loader, hub_id: str, config: str | None) -> tuple[str | None, ...]:
    if config:
        return (config,)
    return loader.hub_configs if hub_id == loader.hub_id else (None,)


def _split_files(loader: Loader, directory: Path, split: str | None) -> tuple[list[Path], str]:
    """The file(s) of one split in a directory: ``<split>.<ext>`` or hub-style shards ``[data/]<split>-*.parquet``
    (or numbered ``<split>-NNNNN….jsonl`` / ``.csv``: ``train-v1.jsonl`` and ``train-v2.jsonl`` are two versions of
    a split, not its shards)."""
    name = split or loader.default_split
    for suffix in SUFFIXES:
        if (directory / f"{name}{suffix}").is_file():
            return [directory / f"{name}{suffix}"], name
    for suffix in SHARDED:  # one kind of shard per split: Parquet first, as hub snapshots hold
        pattern = f"{name}-*{suffix}" if suffix == ".parquet" else f"{name}-[0-9]*{suffix}"
        shards = sorted(directory.glob(pattern)) or sorted(directory.glob(f"data/{pattern}"))
        if shards:
            return shards, name
    data_files = sorted(f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
    if split is None:
        for file_name in loader.file_names:
            if (directory / file_name).is_file():
                return [directory / file_name], split_of(directory / file_name)
        if len(data_files) == 1:
            return data_files, split_of(data_files[0])
    present = ", ".join(f.name for f in data_files) or "no data files"
    raise DataError(
        f"no file for split '{name}' (looked for {name}.jsonl/.json/.parquet/.csv and "
        f"{name}-*.parquet, {name}-<number>*.jsonl/.csv); found: {present}; pass split= or a file path",
        file=str(directory),
    )


def _file_source(paths: list[Path], split: str, max_row_bytes: int = MAX_ROW_BYTES) -> Source:
    def rows() -> Iterator[Row]:
        index = 0
        for path in paths:
            for row in read_file(path, index, max_row_bytes):
                yield row
                index += 1

    pieces = None
    if paths and all(p.suffix.lower() in SPLITTABLE for p in paths):
        from mathforge.datasets.pieces import source_pieces

        pieces = lambda: source_pieces(paths, max_row_bytes)  # noqa: E731  (files are read only when asked)
    return Source(split, rows, ", ".join(map(str, paths)), pieces)


def read_file(path: Path, start: int = 0, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Row]:
    """Rows of one file, chosen by suffix; ``start`` is the index of its first row (files of a sharded split)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, start, max_row_bytes)
    if suffix == ".json":
        return _read_json(path, start, max_row_bytes)
    if suffix == ".parquet":
        return read_parquet(path, start, max_row_bytes)
    if suffix in (".csv", ".tsv"):
        return read_csv(path, start, csv_delimiter(path), max_row_bytes)
    raise DataError(f"unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}", file=str(path))


def _too_big(index: int, file: str, line: int | None, size: int, limit: int, preview: str) -> Row:
    error = f"row is {size:,} bytes, over the limit of {limit:,} (max_row_bytes)"
    return Row(index, file, line, None, raw=preview[:_PREVIEW] + " …", error=error)


def _not_utf8(index: int, file: str, line: int | None, data: Any, raw: str) -> Row:
    """An error row for text holding bytes that are not UTF-8, naming the field that holds them when it can."""
    field = _surrogate_field(data) if isinstance(data, dict) else None
    match = _SURROGATE.search(raw)
    byte = f" (byte 0x{ord(match.group()) - 0xDC00:02x})" if match else ""
    shown = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return Row(index, file, line, None, raw=shown[:_PREVIEW], error=f"not valid UTF-8{byte}", field=field)


def _surrogate_field(data: dict[str, Any]) -> str | None:
    """The first key whose value (or the key itself) holds an undecodable byte."""
    for key, value in data.items():
        if _SURROGATE.search(key) or _SURROGATE.search(json.dumps(value, ensure_ascii=False, default=str)):
            return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def _decode(text: str, index: int, file: str, line: int) -> Row:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(index, file, line, None, raw=text.rstrip("\n"), error=f"bad JSON: {exc.msg} (column {exc.colno})")
    return _object_row(index, file, line, data, text.rstrip("\n"))


def _object_row(index: int, file: str, line: int, data: Any, raw: str) -> Row:
    """A Row for decoded JSON: a record must be an object."""
    if isinstance(data, dict):
        return Row(index, file, line, data)
    return Row(index, file, line, None, raw=raw, error=f"expected a JSON object, got {type(data).__name__}")


def csv_delimiter(path: Path) -> str:
    """A tab for ``.tsv`` files, else a comma."""
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_jsonl(path: Path, start: int, max_row_bytes: int = MAX_ROW_BYTES, begin: int = 0, line: int = 0,
               rows: int | None = None) -> Iterator[Row]:
    """Rows of a JSONL file; from byte ``begin`` (a line start, ``line`` lines into the file), at most ``rows`` (the
    line after the last of them is not read: it belongs to the next piece and may be an oversized one)."""
    return islice(_jsonl_rows(path, start, max_row_bytes, begin, line), rows)


def _jsonl_rows(path: Path, start: int, max_row_bytes: int, begin: int, line: int) -> Iterator[Row]:
    index, file = start, str(path)
    with path.open("rb") as fh:
        fh.seek(begin)
        for chunk, _, size in jsonl_lines(fh, max_row_bytes):
            line += 1
            if size is not None:
                yield _too_big(index, file, line, size, max_row_bytes, chunk[:_PREVIEW].decode("utf-8", "replace"))
                index += 1
                continue
            if not chunk.strip():  # blank lines are not rows and do not shift ids
                continue
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError:
                text = chunk.decode("utf-8", "surrogateescape")
                row = _decode(text, index, file, line)
                yield _not_utf8(index, file, line, row.data, text.rstrip("\n"))
            else:
                yield _decode(text, index, file, line)
            index += 1


def jsonl_lines(fh: Any, max_row_bytes: int) -> Iterator[tuple[bytes, int, int | None]]:
    """Each line of a binary file as (its bytes, at most ``max_row_bytes + 2`` of them; the bytes it took; its size
    without the line end when it is over the limit, else None). An oversized line is skipped in chunks, never held
    in memory whole. The one definition of a JSONL line, for the reader and for cutting a file into pieces."""
    while True:
        # +2: a line of exactly the limit keeps its CRLF whole (at +1 a lone "\n" would be read as the next line)
        chunk = fh.readline(max_row_bytes + 2)
        if not chunk:
            return
        taken = len(chunk)
        if len(chunk.rstrip(b"\r\n")) <= max_row_bytes:
            yield chunk, taken, None
            continue
        size, more = len(chunk), chunk
        while more and not more.endswith(b"\n"):
            more = fh.readline(1 << 20)
            size += len(more)
            taken += len(more)
        size -= len(more) - len(more.rstrip(b"\r\n"))
        yield chunk, taken, size


def _read_json(path: Path, start: int, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Row]:
    """A JSON array of objects (walked element by element to know each one's line), or JSON lines named .json."""
    data = path.read_bytes()
    body = data.lstrip()
    if not body.startswith(b"["):
        yield from read_jsonl(path, start, max_row_bytes)
        return
    try:
        text, clean = data.decode("utf-8"), True
    except UnicodeDecodeError:  # decode anyway and name the element and field that hold the bad bytes
        text, clean = data.decode("utf-8", "surrogateescape"), False
    del data, body
    file = str(path)
    decoder = json.JSONDecoder()
    pos, index = text.index("[") + 1, start
    line = 1 + text.count("\n", 0, pos)
    while True:
        nxt = _skip_space(text, pos)
        if nxt < len(text) and text[nxt] == "]":
            return
        if index > start:
            if nxt >= len(text) or text[nxt] != ",":
                raise DataError(
                    "bad JSON: expected ',' or ']' between array elements",
                    file=file,
                    line=line + text.count("\n", pos, nxt),
                )
            nxt = _skip_space(text, nxt + 1)
        line += text.count("\n", pos, nxt)
        try:
            value, end = decoder.raw_decode(text, nxt)
        except json.JSONDecodeError as exc:
            # An array cannot be resynchronised after a syntax error, so this is fatal even with on_bad_row=skip.
            raise DataError(f"bad JSON: {exc.msg} (column {exc.colno})", file=file, line=exc.lineno) from None
        raw = text[nxt:end]
        size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogateescape"))
        if size > max_row_bytes:
            yield _too_big(index, file, line, size, max_row_bytes, raw)
        elif not clean and _SURROGATE.search(raw):
            yield _not_utf8(index, file, line, value, raw)
        else:
            yield _object_row(index, file, line, value, raw)
        line += text.count("\n", nxt, end)
        pos, index = end, index + 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def value_bytes(value: Any) -> int:
    """About how many bytes a decoded value holds (exact for text): the measure of ``max_row_bytes``."""
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(value_bytes(k) + value_bytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(value_bytes(v) for v in value)
    return 8


def _checked(index: int, file: str, data: dict[str, Any], max_row_bytes: int) -> Row:
    """A Row for an already decoded record (Parquet, hub), rejected when it is over the size limit."""
    size = value_bytes(data)
    if size > max_row_bytes:
        return _too_big(index, file, None, size, max_row_bytes, json.dumps(data, default=str)[:_PREVIEW])
    return Row(index, file, None, data)


def read_parquet(path: Path, start: int, max_row_bytes: int = MAX_ROW_BYTES,
                 row_groups: list[int] | None = None) -> Iterator[Row]:
    """Rows of a Parquet file (of some of its row groups), a batch of 1,024 decoded at a time."""
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False: with it, pyarrow keeps every row group iter_batches has read (300 MB after 300k
        # NuminaMath rows), so memory would grow with the file instead of staying at one row group
        batches = pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=1024, row_groups=row_groups)
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet: {exc}", file=str(path)) from None
    index, file = start, str(path)
    for batch in batches:
        try:
            records = batch.to_pylist()
        except UnicodeDecodeError:  # a string column holds bytes that are not UTF-8 (pyarrow does not check)
            yield from _parquet_rows_checked(batch, index, file, max_row_bytes)
            index += batch.num_rows
            continue
        for data in records:
            yield _checked(index, file, data, max_row_bytes)
            index += 1


def _parquet_rows_checked(batch: Any, start: int, file: str, max_row_bytes: int) -> Iterator[Row]:
    """The rows of a batch decoded cell by cell, so that a cell that is not UTF-8 names its row and column."""
    for offset in range(batch.num_rows):
        data, bad = {}, None
        for name, column in zip(batch.schema.names, batch.columns):
            try:
                data[name] = column[offset].as_py()
            except UnicodeDecodeError as exc:
                bad = (name, exc)
                break
        if bad is None:
            yield _checked(start + offset, file, data, max_row_bytes)
            continue
        name, exc = bad
        byte = exc.object[exc.start : exc.start + 1].hex()
        raw = exc.object[:_PREVIEW].decode("utf-8", "backslashreplace")
        yield Row(start + offset, file, None, None, raw=raw, error=f"not valid UTF-8 (byte 0x{byte})", field=name)


def read_csv(path: Path, start: int, delimiter: str, max_row_bytes: int = MAX_ROW_BYTES, begin: int = 0,
             line: int = 0, rows: int | None = None, header: tuple[str, ...] | None = None) -> Iterator[Row]:
    """Rows of a CSV file; from byte ``begin`` (a record start, ``line`` lines into the file; ``header``: the
    file's column names, read from its first record when None), at most ``rows``."""
    index, file = start, str(path)
    with wide_csv_fields(), path.open("rb") as raw:
        raw.seek(begin)
        # surrogateescape: a byte that is not UTF-8 becomes a marker, found below in the field that holds it.
        fh = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(fh, delimiter=delimiter)
        if header is None:
            try:
                header = tuple(next(reader, []))
            except csv.Error as exc:
                raise DataError(f"bad CSV: {exc}", file=file, line=line + 1) from None
        names = list(header)
        while rows is None or index - start < rows:
            try:
                while True:  # blank records are not rows (as csv.DictReader skips them)
                    at = line + reader.line_num + 1  # where the record starts: after blank lines, quoted newlines
                    record = next(reader)
                    if record:
                        break
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"bad CSV: {exc}", file=file, line=at) from None
            yield _csv_row(index, file, at, _as_dict(names, record), delimiter, max_row_bytes)
            index += 1


def _as_dict(names: list[str], record: list[str]) -> dict[Any, Any]:
    """A record by column name, as ``csv.DictReader`` makes it: extra fields under None, missing ones None."""
    data: dict[Any, Any] = dict(zip(names, record))
    if len(record) > len(names):
        data[None] = record[len(names):]
    for name in names[len(record):]:
        data[name] = None
    return data


@contextlib.contextmanager
def wide_csv_fields() -> Iterator[None]:
    """csv's own field limit (128 KiB) would stop the whole file at one long field; rows are measured by
    ``max_row_bytes`` instead, so an oversized row is a bad row like any other. The process-wide limit is put back
    when reading ends."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(limit)


def _csv_row(index: int, file: str, line: int, data: dict[Any, Any], delimiter: str, max_row_bytes: int) -> Row:
    raw = delimiter.join(v if isinstance(v, str) else delimiter.join(v or []) for v in data.values())
    if None in data:
        return Row(index, file, line, None, raw=raw, error="more values than header columns")
    if _SURROGATE.search(raw) or any(_SURROGATE.search(k) for k in data if isinstance(k, str)):
        return _not_utf8(index, file, line, data, raw)
    size = value_bytes(raw)
    if size > max_row_bytes:
        return _too_big(index, file, line, size, max_row_bytes, raw)
    return Row(index, file, line, data)


def _hub_source(
    hub_id: str,
    configs: tuple[str | None, ...],
    split: str,
    streaming: bool,
    max_row_bytes: int = MAX_ROW_BYTES,
    note: str = "",
) -> Source:
    """Open every config eagerly, so an offline or missing hub dataset fails at load() rather than mid-iteration."""
    import datasets  # Hugging Face datasets (absolute import), loaded only when the hub is used

    parts = []
    for config in configs:
        try:
            parts.append(datasets.load_dataset(hub_id, config, split=split, streaming=streaming))
        except Exception as exc:  # offline, unknown repo, unknown split/config: all end in the same advice
            label = f"{hub_id!r} (" + (f"config {config!r}, " if config else "") + f"split {split!r})"
            raise ConfigError(
                f"{note}could not load {label} from the Hugging Face hub: {type(exc).__name__}: {exc}. "
                "If you are offline or the hub is unreachable, pass path= to a local file or directory "
                "(JSONL, JSON, Parquet or CSV)."
            ) from None

    def rows() -> Iterator[Row]:
        index = 0
        for part in parts:
            for data in part:
                yield _checked(index, hub_id, dict(data), max_row_bytes)
                index += 1

    return Source(split, rows, hub_id)
