"""Bad input data, in every file format: each case is an error naming file, line (or row) and field, or with
``on_bad_row: skip`` a reject with that reason; nothing bad becomes a gold answer, and nothing good is lost."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathforge.datasets import load
from mathforge.datasets.readers import MAX_ROW_BYTES
from mathforge.datasets.stage import LoadConfig
from mathforge.errors import DataError
from mathforge.pipeline.builtin import LoadStage
from mathforge.store import read_rows

FORMATS = ["jsonl", "json", "csv", "parquet"]
GOOD = {"question": "Tom has 2 apples and gets 3 more. How many?", "answer": "2 + 3 = 5 #### 5"}


def write(tmp_path: Path, fmt: str, rows: list[dict[str, Any]], name: str = "train") -> Path:
    """The rows as a file of format ``fmt`` (CSV cells are written as text, as a CSV would hold them)."""
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["question", "answer"])
            writer.writeheader()
            writer.writerows({k: str(v) for k, v in r.items()} for r in rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def where(fmt: str, index: int, path: Path) -> str:
    """How an error names the record at 0-based ``index`` of ``path`` written by ``write``."""
    if fmt == "parquet":
        return f"{path}, row {index + 1}"  # Parquet has no lines: 1-based row number
    line = {"jsonl": index + 1, "csv": index + 2, "json": 2 + 4 * index}[fmt]  # csv: header; json: indent=2 records
    return f"{path}, line {line}"


def load_all(path: Path, **kw: Any) -> list:
    return list(load("gsm8k", path, **kw))


# --- gold answers that are not what they seem ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_list_valued_answer_is_refused_not_stringified(tmp_path, fmt):
    path = write(tmp_path, fmt, [GOOD, {"question": "q?", "answer": ["#### 5"]}])
    with pytest.raises(DataError, match=r"expected text, got a list: \['#### 5'\]") as info:
        load_all(path)
    assert info.value.field == "answer" and str(info.value).startswith(where(fmt, 1, path))
    rejected: list = []
    problems = load_all(path, on_bad_row="skip", rejected=rejected)
    assert [p.answer for p in problems] == ["5"] and len(rejected) == 1  # never the gold "5']"


def test_list_column_in_parquet_is_refused(tmp_path):
    table = pa.table({"question": ["q?", "r?"], "answer": pa.array([["#### 5"], ["#### 6", "#### 7"]])})
    pq.write_table(table, tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"expected text, got a list") as info:
        load_all(tmp_path / "train.parquet")
    assert str(info.value).startswith(f"{tmp_path / 'train.parquet'}, row 1, field 'answer'")
    rejected: list = []
    assert load_all(tmp_path / "train.parquet", on_bad_row="skip", rejected=rejected) == [] and len(rejected) == 2


def test_list_valued_answer_in_csv_text_is_not_a_number(tmp_path):
    # A CSV holds only text: the Python repr of a list reaches the gold parser, which must not accept "5']".
    path = write(tmp_path, "csv", [GOOD, {"question": "q?", "answer": ["#### 5"]}])
    with pytest.raises(DataError, match=r"not a number: \"5'\]\"") as info:
        load_all(path)
    assert (info.value.line, info.value.field) == (3, "answer")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("gold", ["five", "5 apples", "nan", "x = 5"])
def test_gsm8k_gold_must_be_a_number(tmp_path, fmt, gold):
    path = write(tmp_path, fmt, [GOOD, {"question": "q?", "answer": f"so\n#### {gold}"}])
    with pytest.raises(DataError, match="after '####' is not a number") as info:
        load_all(path)
    assert info.value.field == "answer" and str(info.value).startswith(where(fmt, 1, path))


def test_generic_gsm8k_parser_checks_numbers_only_for_number_style(tmp_path):
    path = write(tmp_path, "jsonl", [GOOD, {"question": "q?", "answer": "#### five"}])
    with pytest.raises(DataError, match="not a number: 'five'"):
        list(load("generic", path, answer_parser="gsm8k"))
    latex = list(load("generic", path, answer_parser="gsm8k", answer_style="latex"))
    assert [p.answer for p in latex] == ["5", "five"]  # the user said these golds are not numbers


def test_numeric_gold_forms_still_accepted(tmp_path):
    rows = [{"question": f"q{i}?", "answer": f"#### {g}"} for i, g in enumerate(["1,000", "-3", "0.5", "+7"])]
    assert [p.answer for p in load_all(write(tmp_path, "jsonl", rows))] == ["1000", "-3", "0.5", "+7"]


# --- bytes that are not UTF-8 ----------------------------------------------------------------------------------------


def _non_utf8_file(tmp_path: Path, fmt: str) -> Path:
    """A good row, then a row whose question holds the byte 0xff, then a good row."""
    rows = [GOOD, {"question": "bad MARK here", "answer": "#### 1"}, {**GOOD, "question": "again?"}]
    path = write(tmp_path, fmt, rows)
    if fmt == "parquet":  # a string column holding invalid UTF-8, as a careless writer can produce
        column = pa.array([r["question"].encode().replace(b"MARK", b"\xff") for r in rows], pa.binary())
        table = pa.table({"question": column.view(pa.string()), "answer": [r["answer"] for r in rows]})
        pq.write_table(table, path)
    else:
        path.write_bytes(path.read_bytes().replace(b"MARK", b"\xff"))
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_utf8_byte_names_file_line_and_field(tmp_path, fmt):
    path = _non_utf8_file(tmp_path, fmt)
    with pytest.raises(DataError, match=r"not valid UTF-8 \(byte 0xff\)") as info:
        load_all(path)
    assert info.value.field == "question"
    assert str(info.value).startswith(where(fmt, 1, path) + ", field 'question'")


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_utf8_row_is_skipped_into_rejected_parquet(tmp_path, fmt):
    path = _non_utf8_file(tmp_path, fmt)
    run = tmp_path / "run"
    run.mkdir()
    cfg = LoadConfig(dataset="gsm8k", path=str(path), on_bad_row="skip")

    from mathforge.pipeline.context import RunContext

    with RunContext(run) as ctx:
        metrics = LoadStage().run(ctx, cfg)
        problems = ctx.problems()
    assert metrics == {"problems": 2, "rejected": 1}
    assert [p.id for p in problems] == ["gsm8k/train/0", "gsm8k/train/2"]  # ids keep their positions
    (reject,) = read_rows(run / "rejected.parquet")
    assert reject["stage"] == "load" and "not valid UTF-8 (byte 0xff)" in reject["reason"]
    assert reject["reason"].startswith(where(fmt, 1, path) + ", field 'question'")
    assert "\\xff" in reject["record"]  # the bad byte is kept, visibly escaped


def test_non_utf8_in_a_parquet_binary_column(tmp_path):
    table = pa.table({"question": pa.array([b"ok?", b"bad \xfe"], pa.binary()), "answer": ["#### 1", "#### 2"]})
    pq.write_table(table, tmp_path / "train.parquet")
    rejected: list = []
    problems = load_all(tmp_path / "train.parquet", on_bad_row="skip", rejected=rejected)
    assert [p.question for p in problems] == ["ok?"]  # a binary cell that is UTF-8 is text
    assert rejected[0][1].endswith("row 2, field 'question': not valid UTF-8 (byte 0xfe)")


# --- empty sources ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content",
    [
        ("train.jsonl", b""),
        ("train.jsonl", b"\n\n  \n"),
        ("train.json", b""),
        ("train.json", b"[ ]"),
        ("train.csv", b""),
        ("train.csv", b"question,answer\n"),
    ],
)
def test_empty_text_source_is_an_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    for mode in ("error", "skip"):
        with pytest.raises(DataError, match="holds no rows") as info:
            load_all(path, on_bad_row=mode)
        assert info.value.file == str(path)


def test_empty_parquet_and_empty_shards_are_an_error(tmp_path):
    empty = pa.table({"question": pa.array([], pa.string()), "answer": pa.array([], pa.string())})
    pq.write_table(empty, tmp_path / "train.parquet")
    with pytest.raises(DataError, match="holds no rows"):
        load_all(tmp_path / "train.parquet")
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        pq.write_table(empty, shards / f"train-0000{i}-of-00002.parquet")
    with pytest.raises(DataError, match="train-00000-of-00002.parquet, .*train-00001-of-00002.parquet: .*no rows"):
        load_all(shards)


def test_offset_past_the_end_is_not_an_empty_source(tmp_path):
    assert load_all(write(tmp_path, "jsonl", [GOOD]), offset=5) == []


# --- oversized rows -----------------------------------------------------------------------------------------------


def test_the_documented_default_limit():
    assert MAX_ROW_BYTES == 1 << 20 and LoadConfig(dataset="gsm8k").max_row_bytes == MAX_ROW_BYTES
    assert "1 MiB" in LoadConfig.model_fields["max_row_bytes"].description


def test_a_60_mb_row_is_rejected_without_holding_it_in_memory(tmp_path):
    path = tmp_path / "train.jsonl"
    huge = {"question": "x" * (60 << 20), "answer": "#### 1"}
    with path.open("w") as fh:
        fh.write(json.dumps(GOOD) + "\n" + json.dumps(huge) + "\n" + json.dumps(GOOD) + "\n")
    size = len(json.dumps(huge))
    del huge
    with pytest.raises(DataError, match=rf"row is {size:,} bytes, over the limit of 1,048,576") as info:
        load_all(path)
    assert info.value.line == 2
    rejected: list = []
    tracemalloc.start()
    try:
        problems = load_all(path, on_bad_row="skip", rejected=rejected)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [p.id for p in problems] == ["gsm8k/train/0", "gsm8k/train/2"]
    assert peak < 8 << 20  # read in bounded chunks: a few MiB, not 60
    (record, reason), = rejected
    assert reason.startswith(f"{path}, line 2: row is") and len(record["raw"]) < 300  # a preview, not 60 MB


@pytest.mark.parametrize("fmt", FORMATS)
def test_oversized_row_in_every_format(tmp_path, fmt):
    big = {"question": "y" * 3000, "answer": "#### 2"}
    path = write(tmp_path, fmt, [GOOD, big, GOOD])
    with pytest.raises(DataError, match="over the limit of 2,000 .max_row_bytes.") as info:
        load_all(path, max_row_bytes=2000)
    assert str(info.value).startswith(where(fmt, 1, path))
    rejected: list = []
    problems = load_all(path, max_row_bytes=2000, on_bad_row="skip", rejected=rejected)
    assert [p.id for p in problems] == ["gsm8k/train/0", "gsm8k/train/2"] and len(rejected) == 1
    assert len(load_all(path)) == 3  # under the default limit the same row is fine


def test_csv_field_longer_than_the_csv_module_limit(tmp_path):
    # The csv module stops at fields over 128 KiB; a long row is measured against max_row_bytes instead.
    path = write(tmp_path, "csv", [GOOD, {"question": "z" * 200_000 + "?", "answer": "#### 1"}, GOOD])
    assert [p.question[-1] for p in load_all(path)] == ["?", "?", "?"]
    rejected: list = []
    assert len(load_all(path, max_row_bytes=100_000, on_bad_row="skip", rejected=rejected)) == 2
    assert ", line 3: row is 200," in rejected[0][1]
    assert csv.field_size_limit() == 131072  # the process-wide csv limit is put back


def test_load_stage_config_passes_the_limit(tmp_path):
    path = write(tmp_path, "jsonl", [GOOD, {"question": "w" * 500, "answer": "#### 3"}])
    cfg = LoadConfig(dataset="gsm8k", path=str(path), max_row_bytes=400, on_bad_row="skip")
    from mathforge.datasets.stage import run_load_stage

    problems, rejected = run_load_stage(cfg)
    assert len(problems) == 1 and "over the limit of 400" in rejected[0][1]
