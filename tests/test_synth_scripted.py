"""Exact behaviour of synthesize against a scripted OpenAI-compatible server: checks, votes, rejects, resume."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from mathforge.backends import parse_teacher
from mathforge.pipeline.context import RunContext
from mathforge.records import Problem
from mathforge.synth.stage import SynthesizeConfig, SynthesizeStage
from tests.scripted_openai_server import Rule, ScriptedServer

WRITER, SOLVER = "You write new math problems", "careful math"
LEAKED = "Janet has 12 red marbles and 15 blue marbles in a large jar on the kitchen table. How many marbles are there?"
SEEDS = [
    Problem("s/1", "Tom has 4 apples and buys 3 more. How many apples does he have?", "7", source="test"),
    Problem("s/2", "A box holds 6 pens. How many pens are in 2 boxes?", "12", source="test"),
]


def rules() -> list[Rule]:
    return [
        Rule([WRITER, "Tom has 4", "different numbers"], ["Problem: Tom has 5 apples and buys 2 more. How many now?"]),
        Rule([WRITER, "Tom has 4", "different words"], ["Problem: Tom has 4 apples and buys 3 more. How many apples "
                                                        "does he have?\nSolution: 4 + 3 = 7."]),
        Rule([WRITER, "Tom has 4", "different situation"], [f"Here you go.\n**Problem:** {LEAKED}"]),
        Rule([WRITER, "6 pens", "different numbers"], ["Problem: A crate holds 8 pens. How many pens are in 3 crates?"]),
        Rule([WRITER, "6 pens", "different words"], ["I cannot do that."]),
        Rule([WRITER, "6 pens", "different situation"], ["Problem: A shelf has 6 cups on each of 2 rows. How many cups?"]),
        Rule([WRITER, "Math text:", "derivative"], ["Problem: Find the derivative of $x^3$ at $x = 2$."]),
        Rule([SOLVER, "Tom has 5 apples"], ["5 + 2 = 7. The answer is 7."]),
        Rule([SOLVER, "8 pens"], ["The answer is 24.", "The answer is 23.", "The answer is 11."]),
        Rule([SOLVER, "6 cups"], ["I am not sure."]),
        Rule([SOLVER, "derivative of $x^3$"], ["It is $3x^2 = 12$, so \\boxed{12}.", "\\boxed{12}", "\\boxed{4}"]),
    ]


def run_synth(run, url: str, bench, **cfg) -> tuple[dict, list[dict], list[dict]]:
    teacher = {"backend": "openai", "model": "scripted", "base_url": url, "api_key_env": None, "max_attempts": 1}
    ctx = RunContext(run, teachers={"t": parse_teacher("t", teacher, "test")}, seed=0)
    try:
        if not ctx.has("problems"):
            ctx.write_problems("problems", SEEDS)
        decontam = {"benchmarks": [{"name": "gsm8k", "path": str(bench), "split": None}]}
        config = SynthesizeConfig(**{"levels": ["grade_school"], "k": 3, "min_agreement": 0.6, "decontam": decontam,
                                     **cfg})
        metrics = SynthesizeStage().run(ctx, config)
    finally:
        ctx.close()
    problems = pq.read_table(run / "synthesize.parquet").to_pylist()
    rejected = [r for r in pq.read_table(run / "rejected.parquet").to_pylist() if r["stage"] == "synthesize"]
    return metrics, problems, rejected


def bench_file(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"question": LEAKED, "answer": "12 + 15 = 27\n#### 27"}) + "\n")
    return path


def test_seed_synthesis_keeps_agreed_problems_and_says_why_others_went(tmp_path):
    with ScriptedServer(rules()) as server:
        metrics, problems, rejected = run_synth(tmp_path / "run", server.url, bench_file(tmp_path),
                                                methods=["change_numbers", "rewrite", "change_context"])
        assert not server.unmatched
        (p,) = problems
        meta = json.loads(p["meta"])
        assert p["question"] == "Tom has 5 apples and buys 2 more. How many now?" and p["answer"] == "7"
        assert p["source"] == "synth" and p["solution"] == "5 + 2 = 7. The answer is 7."
        assert meta | {"solver": None} == {"level": "grade_school", "method": "change_numbers", "seed_id": "s/1",
                                           "agreement": 1.0, "votes": 3, "k": 3, "answered": 3, "solver": None,
                                           "prompt": "cot", "pseudo_gold": True, "writer": "t",
                                           "writer_model": "scripted", "source_text": SEEDS[0].question}
        reasons = {json.loads(r["record"])["method"] + ":" + json.loads(r["record"])["seed_id"]: r["reason"]
                   for r in rejected}
        assert reasons["rewrite:s/1"].startswith("duplicate: same text as seed s/1")
        assert reasons["change_context:s/1"].startswith("test-leak: problem overlaps gsm8k")
        assert reasons["change_numbers:s/2"].startswith("low-agreement: 1 of 3")
        assert reasons["rewrite:s/2"].startswith("malformed: 17 characters")
        assert reasons["change_context:s/2"].startswith("unsolved")
        # only screened problems are solved, k times each
        assert server.count(SOLVER) == 9 and server.count(SOLVER, LEAKED) == 0
        level = metrics["levels"]["grade_school"]
        assert level["candidates"] == 6 and level["kept"] == 1 and level["yield"] == round(1 / 6, 4)
        assert metrics["rejected"] == {"duplicate": 1, "test-leak": 1, "low-agreement": 1, "malformed": 1,
                                       "unsolved": 1}


def test_rerun_sends_nothing_and_reads_its_seed_snapshot(tmp_path):
    with ScriptedServer(rules()) as server:
        bench = bench_file(tmp_path)
        first, problems, rejected = run_synth(tmp_path / "run", server.url, bench, methods=["change_numbers"])
        sent = len(server.requests)
        assert first["sent"] == sent == 2 + 2 * 3
        again, problems2, rejected2 = run_synth(tmp_path / "run", server.url, bench, methods=["change_numbers"])
        assert len(server.requests) == sent and again["sent"] == 0 and again["seeds"] == 2
        assert problems2 == problems and rejected2 == rejected


def test_passages_at_a_level_with_boxed_answers(tmp_path):
    text = tmp_path / "calc.txt"
    text.write_text("The derivative of a power: for f(x) = x^n the derivative is n x^(n-1), so the slope of the "
                    "curve x^3 at a point grows like the square of x.\n\nToo short.\n")
    with ScriptedServer(rules()) as server:
        metrics, problems, rejected = run_synth(tmp_path / "run", server.url, bench_file(tmp_path),
                                                passages=str(text), levels=["high_school"])
        (p,) = problems
        meta = json.loads(p["meta"])
        assert p["answer"] == "12" and meta["method"] == "from_text" and meta["seed_id"] == "calc/0"
        assert meta["prompt"] == "cot-boxed" and meta["agreement"] == round(2 / 3, 4)
        assert any("Put the final answer in \\boxed{}" in m["content"] for m in server.requests[-1]["messages"])
        (short,) = rejected
        assert short["record_id"] == "calc/1" and short["reason"].startswith("passage too short")
        assert metrics["levels"]["high_school"]["kept"] == 1 and metrics["passages_rejected"] == 1


def test_cli_synthesizes_from_a_dataset(tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli.main import app

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps({"question": p.question, "answer": f"#### {p.answer}"}) for p in SEEDS))
    with ScriptedServer(rules()) as server:
        args = ["synthesize", str(tmp_path / "run"), "--dataset", "gsm8k", "--path", str(seeds), "--limit", "1",
                "--backend", "openai", "--model", "scripted", "--base-url", server.url, "--keyless",
                "--levels", "grade-school", "--methods", "change_numbers", "--k", "2",
                "--benchmark", f"gsm8k={bench_file(tmp_path)}"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "1 of 1 new problems kept" in result.output and "grade_school" in result.output
        assert len(server.requests) == 3
    (p,) = pq.read_table(tmp_path / "run" / "synthesize.parquet").to_pylist()
    assert p["answer"] == "7" and json.loads(p["meta"])["k"] == 2
