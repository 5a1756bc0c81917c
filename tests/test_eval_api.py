"""Eval through the OpenAI-compatible backend against a scripted server on 127.0.0.1: metrics, deltas, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from mathforge.config import validate
from mathforge.evaluate import EvalConfig, run_eval
from mathforge.pipeline.context import RunContext
from tests.scripted_openai_server import Rule, ScriptedServer

PROBLEMS = [
    ("Tom has 4 apples and buys 3 more. How many apples does he have?", 7, "He has 4 + 3 = 7.\nThe answer is 7."),
    ("A box holds 6 pens. How many pens are in 2 boxes?", 12, "6 * 2 = 11.\nThe answer is 11."),
    ("Sara had 10 dollars and spent 4. How many dollars are left?", 6, "10 - 4 = 6.\nThe answer is 6."),
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": f"...\n#### {a}"}) + "\n" for q, a, _ in PROBLEMS))
    return path


@pytest.fixture
def server():
    with ScriptedServer([Rule([q[:20]], [reply]) for q, _, reply in PROBLEMS]) as s:
        yield s


def models(server: ScriptedServer) -> dict:
    api = {"backend": "openai", "base_url": server.url, "api_key_env": None, "max_attempts": 1}
    return {"api": {**api, "model": "scripted"}, "api2": {**api, "model": "scripted-2"}}


def config(server, data, **kw) -> EvalConfig:
    return validate(EvalConfig, {"models": models(server), "benchmarks": [{"name": "gsm8k", "path": str(data)}],
                                 "k": 3, "max_tokens": 64, **kw}, "test")


def test_eval_over_openai_backend_scores_resumes_and_compares(tmp_path, data, server):
    run = tmp_path / "run"
    first = run_eval(RunContext(run), config(server, data, limit=2), run / "eval")
    assert first["generation"]["sent"] == 2 * 2 * 4  # 2 models x 2 problems x (greedy + 3 samples)

    ctx = RunContext(run)
    doc = run_eval(ctx, config(server, data), run / "eval")  # the third problem is new; the rest comes from the ledger
    ctx.close()
    assert doc["generation"]["sent"] == 2 * 4 and doc["generation"]["cached"] == 16
    assert len(server.requests) == 24 and not server.unmatched
    by_model = {r["model"]: r for r in doc["results"]}
    m = by_model["api"]["metrics"]
    assert set(m) == {"greedy", "maj@3", "mean_pass@1", "pass@2", "pass@3"}
    for name in m:
        assert m[name]["value"] == pytest.approx(2 / 3) and m[name]["n"] == 3
    assert m["greedy"]["ci_low"] < 2 / 3 < m["greedy"]["ci_high"]
    assert doc["base"] == "api" and doc["models"]["api2"]["model"] == "scripted-2"

    samples = pq.read_table(run / "eval" / "samples.parquet").to_pylist()
    assert len(samples) == 24 and len({s["id"] for s in samples}) == 24
    wrong = [s for s in samples if s["gold"] == "12"]
    assert all(s["correct"] is False and s["extracted"] == "11" and s["extractor"] and s["reason"] for s in wrong)
    table = (run / "eval" / "table.md").read_text()
    assert "| api2 | gsm8k | 3 | 66.7 ± " in table and "+0.0 [+0.0, +0.0]" in table

    again = run_eval(RunContext(run), config(server, data), run / "eval")
    assert again["generation"]["sent"] == 0 and len(server.requests) == 24
    assert again["results"] == doc["results"]


def test_eval_cli_with_config_file(tmp_path, data, server):
    from mathforge.cli.evaluate import app

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"models": models(server), "benchmarks": [{"name": "gsm8k", "path": str(data)}]}))
    args = ["--config", str(cfg), "--run-dir", str(tmp_path / "r"), "--k", "2", "--limit", "2", "--base", "api2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "api2" in result.output and "base" in result.output and "sent 12" in result.output
    doc = json.loads((tmp_path / "r" / "eval" / "results.json").read_text())
    assert doc["base"] == "api2" and doc["config"]["k"] == 2
    bad = CliRunner().invoke(app, [*args, "--benchmarks", "nosuch"])
    assert bad.exit_code != 0 and "nosuch" in str(bad.exception)


def test_two_names_of_one_model_are_scored_once_and_equal(server, data, tmp_path):
    """Two arms trained on the same rows are the same model: eval scores both from one set of answers."""
    api = models(server)["api"]
    cfg = validate(EvalConfig, {"models": {"rft": api, "control": dict(api)}, "max_tokens": 64,
                                "benchmarks": [{"name": "gsm8k", "path": str(data)}]}, "test")
    ctx = RunContext(tmp_path / "run")
    try:
        doc = run_eval(ctx, cfg, tmp_path / "run" / "eval")
    finally:
        ctx.close()
    scores = {r["model"]: r["metrics"]["greedy"]["value"] for r in doc["results"]}
    assert scores["rft"] == scores["control"] == pytest.approx(2 / 3)
    assert len(server.requests) == len(PROBLEMS)  # one request per problem, shared by both names
