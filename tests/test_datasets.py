"""Dataset loaders: each built-in on real fixture rows, gold parsing, bad rows, generic files, hub errors, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mathforge.cli.datasets import app
from mathforge.datasets import bundled_path, get_loader, list_datasets, load
from mathforge.datasets.answers import gsm8k_gold, last_boxed, number_text
from mathforge.datasets.mathqa import parse_options
from mathforge.datasets.stage import LoadConfig, run_load_stage
from mathforge.errors import ConfigError, DataError

FIX = Path(__file__).parent / "fixtures" / "datasets"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- gold parsers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, gold",
    [
        (r"so $x=\boxed{\frac{\sqrt{3}}{12}}$.", r"\frac{\sqrt{3}}{12}"),
        (r"first \boxed{1}, finally \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"the set is \boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),
        (r"our answer is $\boxed 2$.", "2"),
        (r"\boxed{}", None),
        (r"\boxed{\frac{1}{2}", None),
        ("no box here", None),
    ],
)
def test_last_boxed(text, gold):
    assert last_boxed(text) == gold


@pytest.mark.parametrize(
    "text, gold",
    [("... #### 72", "72"), ("#### 1,000", "1000"), ("a #### 1 #### -3,500", "-3500"), ("72", None), ("#### ", None)],
)
def test_gsm8k_gold(text, gold):
    assert gsm8k_gold(text) == gold


@pytest.mark.parametrize(
    "value, text",
    [
        (51.0, "51"),
        (0.5, "0.5"),
        (7, "7"),
        ("1,000", "1000"),
        ("12345678901234567890", "12345678901234567890"),
        ("abc", None),
        (True, None),
        (float("nan"), None),
    ],
)
def test_number_text(value, text):
    assert number_text(value) == text


# --- built-in loaders on real rows ----------------------------------------------------------------------------------


def test_gsm8k_directory_file_and_splits():
    train = list(load("gsm8k", FIX / "gsm8k"))
    assert [p.id for p in train] == ["gsm8k/train/0", "gsm8k/train/1", "gsm8k/train/2"]
    assert [p.answer for p in train] == ["72", "10", "1080"]  # "#### 1,080" loses its comma
    assert train[0].question.startswith("Natalia sold clips") and train[0].solution.endswith("#### 72")
    assert train[0].source == "gsm8k" and train[0].meta["answer_style"] == "number"
    test = list(load("gsm8k", FIX / "gsm8k", split="test"))
    assert [p.id for p in test] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert [p.id for p in load("gsm8k", FIX / "gsm8k" / "test.jsonl")] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert [p.id for p in load("gsm8k", FIX / "gsm8k", offset=1, limit=1)] == ["gsm8k/train/1"]


def test_bundled_sample_is_the_first_50_train_rows():
    problems = list(load("gsm8k", "bundled:gsm8k-train-50"))
    assert len(problems) == 50 and problems[-1].id == "gsm8k/train/49"
    first = list(load("gsm8k", FIX / "gsm8k" / "train.jsonl", limit=2))
    assert [p.to_row() for p in problems[:2]] == [p.to_row() for p in first]
    attribution = (bundled_path("gsm8k-train-50").parent / "ATTRIBUTION.md").read_text()
    assert "MIT" in attribution and "Copyright (c) 2021 OpenAI" in attribution
    with pytest.raises(ConfigError, match="gsm8k-train-50"):
        bundled_path("nope")


def test_math_boxed_gold_level_type_and_file_ids():
    problems = {p.id: p for p in load("math", FIX / "math")}
    assert list(problems) == [
        "math/train/algebra/0.json",
        "math/train/algebra/654.json",
        "math/train/algebra/24014.json",
        "math/train/number_theory/7115.json",
    ]
    p = problems["math/train/algebra/654.json"]
    assert p.answer == r"\frac{\sqrt{3}}{12}"
    assert p.meta["type"] == "Algebra" and isinstance(p.meta["level"], int)
    assert problems["math/train/algebra/24014.json"].answer == "2"  # "\boxed 2"
    errata = problems["math/train/number_theory/7115.json"]
    assert errata.answer == r"\text{(A)}" and errata.meta["gold_from"].startswith("errata")
    assert get_loader("math").prompt == "cot-boxed"


def test_math_without_box_is_a_bad_row(tmp_path):
    row = {"problem": "1+1?", "solution": "It is 2.", "level": "Level 1", "type": "Algebra"}
    bad = write_jsonl(tmp_path / "train.jsonl", [json.dumps(row)])
    with pytest.raises(DataError) as info:
        list(load("math", bad))
    assert info.value.line == 1 and info.value.field == "solution"


def test_math500_uses_answer_column_and_unique_id():
    problems = list(load("math500", FIX / "math500"))
    assert problems[0].id == "math500/test/precalculus/807.json"
    assert problems[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert problems[0].meta["type"] == "Precalculus" and problems[0].meta["level"] == 2


def test_mathqa_choices_letter_and_value():
    problems = list(load("mathqa", FIX / "mathqa"))
    assert [p.answer for p in problems] == ["a", "b", "a"]
    assert problems[0].meta["choices"] == {"a": "12", "b": "16", "c": "18", "d": "24", "e": "26"}
    assert problems[0].meta["answer_value"] == "12"
    assert problems[1].meta["choices"]["b"] == "1215"  # "b ) b ) 1215": the repeated marker is dropped
    assert problems[2].meta["choices"]["e"] == "none"  # options given as a Python list literal
    assert not problems[0].solution.startswith('"')
    assert get_loader("mathqa").prompt == "cot-choice"
    assert parse_options("a ) rs . 1,200 , b ) 5") == {"a": "rs . 1,200", "b": "5"}


def test_mathqa_correct_letter_must_be_an_option(tmp_path):
    row = {"problem": "x?", "options": "a ) 1 , b ) 2", "correct": "e"}
    with pytest.raises(DataError, match="correct option 'e'") as info:
        list(load("mathqa", write_jsonl(tmp_path / "test.jsonl", [json.dumps(row)])))
    assert info.value.field == "correct"


def test_svamp_body_question_numeric_answer_and_ids():
    problems = list(load("svamp", FIX / "svamp"))  # the directory holds SVAMP.json, not <split>.json
    assert [p.id for p in problems] == ["svamp/chal-1", "svamp/chal-2", "svamp/chal-3"]
    assert problems[0].question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert problems[0].answer == "51" and problems[0].meta["Equation"] == "( 76.0 - 25.0 )"


def test_json_array_errors_name_the_line_of_the_record(tmp_path):
    records = json.loads((FIX / "svamp" / "SVAMP.json").read_text())
    del records[1]["Question"]
    path = tmp_path / "SVAMP.json"
    path.write_text(json.dumps(records, indent=4))
    record_line = path.read_text().splitlines().index("    {", 2) + 1  # where the second record opens
    with pytest.raises(DataError) as info:
        list(load("svamp", path))
    assert (info.value.line, info.value.field) == (record_line, "Question")
    records[1]["Question"], records[2]["ID"] = "How many?", records[0]["ID"]
    path.write_text(json.dumps(records, indent=4))
    with pytest.raises(DataError, match="duplicate id 'svamp/chal-1'"):
        list(load("svamp", path))
    path.write_text('[\n  {"ID": "a"},\n  {"ID": \n]\n')  # an array cannot be resynchronised: fatal in both modes
    with pytest.raises(DataError, match="bad JSON") as info:
        list(load("svamp", path, on_bad_row="skip"))
    assert info.value.line == 4


def test_numinamath_hub_schema_from_sharded_parquet(tmp_path):
    # Rows shaped like AI-MO/NuminaMath-1.5 (written here; no NuminaMath data is bundled), laid out like a hub snapshot.
    base = {"problem_type": "Algebra", "problem_is_valid": "Yes", "solution_is_valid": "Yes", "synthetic": False}
    rows = [
        {
            **base,
            "problem": "Find x.",
            "solution": "x = \\boxed{3}",
            "answer": "3",
            "question_type": "math-word-problem",
            "source": "olympiads",
        },
        {
            **base,
            "problem": "Find y.",
            "solution": "so $y=\\boxed{\\frac{1}{2}}$",
            "answer": "notfound",
            "question_type": "math-word-problem",
            "source": "cn_k12",
        },
        {
            **base,
            "problem": "Prove it.",
            "solution": "Trivial.",
            "answer": "proof",
            "question_type": "proof",
            "source": "olympiads",
        },
    ]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:2]), tmp_path / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), tmp_path / "data" / "train-00001-of-00002.parquet")
    problems = list(load("numinamath-1.5", tmp_path))
    assert [p.id for p in problems] == ["numinamath/train/0", "numinamath/train/1", "numinamath/train/2"]
    assert [p.answer for p in problems] == ["3", "\\frac{1}{2}", None]
    assert [p.meta["gold_from"] for p in problems] == ["answer", "solution", "none (proof)"]
    assert problems[0].meta["source"] == "olympiads" and problems[0].meta["synthetic"] is False
    bad = {**rows[1], "solution": "no box"}
    with pytest.raises(DataError, match="answer is 'notfound' and the solution has no") as info:
        list(load("numinamath", write_jsonl(tmp_path / "bad.jsonl", [json.dumps(bad)])))
    assert (info.value.line, info.value.field) == (1, "answer")


# --- bad rows ------------------------------------------------------------------------------------------------------


def _bad_gsm8k(tmp_path: Path) -> Path:
    good = (FIX / "gsm8k" / "train.jsonl").read_text().splitlines()[0]
    return write_jsonl(
        tmp_path / "train.jsonl",
        [
            good,
            '{"question": "broken',
            json.dumps({"answer": "#### 3"}),
            json.dumps({"question": "q", "answer": "3"}),
            good.replace("Natalia", "Nat"),
        ],
    )


def test_bad_rows_raise_with_file_line_and_field(tmp_path):
    path = _bad_gsm8k(tmp_path)
    with pytest.raises(DataError) as info:
        list(load("gsm8k", path))
    assert info.value.line == 2 and "bad JSON" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(DataError) as info:
        list(load("gsm8k", path, offset=2))
    assert (info.value.line, info.value.field) == (3, "question")
    assert str(info.value).startswith(f"{path}, line 3, field 'question'")
    with pytest.raises(DataError) as info:
        list(load("gsm8k", path, offset=3))
    assert (info.value.line, info.value.field) == (4, "answer") and "####" in str(info.value)


def test_bad_rows_skipped_into_rejected(tmp_path):
    rejected: list = []
    problems = list(load("gsm8k", _bad_gsm8k(tmp_path), on_bad_row="skip", rejected=rejected))
    assert [p.id for p in problems] == ["gsm8k/train/0", "gsm8k/train/4"]  # ids keep their source positions
    assert [reason.split(": ")[0].split(", ")[1:] for _, reason in rejected] == [
        ["line 2"],
        ["line 3", "field 'question'"],
        ["line 4", "field 'answer'"],
    ]
    assert rejected[0][0] == {"raw": '{"question": "broken'} and rejected[1][0] == {"answer": "#### 3"}


# --- generic --------------------------------------------------------------------------------------------------------


def test_generic_csv_with_field_mapping(tmp_path):
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["uid", "q", "a", "topic"])
        w.writerow(["p1", "What is 2+2?", "4", "arith"])
        w.writerow(["p2", "Multi\nline?", "5", "arith"])
        w.writerow(["p3", "No answer", "", "arith"])
    opts = dict(question_field="q", answer_field="a", id_field="uid", source="mine")
    rejected: list = []
    problems = list(load("generic", path, on_bad_row="skip", rejected=rejected, **opts))
    assert [(p.id, p.question, p.answer, p.source) for p in problems] == [
        ("mine/p1", "What is 2+2?", "4", "mine"),
        ("mine/p2", "Multi\nline?", "5", "mine"),
    ]
    assert problems[0].meta == {"topic": "arith", "answer_style": "latex"}
    assert len(rejected) == 1 and ", line 5, field 'a'" in rejected[0][1]  # p2's quoted field spans lines 3-4


def test_generic_parquet_and_jsonl_parsers(tmp_path):
    pq.write_table(pa.table({"question": ["a?", "b?"], "answer": [51.0, 7]}), tmp_path / "test.parquet")
    assert [(p.id, p.answer) for p in load("generic", tmp_path, split="test")] == [
        ("generic/test/0", "51"),
        ("generic/test/1", "7"),
    ]
    lines = [json.dumps({"prompt": "x?", "text": "... so \\boxed{\\frac{1}{2}}", "final": "#### 1,234"})]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    boxed = next(
        load("generic", path, question_field="prompt", answer_field=None, solution_field="text", answer_parser="boxed")
    )
    assert boxed.answer == "\\frac{1}{2}" and boxed.solution.endswith("}}")
    gsm = next(load("generic", path, question_field="prompt", answer_field="final", answer_parser="gsm8k"))
    assert gsm.answer == "1234" and gsm.meta["answer_style"] == "number"
    raw = next(load("generic", path, question_field="prompt", answer_field=""))  # "" = no gold
    assert raw.answer is None and raw.meta["final"] == "#### 1,234"
    with pytest.raises(DataError, match="row 1") as info:
        list(load("generic", tmp_path / "test.parquet", answer_field="missing"))
    assert info.value.field == "missing" and info.value.line is None


def test_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="question_feild.*valid: question_field"):
        load("generic", FIX / "gsm8k", question_feild="q")
    with pytest.raises(ConfigError, match="takes no options"):
        load("gsm8k", FIX / "gsm8k", question_field="q")
    with pytest.raises(ConfigError, match="did you mean 'gsm8k'"):
        load("gsm8kk", FIX / "gsm8k")
    with pytest.raises(DataError, match="no file for split 'dev'.*found: test.jsonl, train.jsonl"):
        load("gsm8k", FIX / "gsm8k", split="dev")
    with pytest.raises(DataError, match="no such file"):
        load("gsm8k", tmp_path / "missing.jsonl")
    assert set(list_datasets()) >= {"gsm8k", "math", "math500", "numinamath", "mathqa", "svamp", "generic"}


# --- hub ----------------------------------------------------------------------------------------------------------


def test_hub_offline_says_to_pass_a_path(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    with pytest.raises(ConfigError, match="'mathforge-tests/no-such-dataset'.*pass path="):
        load("generic", "mathforge-tests/no-such-dataset")
    with pytest.raises(ConfigError, match="'openai/gsm8k' \\(config 'main', split 'train'\\).*pass path="):
        load("gsm8k")


def test_hub_rows_are_read_through_load_dataset(monkeypatch):
    import datasets

    calls = []
    rows = {
        c: [{"problem": f"{c}?", "solution": f"\\boxed{{{i}}}", "level": "Level 1", "type": c}]
        for i, c in enumerate(["algebra", "geometry"])
    }

    def fake_load_dataset(hub_id, config, split, streaming):
        calls.append((hub_id, config, split, streaming))
        return rows.get(config, [])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    problems = list(load("math", split="test", limit=5))
    assert calls[0] == ("EleutherAI/hendrycks_math", "algebra", "test", True) and len(calls) == 7  # every subject
    assert [(p.id, p.answer) for p in problems] == [("math/test/0", "0"), ("math/test/1", "1")]
    calls.clear()
    with pytest.raises(DataError, match="^someone/data: the source holds no rows"):  # an empty source is an error
        list(load("generic", "someone/data", config="cfg", question_field="problem", answer_field=None))
    assert calls == [("someone/data", "cfg", "train", False)]


# --- stage config and CLI -------------------------------------------------------------------------------------------


def test_load_config_and_stage(tmp_path):
    with pytest.raises(ValidationError, match="limt"):
        LoadConfig(dataset="gsm8k", limt=3)
    with pytest.raises(ValidationError, match="applies only to dataset 'generic'"):
        LoadConfig(dataset="gsm8k", question_field="q")
    with pytest.raises(ValidationError, match="unknown dataset"):
        LoadConfig(dataset="gsm9k")
    assert all(f.description for f in LoadConfig.model_fields.values())
    problems, rejected = run_load_stage(LoadConfig(dataset="gsm8k", path=str(_bad_gsm8k(tmp_path)), on_bad_row="skip"))
    assert len(problems) == 2 and len(rejected) == 3


def test_cli_lists_and_shows():
    runner = CliRunner()
    listing = runner.invoke(app, [])
    assert listing.exit_code == 0
    for name in ("gsm8k", "math500", "numinamath", "mathqa", "svamp", "generic", "openai/gsm8k"):
        assert name in listing.output
    shown = runner.invoke(app, ["show", "gsm8k", "--path", str(FIX / "gsm8k"), "--limit", "2"])
    assert shown.exit_code == 0, shown.output
    assert "gsm8k/train/1" in shown.output and "gsm8k/train/2" not in shown.output and "72" in shown.output
    bad = runner.invoke(app, ["show", "gsm8k", "--path", str(FIX / "nope")])
    assert isinstance(bad.exception, DataError)


# --- the real files ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data (the real dataset files) is not present")
def test_real_files_load_completely():
    counts = {
        ("gsm8k", "train"): 7473,
        ("gsm8k", "test"): 1319,
        ("math", "train"): 7500,
        ("math", "test"): 5000,
        ("math500", "test"): 500,
        ("svamp", None): 1000,
        ("mathqa", "test"): 1000,
    }
    for (name, split), expected in counts.items():
        problems = list(load(name, SHARED / name, split=split))  # on_bad_row="error": any bad row fails here
        assert len(problems) == expected, (name, split)
        assert len({p.id for p in problems}) == expected
        assert all(p.answer for p in problems), (name, split)
        assert all(p.question for p in problems)


# --- Parquet row groups read apart (the Ray executor's load) --------------------------------------------------------


def sharded_parquet(tmp_path: Path) -> Path:
    """A split in two Parquet shards of several row groups, with a row missing its question and a repeated id."""
    rows = [{"uid": f"u{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(40)]
    rows[13]["question"] = None
    rows[27]["uid"] = "u5"
    (tmp_path / "d").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:25]), tmp_path / "d" / "train-00000.parquet", row_group_size=6)
    pq.write_table(pa.Table.from_pylist(rows[25:]), tmp_path / "d" / "train-00001.parquet", row_group_size=4)
    return tmp_path / "d"


def spread(fn, pieces):
    """An ordered map as a cluster runs it: pieces taken ahead, each parsed on a pickled copy of ``fn``; the first
    one's "worker" cannot see the file (so the driver reads that piece itself)."""
    import pickle

    worker = pickle.loads(pickle.dumps(fn))
    taken = [pickle.loads(pickle.dumps(p)) for p in pieces]
    for i, piece in enumerate(taken):
        yield None if i == 0 else pickle.loads(pickle.dumps(worker(piece)))


def loads_here_and_apart(path, opts: dict, cases: tuple) -> tuple[list, list]:
    """Each case loaded row by row here and piece by piece through ``spread``: the same problems and rejects; returns
    the last case's (problem rows, rejects)."""
    for kwargs in cases:
        got = {}
        for name, imap in (("here", None), ("apart", spread)):
            rejected: list = []
            problems = list(load("generic", path, on_bad_row="skip", rejected=rejected, imap=imap, **opts, **kwargs))
            got[name] = ([p.to_row() for p in problems], rejected)
        assert got["here"] == got["apart"]
    return got["here"]


def test_parquet_row_groups_parsed_apart_load_the_same_problems(tmp_path):
    path = str(sharded_parquet(tmp_path))
    opts = {"id_field": "uid", "split": "train"}
    problems, rejected = loads_here_and_apart(path, opts, ({}, {"offset": 8, "limit": 20}, {"offset": 30}))
    assert [p["id"] for p in problems][:2] == ["generic/u30", "generic/u31"]
    reasons: list = []
    full = list(load("generic", path, on_bad_row="skip", rejected=reasons, imap=spread, **opts))
    shards = [str(tmp_path / "d" / f"train-0000{i}.parquet") for i in (0, 1)]
    assert len(full) == 38 and [why for _, why in reasons] == [  # rows are numbered across the shards
        f"{shards[0]}, row 14, field 'question': missing or empty",
        f"{shards[1]}, row 28, field 'uid': duplicate id 'generic/u5' (first at row 6)",
    ]
    with pytest.raises(DataError) as here:
        list(load("generic", path, **opts))
    with pytest.raises(DataError) as apart:
        list(load("generic", path, imap=spread, **opts))
    assert str(here.value) == str(apart.value) and "question" in str(apart.value)


def text_sources(tmp_path: Path) -> tuple[Path, Path]:
    """A split in two JSONL shards (blank lines, a line that is not JSON, a row without a question, an id repeated
    from the other shard) and one in two CSV shards (quoted fields spanning lines, a row without a question on the
    first data line, blank lines before a row with too many values); each directory holds ``train-00000.<ext>``, ``train-00001.<ext>``."""
    lines = [json.dumps({"uid": f"j{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(30)]
    lines[4] = '{"uid": "j4", "question": "broken'
    lines[9] = json.dumps({"uid": "j9", "answer": "10"})
    lines[21] = json.dumps({"uid": "j3", "question": "again?", "answer": "4"})
    lines[12:12] = ["", "   "]
    jsonl, csvs = tmp_path / "jsonl", tmp_path / "csv"
    jsonl.mkdir()
    csvs.mkdir()
    write_jsonl(jsonl / "train-00000.jsonl", lines[:16])  # rows 0-13 (and the blank lines)
    write_jsonl(jsonl / "train-00001.jsonl", lines[16:])  # rows 14-29
    for shard, ids in enumerate((range(15), range(15, 30))):
        with (csvs / f"train-0000{shard}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["uid", "question", "answer"])
            for i in ids:  # each record but c0 spans 3 lines
                question = "" if i == 0 else f"Line one of {i}\nline two,\r\nthree"
                if i == 17:
                    fh.write("\r\n\r\n")  # blank lines are not rows: c17 is named by its own line (10)
                w.writerow([f"c{i}", question, str(i)] + (["extra"] if i == 17 else []))
    return jsonl, csvs


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_jsonl_and_csv_ranges_parsed_apart_load_the_same_problems(tmp_path, monkeypatch, kind):
    """Text shards cut into line-aligned byte ranges (a record at most, here) and parsed apart give the local ids,
    Problems, rejects and errors, with rows numbered across the shards and lines counted from each file's start (a
    CSV range never splits a record)."""
    from mathforge.datasets import pieces

    monkeypatch.setattr(pieces, "PIECE_BYTES", 40)
    jsonl, csvs = text_sources(tmp_path)
    path = jsonl if kind == "jsonl" else csvs
    shards = [path / f"train-0000{i}.{kind}" for i in (0, 1)]
    assert len(list(pieces.source_pieces(shards))) >= 25
    opts = {"id_field": "uid", "split": "train"}
    loads_here_and_apart(path, opts, ({}, {"offset": 8, "limit": 15}, {"offset": 25}))
    with pytest.raises(DataError) as here:
        list(load("generic", path, **opts))
    with pytest.raises(DataError) as apart:
        list(load("generic", path, imap=spread, **opts))
    assert str(here.value) == str(apart.value)
    reasons: list = []
    full = list(load("generic", path, on_bad_row="skip", rejected=reasons, imap=spread, **opts))
    if kind == "jsonl":
        assert len(full) == 27 and [why.split(": ")[0] for _, why in reasons] == [
            f"{shards[0]}, line 5", f"{shards[0]}, line 10, field 'question'", f"{shards[1]}, line 8, field 'uid'"]
        assert "first at line 4" in reasons[2][1] and str(here.value).startswith(f"{shards[0]}, line 5: bad JSON")
    else:  # the first data row is named by its own line (2), not the header's
        assert len(full) == 28 and [why for _, why in reasons] == [
            f"{shards[0]}, line 2, field 'question': missing or empty",
            f"{shards[1]}, line 10: more values than header columns"]
        assert full[0].id == "generic/c1" and full[0].question == "Line one of 1\nline two,\r\nthree"
    assert [p.id for p in full][-1] == ("generic/j29" if kind == "jsonl" else "generic/c29")


def test_pieces_of_several_files_number_rows_across_them(tmp_path):
    """Rows are numbered across the files of a source (ids ``dataset/split/index``), whatever the cut."""
    from mathforge.datasets.pieces import read_piece, source_pieces
    from mathforge.datasets.readers import read_file

    jsonl, csvs = text_sources(tmp_path)
    files = [jsonl / "train-00000.jsonl", csvs / "train-00001.csv", jsonl / "train-00001.jsonl"]
    local, start = [], 0
    for f in files:
        rows = list(read_file(f, start))
        local += rows
        start += len(rows)
    for size in (1, 100, 10**9):
        cut = list(source_pieces(files, size=size))
        assert [row for p in cut for row in read_piece(p)] == local
    assert len(local) == 14 + 15 + 16 and local[-1].index == 44 and local[-1].line == 16


def test_an_error_that_ends_a_piece_ends_the_load_where_the_local_read_does(tmp_path, monkeypatch):
    """A piece whose reading stops at an error (a file csv cannot read) hands back its rows before it and the error:
    the load yields those rows (a limit may stop it before the error) and then raises the local DataError."""
    from mathforge.datasets import loading, pieces

    jsonl, _ = text_sources(tmp_path)
    real = pieces.read_piece

    def failing(piece, max_row_bytes):
        for row in real(piece, max_row_bytes):
            if row.index == 20:
                raise DataError("bad CSV: simulated", file=row.file, line=row.line)
            yield row

    monkeypatch.setattr(pieces, "PIECE_BYTES", 300)
    monkeypatch.setattr(loading, "read_piece", failing)
    opts = {"id_field": "uid", "split": "train", "on_bad_row": "skip"}
    with pytest.raises(DataError) as stopped:
        list(load("generic", jsonl, imap=spread, **opts))
    assert str(stopped.value) == f"{jsonl / 'train-00001.jsonl'}, line 7: bad CSV: simulated"
    assert len(list(load("generic", jsonl, imap=spread, limit=18, **opts))) == 18  # rows 0-19 less 2 bad ones


def test_a_worker_seeing_another_version_of_the_file_hands_the_piece_back(tmp_path, monkeypatch):
    """A piece is cut from the driver's file; a worker whose path leads to another file (a relative path under
    another working directory, a node-local copy of another version) hands it back instead of parsing other rows."""
    import os
    import pickle

    from mathforge.datasets import pieces

    for d, prefix in (("driver", "d"), ("worker", "stale")):
        (tmp_path / d).mkdir()
        write_jsonl(tmp_path / d / "train.jsonl", [
            json.dumps({"uid": f"{prefix}{i}", "question": f"{prefix} question {i}?", "answer": str(i)}) for i in range(40)])
    handed_back: list[bool] = []

    def elsewhere(fn, items):  # each piece parsed by a pickled copy of fn in the worker's directory
        worker = pickle.loads(pickle.dumps(fn))
        for piece in items:
            os.chdir(tmp_path / "worker")
            try:
                got = pickle.loads(pickle.dumps(worker(piece)))
            finally:
                os.chdir(tmp_path / "driver")
            handed_back.append(got is None)
            yield got

    monkeypatch.setattr(pieces, "PIECE_BYTES", 300)
    monkeypatch.chdir(tmp_path / "driver")
    here = [p.to_row() for p in load("generic", "train.jsonl", id_field="uid")]
    apart = [p.to_row() for p in load("generic", "train.jsonl", id_field="uid", imap=elsewhere)]
    assert apart == here and here[0]["question"] == "d question 0?"
    assert len(handed_back) > 3 and all(handed_back)


def test_a_jsonl_line_of_exactly_the_limit_ended_by_crlf_is_one_line(tmp_path):
    from mathforge.datasets.readers import read_file

    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"a":"12"}\r\n{"broken\r\n{"b":"3"}\r\n')  # the first line holds exactly 10 bytes
    rows = list(read_file(path, 0, max_row_bytes=10))
    assert [(r.index, r.line) for r in rows] == [(0, 1), (1, 2), (2, 3)]
    assert rows[0].data == {"a": "12"} and "bad JSON" in rows[1].error


def test_two_versions_of_a_split_are_not_its_shards(tmp_path):
    """``train-00000.jsonl``, ``train-00001.jsonl`` are the shards of a split; ``train-v1.jsonl`` and
    ``train-v2.jsonl`` are two versions of it, not to be joined."""
    for name in ("train-v1.jsonl", "train-v2.jsonl"):
        write_jsonl(tmp_path / name, [json.dumps({"question": f"{name} q?", "answer": "1"})])
    with pytest.raises(DataError, match="no file for split 'train'"):
        list(load("generic", tmp_path))
    for name in ("train-00000-of-00002.jsonl", "train-00001-of-00002.jsonl"):
        write_jsonl(tmp_path / name, [json.dumps({"question": f"{name} q?", "answer": "1"})])
    assert [p.question for p in load("generic", tmp_path)] == [
        "train-00000-of-00002.jsonl q?", "train-00001-of-00002.jsonl q?"]
