"""Synthesis plumbing with the real SmolLM2 as writer and solver: every candidate ends as a problem or a reject."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from mathforge.pipeline.recipe import parse_recipe, run_recipe
from tests.conftest import requires_smollm2


def recipe(data: str, bench: str) -> dict:
    return {
        "name": "synth-tiny",
        "teachers": {"smollm2": {"backend": "local", "model": "smollm2", "batch_size": 8, "threads": 1}},
        "stages": [
            {"load": {"dataset": "gsm8k", "path": data}},
            {"synthesize": {"levels": ["grade_school", "high_school"], "methods": ["change_numbers"], "k": 2,
                            "write_sampling": {"max_tokens": 40}, "solve_sampling": {"max_tokens": 24},
                            "decontam": {"benchmarks": [{"name": "gsm8k", "path": bench, "split": None}]}}},
        ],
    }


@requires_smollm2
def test_synthesize_recipe_with_smollm2(tmp_path, smollm2_backend):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "Tom has 4 apples and buys 3 more. How many apples does he have?",
                                "answer": "#### 7"}))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "Sara had 10 dollars and spent 4. How many are left?", "answer": "#### 6"}))
    run = tmp_path / "run"
    summary = run_recipe(parse_recipe(recipe(str(data), str(bench))), run)
    m = summary["stages"]["synthesize"]
    problems = pq.read_table(run / "synthesize.parquet").to_pylist()
    rejected = [r for r in pq.read_table(run / "rejected.parquet").to_pylist() if r["stage"] == "synthesize"] \
        if (run / "rejected.parquet").exists() else []
    assert m["candidates"] == 2 == len(problems) + len(rejected)
    assert set(m["levels"]) == {"grade_school", "high_school"}
    assert m["requests"]["write"]["requests"] == 2
    for p in problems:
        meta = json.loads(p["meta"])
        assert p["answer"] and meta["agreement"] >= 0.5 and meta["level"] in ("grade_school", "high_school")
    for r in rejected:
        assert r["reason"].split(":")[0] in {"malformed", "duplicate", "near-duplicate", "test-leak", "unsolved",
                                             "unsolvable", "tied-vote", "low-agreement", "generation-failed"}
    again = run_recipe(parse_recipe(recipe(str(data), str(bench))), run)
    assert again["stages"]["synthesize"]["sent"] == 0
    assert pq.read_table(run / "synthesize.parquet").to_pylist() == problems
