"""The curate stage end to end: filters with reasons, pooling, decontam, dedup, RFT, funnel, run-dir outputs, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mathforge.cli.main import app
from mathforge.config import load_yaml
from mathforge.curate import CurateConfig, curate
from mathforge.curate.filters import FilterConfig, apply_filters, build_filters, repetition
from mathforge.errors import ConfigError
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.recipe import parse_recipe
from mathforge.store import read_rows

LEAK_Q = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
          "friends every day with four. How much in dollars does she make every day at the farmers' market?")
Q1 = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"
Q2 = "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
SOL1 = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"
SOL1B = "In May she sold 48/2=<<48/2=24>>24.\nSo in total she sold 48+24=<<48+24=72>>72 clips.\n#### 72"
SOL1C = "Both months: 48 * 1.5 = <<48*1.5=72>>72 clips in all, since May was half of April.\n#### 72"
SOL2 = ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
        "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10")


def sample(i, pid, question, text, *, correct=True, teacher="t1", finish="stop", extracted="x"):
    return {"id": f"s{i}", "problem_id": pid, "question": question, "gold": "72", "teacher": teacher,
            "model": f"{teacher}-model", "sample_index": i, "prompt_key": "cot", "request_key": f"r{i}", "text": text,
            "finish_reason": finish, "extracted": extracted, "correct": correct, "method": "numeric"}


def rows():
    return [
        sample(0, "p1", Q1, SOL1),
        sample(1, "p1", Q1, SOL1 + " "),  # exact duplicate (spacing)
        sample(2, "p1", Q1, SOL1B),  # same equations, other words -> same path
        sample(3, "p1", Q1, SOL1C, teacher="t2"),  # a distinct path from another teacher
        sample(4, "p1", Q1, SOL1.replace("May.", "May!"), teacher="t2"),  # near-duplicate of s0 (punctuation)
        sample(5, "p1", Q1, "Natalia sold 48/2 = 25 clips... #### 72"),  # wrong step
        sample(6, "p1", Q1, SOL1, correct=False),
        sample(7, "p1", Q1, "Natalia sold 48/2 = <<48/2=24>>24 clips in May and then", finish="length"),
        sample(8, "p1", Q1, "I do not know.", extracted=None, correct=None),
        sample(9, "p2", Q2, SOL2),
        sample(10, "p3", LEAK_Q, "16 - 3 - 4 = <<16-3-4=9>>9 eggs. 9 * 2 = <<9*2=18>>18.\n#### 18"),
        sample(11, "p4", Q2 + " ", SOL2),  # the same question under another problem id
        sample(12, "p1", Q1, "Natalia " + "sold the clips and then " * 30 + "#### 72"),
    ]


def bench_config(tmp_path, **extra):
    bench = tmp_path / "gsm8k-test.jsonl"
    bench.write_text(json.dumps({"question": LEAK_Q, "answer": "16-3-4=9 9*2=18\n#### 18"}) + "\n", encoding="utf-8")
    return CurateConfig(decontam={"benchmarks": [{"name": "gsm8k", "path": str(bench), "split": None}]}, **extra)


def test_filters_say_why():
    kept, rejected = apply_filters(rows(), build_filters(FilterConfig()))
    reasons = {r["id"]: why for r, why in rejected}
    assert reasons["s6"].startswith("incorrect: answer 'x' does not match gold '72'")
    assert reasons["s7"].startswith("truncated:")
    assert reasons["s8"] == "missing-answer: no final answer could be extracted"
    assert reasons["s12"].startswith("repetition:")
    assert len(kept) + len(rejected) == len(rows())
    assert repetition("a b c d e f g h i j k", 10)[0] == 0.0


def test_curate_end_to_end_funnel_and_reasons(tmp_path):
    result = curate(rows(), bench_config(tmp_path))
    assert sorted(r["id"] for r in result.kept) == ["s0", "s3", "s9"]
    reasons = {r["id"]: why for r, why in result.rejected}
    assert reasons["s10"].startswith("test-leak: problem overlaps gsm8k gsm8k/test/0 (question): 'janet s ducks")
    assert reasons["s11"] == "duplicate-problem: same question as problem p2"
    assert reasons["s1"] == "duplicate-solution: same text as sample s0"
    assert reasons["s4"].startswith("near-duplicate-solution: of sample s0")
    assert reasons["s2"].startswith("same-path: as s0")
    assert reasons["s5"].startswith("wrong-step: 48/2 = 25")
    funnel = result.funnel
    assert funnel.records_in == 13 and funnel.records_out == 3
    assert funnel.dropped() == {"incorrect": 1, "truncated": 1, "missing-answer": 1, "repetition": 1, "test-leak": 1,
                                "duplicate-problem": 1, "duplicate-solution": 1, "near-duplicate-solution": 1,
                                "wrong-step": 1, "same-path": 1}
    assert result.report["decontam"]["hits"] == {"gsm8k": {"problem_samples": 1, "problems": 1}}
    assert result.report["teachers"]["t2"] == {"samples": 2, "correct": 2, "kept": 1, "yield": 0.5}


def test_stage_in_a_run_dir_pools_and_keeps_rejects(tmp_path):
    other = RunContext(tmp_path / "other")
    other.write_samples("verified", [sample(20, "p2", Q2, SOL2.replace("0.2 x 50", "50 x 0.2")
                                            .replace("0.2*50", "50*0.2"), teacher="t3"), rows()[0]])
    ctx = RunContext(tmp_path / "run")
    ctx.write_samples("verified", rows())
    cfg = bench_config(tmp_path, pool=[str(tmp_path / "other")], rft={"ordered": True})
    from mathforge.curate.stage import CurateStage

    metrics = CurateStage().run(ctx, cfg)
    assert metrics["accepted"] == 4 and metrics["samples_in"] == 15
    kept = read_rows(ctx.path("curated.parquet"))
    assert {r["id"] for r in kept} == {"s0", "s3", "s9", "s20"}
    assert ctx.samples() == kept  # the curated table is now the run's samples table
    rejected = read_rows(ctx.path("rejected.parquet"))
    assert {r["stage"] for r in rejected} == {"curate"} and len(rejected) == 11
    assert any(r["reason"].startswith("duplicate-id: sample s0 of ") for r in rejected)
    report = json.loads(ctx.path("curate.json").read_text())
    assert report["funnel"]["records_out"] == 4 and report["pooled"] == [str(tmp_path / "other")]
    assert report["input"] == "verified.parquet"
    again = CurateStage().run(ctx, cfg)  # a rerun curates the same input again, not its own output
    assert again["accepted"] == 4 and again["samples_in"] == 15
    assert len(read_rows(ctx.path("rejected.parquet"))) == 11


def test_recipe_validates_curate_config():
    text = "name: x\nstages:\n  - curate:\n      rft: {max_per_problem: 4}\n      dedup: {solution_treshold: 0.7}\n"
    with pytest.raises(ConfigError, match="unknown key 'solution_treshold' \\(did you mean 'solution_threshold'"):
        parse_recipe(load_yaml(text))
    ok = parse_recipe(load_yaml("name: x\nstages:\n  - curate: {rft: {max_per_problem: 4}}\n"))
    assert ok.stages[0][2].rft.max_per_problem == 4


def test_cli_curates_a_samples_file(tmp_path):
    src = tmp_path / "samples.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows()), encoding="utf-8")
    bench = bench_config(tmp_path).decontam.benchmarks[0].path
    result = CliRunner().invoke(app, ["curate", str(src), "-b", f"gsm8k={bench}", "--max-per-problem", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "samples-curated"
    assert sorted(r["id"] for r in read_rows(out / "curated.parquet")) == ["s0", "s9"]
    assert "2 of 13 samples kept" in result.output


def test_streamed_in_small_batches_and_rft_partitions_the_result_is_the_same(tmp_path, monkeypatch):
    """The stage's path: records in batches of 2, RFT over partitions of at most 3 records (several problems per
    partition, every sample of a problem in one), rejects and kept records handed out batch by batch."""
    from mathforge.curate import streaming

    cfg = bench_config(tmp_path)
    whole = curate(rows(), cfg)
    monkeypatch.setattr(streaming, "RFT_BUCKET", 3)
    data = rows()
    kept, rejected, emitted = [], [], []

    def emit(batch):
        emitted.append(len(batch))
        kept.extend(batch)

    funnel, report = streaming.curate_stream([("this run", (data[i:i + 2] for i in range(0, len(data), 2)))], cfg,
                                             index=None if not cfg.decontam.enabled else _index(cfg),
                                             emit=emit, reject=rejected.extend, work_dir=tmp_path)
    assert sorted(r["id"] for r in kept) == sorted(r["id"] for r in whole.kept)
    assert {r["id"]: why for r, why in rejected} == {r["id"]: why for r, why in whole.rejected}
    assert funnel.to_dict()["steps"] == [{**s, "seconds": funnel.seconds[s["step"]]}
                                         for s in whole.funnel.to_dict()["steps"]]
    assert report["dedup_solutions"] == whole.report["dedup_solutions"]
    assert len(emitted) >= 1 and not list(tmp_path.glob(".curate-*"))  # scratch files removed


def _index(cfg):
    from mathforge.curate.decontam import build_index

    return build_index(cfg.decontam)
