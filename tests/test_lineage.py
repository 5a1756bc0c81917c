"""Stage inputs come from the recipe's lineage: retry, reruns and CLI stage commands never read the wrong table."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import ServerConfig, ServerThread
from mathforge.cli.main import app
from mathforge.errors import EXIT_INCOMPLETE
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.recipe import parse_recipe
from mathforge.pipeline.runner import select_stages
from mathforge.pipeline.stages import downstream, stage_class
from mathforge.store.ledger import Ledger

WORDS = ["apples", "boats", "cats", "drums", "eggs", "flutes", "grapes", "hats", "inks", "jars", "kites", "lamps"]
FAST = ServerConfig(base_latency=0.01, per_token=0.0, min_completion=8, max_completion=12)


@pytest.fixture(scope="module")
def server():
    with ServerThread(lifetime=300) as srv:
        yield srv


def write_recipe(tmp: Path, url: str, n: int = 12, **extra) -> Path:
    """n problems; the fake server always answers "The answer is 5", so the problems with gold 5 come out correct."""
    with open(tmp / "problems.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"Sam counts {WORDS[i]} on shelf {i}, in a row of {i * 7} places. "
                                            f"How many {WORDS[i]} are there in total on the shelf?",
                                "answer": "5" if i % 2 == 0 else str(100 + i)}) + "\n")
    recipe = {
        "name": "lineage",
        "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url, "api_key_env": None,
                              "max_attempts": 1, "max_concurrency": 1}},
        "stages": [{"load": {"dataset": "generic", "path": str(tmp / "problems.jsonl")}},
                   {"generate": {"k": 1, "max_tokens": 32, "prompt": "cot"}},
                   {"verify": {"workers": 1}},
                   {"curate": {"decontam": {"enabled": False}}},
                   {"export": {"formats": ["jsonl"], "validation_fraction": 0.0}}],
        **extra,
    }
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return path


def invoke(*args: str):
    """The CLI in this process; output with whitespace runs collapsed (rich wraps long messages)."""
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    res.flat = " ".join(res.output.split())
    return res


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.suffix == ".jsonl" \
        else pq.read_table(path).to_pylist()


def test_retry_then_export_and_curate_read_the_curated_lineage(server, tmp_path):
    server.configure(ServerConfig(**{**FAST.__dict__, "script": [500, 500]}))
    recipe, run = write_recipe(tmp_path, server.url), tmp_path / "run"
    res = invoke("run", str(recipe), "-o", str(run))
    assert res.exit_code == EXIT_INCOMPLETE, res.output
    assert "generate: 2 failed" in res.flat and f"mathforge retry {run}" in res.flat
    assert "Not run on the partial data: verify, curate, export" in res.flat
    assert not (run / "verified.parquet").exists() and not (run / "export").exists()

    server.configure(FAST)
    res = invoke("retry", str(run))
    assert res.exit_code == 0, res.output
    verified = rows(run / "verified.parquet")
    correct = [r for r in verified if r["correct"] is True]
    assert len(verified) == 12 and len(correct) == 6
    curated = rows(run / "curated.parquet")
    exported = rows(run / "export" / "chat" / "train.jsonl")
    assert len(curated) == len(exported) == 6
    state = json.loads((run / "state.json").read_text())
    assert state["stages"]["export"]["inputs"]["samples"]["stage"] == "curate"
    assert state["stages"]["curate"]["inputs"]["samples"]["stage"] == "verify"

    # The observed bugs: after a retry, `export RUN` wrote 0 rows and `curate RUN` shrank curated.parquet to 0.
    res = invoke("export", str(run))
    assert res.exit_code == 0, res.output
    assert len(rows(run / "export" / "sft.jsonl")) == 6
    res = invoke("curate", str(run), "--no-decontam")
    assert res.exit_code == 0, res.output
    assert len(rows(run / "curated.parquet")) == 6
    res = invoke("export", str(run), "--include-incorrect")
    assert res.exit_code == 0, res.output
    again = rows(run / "export" / "sft.jsonl")
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in curated)  # curated rows: no dups, no leaks

    # A second retry with nothing failed sends nothing and leaves every table as it was.
    res = invoke("retry", str(run))
    assert res.exit_code == 0, res.output
    assert len(rows(run / "curated.parquet")) == 6 and len(rows(run / "export" / "sft.jsonl")) == 6
    with Ledger(run / "ledger.sqlite") as ledger:
        assert ledger.counts() == {"ok": 12}


def test_an_endpoint_that_always_fails_exits_3_with_nothing_downstream(server, tmp_path):
    server.configure(ServerConfig(**{**FAST.__dict__, "error_rate": 1.0}))
    run = tmp_path / "run"
    res = invoke("run", str(write_recipe(tmp_path, server.url, 4)), "-o", str(run))
    assert res.exit_code == EXIT_INCOMPLETE, res.output
    assert "generate: 4 failed" in res.flat
    assert not (run / "curated.parquet").exists() and not (run / "export").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["samples"] == 0 and summary["stages"]["generate"]["failed_requests"] == 4


def test_allow_partial_runs_later_stages_on_what_was_answered(server, tmp_path):
    server.configure(ServerConfig(**{**FAST.__dict__, "script": [500]}))
    run = tmp_path / "run"
    res = invoke("run", str(write_recipe(tmp_path, server.url, 6, allow_partial=True)),
                 "-o", str(run))
    assert res.exit_code == EXIT_INCOMPLETE, res.output  # still not a success
    assert len(rows(run / "verified.parquet")) == 5 and (run / "export" / "chat").exists()
    state = json.loads((run / "state.json").read_text())
    assert state["stages"]["verify"]["incomplete"] == {"inputs": ["samples"]}
    assert state["stages"]["export"]["incomplete"] == {"inputs": ["samples"]}


def test_from_reruns_exactly_the_downstream_stages(server, tmp_path):
    server.configure(FAST)
    recipe_path, run = write_recipe(tmp_path, server.url, 4), tmp_path / "run"
    assert invoke("run", str(recipe_path), "-o", str(run)).exit_code == 0
    res = invoke("run", str(recipe_path), "-o", str(run), "--from", "verify")
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["stages"]) == ["verify", "curate", "export"]


def test_downstream_follows_kinds_not_positions():
    stages = [(sid, stage_class(name)) for sid, name in [
        ("load", "load"), ("generate", "generate"), ("verify", "verify"), ("eval", "eval"),
        ("curate", "curate"), ("export", "export"), ("train", "train"), ("report", "report")]]
    assert downstream(stages, {"verify"}) == ["curate", "export", "train", "report"]
    assert downstream(stages, {"export"}) == ["train", "report"]
    assert downstream(stages, {"eval"}) == ["report"]
    recipe = parse_recipe({"name": "x", "stages": [{"load": {"dataset": "gsm8k"}}, {"verify": {}}, {"verify": {}}]})
    assert select_stages(recipe, start="verify") == ["verify", "verify-2"]


def test_refine_and_synthesize_never_read_their_own_output(tmp_path):
    """A stage's input is its upstream's output even when the stage itself wrote the last table of that kind."""
    from mathforge.pipeline.stages import Port, Stage
    from mathforge.records import Problem

    class Echo(Stage):
        name = "echo"
        Config = dict  # not used
        inputs = {"problems": Port("problems")}
        outputs = {"problems": Port("problems")}

        def run(self, ctx, cfg):
            seen = list(ctx.records("problems"))  # typed records, streamed in batches
            assert all(isinstance(p, Problem) for p in seen) and ctx.input("problems").num_rows == len(seen)
            ctx.output("problems").write([Problem(p.id + "+", p.question).to_row() for p in seen])
            return {"read": [p.id for p in seen]}

    with RunContext(tmp_path / "run") as ctx:
        ctx.write_problems("problems", [Problem("a", "q")])
        assert Echo().run(ctx, None)["read"] == ["a"]
        assert Echo().run(ctx, None)["read"] == ["a"]  # not "a+": its own output is downstream of it
        assert [p.id for p in ctx.problems()] == ["a+"]


def test_generate_command_flags_come_from_the_config(server, tmp_path):
    from mathforge.cli.flags import config_parameters
    from mathforge.generate import GenerateConfig

    flags = {p.name for _, p in config_parameters(GenerateConfig)}
    assert {"k", "temperature", "top_p", "max_tokens", "stop", "prompt", "system_prompt", "seed"} <= flags
    server.configure(FAST)
    write_recipe(tmp_path, server.url, 4)
    run = tmp_path / "gen"
    res = invoke("generate", str(tmp_path / "problems.jsonl"), "-o", str(run), "--model", "fake", "--backend",
                 "openai", "--base-url", server.url, "--keyless", "-k", "2", "--max-tokens", "16", "--top-p", "0.9",
                 "--prompt", "cot")
    assert res.exit_code == 0, res.output
    samples = rows(run / "generate.parquet")
    assert len(samples) == 8
    with Ledger(run / "ledger.sqlite") as ledger:
        params = {json.dumps(r.request["params"], sort_keys=True) for r in ledger.rows()}
    assert len(params) == 1 and json.loads(params.pop())["top_p"] == 0.9
    res = invoke("generate", str(run), "-k", "3", "--max-tokens", "16", "--top-p", "0.9", "--prompt", "cot",
                 "--model", "fake", "--backend", "openai", "--base-url", server.url, "--keyless")
    assert res.exit_code == 0 and "(4 sent, 8 from the ledger)" in res.flat, res.output
    res = invoke("generate", str(run), "--top-p", "1.5", "--model", "fake", "--backend", "openai", "--keyless",
                 "--base-url", server.url)
    assert res.exit_code == 2 and "top_p" in res.flat


def test_sampling_defaults_are_defined_once():
    from mathforge.evaluate.config import EvalConfig
    from mathforge.generate import GenerateConfig
    from mathforge.refine.stage import RefineConfig
    from mathforge.request import TOP_P, SamplingConfig, SamplingParams

    assert SamplingParams().top_p == SamplingConfig().top_p == GenerateConfig().top_p == TOP_P
    assert RefineConfig().rewrite_sampling.top_p == EvalConfig(models=["m"], benchmarks=["gsm8k"]).top_p == TOP_P


def test_an_input_whose_producer_has_not_run_is_an_error_not_an_older_table(server, tmp_path):
    """Export of a run whose curate stage never ran must not fall back to the verified table."""
    server.configure(FAST)
    recipe_path, run = write_recipe(tmp_path, server.url, 4), tmp_path / "run"
    res = invoke("run", str(recipe_path), "-o", str(run), "--only", "load", "--only", "generate", "--only", "verify")
    assert res.exit_code == 0, res.output
    res = invoke("run", str(recipe_path), "-o", str(run), "--only", "export")
    assert res.exit_code == 2 and "reads samples from stage 'curate', which has not run yet" in res.flat
    assert not (run / "export").exists()
    lost = run / "verified.parquet"  # a shard directory (or a single file)
    shutil.rmtree(lost) if lost.is_dir() else lost.unlink()
    res = invoke("run", str(recipe_path), "-o", str(run), "--only", "curate")
    assert res.exit_code == 2 and "'verify', which lost its output" in res.flat
