"""The verify stage config, the stage function, and the `mathforge verify` command over JSONL and Parquet."""

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mathforge.cli.verify import app
from mathforge.store.tables import read_rows, write_table
from mathforge.verify.stage import VerifyConfig, run_verify_stage


def test_config_rejects_unknown_keys_and_extractors():
    with pytest.raises(ValidationError):
        VerifyConfig(timout=3)
    with pytest.raises(ValidationError):
        VerifyConfig(extractors=["boxed", "nope"])
    assert VerifyConfig(extractors=["gsm8k-hash", "math-verify"]).timeout == 5.0
    assert all(f.description for f in VerifyConfig.model_fields.values())


def test_run_verify_stage():
    rows = [{"text": "#### 1,000", "gold": "1000"}, {"text": "The answer is 3.", "gold": "4"}]
    out = run_verify_stage(rows, VerifyConfig(extractors=["gsm8k-hash", "answer-is"]))
    assert [(r["correct"], r["extractor"]) for r in out] == [(True, "gsm8k-hash"), (False, "answer-is")]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_cli_verify(tmp_path, suffix):
    rows = [{"id": "1", "text": "so \\boxed{42}", "gold": "42"}, {"id": "2", "text": "#### 5", "gold": "6"}]
    src = tmp_path / f"samples{suffix}"
    if suffix == ".jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        write_table(src, rows)
    dst = tmp_path / f"out{suffix}"
    result = CliRunner().invoke(app, [str(src), "--output", str(dst), "--timeout", "3"])
    assert result.exit_code == 0, result.output
    got = [json.loads(x) for x in dst.read_text().splitlines()] if suffix == ".jsonl" else read_rows(dst)
    assert [r["correct"] for r in got] == [True, False]
    assert "numeric-exact" in result.output
