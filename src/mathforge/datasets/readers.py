"""Where rows come from: a JSONL/JSON/Parquet/CSV file, a directory of split files, a bundled sample, or the hub.

Every row carries its 0-based index in the source (the basis of stable ids) and, for text files, its 1-based line,
so that a bad row can be named exactly.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from mathforge.datasets.base import Loader
from mathforge.errors import ConfigError, DataError

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv")
KNOWN_SPLITS = ("train", "test", "validation", "valid", "val", "dev")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")

# name -> (file under mathforge/data, split its rows come from)
BUNDLED: dict[str, tuple[str, str]] = {
    "gsm8k-train-50": ("gsm8k_train_sample.jsonl", "train"),
    "arith-train": ("arith_train.jsonl", "train"),  # mathforge.synth.family.write_family(seed=0)
    "arith-test": ("arith_test.jsonl", "test"),
    "svamp-100": ("svamp_sample.json", "test"),  # the first 100 records of SVAMP.json (out-of-domain check)
}


@dataclass
class Row:
    """One raw record; ``error`` is set (and ``data`` is None) when the text could not be decoded."""

    index: int
    file: str
    line: int | None
    data: dict[str, Any] | None
    raw: str | None = None
    error: str | None = None


@dataclass
class Source:
    """A resolved input: which split it is (for ids) and how to read its rows."""

    split: str
    rows: Callable[[], Iterator[Row]]


def bundled_path(name: str) -> Path:
    """The path of a sample bundled with the package, e.g. ``bundled_path("gsm8k-train-50")``."""
    if name not in BUNDLED:
        raise ConfigError(f"no bundled sample '{name}'; bundled: {', '.join(sorted(BUNDLED))}")
    return Path(str(files("mathforge") / "data" / BUNDLED[name][0]))


def open_source(
    loader: Loader, path: str | Path | None, split: str | None, config: str | None, streaming: bool
) -> Source:
    """Resolve ``path`` (file, directory, ``bundled:NAME``, hub id, or None for the loader's hub id) to a Source."""
    if path is None:
        if not loader.hub_id:
            raise ConfigError(f"dataset '{loader.name}' has no default hub id: pass path= to a file or directory")
        configs = (config,) if config else loader.hub_configs
        return _hub_source(loader.hub_id, configs, split or loader.default_split, streaming)
    spec = str(path)
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        file = bundled_path(name)
        return _file_source([file], split or BUNDLED[name][1])
    if spec.startswith("hub:"):
        hub_id = spec.removeprefix("hub:")
        return _hub_source(hub_id, _configs_for(loader, hub_id, config), split or loader.default_split, streaming)
    p = Path(spec).expanduser()
    if p.is_file():
        return _file_source([p], split or split_of(p))
    if p.is_dir():
        found, chosen_split = _split_files(loader, p, split)
        return _file_source(found, chosen_split)
    if _HUB_ID.fullmatch(spec) and p.suffix.lower() not in SUFFIXES:
        configs = _configs_for(loader, spec, config)
        note = f"there is no local file or directory '{spec}', and "
        return _hub_source(spec, configs, split or loader.default_split, streaming, note)
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
    """The file(s) of one split in a directory: ``<split>.<ext>`` or hub-style shards ``[data/]<split>-*.parquet``."""
    name = split or loader.default_split
    for suffix in SUFFIXES:
        if (directory / f"{name}{suffix}").is_file():
            return [directory / f"{name}{suffix}"], name
    shards = sorted(directory.glob(f"{name}-*.parquet")) or sorted(directory.glob(f"data/{name}-*.parquet"))
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
        f"no file for split '{name}' (looked for {name}.jsonl/.json/.parquet/.csv and {name}-*.parquet); "
        f"found: {present}; pass split= or a file path",
        file=str(directory),
    )


def _file_source(paths: list[Path], split: str) -> Source:
    def rows() -> Iterator[Row]:
        index = 0
        for path in paths:
            for row in read_file(path, index):
                yield row
                index += 1

    return Source(split, rows)


def read_file(path: Path, start: int = 0) -> Iterator[Row]:
    """Rows of one file, chosen by suffix; ``start`` is the index of its first row (files of a sharded split)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, start)
    if suffix == ".json":
        return _read_json(path, start)
    if suffix == ".parquet":
        return _read_parquet(path, start)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, start, "\t" if suffix == ".tsv" else ",")
    raise DataError(f"unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}", file=str(path))


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


def _read_jsonl(path: Path, start: int) -> Iterator[Row]:
    index = start
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, 1):
            if text.strip():  # blank lines are not rows and do not shift ids
                yield _decode(text, index, str(path), line)
                index += 1


def _read_json(path: Path, start: int) -> Iterator[Row]:
    """A JSON array of objects (walked element by element to know each one's line), or JSON lines named .json."""
    text = path.read_text(encoding="utf-8")
    body = text.lstrip()
    if not body.startswith("["):
        yield from _read_jsonl(path, start)
        return
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
                    file=str(path),
                    line=line + text.count("\n", pos, nxt),
                )
            nxt = _skip_space(text, nxt + 1)
        line += text.count("\n", pos, nxt)
        try:
            data, end = decoder.raw_decode(text, nxt)
        except json.JSONDecodeError as exc:
            # An array cannot be resynchronised after a syntax error, so this is fatal even with on_bad_row=skip.
            raise DataError(f"bad JSON: {exc.msg} (column {exc.colno})", file=str(path), line=exc.lineno) from None
        yield _object_row(index, str(path), line, data, text[nxt:end])
        line += text.count("\n", nxt, end)
        pos, index = end, index + 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_parquet(path: Path, start: int) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet: {exc}", file=str(path)) from None
    index = start
    for batch in batches:
        for data in batch.to_pylist():
            yield Row(index, str(path), None, data)
            index += 1


def _read_csv(path: Path, start: int, delimiter: str) -> Iterator[Row]:
    index = start
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        while True:
            line = reader.line_num + 1  # a quoted field may span lines: report where the record starts
            try:
                data = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"bad CSV: {exc}", file=str(path), line=line) from None
            if None in data:
                yield Row(
                    index,
                    str(path),
                    line,
                    None,
                    raw=delimiter.join(map(str, data.values())),
                    error="more values than header columns",
                )
            else:
                yield Row(index, str(path), line, data)
            index += 1


def _hub_source(hub_id: str, configs: tuple[str | None, ...], split: str, streaming: bool, note: str = "") -> Source:
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
                yield Row(index, hub_id, None, dict(data))
                index += 1

    return Source(split, rows)
